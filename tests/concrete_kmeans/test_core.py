"""Core of concrete k-means: estimator properties, Lloyd recovery, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import normalized_mutual_info_score

from lightning_papers.concrete_kmeans import (
    ConcreteKMeans,
    concrete_kmeans_loss,
    gumbel_softmax_assignment,
    kmeans,
    kmeans_plusplus,
    squared_distances,
    temperature_at,
)


def _blobs(n=300, k=4, seed=0):
    x, y = make_blobs(n_samples=n, centers=k, cluster_std=0.6, center_box=(-8, 8), random_state=seed)
    return torch.tensor(x, dtype=torch.float32), y


def test_squared_distances_match_brute_force():
    g = torch.Generator().manual_seed(0)
    z, mu = torch.randn(7, 3, generator=g), torch.randn(4, 3, generator=g)
    ref = ((z[:, None, :] - mu[None]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(z, mu), ref, atol=1e-5)


@pytest.mark.parametrize("hard", [True, False])
def test_tau_to_zero_recovers_lloyd_partition_on_blobs(hard):
    """Fixed identity features, separable blobs: SGD on the concrete loss lands on Lloyd's fixed point."""
    x, y = make_blobs(300, centers=[(-5, -5), (5, -5), (-5, 5), (5, 5)], cluster_std=1.0, random_state=0)
    z = torch.tensor(x, dtype=torch.float32)
    init = kmeans_plusplus(z, 4, torch.Generator().manual_seed(0))
    lloyd_c, lloyd_labels, _ = kmeans(z, 4, init=init)  # Lloyd from the same seeds
    layer = ConcreteKMeans(4, 2, centroids=init, hard=hard)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 200)
    gen = torch.Generator().manual_seed(0)
    for step in range(200):
        out = layer(z, tau=temperature_at(step / 199, 1.0, 0.01), generator=gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
    pred = layer.predict(z).numpy()
    assert normalized_mutual_info_score(lloyd_labels.numpy(), pred) > 0.999
    assert normalized_mutual_info_score(y, pred) > 0.999
    assert float((layer.centroids.detach() - init).abs().max()) > 0.5  # it did move
    # Centroids end at Lloyd's fixed point (the cluster means), up to SGD noise.
    gap = torch.cdist(layer.centroids.detach(), lloyd_c).min(1).values.max()
    assert float(gap) < 0.1


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("objective", ["quantization", "distortion"])
def test_gradients_reach_encoder_and_centroids(hard, objective):
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    layer = ConcreteKMeans(4, 3, centroids=torch.randn(4, 3), hard=hard, objective=objective)
    out = layer(encoder(torch.randn(32, 5)), tau=0.5, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    for p in [*encoder.parameters(), layer.centroids]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if hard:
        assert set(out.assignments.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(out.assignments.sum(1), torch.ones(32))


def test_estimator_expectation_matches_soft_kmeans_loss():
    """E_g[loss] of the sampled (hard) estimator = sum_k softmax(-d)_k d_k, the soft k-means loss.

    The relaxed estimator at a small temperature has (nearly) the same expectation.
    """
    g = torch.Generator().manual_seed(0)
    z, mu = torch.randn(6, 2, generator=g) * 0.7, torch.randn(3, 2, generator=g) * 0.7
    d = squared_distances(z, mu)
    soft_kmeans = (torch.softmax(-d, 1) * d).sum(1)  # per-sample soft k-means loss
    reps = 20000
    zz = z.repeat(reps, 1)
    gen = torch.Generator().manual_seed(1)
    hard = concrete_kmeans_loss(zz, mu, tau=1.0, hard=True, reduction="none", generator=gen)
    hard = hard.reshape(reps, 6).mean(0)
    assert torch.allclose(hard, soft_kmeans, rtol=0.05, atol=0.02)
    relaxed = concrete_kmeans_loss(zz, mu, tau=0.02, hard=False, objective="distortion",
                                   reduction="none", generator=gen).reshape(reps, 6).mean(0)
    assert torch.allclose(relaxed, soft_kmeans, rtol=0.05, atol=0.02)
    # The mean relaxed sample is the assignment distribution softmax(-d) as tau -> 0.
    a = gumbel_softmax_assignment((-d).repeat(reps, 1), tau=0.02, hard=False, generator=gen)
    assert torch.allclose(a.reshape(reps, 6, 3).mean(0), torch.softmax(-d, 1), atol=0.02)


def test_functional_and_module_agree_and_generator_reproduces():
    z, mu = torch.randn(10, 4), torch.randn(3, 4)
    layer = ConcreteKMeans(3, 4, centroids=mu)
    a = layer(z, tau=0.3, generator=torch.Generator().manual_seed(5)).loss
    b = concrete_kmeans_loss(z, mu, tau=0.3, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b)
    c = concrete_kmeans_loss(z, mu, tau=0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(b, c)


def test_hard_loss_is_distance_to_sampled_centroid():
    z = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    mu = torch.tensor([[0.0, 1.0], [10.0, 8.0]])
    # logits -1 vs -181 (and -128 vs -4): the Gumbel-max sample is the nearest centroid w.p. ~1
    loss = concrete_kmeans_loss(z, mu, tau=0.1, reduction="none", generator=torch.Generator().manual_seed(0))
    assert loss.tolist() == [1.0, 4.0]


def test_torch_kmeans_matches_sklearn_inertia():
    z, _ = _blobs(400, 5, seed=2)
    c, labels, inertia = kmeans(z, 5, n_init=5, seed=0)
    ref = KMeans(5, n_init=5, random_state=0).fit(z.numpy())
    assert inertia == pytest.approx(ref.inertia_, rel=1e-3)
    assert normalized_mutual_info_score(ref.labels_, labels.numpy()) > 0.999


def test_init_centroids_state_dict_roundtrip():
    z, _ = _blobs()
    layer = ConcreteKMeans(4, 2)
    assert not bool(layer.initialized)
    layer.init_centroids(z, n_init=2)
    other = ConcreteKMeans(4, 2)
    other.load_state_dict(layer.state_dict())
    assert bool(other.initialized) and torch.equal(other.centroids, layer.centroids)


def test_temperature_schedules():
    assert temperature_at(0.0, 2.0, 0.1) == pytest.approx(2.0)
    assert temperature_at(1.0, 2.0, 0.1) == pytest.approx(0.1)
    assert temperature_at(5.0, 2.0, 0.1, "linear") == pytest.approx(0.1)
    assert temperature_at(0.5, 2.0, 0.1, "constant") == 2.0
    assert temperature_at(0.5, 1.0, 0.0001, "cosine") == pytest.approx(0.50005)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: concrete_kmeans_loss(torch.randn(4, 3), torch.randn(2, 3), tau=0.0), "tau"),
        (lambda: concrete_kmeans_loss(torch.randn(4, 3), torch.randn(2, 2)), "centroids must have shape"),
        (lambda: concrete_kmeans_loss(torch.randn(4), torch.randn(2, 4)), r"z must have shape \(N, D\)"),
        (lambda: concrete_kmeans_loss(torch.randn(4, 3), torch.randn(2, 3), objective="x"), "objective"),
        (lambda: ConcreteKMeans(0, 3), "n_clusters"),
        (lambda: ConcreteKMeans(1, 3), r"n_clusters must be an integer >= 2, got 1"),
        (lambda: ConcreteKMeans(2, 3)(torch.randn(4, 5)), r"\(N, 3\)"),
        (lambda: ConcreteKMeans(2, 3, centroids=np.zeros((3, 3))), r"\(2, 3\)"),
        (lambda: ConcreteKMeans(5, 2).init_centroids(torch.randn(3, 2)), "at least n_clusters=5"),
        (lambda: temperature_at(0.5, 1.0, 0.1, "bogus"), "schedule"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
