"""Small, download-free clustering tables for development and held-out evaluation.

Defaults of :class:`~lightning_papers.concrete_kmeans.ConcreteKMeansClusterer` were chosen on
:data:`DEVELOPMENT` only; :data:`HELD_OUT` played no part in any choice and is what the benchmark's goals are
scored on. Every table is ``(X float32 (n, d), y int64 (n,))``; the scikit-learn bundled tables and MNIST-1D
are standardised per feature (what a user would feed a clusterer), digits keeps its pixel scale (``/16``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["DEVELOPMENT", "HELD_OUT", "TABLES", "TableName", "load_table", "noisy_blobs"]

TableName = Literal["digits", "wine", "blobs_dev", "mnist1d", "iris", "breast_cancer", "blobs_heldout"]

DEVELOPMENT: tuple[str, ...] = ("digits", "wine", "blobs_dev")
HELD_OUT: tuple[str, ...] = ("mnist1d", "iris", "breast_cancer", "blobs_heldout")
TABLES: tuple[str, ...] = DEVELOPMENT + HELD_OUT


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std(0)
    return ((x - x.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def noisy_blobs(
    n_samples: int, n_informative: int, n_noise: int, centers: int, cluster_std: float = 1.0,
    noise_std: float = 1.0, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs in ``n_informative`` dims beside ``n_noise`` pure-noise dims, standardised per feature.

    Example::

        >>> x, y = noisy_blobs(100, 3, 7, centers=4, seed=0)
        >>> x.shape, len(set(y.tolist()))
        ((100, 10), 4)
    """
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples, n_features=n_informative, centers=centers, cluster_std=cluster_std,
                      center_box=(-5.0, 5.0), random_state=seed)
    noise = np.random.default_rng(seed).normal(scale=noise_std, size=(n_samples, n_noise))
    return _standardise(np.hstack([x, noise])), y.astype(np.int64)


def load_table(name: TableName) -> tuple[np.ndarray, np.ndarray]:
    """One of :data:`TABLES` as ``(X, y)``.

    Example::

        >>> x, y = load_table("iris")
        >>> x.shape, int(y.max()) + 1
        ((150, 4), 3)
    """
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    if name in ("wine", "iris", "breast_cancer"):
        bunch = getattr(datasets, f"load_{name}")()
        return _standardise(bunch.data.astype(np.float64)), bunch.target.astype(np.int64)
    if name == "mnist1d":
        from lightning_papers.data import make_mnist1d

        x, y = make_mnist1d(3000, seed=0)
        return _standardise(x.astype(np.float64)), y
    if name == "blobs_dev":
        return noisy_blobs(1000, n_informative=10, n_noise=40, centers=6, cluster_std=2.5, noise_std=1.0, seed=0)
    if name == "blobs_heldout":
        return noisy_blobs(1200, n_informative=16, n_noise=84, centers=8, cluster_std=3.0, noise_std=1.0, seed=1)
    raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
