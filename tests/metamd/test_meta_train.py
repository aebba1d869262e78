import math

import pytest
import torch

from lightning_papers.metamd import MirrorMap, meta_train, regret_bound, unrolled_regret_bound
from lightning_papers.metamd.meta_training import reference_solution
from lightning_papers.metamd.tasks import FunctionalTask, LeastSquaresSampler, make_sampler


def _eval_objective(m, tasks, T):
    with torch.no_grad():
        pass
    vals = [math.log(float(unrolled_regret_bound(m, t, T, 1.0, second_order=False)[0])) for t in tasks]
    return sum(vals) / len(vals)


def test_bound_is_minimised_by_newton_step_on_a_quadratic():
    """On f(x) = ½ λ x² with a linear map h(x) = d·x the bound is λΔ²/2·(c + c/(2c−1)), c = d/λ: minimum at d = λ."""
    lam = 4.0
    task = FunctionalTask(
        [torch.tensor([[1.0]], dtype=torch.float64)],
        lambda p: 0.5 * lam * (p[0] ** 2).sum(),
        reference=[torch.zeros(1, 1, dtype=torch.float64)],
    )
    vals = {}
    for d in (2.5, 3.0, 4.0, 6.0, 10.0):
        m = MirrorMap(num_terms=0, init_scale=d).double()
        vals[d] = float(unrolled_regret_bound(m, task, 200, 1.0)[0].detach()) * 200
        c = d / lam
        assert vals[d] == pytest.approx(lam / 2 * (c + c / (2 * c - 1)), rel=1e-6)
    assert min(vals, key=vals.get) == 4.0


def test_regret_bound_bounds_the_regret_on_a_convex_task():
    task = LeastSquaresSampler(dim=4, n=30).sample(3)
    task.reference = reference_solution(task, 500, 0.05)
    m = MirrorMap.from_values(d=3.0, beta=[1.0], gamma=[2.0])
    traj = [[p.detach().clone() for p in task.params]]
    for _ in range(10):
        th = [p.clone().requires_grad_(True) for p in traj[-1]]
        grads = torch.autograd.grad(task.loss(th), th)
        with torch.no_grad():
            traj.append([m.h_inverse(m.h(p) - 1.0 * g) for p, g in zip(th, grads)])
    b = float(regret_bound(m, traj, task.reference, 1.0))
    regret = sum(float(task.loss(p)) - float(task.loss(task.reference)) for p in traj[:-1]) / 10
    assert 0 <= regret <= b


def test_meta_training_reduces_the_objective(tmp_path):
    torch.manual_seed(0)
    sampler = LeastSquaresSampler(dim=6, n=40)
    held = [sampler.sample(10_000 + i) for i in range(3)]
    for t in held:
        t.reference = reference_solution(t, 300, 0.05)
    m = MirrorMap(
        num_slots=2, num_terms=1, assignment="kind", init_scale=30.0
    )  # far too small steps at start
    before = _eval_objective(m, held, 8)
    res = meta_train(
        sampler,
        m,
        meta_steps=12,
        tasks_per_step=2,
        unroll_steps=8,
        task_pool=6,
        meta_lr=0.1,
        reference_steps=200,
        reference_lr=0.05,
        progress=False,
        output=tmp_path / "map.pt",
    )
    after = _eval_objective(res.mirror_map, held, 8)
    assert after < before - 0.3
    assert res.history[-1]["objective"] < res.history[0]["objective"]
    assert MirrorMap.load(res.output).meta["meta_steps"] == 12


def test_checkpoint_resume_is_exact(tmp_path):
    sampler = LeastSquaresSampler(dim=3, n=20)
    kw = dict(
        tasks_per_step=1,
        unroll_steps=4,
        task_pool=3,
        reference_steps=50,
        meta_lr=0.05,
        progress=False,
        checkpoint_every=2,
    )
    full = meta_train(sampler, MirrorMap(num_terms=1, init_scale=5.0), meta_steps=4, **kw)
    part = meta_train(
        sampler, MirrorMap(num_terms=1, init_scale=5.0), meta_steps=2, checkpoint_dir=tmp_path, **kw
    )
    assert len(part.history) == 2
    resumed = meta_train(
        sampler, MirrorMap(num_terms=1, init_scale=5.0), meta_steps=4, checkpoint_dir=tmp_path, **kw
    )
    for a, b in zip(full.mirror_map.parameters(), resumed.mirror_map.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]


def test_meta_train_bad_arguments():
    sampler = LeastSquaresSampler()
    with pytest.raises(ValueError, match="meta_steps"):
        meta_train(sampler, meta_steps=0, progress=False)
    with pytest.raises(ValueError, match="objective"):
        meta_train(sampler, objective="validation", progress=False)
    with pytest.raises(ValueError, match="unknown task family"):
        make_sampler("imagenet")


def test_mlp_family_tasks_are_reproducible_and_use_the_split():
    a = make_sampler("mlp_digits").sample(5)
    b = make_sampler("mlp_digits").sample(5)
    assert all(torch.equal(x, y) for x, y in zip(a.params, b.params))
    assert float(a.loss(a.params)) == float(b.loss(b.params))
    c = make_sampler("mlp_digits", split_seed=1).sample(5)
    assert float(c.loss(c.params)) != float(a.loss(a.params))
    assert 0.0 <= a.evaluate(a.params)["test_acc"] <= 1.0
