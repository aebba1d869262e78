import math

import pytest
import torch
from torch import nn

from lightning_papers.metamd import AdaptiveMirrorMap, MetaMirrorDescent, MirrorMap, meta_train
from lightning_papers.metamd.adaptive import NUM_FEATURES, tensor_roles
from lightning_papers.metamd.adaptive_meta import adaptive_regret_bound, validation_score
from lightning_papers.metamd.adaptive_step import functional_adaptive_step
from lightning_papers.metamd.module_tasks import ModuleTaskSampler


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )  # fmt: skip


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)


def _train(model, opt, steps, sched=None):
    x, y = _data()
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        if sched is not None:
            sched.step()


def _constant_map(c: float, k: float = 0.0) -> AdaptiveMirrorMap:
    """A map whose factor is exp(c + k·s) everywhere (zero first layer, constant output)."""
    m = AdaptiveMirrorMap(agreement_bound=0.5 if k else 0.0)
    with torch.no_grad():
        m.w2.zero_()
        m.b2.copy_(torch.tensor([math.atanh(c / m.step_bound), math.atanh(k / 0.5) if k else 0.0]))
    return m


@pytest.mark.parametrize(
    "kw", [{}, {"weight_decay": 1e-2, "betas": (0.8, 0.99)}, {"maximize": True, "eps": 1e-6}]
)
def test_neutral_map_is_adam_on_a_cnn_for_100_steps(kw):
    a, b = _cnn(), _cnn()
    opt_a = torch.optim.Adam(a.parameters(), lr=3e-3, foreach=False, **kw)
    opt_b = MetaMirrorDescent(b.parameters(), lr=3e-3, mirror_map="adam", **kw)
    _train(a, opt_a, 100, torch.optim.lr_scheduler.StepLR(opt_a, 30, 0.5))
    _train(b, opt_b, 100, torch.optim.lr_scheduler.StepLR(opt_b, 30, 0.5))
    err = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert err <= 1e-6
    assert opt_b.state[next(b.parameters())]["step"].item() == 100.0


def test_fresh_adaptive_map_is_neutral_and_param_groups_work():
    assert AdaptiveMirrorMap().is_neutral()
    a, b = _cnn(), _cnn()

    def groups(m):
        return [{"params": m[0].parameters(), "lr": 1e-2}, {"params": m[5].parameters(), "weight_decay": 0.1}]

    opt_a = torch.optim.Adam(groups(a), lr=1e-3, foreach=False)
    opt_b = MetaMirrorDescent(groups(b), lr=1e-3, mirror_map=AdaptiveMirrorMap())
    _train(a, opt_a, 20)
    _train(b, opt_b, 20)
    assert all(torch.allclose(pa, pb, atol=1e-7, rtol=0) for pa, pb in zip(a.parameters(), b.parameters()))


def test_constant_factor_is_adam_with_a_scaled_lr():
    """A map with c ≡ 0.4, k ≡ 0 is Adam at lr·e^0.4 (an independent reference)."""
    a, b = _cnn(), _cnn()
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-3 * math.exp(0.4), foreach=False)
    opt_b = MetaMirrorDescent(b.parameters(), lr=1e-3, mirror_map=_constant_map(0.4))
    _train(a, opt_a, 10)
    _train(b, opt_b, 10)
    assert all(torch.allclose(pa, pb, atol=1e-6) for pa, pb in zip(a.parameters(), b.parameters()))


def test_agreement_factor_scales_each_coordinate():
    """With k ≡ 0.3 a coordinate whose gradient agrees with its momentum steps e^{0.3}·Adam's, else e^{-0.3}·Adam's."""
    p = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = MetaMirrorDescent([p], lr=0.1, mirror_map=_constant_map(0.0, 0.3))
    ref = nn.Parameter(p.detach().clone())
    adam = torch.optim.Adam([ref], lr=0.1, foreach=False)
    grads = [torch.tensor([1.0, 1.0, -1.0]), torch.tensor([2.0, -1.0, -0.5])]
    for g in grads:
        before = p.detach().clone()
        ref.data.copy_(before)
        p.grad, ref.grad = g.clone(), g.clone()
        first = not opt.state[p]
        m_old = torch.zeros(3) if first else opt.state[p]["exp_avg"].clone()
        opt.step()
        adam.step()
        s = torch.sign(g * m_old)
        fac = torch.ones(3) if first else torch.exp(0.3 * s)  # no agreement signal on the first step
        expect = before + (ref.detach() - before) * fac
        assert torch.allclose(p.detach(), expect, atol=1e-6)


