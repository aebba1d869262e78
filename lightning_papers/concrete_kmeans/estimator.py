"""A scikit-learn-style estimator around :class:`DeepConcreteKMeans` for people with an array.

``ConcreteKMeansClusterer(n_clusters=10).fit_predict(X)`` trains an autoencoder and the concrete k-means
centroids with a Lightning ``Trainer`` under the hood and returns cluster ids, following scikit-learn's
conventions (``fit`` returns ``self``, fitted attributes end in ``_``, ``random_state`` makes runs
reproducible, ``get_params`` / ``clone`` work).

By default (``centroid_init="input_kmeans"``) joint training starts at scikit-learn's ``KMeans`` partition of
the standardised input (the centroids are the mean embedding of each of its clusters) and refines it, so the
learned partition starts where ``sklearn.cluster.KMeans`` ends.

Every fit-time choice is unsupervised (labels are never seen): the final centroids are the lowest-inertia
of {the learned centroids refined by Lloyd, k-means++ restarts} on the final embedding, of the ``n_init``
runs the one with the lowest within / total scatter ratio of its own embedding is kept, and
(``floor="stability"``, the default) the learned partition is kept only if the ``n_init`` training runs agree
with each other more than ``n_init`` k-means runs on the standardised input do
(:func:`~lightning_papers.concrete_kmeans.selection.partition_stability`); otherwise k-means on the input
is the answer.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from lightning_papers.concrete_kmeans.selection import (
    compare_partitions,
    partition_stability,
    select_partition,
)

__all__ = ["ConcreteKMeansClusterer"]

Floor = Literal["stability", "scatter", "off"]


@contextlib.contextmanager
def _torch_flags_kept():
    """Restore torch's deterministic-algorithms mode, cuDNN flags and ``CUBLAS_WORKSPACE_CONFIG`` on exit
    (a ``Trainer(deterministic=True)`` sets them for the whole process)."""
    import os

    import torch

    mode = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def _input_kmeans(xt, n_clusters: int, seed: int):
    """``(centroids, labels, inertia)`` of scikit-learn's ``KMeans`` (10 restarts, k-means++) on the tensor ``xt``."""
    import torch
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters, n_init=10, random_state=seed).fit(xt.numpy())
    centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
    return centroids, torch.from_numpy(km.labels_.astype(np.int64)), float(km.inertia_)


