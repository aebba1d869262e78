"""Training State Monitor (TSM): spike/plateau detectors, per-source loss, weight trajectory, dashboard.

Aquila2 report §3.2: the TSM watches loss, per-domain behaviour and model weights against tokens seen,
and its findings trigger actions (new data, LR changes, data cleaning). Here every observation is
reduced across ranks and published as a typed event on the shared bus (:mod:`.events`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch

from lightning_papers.heurimentor.events import (
    Event,
    HeldOutEvent,
    PlateauEvent,
    RollbackEvent,
    SkipEvent,
    SpikeEvent,
    StageChangeEvent,
    StepEvent,
    WeightsChangeEvent,
    get_bus,
)
from lightning_papers.heurimentor.trajectory import layer_std_curves, trajectory_distances

__all__ = [
    "PlateauDetector",
    "RelativeSpikeDetector",
    "RollingMeanSpikeDetector",
    "SpikeDetector",
    "TrainingStateMonitor",
    "ZScoreSpikeDetector",
    "make_detector",
    "per_sample_causal_lm_loss",
]


# ====================================================================== detectors (plain Python)
class SpikeDetector:
    """Base class. ``check(value)`` decides without side effects; ``accept(value)`` adds a good value.

    Args:
        metric: ``"loss"`` or ``"grad_norm"``.
        warmup: number of accepted values before the detector may fire.
    """

    kind = "base"

    def __init__(self, metric: str = "loss", warmup: int = 10) -> None:
        if metric not in ("loss", "grad_norm"):
            raise ValueError(f"detector metric must be 'loss' or 'grad_norm', got {metric!r}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.metric, self.warmup, self.seen = metric, int(warmup), 0

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.metric}"

    def check(self, value: float) -> tuple[bool, float]:
        """Return (is_spike, reference value)."""
        raise NotImplementedError

    def accept(self, value: float) -> None:
        self.seen += 1

    def reset(self) -> None:
        self.seen = 0

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seen = int(state["seen"])


class RelativeSpikeDetector(SpikeDetector):
    """Spike when ``(value - last_good) / last_good >= threshold`` (FlagScale's rule, threshold 0.2)."""

    kind = "relative"

    def __init__(self, threshold: float = 0.2, metric: str = "loss", warmup: int = 10) -> None:
        super().__init__(metric, warmup)
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        self.threshold, self.last_good = float(threshold), None

    def check(self, value: float) -> tuple[bool, float]:
        if self.last_good is None or self.seen < self.warmup:
            return False, float("nan") if self.last_good is None else self.last_good
        ref = self.last_good
        return (value - ref) / max(abs(ref), 1e-12) >= self.threshold, ref

    def accept(self, value: float) -> None:
        super().accept(value)
        self.last_good = float(value)

    def reset(self) -> None:
        super().reset()
        self.last_good = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_good": self.last_good}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_good = state["last_good"]


class _WindowedSpikeDetector(SpikeDetector):
    """A detector that compares against the last ``window`` accepted (good) values."""

    def __init__(self, window: int, metric: str, warmup: int) -> None:
        super().__init__(metric, warmup)
        self.window = int(window)
        self.values: deque[float] = deque(maxlen=self.window)

    def accept(self, value: float) -> None:
        super().accept(value)
        self.values.append(float(value))

    def reset(self) -> None:
        super().reset()
        self.values.clear()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "values": list(self.values)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.values = deque(state["values"], maxlen=self.window)


class RollingMeanSpikeDetector(_WindowedSpikeDetector):
    """Spike when ``value > ratio * mean(last window good values)`` (Lightning ``SpikeDetection``: window 10,
    ratio 2; LLM Foundry ``KillLossSpike``: 2x the mean of the last 100 steps)."""

    kind = "rolling"

    def __init__(self, window: int = 20, ratio: float = 1.5, metric: str = "loss", warmup: int | None = None) -> None:
        if window < 1 or ratio <= 1.0:
            raise ValueError(f"need window >= 1 and ratio > 1, got window={window}, ratio={ratio}")
        super().__init__(window, metric, window if warmup is None else warmup)
        self.ratio = float(ratio)

    def check(self, value: float) -> tuple[bool, float]:
        if not self.values or self.seen < self.warmup:
            return False, float("nan")
        ref = float(np.mean(self.values))
        return value > self.ratio * ref, ref



class ZScoreSpikeDetector(_WindowedSpikeDetector):
    """Spike when ``(value - mean) / std > threshold`` over the last ``window`` good values
    (OLMo-core ``SkipStepOptimizer``: window 128, threshold 6, active after 64 values)."""

    kind = "zscore"

    def __init__(self, window: int = 128, threshold: float = 6.0, metric: str = "loss", warmup: int = 64) -> None:
        if window < 2 or threshold <= 0:
            raise ValueError(f"need window >= 2 and threshold > 0, got window={window}, threshold={threshold}")
        super().__init__(window, metric, warmup)
        self.threshold = float(threshold)

    def check(self, value: float) -> tuple[bool, float]:
        if len(self.values) < 2 or self.seen < self.warmup:
            return False, float("nan")
        arr = np.asarray(self.values)
        mean, std = float(arr.mean()), float(arr.std())
        return (value - mean) / max(std, 1e-8) > self.threshold, mean



_DETECTORS = {"relative": RelativeSpikeDetector, "rolling": RollingMeanSpikeDetector, "zscore": ZScoreSpikeDetector}


def make_detector(spec: SpikeDetector | Mapping[str, Any]) -> SpikeDetector:
    """Build a detector from ``{"kind": "relative"|"rolling"|"zscore", **kwargs}`` (YAML-friendly).

    Example::

        >>> make_detector({"kind": "rolling", "window": 5, "ratio": 2.0}).name
        'rolling:loss'
    """
    if isinstance(spec, SpikeDetector):
        return spec
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise TypeError(f"a detector spec must be a SpikeDetector or a mapping with 'kind', got {spec!r}")
    kwargs = dict(spec)
    kind = kwargs.pop("kind")
    if kind not in _DETECTORS:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {sorted(_DETECTORS)}")
    return _DETECTORS[kind](**kwargs)


class PlateauDetector:
    """Fires when the smoothed loss stopped falling.

    The loss is smoothed with an EMA (``smoothing``); after ``window`` values, the least-squares slope of
    the last ``window`` smoothed values, times ``window`` and divided by their mean, is the relative
    decrease over the window; a plateau is a relative decrease below ``tolerance``. After firing it
    waits ``cooldown`` values (default: ``window``).

    Example::

        >>> d = PlateauDetector(window=10, tolerance=0.01)
        >>> any(d.update(2.0) is not None for _ in range(10))
        True
    """

    def __init__(self, window: int = 100, tolerance: float = 0.01, smoothing: float = 0.0, cooldown: int | None = None) -> None:
        if window < 3 or tolerance < 0 or not 0 <= smoothing < 1:
            raise ValueError(
                f"need window >= 3, tolerance >= 0, 0 <= smoothing < 1; got {window}, {tolerance}, {smoothing}"
            )
        self.window, self.tolerance, self.smoothing = int(window), float(tolerance), float(smoothing)
        self.cooldown = self.window if cooldown is None else int(cooldown)
        self.values: deque[float] = deque(maxlen=self.window)
        self.ema: float | None = None
        self.wait = 0

    def update(self, value: float) -> float | None:
        """Add a value; return the relative slope when a plateau fires, else None."""
        if not math.isfinite(value):
            return None
        self.ema = value if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * value
        self.values.append(self.ema)
        if self.wait > 0:
            self.wait -= 1
            return None
        if len(self.values) < self.window:
            return None
        y = np.asarray(self.values)
        x = np.arange(len(y)) - (len(y) - 1) / 2
        slope = float((x * (y - y.mean())).sum() / (x * x).sum())
        rel_drop = -slope * self.window / max(abs(float(y.mean())), 1e-12)
        if rel_drop < self.tolerance:
            self.wait = self.cooldown
            return -rel_drop
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "ema": self.ema, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = deque(state["values"], maxlen=self.window)
        self.ema, self.wait = state["ema"], int(state["wait"])


def per_sample_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence, shape (B,) (labels shifted like Hugging Face)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view(shift_labels.shape)
    mask = (shift_labels != ignore_index).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


def _grad_sq(module: torch.nn.Module) -> tuple[float, float]:
    """(sum of squares of sharded DTensor grads on this rank, sum of squares of replicated grads)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        DTensor = ()  # type: ignore[assignment]
    sharded, replicated = [], []
    for p in module.parameters():
        g = p.grad
        if g is None:
            continue
        if isinstance(g, DTensor):
            sharded.append(g.to_local())
        else:
            replicated.append(g)

    def sq(grads: list[torch.Tensor]) -> float:
        grads = [g for g in grads if g.numel()]
        if not grads:
            return 0.0
        norms = torch._foreach_norm(grads)  # one fused call instead of a Python loop of reductions
        return float(torch.stack([n.double() for n in norms]).pow(2).sum())

    return sq(sharded), sq(replicated)


def _all_reduce_sum(trainer: L.Trainer, values: list[float]) -> list[float]:
    """Sum over all ranks with a single all-reduce (no barrier: every rank calls it at the same point)."""
    import torch.distributed as dist

    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


# ====================================================================== the callback
class TrainingStateMonitor(L.Callback):
    """Training State Monitor: detectors, per-source loss, weight trajectory, events, log and dashboard.

    Works with any LightningModule trained with automatic optimization whose ``training_step`` returns a
    loss (or ``{"loss": ...}``). Per-source loss needs batches with ``"source_ids"`` and a per-sample
    loss, returned as ``{"loss": ..., "sample_loss": Tensor(B)}``. The held-out per-source loss needs
    a datamodule with ``heldout_batches()`` and a module with ``per_sample_loss(batch)``.

    Args:
        detectors: spike detectors or specs ``{"kind": "relative"|"rolling"|"zscore", ...}``
            (default: rolling-mean ratio 1.5 over 20 steps and z-score 6 over 128 steps).
        plateau_window: steps in the plateau regression window (0 disables).
        plateau_tolerance: minimum relative decrease of the smoothed loss over the window.
        plateau_smoothing: EMA factor applied before the regression.
        heldout_every: evaluate held-out per-source loss every N steps (0: off).
        trajectory_every: record std-over-layers curves every N steps (0: only when a checkpoint is saved).
        source_ema: EMA factor of the per-source training loss.
        blame_threshold: at a spike, blame the source whose loss rose most above its running mean, if that
            relative rise is at least this (published as ``StepEvent.culprit``).
        source_loss_every: all-reduce the per-source training loss every N steps (and at every spike);
            ``StepEvent.source_loss`` is empty on the other steps. The gradient norm is also computed every
            N steps only, unless a detector watches ``grad_norm``. Fewer passes and collectives, lower overhead.
        log_dir: where ``heurimentor.log`` and ``heurimentor_dashboard.png`` go (default: the trainer's log dir).
        dashboard: write the PNG dashboard at the end of fit.
        log_metrics: also ``pl_module.log`` the monitored values under ``hm/``.

    Example::

        >>> tsm = TrainingStateMonitor(detectors=[{"kind": "relative", "threshold": 0.5}], plateau_window=50)
        >>> trainer = L.Trainer(callbacks=[tsm], max_steps=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        detectors: Sequence[SpikeDetector | Mapping[str, Any]] | None = None,
        plateau_window: int = 100,
        plateau_tolerance: float = 0.01,
        plateau_smoothing: float = 0.0,
        heldout_every: int = 0,
        trajectory_every: int = 0,
        source_ema: float = 0.9,
        blame_threshold: float = 0.2,
        source_loss_every: int = 10,
        log_dir: str | None = None,
        dashboard: bool = True,
        log_metrics: bool = True,
    ) -> None:
        super().__init__()
        if detectors is None:
            detectors = [{"kind": "rolling", "window": 20, "ratio": 1.5}, {"kind": "zscore", "window": 128, "threshold": 6.0}]
        self.detectors = [make_detector(d) for d in detectors]
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detectors must have distinct kind:metric names, got {names}")
        if heldout_every < 0 or trajectory_every < 0:
            raise ValueError(f"heldout_every and trajectory_every must be >= 0, got {heldout_every}, {trajectory_every}")
        if not 0 <= source_ema < 1:
            raise ValueError(f"source_ema must be in [0, 1), got {source_ema}")
        self.plateau = PlateauDetector(plateau_window, plateau_tolerance, plateau_smoothing) if plateau_window else None
        self.heldout_every, self.trajectory_every, self.source_ema = heldout_every, trajectory_every, source_ema
        self.blame_threshold = blame_threshold
        if source_loss_every < 1:
            raise ValueError(f"source_loss_every must be >= 1, got {source_loss_every}")
        self.source_loss_every = source_loss_every
        self._grad_detectors = any(d.metric == "grad_norm" for d in self.detectors)
        self._src_acc: torch.Tensor | None = None
        self._src_steps = 0
        self.step = 0  # index of the current optimizer step (trainer.global_step when its batch started)
        self.log_dir, self.dashboard, self.log_metrics = log_dir, dashboard, log_metrics
        self.source_names: list[str] = []
        self.history: dict[str, list] = {
            "step": [], "tokens": [], "loss": [], "grad_norm": [], "spike": [], "skipped": [], "source_loss": [],
        }
        self.heldout_history: list[tuple[int, int, dict[str, float]]] = []
        self.weights_history: list[tuple[int, int, dict[str, float]]] = []
        self.rollbacks: list[tuple[int, int]] = []
        self.trajectory: list[tuple[int, int, dict[str, list[float]]]] = []
        self.trajectory_dist: list[tuple[int, dict[str, float]]] = []
        self.source_loss_ema: dict[str, float] = {}
        self.tokens = 0
        self.consecutive = 0
        self._micro_losses: list[float] = []
        self._step_tokens = 0
        self._pending: dict[str, Any] | None = None
        self._skipped_now = False
        self._bus = None
        self._log_file: Path | None = None

    # ---------------------------------------------------------------- wiring
    @property
    def state_key(self) -> str:
        return "TrainingStateMonitor"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._bus = get_bus(trainer)
        self._bus.subscribe(Event, self._on_event)
        self._bus.subscribe(SkipEvent, self._on_skip)
        dm = getattr(trainer, "datamodule", None)
        names = getattr(dm, "source_names", None)
        if names:
            self.source_names = list(names)
        sampler = getattr(dm, "sampler", None)
        if sampler is not None and not self.weights_history and hasattr(sampler, "weights"):
            self.weights_history.append((0, 0, dict(sampler.weights)))  # starting mixture, for the dashboard
        root = Path(self.log_dir or trainer.log_dir or trainer.default_root_dir)
        self._log_file = root / "heurimentor.log"
        self.out_dir = root

    @property
    def bus(self):
        return self._bus

    def _on_skip(self, event: SkipEvent) -> None:
        self._skipped_now = True

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StageChangeEvent | WeightsChangeEvent):
            self.weights_history.append((event.step, event.tokens, dict(event.weights)))
        if isinstance(event, RollbackEvent):
            self.rollbacks.append((event.step, event.to_step))
        if isinstance(event, StepEvent) and not event.spike:
            return  # routine steps are in the history, not in the text log
        if self._log_file is not None and _is_rank_zero():
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            fields = ", ".join(f"{k}={_fmt(v)}" for k, v in event.as_dict().items() if k not in ("event", "step", "tokens"))
            with self._log_file.open("a", encoding="utf-8") as f:
                f.write(f"step {event.step:>7} | tokens {event.tokens:>12,} | {type(event).__name__:<18} | {fields}\n")

    # ---------------------------------------------------------------- per step
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._micro_losses = []
        self._skipped_now = False
        self.step = trainer.global_step
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        self._step_tokens = int(ids.numel()) if isinstance(ids, torch.Tensor) else 0

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._micro_losses.append(float(loss.detach()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Decide spikes before the update (all ranks agree: one all-reduce), publish :class:`SpikeEvent`."""
        local_loss = float(np.mean(self._micro_losses)) if self._micro_losses else float("nan")
        # the gradient norm costs a pass over all gradients: every step only if a detector needs it
        need_grad = self._grad_detectors or (self.step + 1) % self.source_loss_every == 0
        sharded, replicated = _grad_sq(pl_module) if need_grad else (float("nan"), float("nan"))
        local_flags = [1.0 if d.metric == "loss" and d.check(local_loss)[0] else 0.0 for d in self.detectors]
        nonfinite = 0.0 if math.isfinite(local_loss) and (not need_grad or math.isfinite(sharded + replicated)) else 1.0
        red = _all_reduce_sum(
            trainer, [0.0 if math.isnan(local_loss) else local_loss, sharded if need_grad else 0.0, nonfinite, float(self._step_tokens), *local_flags]
        )
        world = max(1, trainer.world_size)
        mean_loss = red[0] / world if red[2] == 0 else float("nan")
        grad_norm = math.sqrt(max(red[1] + replicated, 0.0)) if red[2] == 0 and need_grad else float("nan")
        values = {"loss": mean_loss, "grad_norm": grad_norm}
        fired, reference = [], float("nan")
        for det, flag in zip(self.detectors, red[4:]):
            hit, ref = det.check(values[det.metric])
            if hit or flag > 0:
                fired.append(det.name)
                reference = ref if math.isnan(reference) else reference
        non_finite = red[2] > 0 or not math.isfinite(mean_loss)
        spike = non_finite or bool(fired)
        self.consecutive = self.consecutive + 1 if spike else 0
        self._pending = {"loss": mean_loss, "grad_norm": grad_norm, "tokens": red[3], "spike": spike, "local": local_loss}
        if spike:
            self._bus.publish(
                SpikeEvent(
                    step=self.step, tokens=self.tokens, loss=local_loss, reference=reference,
                    detectors=fired or ["non_finite"], consecutive=self.consecutive, non_finite=non_finite,
                )
            )
        else:
            for det in self.detectors:
                det.accept(values[det.metric])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pending = self._pending
        self._pending = None
        if pending is None:  # no optimizer step ran (e.g. manual optimization): use the returned loss
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float("nan")
            red = _all_reduce_sum(trainer, [value, float(self._step_tokens)])
            pending = {"loss": red[0] / max(1, trainer.world_size), "grad_norm": float("nan"), "tokens": red[1], "spike": False}
        step = self.step
        if not self._skipped_now:
            self.tokens += int(pending["tokens"])
        source_loss = self._source_losses(trainer, outputs, batch, bool(pending["spike"]))
        culprit = None
        if pending["spike"] and source_loss:
            rise = {k: (v - self.source_loss_ema[k]) / max(abs(self.source_loss_ema[k]), 1e-12)
                    for k, v in source_loss.items() if k in self.source_loss_ema}
            if rise and max(rise.values()) >= self.blame_threshold:
                culprit = max(rise, key=rise.get)
        if not pending["spike"]:
            for k, v in source_loss.items():
                old = self.source_loss_ema.get(k)
                self.source_loss_ema[k] = v if old is None else self.source_ema * old + (1 - self.source_ema) * v
        h = self.history
        h["step"].append(step)
        h["tokens"].append(self.tokens)
        h["loss"].append(pending["loss"])
        h["grad_norm"].append(pending["grad_norm"])
        h["spike"].append(bool(pending["spike"]))
        h["skipped"].append(self._skipped_now)
        h["source_loss"].append(source_loss)
        self._bus.publish(
            StepEvent(step=step, tokens=self.tokens, loss=pending["loss"], grad_norm=pending["grad_norm"],
                      source_loss=source_loss, spike=bool(pending["spike"]), skipped=self._skipped_now, culprit=culprit)
        )
        if self.plateau is not None and not pending["spike"]:
            slope = self.plateau.update(pending["loss"])
            if slope is not None:
                self._bus.publish(PlateauEvent(step=step, tokens=self.tokens, slope=slope, window=self.plateau.window))
        if self.heldout_every and step > 0 and step % self.heldout_every == 0:
            self.evaluate_heldout(trainer, pl_module)
        if self.trajectory_every and step > 0 and step % self.trajectory_every == 0:
            self.record_trajectory(pl_module)
        if self.log_metrics and math.isfinite(pending["loss"]):
            metrics = {"hm/loss": pending["loss"], "hm/tokens": float(self.tokens), "hm/spike": float(pending["spike"])}
            if math.isfinite(pending["grad_norm"]):
                metrics["hm/grad_norm"] = pending["grad_norm"]
            metrics.update({f"hm/loss_{k}": v for k, v in source_loss.items()})
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False, rank_zero_only=True)

    def _source_losses(self, trainer, outputs, batch, spike: bool) -> dict[str, float]:
        """Accumulate per-source loss locally; all-reduce every ``source_loss_every`` steps and at spikes."""
        sample_loss = outputs.get("sample_loss") if isinstance(outputs, Mapping) else None
        sids = batch.get("source_ids") if isinstance(batch, Mapping) else None
        if sample_loss is not None and sids is not None:
            if not self.source_names:
                self.source_names = [f"source{i}" for i in range(16)]
            n = len(self.source_names)
            ids = sids.detach().cpu().long()
            if ids.numel() and int(ids.max()) >= n:
                raise ValueError(f"batch has source id {int(ids.max())} but only {n} source names are known")
            sl = sample_loss.detach().double().cpu()
            if self._src_acc is None or len(self._src_acc) != 2 * n:
                self._src_acc = torch.zeros(2 * n, dtype=torch.float64)
            self._src_acc[:n].index_add_(0, ids, sl)
            self._src_acc[n:].index_add_(0, ids, torch.ones_like(sl))
        self._src_steps += 1
        if self._src_acc is None or not (spike or self._src_steps >= self.source_loss_every):
            return {}
        n = len(self._src_acc) // 2
        red = _all_reduce_sum(trainer, self._src_acc.tolist())
        self._src_acc.zero_()
        self._src_steps = 0
        return {self.source_names[i]: red[i] / red[n + i] for i in range(n) if red[n + i] > 0}

    # ---------------------------------------------------------------- periodic probes
    @torch.no_grad()
    def evaluate_heldout(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Held-out loss per source (needs ``datamodule.heldout_batches()`` and ``pl_module.per_sample_loss``)."""
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "heldout_batches") or not hasattr(pl_module, "per_sample_loss"):
            return {}
        was_training = pl_module.training
        pl_module.eval()
        losses = {}
        for name, batch in dm.heldout_batches().items():
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            losses[name] = float(pl_module.per_sample_loss(batch).mean())
        pl_module.train(was_training)
        self.heldout_history.append((self.step, self.tokens, losses))
        self._bus.publish(HeldOutEvent(step=self.step, tokens=self.tokens, losses=losses))
        return losses

    def record_trajectory(self, pl_module: torch.nn.Module, tokens: int | None = None) -> dict[str, float]:
        """Record std-over-layers curves now; return the per-type distance to the previous record (per 1B tokens)."""
        tokens = self.tokens if tokens is None else int(tokens)
        curves = layer_std_curves(pl_module.named_parameters())
        dist: dict[str, float] = {}
        if self.trajectory and tokens > self.trajectory[-1][1]:
            dist = trajectory_distances(self.trajectory[-1][2], self.trajectory[-1][1], curves, tokens)
            self.trajectory_dist.append((tokens, dist))
        step = self.step
        if not self.trajectory or tokens > self.trajectory[-1][1]:
            self.trajectory.append((step, tokens, curves))
        return dist

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if not self.trajectory_every and (not self.trajectory or self.tokens > self.trajectory[-1][1]):
            self.record_trajectory(pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.dashboard and _is_rank_zero() and self.history["step"]:
            try:
                self.save_dashboard(self.out_dir / "heurimentor_dashboard.png")
            except Exception as err:  # a plotting problem must never fail a training run
                import warnings

                warnings.warn(f"could not write the HeuriMentor dashboard: {err}", stacklevel=2)

    # ---------------------------------------------------------------- dashboard
    def save_dashboard(self, path: str | Path) -> Path:
        """Write a 2x2 PNG: loss (spikes, skips, rollbacks), per-source loss, mixture weights, weight trajectory."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.history
        tok = np.asarray(h["tokens"], dtype=float)
        loss = np.asarray(h["loss"], dtype=float)
        fig, axes = plt.subplots(2, 2, figsize=(12, 8))
        ax = axes[0, 0]
        ax.plot(tok, loss, lw=1, label="train loss (rank mean)")
        spikes = np.asarray(h["spike"], bool)
        skipped = np.asarray(h["skipped"], bool)
        if spikes.any():
            ax.scatter(tok[spikes], np.nan_to_num(loss[spikes], nan=np.nanmax(loss[np.isfinite(loss)], initial=1.0)),
                       c="red", marker="x", label="spike", zorder=3)
        if skipped.any():
            ax.scatter(tok[skipped], np.nan_to_num(loss[skipped]), facecolors="none", edgecolors="orange", label="skipped step", zorder=3)
        steps = np.asarray(h["step"])
        for i, (step, _) in enumerate(self.rollbacks):
            j = np.searchsorted(steps, step)
            ax.axvline(tok[min(j, len(tok) - 1)], color="purple", ls="--", lw=1, label="rollback" if i == 0 else None)
        ax.set(title="training loss", xlabel="tokens", ylabel="loss")
        ax.legend(fontsize=8)
        ax = axes[0, 1]
        names = sorted({k for d in h["source_loss"] for k in d})
        for k in names:
            pts = [(t, d[k]) for t, d in zip(tok, h["source_loss"]) if k in d]
            ax.plot([t for t, _ in pts], [v for _, v in pts], lw=0.8, label=f"train {k}")
        for k in sorted({k for _, _, d in self.heldout_history for k in d}):
            ax.plot([t for _, t, _ in self.heldout_history], [d.get(k, np.nan) for _, _, d in self.heldout_history], "o--", ms=3, label=f"held-out {k}")
        ax.set(title="per-source loss", xlabel="tokens")
        if names or self.heldout_history:
            ax.legend(fontsize=7)
        ax = axes[1, 0]
        if self.weights_history:
            wnames = sorted({k for _, _, w in self.weights_history for k in w})
            wt = [t for _, t, _ in self.weights_history] + [tok[-1] if len(tok) else 0]
            for k in wnames:
                ws = [w.get(k, 0.0) for _, _, w in self.weights_history]
                ax.step(wt, ws + ws[-1:], where="post", label=k)
            ax.legend(fontsize=8)
        ax.set(title="mixture weights", xlabel="tokens", ylim=(0, 1))
        ax = axes[1, 1]
        if self.trajectory_dist:
            types = sorted({k for _, d in self.trajectory_dist for k in d})
            for k in types:
                ax.plot([t for t, _ in self.trajectory_dist], [d.get(k, np.nan) for _, d in self.trajectory_dist], marker=".", label=k)
            ax.set_yscale("log")
            ax.legend(fontsize=6)
        ax.set(title="weight trajectory: Fréchet(std over layers) per 1B tokens", xlabel="tokens")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    # ---------------------------------------------------------------- state
    def rebaseline(self) -> None:
        """Forget detector histories (after a rollback the loss level may legitimately differ)."""
        for d in self.detectors:
            d.reset()
        self.consecutive = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "detectors": {d.name: d.state_dict() for d in self.detectors},
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "tokens": self.tokens,
            "step": self.step,
            "src_acc": None if self._src_acc is None else self._src_acc.clone(),
            "src_steps": self._src_steps,
            "consecutive": self.consecutive,
            "source_loss_ema": dict(self.source_loss_ema),
            "source_names": list(self.source_names),
            "history": {k: list(v) for k, v in self.history.items()},
            "heldout_history": list(self.heldout_history),
            "weights_history": list(self.weights_history),
            "rollbacks": list(self.rollbacks),
            "trajectory": list(self.trajectory),
            "trajectory_dist": list(self.trajectory_dist),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        for d in self.detectors:
            if d.name in state_dict["detectors"]:
                d.load_state_dict(state_dict["detectors"][d.name])
        if self.plateau is not None and state_dict.get("plateau") is not None:
            self.plateau.load_state_dict(state_dict["plateau"])
        self.tokens, self.consecutive = int(state_dict["tokens"]), int(state_dict["consecutive"])
        self.step = int(state_dict.get("step", 0))
        acc = state_dict.get("src_acc")
        self._src_acc = None if acc is None else acc.clone()
        self._src_steps = int(state_dict.get("src_steps", 0))
        self.source_loss_ema = dict(state_dict["source_loss_ema"])
        self.source_names = list(state_dict["source_names"]) or self.source_names
        self.history = {k: list(v) for k, v in state_dict["history"].items()}
        self.heldout_history = list(state_dict["heldout_history"])
        self.weights_history = list(state_dict["weights_history"])
        self.rollbacks = list(state_dict["rollbacks"])
        self.trajectory = list(state_dict["trajectory"])
        self.trajectory_dist = list(state_dict["trajectory_dist"])


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)
