"""scikit-learn's bundled 8x8 handwritten digits (1,797 images) as a LightningDataModule."""

from __future__ import annotations

import numpy as np

from lightning_papers.data.arrays import ArrayDataModule, NoiseType

__all__ = ["DigitsDataModule"]


class DigitsDataModule(ArrayDataModule):
    """The UCI 8x8 digits shipped with scikit-learn: no download, 10 classes, pixels scaled to [0, 1].

    Args:
        flatten: yield 64-dim vectors (True) or ``(1, 8, 8)`` images (False).
        batch_size, val_fraction, test_fraction, seed, noise_type, noise_rate, noise_seed, num_workers:
            see :class:`~lightning_papers.data.ArrayDataModule`.

    Example::

        >>> dm = DigitsDataModule(noise_type="symmetric", noise_rate=0.4)
        >>> dm.setup()
        >>> len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset)
        1797
        >>> round(float(dm.noisy_mask.float().mean()), 2)
        0.4
    """

    def __init__(
        self,
        flatten: bool = True,
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
        self.flatten = flatten

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32)  # raw pixel values are 0..16
        if not self.flatten:
            x = x.reshape(-1, 1, 8, 8)
        return x, bunch.target.astype(np.int64)
