import copy

import pytest
import torch
from torch import nn

from lightning_papers.metamd import MetaMirrorDescent, MirrorMap


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def _train(model, opt, steps=15, sched=None, clip=None):
    x, y = _data()
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            return loss

        opt.step(closure)
        if sched is not None:
            sched.step()


def _nonlinear_map():
    return MirrorMap.from_values(
        d=[2.0, 1.0], beta=[[0.5, 0.3], [0.2, 0.1]], gamma=[[2.0, 10.0], [1.0, 5.0]], assignment="kind"
    )


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        {"momentum": 0.5, "dampening": 0.1, "maximize": True},
    ],
)
def test_identity_map_equals_sgd_bit_for_bit(kw):
    a, b = _model(), _model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, foreach=False, **kw)
    opt_b = MetaMirrorDescent(b.parameters(), lr=0.1, mirror_map="identity", **kw)
    sa = torch.optim.lr_scheduler.StepLR(opt_a, 5, 0.5)
    sb = torch.optim.lr_scheduler.StepLR(opt_b, 5, 0.5)
    _train(a, opt_a, sched=sa, clip=1.0)
    _train(b, opt_b, sched=sb, clip=1.0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert torch.equal(
        opt_a.state[next(a.parameters())].get("momentum_buffer", torch.zeros(1)),
        opt_b.state[next(b.parameters())].get("momentum_buffer", torch.zeros(1)),
    )


def test_identity_map_equals_sgd_with_param_groups():
    a, b = _model(), _model()

    def groups(m):
        return [{"params": m[0].parameters(), "lr": 0.05}, {"params": m[2].parameters(), "momentum": 0.9}]

    opt_a = torch.optim.SGD(groups(a), lr=0.2, foreach=False)
    opt_b = MetaMirrorDescent(groups(b), lr=0.2, mirror_map=MirrorMap.identity())
    _train(a, opt_a)
    _train(b, opt_b)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_mirror_step_matches_definition():
    model = _model()
    m = _nonlinear_map()
    opt = MetaMirrorDescent(model.parameters(), lr=0.3, mirror_map=m)
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        s = 0 if p.dim() >= 2 else 1
        with torch.no_grad():
            expect = m.double().h_inverse(m.double().h(p0.double(), s) - 0.3 * g.double(), s)
            m.float()
        assert torch.allclose(p.double(), expect, atol=1e-6)
        # a mirror step is not an SGD step
        assert not torch.allclose(p, p0 - 0.3 * g, atol=1e-6)


def test_mirror_descent_reduces_loss():
    model = _model()
    opt = MetaMirrorDescent(model.parameters(), lr=3.0, mirror_map=_nonlinear_map())
    x, y = _data()
    first = nn.functional.cross_entropy(model(x), y).item()
    _train(model, opt, steps=60)
    assert nn.functional.cross_entropy(model(x), y).item() < 0.7 * first


def test_state_dict_roundtrip_resumes_identically(tmp_path):
    a = _model()
    opt_a = MetaMirrorDescent(a.parameters(), lr=0.2, momentum=0.9, mirror_map=_nonlinear_map())
    _train(a, opt_a, steps=5)
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, tmp_path / "ck.pt")
    _train(a, opt_a, steps=5)

    b = _model(seed=3)
    opt_b = MetaMirrorDescent(b.parameters(), lr=0.7, mirror_map="identity")  # different map and lr: restored
    ck = torch.load(tmp_path / "ck.pt", weights_only=False)
    b.load_state_dict(ck["model"])
    opt_b.load_state_dict(ck["opt"])
    assert opt_b.param_groups[0]["lr"] == 0.2 and not opt_b.mirror_map.is_linear(0)
    _train(b, opt_b, steps=5)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_zero_grad_and_params_without_grad():
    model = _model()
    opt = MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=_nonlinear_map())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()  # no gradients yet: nothing moves
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="lr must be"):
        MetaMirrorDescent(model.parameters(), lr=0.0, mirror_map="identity")
    with pytest.raises(ValueError, match="lr must be"):
        MetaMirrorDescent(model.parameters(), lr=-1.0, mirror_map="identity")
    with pytest.raises(ValueError, match="momentum"):
        MetaMirrorDescent(model.parameters(), lr=0.1, momentum=-0.1, mirror_map="identity")
    with pytest.raises(ValueError, match="unknown mirror-map preset"):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map="no_such_map")
    with pytest.raises(FileNotFoundError):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=str(tmp_path / "missing.pt"))
    with pytest.raises(TypeError, match="mirror_map"):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=3.0)
    # a per-tensor map whose number of slots does not fit the model
    with pytest.raises(ValueError, match="per-tensor slots"):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=MirrorMap(num_slots=3, assignment="tensor"))
    with pytest.raises(ValueError, match="per-group slots"):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=MirrorMap(num_slots=2, assignment="group"))
    # a non-monotone map (e.g. edited coefficients) is refused
    bad = MirrorMap(num_terms=1)
    with torch.no_grad():
        bad.beta.fill_(-5.0)
        bad.log_d.fill_(float("-inf"))
    with pytest.raises(ValueError, match="strictly increasing|non-finite"):
        MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map=bad)


