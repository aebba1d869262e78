"""ClusterEmbedding: the skip path keeps k-means geometry, the learned code has a fixed scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from lightning_papers.concrete_kmeans import ClusterEmbedding, ScalarNorm, pca_projection


def test_pca_projection_matches_sklearn():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(200, 6)) * [3, 2, 1, 1, 0.5, 0.1]).float()
    mean, comps, total = pca_projection(x, 3)
    ref = PCA(3).fit(x.numpy())
    np.testing.assert_allclose(np.abs(comps.numpy().T), np.abs(ref.components_), atol=1e-4)
    # total scatter of the projected rows = sum of the kept variances (biased estimator)
    assert float(total) == pytest.approx(ref.explained_variance_.sum() * 199 / 200, rel=1e-4)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0), atol=1e-5)


def test_full_skip_path_is_a_scaled_rotation_of_the_input():
    x = torch.randn(50, 5) * torch.tensor([4.0, 1.0, 1.0, 0.2, 2.0])
    emb = ClusterEmbedding(torch.nn.Linear(5, 3), latent_dim=3, in_features=5, skip_dim=5, learned_weight=0.5)
    emb.fit_skip(x).eval()
    with torch.no_grad():
        r = emb(x)[:, :5]
    ratio = torch.cdist(r, r)[~torch.eye(50, dtype=bool)] / torch.cdist(x, x)[~torch.eye(50, dtype=bool)]
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-4, atol=1e-5)
    # the skip block's total variance is (1 - w) * latent_dim
    assert float((r - r.mean(0)).pow(2).sum(1).mean()) == pytest.approx(0.5 * 3, rel=1e-4)


@pytest.mark.parametrize("norm", ["scalar", "batch"])
def test_learned_code_has_a_fixed_scale_and_cannot_shrink(norm):
    torch.manual_seed(0)
    enc = torch.nn.Linear(4, 3)
    emb = ClusterEmbedding(enc, latent_dim=3, skip_dim=0, normalize=norm)
    x = torch.randn(64, 4) * torch.tensor([3.0, 1.0, 0.3, 0.1])
    z = emb(x)  # training mode: batch statistics
    h = enc(x).detach()
    var = z.detach().var(0, unbiased=False)
    if norm == "batch":  # every unit whitened
        torch.testing.assert_close(var, torch.ones(3), rtol=1e-3, atol=1e-3)
    else:  # one scale: total variance 3, the code's own variance spectrum kept
        assert float(var.sum()) == pytest.approx(3.0, rel=1e-3)
        torch.testing.assert_close(var / var.sum(), h.var(0, unbiased=False) / h.var(0, unbiased=False).sum())
    with torch.no_grad():
        enc.weight.mul_(0.1)
        enc.bias.mul_(0.1)
    torch.testing.assert_close(emb(x), z, rtol=1e-2, atol=1e-2)  # shrinking the encoder changes nothing


def test_scalar_norm_uses_running_statistics_in_eval():
    norm = ScalarNorm(2, momentum=1.0)
    x = torch.randn(100, 2) * 5 + 3
    train_out = norm(x)
    norm.eval()
    torch.testing.assert_close(norm(x), train_out, rtol=1e-4, atol=1e-4)  # momentum 1: running = last batch


def test_trainable_skip_starts_as_the_fixed_projection_and_gets_gradients():
    torch.manual_seed(0)
    x = torch.randn(40, 5)
    fixed = ClusterEmbedding(torch.nn.Linear(5, 2), 2, 5, 5, 0.5).fit_skip(x).eval()
    trainable = ClusterEmbedding(torch.nn.Linear(5, 2), 2, 5, 5, 0.5, skip_trainable=True).fit_skip(x)
    r_train = trainable(x)[:, :5]
    torch.testing.assert_close(r_train, fixed(x)[:, :5], rtol=1e-3, atol=1e-3)
    r_train.pow(2).sum().backward()
    assert trainable.skip_weight.grad is not None and trainable.skip_weight.grad.abs().sum() > 0


def test_decoder_input_does_not_depend_on_the_learned_weight():
    torch.manual_seed(0)
    x = torch.randn(32, 4)
    codes = []
    for w in (0.3, 0.9):
        torch.manual_seed(1)
        emb = ClusterEmbedding(torch.nn.Linear(4, 2), latent_dim=2, in_features=4, skip_dim=4, learned_weight=w)
        z = emb.fit_skip(x)(x)
        assert z.shape == (32, 6)
        assert float(z[:, 4:].pow(2).sum(1).mean()) == pytest.approx(2 * w, rel=1e-3)
        codes.append(emb.learned(z))
    torch.testing.assert_close(codes[0], codes[1])


def test_embedding_errors():
    emb = ClusterEmbedding(torch.nn.Linear(3, 2), latent_dim=2, in_features=3, skip_dim=3)
    with pytest.raises(RuntimeError, match="fit_skip"):
        emb(torch.randn(4, 3))
    with pytest.raises(ValueError, match="constant"):
        emb.fit_skip(torch.ones(10, 3))
    with pytest.raises(ValueError, match="learned_weight"):
        ClusterEmbedding(torch.nn.Linear(3, 2), 2, 3, 3, learned_weight=0.0)
    with pytest.raises(ValueError, match="in_features"):
        ClusterEmbedding(torch.nn.Linear(3, 2), 2, None, 3)
    assert math.isclose(ClusterEmbedding(torch.nn.Linear(3, 2), 2, 3, 10).dim, 5)
