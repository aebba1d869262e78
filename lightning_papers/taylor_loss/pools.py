"""The built-in task pools: the development pool the shipped preset was searched on, and a disjoint held-out
(transfer) pool the benchmark reports on — held-out datasets, architectures and noise type."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_papers.taylor_loss.tasks import LossTask

__all__ = ["HELDOUT_COMPONENTS", "SEARCH_COMPONENTS", "heldout_tasks", "search_tasks"]

#: (name, data, data_args, model, model_args) of the development pool the shipped preset was searched on.
SEARCH_COMPONENTS: list[tuple[str, str, dict, str, dict]] = [
    ("digits-mlp", "DigitsDataModule", {}, "MLP", {"hidden": [64]}),
    ("digits-cnn", "DigitsDataModule", {"flatten": False}, "ConvNet", {"channels": [8, 16]}),  # 500 samples
    ("mnist1d-mlp", "MNIST1DDataModule", {"n_samples": 2000}, "MLP", {"hidden": [128]}),
    ("blobs-mlp", "SyntheticDataModule", {"kind": "blobs", "n_samples": 1500, "n_features": 16, "n_classes": 10,
                                          "difficulty": 1.0}, "MLP", {"hidden": [64]}),
]
SEARCH_NOISE: list[tuple[str | None, float]] = [
    (None, 0.0), ("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6), ("pairflip", 0.3),
]
#: Datasets, architectures and the noise type of the held-out pool: none of them appears in the search pool.
HELDOUT_COMPONENTS: list[tuple[str, str, dict, str, dict]] = [
    ("breast-cancer-mlp2", "SklearnDataModule", {"name": "breast_cancer"}, "MLP",
     {"hidden": [64, 64], "activation": "gelu"}),
    ("hypercube-mlp2", "SyntheticDataModule", {"kind": "hypercube", "n_samples": 2000, "n_features": 30,
                                               "n_classes": 10, "data_seed": 1}, "MLP",
     {"hidden": [128, 128], "activation": "gelu"}),
    ("quantiles-mlp2", "SyntheticDataModule", {"kind": "quantiles", "n_samples": 2000, "n_features": 8,
                                               "n_classes": 6, "data_seed": 2}, "MLP",
     {"hidden": [128, 64], "activation": "tanh"}),
]
HELDOUT_NOISE: list[tuple[str | None, float]] = [(None, 0.0), ("symmetric", 0.4), ("asymmetric", 0.4)]

def _pool(components, noise, seeds, names, noises) -> list[LossTask]:
    tasks = []
    for name, data, data_args, model, model_args in components:
        if names is not None and name not in names:
            continue
        for nt, rate in noise if noises is None else noises:
            for seed in seeds:
                cap = 500 if model == "ConvNet" else None  # keeps a CNN run as cheap as an MLP run on CPU
                tasks.append(LossTask(data, dict(data_args), model, dict(model_args), nt, rate, seed=seed,
                                      name=f"{name}/{LossTask(noise_type=nt, noise_rate=rate).label.split('/')[2]}",
                                      max_train_samples=cap))
    return tasks

def search_tasks(seeds: Sequence[int] = (100,), names: Sequence[str] | None = None,
                 noise: Sequence[tuple[str | None, float]] | None = None) -> list[LossTask]:
    """The development pool: digits (MLP, CNN), MNIST-1D (MLP), Gaussian blobs (MLP) × clean, symmetric
    20/40/60 % and pairflip 30 % noise × ``seeds``.

    Example::

        >>> len(search_tasks()), search_tasks()[0].label
        (20, 'digits-mlp/clean')
    """
    return _pool(SEARCH_COMPONENTS, SEARCH_NOISE, seeds, names, noise)

def heldout_tasks(seeds: Sequence[int] = (0,), names: Sequence[str] | None = None,
                  noise: Sequence[tuple[str | None, float]] | None = None) -> list[LossTask]:
    """The transfer pool (never searched on): breast cancer, hypercube and Gaussian-quantile tasks, with
    two-hidden-layer GELU/tanh MLPs, × clean, symmetric 40 % and asymmetric 40 % noise × ``seeds``.

    Example::

        >>> len(heldout_tasks()), heldout_tasks()[2].label
        (9, 'breast-cancer-mlp2/asy40')
    """
    return _pool(HELDOUT_COMPONENTS, HELDOUT_NOISE, seeds, names, noise)
