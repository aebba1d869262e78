"""Plain-PyTorch core of concrete k-means (Gao, Yang, Gouk & Hospedales, ICASSP 2020, arXiv 1910.08031).

The canonical k-means objective ``min_mu sum_i min_k ||z_i - mu_k||^2`` is not differentiable in the
(discrete) assignment. Concrete k-means treats the assignment as a categorical variable whose logits are
the negative squared distances, ``l_ik = -||z_i - mu_k||^2``, draws it with the Gumbel-Softmax (Concrete)
reparameterisation and back-propagates through the relaxed sample, so the encoder that produces ``z``
and the centroids ``mu`` are trained end-to-end by SGD, with no alternating assignment step.

Nothing here needs Lightning: :func:`concrete_kmeans_loss` is the functional form, :class:`ConcreteKMeans`
holds the centroids as an ``nn.Parameter``; :func:`kmeans` (k-means++ seeding + Lloyd iterations in
torch) initialises them. DEC's Student-t soft assignment is here too, as a baseline in the same code base.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

Objective = Literal["quantization", "distortion"]
Schedule = Literal["constant", "exponential", "linear", "cosine"]

__all__ = [
    "ConcreteKMeans",
    "ConcreteKMeansOutput",
    "concrete_kmeans_loss",
    "dec_soft_assignment",
    "dec_target_distribution",
    "gumbel_softmax_assignment",
    "kmeans",
    "kmeans_plusplus",
    "squared_distances",
    "temperature_at",
]


class ConcreteKMeansOutput(NamedTuple):
    """What :class:`ConcreteKMeans` returns.

    Attributes:
        loss: scalar k-means objective under the sampled assignment (mean over the batch).
        assignments: ``(N, K)`` sampled assignment: one-hot in the forward pass when ``hard`` (its gradient
            is the relaxed sample's, straight-through), the relaxed Concrete sample otherwise.
        logits: ``(N, K)`` assignment logits ``-||z - mu_k||^2``.
    """

    loss: Tensor
    assignments: Tensor
    logits: Tensor


def _check_tau(tau: float) -> float:
    if isinstance(tau, Tensor):
        tau = float(tau)
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau (temperature) must be a finite number > 0, got {tau!r}")
    return float(tau)


def _check_pair(z: Tensor, centroids: Tensor) -> None:
    if not isinstance(z, Tensor) or not isinstance(centroids, Tensor):
        raise TypeError(f"z and centroids must be tensors, got {type(z).__name__} and {type(centroids).__name__}")
    if z.dim() != 2:
        raise ValueError(f"z must have shape (N, D), got {tuple(z.shape)}")
    if centroids.dim() != 2 or centroids.shape[1] != z.shape[1]:
        raise ValueError(f"centroids must have shape (K, {z.shape[1]}) to match z, got {tuple(centroids.shape)}")


def squared_distances(z: Tensor, centroids: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``||z_i - mu_k||^2``, shape ``(N, K)``.

    Uses the expansion ``|z|^2 - 2 z.mu + |mu|^2`` (clamped at 0) so memory stays ``O(NK)``; its gradient is
    finite even where a point sits exactly on a centroid (``torch.cdist`` is not).

    Example::

        >>> squared_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([[25.,  1.]])
    """
    _check_pair(z, centroids)
    d = z.pow(2).sum(1, keepdim=True) - 2.0 * z @ centroids.t() + centroids.pow(2).sum(1).unsqueeze(0)
    return d.clamp_min(0.0)


def gumbel_softmax_assignment(
    logits: Tensor, tau: float = 1.0, hard: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Draw a Concrete (Gumbel-Softmax) sample over the last dimension of ``logits``.

    ``y = softmax((logits + g) / tau)`` with ``g ~ Gumbel(0, 1)`` (Jang et al. 2017; Maddison et al. 2017).
    With ``hard=True`` the forward value is the one-hot ``argmax(logits + g)`` (an exact sample of
    ``Categorical(softmax(logits))`` by the Gumbel-max trick) and the gradient is the relaxed sample's
    (straight-through). Unlike ``torch.nn.functional.gumbel_softmax`` it accepts a ``generator``, so
    results are reproducible without touching the global RNG.

    Args:
        logits: ``(..., K)`` unnormalised log-probabilities.
        tau: temperature > 0 of the relaxation.
        hard: straight-through one-hot (True) or the relaxed sample (False).
        generator: optional RNG for the Gumbel noise.

    Returns:
        Tensor shaped like ``logits`` whose rows sum to 1.

    Example::

        >>> a = gumbel_softmax_assignment(torch.tensor([[0.0, -50.0]]), tau=0.5)
        >>> a.tolist()
        [[1.0, 0.0]]
    """
    tau = _check_tau(tau)
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    tiny = torch.finfo(logits.dtype).tiny
    gumbel = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))
    perturbed = logits + gumbel
    soft = torch.softmax(perturbed / tau, dim=-1)
    if not hard:
        return soft
    index = perturbed.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return one_hot - soft.detach() + soft


def _objective(z: Tensor, centroids: Tensor, dist: Tensor, assignments: Tensor, objective: Objective) -> Tensor:
    if objective == "quantization":
        # ||z - A mu||^2 (the k-means objective written with a one-hot A; paper Sec. 2).
        return (z - assignments @ centroids).pow(2).sum(1)
    if objective == "distortion":
        # sum_k a_k ||z - mu_k||^2: equal to the above for one-hot a, translation-invariant for relaxed a.
        return (assignments * dist).sum(1)
    raise ValueError(f"objective must be 'quantization' or 'distortion', got {objective!r}")


def _total_scatter(z: Tensor) -> Tensor:
    """Mean squared distance of the points to their mean (the total scatter per point), floored at 1e-8."""
    return (z - z.mean(0, keepdim=True)).pow(2).sum(1).mean().clamp_min(1e-8)


def concrete_kmeans_loss(
    z: Tensor,
    centroids: Tensor,
    tau: float = 1.0,
    hard: bool = True,
    objective: Objective = "quantization",
    logit_scale: float = 1.0,
    normalize: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Concrete k-means loss: the k-means objective under a Gumbel-Softmax-sampled assignment.

    ``a_i ~ Concrete(logits_i = -s * ||z_i - mu||^2, tau)``; loss ``= ||z_i - a_i^T mu||^2`` (``objective=
    "quantization"``) or ``sum_k a_ik ||z_i - mu_k||^2`` (``"distortion"``). Gradients reach both ``z``
    (hence the encoder) and ``centroids``.

    Args:
        z: ``(N, D)`` features.
        centroids: ``(K, D)`` cluster centres.
        tau: Concrete temperature > 0.
        hard: straight-through one-hot assignments (True) or relaxed ones (False).
        objective: ``"quantization"`` or ``"distortion"`` (identical for one-hot assignments).
        logit_scale: ``s`` > 0, multiplies the logits (the inverse scale of the Gumbel noise relative to the
            squared distances); 1 is the paper's choice.
        normalize: make the loss scale-invariant (not in the paper): divide the distances in the logits
            and the loss by the batch's total scatter ``T = mean_i ||z_i - mean(z)||^2`` (detached in the
            logits), so the loss is the within / total scatter ratio and the encoder cannot lower it by
            shrinking its features, and the Gumbel noise keeps the same size relative to the clusters.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses).
        generator: optional RNG for the Gumbel noise.

    Returns:
        The loss (scalar, or ``(N,)`` for ``reduction="none"``).

    Raises:
        ValueError: on mismatched shapes, ``tau <= 0`` or an unknown ``objective`` / ``reduction``.

    Example::

        >>> z = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
        >>> mu = torch.tensor([[0.0, 1.0], [10.0, 9.0]], requires_grad=True)
        >>> concrete_kmeans_loss(z, mu, tau=0.1)
        tensor(1., grad_fn=<MeanBackward0>)
    """
    _check_pair(z, centroids)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
    dist = squared_distances(z, centroids)
    scale = _total_scatter(z) if normalize else None
    logits = -logit_scale * (dist if scale is None else dist / scale.detach())
    assignments = gumbel_softmax_assignment(logits, tau, hard, generator)
    per_sample = _objective(z, centroids, dist, assignments, objective)
    if scale is not None:
        per_sample = per_sample / scale
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


def temperature_at(
    progress: float, tau_start: float = 1.0, tau_end: float = 0.1, schedule: Schedule = "exponential"
) -> float:
    """Annealed temperature at ``progress`` in [0, 1] (clipped) of the annealing period.

    Example::

        >>> round(temperature_at(0.5, 1.0, 0.01, "exponential"), 4)
        0.1
    """
    _check_tau(tau_start), _check_tau(tau_end)
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "constant":
        return float(tau_start)
    if schedule == "exponential":
        return float(tau_start * (tau_end / tau_start) ** p)
    if schedule == "linear":
        return float(tau_start + (tau_end - tau_start) * p)
    if schedule == "cosine":
        return float(tau_end + 0.5 * (tau_start - tau_end) * (1 + math.cos(math.pi * p)))
    raise ValueError(f"schedule must be 'constant', 'exponential', 'linear' or 'cosine', got {schedule!r}")


def dec_soft_assignment(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """DEC's Student-t soft assignment ``q_ik`` (Xie et al. 2016, Eq. 1), rows sum to 1."""
    q = (1.0 + squared_distances(z, centroids) / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(1, keepdim=True)


def dec_target_distribution(q: Tensor) -> Tensor:
    """DEC's sharpened target ``p_ik = (q_ik^2 / f_k) / sum_j (q_ij^2 / f_j)``, ``f_k = sum_i q_ik`` (Eq. 3)."""
    weight = q.pow(2) / q.sum(0, keepdim=True)
    return (weight / weight.sum(1, keepdim=True)).detach()


# ---------------------------------------------------------------------------------------------------------
# Classical k-means in torch (centroid initialisation; also the reference partition in the tests)
# ---------------------------------------------------------------------------------------------------------
def kmeans_plusplus(z: Tensor, n_clusters: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with prob. ∝ D(x)^2.

    Example::

        >>> z = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
        >>> sorted(kmeans_plusplus(z, 2, torch.Generator().manual_seed(0)).round().flatten().tolist())
        [0.0, 10.0]
    """
    n = z.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, n_samples={n}], got {n_clusters}")
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [z[first]]
    closest = (z - z[first]).pow(2).sum(1)
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:  # all remaining points coincide with a centre: pick any
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(closest / total, 1, generator=generator))
        centres.append(z[idx])
        closest = torch.minimum(closest, (z - z[idx]).pow(2).sum(1))
    return torch.stack(centres)


@torch.no_grad()
def kmeans(
    z: Tensor,
    n_clusters: int,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-6,
    seed: int = 0,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor, float]:
    """Lloyd's k-means with k-means++ seeding and ``n_init`` restarts; keeps the lowest inertia.

    Args:
        z: ``(N, D)`` points.
        n_clusters: number of clusters ``K``.
        n_init: restarts (ignored when ``init`` is given).
        max_iter: Lloyd iterations per restart.
        tol: stop when centroids move less than this (squared, summed).
        seed: seed of the k-means++ draws.
        init: optional ``(K, D)`` starting centroids.

    Returns:
        ``(centroids (K, D), labels (N,), inertia)`` with inertia ``= sum_i min_k ||z_i - mu_k||^2``.

    Example::

        >>> z = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
        >>> c, labels, inertia = kmeans(z, 2)
        >>> sorted(c.flatten().tolist()), inertia
        ([0.5, 10.5], 1.0)
    """
    if z.dim() != 2:
        raise ValueError(f"z must have shape (N, D), got {tuple(z.shape)}")
    z = z.detach().float()
    gen = torch.Generator().manual_seed(int(seed))
    best: tuple[Tensor, Tensor, float] | None = None
    starts = [init.detach().float().clone()] if init is not None else [None] * max(1, n_init)
    for start in starts:
        c = kmeans_plusplus(z, n_clusters, gen) if start is None else start
        for _ in range(max_iter):
            labels = squared_distances(z, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, labels, z)
            counts = torch.bincount(labels, minlength=n_clusters).to(z.dtype)
            new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)  # empty: keep
            shift = float((new - c).pow(2).sum())
            c = new
            if shift <= tol:
                break
        dist = squared_distances(z, c)
        labels = dist.argmin(1)
        inertia = float(dist.gather(1, labels[:, None]).sum())
        if best is None or inertia < best[2]:
            best = (c, labels, inertia)
    assert best is not None
    return best


class ConcreteKMeans(nn.Module):
    """k-means as a differentiable layer: centroids are an ``nn.Parameter``, assignments Concrete samples.

    Args:
        n_clusters: number of clusters ``K`` (>= 2: one cluster is no partition).
        dim: feature dimension ``D``.
        centroids: optional initial ``(K, D)`` centroids (tensor or array). Otherwise call
            :meth:`init_centroids` on features (k-means++ + Lloyd) before training.
        tau: default temperature.
        hard: default estimator: straight-through one-hot (True) or relaxed (False).
        objective: ``"quantization"`` (``||z - a^T mu||^2``) or ``"distortion"`` (``sum_k a_k d_k``).
        logit_scale: multiplies the logits ``-||z - mu||^2`` (inverse Gumbel-noise scale).
        normalize: scale-invariant loss and logits (see :func:`concrete_kmeans_loss`).

    Example::

        >>> layer = ConcreteKMeans(2, 2, centroids=[[0.0, 0.0], [5.0, 5.0]])
        >>> out = layer(torch.tensor([[0.1, 0.0], [5.0, 4.9]]), tau=0.5)
        >>> layer.predict(torch.tensor([[4.0, 4.0]])).tolist(), out.assignments.shape
        ([1], torch.Size([2, 2]))
    """

    def __init__(
        self,
        n_clusters: int,
        dim: int,
        centroids: Tensor | np.ndarray | list | None = None,
        tau: float = 1.0,
        hard: bool = True,
        objective: Objective = "quantization",
        logit_scale: float = 1.0,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
            raise ValueError(f"n_clusters must be an integer >= 2, got {n_clusters!r}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        if objective not in ("quantization", "distortion"):
            raise ValueError(f"objective must be 'quantization' or 'distortion', got {objective!r}")
        self.n_clusters, self.dim = int(n_clusters), int(dim)
        self.tau, self.hard, self.objective = _check_tau(tau), bool(hard), objective
        if not logit_scale > 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
        self.logit_scale, self.normalize = float(logit_scale), bool(normalize)
        self.centroids = nn.Parameter(torch.zeros(self.n_clusters, self.dim))
        # A buffer (not a Python bool) so "initialised" survives state_dict save / load.
        self.register_buffer("initialized", torch.tensor(False))
        if centroids is not None:
            self.set_centroids(centroids)

    @torch.no_grad()
    def set_centroids(self, centroids: Tensor | np.ndarray | list) -> ConcreteKMeans:
        """Copy ``(K, D)`` centroids in and mark the layer initialised."""
        c = torch.as_tensor(np.asarray(centroids) if not isinstance(centroids, Tensor) else centroids)
        if tuple(c.shape) != (self.n_clusters, self.dim):
            raise ValueError(f"centroids must have shape ({self.n_clusters}, {self.dim}), got {tuple(c.shape)}")
        if not torch.isfinite(c).all():
            raise ValueError("centroids contain NaN or inf")
        self.centroids.copy_(c.to(self.centroids))
        self.initialized.fill_(True)
        return self

    @torch.no_grad()
    def init_centroids(self, z: Tensor, n_init: int = 10, max_iter: int = 300, seed: int = 0) -> ConcreteKMeans:
        """Initialise the centroids by k-means (k-means++ seeding + Lloyd, best of ``n_init``) on ``z``."""
        self._check_z(z)
        if z.shape[0] < self.n_clusters:
            raise ValueError(f"need at least n_clusters={self.n_clusters} samples to initialise, got {z.shape[0]}")
        centroids, _, _ = kmeans(z.detach().cpu().float(), self.n_clusters, n_init, max_iter, seed=seed)
        return self.set_centroids(centroids)

    def _check_z(self, z: Tensor) -> None:
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a tensor, got {type(z).__name__}")
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (N, {self.dim}), got {tuple(z.shape)}")

    def distances(self, z: Tensor) -> Tensor:
        """``(N, K)`` squared distances to the centroids."""
        self._check_z(z)
        return squared_distances(z, self.centroids)

    def forward(
        self,
        z: Tensor,
        tau: float | None = None,
        hard: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> ConcreteKMeansOutput:
        """Sample assignments and return the k-means objective under them (see :func:`concrete_kmeans_loss`)."""
        self._check_z(z)
        tau = self.tau if tau is None else _check_tau(tau)
        hard = self.hard if hard is None else bool(hard)
        dist = squared_distances(z, self.centroids)
        scale = _total_scatter(z) if self.normalize else None
        logits = -self.logit_scale * (dist if scale is None else dist / scale.detach())
        assignments = gumbel_softmax_assignment(logits, tau, hard, generator)
        loss = _objective(z, self.centroids, dist, assignments, self.objective).mean()
        if scale is not None:
            loss = loss / scale
        return ConcreteKMeansOutput(loss, assignments, logits)

    @torch.no_grad()
    def predict(self, z: Tensor) -> Tensor:
        """Hard assignments ``argmin_k ||z - mu_k||^2`` as a ``LongTensor (N,)``."""
        return self.distances(z).argmin(1)

    @torch.no_grad()
    def kmeans_objective(self, z: Tensor) -> Tensor:
        """Mean over points of the squared distance to the nearest centroid (the canonical objective / N)."""
        return self.distances(z).min(1).values.mean()

    def extra_repr(self) -> str:
        return (
            f"n_clusters={self.n_clusters}, dim={self.dim}, tau={self.tau}, hard={self.hard}, "
            f"objective={self.objective!r}, logit_scale={self.logit_scale}, normalize={self.normalize}"
        )
