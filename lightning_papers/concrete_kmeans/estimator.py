"""A scikit-learn-style estimator around :class:`DeepConcreteKMeans` for people with an array.

``ConcreteKMeansClusterer(n_clusters=10).fit_predict(X)`` trains an MLP autoencoder and the concrete
k-means centroids with a Lightning ``Trainer`` under the hood and returns cluster ids, following
scikit-learn's conventions (``fit`` returns ``self``, fitted attributes end in ``_``, ``random_state``
makes runs reproducible, ``get_params`` / ``clone`` work).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

__all__ = ["ConcreteKMeansClusterer"]


class ConcreteKMeansClusterer(ClusterMixin, BaseEstimator):
    """Deep concrete k-means with a scikit-learn interface.

    Args:
        n_clusters: number of clusters.
        latent_dim: size of the learned embedding the clusters live in.
        hidden: hidden widths of the MLP encoder (the decoder mirrors them).
        pretrain_epochs: autoencoder-only epochs before the centroids are initialised by k-means.
        epochs: joint (autoencoder + concrete k-means) epochs after pretraining.
        batch_size: mini-batch size (capped at the number of samples).
        lr: Adam learning rate.
        centroid_lr: learning rate of the centroids (default ``lr``).
        hard: straight-through one-hot (True) or relaxed (False) assignments.
        objective: ``"distortion"`` or ``"quantization"`` (see ``concrete_kmeans_loss``).
        normalize: scale-invariant loss (within / total scatter), which stops feature shrinkage.
        logit_scale: sharpness of the assignment distribution relative to the feature scale.
        cluster_weight: weight of the clustering loss.
        recon_weight: weight of the reconstruction loss.
        tau_start: initial Concrete temperature.
        tau_end: final Concrete temperature (exponential annealing over the joint epochs).
        standardize: z-score every input feature with statistics of ``X`` passed to ``fit``.
        random_state: seed (``None``: a fresh random seed per ``fit``).
        verbose: show Lightning's progress bar.

    Attributes:
        labels_: cluster id of every training sample.
        cluster_centers_: ``(n_clusters, latent_dim)`` centroids, in the learned embedding space.
        inertia_: sum of squared distances of the embedded training samples to their nearest centroid.
        n_features_in_: number of input features seen by ``fit``.
        model_: the trained :class:`~lightning_papers.concrete_kmeans.DeepConcreteKMeans`.

    Example::

        >>> from sklearn.datasets import make_blobs
        >>> X, _ = make_blobs(200, n_features=5, centers=3, random_state=0)
        >>> est = ConcreteKMeansClusterer(3, latent_dim=2, hidden=(16,), pretrain_epochs=2, epochs=2,
        ...                               random_state=0)
        >>> est.fit(X).labels_.shape
        (200,)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        latent_dim: int = 10,
        hidden: Sequence[int] = (256, 128),
        pretrain_epochs: int = 50,
        epochs: int = 50,
        batch_size: int = 256,
        lr: float = 1e-3,
        centroid_lr: float | None = None,
        hard: bool = True,
        objective: Literal["distortion", "quantization"] = "distortion",
        normalize: bool = True,
        logit_scale: float = 10.0,
        cluster_weight: float = 0.1,
        recon_weight: float = 1.0,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        standardize: bool = True,
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.centroid_lr = centroid_lr
        self.hard = hard
        self.objective = objective
        self.normalize = normalize
        self.logit_scale = logit_scale
        self.cluster_weight = cluster_weight
        self.recon_weight = recon_weight
        self.tau_start = tau_start
        self.tau_end = tau_end
        self.standardize = standardize
        self.random_state = random_state
        self.verbose = verbose

    # -- validation --------------------------------------------------------------------------------
    def _check_X(self, X, fitting: bool) -> np.ndarray:
        if hasattr(X, "detach"):  # torch tensor
            X = X.detach().cpu().numpy()
        try:
            X = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"X must be a numeric array of shape (n_samples, n_features): {err}") from None
        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2D array of shape (n_samples, n_features), got {X.ndim}D shape {X.shape}; "
                "reshape your data (e.g. X.reshape(len(X), -1))"
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty: shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity; impute or drop those values first")
        if fitting:
            if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 1:
                raise ValueError(f"n_clusters must be an integer >= 1, got {self.n_clusters!r}")
            if X.shape[0] < self.n_clusters:
                raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}")
            for name in ("pretrain_epochs", "epochs"):
                if int(getattr(self, name)) < 0:
                    raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            if int(self.batch_size) < 1:
                raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with {self.n_features_in_}"
            )
        return X

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32) if self.standardize else X

    def _check_fitted(self) -> None:
        from sklearn.exceptions import NotFittedError

        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")

    # -- API ---------------------------------------------------------------------------------------
    def fit(self, X, y=None) -> ConcreteKMeansClusterer:
        """Train the autoencoder and the centroids on ``X`` (``y`` is ignored). Returns ``self``."""
        import lightning.pytorch as L
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from lightning_papers.concrete_kmeans.module import DeepConcreteKMeans

        X = self._check_X(X, fitting=True)
        self.n_features_in_ = X.shape[1]
        if self.standardize:
            self.mean_ = X.mean(0)
            self.scale_ = np.where(X.std(0) > 1e-8, X.std(0), 1.0).astype(np.float32)
        seed = (int(np.random.SeedSequence().generate_state(1)[0] % 2**31) if self.random_state is None
                else int(self.random_state))
        xt = torch.from_numpy(self._scaled(X))
        total = int(self.pretrain_epochs) + int(self.epochs)
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            model = DeepConcreteKMeans(
                n_clusters=int(self.n_clusters), in_features=X.shape[1], latent_dim=int(self.latent_dim),
                hidden=tuple(self.hidden), variant="concrete", hard=self.hard, objective=self.objective,
                normalize=self.normalize, logit_scale=self.logit_scale, pretrain_epochs=int(self.pretrain_epochs),
                recon_weight=self.recon_weight, cluster_weight=self.cluster_weight, tau_start=self.tau_start,
                tau_end=self.tau_end, lr=self.lr, centroid_lr=self.centroid_lr, seed=seed,
            )
            loader = DataLoader(TensorDataset(xt), batch_size=min(int(self.batch_size), len(xt)), shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            if total > 0:
                trainer = L.Trainer(
                    max_epochs=total, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=bool(self.verbose), enable_model_summary=False, deterministic=True,
                    num_sanity_val_steps=0, limit_val_batches=0,
                )
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*(does not have many workers|GPU available).*")
                    trainer.fit(model, loader)
            if not bool(model.clusterer.initialized):  # epochs == 0 and pretrain_epochs == 0
                model.init_centroids(xt)
        model.eval()
        self.model_ = model
        z = self._embed_scaled(xt)
        with torch.no_grad():
            dist = model.clusterer.distances(z)
        self.labels_ = dist.argmin(1).numpy().astype(np.int64)
        self.inertia_ = float(dist.min(1).values.sum())
        self.cluster_centers_ = model.clusterer.centroids.detach().cpu().numpy().copy()
        return self

    def _embed_scaled(self, xt):
        import torch

        with torch.no_grad():
            return torch.cat([self.model_.encode(chunk) for chunk in xt.split(4096)])

    def embed(self, X) -> np.ndarray:
        """The learned embedding ``(n_samples, latent_dim)`` of ``X``."""
        import torch

        self._check_fitted()
        X = self._check_X(X, fitting=False)
        return self._embed_scaled(torch.from_numpy(self._scaled(X))).numpy()

    def transform(self, X) -> np.ndarray:
        """Euclidean distances ``(n_samples, n_clusters)`` to the centroids in the embedding (like ``KMeans``)."""
        import torch

        z = torch.from_numpy(self.embed(X))
        with torch.no_grad():
            return self.model_.clusterer.distances(z).sqrt().numpy()

    def predict(self, X) -> np.ndarray:
        """Cluster id of each sample of ``X`` (nearest centroid in the embedding)."""
        return self.transform(X).argmin(1).astype(np.int64)

    def score(self, X, y=None) -> float:
        """Opposite of the k-means objective of ``X`` in the embedding (higher is better, like ``KMeans``)."""
        return -float((self.transform(X).min(1) ** 2).sum())
