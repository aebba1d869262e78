"""EXP3 online policy (raises the highest-loss source, floor, normalisation) and DMU input checks."""

import lightning.pytorch as L
import pytest
import torch

from lightning_papers.heurimentor import DataManagementUnit, EXP3Policy, MixtureSampler, Stage
from lightning_papers.heurimentor.dmu import _with_floor


def test_exp3_raises_highest_loss_source_and_respects_floor():
    pol = EXP3Policy(["web", "code", "qa"], floor=0.1, lr=0.5)
    for _ in range(30):
        w = pol.update({"web": 2.0, "code": 4.0, "qa": 1.0})
        assert abs(sum(w.values()) - 1.0) < 1e-9
        assert min(w.values()) >= 0.1 - 1e-12
    assert max(w, key=w.get) == "code" and w["code"] > 1 / 3
    state = pol.state_dict()
    clone = EXP3Policy(["web", "code", "qa"], floor=0.1, lr=0.5)
    clone.load_state_dict(state)
    assert clone.update({"qa": 1.0}) == pol.update({"qa": 1.0})


def test_exp3_bad_arguments():
    with pytest.raises(ValueError, match="floor"):
        EXP3Policy(["a", "b", "c"], floor=0.5)
    with pytest.raises(ValueError, match="at least one source"):
        EXP3Policy([])


def test_with_floor_renormalises():
    w = _with_floor({"a": 0.98, "b": 0.01, "c": 0.01}, 0.1)
    assert abs(sum(w.values()) - 1) < 1e-12 and w["b"] == pytest.approx(0.1) and w["a"] == pytest.approx(0.8)


class _Plain(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_dmu_rejects_batches_without_source_ids(tmp_path):
    sampler = MixtureSampler({"a": 8}, [Stage({"a": 1.0})])
    dmu = DataManagementUnit(sampler=sampler)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = L.Trainer(max_steps=1, callbacks=[dmu], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="source_ids"):
        trainer.fit(_Plain(), data)


def test_dmu_needs_a_sampler(tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = L.Trainer(max_steps=1, callbacks=[DataManagementUnit()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="MixtureSampler"):
        trainer.fit(_Plain(), data)
    with pytest.raises(ValueError, match="policy"):
        DataManagementUnit(policy="doremi")


def test_spike_penalty_downweights_the_culprit_then_recovers():
    from lightning_papers.heurimentor import StepEvent

    sampler = MixtureSampler({"a": 10, "b": 10}, [Stage({"a": 0.5, "b": 0.5})])
    dmu = DataManagementUnit(sampler=sampler, policy_every=5, penalty_halflife=5, downweight_on_spike=0.25, policy_floor=0.05)
    dmu._on_step(StepEvent(step=0, tokens=0, spike=True, culprit="a"))
    assert sampler.weights["a"] == pytest.approx(0.2) and dmu.penalties == {"a": 0.25}  # 0.125 / 0.625
    for i in range(5):
        dmu._on_step(StepEvent(step=1 + i, tokens=0))
    assert dmu.penalties["a"] == pytest.approx(0.5)
    for i in range(5):
        dmu._on_step(StepEvent(step=6 + i, tokens=0))
    assert dmu.penalties == {} and sampler.weights == pytest.approx({"a": 0.5, "b": 0.5})


def test_exp3_refuses_a_state_for_other_sources():
    pol = EXP3Policy(["web", "code"], floor=0.1)
    pol.update({"web": 1.0, "code": 2.0})
    with pytest.raises(ValueError, match=r"checkpoint's sources \['code', 'web'\] differ from this run's \['code', 'qa'\]"):
        EXP3Policy(["code", "qa"], floor=0.1).load_state_dict(pol.state_dict())
