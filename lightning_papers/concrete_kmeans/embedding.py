"""The embedding the clusters live in: a fixed-scale learned code, optionally beside a skip path of the input.

:class:`ClusterEmbedding` wraps any encoder ``x -> h (B, latent_dim)`` and returns

``z = [sqrt(1 - w) * r(x), sqrt(w) * N(h(x))]``

* ``N`` fixes the code's scale: :class:`ScalarNorm` (default: centre and divide by one scalar so the total
  variance is ``latent_dim``; keeps the code's own geometry) or ``BatchNorm1d`` without affine (whitens every
  unit). Either way the encoder cannot lower a k-means loss by shrinking its features (the collapse of the
  literal concrete k-means loss) and the assignment logits ``-||z - mu||^2`` keep one scale on every dataset;
* ``r(x)`` (the *skip path*, ours, not in the paper) is a linear map of the input: centred, rotated onto its
  top principal axes and scaled to a total variance of ``latent_dim``. A rotation and one scalar do not
  change k-means geometry, so with ``w -> 0`` k-means on ``z`` *is* k-means on the (PCA-truncated) input
  and the learned code adds to what k-means on the raw features already finds. It is fixed by default
  (``skip_trainable=True`` lets the clustering loss train it, a learned metric);
* ``w = learned_weight`` is the share of the total variance the learned code gets (``skip_dim=0``: no skip
  path, ``z = N(h)``: the paper's setting plus the scale fix).

The decoder reconstructs from the learned code only (:meth:`ClusterEmbedding.learned`), so the
autoencoder cannot shortcut through the skip path.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ClusterEmbedding", "ScalarNorm", "pca_projection"]

EmbeddingNorm = Literal["scalar", "batch", "none"]


@torch.no_grad()
def pca_projection(x: Tensor, n_components: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean (d,), components (d, p), total_scatter)`` of ``x (n, d)``; ``p = min(n_components, d, n)``.

    ``total_scatter`` is the mean squared norm of the centred, projected rows.

    Example::

        >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
        >>> mean, comps, total = pca_projection(x, 1)
        >>> mean.tolist(), comps.abs().flatten().tolist(), round(float(total), 3)
        ([1.0, 0.5], [1.0, 0.0], 1.0)
    """
    x = x.detach().double().flatten(1)
    mean = x.mean(0)
    centred = x - mean
    p = max(0, min(int(n_components), x.shape[1], x.shape[0]))
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    comps = vh[:p].t()
    total = (s[:p].pow(2).sum() / x.shape[0]).clamp_min(1e-12)
    return mean.float(), comps.float(), total.float()


