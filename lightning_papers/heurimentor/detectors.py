"""Spike and plateau detectors of the Training State Monitor (plain Python, no Lightning).

Every detector keeps a bounded window of *good* values (rejected spikes never enter it), so its state is
constant in size and identical on every rank when fed rank-reduced values.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lightning_papers.validation import check_each

__all__ = [
    "PlateauDetector",
    "RelativeSpikeDetector",
    "RollingMeanSpikeDetector",
    "SpikeDetector",
    "ZScoreSpikeDetector",
    "make_detector",
]


def _padded(values: Any, window: int) -> torch.Tensor:
    """The window as a fixed-length float64 tensor (count, values, NaN padding): the same size at any step,
    and loadable with ``torch.load(weights_only=True)``."""
    out = torch.full((window + 1,), float("nan"), dtype=torch.float64)
    out[0] = len(values)
    out[1 : 1 + len(values)] = torch.tensor(list(values), dtype=torch.float64)
    return out


def _unpadded(state: Any) -> list[float]:
    if isinstance(state, list | tuple):  # states saved by earlier versions
        return [float(v) for v in state]
    arr = torch.as_tensor(state, dtype=torch.float64)
    return arr[1 : 1 + int(arr[0])].tolist()


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
        return {**super().state_dict(), "values": _padded(self.values, self.window)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.values = deque(_unpadded(state["values"]), maxlen=self.window)


class RollingMeanSpikeDetector(_WindowedSpikeDetector):
    """Spike when ``value > ratio * mean(last window good values)`` (Lightning ``SpikeDetection``: window 10,
    ratio 2; LLM Foundry ``KillLossSpike``: 2x the mean of the last 100 steps)."""

    kind = "rolling"

    def __init__(self, window: int = 20, ratio: float = 1.5, metric: str = "loss", warmup: int | None = None) -> None:
        check_each((window >= 1, f"window must be >= 1, got {window}"), (ratio > 1.0, f"ratio must be > 1, got {ratio}"))
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
        check_each((window >= 2, f"window must be >= 2, got {window}"),
                   (threshold > 0, f"threshold must be > 0, got {threshold}"))
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
        return {"values": _padded(self.values, self.window), "ema": self.ema, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = deque(_unpadded(state["values"]), maxlen=self.window)
        self.ema, self.wait = state["ema"], int(state["wait"])
