"""Unsupervised choices between partitions (labels are never seen).

* :func:`select_partition`: the lowest-k-means-objective partition of one space among Lloyd from learned
  centroids and k-means++ restarts;
* :func:`scatter_ratio` / :func:`compare_partitions`: within / total scatter, and a comparison of candidate
  partitions over several spaces (the estimator's ``floor="scatter"``);
* :func:`partition_stability`: how well independent runs of one procedure agree (mean pairwise adjusted Rand
  index), the estimator's default ``floor="stability"`` (Ben-Hur, Elisseeff & Guyon 2002; Lange, Roth,
  Braun & Buhmann 2004: a procedure that finds real structure reproduces it from other random starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

__all__ = ["compare_partitions", "partition_stability", "scatter_ratio", "select_partition"]


def select_partition(z, n_clusters: int, learned_centroids=None, n_init: int = 10, seed: int = 0):
    """Lowest-inertia k-means partition of ``z`` among Lloyd from ``learned_centroids`` and ``n_init`` k-means++
    restarts (``n_init=0``: Lloyd from ``learned_centroids`` only; ties keep the learned start).

    Returns ``(centroids, labels, inertia, ratio)`` with ``ratio = inertia / total scatter`` (scale-free, in
    [0, 1]; the criterion that compares runs). Purely unsupervised.

    Example::

        >>> import torch
        >>> z = torch.tensor([[0.0], [0.2], [5.0], [5.2]])
        >>> c, labels, inertia, ratio = select_partition(z, 2, torch.tensor([[5.0], [0.0]]))
        >>> labels.tolist(), round(inertia, 2), ratio < 0.01
        ([1, 1, 0, 0], 0.04, True)
    """
    from lightning_papers.concrete_kmeans.core import kmeans

    if n_init < 1 and learned_centroids is None:
        raise ValueError(f"n_init={n_init} restarts and no learned_centroids: nothing to start k-means from")
    best = kmeans(z, n_clusters, init=learned_centroids) if learned_centroids is not None else None
    if n_init >= 1:
        restarted = kmeans(z, n_clusters, n_init=n_init, seed=seed)
        if best is None or restarted[2] < best[2]:
            best = restarted
    total = float((z - z.mean(0)).pow(2).sum())
    return best[0], best[1], best[2], best[2] / max(total, 1e-12)


def scatter_ratio(z, labels) -> float:
    """Within-cluster over total scatter of the points ``z`` under ``labels`` (scale-free, in [0, 1]).

    Example::

        >>> import torch
        >>> round(scatter_ratio(torch.tensor([[0.0], [0.2], [5.0], [5.2]]), torch.tensor([0, 0, 1, 1])), 4)
        0.0016
    """
    import torch

    z = torch.as_tensor(z, dtype=torch.float64)
    labels = torch.as_tensor(labels, dtype=torch.long)
    k = int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(z.dtype).unsqueeze(1)
    means = torch.zeros(k, z.shape[1], dtype=z.dtype).index_add_(0, labels, z) / counts
    within = float((z - means[labels]).pow(2).sum())
    total = float((z - z.mean(0)).pow(2).sum())
    return within / max(total, 1e-12)


def compare_partitions(spaces, candidates) -> tuple[int, list[float]]:
    """Pick among candidate partitions by their scatter ratios in several spaces, each relative to the best.

    ``score(P) = sum over spaces s of ratio_s(P) / min_Q ratio_s(Q)`` (lower is better; ``len(spaces)`` is
    the best possible): a partition must be compact in every space, and no space's scale or dimension
    dominates because each term is relative to the best candidate there. With the input and the embedding as
    the spaces, k-means on the input is favoured in the first and the learned partition in the second, so
    neither side is preferred by construction. Ties keep the earlier candidate. Unsupervised.

    Returns ``(index of the chosen candidate, scores)``.

    Example::

        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
        >>> good, bad = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
        >>> compare_partitions([x, x], [bad, good])[0]
        1
    """
    ratios = [[scatter_ratio(z, labels) for labels in candidates] for z in spaces]
    scores = [sum(r[i] / max(min(r), 1e-12) for r in ratios) for i in range(len(candidates))]
    best = min(range(len(candidates)), key=lambda i: (scores[i], i))
    return best, scores


def partition_stability(labelings: Sequence) -> float:
    """Mean adjusted Rand index over all pairs of ``labelings`` (runs of one procedure from different seeds).

    1 when every run finds the same partition (up to renaming), about 0 when they agree only by chance.
    The ARI is scikit-learn's. Needs at least two labelings.

    Example::

        >>> partition_stability([[0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]])
        1.0
        >>> round(partition_stability([[0, 0, 1, 1], [0, 1, 0, 1]]), 2)
        -0.5
    """
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    runs = [np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).ravel() for labels in labelings]
    if len(runs) < 2:
        raise ValueError(f"partition_stability needs at least 2 labelings, got {len(runs)}")
    if len({len(r) for r in runs}) != 1:
        raise ValueError(f"labelings must have equal lengths, got {sorted({len(r) for r in runs})}")
    return float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(runs, 2)]))
