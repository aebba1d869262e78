"""Array-backed classification data: seeded splits and synthetic label noise on the training split.

``ArrayDataModule`` is the base for every embedded (X, y) dataset (digits, MNIST-1D) and for a user's own
arrays (an ``.npz`` file or in-memory arrays). Label noise touches the training split only; the clean
labels and the mask of flipped samples are kept so robustness and memorisation can be measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DIGITS_ASYMMETRIC_MAP", "ArrayDataModule", "NoiseType", "as_labels", "make_label_noise"]

NoiseType = Literal["symmetric", "asymmetric", "pairflip"]

#: Class-conditional "asymmetric" flips for 10-class digit data (Patrini et al., 2017, MNIST protocol):
#: 7→1, 2→7, 5↔6, 3→8. Other classes keep their labels.
DIGITS_ASYMMETRIC_MAP: dict[int, int] = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}


def make_label_noise(
    labels: np.ndarray,
    num_classes: int,
    noise_type: NoiseType,
    rate: float,
    seed: int = 0,
    asymmetric_map: dict[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip labels to simulate annotation noise, flipping an exact number of samples.

    * ``symmetric``: ``round(rate * n)`` samples get a uniformly random *different* class, so ``rate`` is
      exactly the fraction of wrong labels.
    * ``pairflip``: ``round(rate * n)`` samples of class ``i`` become ``(i + 1) % num_classes`` (Han et al.).
    * ``asymmetric``: within each source class of ``asymmetric_map`` (default: the MNIST map for 10 classes),
      ``round(rate * n_class)`` samples become the mapped class; other classes stay clean.

    Args:
        labels: integer labels, shape ``(n,)``.
        num_classes: number of classes.
        noise_type: ``"symmetric"``, ``"asymmetric"`` or ``"pairflip"``.
        rate: fraction in ``[0, 1)`` of (eligible) samples to flip.
        seed: RNG seed; the same seed gives the same flips.
        asymmetric_map: source → target classes for ``"asymmetric"``.

    Returns:
        ``(noisy_labels, flipped_mask)``, both shape ``(n,)``.

    Raises:
        ValueError: on an unknown noise type, a rate outside ``[0, 1)`` or labels outside the classes.

    Example::

        >>> y = np.arange(100) % 10
        >>> noisy, mask = make_label_noise(y, 10, "symmetric", 0.4, seed=0)
        >>> float(mask.mean()), bool((noisy[mask] != y[mask]).all())
        (0.4, True)
    """
    labels = np.asarray(labels, dtype=np.int64)
    if noise_type not in ("symmetric", "asymmetric", "pairflip"):
        raise ValueError(
            f"noise_type must be one of 'symmetric', 'asymmetric', 'pairflip' (or None), got {noise_type!r}"
        )
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"noise_rate must be in [0, 1), got {rate}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    mask = np.zeros(labels.shape, dtype=bool)
    if noise_type in ("symmetric", "pairflip"):
        flip = rng.permutation(labels.size)[: int(round(rate * labels.size))]
        if noise_type == "symmetric":
            # An offset in [1, C-1] guarantees a different class, uniformly over the others.
            noisy[flip] = (labels[flip] + rng.integers(1, num_classes, size=flip.size)) % num_classes
        else:
            noisy[flip] = (labels[flip] + 1) % num_classes
        mask[flip] = True
        return noisy, mask
    if asymmetric_map is None:
        if num_classes != 10:
            raise ValueError(
                f"asymmetric noise needs an asymmetric_map for num_classes={num_classes} "
                "(the default map is defined for 10 digit classes)"
            )
        asymmetric_map = DIGITS_ASYMMETRIC_MAP
    for source, target in sorted(asymmetric_map.items()):
        idx = np.flatnonzero(labels == source)
        flip = rng.permutation(idx)[: int(round(rate * idx.size))]
        noisy[flip] = target
        mask[flip] = True
    return noisy, mask