class ScalarNorm(nn.Module):
    """Centre a code and divide it by one scalar so its total variance is ``dim`` (batch statistics in training,
    running averages in evaluation, like ``BatchNorm1d``).

    Unlike batch normalisation it keeps the code's own variance spectrum (it does not whiten), yet the encoder
    cannot lower a k-means loss by shrinking the code.

    Example::

        >>> norm = ScalarNorm(2)
        >>> out = norm(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [2.0, 1.0]]) * 100)
        >>> round(float(out.pow(2).sum(1).mean()), 3)
        2.0
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim, self.momentum, self.eps = int(dim), float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(self.dim))
        self.register_buffer("running_scatter", torch.tensor(float(self.dim)))

    def forward(self, h: Tensor) -> Tensor:
        if self.training and h.shape[0] > 1:
            mean = h.mean(0)
            scatter = (h - mean).pow(2).sum(1).mean()
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_scatter.lerp_(scatter.detach(), self.momentum)
        else:
            mean, scatter = self.running_mean, self.running_scatter
        return (h - mean) * torch.sqrt(self.dim / (scatter + self.eps))


class ClusterEmbedding(nn.Module):
    """Learned code (fixed scale) beside an optional skip path of the input (see the module docstring).

    Args:
        encoder: ``x -> (B, latent_dim)``.
        latent_dim: output width of ``encoder``.
        in_features: flattened input size (needed for the skip path).
        skip_dim: principal axes kept by the skip path (0: no skip path).
        learned_weight: share ``w`` in ``(0, 1]`` of the embedding's variance given to the learned code.
        skip_trainable: let the clustering loss train the skip path's linear map (initialised to the PCA
            projection; kept at total variance ``latent_dim`` by a :class:`ScalarNorm`), a learned metric.
        normalize: ``"scalar"`` (:class:`ScalarNorm`: centre, one scale), ``"batch"`` (``BatchNorm1d`` without
            affine: every unit unit-variance) or ``"none"`` (the raw encoder output, as in the paper).

    Call :meth:`fit_skip` on (a sample of) the inputs before use when ``skip_dim > 0``.

    Example::

        >>> emb = ClusterEmbedding(nn.Linear(4, 2), latent_dim=2, in_features=4, skip_dim=4, learned_weight=0.5)
        >>> emb.fit_skip(torch.randn(50, 4)).eval()(torch.randn(3, 4)).shape
        torch.Size([3, 6])
    """

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        in_features: int | None = None,
        skip_dim: int = 0,
        learned_weight: float = 1.0,
        normalize: EmbeddingNorm = "scalar",
        skip_trainable: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < float(learned_weight) <= 1.0:
            raise ValueError(f"learned_weight must be in (0, 1], got {learned_weight!r}")
        if int(skip_dim) < 0:
            raise ValueError(f"skip_dim must be >= 0, got {skip_dim!r}")
        if skip_dim and not in_features:
            raise ValueError("the skip path needs in_features (the flattened input size)")
        self.encoder = encoder
        self.latent_dim, self.learned_weight = int(latent_dim), float(learned_weight)
        self.skip_dim = min(int(skip_dim), int(in_features or 0))
        if normalize not in ("scalar", "batch", "none"):
            raise ValueError(f"normalize must be 'scalar', 'batch' or 'none', got {normalize!r}")
        norms = {"scalar": ScalarNorm, "batch": lambda d: nn.BatchNorm1d(d, affine=False), "none": lambda d: None}
        self.norm = norms[normalize](self.latent_dim)
        d = int(in_features or 0)
        self.register_buffer("skip_mean", torch.zeros(d))
        self.register_buffer("skip_components", torch.zeros(d, self.skip_dim))
        self.register_buffer("skip_scale", torch.tensor(1.0))
        self.register_buffer("skip_fitted", torch.tensor(self.skip_dim == 0))
        self.skip_trainable = bool(skip_trainable) and self.skip_dim > 0
        if self.skip_trainable:
            self.skip_weight = nn.Parameter(torch.zeros(d, self.skip_dim))
            self.skip_norm = ScalarNorm(self.skip_dim)

    @property
    def dim(self) -> int:
        """Width of ``z``."""
        return self.skip_dim + self.latent_dim

    @torch.no_grad()
    def fit_skip(self, x: Tensor) -> ClusterEmbedding:
        """Set the skip path from inputs ``x`` (centre, top principal axes, scale to total variance latent_dim)."""
        if self.skip_dim == 0:
            return self
        flat = x.detach().flatten(1).float().cpu()
        if flat.shape[1] != self.skip_mean.numel():
            raise ValueError(f"inputs must have {self.skip_mean.numel()} features, got {flat.shape[1]}")
        mean, comps, total = pca_projection(flat, self.skip_dim)
        if float(total) <= 1e-10:
            raise ValueError("every input feature is constant: there is nothing to cluster")
        self.skip_mean.copy_(mean)
        self.skip_components.zero_()[:, : comps.shape[1]] = comps
        self.skip_scale.fill_(math.sqrt(self.latent_dim / float(total)))
        if self.skip_trainable:
            self.skip_weight.copy_(self.skip_components * self.skip_scale)
            self.skip_norm.running_scatter.fill_(float(self.latent_dim))
        self.skip_fitted.fill_(True)
        return self

    def learned(self, z: Tensor) -> Tensor:
        """The learned code inside ``z``, unweighted (what the decoder reconstructs from; independent of ``w``)."""
        return z[:, self.skip_dim:] / math.sqrt(self.learned_weight)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)
        if h.dim() != 2 or h.shape[1] != self.latent_dim:
            raise ValueError(f"encoder must return (B, {self.latent_dim}) features, got {tuple(h.shape)}")
        if self.norm is not None:
            h = self.norm(h)
        if self.skip_dim == 0:
            return h if self.learned_weight == 1.0 else math.sqrt(self.learned_weight) * h
        if not bool(self.skip_fitted):
            raise RuntimeError("call fit_skip(x) (DeepConcreteKMeans does it at fit start) before embedding")
        centred = x.flatten(1) - self.skip_mean
        if self.skip_trainable:
            r = self.skip_norm(centred @ self.skip_weight) * math.sqrt(self.latent_dim / self.skip_dim)
        else:
            r = centred @ self.skip_components * self.skip_scale
        return torch.cat([math.sqrt(1.0 - self.learned_weight) * r, math.sqrt(self.learned_weight) * h], 1)
