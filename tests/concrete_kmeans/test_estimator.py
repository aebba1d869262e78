"""scikit-learn conventions of ConcreteKMeansClusterer and its input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import normalized_mutual_info_score

from lightning_papers.concrete_kmeans import ConcreteKMeansClusterer


def _data():
    x, y = make_blobs(240, n_features=6, centers=4, cluster_std=0.8, random_state=0)
    return x.astype(np.float32), y


def _small(**kw):
    params = dict(n_clusters=4, latent_dim=3, hidden=(32,), pretrain_epochs=15, epochs=10, batch_size=64,
                  lr=3e-3, random_state=0)
    params.update(kw)
    return ConcreteKMeansClusterer(**params)


@pytest.mark.slow
def test_fit_follows_sklearn_conventions_and_clusters_blobs():
    x, y = _data()
    est = _small()
    before = torch.get_rng_state()
    assert est.fit(x) is est
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    assert est.labels_.shape == (240,) and est.labels_.dtype == np.int64
    assert est.cluster_centers_.shape == (4, 3) and est.n_features_in_ == 6
    assert normalized_mutual_info_score(y, est.labels_) > 0.9
    np.testing.assert_array_equal(est.predict(x), est.labels_)
    assert est.transform(x[:5]).shape == (5, 4) and est.embed(x[:5]).shape == (5, 3)
    assert est.score(x) == pytest.approx(-est.inertia_, rel=1e-4)
    # same random_state -> same result; fit_predict == fit().labels_
    again = clone(est)
    assert again.get_params() == est.get_params() and not hasattr(again, "labels_")
    np.testing.assert_array_equal(again.fit_predict(x), est.labels_)


def test_zero_epochs_is_kmeans_in_a_random_embedding_and_is_fast():
    x, _ = _data()
    est = _small(pretrain_epochs=0, epochs=0).fit(x)
    assert est.labels_.shape == (240,) and len(np.unique(est.labels_)) == 4


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (np.zeros((3, 4)), {"n_clusters": 5}, ValueError, "n_samples=3 should be >= n_clusters=5"),
        (np.array([[0.0, np.nan], [1.0, 2.0]] * 5), {"n_clusters": 2}, ValueError, "NaN"),
        (np.zeros(10), {"n_clusters": 2}, ValueError, "Expected a 2D array"),
        (np.zeros((4, 2, 2)), {"n_clusters": 2}, ValueError, "Expected a 2D array"),
        (np.zeros((10, 2)), {"n_clusters": 0}, ValueError, "n_clusters must be an integer >= 1"),
        (np.zeros((10, 2)), {"n_clusters": 2, "epochs": -1}, ValueError, "epochs must be >= 0"),
        ([["a", "b"]], {"n_clusters": 1}, ValueError, "numeric array"),
    ],
)
def test_bad_input_raises_clear_errors(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        ConcreteKMeansClusterer(**kwargs).fit(x)


def test_predict_before_fit_and_wrong_width():
    with pytest.raises(NotFittedError):
        ConcreteKMeansClusterer().predict(np.zeros((2, 3)))
    x, _ = _data()
    est = _small(pretrain_epochs=0, epochs=0).fit(x)
    with pytest.raises(ValueError, match="X has 5 features, but ConcreteKMeansClusterer was fitted with 6"):
        est.predict(np.zeros((2, 5)))
