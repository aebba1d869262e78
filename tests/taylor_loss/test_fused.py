"""The closed-form forward/backward of TaylorLoss against autograd through the reference formula."""

import pytest
import torch

from lightning_papers.taylor_loss import TaylorLoss
from lightning_papers.taylor_loss.fused import log_softmax, value_and_slope_matrix

PRESET = TaylorLoss().coefficients.tolist()


class AutogradTaylorLoss(TaylorLoss):
    """The same loss through ``label_losses`` and autograd (the fused path switched off): the reference."""

    def fused_loss(self, z, t, soft, plain):
        return None


def _data(n=9, c=4, dense=(), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, *dense, generator=g) * 2).to(dtype)
    target = torch.randint(0, c, (n, *dense), generator=g)
    probs = torch.softmax(torch.randn(n, c, *dense, generator=g), 1).to(dtype)
    weight = torch.rand(c, generator=g) + 0.2
    return logits, target, probs, weight


CASES = [
    ({}, "index"),
    ({"weight": True}, "index"),
    ({"ignore_index": 1}, "index"),
    ({"label_smoothing": 0.2}, "index"),
    ({"weight": True, "ignore_index": 2, "label_smoothing": 0.1}, "index"),
    ({}, "probs"),
    ({"weight": True, "label_smoothing": 0.3}, "probs"),
]


def _criteria(options, reduction, coefficients=PRESET, weight=None):
    kw = dict(options, reduction=reduction)
    if kw.get("weight"):
        kw["weight"] = weight
    return TaylorLoss(coefficients, **kw), AutogradTaylorLoss(coefficients, **kw)


def _target(options, kind, target, probs):
    if kind == "probs":
        return probs
    if "ignore_index" in options:
        target = target.clone()
        target.view(-1)[::3] = options["ignore_index"]
    return target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("options", "kind"), CASES, ids=lambda v: "+".join(v) if isinstance(v, dict) else v)
def test_gradcheck_float64(options, kind, reduction):
    logits, target, probs, weight = _data()
    fused, _ = _criteria(options, reduction, weight=weight)
    t = _target(options, kind, target, probs)
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fused(x, t), (z,), eps=1e-6, atol=1e-7, rtol=1e-5)
    if kind == "probs":  # the gradient w.r.t. probability targets, as nn.CrossEntropyLoss has one
        q = probs.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda p: fused(logits, p), (q,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dense", [(), (3, 2)], ids=["flat", "dense"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(("options", "kind"), CASES, ids=lambda v: "+".join(v) if isinstance(v, dict) else v)
def test_fused_equals_autograd_reference(options, kind, reduction, dense):
    logits, target, probs, weight = _data(n=7, c=5, dense=dense, dtype=torch.float32)
    t = _target(options, kind, target, probs)
    for coefficients in (PRESET, [1.0, 0.5, 1 / 3], [0.7]):  # the preset, CE's series, MAE (degree 1)
        fused, ref = _criteria(options, reduction, coefficients, weight)
        z1, z2 = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
        out1, out2 = fused(z1, t), ref(z2, t)
        torch.testing.assert_close(out1, out2, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(out1)  # a non-uniform upstream gradient for reduction="none"
        out1.backward(g)
        out2.backward(g)
        torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-4, atol=1e-6)


def test_fused_path_is_used_and_on_every_device_path():
    # the plain CPU path (validated: nothing ignored), the general one (validate=False) and the reference agree
    logits, target, _, _ = _data(n=64, c=10, dtype=torch.float32)  # numel >= 1024: the written-out log-softmax
    grads = []
    for crit in (TaylorLoss(), TaylorLoss(validate=False), AutogradTaylorLoss()):
        z = logits.clone().requires_grad_(True)
        out = crit(z, target)
        out.backward()
        grads.append(z.grad)
        name = type(out.grad_fn).__name__
        assert ("TaylorIndexLoss" in name) == (not isinstance(crit, AutogradTaylorLoss)), name
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grads[1], grads[2], rtol=1e-4, atol=1e-7)


def test_double_backward_raises_instead_of_being_silently_wrong():
    logits, target, _, _ = _data()
    z = logits.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(TaylorLoss()(z, target), z, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        g.sum().backward()


def test_coefficient_changes_reach_the_cached_matrices():
    logits, target, _, _ = _data(dtype=torch.float32)
    crit = TaylorLoss(coefficients=[1.0, 0.5])
    before = crit(logits, target)
    crit.load_state_dict(TaylorLoss(coefficients=[2.0, 1.0]).state_dict())  # in-place copy into the buffer
    torch.testing.assert_close(crit(logits, target), 2 * before)
    with torch.no_grad():
        crit.coefficients.mul_(0.5)  # in place, by hand
    torch.testing.assert_close(crit(logits, target), before)
    crit.double()  # a new buffer tensor
    torch.testing.assert_close(crit(logits.double(), target), before.double())


def test_no_subnormal_gradients_for_confident_predictions():
    # confident rows give logit gradients that underflow below the smallest normal float; they are flushed
    # to exactly 0 (they slow every later CPU kernel) and everything else is the reference gradient
    z = torch.tensor([[30.0, -60.0, 0.0], [-70.0, 10.0, 25.0], [1.0, 0.0, -1.0]])
    target = torch.tensor([0, 2, 1])
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    TaylorLoss()(z1, target).backward()
    AutogradTaylorLoss()(z2, target).backward()
    tiny = torch.finfo(torch.float32).tiny
    assert not ((z1.grad != 0) & (z1.grad.abs() < tiny)).any()
    assert ((z2.grad != 0) & (z2.grad.abs() < tiny)).any()  # the case is real: the reference has subnormals
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-5, atol=tiny)


@pytest.mark.parametrize("shape", [(5, 3), (300, 10), (64, 40), (2, 4, 6)])
def test_log_softmax_helper_matches_torch(shape):
    z = torch.randn(*shape) * 30
    torch.testing.assert_close(log_softmax(z), torch.log_softmax(z, -1), rtol=1e-6, atol=1e-5)


def test_value_and_slope_matrix_matches_the_polynomial():
    c = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=torch.float64)
    m, b = value_and_slope_matrix(c)
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    v = -u
    out = torch.stack([v**k for k in range(1, 5)], -1) @ m + b
    k = torch.arange(1, 5, dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], (c * u[:, None] ** k).sum(-1))
    torch.testing.assert_close(out[:, 1], (k * c * u[:, None] ** (k - 1)).sum(-1))