class ConcreteKMeansClusterer(ClusterMixin, BaseEstimator):
    """Deep concrete k-means with a scikit-learn interface.

    Args:
        n_clusters: number of clusters (>= 2, <= n_samples).
        latent_dim: width of the learned code.
        hidden: hidden widths of the MLP encoder (the decoder mirrors them; the paper's: ``(500, 500, 2000)``).
        pretrain_epochs: autoencoder-only epochs before the centroids are initialised by k-means.
        epochs: joint (autoencoder + clustering loss) epochs after pretraining.
        batch_size: mini-batch size (capped at the number of samples).
        lr: Adam learning rate.
        centroid_lr: learning rate of the centroids (default ``lr``).
        variant: ``"concrete"`` (the method), ``"dec"`` (IDEC), ``"dcn"`` (DCN-style) or ``"two_step"``
            (autoencoder for ``pretrain_epochs + epochs``, then k-means): baselines on the same embedding.
        hard: straight-through one-hot (True) or relaxed (False) assignments.
        objective: ``"quantization"`` (the paper's ``||z - a^T mu||^2``) or ``"distortion"``.
        logit_scale: multiplies the assignment logits ``-||z - mu||^2``.
        normalize: scale-invariant loss (within / total scatter of the batch; our earlier variant).
        embedding_norm: ``"scalar"`` / ``"batch"`` / ``"none"``: fixed-scale learned code (stops feature shrinkage).
        skip_dim: principal axes of the input kept beside the learned code (0: learned code only).
        learned_weight: share of the embedding's variance given to the learned code.
        skip_trainable: let the clustering loss train the skip path's linear map (a learned metric).
        cluster_weight: weight of the clustering loss.
        recon_weight: weight of the reconstruction loss.
        tau_start: initial Concrete temperature.
        tau_end: final Concrete temperature (exponential annealing over the joint epochs).
        centroid_init: ``"input_kmeans"``: the centroids start as the mean embedding of each cluster of
            scikit-learn's ``KMeans`` (10 restarts, the run's seed) on the standardised input, so joint training
            starts at the input's k-means partition (default); ``"embedding"``: k-means++ on the pretrained
            embedding (the paper's initialisation).
        refine: final centroids: ``"learned"``: Lloyd from the learned centroids; ``"best"``: the lower k-means
            objective of that and 10 k-means++ restarts on the final embedding.
        standardize: ``"global"`` (centre, divide by one scale: k-means geometry unchanged), ``"feature"``
            (z-score each feature) or ``"none"``; statistics from the ``X`` passed to ``fit``.
        n_init: independent runs (seeds ``random_state + i``, each pretrained and trained from scratch); the
            lowest within / total scatter ratio of its own embedding wins. ``floor="stability"`` needs >= 2.
        floor: how the learned partition is compared with scikit-learn's ``KMeans`` (10 restarts) on the
            standardised input,
            labels never seen (``selected_`` says which won):
            ``"stability"`` (default): keep the learned partition only if the ``n_init`` training runs agree
            with each other (mean pairwise adjusted Rand index, :func:`partition_stability`) strictly more
            than ``n_init`` k-means runs on the input (seeds ``random_state + i``) do; ties keep k-means.
            ``"scatter"``: keep whichever partition :func:`compare_partitions` scores better over the input
            and the embedding (the previous default; it kept the learned partition where it was worse).
            ``"off"``: always the learned partition.
        random_state: seed (``None``: a fresh random seed per ``fit``).
        verbose: show Lightning's progress bar.

    Attributes:
        labels_: cluster id of every training sample.
        cluster_centers_: ``(n_clusters, embedding dim)`` centroids in the embedding.
        inertia_: sum of squared distances of the embedded training samples to their nearest centroid.
        runs_: per run ``{"seed", "ratio", "labels"}`` (``ratio``: the criterion between runs; ``labels``: the
            run's partition, whose agreement across runs is the learned side of ``floor="stability"``).
        selected_: ``"learned"`` (centroids in the embedding) or ``"input"`` (k-means on the standardised
            input won the ``floor`` comparison; ``cluster_centers_`` and ``transform`` are then in that space).
        selection_scores_: ``{"learned", "input"}``: the two stabilities (``floor="stability"``, higher wins) or
            :func:`compare_partitions` scores (``floor="scatter"``, lower wins); empty with ``floor="off"``.
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
        variant: Literal["concrete", "dec", "dcn", "two_step"] = "concrete",
        hard: bool = True,
        objective: Literal["distortion", "quantization"] = "distortion",
        logit_scale: float = 1.0,
        normalize: bool = False,
        embedding_norm: Literal["scalar", "batch", "none"] = "scalar",
        skip_dim: int = 64,
        learned_weight: float = 0.2,
        skip_trainable: bool = False,
        cluster_weight: float = 1.0,
        recon_weight: float = 1.0,
        tau_start: float = 1.0,
        tau_end: float = 0.1,
        centroid_init: Literal["input_kmeans", "embedding"] = "input_kmeans",
        refine: Literal["learned", "best"] = "best",
        standardize: Literal["global", "feature", "none"] = "global",
        n_init: int = 3,
        floor: Floor = "stability",
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
        self.variant = variant
        self.hard = hard
        self.objective = objective
        self.logit_scale = logit_scale
        self.normalize = normalize
        self.embedding_norm = embedding_norm
        self.skip_dim = skip_dim
        self.learned_weight = learned_weight
        self.skip_trainable = skip_trainable
        self.cluster_weight = cluster_weight
        self.recon_weight = recon_weight
        self.tau_start = tau_start
        self.tau_end = tau_end
        self.centroid_init = centroid_init
        self.refine = refine
        self.standardize = standardize
        self.n_init = n_init
        self.floor = floor
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
                "reshape your data (X.reshape(-1, 1) for a single feature, X.reshape(len(X), -1) for images)"
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X is empty: shape {X.shape}")
        if not np.isfinite(X).all():
            bad = int((~np.isfinite(X)).any(1).sum())
            raise ValueError(f"X contains NaN or infinity in {bad} rows; impute or drop those values first")
        if fitting:
            if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 2:
                raise ValueError(f"n_clusters must be an integer >= 2, got {self.n_clusters!r}")
            if X.shape[0] < self.n_clusters:
                raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}")
            if float(X.std(0).max()) <= 0.0:
                raise ValueError("every feature of X is constant: there is nothing to cluster")
            for name in ("pretrain_epochs", "epochs"):
                if int(getattr(self, name)) < 0:
                    raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            if int(self.batch_size) < 2:
                raise ValueError(f"batch_size must be >= 2 (batch normalisation), got {self.batch_size}")
            if int(self.n_init) < 1:
                raise ValueError(f"n_init must be >= 1, got {self.n_init}")
            if self.variant not in ("concrete", "dec", "dcn", "two_step"):
                raise ValueError(f"variant must be 'concrete', 'dec', 'dcn' or 'two_step', got {self.variant!r}")
            if self.floor not in ("stability", "scatter", "off"):
                raise ValueError(f"floor must be 'stability', 'scatter' or 'off', got {self.floor!r}")
            if self.floor == "stability" and int(self.n_init) < 2:
                raise ValueError(
                    f"floor='stability' compares the agreement of independent runs and needs n_init >= 2, got "
                    f"n_init={self.n_init}; use floor='scatter' or floor='off' for a single run"
                )
            if self.centroid_init not in ("input_kmeans", "embedding"):
                raise ValueError(f"centroid_init must be 'input_kmeans' or 'embedding', got {self.centroid_init!r}")
            if self.refine not in ("learned", "best"):
                raise ValueError(f"refine must be 'learned' or 'best', got {self.refine!r}")
            if self.standardize not in ("global", "feature", "none"):
                raise ValueError(f"standardize must be 'global', 'feature' or 'none', got {self.standardize!r}")
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with {self.n_features_in_}"
            )
        return X

    def _set_scaling(self, X: np.ndarray) -> None:
        std = X.std(0)
        if self.standardize == "feature":
            # constant features stay constant (scale 1): they carry no cluster information either way
            self.mean_, self.scale_ = X.mean(0), np.where(std > 1e-8, std, 1.0).astype(np.float32)
        elif self.standardize == "global":
            self.mean_ = X.mean(0)
            self.scale_ = np.full(X.shape[1], np.sqrt(np.mean(std.astype(np.float64) ** 2)), dtype=np.float32)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1], np.float32), np.ones(X.shape[1], np.float32)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_).astype(np.float32)

    def _check_fitted(self) -> None:
        from sklearn.exceptions import NotFittedError

        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")

    def _build(self, n_features: int, seed: int, joint: bool):
        import functools

        import torch

        from lightning_papers.concrete_kmeans.module import DeepConcreteKMeans

        two_step = self.variant == "two_step"
        pretrain = int(self.pretrain_epochs) if joint else 0
        return DeepConcreteKMeans(
            n_clusters=int(self.n_clusters), in_features=n_features, latent_dim=int(self.latent_dim),
            hidden=tuple(self.hidden), variant="concrete" if two_step else self.variant, hard=self.hard,
            objective=self.objective, logit_scale=self.logit_scale, normalize=self.normalize,
            embedding_norm=self.embedding_norm, skip_dim=int(self.skip_dim), learned_weight=self.learned_weight,
            skip_trainable=bool(self.skip_trainable),
            pretrain_epochs=(pretrain + int(self.epochs)) if two_step else pretrain,
            recon_weight=self.recon_weight, cluster_weight=self.cluster_weight, tau_start=self.tau_start,
            tau_end=self.tau_end, centroid_init=self.centroid_init, optimizer=functools.partial(torch.optim.Adam, lr=self.lr),
            centroid_lr=self.centroid_lr, seed=seed,
        )

    def _train(self, xt, seed: int, pretrained: dict | None):
        import lightning.pytorch as L
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        torch.manual_seed(seed)
        model = self._build(xt.shape[1], seed, joint=pretrained is None)
        if pretrained is not None:
            skip = ("clusterer.", "dcn_counts", "val_", "embedding.skip_")  # the skip path is refit below

            state = {k: v for k, v in pretrained.items() if not k.startswith(skip)}
            model.load_state_dict(state, strict=False)
        epochs = int(self.epochs) + (int(self.pretrain_epochs) if pretrained is None else 0)
        batch = min(int(self.batch_size), len(xt))
        # drop_last keeps batch normalisation away from a final batch of one sample; shuffling reaches every row
        loader = DataLoader(TensorDataset(xt), batch_size=batch, shuffle=True, drop_last=len(xt) > batch,
                            generator=torch.Generator().manual_seed(seed))
        model.init_data = xt  # skip path and centroids from the whole input, in its order
        model.fit_skip(xt)
        if epochs > 0:
            log = logging.getLogger("lightning.pytorch")
            level = log.level
            if not self.verbose:  # one fit = one Trainer: keep its banners out of the caller's output
                log.setLevel(logging.WARNING)
            try:
                trainer = L.Trainer(
                    max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=bool(self.verbose), enable_model_summary=False, deterministic=True,
                    num_sanity_val_steps=0, limit_val_batches=0,
                )
                with warnings.catch_warnings():
                    warnings.filterwarnings(
                        "ignore", message=".*(does not have many workers|GPU available|LeafSpec|val_dataloader).*"
                    )
                    trainer.fit(model, loader)
            finally:
                log.setLevel(level)
        model.init_data = None  # the fitted model keeps no reference to the training data
        model.eval()
        return model

    # -- API ---------------------------------------------------------------------------------------
    def fit(self, X, y=None, pretrained: dict | None = None) -> ConcreteKMeansClusterer:
        """Train on ``X`` (``y`` is ignored) and return ``self``.

        ``pretrained``: a ``model_.state_dict()`` of an estimator with the same architecture and data; its
        autoencoder is the starting point of every one of the ``n_init`` runs and pretraining is skipped (a
        benchmark shares one pretraining across variants this way; the runs then differ only in the joint phase).
        """
        import torch

        X = self._check_X(X, fitting=True)
        self.n_features_in_ = X.shape[1]
        self._set_scaling(X)
        base = (int(np.random.SeedSequence().generate_state(1)[0] % 2**31) if self.random_state is None
                else int(self.random_state))
        xt = torch.from_numpy(self._scaled(X))
        self.runs_, best, run_labels = [], None, []
        # leave the caller's global RNG and the flags Trainer(deterministic=True) sets process-wide untouched
        with torch.random.fork_rng(devices=[]), _torch_flags_kept():
            for run in range(int(self.n_init)):
                seed = base + run
                model = self._train(xt, seed, pretrained)
                z = self._embed(model, xt)
                learned = model.clusterer.centroids.detach().cpu() if bool(model.clusterer.initialized) else None
                restarts = 0 if self.refine == "learned" and learned is not None else 10
                centroids, labels, inertia, ratio = select_partition(z, int(self.n_clusters), learned,
                                                                     n_init=restarts, seed=seed)
                self.runs_.append({"seed": seed, "ratio": ratio, "labels": labels.numpy().astype(np.int64)})
                run_labels.append(labels)
                if best is None or ratio < best[-1]:
                    best = (model, centroids, labels, inertia, ratio)
        model, centroids, labels, inertia, _ = best
        model.clusterer.set_centroids(centroids)
        self.model_ = model
        self.selected_, self.selection_scores_ = "learned", {}
        if self.floor != "off":
            # the floor: scikit-learn's KMeans (the reference the floor is defined against) on exactly the input
            # the model saw
            k = int(self.n_clusters)
            if self.floor == "stability":
                inputs = [_input_kmeans(xt, k, seed=base + run) for run in range(int(self.n_init))]
                scores = [partition_stability(run_labels), partition_stability([r[1] for r in inputs])]
                # strictly more reproducible than k-means, or k-means (ties: the floor)
                input_wins = not scores[0] > scores[1]
            else:
                inputs = [_input_kmeans(xt, k, seed=base)]
                winner, scores = compare_partitions([xt, self._embed(model, xt)], [labels, inputs[0][1]])
                input_wins = winner == 1
            self.selection_scores_ = {"learned": float(scores[0]), "input": float(scores[1])}
            if input_wins:
                self.selected_ = "input"
                centroids, labels, inertia = inputs[0]
        self.labels_ = labels.numpy().astype(np.int64)
        self.inertia_ = float(inertia)
        self.cluster_centers_ = centroids.numpy().copy()
        return self

    @staticmethod
    def _embed(model, xt):
        import torch

        with torch.no_grad():
            return torch.cat([model.encode(chunk) for chunk in xt.split(4096)])

    def embed(self, X) -> np.ndarray:
        """The embedding ``(n_samples, embedding dim)`` of ``X`` (skip path, then the learned code)."""
        import torch

        self._check_fitted()
        X = self._check_X(X, fitting=False)
        return self._embed(self.model_, torch.from_numpy(self._scaled(X))).numpy()

    def transform(self, X) -> np.ndarray:
        """Euclidean distances ``(n_samples, n_clusters)`` to the centroids (like ``KMeans``), in the embedding,
        or in the standardised input when ``selected_ == "input"``."""
        import torch

        if getattr(self, "selected_", "learned") == "input":
            self._check_fitted()
            x = self._scaled(self._check_X(X, fitting=False)).astype(np.float64)
            c = self.cluster_centers_.astype(np.float64)
            d2 = (x**2).sum(1, keepdims=True) - 2 * x @ c.T + (c**2).sum(1)
            return np.sqrt(np.clip(d2, 0.0, None))
        z = torch.from_numpy(self.embed(X))
        with torch.no_grad():
            return self.model_.clusterer.distances(z).sqrt().numpy()

    def predict(self, X) -> np.ndarray:
        """Cluster id of each sample of ``X`` (nearest centroid in the embedding)."""
        return self.transform(X).argmin(1).astype(np.int64)

    def score(self, X, y=None) -> float:
        """Opposite of the k-means objective of ``X`` in the space of ``cluster_centers_`` (higher is better, like ``KMeans``)."""
        return -float((self.transform(X).min(1) ** 2).sum())
