"""Weight trajectory (Aquila2 report §3.2.3, App. 7.8): per parameter type, the curve of weight std over
layers at each checkpoint, and the discrete Fréchet distance between successive curves per 1B tokens.

``dist(p, i, i+1) = Frechet(std_p^i, std_p^{i+1}) / ((tokens_{i+1} - tokens_i) / 1e9)``
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "curves_from_stats",
    "discrete_frechet",
    "layer_std_curves",
    "layer_std_stats",
    "parameter_type",
    "trajectory_distances",
]

_LAYER = re.compile(r"\.(\d+)\.")


def parameter_type(name: str) -> tuple[str, int] | None:
    """Split ``model.layers.3.self_attn.q_proj.weight`` into (``"self_attn.q_proj.weight"``, 3).

    Returns ``None`` for parameters outside the numbered layers (embeddings, final norm, head).

    Example::

        >>> parameter_type("model.layers.3.mlp.up_proj.weight")
        ('mlp.up_proj.weight', 3)
    """
    m = _LAYER.search(name)
    if m is None:
        return None
    return name[m.end():], int(m.group(1))


def layer_std_stats(
    named_parameters: Iterable[tuple[str, torch.Tensor]], count_replicated: bool = True
) -> tuple[list[tuple[str, int]], torch.Tensor | None]:
    """Per layer parameter: this rank's (sum, sum of squares, count), as a (P, 3) float64 tensor on the
    parameters' device. DTensor shards contribute their local part; replicated tensors are counted only
    when ``count_replicated`` (pass True on exactly one rank), so summing the tables over ranks gives the
    statistics of the full tensors."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        DTensor = ()  # type: ignore[assignment]
    keys, stats = [], []
    for name, p in named_parameters:
        key = parameter_type(name)
        if key is None:
            continue
        t = p.detach()
        if isinstance(t, DTensor):
            local = t.to_local().double()
        else:
            local = t.double() if count_replicated else t.new_zeros(0, dtype=torch.float64)
        n = torch.full((), float(local.numel()), dtype=torch.float64, device=local.device)
        stats.append(torch.stack([local.sum(), (local * local).sum(), n]))
        keys.append(key)
    return keys, (torch.stack(stats) if stats else None)


def curves_from_stats(keys: Sequence[tuple[str, int]], table: torch.Tensor) -> dict[str, list[float]]:
    """Std-over-layers curves from rank-summed (sum, sum of squares, count) rows."""
    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for (ptype, layer), (s, ss, n) in zip(keys, table.reshape(-1, 3).tolist()):
        var = max(ss / n - (s / n) ** 2, 0.0) * n / max(n - 1, 1)
        curves[ptype][layer] = math.sqrt(var)
    return {k: [v[i] for i in sorted(v)] for k, v in sorted(curves.items())}


def layer_std_curves(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    count_replicated: bool = True,
) -> dict[str, list[float]]:
    """Std of each layer's weights, per parameter type, ordered by layer index.

    Sharded (DTensor) parameters: pass ``reduce``, a function summing a tensor over ranks (e.g.
    ``lambda t: trainer.strategy.reduce(t, reduce_op="sum")``), and ``count_replicated=True`` on one rank
    only; the monitor batches these sums into its per-step collective instead.

    Example::

        >>> m = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)])})
        >>> sorted(layer_std_curves(m.named_parameters()))
        ['bias', 'weight']
    """
    keys, table = layer_std_stats(named_parameters, count_replicated)
    if table is None:
        return {}
    if reduce is not None:
        table = reduce(table)
    return curves_from_stats(keys, table.cpu())


def discrete_frechet(p: Sequence[Sequence[float]] | np.ndarray, q: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Discrete Fréchet distance between two polylines (Eiter & Mannila, 1994), Euclidean point metric.

    Args:
        p: points of the first curve, shape (n, d) (1-D input is treated as (n, 1)).
        q: points of the second curve, shape (m, d).

    Example::

        >>> discrete_frechet([[0, 0], [1, 0]], [[0, 1], [1, 1]])
        1.0
    """
    a, b = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both curves need at least one point")
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    ca = np.empty_like(d)
    for i in range(len(a)):
        for j in range(len(b)):
            if i == 0 and j == 0:
                prev = 0.0
            elif i == 0:
                prev = ca[0, j - 1]
            elif j == 0:
                prev = ca[i - 1, 0]
            else:
                prev = min(ca[i - 1, j], ca[i - 1, j - 1], ca[i, j - 1])
            ca[i, j] = max(prev, d[i, j])
    return float(ca[-1, -1])


def trajectory_distances(
    curves_a: Mapping[str, Sequence[float]], tokens_a: int, curves_b: Mapping[str, Sequence[float]], tokens_b: int
) -> dict[str, float]:
    """Fréchet distance between successive std-over-layers curves per parameter type, per 1B tokens.

    The curves are polylines of points ``(layer index, std)``.

    Raises:
        ValueError: when ``tokens_b <= tokens_a``.

    Example::

        >>> trajectory_distances({"w": [1.0, 1.0]}, 0, {"w": [1.0, 1.5]}, 500_000_000)
        {'w': 1.0}
    """
    if tokens_b <= tokens_a:
        raise ValueError(f"need tokens_b > tokens_a, got {tokens_a} -> {tokens_b}")
    per_billion = (tokens_b - tokens_a) / 1e9
    out = {}
    for k in curves_a:
        if k not in curves_b:
            continue
        a, b = np.asarray(curves_a[k], float), np.asarray(curves_b[k], float)
        pa = np.stack([np.arange(len(a)), a], 1)
        pb = np.stack([np.arange(len(b)), b], 1)
        out[k] = discrete_frechet(pa, pb) / per_billion
    return out
