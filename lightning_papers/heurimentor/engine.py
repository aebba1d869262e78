"""Adaptive Training Engine (ATE): skip spiky steps, roll back on persistent spikes, act on plateaus.

Aquila2 report §3.1 describes the ATE as the part that lets a run continue on updated data and on a
changed cluster. Spike handling follows the best public mechanisms (FlagScale / OLMo-core skip-step,
PaLM restart-and-skip):

* **skip** (one spike): the decision is reduced across ranks by the monitor *before* the update. The one
  mechanism: at ``on_fit_start`` the ATE installs a :class:`~lightning_papers.heurimentor.skip.SkipStepOptimizer`
  around each optimizer in ``trainer.strategy.optimizers`` and holds back each step-interval scheduler in
  ``trainer.strategy.lr_scheduler_configs`` (:class:`~lightning_papers.heurimentor.skip.HeldScheduler`);
  on a spike it requests a skip, so parameters, optimizer state and LR are untouched by that step on
  every rank. Lightning's global step still advances. No module or optimizer method is patched.
* **rollback** (``rollback_after`` spikes in a row, or a non-finite loss): restore the last good snapshot
  (kept off the device: :class:`~lightning_papers.heurimentor.snapshots.SnapshotStore`; parameters,
  optimizer and scheduler state, data-mixture state, detector state) and tell the DMU to exclude the
  sample positions trained since then (their windows are blocked for good).
* **plateau**: advance the DMU stage or scale the learning rate.

Resuming on another number of processes is a property of the checkpoint format: use
``ModelParallelStrategy(save_distributed_checkpoint=True)`` (reshardable DCP folders); all HeuriMentor
state is global (identical on every rank), so it loads on any world size.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch

from lightning_papers.heurimentor.events import (
    CheckpointEvent,
    PlateauEvent,
    RollbackEvent,
    SkipEvent,
    SpikeEvent,
    get_bus,
)
from lightning_papers.heurimentor.skip import HeldScheduler, SkipStepOptimizer
from lightning_papers.heurimentor.snapshots import SnapshotStore

__all__ = ["AdaptiveTrainingEngine"]


class AdaptiveTrainingEngine(L.Callback):
    """Act on the monitor's events: skip, roll back and exclude data, or react to plateaus.

    Needs a :class:`~lightning_papers.heurimentor.TrainingStateMonitor` in the same Trainer (it makes the
    decisions); a :class:`~lightning_papers.heurimentor.DataManagementUnit` is needed for data exclusion
    and stage advances.

    Args:
        skip_on_spike: skip the optimizer and scheduler step of a spiky step.
        rollback_after: roll back after this many spiky steps in a row (0: never).
        rollback_on_nonfinite: roll back at once on a NaN/inf loss or gradient.
        snapshot_every: take a good-state snapshot every N steps (only at non-spiky steps).
        snapshot_to: ``"host"`` (CPU memory, pinned + asynchronous copies on GPUs) or ``"disk"``
            (sharded ``torch.distributed.checkpoint`` per rank under ``snapshot_dir``).
        keep_snapshots: snapshots kept (the rollback restores the newest).
        snapshot_dir: directory of disk snapshots (default ``<default_root_dir>/heurimentor_snapshots``;
            must be visible to every rank).
        exclude_on_rollback: exclude the sample positions consumed since the snapshot (PaLM-style).
        max_rollbacks: after this many rollbacks, stop rolling back and re-baseline the detectors.
        plateau_action: ``"none"``, ``"advance_stage"`` (DMU) or ``"scale_lr"``.
        lr_scale: LR factor for ``plateau_action="scale_lr"``.
        max_records: skipped steps / rollbacks kept in the state (older ones are only counted).

    Example::

        >>> ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=50, plateau_action="advance_stage")
        >>> ate.rollback_after, ate.snapshot_to
        (3, 'host')
    """

    def __init__(
        self,
        skip_on_spike: bool = True,
        rollback_after: int = 3,
        rollback_on_nonfinite: bool = True,
        snapshot_every: int = 50,
        snapshot_to: Literal["host", "disk"] = "host",
        keep_snapshots: int = 1,
        snapshot_dir: str | None = None,
        exclude_on_rollback: bool = True,
        max_rollbacks: int = 5,
        plateau_action: Literal["none", "advance_stage", "scale_lr"] = "none",
        lr_scale: float = 0.5,
        max_records: int = 1024,
    ) -> None:
        super().__init__()
        if rollback_after < 0 or snapshot_every < 1 or max_rollbacks < 0 or keep_snapshots < 1:
            raise ValueError(
                f"need rollback_after >= 0, snapshot_every >= 1, max_rollbacks >= 0, keep_snapshots >= 1; got "
                f"{rollback_after}, {snapshot_every}, {max_rollbacks}, {keep_snapshots}"
            )
        if plateau_action not in ("none", "advance_stage", "scale_lr"):
            raise ValueError(f"plateau_action must be 'none', 'advance_stage' or 'scale_lr', got {plateau_action!r}")
        if snapshot_to not in ("host", "disk"):
            raise ValueError(f"snapshot_to must be 'host' or 'disk', got {snapshot_to!r}")
        if not 0 < lr_scale:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        self.skip_on_spike, self.rollback_after, self.rollback_on_nonfinite = skip_on_spike, rollback_after, rollback_on_nonfinite
        self.snapshot_every, self.exclude_on_rollback, self.max_rollbacks = snapshot_every, exclude_on_rollback, max_rollbacks
        self.snapshot_to, self.keep_snapshots, self.snapshot_dir = snapshot_to, keep_snapshots, snapshot_dir
        self.plateau_action, self.lr_scale = plateau_action, lr_scale
        self.skipped_steps: deque[int] = deque(maxlen=max_records)
        self.rollback_log: deque[dict[str, Any]] = deque(maxlen=max_records)
        self.skip_count = 0
        self.rollback_count = 0
        self.store: SnapshotStore | None = None
        self.snapshot: dict[str, Any] | None = None  # small, rank-identical part of the last snapshot
        self._skip_reason: str | None = None
        self._skipped_this_batch = False
        self._rollback_reason: str | None = None
        self._trainer: L.Trainer | None = None
        self._bus = None
        self.optimizers: list[SkipStepOptimizer] = []

    @property
    def state_key(self) -> str:
        return "AdaptiveTrainingEngine"

    # ---------------------------------------------------------------- wiring
    def setup(self, trainer, pl_module, stage) -> None:
        self._trainer = trainer
        self._bus = get_bus(trainer)
        self._bus.subscribe(SpikeEvent, self._on_spike)
        self._bus.subscribe(PlateauEvent, self._on_plateau)
        directory = Path(self.snapshot_dir or Path(trainer.default_root_dir) / "heurimentor_snapshots")
        self.store = SnapshotStore(self.snapshot_to, self.keep_snapshots, directory if self.snapshot_to == "disk" else None)

    def _monitor(self):
        from lightning_papers.heurimentor.monitor import TrainingStateMonitor

        return next((c for c in self._trainer.callbacks if isinstance(c, TrainingStateMonitor)), None)

    def _dmu(self):
        from lightning_papers.heurimentor.dmu import DataManagementUnit

        return next((c for c in self._trainer.callbacks if isinstance(c, DataManagementUnit)), None)

    def on_fit_start(self, trainer, pl_module) -> None:
        """Install the skip mechanism where Lightning keeps optimizers and schedulers: ``trainer.strategy``."""
        if self._monitor() is None:
            raise RuntimeError("AdaptiveTrainingEngine needs a TrainingStateMonitor callback in the same Trainer")
        if not pl_module.automatic_optimization:
            raise RuntimeError("AdaptiveTrainingEngine needs automatic optimization (it skips inside optimizer.step)")
        strategy = trainer.strategy
        wrapped = [o if isinstance(o, SkipStepOptimizer) else SkipStepOptimizer(o, on_skip=self._publish_skip)
                   for o in strategy.optimizers]
        strategy.optimizers = wrapped  # Lightning rebuilds its LightningOptimizer wrappers around these
        self.optimizers = wrapped
        by_inner = {id(o.inner): o for o in wrapped}
        for cfg in strategy.lr_scheduler_configs:
            sched = cfg.scheduler
            if cfg.interval == "step" and not isinstance(sched, HeldScheduler):
                owner = by_inner.get(id(getattr(sched, "optimizer", None)), wrapped[0] if wrapped else None)
                if owner is not None:
                    cfg.scheduler = HeldScheduler(sched, owner)

    def on_train_start(self, trainer, pl_module) -> None:
        # after a checkpoint restore, so the first rollback point is the state training starts from
        self.take_snapshot(trainer, pl_module)

    def _publish_skip(self) -> None:
        tsm = self._monitor()
        step = tsm.step if tsm is not None else self._trainer.global_step
        self.skipped_steps.append(step)
        self.skip_count += 1
        self._skipped_this_batch = True
        self._bus.publish(SkipEvent(step=step, tokens=tsm.tokens if tsm else 0, reason=self._skip_reason or "spike"))

    def _request_skip(self, reason: str) -> None:
        self._skip_reason = reason
        for opt in self.optimizers:
            opt.request_skip()

    # ---------------------------------------------------------------- events
    def _on_spike(self, event: SpikeEvent) -> None:
        if self.skip_on_spike or event.non_finite:
            self._request_skip("spike")
        if self.rollback_count >= self.max_rollbacks:
            return
        if event.non_finite and self.rollback_on_nonfinite:
            self._rollback_reason = "non-finite loss"
        elif self.rollback_after and event.consecutive >= self.rollback_after:
            self._rollback_reason = f"{event.consecutive} spikes in a row"

    def _on_plateau(self, event: PlateauEvent) -> None:
        if self.plateau_action == "advance_stage":
            dmu = self._dmu()
            if dmu is None:
                raise RuntimeError("plateau_action='advance_stage' needs a DataManagementUnit callback")
            dmu.advance_stage(reason="plateau")
        elif self.plateau_action == "scale_lr":
            self.scale_lr(self.lr_scale)

    def scale_lr(self, factor: float) -> None:
        """Multiply every learning rate (and every scheduler's base LRs) by ``factor``."""
        for opt in self._trainer.optimizers:
            for g in opt.param_groups:
                g["lr"] *= factor
        for cfg in self._trainer.lr_scheduler_configs:
            if hasattr(cfg.scheduler, "base_lrs"):
                cfg.scheduler.base_lrs = [lr * factor for lr in cfg.scheduler.base_lrs]

    # ---------------------------------------------------------------- per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._skipped_this_batch = False
        self._skip_reason = None
        dmu = self._dmu()
        if dmu is not None and isinstance(batch, Mapping) and "positions" in batch:
            # a batch prefetched before a rollback may hold excluded positions: do not learn from it
            ranges = dmu.sampler.excluded_ranges if dmu.sampler is not None else []
            pos = batch["positions"].tolist()
            if any(a <= p < b for p in pos for a, b in ranges):
                self._request_skip("excluded data")  # all ranks agree: exclusions are global state

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.store is not None:
            self.store.wait()  # the asynchronous snapshot copy must finish before parameters change

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tsm = self._monitor()
        if self._rollback_reason is not None:
            reason, self._rollback_reason = self._rollback_reason, None
            self.rollback(trainer, pl_module, reason)
            return
        if tsm.consecutive == 0 and not self._skipped_this_batch and trainer.global_step % self.snapshot_every == 0:
            self.take_snapshot(trainer, pl_module)

    # ---------------------------------------------------------------- snapshots and rollback
    def take_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the good state off the device (each rank its own shards; see ``snapshot_to``)."""
        tsm, dmu = self._monitor(), self._dmu()
        if self.snapshot_to == "disk" and not any(o.state for o in trainer.optimizers):
            return  # DCP would initialise the optimizer state with a zero step: wait for the first real step
        self.store.save(trainer.global_step, pl_module, trainer.optimizers, rank=trainer.global_rank)
        self.snapshot = {
            "step": trainer.global_step,  # the next step to run from this state
            "schedulers": [copy.deepcopy(cfg.scheduler.state_dict()) for cfg in trainer.lr_scheduler_configs],
            "detectors": {d.name: copy.deepcopy(d.state_dict()) for d in tsm.detectors} if tsm else {},
            "dmu": copy.deepcopy(dmu.state_dict()) if dmu is not None else None,
        }
        self._bus.publish(CheckpointEvent(step=trainer.global_step, tokens=tsm.tokens if tsm else 0))

    @torch.no_grad()
    def rollback(self, trainer: L.Trainer, pl_module: L.LightningModule, reason: str = "") -> None:
        """Restore the last snapshot and exclude the positions consumed since (if a DMU is present)."""
        snap = self.snapshot
        if snap is None or self.store is None or not len(self.store):
            raise RuntimeError("no snapshot to roll back to")
        self.store.restore(pl_module, trainer.optimizers)
        for cfg, state in zip(trainer.lr_scheduler_configs, snap["schedulers"]):
            cfg.scheduler.load_state_dict(copy.deepcopy(state))
        tsm, dmu = self._monitor(), self._dmu()
        for d in tsm.detectors:
            if d.name in snap["detectors"]:
                d.load_state_dict(copy.deepcopy(snap["detectors"][d.name]))
        tsm.consecutive = 0
        excluded = (0, 0)
        if dmu is not None and snap["dmu"] is not None and dmu.sampler is not None:
            stop = dmu.sampler.position  # where generation had reached (includes prefetched batches)
            dmu.restore(copy.deepcopy(snap["dmu"]))
            start = dmu.sampler.position
            if self.exclude_on_rollback and stop > start:
                dmu.exclude_range(start, stop)
                excluded = (start, stop)
        self.rollback_count += 1
        self.rollback_log.append({"step": tsm.step, "to_step": snap["step"], "excluded": excluded, "reason": reason})
        if self.rollback_count >= self.max_rollbacks:
            tsm.rebaseline()
        self._bus.publish(
            RollbackEvent(step=tsm.step, tokens=tsm.tokens, to_step=snap["step"], excluded=excluded, reason=reason)
        )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": list(self.skipped_steps), "rollback_log": list(self.rollback_log),
                "skip_count": self.skip_count, "rollback_count": self.rollback_count}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.skipped_steps = deque(state_dict["skipped_steps"], maxlen=self.skipped_steps.maxlen)
        self.rollback_log = deque(state_dict["rollback_log"], maxlen=self.rollback_log.maxlen)
        self.skip_count = int(state_dict.get("skip_count", len(self.skipped_steps)))
        self.rollback_count = int(state_dict.get("rollback_count", len(self.rollback_log)))
