"""Benchmark of MetaMD (``lightning-papers bench metamd``): steps to a target training loss, test accuracy, step time.

Held-out tasks only: the shipped map was meta-trained on digits-MLP tasks drawn from split 0 with seeds
``0..pool``; here tasks come from split 1 of digits (other training examples, other inits) and from families
the map never saw (MNIST-1D MLPs, digits logistic regression). Baselines get their best learning rate from a
grid *chosen on these same held-out tasks* (favourable to the baselines); MetaMD runs at ``lr=1`` untuned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lightning_papers.bench.report import BenchReport, mean_std

FAMILIES = {  # name -> (sampler family, target training loss)
    "digits MLP (held-out split)": ("mlp_digits", 0.1),
    "MNIST-1D MLP (unseen family)": ("mlp_mnist1d", 0.1),
    "digits logistic reg. (unseen family)": ("logistic_digits", 0.2),
}
GRIDS = {
    "SGD": [0.03, 0.1, 0.3, 1.0, 3.0],
    "SGD+momentum 0.9": [0.003, 0.01, 0.03, 0.1, 0.3],
    "Adam": [0.001, 0.003, 0.01, 0.03, 0.1],
}
MD_GRID = [0.5, 1.0, 2.0, 4.0]


def _make(name: str, lr: float, mirror_map=None) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    from lightning_papers.metamd import MetaMirrorDescent

    if name == "SGD":
        return lambda p: torch.optim.SGD(p, lr=lr)
    if name == "SGD+momentum 0.9":
        return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9)
    if name == "Adam":
        return lambda p: torch.optim.Adam(p, lr=lr)
    if name.startswith("MetaMD"):
        mom = 0.9 if "momentum" in name else 0.0
        return lambda p: MetaMirrorDescent(p, lr=lr, mirror_map=mirror_map, momentum=mom)
    raise ValueError(name)


def run_task(task, make_opt, max_steps: int, target: float) -> dict[str, float]:
    """Train ``task`` full-batch; return steps to ``target`` training loss (inf if never), final loss, test acc."""
    params = [p.detach().clone().requires_grad_(True) for p in task.params]
    opt = make_opt(params)
    hit = math.inf
    loss_val = math.nan
    for step in range(max_steps):
        opt.zero_grad()
        loss = task.loss(params)
        loss_val = float(loss.detach())
        if not math.isfinite(loss_val):
            break
        if loss_val <= target and hit == math.inf:
            hit = step  # keep training: final loss and accuracy are measured at max_steps
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(task.loss(params))
    acc = task.evaluate(params)["test_acc"] if math.isfinite(final) else math.nan
    return {"steps": hit, "final_loss": final, "test_acc": acc}


def _summ(results: list[dict[str, float]], max_steps: int) -> tuple[float, float]:
    steps = np.array([r["steps"] for r in results], dtype=float)
    # unreached counts as max_steps+1 so a mean exists; the table says how many reached
    return float(np.mean(np.where(np.isfinite(steps), steps, max_steps + 1))), float(
        np.isfinite(steps).mean()
    )


def step_time(make_opt, task, n: int = 200) -> float:
    """Mean wall time of ``optimizer.step()`` (seconds) on ``task``'s parameters, after warm-up."""
    params = [p.detach().clone().requires_grad_(True) for p in task.params]
    opt = make_opt(params)
    loss = task.loss(params)
    loss.backward()
    for _ in range(10):
        opt.step()
    total = 0.0
    for _ in range(n):
        for p in params:  # fresh finite gradients each time without a forward pass
            p.grad.mul_(0.5)
        t0 = time.perf_counter()
        opt.step()
        total += time.perf_counter() - t0
    return total / n


