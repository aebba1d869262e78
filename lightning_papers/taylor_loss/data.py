"""Data for the loss search and its benchmark: generated and scikit-learn-bundled tasks, and CIFAR-10 from
the official "python version" pickle batches in a user folder. Nothing here downloads."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

from lightning_papers.data import ArrayDataModule
from lightning_papers.data.arrays import NoiseType
from lightning_papers.validation import check_each

__all__ = ["CIFAR10DataModule", "SklearnDataModule", "SyntheticDataModule", "read_cifar_batch"]

#: Per-channel mean and std of the CIFAR-10 training images (in [0, 1] units).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickle batch (``data_batch_k`` / ``test_batch``) as ``(uint8 (n, 3, 32, 32), int64 (n,))``."""
    with open(path, "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no 'data'/'labels' entries)")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (n, 3072), got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


class CIFAR10DataModule(ArrayDataModule):
    """CIFAR-10 with synthetic label noise on the training split; the official test batch is the test set.

    Args:
        root: folder holding ``data_batch_1..5`` and ``test_batch`` (or its parent with ``cifar-10-batches-py``).
        max_train_samples: use only the first ``n`` training images (quick experiments).
        normalize: standardise channels with the CIFAR-10 mean/std (else pixels in [0, 1]).
        batch_size, val_fraction, seed, noise_type, noise_rate, noise_seed, num_workers: see
            :class:`~lightning_papers.data.ArrayDataModule` (validation comes from the training batches).

    Raises:
        FileNotFoundError: when ``root`` holds no training batch or no ``test_batch``.

    Example::

        >>> dm = CIFAR10DataModule("~/data/cifar-10-batches-py", noise_type="symmetric", noise_rate=0.4)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str = "data/cifar-10-batches-py",
        max_train_samples: int | None = None,
        normalize: bool = True,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        noise_type: NoiseType | None = None,
        noise_rate: float = 0.0,
        noise_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            test_fraction=0.0,
            seed=seed,
            noise_type=noise_type,
            noise_rate=noise_rate,
            noise_seed=noise_seed,
            num_workers=num_workers,
        )
        if max_train_samples is not None and max_train_samples < 1:
            raise ValueError(f"max_train_samples must be None or >= 1, got {max_train_samples}")
        self.root, self.max_train_samples, self.normalize = root, max_train_samples, normalize

    def _folder(self) -> Path:
        root = Path(self.root).expanduser()
        for cand in (root, root / "cifar-10-batches-py"):
            if any(cand.glob("data_batch_*")):
                return cand
        raise FileNotFoundError(
            f"no CIFAR-10 python batches (data_batch_1 ... data_batch_5) under {root}; download and extract "
            "cifar-10-python.tar.gz there and set data.init_args.root"
        )

    def _to_float(self, x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32) / 255.0
        if self.normalize:
            mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)[None, :, None, None]
            std = np.asarray(CIFAR10_STD, dtype=np.float32)[None, :, None, None]
            out = (out - mean) / std
        return out

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        folder = self._folder()
        files = sorted(folder.glob("data_batch_*"), key=lambda p: p.name)
        parts = [read_cifar_batch(f) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if self.max_train_samples is not None:
            x, y = x[: self.max_train_samples], y[: self.max_train_samples]
        return self._to_float(x), y

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        super().setup(stage)
        test_file = self._folder() / "test_batch"
        if not test_file.is_file():
            raise FileNotFoundError(f"CIFAR-10 test batch not found: {test_file}")
        x, y = read_cifar_batch(test_file)
        self.test_dataset = TensorDataset(torch.from_numpy(self._to_float(x)), torch.from_numpy(y))


class SyntheticDataModule(ArrayDataModule):
    """A generated classification task (scikit-learn generators; no download).

    Kinds: ``"blobs"`` (isotropic Gaussian clusters, one per class), ``"hypercube"`` (``make_classification``:
    two clusters per class on hypercube vertices, informative + redundant + noise features) and
    ``"quantiles"`` (``make_gaussian_quantiles``: classes are concentric shells, a non-linear boundary).

    Args:
        kind: the generator.
        n_samples: number of samples.
        n_features: input dimension.
        n_classes: number of classes.
        difficulty: cluster spread for ``blobs`` (std relative to the centre spacing) and ``1/class_sep`` for
            ``hypercube``; ignored for ``quantiles``.
        data_seed: seed of the generator (independent of the split ``seed``).
        batch_size, val_fraction, test_fraction, seed, noise_type, noise_rate, noise_seed, num_workers:
            see :class:`~lightning_papers.data.ArrayDataModule`.

    Example::

        >>> dm = SyntheticDataModule("blobs", n_samples=200, n_features=8, n_classes=4)
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes
        ((8,), 4)
    """

    def __init__(
        self,
        kind: Literal["blobs", "hypercube", "quantiles"] = "blobs",
        n_samples: int = 2000,
        n_features: int = 20,
        n_classes: int = 10,
        difficulty: float = 1.0,
        data_seed: int = 0,
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        noise_type: NoiseType | None = None,
        noise_rate: float = 0.0,
        noise_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         noise_type=noise_type, noise_rate=noise_rate, noise_seed=noise_seed, num_workers=num_workers)
        if kind not in ("blobs", "hypercube", "quantiles"):
            raise ValueError(f"kind must be 'blobs', 'hypercube' or 'quantiles', got {kind!r}")
        check_each(
            (n_classes >= 2, f"n_classes must be >= 2, got {n_classes}"),
            (n_samples >= 2 * n_classes, f"n_samples must be >= 2 * n_classes = {2 * n_classes}, got {n_samples}"),
            (n_features >= 2, f"n_features must be >= 2, got {n_features}"),
            (difficulty > 0, f"difficulty must be > 0, got {difficulty}"),
        )
        self.kind, self.n_samples, self.n_features, self.n_classes = kind, n_samples, n_features, n_classes
        self.difficulty, self.data_seed = float(difficulty), data_seed

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn import datasets

        n, d, c, seed = self.n_samples, self.n_features, self.n_classes, self.data_seed
        if self.kind == "blobs":
            centers = np.random.default_rng(seed).normal(size=(c, d))
            spacing = float(np.median(np.linalg.norm(centers[:, None] - centers[None], axis=-1)[np.triu_indices(c, 1)]))
            x, y = datasets.make_blobs(n, d, centers=centers, cluster_std=0.35 * spacing * self.difficulty,
                                       random_state=seed)
        elif self.kind == "hypercube":
            informative = max(2, min(d, int(np.ceil(np.log2(2 * c))) + 4))
            x, y = datasets.make_classification(
                n, d, n_informative=informative, n_redundant=min(d - informative, 4), n_classes=c,
                n_clusters_per_class=2, class_sep=1.0 / self.difficulty, flip_y=0.0, random_state=seed,
            )
        else:
            x, y = datasets.make_gaussian_quantiles(n_samples=n, n_features=d, n_classes=c, random_state=seed)
        return x.astype(np.float32), y.astype(np.int64)


class SklearnDataModule(ArrayDataModule):
    """A small real dataset bundled with scikit-learn (no download): ``wine``, ``breast_cancer`` or ``iris``.

    Args:
        name: which dataset.
        batch_size, val_fraction, test_fraction, seed, noise_type, noise_rate, noise_seed, num_workers:
            see :class:`~lightning_papers.data.ArrayDataModule`.

    Example::

        >>> dm = SklearnDataModule("breast_cancer")
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes
        ((30,), 2)
    """

    NAMES = ("wine", "breast_cancer", "iris")

    def __init__(
        self,
        name: Literal["wine", "breast_cancer", "iris"] = "breast_cancer",
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        noise_type: NoiseType | None = None,
        noise_rate: float = 0.0,
        noise_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         noise_type=noise_type, noise_rate=noise_rate, noise_seed=noise_seed, num_workers=num_workers)
        if name not in self.NAMES:
            raise ValueError(f"name must be one of {self.NAMES}, got {name!r}")
        self.name = name

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{self.name}")()
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64)
