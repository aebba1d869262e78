"""Arguments validated together: the error names only the argument that failed, with its value and the rule."""

from __future__ import annotations

import re

import pytest

from lightning_papers.data.mnist1d import make_mnist1d
from lightning_papers.heurimentor import MixtureDataModule, RollingMeanSpikeDetector, ZScoreSpikeDetector
from lightning_papers.metamd import LeastSquaresSampler, meta_train
from lightning_papers.spikellm import gif_levels
from lightning_papers.taylor_loss import LossSearch, SyntheticDataModule
from lightning_papers.validation import check_each

CASES = [
    (lambda: RollingMeanSpikeDetector(window=10, ratio=0.9), "ratio must be > 1, got 0.9"),
    (lambda: RollingMeanSpikeDetector(window=0, ratio=2.0), "window must be >= 1, got 0"),
    (lambda: ZScoreSpikeDetector(window=1, threshold=6.0), "window must be >= 2, got 1"),
    (lambda: ZScoreSpikeDetector(window=64, threshold=0.0), "threshold must be > 0, got 0.0"),
    (lambda: MixtureDataModule(seq_len=1), "seq_len must be >= 2, got 1"),
    (lambda: MixtureDataModule(batch_size=0), "batch_size must be >= 1, got 0"),
    (lambda: make_mnist1d(n_samples=10, length=4), "length must be >= 8, got 4"),
    (lambda: LeastSquaresSampler(dim=0), "dim must be >= 1, got 0"),
    (lambda: LossSearch(degree=0), "degree must be >= 1, got 0"),
    (lambda: LossSearch(other_degree=-1), "other_degree must be >= 0, got -1"),
    (lambda: SyntheticDataModule(n_features=1), "n_features must be >= 2, got 1"),
    (lambda: gif_levels(bits=4, extra_bits=-1), "extra_bits must be >= 0, got -1"),
    (lambda: meta_train(LeastSquaresSampler(), max_warm_start=-2, progress=False), "max_warm_start must be >= 0, got -2"),
]


@pytest.mark.parametrize("make, message", CASES, ids=[m.split(" must")[0] + "_" + m.split("got ")[1] for _, m in CASES])
def test_the_error_names_only_the_failed_argument(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


def test_every_failed_check_is_reported_and_only_those():
    with pytest.raises(ValueError, match=r"^a must be >= 1, got 0; c must be > 0, got -1$"):
        check_each((False, "a must be >= 1, got 0"), (True, "b is fine"), (False, "c must be > 0, got -1"))
    check_each((True, "never raised"))
