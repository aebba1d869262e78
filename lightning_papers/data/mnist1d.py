"""A procedurally generated MNIST-1D-style dataset (after Greydanus, 2020), made in-process.

Each sample is one of ten fixed 1-D digit templates, randomly padded, stretched, sheared and shifted,
with correlated and i.i.d. noise added, resampled to 40 points. It is harder than 8x8 digits for
MLPs yet costs milliseconds to make. It follows the published recipe, but is our own re-generation,
not the reference dataset file.
"""

from __future__ import annotations

import numpy as np

from lightning_papers.data.arrays import ArrayDataModule, NoiseType
from lightning_papers.validation import check_each

__all__ = ["MNIST1DDataModule", "make_mnist1d"]

# Ten hand-drawn 12-point templates (one per class), offsets around a baseline of 5.
_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ],
    dtype=np.float64,
) - 5.0


def make_mnist1d(n_samples: int = 4000, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n_samples`` MNIST-1D-style signals of ``length`` points, balanced over 10 classes.

    Example::

        >>> x, y = make_mnist1d(20, seed=0)
        >>> x.shape, sorted(set(y.tolist())) == list(range(10))
        ((20, 40), True)
    """
    check_each((n_samples >= 1, f"n_samples must be >= 1, got {n_samples}"), (length >= 8, f"length must be >= 8, got {length}"))
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % 10
    rng.shuffle(y)
    grid = np.linspace(-1, 1, length)
    x = np.empty((n_samples, length), dtype=np.float32)
    for i, label in enumerate(y):
        tpl = _TEMPLATES[label]
        pad = int(rng.integers(36, 61))
        left = int(rng.integers(0, pad + 1))
        signal = np.concatenate([np.zeros(left), tpl, np.zeros(pad - left)])
        pos = np.linspace(-1, 1, signal.size)
        scale = 1.0 + rng.uniform(-0.4, 0.4)  # stretch in time
        shift = rng.uniform(-0.4, 0.4)  # translation
        sample = np.interp(grid, pos * scale + shift, signal, left=0.0, right=0.0)
        sample = sample + rng.uniform(-0.75, 0.75) * grid  # shear (linear trend)
        corr = np.convolve(rng.normal(size=length + 8), np.ones(9) / 3.0, mode="valid")  # smooth noise
        sample = sample + 0.25 * corr + 0.02 * rng.normal(size=length)
        x[i] = sample
    return x, y.astype(np.int64)


class MNIST1DDataModule(ArrayDataModule):
    """MNIST-1D-style signals (40 points, 10 classes), generated procedurally from a seed.

    Args:
        n_samples: number of generated signals.
        length: points per signal.
        data_seed: seed of the generator (independent of the split ``seed``).
        batch_size, val_fraction, test_fraction, seed, noise_type, noise_rate, noise_seed, num_workers:
            see :class:`~lightning_papers.data.ArrayDataModule`.

    Example::

        >>> dm = MNIST1DDataModule(n_samples=200)
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes
        ((40,), 10)
    """

    def __init__(
        self,
        n_samples: int = 4000,
        length: int = 40,
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
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            noise_type=noise_type,
            noise_rate=noise_rate,
            noise_seed=noise_seed,
            num_workers=num_workers,
        )
        self.n_samples, self.length, self.data_seed = n_samples, length, data_seed

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return make_mnist1d(self.n_samples, self.length, self.data_seed)
