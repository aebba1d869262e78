"""Bounded state (checkpoint size constant in steps), off-device snapshots, the skip mechanism installed on
trainer.strategy, the callbacks' own event bus, one log file per run, and the step reducer's device."""

import io

import lightning.pytorch as L
import pytest
import torch

from lightning_papers.heurimentor import (
    AdaptiveTrainingEngine,
    Aquila2LM,
    DataManagementUnit,
    HeldScheduler,
    MixtureDataModule,
    SkipStepOptimizer,
    SnapshotStore,
    StepHistory,
    StepReducer,
    TrainingStateMonitor,
    get_bus,
)

STAGES = [{"name": "s0", "weights": {"prose": 0.5, "code": 0.3, "qa": 0.2}}]


def nbytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


class Sizes(L.Callback):
    def __init__(self, callbacks, at):
        self.callbacks, self.at, self.sizes = callbacks, at, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.at:
            self.sizes[trainer.global_step] = [nbytes(cb.state_dict()) for cb in self.callbacks]
            path = trainer.default_root_dir + f"/s{trainer.global_step}.ckpt"
            trainer.save_checkpoint(path)
            self.sizes[f"file{trainer.global_step}"] = __import__("os").path.getsize(path)


@pytest.mark.slow
def test_checkpoint_size_is_constant_in_steps_and_the_skip_mechanism_lives_on_the_strategy(tmp_path):
    L.seed_everything(0, verbose=False)
    tsm = TrainingStateMonitor(history_size=8, max_records=4, heldout_every=3, trajectory_every=3, source_loss_every=2,
                               detectors=[{"kind": "rolling", "window": 5, "ratio": 1.3}], plateau_window=5, dashboard=False)
    ate = AdaptiveTrainingEngine(snapshot_every=3, max_records=4)
    dmu = DataManagementUnit(policy="exp3", policy_every=2)
    sizes = Sizes([tsm, ate, dmu], at=(30, 60))
    trainer = L.Trainer(max_steps=60, callbacks=[tsm, ate, dmu, sizes], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    dm = MixtureDataModule(seq_len=16, batch_size=2, max_chars=20_000, stages=STAGES, heldout_windows=2)
    model = Aquila2LM("tiny", warmup_steps=2)
    trainer.fit(model, dm)
    assert tsm.history.count == 60 and len(tsm.history["loss"]) == 8 and tsm.history.summary["steps"] == 60
    assert len(tsm.heldout_history) == 4 and len(tsm.trajectory_dist) == 4  # bounded records, 19 probes made
    for a, b in zip(sizes.sizes[30], sizes.sizes[60]):
        assert abs(a - b) <= 64, (sizes.sizes[30], sizes.sizes[60])  # only integer widths may differ
    assert abs(sizes.sizes["file30"] - sizes.sizes["file60"]) <= 512
    # the reference this bound is checked against: a history that grew with the steps would add ~50 B/step
    unbounded = StepHistory(capacity=60)
    for s in range(60):
        unbounded.append(s, s, 1.0, source_loss={"prose": 1.0})
    assert nbytes(unbounded.state_dict()) - nbytes(StepHistory(capacity=30).state_dict()) > 1500
    # one documented mechanism: wrappers on trainer.strategy, nothing patched on the module or the Trainer
    assert all(isinstance(o, SkipStepOptimizer) for o in trainer.strategy.optimizers)
    assert all(isinstance(c.scheduler, HeldScheduler) for c in trainer.strategy.lr_scheduler_configs)
    assert not {"lr_scheduler_step", "optimizer_step", "training_step"} & set(vars(model))
    assert not any("heurimentor" in k for k in vars(trainer))
    assert get_bus(trainer) is tsm.bus is ate._bus is dmu._bus


def test_snapshot_store_is_bounded_reuses_buffers_and_restores_optimizer_state_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    store = SnapshotStore("host", keep=2)
    store.save(0, model, [opt])  # before any step: no optimizer state

    def step():
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()

    step()
    store.save(1, model, [opt])
    step()
    store.save(2, model, [opt])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    size = store.nbytes()
    for _ in range(3):
        step()
    store.save(5, model, [opt])
    assert len(store) == 2 and store.steps == [2, 5] and store.nbytes() == size  # bounded; the oldest buffers reused
    store._snaps.pop()  # roll back to the snapshot of step 2
    store.restore(model, [opt])
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    now = opt.state_dict()["state"]
    assert all(torch.equal(now[i][k], v) for i, s in saved_opt.items() for k, v in s.items())
    with pytest.raises(ValueError, match="snapshot kind"):
        SnapshotStore("gpu")


def test_step_reducer_puts_one_tensor_on_the_root_device():
    calls = []

    class MetaStrategy:  # stands in for a CUDA strategy: the tensor must arrive on its root device
        root_device = torch.device("meta")

        def reduce(self, tensor, reduce_op="mean"):
            calls.append((tensor.device.type, tuple(tensor.shape), reduce_op))
            return torch.arange(tensor.numel(), dtype=torch.float64)

    class Trainer:
        strategy, world_size = MetaStrategy(), 2

    r = StepReducer()
    r.add("step", [1.0, 2.0, 3.0])
    r.add("grad", torch.ones(1))
    r.add("src", torch.zeros(4, dtype=torch.float32))
    out = r.reduce(Trainer())
    assert calls == [("meta", (8,), "sum")] and r.calls == 1
    assert out["step"].tolist() == [0, 1, 2] and out["grad"].tolist() == [3] and out["src"].tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="already added"):
        r.add("x", [1.0])
        r.add("x", [2.0])


def test_one_log_file_per_run_in_the_loggers_directory(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    def run(**kwargs):
        tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 0.01, "warmup": 1}], plateau_window=0,
                                   dashboard=False, **kwargs)
        logger = CSVLogger(tmp_path / "logs")
        trainer = L.Trainer(max_steps=4, callbacks=[tsm, AdaptiveTrainingEngine(snapshot_every=2)], logger=logger, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(Aquila2LM("tiny", warmup_steps=1), MixtureDataModule(seq_len=16, batch_size=2, max_chars=8000, stages=STAGES))
        return tsm

    a, b = run(), run()
    assert a.out_dir != b.out_dir and a.out_dir.parent == b.out_dir.parent == tmp_path / "logs" / "lightning_logs"
    assert (a.out_dir / "heurimentor.log").read_text().count("CheckpointEvent") >= 2  # snapshots at start and step 2
    explicit = tmp_path / "mine"
    explicit.mkdir()
    (explicit / "heurimentor.log").write_text("stale line from an earlier run\n")
    run(log_dir=str(explicit))
    assert "stale" not in (explicit / "heurimentor.log").read_text()  # truncated, never appended to
    assert not list(tmp_path.glob("heurimentor*"))