def as_labels(y, source: str = "labels") -> np.ndarray:
    """Check class labels and return them as int64: a 1-D array of non-negative whole numbers.

    Float labels are accepted only when every value is a whole number (``3.0``), since that is how labels
    often come back from CSV or pandas; ``0.7`` is refused rather than truncated to ``0``.

    Args:
        y: the labels.
        source: what the labels are, for the error message (a file name, "y").

    Raises:
        ValueError: naming ``source`` and the first bad value.

    Example::

        >>> as_labels([0, 2.0, 1]).tolist()
        [0, 2, 1]
        >>> as_labels([0, 0.5])
        Traceback (most recent call last):
        ...
        ValueError: labels must be whole class numbers, got 0.5 at index 1
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{source} must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise ValueError(f"{source} must be whole class numbers, got {arr[bad[0]].item()!r} at index {bad[0]}")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{source} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        first = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"{source} must be >= 0 (class indices), got {arr[first]} at index {first}")
    return arr


class ArrayDataModule(L.LightningDataModule):
    """Classification data from arrays: seeded stratified train/val/test split, optional label noise.

    Subclasses override :meth:`load_arrays`; used directly, it reads ``path`` (an ``.npz`` with arrays
    ``x_key`` and ``y_key``) or arrays passed to :meth:`from_arrays`.

    Args:
        path: ``.npz`` file holding features and integer labels (only when not subclassed).
        x_key: name of the feature array in the ``.npz``.
        y_key: name of the label array in the ``.npz``.
        batch_size: batch size of every loader.
        val_fraction: fraction of samples for validation.
        test_fraction: fraction of samples for test.
        seed: seed of the split (and of the default noise seed and shuffling).
        noise_type: ``None`` or ``"symmetric"`` / ``"asymmetric"`` / ``"pairflip"``, training split only.
        noise_rate: fraction in ``[0, 1)`` of training labels to flip.
        noise_seed: seed of the flips (defaults to ``seed``).
        num_workers: DataLoader workers.

    Example::

        >>> dm = ArrayDataModule.from_arrays(np.random.rand(100, 4), np.arange(100) % 2, batch_size=10)
        >>> dm.setup()
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape)
        (10, 4)
    """

    def __init__(
        self,
        path: str | None = None,
        x_key: str = "x",
        y_key: str = "y",
        batch_size: int = 128,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        noise_type: NoiseType | None = None,
        noise_rate: float = 0.0,
        noise_seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
            raise ValueError(
                f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, "
                f"got val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
        if noise_type is not None and noise_type not in ("symmetric", "asymmetric", "pairflip"):
            raise ValueError(
                f"noise_type must be one of 'symmetric', 'asymmetric', 'pairflip' (or None), got {noise_type!r}"
            )
        if not 0.0 <= float(noise_rate) < 1.0:
            raise ValueError(f"noise_rate must be in [0, 1), got {noise_rate}")
        if noise_rate > 0 and noise_type is None:
            raise ValueError(f"noise_rate={noise_rate} needs a noise_type ('symmetric', 'asymmetric' or 'pairflip')")
        self.path, self.x_key, self.y_key = path, x_key, y_key
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = seed
        self.noise_type, self.noise_rate = noise_type, float(noise_rate)
        self.noise_seed = seed if noise_seed is None else noise_seed
        self.num_workers = num_workers
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._ready = False

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, **kwargs) -> ArrayDataModule:
        """Build a data module over in-memory arrays ``x`` (n, ...) and integer labels ``y`` (n,)."""
        dm = cls(**kwargs)
        dm._arrays = (np.asarray(x, dtype=np.float32), as_labels(y, "y"))
        return dm

    # -- to override ------------------------------------------------------------------------------
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X float32 (n, ...), y int64 (n,))``. The base class reads ``path`` or given arrays."""
        if self._arrays is not None:
            return self._arrays
        if self.path is None:
            raise ValueError("ArrayDataModule needs `path` (an .npz file) or arrays via ArrayDataModule.from_arrays")
        file = Path(self.path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"data file not found: {file}")
        import zipfile

        try:
            with np.load(file, allow_pickle=False) as data:
                for key in (self.x_key, self.y_key):
                    if key not in data:
                        raise KeyError(f"{file} has no array {key!r}; it has {sorted(data.files)}")
                x, y = data[self.x_key], data[self.y_key]
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            raise ValueError(
                f"{file} is not a readable .npz file ({type(err).__name__}: {err}); expected numpy.savez output "
                f"with arrays {self.x_key!r} (features) and {self.y_key!r} (integer labels)"
            ) from err
        if x.dtype.kind not in "iufb":
            raise ValueError(f"{file}: features {self.x_key!r} must be numeric, got dtype {x.dtype}")
        return x.astype(np.float32), as_labels(y, f"{file}: labels {self.y_key!r}")

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        from sklearn.model_selection import train_test_split

        x, y = self.load_arrays()
        y = as_labels(y, f"{type(self).__name__} labels")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"features and labels differ in length: {x.shape[0]} vs {y.shape[0]}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0].tolist()
            raise ValueError(f"{type(self).__name__}: features contain NaN or inf values (first at index {bad})")
        self.num_classes = int(y.max()) + 1
        self.input_shape = tuple(x.shape[1:])
        idx = np.arange(len(y))
        holdout = self.val_fraction + self.test_fraction
        stratify = y if np.bincount(y).min() >= 2 else None
        if holdout > 0:
            train_idx, rest = train_test_split(idx, test_size=holdout, random_state=self.seed, stratify=stratify)
            if self.val_fraction and self.test_fraction:
                val_idx, test_idx = train_test_split(
                    rest,
                    test_size=self.test_fraction / holdout,
                    random_state=self.seed,
                    stratify=y[rest] if stratify is not None and np.bincount(y[rest]).min() >= 2 else None,
                )
            elif self.val_fraction:
                val_idx, test_idx = rest, rest[:0]
            else:
                val_idx, test_idx = rest[:0], rest
        else:
            train_idx, val_idx, test_idx = idx, idx[:0], idx[:0]
        self.split_indices = {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}

        clean = y[self.split_indices["train"]]
        if self.noise_type is not None and self.noise_rate > 0:
            noisy, mask = make_label_noise(clean, self.num_classes, self.noise_type, self.noise_rate, self.noise_seed)
        else:
            noisy, mask = clean.copy(), np.zeros_like(clean, dtype=bool)
        self.clean_train_labels = torch.from_numpy(clean)
        self.noisy_train_labels = torch.from_numpy(noisy)
        self.noisy_mask = torch.from_numpy(mask)

        xt = torch.from_numpy(np.ascontiguousarray(x))
        yt = torch.from_numpy(y)
        tr, va, te = (torch.from_numpy(self.split_indices[s]) for s in ("train", "val", "test"))
        self.train_dataset = TensorDataset(xt[tr], self.noisy_train_labels)
        self.val_dataset = TensorDataset(xt[va], yt[va])
        self.test_dataset = TensorDataset(xt[te], yt[te])
        self._ready = True

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)

    def train_eval_dataloader(self) -> DataLoader:
        """Unshuffled training split yielding ``(x, y_noisy, y_clean)``, for memorisation metrics."""
        x = self.train_dataset.tensors[0]
        return self._loader(TensorDataset(x, self.noisy_train_labels, self.clean_train_labels), shuffle=False)

    def arrays(self, split: str = "train", clean: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """All of one split as tensors ``(x, y)``; for ``train``, ``clean`` picks clean or noisy labels."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.setup()
        ds = {"train": self.train_dataset, "val": self.val_dataset, "test": self.test_dataset}[split]
        x, y = ds.tensors
        if split == "train" and clean:
            y = self.clean_train_labels
        return x, y
