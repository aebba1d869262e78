"""Adaptive Training Engine (ATE): skip spiky steps, roll back on persistent spikes, act on plateaus.

Aquila2 report §3.1 describes the ATE as the part that lets a run continue on updated data and on a
changed cluster. Spike handling follows the best public mechanisms (FlagScale / OLMo-core skip-step,
PaLM restart-and-skip):

* **skip** (one spike): the decision is all-reduced by the monitor *before* the update; the ATE
  intercepts ``optimizer.step`` (the closure, i.e. forward/backward and the monitor's decision, still
  runs) and the LR scheduler step, so parameters, optimizer state and LR are untouched by that step on
  every rank. Lightning's global step still advances.
* **rollback** (``rollback_after`` spikes in a row, or a non-finite loss): restore the last good
  in-memory snapshot (parameters, optimizer and scheduler state, data-mixture state, detector state) and
  tell the DMU to exclude the sample positions trained since then (their windows are blocked for good).
* **plateau**: advance the DMU stage or scale the learning rate.

Resuming on another number of processes is a property of the checkpoint format: use
``ModelParallelStrategy(save_distributed_checkpoint=True)`` (reshardable DCP folders); all HeuriMentor
state is global (identical on every rank), so it loads on any world size.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
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

__all__ = ["AdaptiveTrainingEngine", "clone_state"]


def clone_state(obj: Any) -> Any:
    """Deep copy of nested dicts/lists/tuples with every tensor cloned (DTensor shards stay sharded)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return type(obj)((k, clone_state(v)) for k, v in obj.items()) if isinstance(obj, dict) else {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_state(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_state(v) for v in obj)
    return obj


class AdaptiveTrainingEngine(L.Callback):
    """Act on the monitor's events: skip, roll back and exclude data, or react to plateaus.

    Needs a :class:`~lightning_papers.heurimentor.TrainingStateMonitor` in the same Trainer (it makes the
    decisions); a :class:`~lightning_papers.heurimentor.DataManagementUnit` is needed for data exclusion
    and stage advances.

    Args:
        skip_on_spike: skip the optimizer and scheduler step of a spiky step.
        rollback_after: roll back after this many spiky steps in a row (0: never).
        rollback_on_nonfinite: roll back at once on a NaN/inf loss or gradient.
        snapshot_every: take an in-memory good-state snapshot every N steps (only at non-spiky steps).
        exclude_on_rollback: exclude the sample positions consumed since the snapshot (PaLM-style).
        max_rollbacks: after this many rollbacks, stop rolling back and re-baseline the detectors.
        plateau_action: ``"none"``, ``"advance_stage"`` (DMU) or ``"scale_lr"``.
        lr_scale: LR factor for ``plateau_action="scale_lr"``.

    Example::

        >>> ate = AdaptiveTrainingEngine(rollback_after=3, snapshot_every=50, plateau_action="advance_stage")
        >>> ate.rollback_after
        3
    """

    def __init__(
        self,
        skip_on_spike: bool = True,
        rollback_after: int = 3,
        rollback_on_nonfinite: bool = True,
        snapshot_every: int = 50,
        exclude_on_rollback: bool = True,
        max_rollbacks: int = 5,
        plateau_action: Literal["none", "advance_stage", "scale_lr"] = "none",
        lr_scale: float = 0.5,
    ) -> None:
        super().__init__()
        if rollback_after < 0 or snapshot_every < 1 or max_rollbacks < 0:
            raise ValueError(
                f"need rollback_after >= 0, snapshot_every >= 1, max_rollbacks >= 0; got {rollback_after}, "
                f"{snapshot_every}, {max_rollbacks}"
            )
        if plateau_action not in ("none", "advance_stage", "scale_lr"):
            raise ValueError(f"plateau_action must be 'none', 'advance_stage' or 'scale_lr', got {plateau_action!r}")
        if not 0 < lr_scale:
            raise ValueError(f"lr_scale must be > 0, got {lr_scale}")
        self.skip_on_spike, self.rollback_after, self.rollback_on_nonfinite = skip_on_spike, rollback_after, rollback_on_nonfinite
        self.snapshot_every, self.exclude_on_rollback, self.max_rollbacks = snapshot_every, exclude_on_rollback, max_rollbacks
        self.plateau_action, self.lr_scale = plateau_action, lr_scale
        self.skipped_steps: list[int] = []
        self.rollback_log: list[dict[str, Any]] = []
        self.snapshot: dict[str, Any] | None = None
        self._skip_current = False
        self._skipped_this_batch = False
        self._pending_excluded = False
        self._rollback_reason: str | None = None
        self._trainer: L.Trainer | None = None
        self._wrapped: set[int] = set()

    @property
    def state_key(self) -> str:
        return "AdaptiveTrainingEngine"

    # ---------------------------------------------------------------- wiring
    def setup(self, trainer, pl_module, stage) -> None:
        self._trainer = trainer
        bus = get_bus(trainer)
        bus.subscribe(SpikeEvent, self._on_spike)
        bus.subscribe(PlateauEvent, self._on_plateau)

    def _monitor(self):
        from lightning_papers.heurimentor.monitor import TrainingStateMonitor

        return next((c for c in self._trainer.callbacks if isinstance(c, TrainingStateMonitor)), None)

    def _dmu(self):
        from lightning_papers.heurimentor.dmu import DataManagementUnit

        return next((c for c in self._trainer.callbacks if isinstance(c, DataManagementUnit)), None)

    def on_train_start(self, trainer, pl_module) -> None:
        if self._monitor() is None:
            raise RuntimeError("AdaptiveTrainingEngine needs a TrainingStateMonitor callback in the same Trainer")
        for opt in trainer.optimizers:
            self._wrap_optimizer(opt)
        self._wrap_scheduler_step(pl_module)
        self.take_snapshot(trainer, pl_module)

    def _wrap_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if id(opt) in self._wrapped:
            return
        self._wrapped.add(id(opt))
        original = opt.step
        engine = self

        @functools.wraps(original)  # keeps the LR scheduler's step-tracking marker
        def step(closure=None, **kwargs):
            # the closure runs forward/backward and the monitor's all-reduced decision (on_before_optimizer_step)
            loss = closure() if closure is not None else None
            if engine._skip_current:
                engine._skip_current = False
                engine._skipped_this_batch = True
                engine._publish_skip()
                return loss
            return original(closure=(lambda: loss) if closure is not None else None, **kwargs)

        opt.step = step

    def _publish_skip(self) -> None:
        tsm = self._monitor()
        step = tsm.step if tsm is not None else self._trainer.global_step
        reason = "excluded data" if self._pending_excluded else "spike"
        self.skipped_steps.append(step)
        get_bus(self._trainer).publish(SkipEvent(step=step, tokens=tsm.tokens if tsm else 0, reason=reason))

    def _wrap_scheduler_step(self, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "_hm_sched_wrapped", False):
            return
        original = pl_module.lr_scheduler_step
        engine = self

        def lr_scheduler_step(scheduler, metric):
            if engine._skipped_this_batch:
                return None  # the LR schedule does not advance on a skipped step
            return original(scheduler, metric)

        pl_module.lr_scheduler_step = lr_scheduler_step
        pl_module._hm_sched_wrapped = True

    # ---------------------------------------------------------------- events
    def _on_spike(self, event: SpikeEvent) -> None:
        if self.skip_on_spike or event.non_finite:
            self._skip_current = True
        if len(self.rollback_log) >= self.max_rollbacks:
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
        self._skip_current = False
        self._pending_excluded = False
        dmu = self._dmu()
        if dmu is not None and isinstance(batch, Mapping) and "positions" in batch:
            # a batch prefetched before a rollback may hold excluded positions: do not learn from it
            ranges = dmu.sampler.excluded_ranges if dmu.sampler is not None else []
            pos = batch["positions"].tolist()
            if any(a <= p < b for p in pos for a, b in ranges):
                self._skip_current = True
                self._pending_excluded = True  # all ranks agree: exclusions are global state

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tsm = self._monitor()
        self._pending_excluded = False
        if self._rollback_reason is not None:
            reason, self._rollback_reason = self._rollback_reason, None
            self.rollback(trainer, pl_module, reason)
            return
        if tsm.consecutive == 0 and not self._skipped_this_batch and trainer.global_step % self.snapshot_every == 0:
            self.take_snapshot(trainer, pl_module)

    # ---------------------------------------------------------------- snapshots and rollback
    def take_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep an in-memory copy of the good state (each rank keeps its own shards)."""
        tsm, dmu = self._monitor(), self._dmu()
        self.snapshot = {
            "step": trainer.global_step,  # the next step to run from this state
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "buffers": [b.detach().clone() for b in pl_module.buffers()],
            "optimizers": [clone_state(opt.state_dict()) for opt in trainer.optimizers],
            "schedulers": [clone_state(cfg.scheduler.state_dict()) for cfg in trainer.lr_scheduler_configs],
            "detectors": {d.name: clone_state(d.state_dict()) for d in tsm.detectors} if tsm else {},
            "dmu": clone_state(dmu.state_dict()) if dmu is not None else None,
        }
        get_bus(trainer).publish(CheckpointEvent(step=trainer.global_step, tokens=tsm.tokens if tsm else 0))

    @torch.no_grad()
    def rollback(self, trainer: L.Trainer, pl_module: L.LightningModule, reason: str = "") -> None:
        """Restore the last snapshot and exclude the positions consumed since (if a DMU is present)."""
        snap = self.snapshot
        if snap is None:
            raise RuntimeError("no snapshot to roll back to")
        for p, saved in zip(pl_module.parameters(), snap["params"]):
            p.copy_(saved)
        for b, saved in zip(pl_module.buffers(), snap["buffers"]):
            b.copy_(saved)
        for opt, state in zip(trainer.optimizers, snap["optimizers"]):
            opt.load_state_dict(clone_state(state))
        for cfg, state in zip(trainer.lr_scheduler_configs, snap["schedulers"]):
            cfg.scheduler.load_state_dict(clone_state(state))
        tsm, dmu = self._monitor(), self._dmu()
        for d in tsm.detectors:
            if d.name in snap["detectors"]:
                d.load_state_dict(clone_state(snap["detectors"][d.name]))
        tsm.consecutive = 0
        excluded = (0, 0)
        if dmu is not None and snap["dmu"] is not None and dmu.sampler is not None:
            stop = dmu.sampler.position  # where generation had reached (includes prefetched batches)
            dmu.restore(clone_state(snap["dmu"]))
            start = dmu.sampler.position
            if self.exclude_on_rollback and stop > start:
                dmu.exclude_range(start, stop)
                excluded = (start, stop)
        self.rollback_log.append({"step": tsm.step, "to_step": snap["step"], "excluded": excluded, "reason": reason})
        if len(self.rollback_log) >= self.max_rollbacks:
            tsm.rebaseline()
        get_bus(trainer).publish(
            RollbackEvent(step=tsm.step, tokens=tsm.tokens, to_step=snap["step"], excluded=excluded, reason=reason)
        )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": list(self.skipped_steps), "rollback_log": list(self.rollback_log)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.skipped_steps = list(state_dict["skipped_steps"])
        self.rollback_log = list(state_dict["rollback_log"])