def run(quick: bool = False, out_dir: Path | None = None, mirror_map=None) -> BenchReport:
    """Run the MetaMD benchmark (``quick``: 1 seed, fewer steps, two families)."""
    from lightning_papers.metamd import DEFAULT_PRESET, MirrorMap, make_sampler

    torch.manual_seed(0)
    mmap = mirror_map if mirror_map is not None else MirrorMap.from_preset(DEFAULT_PRESET)
    seeds = [900_001] if quick else [900_001, 900_002, 900_003]
    max_steps = 120 if quick else 300
    fams = dict(list(FAMILIES.items())[:2]) if quick else FAMILIES
    grids = {k: (v[1:4] if quick else v) for k, v in GRIDS.items()}
    rows: list[list] = []
    verdicts: dict[str, tuple[float, float, float, float]] = {}
    for fam_name, (fam, target) in fams.items():
        sampler = make_sampler(fam, split_seed=1)
        tasks = [sampler.sample(s) for s in seeds]
        best: dict[str, tuple[float, list[dict[str, float]]]] = {}
        for opt_name, grid in grids.items():
            scored = []
            for lr in grid:
                res = [run_task(t, _make(opt_name, lr), max_steps, target) for t in tasks]
                mean_steps, _ = _summ(res, max_steps)
                mean_loss = float(np.nanmean([r["final_loss"] for r in res]))
                scored.append((mean_steps, mean_loss if math.isfinite(mean_loss) else math.inf, lr, res))
            scored.sort(key=lambda s: (s[0], s[1]))
            best[opt_name] = (scored[0][2], scored[0][3])
        for name, lr in (("MetaMD (shipped map)", 1.0), ("MetaMD (shipped map) + momentum 0.9", 0.1)):
            best[name] = (lr, [run_task(t, _make(name, lr, mmap), max_steps, target) for t in tasks])
        # is the map's shape worth more than a learning rate? the same map with a tuned global scale
        scored = []
        for lr in MD_GRID[1:3] if quick else MD_GRID:
            res = [run_task(t, _make("MetaMD", lr, mmap), max_steps, target) for t in tasks]
            scored.append(
                (_summ(res, max_steps)[0], float(np.nanmean([r["final_loss"] for r in res])), lr, res)
            )
        scored.sort(key=lambda s: (s[0], s[1]))
        best["MetaMD (shipped map, lr tuned)"] = (scored[0][2], scored[0][3])
        for opt_name, (lr, res) in best.items():
            mean_steps, reached = _summ(res, max_steps)
            rows.append(
                [
                    fam_name,
                    opt_name,
                    lr,
                    mean_steps,
                    f"{reached:.0%}",
                    mean_std([r["final_loss"] for r in res], 4),
                    mean_std([r["test_acc"] for r in res], 3),
                ]
            )
        a_steps, _ = _summ(best["Adam"][1], max_steps)
        m_steps, _ = _summ(best["MetaMD (shipped map)"][1], max_steps)
        a_acc = float(np.mean([r["test_acc"] for r in best["Adam"][1]]))
        m_acc = float(np.mean([r["test_acc"] for r in best["MetaMD (shipped map)"][1]]))
        verdicts[fam_name] = (m_steps, a_steps, m_acc, a_acc)

    # optimizer step time on a digits MLP with two hidden layers of 64
    from lightning_papers.metamd.tasks import MLPSampler

    ttask = MLPSampler("digits", hidden_choices=[(64, 64)], split_seed=1).sample(seeds[0])
    n_time = 100 if quick else 300
    t_adam = step_time(_make("Adam", 1e-3), ttask, n_time)
    t_md = step_time(_make("MetaMD", 1.0, mmap), ttask, n_time)
    t_sgd = step_time(_make("SGD", 0.1), ttask, n_time)
    ratio = t_md / t_adam

    ok_fams = [f for f, (ms, as_, macc, aacc) in verdicts.items() if ms <= 0.7 * as_ and macc >= aacc - 0.005]
    goal = bool(len(ok_fams) == len(verdicts) and ratio <= 1.5)
    lines = [
        f"- {f}: MetaMD {ms:.1f} steps vs Adam {as_:.1f} (ratio {ms / as_:.2f}; goal ≤ 0.70), test acc "
        f"{macc:.3f} vs {aacc:.3f}"
        for f, (ms, as_, macc, aacc) in verdicts.items()
    ]
    meta = dict(mmap.meta)
    notes = "\n".join(
        [
            f"Full-batch training for {max_steps} steps on {len(seeds)} held-out task(s) per family (seeds {seeds}); "
            "`steps to target` = first step whose training loss is ≤ the family's target "
            f"({', '.join(f'{k}: {v[1]}' for k, v in fams.items())}); unreached runs count as {max_steps + 1}. "
            "Test accuracy after the last step on held-out examples. Baselines: best learning rate from the grid "
            f"{grids} chosen on these same tasks (favourable to the baselines). MetaMD: the shipped map "
            f"`{DEFAULT_PRESET}` at lr=1 (no tuning); meta-trained on digits-MLP tasks of split 0 "
            f"(meta: objective={meta.get('objective')}, meta_steps={meta.get('meta_steps')}, "
            f"unroll_steps={meta.get('unroll_steps')}).",
            "",
            f"Optimizer step time (`optimizer.step()` only, MLP 64-64-64-10, one CPU thread): Adam "
            f"{t_adam * 1e6:.0f} µs, SGD {t_sgd * 1e6:.0f} µs, MetaMD {t_md * 1e6:.0f} µs → ratio to Adam "
            f"**{ratio:.2f}x** (goal ≤ 1.5x).",
            "",
            "Goal (issue 5): MetaMD reaches the target in ≤ 0.7x Adam's steps at equal or better test accuracy, "
            "step-time ratio ≤ 1.5x.",
            *lines,
            "",
            f"**Verdict: goal {'met' if goal else 'NOT met'}.** "
            + (
                ""
                if goal
                else "Adam at its tuned learning rate normalises every coordinate's gradient; an elementwise "
                "mirror map of the parameter value (even meta-learned per layer role) rescales steps by layer and by "
                "weight magnitude but cannot adapt to per-coordinate gradient scales."
            ),
            "",
            "Paper (Gao et al., 2022) reports faster convergence than Adam/SGD on its own benchmarks; not reproduced "
            "here (different tasks and a reconstructed design, see the method card's deviations).",
        ]
    )
    first = next(iter(verdicts.values()))
    headline = (
        f"steps-to-target {first[0]:.0f} vs Adam {first[1]:.0f} (digits MLP held-out), "
        f"step time {ratio:.2f}x Adam"
    )
    return BenchReport(
        name="metamd",
        title="MetaMD vs SGD / SGD+momentum / Adam (best lr each) on held-out tasks",
        columns=[
            "task family",
            "optimizer",
            "lr",
            "steps to target (mean)",
            "reached",
            "final train loss",
            "test acc",
        ],
        rows=rows,
        notes=notes,
        headline=headline,
        goal_met=goal,
    )
