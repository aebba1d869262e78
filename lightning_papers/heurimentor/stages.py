"""Stages of a mixture schedule, the sampler's :class:`Draw`, and its counter-based randomness.

Randomness is a pure function of (seed, position) or (key, index): SplitMix64 for uniforms and a keyed
Feistel permutation for within-source orders, so nothing grows with the corpus and every rank computes
the same stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Draw", "Stage", "parse_stages", "permute_index"]

_MASK = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash (counter-based RNG)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(seed: int, position: int) -> float:
    """A uniform in [0, 1) that depends only on ``(seed, position)``."""
    return (_mix64(_mix64(seed & _MASK) ^ position) >> 11) * (2.0**-53)


def permute_index(i: int, n: int, key: int) -> int:
    """The image of ``i`` under a keyed pseudo-random bijection of ``[0, n)``, in O(1) memory.

    A 4-round Feistel network on the smallest even-bit domain >= n, with cycle walking back into
    ``[0, n)`` (Black & Rogaway, 2002); the round function is SplitMix64. Replaces ``randperm(n)``, whose
    memory grows with the corpus.

    Example::

        >>> sorted(permute_index(i, 10, key=7) for i in range(10)) == list(range(10))
        True
    """
    if not 0 <= i < n:
        raise ValueError(f"index {i} outside [0, {n})")
    if n <= 2:
        return (i + (key & 1)) % n
    bits = (n - 1).bit_length()
    bits += bits & 1
    half = bits // 2
    mask = (1 << half) - 1
    x = i
    while True:
        left, right = x >> half, x & mask
        for rnd in range(4):
            left, right = right, left ^ (_mix64(key ^ (rnd << 60) ^ right) & mask)
        x = (left << half) | right
        if x < n:
            return x


@dataclass
class Stage:
    """One stage of a mixture schedule.

    Args:
        weights: sampling probability per source name; non-negative, summing to 1 (sources not listed get 0).
        tokens: token budget of the stage (``None``: unbounded, only allowed for the last stage).
        name: a label for logs (e.g. ``"K6"``).

    Raises:
        ValueError: on an empty mapping, a negative or non-finite weight, weights not summing to 1,
            or a non-positive budget.

    Example::

        >>> Stage({"web": 0.8, "code": 0.2}, tokens=1000, name="K6").weights["web"]
        0.8
    """

    weights: dict[str, float]
    tokens: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(f"Stage weights must be a non-empty mapping of source name -> weight, got {self.weights!r}")
        clean = {}
        for name, w in self.weights.items():
            w = float(w)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"Stage {self.name!r}: weight of source {name!r} must be finite and >= 0, got {w}")
            clean[str(name)] = w
        total = sum(clean.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"Stage {self.name!r}: weights must sum to 1, got {total:.6g} ({clean})")
        self.weights = clean
        if self.tokens is not None:
            if int(self.tokens) != self.tokens or self.tokens <= 0:
                raise ValueError(f"Stage {self.name!r}: tokens must be a positive integer or None, got {self.tokens!r}")
            self.tokens = int(self.tokens)


def parse_stages(stages: Sequence[Stage | Mapping[str, Any]]) -> list[Stage]:
    """Turn YAML-style dicts (``{"weights": {...}, "tokens": N, "name": ...}``) into :class:`Stage` objects."""
    out = []
    for i, st in enumerate(stages):
        if isinstance(st, Stage):
            out.append(st)
        elif isinstance(st, Mapping):
            unknown = set(st) - {"weights", "tokens", "name"}
            if unknown:
                raise ValueError(f"stage {i}: unknown keys {sorted(unknown)}; expected weights, tokens, name")
            out.append(Stage(dict(st["weights"]), st.get("tokens"), str(st.get("name", f"stage{i}"))))
        else:
            raise TypeError(f"stage {i} must be a Stage or a mapping, got {type(st).__name__}")
    return out


class Draw(NamedTuple):
    """One sampled window: its source, its index inside the source, and its global stream position."""

    source: str
    index: int
    position: int
