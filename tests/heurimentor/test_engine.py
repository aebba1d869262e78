"""Adaptive Training Engine on one process: skip, rollback + exclusion, bit-exact resume, plateau actions."""

import math

import lightning.pytorch as L
import pytest
import torch

from lightning_papers.heurimentor import (
    AdaptiveTrainingEngine,
    Aquila2LM,
    DataManagementUnit,
    MixtureDataModule,
    PlateauEvent,
    SpikeEvent,
    StageChangeEvent,
    TrainingStateMonitor,
    get_bus,
)

STAGES = [
    {"name": "s0", "weights": {"prose": 0.5, "code": 0.3, "qa": 0.2}, "tokens": 102_400},
    {"name": "s1", "weights": {"prose": 0.2, "code": 0.2, "qa": 0.6}},
]


class SpikyLM(Aquila2LM):
    """Multiplies the loss by 20 at the given global steps (an injected spike)."""

    def __init__(self, spike_steps=(), **kwargs):
        super().__init__(**kwargs)
        self.spike_steps = set(spike_steps)

    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.global_step in self.spike_steps:
            out["loss"] = out["loss"] * 20.0
        return out


class Spy(L.Callback):
    """Records per step: parameters before/after, LR, scheduler position, sample ids, loss."""

    def __init__(self):
        self.before, self.after, self.lr, self.sched, self.ids, self.loss = {}, {}, {}, {}, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        s = trainer.global_step
        self.before[s] = [p.detach().clone() for p in pl_module.parameters()]
        self.sched[s] = trainer.lr_scheduler_configs[0].scheduler.last_epoch
        self.ids[s] = batch["sample_ids"].tolist()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        s = trainer.global_step - 1
        self.after[s] = [p.detach().clone() for p in pl_module.parameters()]
        self.lr[s] = trainer.optimizers[0].param_groups[0]["lr"]
        self.loss[s] = float(outputs["loss"])


class Kill(L.Callback):
    """Stops the run after ``at`` optimizer steps (a simulated crash, same schedule as the full run)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at:
            trainer.should_stop = True


def make(tmp_path, max_steps, spike_steps=(), tsm=None, ate=None, dmu=None, seed=0, extra=()):
    L.seed_everything(seed, verbose=False)
    tsm = tsm or TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 1.0, "warmup": 3}], plateau_window=0)
    ate = ate or AdaptiveTrainingEngine(rollback_after=3, snapshot_every=4)
    dmu = dmu or DataManagementUnit()
    spy = Spy()
    trainer = L.Trainer(
        max_steps=max_steps, callbacks=[tsm, ate, dmu, spy, *extra], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
        limit_val_batches=0, use_distributed_sampler=False,
    )
    dm = MixtureDataModule(seq_len=32, batch_size=4, max_chars=30_000, stages=STAGES)
    model = SpikyLM(spike_steps=spike_steps, warmup_steps=3)
    return trainer, model, dm, (tsm, ate, dmu, spy)


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_single_spike_is_flagged_and_skipped_without_touching_params_or_schedule(tmp_path):
    trainer, model, dm, (tsm, ate, dmu, spy) = make(tmp_path, 10, spike_steps={6})
    trainer.fit(model, dm)
    assert [e.step for e in get_bus(trainer).of_type(SpikeEvent)] == [6]
    assert list(ate.skipped_steps) == [6] and not ate.rollback_log
    assert same(spy.before[6], spy.after[6])  # parameters untouched by the spiky step
    assert spy.sched[7] == spy.sched[6] and spy.lr[6] == spy.lr[5]  # the LR schedule did not advance
    assert not same(spy.before[5], spy.after[5]) and spy.sched[6] == spy.sched[5] + 1  # normal steps do both
    assert math.isfinite(tsm.history["loss"][-1])


@pytest.mark.parametrize("snapshot_to", ["host", "disk"])
def test_persistent_spike_rolls_back_bit_exactly_and_excludes_its_samples(tmp_path, snapshot_to):
    ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=4, snapshot_to=snapshot_to)
    trainer, model, dm, (tsm, ate, dmu, spy) = make(tmp_path, 16, spike_steps={6, 7, 8}, ate=ate)
    trainer.fit(model, dm)
    assert len(ate.rollback_log) == 1
    roll = ate.rollback_log[0]
    assert roll["step"] == 8 and roll["to_step"] == 4
    assert same(spy.after[8], spy.after[3])  # parameters bit-equal to the snapshot taken after step 3
    assert list(ate.skipped_steps)[:3] == [6, 7, 8]
    blocked = dmu.sampler.blocked_ids
    trained_since_snapshot = {i for s in range(4, 9) for i in spy.ids[s]}
    assert trained_since_snapshot <= blocked
    applied_later = {i for s in range(9, 16) if s not in ate.skipped_steps for i in spy.ids[s]}
    assert applied_later and not applied_later & blocked
    assert all(math.isfinite(v) for v in tsm.history["loss"])


def test_kill_and_resume_gives_the_same_samples_and_losses(tmp_path):
    def callbacks():  # live mixture changes before and after the kill
        tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 1.0, "warmup": 3}], plateau_window=0,
                                   source_loss_every=2)
        return dict(tsm=tsm, dmu=DataManagementUnit(policy="exp3", policy_every=1, policy_lr=0.3))

    full_trainer, model, dm, (_, _, _, full) = make(tmp_path / "a", 14, **callbacks())
    full_trainer.fit(model, dm)

    t1, model, dm, (_, _, _, first) = make(tmp_path / "b", 14, extra=[Kill(8)], **callbacks())
    t1.fit(model, dm)
    ckpt = tmp_path / "b" / "mid.ckpt"
    t1.save_checkpoint(ckpt)
    t2, model, dm, (_, _, dmu2, second) = make(tmp_path / "c", 14, seed=123, **callbacks())
    t2.fit(model, dm, ckpt_path=ckpt)
    assert max(first.ids) == 7 and min(second.ids) == 8
    ids = {**first.ids, **second.ids}
    losses = {**first.loss, **second.loss}
    assert sorted(ids) == list(range(14))
    assert [ids[s] for s in range(14)] == [full.ids[s] for s in range(14)]
    assert [losses[s] for s in range(14)] == pytest.approx([full.loss[s] for s in range(14)], rel=1e-6, abs=1e-6)
    assert dmu2.policy.t == 6  # per-source sums of steps 0-1, 2-3 ... ride on the collectives of steps 2, 4 ... 12


def test_plateau_advances_the_dmu_stage(tmp_path):
    tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 5.0}], plateau_window=4, plateau_tolerance=10.0)
    ate = AdaptiveTrainingEngine(plateau_action="advance_stage")
    trainer, model, dm, (_, _, dmu, spy) = make(tmp_path, 8, tsm=tsm, ate=ate)
    trainer.fit(model, dm)
    bus = get_bus(trainer)
    plateaus = bus.of_type(PlateauEvent)
    assert plateaus and plateaus[0].step == 3  # the 4th value completes the first window
    assert dmu.sampler.stage_index == 1 and any(e.stage == 1 for e in bus.of_type(StageChangeEvent))


def test_ate_validates_arguments():
    with pytest.raises(ValueError, match="plateau_action"):
        AdaptiveTrainingEngine(plateau_action="panic")
    with pytest.raises(ValueError, match="snapshot_every"):
        AdaptiveTrainingEngine(snapshot_every=0)