def test_functional_step_matches_the_optimizer():
    m = AdaptiveMirrorMap()
    with torch.no_grad():
        m.w2.normal_(0, 0.7, generator=torch.Generator().manual_seed(0))
        m.b2.copy_(torch.tensor([0.3, -0.2]))
    net = _cnn()
    params = [p.detach().clone() for p in net.parameters()]
    mom = [torch.zeros_like(p) for p in params]
    sq = [torch.zeros_like(p) for p in params]
    opt = MetaMirrorDescent(net.parameters(), lr=1e-2, mirror_map=m)
    x, y = _data()
    roles = tensor_roles(params)
    names = [n for n, _ in net.named_parameters()]
    for t in range(1, 6):
        ps = [p.requires_grad_(True) for p in params]
        out = torch.func.functional_call(net, dict(zip(names, ps)), (x,))
        grads = torch.autograd.grad(nn.functional.cross_entropy(out, y), ps)
        params, mom, sq, _ = functional_adaptive_step(
            m, [p.detach() for p in ps], grads, mom, sq, t, roles, lr=1e-2
        )
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p, q in zip(params, net.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_adaptive_bound_bounds_the_linearised_regret():
    """On a convex quadratic: (1/T)·Σ⟨m̂_t, θ_t − θ*⟩ ≤ B, for a map that changes the metric over time."""
    h = torch.tensor([4.0, 0.5, 1.0])
    m = AdaptiveMirrorMap()
    with torch.no_grad():
        m.w2.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    theta = [torch.tensor([1.0, -2.0, 0.5])]
    mom, sq = [torch.zeros(3)], [torch.zeros(3)]
    traj, metrics, lin = [theta], [], 0.0
    for t in range(1, 16):
        g = [h * theta[0]]
        new, mom, sq, a = functional_adaptive_step(m, theta, g, mom, sq, t, [3], lr=0.1)
        mhat = mom[0] / (1 - 0.9**t)
        lin += float((mhat * theta[0]).sum())  # θ* = 0
        theta = new
        traj.append(theta)
        metrics.append(a)
    b = float(adaptive_regret_bound(traj, metrics, [torch.zeros(3)], lr=0.1))
    assert lin / 15 <= b + 1e-7 and b > 0


def _user_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, :3] * torch.tensor([2.0, -1.0, 0.5])).argmax(1)
    return net, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)


def test_meta_train_on_a_user_module_improves_held_out_tasks():
    """Starting from steps 2.7x too small (c = −1), meta-training on the user's model recovers speed on new tasks."""
    net, loader = _user_problem()
    sampler = ModuleTaskSampler(net, loader, "cross_entropy", n_examples=64, lr=1e-2)
    held = [sampler.sample(10_000 + i) for i in range(3)]
    start = _constant_map(-0.99)
    before = validation_score(start, held, 40)
    res = meta_train(
        net, start, data=loader, loss="cross_entropy", n_examples=64, lr=1e-2, meta_steps=8, tasks_per_step=3,
        unroll_steps=8, max_warm_start=10, meta_lr=0.1, task_pool=6, reference_steps=100, val_tasks=2,
        val_every=4, val_steps=40, progress=False,
    )  # fmt: skip
    after = validation_score(res.mirror_map, held, 40)
    assert before > 0.1  # the bad start is slower than Adam
    assert after < before - 0.1
    assert res.mirror_map.meta["family"] == "adaptive" and len(res.history) == 8


def test_lightning_module_tasks_use_its_training_step():
    from lightning_papers.models import MLP, Classifier

    torch.manual_seed(0)
    lm = Classifier(MLP(6, 3, hidden=(8,)))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    task = ModuleTaskSampler(lm, (x, y), n_examples=40).sample(3)
    fresh = ModuleTaskSampler(lm, (x, y), n_examples=40)._fresh(3)
    expect = nn.functional.cross_entropy(fresh(x), y)
    assert torch.allclose(task.loss(task.params), expect)
    ps = [p.clone().requires_grad_(True) for p in task.params]
    task.loss(ps).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ps)


