"""Data Management Unit (DMU): owns the mixture, applies stages, reacts to spikes, optional online policy.

Aquila2 report §3.3, App. 7.6/7.11: the DMU owns the data recipe of each training cycle (stages such as
K6 -> K61-63 -> K64) and its operations (switch batches, filter, resample, add sources). Here the
recipe is a :class:`~lightning_papers.heurimentor.MixtureSampler`; the DMU changes it live and keeps its
state in the checkpoint. The optional online policy is EXP3 as used by ODM (Albalak et al., 2023):
reward = per-source training loss, importance-weighted by the sampling probability, with an EMA and a
weight floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as L
import numpy as np
from torch.utils.data import DistributedSampler

from lightning_papers.heurimentor.events import StageChangeEvent, StepEvent, WeightsChangeEvent, get_bus
from lightning_papers.heurimentor.mixture import MixtureSampler

__all__ = ["DataManagementUnit", "EXP3Policy"]


class EXP3Policy:
    """EXP3 mixture policy with smoothed importance-weighted rewards and a floor (ODM-style).

    ``R_s <- alpha R_s + (1 - alpha) L_s / pi_s`` for each source observed in the update, then
    ``pi = (1 - K floor) softmax(eta R) + floor``; ``eta`` defaults to ODM's
    ``min(1/K, sqrt(ln K / (K t)))``.

    Args:
        sources: source names.
        floor: minimum weight of every source (``floor * K <= 1``).
        lr: EXP3 learning rate ``eta`` (None: ODM schedule).
        smoothing: EMA factor ``alpha`` of the rewards.
        initial: starting weights (default uniform).

    Example::

        >>> pol = EXP3Policy(["a", "b"], floor=0.05, lr=0.5)
        >>> w = pol.update({"a": 3.0, "b": 1.0})
        >>> w["a"] > w["b"], round(sum(w.values()), 6)
        (True, 1.0)
    """

    def __init__(
        self,
        sources: Sequence[str],
        floor: float = 0.05,
        lr: float | None = None,
        smoothing: float = 0.9,
        initial: Mapping[str, float] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("EXP3Policy needs at least one source")
        if not 0 <= floor or floor * len(sources) > 1:
            raise ValueError(f"floor must be in [0, 1/K] = [0, {1 / len(sources):.3g}], got {floor}")
        if lr is not None and lr <= 0:
            raise ValueError(f"lr must be > 0 or None, got {lr}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.sources, self.floor, self.lr, self.smoothing = list(sources), float(floor), lr, float(smoothing)
        self.rewards = {s: 0.0 for s in self.sources}
        self.t = 0
        self.weights = dict(initial) if initial is not None else {s: 1.0 / len(self.sources) for s in self.sources}

    def add_source(self, name: str) -> None:
        self.sources.append(name)
        self.rewards[name] = 0.0
        self.weights[name] = 0.0

    def _eta(self) -> float:
        k = len(self.sources)
        if self.lr is not None:
            return self.lr
        return min(1.0 / k, math.sqrt(math.log(max(k, 2)) / (k * max(self.t, 1))))

    def update(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Update from per-source losses (sources absent from ``losses`` keep their reward); return weights."""
        self.t += 1
        for s, loss in losses.items():
            if s not in self.rewards or not math.isfinite(loss):
                continue
            pi = max(self.weights.get(s, 0.0), self.floor, 1e-6)
            self.rewards[s] = self.smoothing * self.rewards[s] + (1 - self.smoothing) * loss / pi
        r = np.array([self.rewards[s] for s in self.sources]) * self._eta()
        p = np.exp(r - r.max())
        p /= p.sum()
        k = len(self.sources)
        p = (1 - k * self.floor) * p + self.floor
        p /= p.sum()
        self.weights = {s: float(v) for s, v in zip(self.sources, p)}
        return dict(self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "rewards": dict(self.rewards), "t": self.t, "weights": dict(self.weights)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if sorted(state["sources"]) != sorted(self.sources):
            raise ValueError(
                f"cannot resume the mixture policy: the checkpoint's sources {sorted(state['sources'])} differ from "
                f"this run's {sorted(self.sources)}"
            )
        self.sources = list(state["sources"])
        self.rewards, self.t, self.weights = dict(state["rewards"]), int(state["t"]), dict(state["weights"])


def _with_floor(weights: Mapping[str, float], floor: float) -> dict[str, float]:
    """Renormalise to sum 1 with every positive-weight source at least ``floor``."""
    w = {k: max(float(v), 0.0) for k, v in weights.items()}
    total = sum(w.values())
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {dict(weights)}")
    w = {k: v / total for k, v in w.items()}
    active = [k for k, v in w.items() if v > 0]
    if floor > 0 and active:
        floor = min(floor, 1.0 / len(active))
        low = [k for k in active if w[k] < floor]
        if low:
            rest = sum(w[k] for k in active if k not in low)
            budget = 1.0 - floor * len(low)
            for k in active:
                w[k] = floor if k in low else (w[k] / rest * budget if rest > 0 else 0.0)
    s = sum(w.values())
    return {k: v / s for k, v in w.items()}


class DataManagementUnit(L.Callback):
    """Owns the data mixture of a run: stages at token budgets, live edits, spike down-weighting, online policy.

    Works with any LightningModule whose training batches are dicts carrying ``"source_ids"`` and
    ``"positions"`` (as produced by :class:`~lightning_papers.heurimentor.MixtureDataModule`).

    Args:
        sampler: the sampler to manage (default: ``trainer.datamodule.sampler``).
        policy: ``"fixed"`` (stage weights only) or ``"exp3"`` (online re-weighting from per-source loss).
        policy_floor: minimum weight of any source under the online policy and after down-weighting.
        policy_lr: EXP3 learning rate (None: ODM's schedule).
        policy_every: update the online policy every N steps.
        downweight_on_spike: multiply the weight of the source blamed for a spike by this factor
            (1.0: off); the penalty persists across stages and rollbacks.
        policy_smoothing: EMA factor of the EXP3 rewards.
        penalty_halflife: a penalty recovers towards 1 by doubling every this many steps without a spike
            (checked every ``policy_every`` steps; 0: penalties are permanent).

    Raises:
        ValueError: when a training batch carries no ``source_ids`` / ``positions``.

    Example::

        >>> dmu = DataManagementUnit(policy="exp3", policy_floor=0.05)
        >>> dmu.policy_name
        'exp3'
    """

    def __init__(
        self,
        sampler: MixtureSampler | None = None,
        policy: Literal["fixed", "exp3"] = "fixed",
        policy_floor: float = 0.05,
        policy_lr: float | None = None,
        policy_every: int = 10,
        downweight_on_spike: float = 0.25,
        policy_smoothing: float = 0.9,
        penalty_halflife: int = 100,
    ) -> None:
        super().__init__()
        if policy not in ("fixed", "exp3"):
            raise ValueError(f"policy must be 'fixed' or 'exp3', got {policy!r}")
        if not 0 <= policy_floor < 1 or policy_every < 1 or not 0 < downweight_on_spike <= 1:
            raise ValueError(
                f"need 0 <= policy_floor < 1, policy_every >= 1, 0 < downweight_on_spike <= 1; got "
                f"{policy_floor}, {policy_every}, {downweight_on_spike}"
            )
        self.sampler = sampler
        self.policy_name, self.policy_floor, self.policy_lr = policy, policy_floor, policy_lr
        self.policy_every, self.downweight_on_spike, self.policy_smoothing = policy_every, downweight_on_spike, policy_smoothing
        if penalty_halflife < 0:
            raise ValueError(f"penalty_halflife must be >= 0, got {penalty_halflife}")
        self.penalty_halflife = penalty_halflife
        self._calm = 0  # steps since the last spike
        self.policy: EXP3Policy | None = None
        self.penalties: dict[str, float] = {}
        self.trained_next = 0
        self.last_stage = 0
        self._loaded: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None
        self._step = 0
        self._trained = False  # whether trained_next refers to a kept sampler state
        self._bus = None

    @property
    def state_key(self) -> str:
        return "DataManagementUnit"

    # ---------------------------------------------------------------- wiring
    def setup(self, trainer, pl_module, stage) -> None:
        self._trainer = trainer
        if self.sampler is None:
            dm = getattr(trainer, "datamodule", None)
            if dm is not None and hasattr(dm, "setup") and getattr(dm, "sampler", None) is None:
                dm.setup(stage)
            self.sampler = getattr(dm, "sampler", None)
        if self.sampler is None:
            raise ValueError(
                "DataManagementUnit needs a MixtureSampler: pass sampler=... or use a datamodule with a `sampler` "
                "attribute (e.g. MixtureDataModule)"
            )
        if self.policy_name == "exp3" and self.policy is None:
            self.policy = EXP3Policy(self.sampler.sources, self.policy_floor, self.policy_lr, self.policy_smoothing,
                                     initial=self.sampler.weights)
        self._bus = get_bus(trainer)
        self._bus.subscribe(StepEvent, self._on_step)
        if self._loaded is not None:
            self._apply_loaded()

    def _publish(self, event) -> None:
        if self._bus is not None:
            self._bus.publish(event)

    def on_train_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if self.sampler is not None and sampler is not None and sampler is not self.sampler and hasattr(loader, "dataset"):
            if type(sampler).__name__ == "DistributedSamplerWrapper" or isinstance(sampler, DistributedSampler):
                raise ValueError(
                    "Lightning replaced the MixtureSampler by a DistributedSampler; the sampler already splits the "
                    "stream across ranks: create the Trainer with use_distributed_sampler=False"
                )

    def _stamp(self) -> dict[str, int]:
        from lightning_papers.heurimentor.monitor import TrainingStateMonitor

        tsm = next((c for c in self._trainer.callbacks if isinstance(c, TrainingStateMonitor)), None) if self._trainer else None
        step = tsm.step if tsm is not None else (self._trainer.global_step if self._trainer else 0)
        return {"step": step, "tokens": self.sampler.consumed_tokens if self.sampler else 0}

    # ---------------------------------------------------------------- operations
    def set_weights(self, weights: Mapping[str, float], reason: str = "user") -> None:
        """Set the weights of the current stage (validated: known sources, non-negative, summing to 1)."""
        self.sampler.set_weights(weights)
        if self.policy is not None:
            self.policy.weights = self.sampler.weights
        self._publish(WeightsChangeEvent(**self._stamp(), weights=self.sampler.weights, reason=reason))

    def advance_stage(self, reason: str = "user") -> None:
        """Move to the next stage now (e.g. on a plateau)."""
        self.sampler.advance_stage()
        self._apply_penalties(reason=f"stage advance ({reason})", base=self.sampler.weights)

    def add_source(self, name: str, size: int) -> None:
        """Register a new source of ``size`` windows in the sampler (see ``MixtureDataModule.add_source``)."""
        self.sampler.add_source(name, size)
        if self.policy is not None:
            self.policy.add_source(name)

    def exclude_range(self, start: int, stop: int) -> None:
        """Exclude global sample positions ``[start, stop)`` and block their windows."""
        self.sampler.exclude_range(start, stop)

    def _apply_penalties(self, reason: str, base: Mapping[str, float] | None = None) -> None:
        """Weights = base x penalties (floored); base: the policy's weights, else the current stage's."""
        if base is None:
            if self.policy is not None:
                base = self.policy.weights
            else:
                stage = self.sampler.stages[min(self.sampler.stage_index, len(self.sampler.stages) - 1)]
                base = {k: stage.weights.get(k, 0.0) for k in self.sampler.sources}
        if not self.penalties:
            if dict(base) != self.sampler.weights:
                self.set_weights(base, reason=reason)
            else:
                self._publish(WeightsChangeEvent(**self._stamp(), weights=dict(base), reason=reason))
            return
        w = {k: v * self.penalties.get(k, 1.0) for k, v in base.items()}
        self.set_weights(_with_floor(w, self.policy_floor), reason=reason)

    def _apply_from_stage(self, reason: str) -> None:
        """Weights = current stage weights x penalties (floored), for the fixed policy."""
        self._apply_penalties(reason)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore the mixture state from :meth:`state_dict` (used by the ATE on rollback); penalties persist."""
        penalties = dict(self.penalties)
        self._restore(state, check_sources=False)  # a source added after the snapshot is expected
        self.penalties = {**self.penalties, **penalties}
        if self.penalties:
            self._apply_penalties(reason="rollback (keep penalties)")

    # ---------------------------------------------------------------- per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not isinstance(batch, Mapping) or "source_ids" not in batch or "positions" not in batch:
            keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise ValueError(
                "DataManagementUnit needs training batches that are dicts with 'source_ids' and 'positions' "
                f"(use MixtureDataModule or MixtureDataset); got {keys}"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = int(batch["positions"].max())
        self.trained_next = self.sampler.next_round_after(last)
        self._trained = True
        stage = self.sampler.stage_at(self.trained_next)
        if stage != self.last_stage:
            self.last_stage = stage
            st = self.sampler.stages[min(stage, len(self.sampler.stages) - 1)]
            self._publish(StageChangeEvent(**self._stamp(), stage=stage, name=st.name, weights=dict(st.weights)))
            if self.penalties:
                self._apply_penalties(reason="stage change (keep penalties)")

    def _on_step(self, event: StepEvent) -> None:
        if event.spike:
            self._calm = 0
        if event.culprit is not None and self.downweight_on_spike < 1.0:  # blame of a spike (maybe the previous step)
            self.penalties[event.culprit] = max(self.penalties.get(event.culprit, 1.0) * self.downweight_on_spike, 1e-3)
            self._apply_penalties(reason=f"spike blamed on {event.culprit}")
            return
        if not event.spike:
            self._calm += 1
            if self.penalties and self.penalty_halflife and self._calm % self.policy_every == 0:
                factor = 2.0 ** (self.policy_every / self.penalty_halflife)
                self.penalties = {k: min(1.0, v * factor) for k, v in self.penalties.items()}
                recovered = [k for k, v in self.penalties.items() if v >= 1.0]
                for k in recovered:
                    del self.penalties[k]
                if self.policy is None:  # the policy branch below applies penalties itself
                    self._apply_from_stage(reason="penalty recovery")
        if self.policy is not None and event.source_loss and not event.spike:
            self._step += 1
            if self._step % self.policy_every == 0:
                w = self.policy.update(event.source_loss)
                w = {k: v * self.penalties.get(k, 1.0) for k, v in w.items()}
                self.sampler.set_weights(_with_floor(w, self.policy_floor))
                self._publish(WeightsChangeEvent(**self._stamp(), weights=self.sampler.weights, reason="exp3"))

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        if self.sampler is None:
            return dict(self._loaded or {})
        return {
            "sampler": self.sampler.state_dict(position=self.trained_next if self._trained else None),
            "policy": self.policy.state_dict() if self.policy is not None else None,
            "penalties": dict(self.penalties),
            "trained_next": self.trained_next,
            "last_stage": self.last_stage,
            "step": self._step,
            "calm": self._calm,
        }

    def _restore(self, state: Mapping[str, Any], check_sources: bool = True) -> None:
        self.sampler.load_state_dict(state["sampler"], check_sources=check_sources)
        if state.get("policy") is not None:
            if self.policy is None:
                self.policy = EXP3Policy(state["policy"]["sources"], self.policy_floor, self.policy_lr, self.policy_smoothing)
            self.policy.load_state_dict(state["policy"])
        self.penalties = dict(state.get("penalties", {}))
        self.trained_next = int(state["trained_next"])
        self._trained = False  # the restored sampler's live state is the trained state
        self.last_stage = int(state["last_stage"])
        self._step = int(state.get("step", 0))
        self._calm = int(state.get("calm", 0))

    def _apply_loaded(self) -> None:
        state, self._loaded = self._loaded, None
        self._restore(state)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._loaded = dict(state_dict)
        if self.sampler is not None:
            self._apply_loaded()
