"""Helper script for test_heurimentor_nccl.py (not a test): 2-GPU FSDP2 + NCCL run of tiny Aquila2 (bf16,
activation checkpointing, meta-device init) with TSM + ATE + DMU on streaming token shards; a single spike
planted at step SINGLE on rank 1 and a persistent one at PERSIST on both ranks. Writes OUT/rank<r>.json.

usage: python heurimentor_nccl_job.py OUT
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "heurimentor"))
import lightning.pytorch as L  # noqa: E402
from fsdp_job import CollectiveRecorder  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402

from lightning_papers.heurimentor import (  # noqa: E402
    AdaptiveTrainingEngine,
    Aquila2LM,
    DataManagementUnit,
    MixtureDataModule,
    TrainingStateMonitor,
    prepare_data,
)
from lightning_papers.heurimentor.data import builtin_source_text  # noqa: E402

STEPS, SINGLE, PERSIST = 40, 15, (25, 26, 27)


class PlantedLM(Aquila2LM):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if (self.global_step == SINGLE and self.global_rank == 1) or self.global_step in PERSIST:
            out["loss"] = out["loss"] * 20.0
        return out


class Params(L.Callback):
    def __init__(self):
        self.after = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = [p.detach().to_local().float().cpu().clone() for p in pl_module.parameters()]


def main(out: Path) -> None:
    L.seed_everything(0, verbose=False)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 1.0, "warmup": 5}], plateau_window=0,
                               heldout_every=10, trajectory_every=10, log_dir=str(out / "logs"))
    ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=5)
    params = Params()
    trainer = L.Trainer(accelerator="gpu", devices=2, strategy=strategy, max_steps=STEPS,
                        callbacks=[tsm, ate, DataManagementUnit(), params], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                        use_distributed_sampler=False)
    shards = {}
    for name in ("prose", "code", "qa"):
        d = out / "shards" / name
        if trainer.global_rank == 0 and not d.exists():
            (out / f"{name}.txt").write_text(builtin_source_text(name, 60_000))
            prepare_data([str(out / f"{name}.txt")], str(d), progress=False)
        shards[name] = str(d)
    trainer.strategy.barrier()
    recorder = CollectiveRecorder(trainer)
    dm = MixtureDataModule(token_shards=shards, seq_len=64, batch_size=4, num_workers=2,
                           stages=[{"weights": {"prose": 0.5, "code": 0.3, "qa": 0.2}}])
    model = PlantedLM("tiny", warmup_steps=5, mixed_precision="bf16", activation_checkpointing=True)
    trainer.fit(model, dm)
    roll = ate.rollback_log[0] if ate.rollback_log else None
    result = {
        "skipped": list(ate.skipped_steps),
        "rollback": roll and {k: (list(v) if isinstance(v, tuple) else v) for k, v in roll.items()},
        "restored_bit_exact": roll is not None and all(
            torch.equal(a, b) for a, b in zip(params.after[roll["step"]], params.after[roll["to_step"] - 1])),
        "unchanged_at_single": all(torch.equal(a, b) for a, b in zip(params.after[SINGLE], params.after[SINGLE - 1])),
        "violations": recorder.violations,
        "collectives": recorder.calls,
        "root_device": str(trainer.strategy.root_device),
        "final_loss_finite": bool(torch.isfinite(torch.tensor(tsm.history["loss"][-1]))),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
