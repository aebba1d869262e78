"""The nn.CrossEntropyLoss interface of every criterion: options vs torch's CE as reference, no host sync, compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_papers.taylor_loss import (
    GeneralizedCrossEntropy,
    MeanAbsoluteError,
    NCEandRCE,
    PolyLoss,
    SymmetricCrossEntropy,
    TaylorLoss,
)


def _data(n=12, c=5, seed=0, dense=()):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, *dense, generator=g) * 2
    target = torch.randint(0, c, (n, *dense), generator=g)
    probs = torch.softmax(torch.randn(n, c, *dense, generator=g), 1)
    weight = torch.rand(c, generator=g) + 0.1
    return logits, target, probs, weight


OPTIONS = [
    {},
    {"weight": True},
    {"ignore_index": 2},
    {"label_smoothing": 0.2},
    {"weight": True, "ignore_index": 1, "label_smoothing": 0.3},
]


@pytest.mark.parametrize("dense", [(), (3, 2)], ids=["flat", "dense"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_ce_shaped_criterion_equals_torch_cross_entropy(options, reduction, dense):
    # PolyLoss(epsilon=0) and SCE(alpha=1, beta=0) are CE through our machinery: every option must match torch's
    logits, target, probs, weight = _data(dense=dense)
    kw = dict(options, reduction=reduction)
    if kw.get("weight"):
        kw["weight"] = weight
    if "ignore_index" in kw:  # make sure some targets are ignored
        target = target.clone()
        target.view(-1)[::3] = kw["ignore_index"]
    ref = nn.CrossEntropyLoss(**kw)
    for ours in (PolyLoss(0.0, **kw), SymmetricCrossEntropy(1.0, 0.0, **kw)):
        torch.testing.assert_close(ours(logits, target), ref(logits, target), rtol=1e-5, atol=1e-6)
        if "ignore_index" not in kw:  # torch has no ignore_index for probability targets
            torch.testing.assert_close(ours(logits, probs), ref(logits, probs), rtol=1e-5, atol=1e-6)


def test_unbatched_input_like_cross_entropy():
    z, y = torch.randn(6), torch.tensor(4)
    torch.testing.assert_close(PolyLoss(0.0)(z, y), F.cross_entropy(z, y))
    assert TaylorLoss(reduction="none")(z, y).shape == ()


CRITERIA = {
    "taylor": lambda **kw: TaylorLoss(coefficients=[0.8, -0.3, 0.5], other_coefficients=[0.2], **kw),
    "taylor-preset": lambda **kw: TaylorLoss(**kw),
    "mae": lambda **kw: MeanAbsoluteError(**kw),
    "gce": lambda **kw: GeneralizedCrossEntropy(0.7, **kw),
    "nce+rce": lambda **kw: NCEandRCE(**kw),
    "poly1": lambda **kw: PolyLoss(1.0, **kw),
}


@pytest.mark.parametrize("name", CRITERIA)
def test_option_semantics_for_every_criterion(name):
    make = CRITERIA[name]
    logits, target, probs, weight = _data(n=16, c=5, seed=1)
    per = make(reduction="none")(logits, target)
    # weight: the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}
    torch.testing.assert_close(make(weight=weight)(logits, target), (weight[target] * per).sum() / weight[target].sum())
    # ignored targets contribute 0 and leave the mean's denominator
    t = target.clone()
    t[::4] = -100
    keep = t != -100
    torch.testing.assert_close(make()(logits, t), per[keep].mean())
    assert (make(reduction="none")(logits, t)[~keep] == 0).all()
    # one-hot probabilities equal class indices
    onehot = F.one_hot(target, 5).float()
    torch.testing.assert_close(make(reduction="none")(logits, onehot), per, rtol=1e-5, atol=1e-6)
    # label smoothing eps equals the probability target (1 - eps) onehot + eps / C
    eps = 0.25
    torch.testing.assert_close(
        make(label_smoothing=eps)(logits, target), make()(logits, onehot * (1 - eps) + eps / 5), rtol=1e-5, atol=1e-6
    )
    # soft targets are the expectation of the per-class losses
    every = torch.stack([make(reduction="none")(logits, torch.full_like(target, j)) for j in range(5)], 1)
    torch.testing.assert_close(make(reduction="none")(logits, probs), (probs * every).sum(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("classes", [5, 100])
def test_ignore_index_with_weights_and_empty_means_follow_torch(classes):
    logits, target, _, _ = _data(n=20, c=classes, seed=3)
    weight = torch.rand(classes) + 0.1
    target[::5] = -1
    for kw in ({}, {"weight": weight}, {"reduction": "none"}, {"reduction": "sum", "weight": weight}):
        torch.testing.assert_close(PolyLoss(0.0, ignore_index=-1, **kw)(logits, target),
                                   F.cross_entropy(logits, target, ignore_index=-1, **kw), rtol=1e-5, atol=1e-6)
    per = TaylorLoss(reduction="none", ignore_index=-1)(logits, target)
    torch.testing.assert_close(TaylorLoss(ignore_index=-1)(logits, target), per[target != -1].mean())
    everything_ignored = torch.full((4,), -100)
    assert torch.isnan(TaylorLoss()(logits[:4], everything_ignored))  # NaN like F.cross_entropy
    assert torch.isnan(F.cross_entropy(logits[:4], everything_ignored))


@pytest.mark.parametrize("name", CRITERIA)
def test_forward_never_reads_device_values(name):
    # meta tensors have no data: any .item()/.tolist()/bool() (a host-device sync on a GPU) raises
    crit = CRITERIA[name](weight=torch.ones(5), label_smoothing=0.1).to("meta")
    z = torch.randn(8, 5, device="meta", requires_grad=True)
    out = crit(z, torch.randint(0, 5, (8,), device="meta"))
    out.backward()
    assert out.device.type == "meta" and z.grad.shape == z.shape
    crit(z, torch.rand(8, 5, device="meta"))  # probability targets too
    with pytest.raises((RuntimeError, NotImplementedError)):  # the opt-in validation is what would sync
        CRITERIA[name](validate=True).to("meta")(z, torch.randint(0, 5, (8,), device="meta"))


def test_compiles_as_one_graph_and_matches_eager():
    torch._dynamo.reset()
    crit = TaylorLoss(weight=torch.rand(5) + 0.5, ignore_index=0, label_smoothing=0.1)
    compiled = torch.compile(crit, fullgraph=True, backend="eager")  # fullgraph: fails on any graph break
    logits, target, probs, _ = _data()
    torch.testing.assert_close(compiled(logits, target), crit(logits, target))
    torch.testing.assert_close(compiled(logits, probs), crit(logits, probs))


def test_validation_flag():
    z = torch.randn(4, 3)
    bad = torch.tensor([0, 1, 7, -100])
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\].*got \[7\]"):
        TaylorLoss()(z, bad)  # CPU tensors: validated by default (no sync needed)
    assert torch.isfinite(TaylorLoss()(z, torch.tensor([0, 1, 2, -100])))  # ignore_index is respected
    with pytest.raises(ValueError, match="ignore_index=5"):
        TaylorLoss(ignore_index=5)(z, torch.tensor([0, -1, 5, 1]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        TaylorLoss()(z, torch.tensor([[0.5, 0.5, float("nan")]] * 4))
    with pytest.raises((RuntimeError, IndexError)):  # validate=False skips our check; gather then fails itself
        TaylorLoss(validate=False)(z, bad)


def test_low_precision_inputs_are_computed_in_float32():
    logits, target, probs, weight = _data(n=32, c=10)
    crit = TaylorLoss(weight=torch.rand(10) + 0.5, label_smoothing=0.1)
    ref = crit(logits, target)
    for dtype, tol in ((torch.float16, 5e-3), (torch.bfloat16, 2e-2)):
        z = logits.to(dtype).requires_grad_(True)
        out = crit(z, target)
        out.backward()
        assert out.dtype == torch.float32 and z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()
        torch.testing.assert_close(out, ref, atol=tol, rtol=0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: TaylorLoss(weight=[1.0, 2.0])(torch.randn(2, 3), torch.tensor([0, 1])), "weight has 2 entries"),
        (lambda: TaylorLoss(weight=[1.0, -1.0]), "finite and >= 0"),
        (lambda: TaylorLoss(label_smoothing=1.5), "label_smoothing"),
        (lambda: TaylorLoss()(torch.randn(2, 3), torch.rand(2, 4)), "probability target shape"),
        (lambda: TaylorLoss()(torch.randn(2, 3), torch.tensor([0, 1, 2])), "does not match input shape"),
        (lambda: PolyLoss(epsilon=-2.0), "epsilon"),
    ],
)
def test_bad_options_and_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call()
