"""Helper script for test_fsdp.py (not a test): tiny Aquila2 under ModelParallelStrategy/FSDP2 on CPU.

usage: python fsdp_job.py train OUT   (2 gloo processes: spike on rank 1 only, sharded checkpoint, every
                                       collective recorded)
       python fsdp_job.py load OUT    (1 process: resume from the sharded checkpoint)
"""

import json
import sys
import traceback
from pathlib import Path

import torch

torch.set_num_threads(1)

import lightning.pytorch as L  # noqa: E402
from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402

from lightning_papers.heurimentor import (  # noqa: E402
    AdaptiveTrainingEngine,
    Aquila2LM,
    DataManagementUnit,
    MixtureDataModule,
    TrainingStateMonitor,
)

SPIKE_STEP = 4


class RankSpikeLM(Aquila2LM):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.global_step == SPIKE_STEP and self.global_rank == 1:  # spike on rank 1 only
            out["loss"] = out["loss"] * 20.0
        return out


def local(p):
    return p.detach().to_local().clone() if hasattr(p, "to_local") else p.detach().clone()


class Spy(L.Callback):
    def __init__(self):
        self.before, self.after, self.ids = {}, {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before[trainer.global_step] = [local(p) for p in pl_module.parameters()]
        self.ids.extend(batch["sample_ids"].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step - 1] = [local(p) for p in pl_module.parameters()]


class CollectiveRecorder:
    """Wraps trainer.strategy's collectives and torch.distributed's: records (name, step, shape, device)
    of every call, and flags a HeuriMentor collective that bypasses the strategy or a tensor off the root device."""

    RAW = ("all_reduce", "all_gather", "broadcast", "reduce", "all_gather_object", "broadcast_object_list",
           "gather", "scatter", "reduce_scatter", "all_to_all", "barrier")

    def __init__(self, trainer):
        import torch.distributed as dist

        self.trainer, self.calls, self.violations, self._inside = trainer, [], [], 0
        strategy = trainer.strategy
        for name in ("reduce", "all_gather", "broadcast"):
            setattr(strategy, name, self._wrap_strategy(name, getattr(strategy, name)))
        for name in self.RAW:
            if hasattr(dist, name):
                setattr(dist, name, self._wrap_raw(name, getattr(dist, name)))

    @staticmethod
    def _from_heurimentor():
        return any("lightning_papers/heurimentor" in f.filename for f in traceback.extract_stack()[:-2])

    def _wrap_strategy(self, name, fn):
        def wrapped(obj, *args, **kwargs):
            hm = self._from_heurimentor()
            root = self.trainer.strategy.root_device
            if isinstance(obj, torch.Tensor):
                self.calls.append([name, self.trainer.global_step, list(obj.shape), str(obj.dtype), str(obj.device), hm])
                if obj.device != root:
                    self.violations.append(f"{name}: tensor on {obj.device}, root device {root}")
            else:
                self.calls.append([name, self.trainer.global_step, type(obj).__name__, hm])
            self._inside += 1
            try:
                return fn(obj, *args, **kwargs)
            finally:
                self._inside -= 1

        return wrapped

    def _wrap_raw(self, name, fn):
        def wrapped(*args, **kwargs):
            if not self._inside and self._from_heurimentor():
                self.violations.append(f"torch.distributed.{name} called by HeuriMentor outside trainer.strategy")
            return fn(*args, **kwargs)

        return wrapped


def full_params(module):
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in module.named_parameters()}


def main(phase: str, out: Path) -> None:
    L.seed_everything(0, verbose=False)
    devices = 2 if phase == "train" else 1
    strategy = ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1, save_distributed_checkpoint=True)
    tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 1.0, "warmup": 2}], plateau_window=0, dashboard=False)
    ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=2)
    dmu = DataManagementUnit()
    spy = Spy()
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy, max_steps=6 if phase == "train" else 7,
        callbacks=[tsm, ate, dmu, spy], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=out, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    dm = MixtureDataModule(seq_len=16, batch_size=2, max_chars=8000)
    model = RankSpikeLM(warmup_steps=2)
    rank = trainer.global_rank
    if phase == "train":
        recorder = CollectiveRecorder(trainer)
        trainer.fit(model, dm)
        trainer.save_checkpoint(out / "ckpt")
        full = full_params(model)
        result = {
            "skipped": list(ate.skipped_steps),
            "collectives": recorder.calls,
            "violations": recorder.violations,
            "unchanged_at_spike": all(torch.equal(a, b) for a, b in zip(spy.before[SPIKE_STEP], spy.after[SPIKE_STEP])),
            "changed_before": not all(torch.equal(a, b) for a, b in zip(spy.before[1], spy.after[1])),
            "ids": spy.ids,
            "position": dmu.sampler.position,
            "trained_next": dmu.trained_next,
        }
        if rank == 0:
            torch.save(full, out / "full.pt")
        (out / f"train_rank{rank}.json").write_text(json.dumps(result))
    else:
        expected = torch.load(out / "full.pt")
        seen = {}

        class Check(L.Callback):
            def on_train_start(self, trainer, pl_module):
                got = full_params(pl_module)
                seen["equal"] = sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in got)
                seen["position"] = dmu.sampler.position
                seen["skipped"] = list(ate.skipped_steps)

        trainer.callbacks.append(Check())
        trainer.fit(model, dm, ckpt_path=out / "ckpt")
        seen["first_ids"] = spy.ids[:2]
        (out / "load.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