def test_adaptive_meta_train_resume_is_exact(tmp_path):
    net, loader = _user_problem()
    kw = dict(
        data=loader, loss="cross_entropy", n_examples=32, lr=1e-2, tasks_per_step=2, unroll_steps=4,
        max_warm_start=3, meta_lr=0.05, task_pool=3, reference_steps=30, val_tasks=1, val_every=2,
        val_steps=10, progress=False, checkpoint_every=2,
    )  # fmt: skip
    full = meta_train(net, _constant_map(-0.5), meta_steps=4, **kw)
    part = meta_train(net, _constant_map(-0.5), meta_steps=2, checkpoint_dir=tmp_path, **kw)
    assert len(part.history) == 2
    resumed = meta_train(net, _constant_map(-0.5), meta_steps=4, checkpoint_dir=tmp_path, **kw)
    for a, b in zip(full.mirror_map.parameters(), resumed.mirror_map.parameters()):
        assert torch.equal(a, b)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.mirror_map.meta["selected_step"] == full.mirror_map.meta["selected_step"]


def test_adaptive_state_dict_roundtrip_resumes_identically(tmp_path):
    m = _constant_map(0.2, 0.3)
    a = _cnn()
    opt_a = MetaMirrorDescent(a.parameters(), lr=1e-2, mirror_map=m)
    _train(a, opt_a, 5)
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, tmp_path / "ck.pt")
    _train(a, opt_a, 5)
    b = _cnn(seed=3)
    opt_b = MetaMirrorDescent(b.parameters(), lr=0.5, mirror_map="identity")  # another family: restored
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    b.load_state_dict(ck["model"])
    opt_b.load_state_dict(ck["opt"])
    assert opt_b.adaptive and not opt_b.mirror_map.is_neutral()
    _train(b, opt_b, 5)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_bad_inputs_name_the_value(tmp_path):
    net = _cnn()
    with pytest.raises(ValueError, match=r"lr must be .* got -0\.1"):
        MetaMirrorDescent(net.parameters(), lr=-0.1)
    with pytest.raises(ValueError, match="betas"):
        MetaMirrorDescent(net.parameters(), betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="momentum=0.9"):
        MetaMirrorDescent(net.parameters(), momentum=0.9)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        MetaMirrorDescent(net.parameters(), mirror_map=str(tmp_path / "missing.pt"))
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="could not read mirror-map file .*corrupt.pt"):
        MetaMirrorDescent(net.parameters(), mirror_map=str(tmp_path / "corrupt.pt"))
    static = MirrorMap(num_terms=1).save(tmp_path / "static.pt")
    adaptive = AdaptiveMirrorMap().save(tmp_path / "adaptive.pt")
    with pytest.raises(ValueError, match="expected the adaptive family"):
        AdaptiveMirrorMap.load(static)
    with pytest.raises(ValueError, match="static family"):
        MirrorMap.load(adaptive)
    # both load by path through the optimizer, each as its own family
    assert MetaMirrorDescent(net.parameters(), mirror_map=str(adaptive)).adaptive
    assert not MetaMirrorDescent(net.parameters(), lr=1.0, mirror_map=str(static)).adaptive
    adam = torch.optim.Adam(net.parameters())
    nn.functional.cross_entropy(net(_data()[0]), _data()[1]).backward()
    adam.step()
    with pytest.raises(ValueError, match="param-group keys .*betas.*another optimizer class"):
        MetaMirrorDescent(net.parameters()).load_state_dict(adam.state_dict())


def test_sparse_gradients_are_refused_with_the_shape():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = MetaMirrorDescent(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"sparse gradient.*\(10, 3\)"):
        opt.step()


def test_coefficients_are_bounded():
    m = AdaptiveMirrorMap(step_bound=0.7, agreement_bound=0.2)
    with torch.no_grad():
        m.w2.fill_(50.0)
        m.b2.fill_(50.0)
    co = m.coefficients(torch.randn(20, NUM_FEATURES) * 10)
    assert co[:, 0].abs().max() <= 0.7 + 1e-6 and co[:, 1].abs().max() <= 0.2 + 1e-6
