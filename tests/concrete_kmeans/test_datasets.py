"""Development / held-out tables: disjoint, standardised, the advertised shapes."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from lightning_papers.concrete_kmeans.datasets import (
    DEVELOPMENT,
    HELD_OUT,
    TABLES,
    TableName,
    load_table,
    noisy_blobs,
)


def test_development_and_held_out_are_disjoint():
    assert not set(DEVELOPMENT) & set(HELD_OUT) and set(TABLES) == set(DEVELOPMENT) | set(HELD_OUT)
    assert set(typing.get_args(TableName)) == set(TABLES)  # the type hint names exactly the tables


@pytest.mark.parametrize("name, shape, classes", [("wine", (178, 13), 3), ("iris", (150, 4), 3),
                                                  ("breast_cancer", (569, 30), 2), ("digits", (1797, 64), 10),
                                                  ("blobs_dev", (1000, 50), 6), ("blobs_heldout", (1200, 100), 8)])
def test_tables(name, shape, classes):
    x, y = load_table(name)
    assert x.shape == shape and x.dtype == np.float32 and int(y.max()) + 1 == classes
    if name != "digits":  # standardised per feature
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)


def test_noisy_blobs_noise_dimensions_carry_no_label_information():
    x, y = noisy_blobs(600, n_informative=2, n_noise=3, centers=3, seed=0)
    means = np.stack([x[y == k].mean(0) for k in range(3)])
    assert means[:, :2].std(0).min() > 0.5 and means[:, 2:].std(0).max() < 0.15


def test_unknown_table():
    with pytest.raises(ValueError, match="unknown table 'mnist'"):
        load_table("mnist")
