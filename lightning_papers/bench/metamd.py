"""Benchmark of MetaMD (``lightning-papers bench metamd``): steps to a target training loss, test metrics, step time.

Tasks are full-batch problems never used in meta-training: held-out tasks of the meta-training families
(other data halves, other inits: split 1 / second text half, seeds 900 001+) and families the shipped map
never saw (a deeper CNN with pooling, a 2-block transformer LM on standard-library source, a badly scaled
least-squares model). Baselines get their best learning rate from a grid *chosen on these same tasks*
(favourable to them); Adam also gets a tuned warmup-cosine schedule. MetaMD runs the shipped map at Adam's
best grid lr (no tuning of its own). Every optimizer is also run at its defaults (lr 1e-3).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lightning_papers.bench.report import BenchReport, mean_std

__all__ = ["run", "run_task", "step_time"]

#: name -> (family, target training loss, seen in meta-training?)
FAMILIES: dict[str, tuple[str, float, bool]] = {
    "digits MLP": ("mlp_digits", 0.01, True),
    "MNIST-1D CNN": ("cnn_mnist1d", 0.05, True),
    "digits logistic reg.": ("logistic_digits", 0.2, True),
    "tiny LM, CPython docs": ("lm_pydoc", 1.0, True),
    "deep CNN + pooling (unseen)": ("cnn_deep_digits", 0.05, False),
    "2-block transformer LM, stdlib source (unseen)": ("lm_stdlib", 1.0, False),
    "badly scaled least squares (unseen)": ("lsq_bad", 0.01, False),
}
QUICK_FAMILIES = ("digits MLP", "badly scaled least squares (unseen)")
ADAM_GRID = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
GRIDS = {
    "SGD": [0.01, 0.1, 0.3, 1.0],
    "SGD+momentum 0.9": [0.003, 0.01, 0.03, 0.1],
    "Adam": ADAM_GRID,
}
WARMUPS = [0.0, 0.1]
DEFAULTS = ["SGD", "SGD+momentum 0.9", "Adam", "MetaMD"]


@lru_cache(maxsize=8)
def _task(fam: str, seed: int):
    from lightning_papers.metamd import LeastSquaresSampler, make_sampler

    if fam == "lsq_bad":
        return LeastSquaresSampler(dim=20, n=200, scale_range=(0.01, 10.0)).sample(seed)
    return make_sampler(fam, split_seed=1).sample(seed)


def _make(name: str, lr: float, max_steps: int, warmup: float = 0.0) -> Callable:
    from lightning_papers.metamd import MetaMirrorDescent

    if name == "SGD":
        return lambda p: (torch.optim.SGD(p, lr=lr), None)
    if name == "SGD+momentum 0.9":
        return lambda p: (torch.optim.SGD(p, lr=lr, momentum=0.9), None)
    if name == "Adam":
        return lambda p: (torch.optim.Adam(p, lr=lr), None)
    if name == "Adam+warmup-cosine":

        def make(p):
            opt = torch.optim.Adam(p, lr=lr)
            w = max(1, int(warmup * max_steps))

            def factor(t: int) -> float:  # linear warmup, cosine decay to 0 at max_steps
                if t < w and warmup > 0:
                    return (t + 1) / w
                frac = (t - (w if warmup > 0 else 0)) / max(1, max_steps - (w if warmup > 0 else 0))
                return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

            return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

        return make
    if name == "MetaMD":
        return lambda p: (MetaMirrorDescent(p, lr=lr), None)
    raise ValueError(name)


def run_task(task, make_opt, max_steps: int, target: float) -> dict[str, float]:
    """Train ``task`` full-batch; steps to ``target`` training loss (inf if never), final loss, test metric."""
    params = [p.detach().clone().requires_grad_(True) for p in task.params]
    opt, sched = make_opt(params)
    hit, loss_val = math.inf, math.nan
    for step in range(max_steps):
        opt.zero_grad()
        loss = task.loss(params)
        loss_val = float(loss.detach())
        if not math.isfinite(loss_val):
            break
        if loss_val <= target and hit == math.inf:
            hit = step  # keep training: the final loss and test metric are measured at max_steps
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    with torch.no_grad():
        final = float(task.loss(params))
    ev = task.evaluate(params) if (task.evaluate is not None and math.isfinite(final)) else {}
    test = ev.get("test_acc", ev.get("test_loss", math.nan))
    return {"steps": hit, "final_loss": final if math.isfinite(final) else math.inf, "test": test}


def _job(args) -> dict[str, float]:
    fam, seed, name, lr, warmup, max_steps, target = args
    torch.set_num_threads(1)
    return run_task(_task(fam, seed), _make(name, lr, max_steps, warmup), max_steps, target)


def _summ(res: list[dict[str, float]], max_steps: int) -> tuple[float, float, float]:
    steps = np.array([r["steps"] for r in res], dtype=float)
    mean = float(np.mean(np.where(np.isfinite(steps), steps, max_steps + 1)))
    loss = float(np.mean([r["final_loss"] for r in res]))
    return mean, float(np.isfinite(steps).mean()), loss


def step_time(make_opt, n: int = 40, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean ``optimizer.step()`` time (s) on a 1.3M-parameter MLP, one thread."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(1024, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1024), torch.nn.ReLU(),
        torch.nn.Linear(1024, 256),
    )  # fmt: skip
    net(torch.randn(8, 1024)).square().mean().backward()
    opt, _ = make_opt(list(net.parameters()))
    for _ in range(5):
        opt.step()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            opt.step()
        out.append((time.perf_counter() - t0) / n)
    return float(np.median(out))


#: What was tried when the step-count goals were missed (the meta-training experiments behind the shipped map;
#: the method card has the details).
WHY_SHORT = (
    "What was tried, and why the step-count goals can fall short: the paper's meta-objective (the adaptive "
    "mirror-descent regret bound) drifts on these non-convex tasks. Anchored on one Adam solution it makes Adam "
    "itself the minimiser; re-anchored per unrolled window, its validation score improved for a few meta-steps and "
    "then drifted to ever larger steps. The shipped map is therefore meta-trained on the unrolled log training loss "
    "and selected on validation tasks. What it learned is mostly per-layer step multipliers and a gradient-agreement "
    "gain, i.e. a learned per-layer step-size schedule; Adam with a tuned warmup-cosine schedule captures much of "
    "that. The meta-training budget was small (tens of meta-steps of a few tasks, minutes on a CPU) and its best "
    "validation score came at its last evaluation, so a longer meta-training run over more architectures is the "
    "next thing to try."
)


def run(quick: bool = False, out_dir: Path | None = None, workers: int | None = None) -> BenchReport:
    """Run the MetaMD benchmark (``quick``: 1 seed, 100 steps, two families, smaller grids)."""
    from lightning_papers.metamd import DEFAULT_PRESET, resolve_mirror_map

    torch.set_num_threads(1)
    seeds = [900_001] if quick else [900_001, 900_002, 900_003]
    max_steps = 100 if quick else 200
    fams = {k: FAMILIES[k] for k in QUICK_FAMILIES} if quick else FAMILIES
    grids = {k: (v[1:4] if quick else v) for k, v in GRIDS.items()}
    workers = workers or min(2, os.cpu_count() or 1)

    def jobs(name, lr, warmup, fam, target):
        return [(fam, s, name, lr, warmup, max_steps, target) for s in seeds]

    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked OpenMP state
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:

        def run_all(specs: list[tuple]) -> list[list[dict[str, float]]]:
            flat = [j for spec in specs for j in jobs(*spec)]
            out = list(pool.map(_job, flat))
            k = len(seeds)
            return [out[i * k : (i + 1) * k] for i in range(len(specs))]

        # stage 1: every grid point of the lr-only baselines, and the defaults
        specs = []
        for fam, target, _ in fams.values():
            for name, grid in grids.items():
                specs += [(name, lr, 0.0, fam, target) for lr in grid]
            specs += [(d, 1e-3, 0.0, fam, target) for d in DEFAULTS]
        res1 = dict(zip(specs, run_all(specs)))
        best: dict[str, dict[str, tuple[float, list]]] = {}
        for fam_name, (fam, target, _) in fams.items():
            best[fam_name] = {}
            for name, grid in grids.items():
                scored = [(_summ(res1[(name, lr, 0.0, fam, target)], max_steps), lr) for lr in grid]
                _, lr = min(scored, key=lambda z: (z[0][0], z[0][2]))
                best[fam_name][name] = (lr, res1[(name, lr, 0.0, fam, target)])
        # stage 2: Adam+warmup-cosine around Adam's best lr, MetaMD at Adam's best lr
        specs2 = []
        for fam_name, (fam, target, _) in fams.items():
            a_lr = best[fam_name]["Adam"][0]
            i = ADAM_GRID.index(a_lr)
            lrs = ADAM_GRID[max(0, i - 1) : i + 2] if not quick else [a_lr]
            specs2 += [("Adam+warmup-cosine", lr, w, fam, target) for lr in lrs for w in WARMUPS]
            specs2 += [("MetaMD", a_lr, 0.0, fam, target)]
        res2 = dict(zip(specs2, run_all(specs2)))
    for fam_name, (fam, target, _) in fams.items():
        wc = [(k, v) for k, v in res2.items() if k[0] == "Adam+warmup-cosine" and k[3] == fam]
        (k, v) = min(wc, key=lambda kv: (_summ(kv[1], max_steps)[0], _summ(kv[1], max_steps)[2]))
        best[fam_name]["Adam+warmup-cosine"] = ((k[1], k[2]), v)
        a_lr = best[fam_name]["Adam"][0]
        best[fam_name]["MetaMD (shipped map, Adam's lr)"] = (a_lr, res2[("MetaMD", a_lr, 0.0, fam, target)])
        for d in DEFAULTS:
            best[fam_name][f"{d} (default lr 1e-3)"] = (1e-3, res1[(d, 1e-3, 0.0, fam, target)])

    rows: list[list] = []
    ratios: dict[str, tuple[float, float, float, bool]] = {}
    default_ok: dict[str, tuple[bool, str]] = {}
    for fam_name, (_, _, seen) in fams.items():
        for name, (lr, res) in best[fam_name].items():
            mean_steps, reached, _ = _summ(res, max_steps)
            lr_txt = f"{lr[0]:g}, warmup {lr[1]:.0%}" if isinstance(lr, tuple) else f"{lr:g}"
            rows.append(
                [
                    fam_name,
                    name,
                    lr_txt,
                    mean_std([min(r["steps"], max_steps + 1) for r in res], 1),
                    f"{reached:.0%}",
                    mean_std([r["final_loss"] for r in res], 4),
                    mean_std([r["test"] for r in res], 3),
                ]
            )
        a = _summ(best[fam_name]["Adam"][1], max_steps)
        wc = _summ(best[fam_name]["Adam+warmup-cosine"][1], max_steps)
        m = _summ(best[fam_name]["MetaMD (shipped map, Adam's lr)"][1], max_steps)
        ratios[fam_name] = (m[0] / a[0], m[0] / wc[0], m[2] / max(a[2], 1e-12), seen)
        ad = _summ(best[fam_name]["Adam (default lr 1e-3)"][1], max_steps)
        md = _summ(best[fam_name]["MetaMD (default lr 1e-3)"][1], max_steps)
        ok = md[0] <= ad[0] and md[2] <= 1.02 * ad[2]
        default_ok[fam_name] = (
            ok,
            f"steps {md[0]:.1f} vs {ad[0]:.1f}, final loss {md[2]:.4g} vs {ad[2]:.4g}",
        )

    mmap = resolve_mirror_map(DEFAULT_PRESET)
    t_adam = step_time(_make("Adam", 1e-3, 1))
    t_md = step_time(_make("MetaMD", 1e-3, 1))
    t_sgd = step_time(_make("SGD", 1e-3, 1))
    t_ratio = t_md / t_adam

    seen_r = [r[0] for r in ratios.values() if r[3]]
    unseen_r = [r[0] for r in ratios.values() if not r[3]]
    goal_seen = bool(seen_r) and max(seen_r) <= 0.7
    goal_unseen = not unseen_r or max(unseen_r) <= 1.0
    goal_default = all(ok for ok, _ in default_ok.values())
    goal_time = t_ratio <= 1.5

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = [
        f"- {f}: MetaMD/Adam steps **{r[0]:.2f}x**, MetaMD/(Adam+warmup-cosine) {r[1]:.2f}x, final-loss ratio "
        f"to Adam {r[2]:.2g}" + ("" if r[3] else " (unseen family)")
        for f, r in ratios.items()
    ]
    meta = mmap.meta
    notes = "\n".join(
        [
            f"Full-batch training for {max_steps} steps, {len(seeds)} held-out task(s) per family (seeds {seeds}; "
            "data split 1 / second half of the text, never used in meta-training). `steps to target` = first step "
            "whose training loss is ≤ the family's target "
            f"({', '.join(f'{k}: {v[1]}' for k, v in fams.items())}); unreached runs count as {max_steps + 1}. "
            "`test` = test accuracy (classification) or test loss (LMs, least squares has none). Baselines: best lr "
            f"from {grids} chosen on these same tasks (favourable to them); Adam+warmup-cosine: lr within 3x of "
            f"Adam's best × warmup {WARMUPS} of the run, cosine to 0. MetaMD: the shipped map `{DEFAULT_PRESET}` "
            "at Adam's best grid lr, no tuning of its own. Defaults: every optimizer at lr 1e-3.",
            "",
            f"Shipped map: meta-trained on {meta.get('families', '?')} (split 0), {meta.get('meta_steps')} "
            f"meta-steps of {meta.get('tasks_per_step')} tasks, {meta.get('unroll_steps')}-step unrolls, selected "
            f"at meta-step {meta.get('selected_step')} on validation tasks (score "
            f"{meta.get('selected_val_score', float('nan')):.3f} = mean log-loss difference to Adam).",
            "",
            f"`optimizer.step()` time on a 1.3M-parameter MLP (one CPU thread): Adam {t_adam * 1e3:.2f} ms, "
            f"SGD {t_sgd * 1e3:.2f} ms, MetaMD {t_md * 1e3:.2f} ms → **{t_ratio:.2f}x Adam** (goal ≤ 1.5x: "
            f"{verdict(goal_time)}).",
            "",
            "Goals:",
            *lines,
            f"- held-out tasks of the meta-training families: ≤ 0.7x Adam's steps — {verdict(goal_seen)} "
            f"(worst {max(seen_r):.2f}x)."
            if seen_r
            else "- held-out meta-training families: not run (quick).",
            f"- unseen families: ≤ 1.0x Adam's steps — {verdict(goal_unseen)}"
            + (f" (worst {max(unseen_r):.2f}x)." if unseen_r else "."),
            f"- at defaults never worse than Adam at its defaults (steps ≤, final loss ≤ 1.02x) — "
            f"{verdict(goal_default)}: " + "; ".join(f"{f}: {t}" for f, (_, t) in default_ok.items()) + ".",
            "",
            WHY_SHORT,
        ]
    )
    first = next(iter(ratios.values()))
    headline = (
        f"MetaMD/Adam steps {first[0]:.2f}x ({next(iter(ratios))}), worst unseen "
        f"{max(unseen_r):.2f}x, step time {t_ratio:.2f}x Adam"
        if unseen_r
        else f"MetaMD/Adam steps {first[0]:.2f}x, step time {t_ratio:.2f}x Adam"
    )
    return BenchReport(
        name="metamd",
        title="MetaMD (shipped adaptive map) vs SGD / SGD+momentum / Adam / Adam+warmup-cosine on held-out tasks",
        columns=["task family", "optimizer", "lr", "steps to target", "reached", "final train loss", "test"],
        rows=rows,
        notes=notes,
        headline=headline,
        goal_met=bool(goal_seen and goal_unseen and goal_default and goal_time),
    )