def test_map_from_file_path(tmp_path):
    path = _nonlinear_map().save(tmp_path / "m.pt")
    opt = MetaMirrorDescent(_model().parameters(), lr=0.1, mirror_map=str(path))
    assert opt.mirror_map.assignment == "kind"
    opt2 = copy.deepcopy(opt)
    assert opt2.mirror_map is not opt.mirror_map


def test_cached_dual_iterate_is_invalidated_by_external_edits():
    """The cached h(θ) is reused only while θ is untouched; an in-place edit of θ forces a fresh h(θ)."""
    a = _model()
    opt = MetaMirrorDescent(a.parameters(), lr=0.5, mirror_map=_nonlinear_map())
    _train(a, opt, steps=3)
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(0.5)  # e.g. a user's weight rescaling between steps
    b = copy.deepcopy(a)
    fresh = MetaMirrorDescent(b.parameters(), lr=0.5, mirror_map=_nonlinear_map())  # no cached state
    _train(a, opt, steps=1)
    _train(b, fresh, steps=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    # and the cached dual is h(θ) of the current parameters
    m = opt.mirror_map
    for p in a.parameters():
        s = 0 if p.dim() >= 2 else 1
        assert torch.allclose(opt.state[p]["dual"], m.h(p.detach(), s), atol=1e-5)


@pytest.mark.parametrize("variant", ["fused", "bracketed_fallback", "per_slot_large_model_path"])
def test_all_solver_paths_give_the_mirror_step(variant, monkeypatch):
    import lightning_papers.metamd.optimizer as optmod

    model = _model()
    m = _nonlinear_map()
    kw = {"max_newton_iter": 1} if variant == "bracketed_fallback" else {}
    if variant == "per_slot_large_model_path":
        monkeypatch.setattr(optmod, "FUSED_MAX_NUMEL", 0)
    opt = MetaMirrorDescent(
        model.parameters(), lr=5.0, mirror_map=m, **kw
    )  # big steps: Newton needs > 1 iteration
    x, y = _data()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = [p.detach().clone() for p in model.parameters()]
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        m64 = copy.deepcopy(m).double()
        for p, p0, g in zip(model.parameters(), before, grads):
            s = 0 if p.dim() >= 2 else 1
            expect = m64.h_inverse(m64.h(p0.double(), s) - 5.0 * g.double(), s)
            assert torch.allclose(p.double(), expect, atol=2e-5)


@pytest.mark.parametrize("preset", ["adaptive_mix", "digits_mlp"])
def test_state_of_other_parameter_shapes_is_refused_before_anything_changes(preset):
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 2, generator=gen))
    saved = MetaMirrorDescent([a], lr=0.1, mirror_map=preset)
    a.grad = torch.ones(3, 2)
    saved.step()
    b = torch.nn.Parameter(torch.randn(5, generator=gen))
    target = MetaMirrorDescent([b], lr=0.1, mirror_map=preset)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"does not fit these parameters.*parameter 0: \w+ \(3, 2\) vs parameter \(5,\)"):
        target.load_state_dict(saved.state_dict())
    assert target.state_dict()["state"] == before["state"]  # refused before anything was loaded
