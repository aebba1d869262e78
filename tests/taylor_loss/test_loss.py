"""Taylor loss and baseline criteria: values vs independent formulas, gradients, dtypes, errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_papers.taylor_loss import (
    GeneralizedCrossEntropy,
    MeanAbsoluteError,
    NCEandRCE,
    PolyLoss,
    SymmetricCrossEntropy,
    TaylorLoss,
    available_presets,
    ce_taylor_coefficients,
    load_preset,
    taylor_loss,
)


def _batch(n=16, c=10, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)


def _np_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_ce_taylor_series_approaches_cross_entropy():
    # keep p_y >= ~0.2 so the series converges quickly (u = 1 - p_y <= 0.8)
    logits, y = _batch(64, 5, scale=1.0)
    logits[torch.arange(64), y] += 3.0
    ce = F.cross_entropy(logits, y, reduction="none")
    errors = []
    for degree in (1, 2, 4, 8, 16, 32, 64):
        tl = taylor_loss(logits, y, ce_taylor_coefficients(degree), reduction="none")
        errors.append(float((tl - ce).abs().max()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.05 and errors[-1] < 1e-5
    # gradients converge too
    z = logits.clone().requires_grad_(True)
    g_ce = torch.autograd.grad(F.cross_entropy(z, y), z)[0]
    g_tl = torch.autograd.grad(TaylorLoss(preset="ce64")(z, y), z)[0]
    assert torch.allclose(g_tl, g_ce, atol=1e-5)


def test_degree_one_has_mae_gradient_direction():
    logits, y = _batch(32, 7)
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    TaylorLoss(coefficients=[1.0], reduction="sum")(z1, y).backward()
    MeanAbsoluteError(reduction="sum")(z2, y).backward()
    cos = F.cosine_similarity(z1.grad, z2.grad, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    assert torch.allclose(z2.grad, 2 * z1.grad, atol=1e-6)  # MAE = 2 (1 - p_y)


def test_taylor_matches_reference_formula_with_other_terms():
    logits, y = _batch(12, 6, seed=3)
    c, d = [0.7, -0.2, 0.3], [0.5, 0.25]
    p = _np_softmax(logits.numpy())
    ref = []
    for i, t in enumerate(y.tolist()):
        u = 1.0 - p[i, t]
        s = sum(p[i, j] ** 2 for j in range(6) if j != t)
        ref.append(
            sum(ck * u ** (k + 1) for k, ck in enumerate(c))
            + sum(dm * s ** (m + 1) for m, dm in enumerate(d))
        )
    got = TaylorLoss(coefficients=c, other_coefficients=d, reduction="none")(logits, y)
    np.testing.assert_allclose(got.numpy(), np.array(ref), rtol=1e-5, atol=1e-6)
    assert math.isclose(
        float(TaylorLoss(coefficients=c, other_coefficients=d)(logits, y)), float(np.mean(ref)), rel_tol=1e-5
    )
    assert math.isclose(
        float(TaylorLoss(coefficients=c, other_coefficients=d, reduction="sum")(logits, y)),
        float(np.sum(ref)),
        rel_tol=1e-5,
    )


def test_baselines_match_independent_formulas():
    logits, y = _batch(20, 10, scale=3.0, seed=1)
    p = _np_softmax(logits.numpy())
    py = p[np.arange(20), y.numpy()]
    onehot = np.eye(10)[y.numpy()]
    log_zero = np.log(1e-4)
    # MAE: sum |p - onehot|
    np.testing.assert_allclose(
        MeanAbsoluteError(reduction="none")(logits, y).numpy(), np.abs(p - onehot).sum(1), rtol=1e-5
    )
    # GCE: (1 - p_y^q)/q
    np.testing.assert_allclose(
        GeneralizedCrossEntropy(0.7, reduction="none")(logits, y).numpy(), (1 - py**0.7) / 0.7, rtol=1e-5
    )
    # RCE: -sum_j p_j log(clip(onehot, 1e-4, 1))
    rce = -(p * np.log(np.clip(onehot, 1e-4, 1.0))).sum(1)
    ce = -np.log(py)
    np.testing.assert_allclose(
        SymmetricCrossEntropy(0.1, 1.0, reduction="none")(logits, y).numpy(), 0.1 * ce + rce, rtol=1e-5
    )
    # NCE: -log p_y / -sum_j log p_j
    nce = np.log(py) / np.log(p).sum(1)
    np.testing.assert_allclose(NCEandRCE(1.0, 1.0, reduction="none")(logits, y).numpy(), nce + rce, rtol=1e-5)
    assert np.isclose(-log_zero * (1 - py[0]), rce[0])


ALL_CRITERIA = [
    lambda: TaylorLoss(),
    lambda: TaylorLoss(coefficients=[1.0, -0.5, 0.3], other_coefficients=[0.2]),
    lambda: TaylorLoss(preset="ce16"),
    lambda: MeanAbsoluteError(),
    lambda: GeneralizedCrossEntropy(),
    lambda: SymmetricCrossEntropy(),
    lambda: NCEandRCE(),
    lambda: PolyLoss(),
]


@pytest.mark.parametrize("make", ALL_CRITERIA)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_loss_and_gradients_for_extreme_logits(make, dtype):
    big = 6e4 if dtype == torch.float16 else 1e4
    logits = torch.tensor(
        [[big, -big, 0.0], [-big, big, 0.0], [big, big, -big], [0.0, 0.0, 0.0], [-big, -big, -big]],
        dtype=dtype,
    ).requires_grad_(True)
    y = torch.tensor([1, 1, 2, 0, 2])  # includes confidently wrong samples
    loss = make()(logits, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad.float()).all()


def test_low_precision_matches_float32():
    logits, y = _batch(32, 10)
    for crit in (TaylorLoss(), GeneralizedCrossEntropy(), NCEandRCE()):
        ref = crit(logits, y)
        assert torch.allclose(crit(logits.to(torch.bfloat16), y), ref, atol=2e-2)
        assert torch.allclose(crit(logits.half(), y), ref, atol=5e-3)


def test_dense_inputs_match_flattened():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=g)
    y = torch.randint(0, 5, (2, 3, 4), generator=g)
    crit = TaylorLoss(reduction="none")
    per = crit(logits, y)
    assert per.shape == (2, 3, 4)
    flat = crit(logits.movedim(1, -1).reshape(-1, 5), y.reshape(-1))
    assert torch.allclose(per.reshape(-1), flat)
    assert torch.allclose(
        GeneralizedCrossEntropy()(logits, y),
        GeneralizedCrossEntropy()(logits.movedim(1, -1).reshape(-1, 5), y.reshape(-1)),
    )


def test_default_preset_is_shipped_with_provenance():
    assert "robust" in available_presets()
    data = load_preset("robust")
    assert data["coefficients"] and "source" in data and "recipe" in data
    crit = TaylorLoss()
    assert crit.preset == "robust"
    assert torch.allclose(crit.coefficients, torch.tensor(data["coefficients"], dtype=torch.float32))
    assert "coefficients" in crit.state_dict()
    # the shipped loss must penalise the labelled class being unlikely: L(p_y≈0) > L(p_y≈1)
    y = torch.tensor([0, 0])
    per = TaylorLoss(reduction="none")(torch.tensor([[-20.0, 0.0, 0.0], [20.0, 0.0, 0.0]]), y)
    assert per[0] > per[1]


def test_preset_from_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("coefficients: [0.5, 0.25]\nother_coefficients: [0.1]\nsource: test\n")
    crit = TaylorLoss(preset=str(path))
    assert crit.coefficients.tolist() == [0.5, 0.25] and crit.other_coefficients.tolist() == pytest.approx(
        [0.1]
    )
    logits, y = _batch(4, 3)
    assert torch.allclose(crit(logits, y), taylor_loss(logits, y, [0.5, 0.25], [0.1]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("coefficients: [0.5, 0.25\n")  # an unclosed list
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML"):
        TaylorLoss(preset=str(broken))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: TaylorLoss(coefficients=[]), ValueError, "at least one coefficient"),
        (lambda: TaylorLoss(coefficients=[1.0, float("nan")]), ValueError, "finite"),
        (lambda: TaylorLoss(coefficients=[1.0], preset="ce2"), ValueError, "not both"),
        (lambda: TaylorLoss(preset="no_such_preset"), ValueError, "unknown Taylor-loss preset"),
        (lambda: TaylorLoss(preset="/nonexistent/x.yaml"), FileNotFoundError, "/nonexistent/x.yaml"),
        (lambda: TaylorLoss(coefficients=[float("inf")]), ValueError, "must be finite, got \\[inf\\]"),
        (lambda: TaylorLoss(coefficients=[0.0, 0.0]), ValueError, "all zero"),
        (lambda: TaylorLoss(reduction="avg"), ValueError, "reduction"),
        (lambda: GeneralizedCrossEntropy(q=0.0), ValueError, "q must be in"),
        (lambda: SymmetricCrossEntropy(alpha=0, beta=0), ValueError, "not both 0"),
        (lambda: ce_taylor_coefficients(0), ValueError, "positive integer"),
    ],
)
def test_bad_construction_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("crit", [TaylorLoss(coefficients=[1.0]), MeanAbsoluteError(), NCEandRCE()])
def test_bad_inputs_raise_clear_errors(crit):
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\].*got \[3\]"):
        crit(logits, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"target values must lie.*got \[-1\]"):
        crit(logits, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(ValueError, match="does not match input shape"):
        crit(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="probability target shape"):
        crit(logits, torch.tensor([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(TypeError, match="class indices"):
        crit(logits, torch.tensor([True, False, True, False]))
    with pytest.raises(ValueError, match="0-dim"):
        crit(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(TypeError, match="floating-point"):
        crit(torch.ones(4, 3, dtype=torch.long), torch.tensor([0, 1, 2, 0]))


