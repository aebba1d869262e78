"""Multi-process helpers: identical centroid initialisation on every rank, validation scores over all ranks.

* :func:`gather_rows` collects an equal-size sample of rows from every rank (through ``trainer.strategy``,
  so it works with gloo on CPUs and NCCL on GPUs) and returns the same tensor on every rank; k-means on it
  runs on every rank, and :func:`broadcast_from_rank_zero` makes the result bit-identical.
* :class:`ContingencyNMI` and :class:`ContingencyARI` are torchmetrics ``Metric`` s accumulating a fixed-size
  cluster x class contingency matrix (summed across processes on ``compute``), so validation NMI / ARI are
  computed over the whole validation set, not per rank, with memory independent of its size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lightning_papers.metrics import ClusteringAccuracy

__all__ = ["ContingencyARI", "ContingencyNMI", "broadcast_from_rank_zero", "gather_rows"]


def _world_size(strategy) -> int:
    return int(getattr(strategy, "world_size", 1) or 1) if strategy is not None else 1


def gather_rows(strategy, rows: Tensor, max_rows: int) -> Tensor:
    """An equal number of ``rows`` from every rank, concatenated in rank order (the same on every rank).

    Each rank contributes its first ``min(rows on the smallest rank, max_rows // world_size)`` rows, so
    the result is at most ``max_rows`` long. With one process (or ``strategy=None``) it is ``rows[:max_rows]``.

    Example::

        >>> gather_rows(None, torch.arange(10.0).reshape(5, 2), 3).shape
        torch.Size([3, 2])
    """
    world = _world_size(strategy)
    if world == 1:
        return rows[:max_rows]
    device = strategy.root_device
    counts = strategy.all_gather(torch.tensor(rows.shape[0], device=device))
    keep = min(int(counts.min()), max(1, max_rows // world))
    gathered = strategy.all_gather(rows[:keep].contiguous().to(device))  # (world, keep, ...)
    return gathered.reshape(-1, *rows.shape[1:]).cpu()


def broadcast_from_rank_zero(strategy, tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` on every rank (a no-op with one process)."""
    if _world_size(strategy) == 1:
        return tensor
    out = strategy.broadcast(tensor.to(strategy.root_device), src=0)
    return out.to(tensor.device)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi_from_contingency(counts: np.ndarray) -> float:
    """NMI (arithmetic-mean normaliser, scikit-learn's default) from a cluster x class count matrix."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    rows, cols = counts.sum(1), counts.sum(0)
    h_rows, h_cols = _entropy(rows), _entropy(cols)
    if h_rows == 0.0 and h_cols == 0.0:
        return 1.0
    nz = counts > 0
    mi = float((counts[nz] / n * np.log(counts[nz] * n / np.outer(rows, cols)[nz])).sum())
    denom = 0.5 * (h_rows + h_cols)
    return max(mi, 0.0) / denom if denom > 0 else 0.0


def ari_from_contingency(counts: np.ndarray) -> float:
    """Adjusted Rand index from a cluster x class count matrix (Hubert & Arabie 1985)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n < 2:
        return 1.0
    pairs = lambda v: (v * (v - 1) / 2.0).sum()  # noqa: E731
    index, a, b = pairs(counts), pairs(counts.sum(1)), pairs(counts.sum(0))
    expected = a * b / (n * (n - 1) / 2.0)
    top = 0.5 * (a + b)
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


class ContingencyNMI(ClusteringAccuracy):
    """NMI over everything seen, from a contingency matrix synced across processes.

    Example::

        >>> m = ContingencyNMI(num_clusters=2)
        >>> m.update(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]))
        >>> m.compute()
        tensor(1.)
    """

    def compute(self) -> Tensor:
        return torch.tensor(nmi_from_contingency(self.counts.detach().cpu().numpy()))


class ContingencyARI(ClusteringAccuracy):
    """Adjusted Rand index over everything seen, from a contingency matrix synced across processes."""

    def compute(self) -> Tensor:
        return torch.tensor(ari_from_contingency(self.counts.detach().cpu().numpy()))
