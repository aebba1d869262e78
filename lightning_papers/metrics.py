"""Clustering metrics shared by the methods: Hungarian-matched accuracy, plus NMI / ARI.

torchmetrics has NMI and ARI (``torchmetrics.clustering``) but no clustering accuracy, the metric deep
clustering papers report as ACC: the best accuracy over one-to-one maps from clusters to classes, found
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).

Example::

    >>> import torch
    >>> clustering_accuracy(torch.tensor([1, 1, 0, 0, 2]), torch.tensor([0, 0, 1, 1, 1]))
    tensor(0.8000)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "ClusteringAccuracy",
    "adjusted_rand_index",
    "cluster_class_mapping",
    "clustering_accuracy",
    "clustering_scores",
    "contingency_matrix",
    "normalized_mutual_info",
]


def _as_labels(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integer labels, got dtype {t.dtype}")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be non-negative integers, got a minimum of {int(t.min())}")
    return t.long().cpu()


def contingency_matrix(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """Counts ``C[c, t]`` of samples in cluster ``c`` with class ``t`` (shape ``(max_c + 1, max_t + 1)``)."""
    p, t = _as_labels(preds, "preds"), _as_labels(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"preds and target differ in length: {p.numel()} vs {t.numel()}")
    n_p = int(p.max()) + 1 if p.numel() else 1
    n_t = int(t.max()) + 1 if t.numel() else 1
    return torch.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t)


def cluster_class_mapping(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> dict[int, int]:
    """The Hungarian one-to-one map cluster -> class maximising matched samples (unmatched clusters omitted)."""
    from scipy.optimize import linear_sum_assignment

    counts = contingency_matrix(preds, target).numpy()
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def clustering_accuracy(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """Unsupervised clustering accuracy: ``max_m (1/N) sum_i 1[target_i = m(preds_i)]`` over one-to-one maps m.

    The number of clusters may differ from the number of classes (rectangular assignment; surplus
    clusters count as wrong).

    Args:
        preds: ``(N,)`` cluster ids (non-negative integers).
        target: ``(N,)`` class labels.

    Returns:
        Scalar float tensor in [0, 1] (0 for empty input).

    Raises:
        ValueError / TypeError: on shapes that differ, non-1-D input, float or negative labels.

    Example::

        >>> clustering_accuracy(np.array([2, 2, 0, 0]), np.array([0, 0, 1, 1]))
        tensor(1.)
    """
    from scipy.optimize import linear_sum_assignment

    counts = contingency_matrix(preds, target)
    n = int(counts.sum())
    if n == 0:
        return torch.tensor(0.0)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    return torch.tensor(float(counts.numpy()[rows, cols].sum()) / n)


def normalized_mutual_info(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """NMI with the arithmetic-mean normaliser (scikit-learn's default), via torchmetrics."""
    from torchmetrics.functional.clustering import normalized_mutual_info_score

    p, t = _as_labels(preds, "preds"), _as_labels(target, "target")
    return normalized_mutual_info_score(p, t, average_method="arithmetic").float()


def adjusted_rand_index(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> Tensor:
    """Adjusted Rand index via torchmetrics."""
    from torchmetrics.functional.clustering import adjusted_rand_score

    p, t = _as_labels(preds, "preds"), _as_labels(target, "target")
    return adjusted_rand_score(p, t).float()


def clustering_scores(preds: Tensor | np.ndarray, target: Tensor | np.ndarray) -> dict[str, float]:
    """``{"nmi", "ari", "acc"}`` as Python floats.

    Example::

        >>> clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])
        {'nmi': 1.0, 'ari': 1.0, 'acc': 1.0}
    """
    return {
        "nmi": round(float(normalized_mutual_info(preds, target)), 6),
        "ari": round(float(adjusted_rand_index(preds, target)), 6),
        "acc": round(float(clustering_accuracy(preds, target)), 6),
    }


class ClusteringAccuracy(Metric):
    """Hungarian-matched clustering accuracy as a torchmetrics ``Metric`` (accumulates across batches).

    The matching is computed once over everything seen (a per-batch matching would overestimate), from
    a contingency matrix of fixed size ``(num_clusters, num_classes)`` that syncs across processes.

    Args:
        num_clusters: number of cluster ids predictions can take (ids in ``[0, num_clusters)``).
        num_classes: number of classes (defaults to ``num_clusters``).

    Example::

        >>> metric = ClusteringAccuracy(num_clusters=3)
        >>> metric.update(torch.tensor([1, 1, 0]), torch.tensor([0, 0, 1]))
        >>> metric.update(torch.tensor([0, 2]), torch.tensor([1, 1]))
        >>> metric.compute()
        tensor(0.8000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_clusters: int, num_classes: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        num_classes = num_clusters if num_classes is None else num_classes
        for name, value in (("num_clusters", num_clusters), ("num_classes", num_classes)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.num_clusters, self.num_classes = int(num_clusters), int(num_classes)
        self.add_state("counts", default=torch.zeros(self.num_clusters, self.num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target = torch.as_tensor(preds).reshape(-1).long(), torch.as_tensor(target).reshape(-1).long()
        if preds.shape != target.shape:
            raise ValueError(f"preds and target differ in length: {preds.numel()} vs {target.numel()}")
        if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= self.num_clusters):
            raise ValueError(f"cluster ids must lie in [0, {self.num_clusters - 1}], got "
                             f"[{int(preds.min())}, {int(preds.max())}]")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes - 1}], got "
                             f"[{int(target.min())}, {int(target.max())}]")
        idx = preds.to(self.counts.device) * self.num_classes + target.to(self.counts.device)
        self.counts += torch.bincount(idx, minlength=self.num_clusters * self.num_classes).reshape(
            self.num_clusters, self.num_classes
        )

    def compute(self) -> Tensor:
        from scipy.optimize import linear_sum_assignment

        counts = self.counts.detach().cpu().numpy()
        total = counts.sum()
        if total == 0:
            return torch.tensor(0.0)
        rows, cols = linear_sum_assignment(counts, maximize=True)
        return torch.tensor(float(counts[rows, cols].sum()) / float(total))
