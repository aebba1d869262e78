"""Meta-training the adaptive mirror map: minimise the adaptive mirror-descent regret bound, select on validation.

For the time-varying potentials ``ψ_t(θ) = Σ_i ½ a_{t,i} θ_i²`` and steps ``θ_{t+1} = θ_t − η m̂_t / a_t``, the
three-point identity gives, for a comparator ``θ*`` and a window of ``T`` steps starting at ``θ_1``
(Duchi, Hazan & Singer 2011, the adaptive bound before its ∞-norm step)::

    η Σ_t ⟨m̂_t, θ_t − θ*⟩ ≤ D_{ψ_1}(θ*, θ_1) + Σ_{t≥2} ½⟨(a_t − a_{t−1})⁺, (θ* − θ_t)²⟩ + Σ_t ½⟨a_t, (θ_{t+1} − θ_t)²⟩

The right side divided by ``ηT`` is the bound ``B`` (no validation data); meta-training minimises
``mean_tasks log B`` by differentiating through the unrolled steps. ``θ*`` is re-anchored per window: Adam
run from the window's first point (anchoring on one Adam solution from ``θ_1`` rewards copying Adam's path
on non-convex tasks, measured). ``(·)⁺`` keeps it a bound for metrics that
shrink (larger steps) — the plain identity would reward ever larger steps. Steps: Adam on the map's
parameters, many tasks per meta-batch, gradient clipping; every ``val_every`` meta-steps the map is scored on
*validation* tasks (mean log training loss over ``val_steps`` steps, relative to Adam at the same lr) and the
best map so far is kept: a map that is not better than Adam there is never shipped (the neutral map is the
initial candidate).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lightning_papers.metamd._meta_common import draw_tasks, meta_update, progress_bar, save_checkpoint
from lightning_papers.metamd.adaptive import AdaptiveMirrorMap, tensor_roles
from lightning_papers.metamd.adaptive_step import functional_adaptive_step
from lightning_papers.metamd.tasks import FunctionalTask, TaskSampler

__all__ = ["adaptive_regret_bound", "meta_train_adaptive", "run_adaptive", "validation_score"]


class _Run:
    """Parameters and Adam moments of one trajectory."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = [p.detach().clone() for p in params]
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0


def _lr(task: FunctionalTask, lr: float | None) -> float:
    return float(lr if lr is not None else task.info.get("lr", 1e-3))


@torch.no_grad()
def _advance(
    m: AdaptiveMirrorMap, task: FunctionalTask, run: _Run, steps: int, lr: float, roles
) -> list[float]:
    losses = []
    for _ in range(steps):
        with torch.enable_grad():
            ps = [p.requires_grad_(True) for p in run.params]
            loss = task.loss(ps)
            grads = torch.autograd.grad(loss, ps)
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            break
        run.t += 1
        run.params, run.m, run.v, _ = functional_adaptive_step(
            m, [p.detach() for p in ps], grads, run.m, run.v, run.t, roles, lr=lr
        )
    return losses


def run_adaptive(
    mirror_map: AdaptiveMirrorMap, task: FunctionalTask, steps: int, lr: float | None = None
) -> list[float]:
    """Training losses ``f(θ_1..θ_steps)`` of ``steps`` MetaMD steps on ``task`` (no gradients; stops on a NaN)."""
    return _advance(mirror_map, task, _Run(task.params), steps, _lr(task, lr), tensor_roles(task.params))


def adaptive_regret_bound(
    trajectory: Sequence[Sequence[Tensor]],
    metrics: Sequence[Sequence[Tensor]],
    reference: Sequence[Tensor],
    lr: float,
) -> Tensor:
    """``B`` of a window: ``trajectory = [θ_1..θ_{T+1}]``, ``metrics = [a_1..a_T]`` (``a_t`` used for step t).

    Example::

        >>> th = [[torch.ones(2)], [torch.zeros(2)]]
        >>> float(adaptive_regret_bound(th, [[torch.ones(2)]], [torch.zeros(2)], lr=1.0))
        2.0
    """
    if len(trajectory) != len(metrics) + 1 or not metrics:
        raise ValueError(f"need T+1 points and T metrics, got {len(trajectory)} and {len(metrics)}")
    total = sum(0.5 * (a * (r - p) ** 2).sum() for a, r, p in zip(metrics[0], reference, trajectory[0]))
    for t in range(1, len(metrics)):
        total = total + sum(
            0.5 * (torch.relu(a - a0) * (r - p) ** 2).sum()
            for a, a0, r, p in zip(metrics[t], metrics[t - 1], reference, trajectory[t])
        )
    for t, a_t in enumerate(metrics):
        total = total + sum(
            0.5 * (a * (y - x) ** 2).sum() for a, x, y in zip(a_t, trajectory[t], trajectory[t + 1])
        )
    return total / (lr * len(metrics))


def _window(
    m: AdaptiveMirrorMap,
    task: FunctionalTask,
    warm: int,
    T: int,
    lr: float,
    second_order: bool,
    objective: Literal["regret_bound", "loss"] = "regret_bound",
    reference_steps: int = 100,
) -> tuple[Tensor, float]:
    """Differentiable log-objective of one window of ``T`` steps after ``warm`` untracked ones, and the final loss.

    ``regret_bound``: ``log B`` with ``θ*`` = Adam run for ``reference_steps`` from the window's start ``θ_w``
    (re-anchored per window: a fixed Adam solution from ``θ_1`` would reward copying Adam's own path).
    ``loss``: the mean log training loss over the window (the usual learned-optimizer objective; ablation).
    """
    from lightning_papers.metamd.meta_training import reference_solution

    roles = tensor_roles(task.params)
    run = _Run(task.params)
    _advance(m, task, run, warm, lr, roles)
    theta = [p.detach().requires_grad_(True) for p in run.params]
    reference = None
    if objective == "regret_bound":
        start = FunctionalTask([p.detach() for p in theta], task.loss)
        reference = reference_solution(start, reference_steps, lr)
    mom, sq = run.m, run.v
    traj, metrics, logs = [theta], [], []
    loss = task.loss(theta)
    for k in range(T):
        grads = torch.autograd.grad(loss, theta, create_graph=second_order)
        theta, mom, sq, a = functional_adaptive_step(m, theta, grads, mom, sq, run.t + k + 1, roles, lr=lr)
        traj.append(theta)
        metrics.append(a)
        loss = task.loss(theta)
        logs.append(torch.log(loss.clamp_min(1e-12)))
    final = float(loss.detach())
    if objective == "loss":
        return torch.stack(logs).mean(), final
    return torch.log(adaptive_regret_bound(traj, metrics, reference, lr)), final


def validation_score(
    mirror_map: AdaptiveMirrorMap, tasks: Sequence[FunctionalTask], steps: int, lr: float | None = None
) -> float:
    """Mean over ``tasks`` of the mean log training loss over ``steps`` steps, minus Adam's (< 0: faster than Adam).

    Adam's reference numbers are cached on the tasks (``info["adam_logloss"]``).
    """
    out = []
    for task in tasks:
        key = ("adam_logloss", steps, _lr(task, lr))
        if key not in task.info:
            task.info[key] = _mean_log(run_adaptive(AdaptiveMirrorMap(), task, steps, lr), steps)
        out.append(_mean_log(run_adaptive(mirror_map, task, steps, lr), steps) - task.info[key])
    return sum(out) / len(out)


def _mean_log(losses: list[float], steps: int) -> float:
    if len(losses) < steps or not all(math.isfinite(v) for v in losses):
        return math.inf  # diverged
    return sum(math.log(max(v, 1e-12)) for v in losses) / steps


def meta_train_adaptive(
    task_sampler: TaskSampler,
    mirror_map: AdaptiveMirrorMap,
    *,
    meta_steps: int,
    tasks_per_step: int,
    unroll_steps: int,
    max_warm_start: int,
    lr: float | None,
    meta_lr: float,
    second_order: bool,
    task_pool: int,
    reference_steps: int,
    grad_clip: float,
    objective: Literal["regret_bound", "loss"],
    val_tasks: int,
    val_every: int,
    val_steps: int,
    seed: int,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int,
    resume: bool,
    progress: bool,
):
    """The adaptive-family loop behind :func:`lightning_papers.metamd.meta_train` (see its arguments)."""
    from lightning_papers.metamd.meta_training import MetaTrainResult

    meta_opt = torch.optim.Adam(mirror_map.parameters(), lr=meta_lr)
    history: list[dict[str, float]] = []
    start = 0
    best_state = {k: v.detach().clone() for k, v in mirror_map.state_dict().items()}
    best_score, best_step = math.inf, 0
    ckpt = Path(checkpoint_dir) / "metamd_meta_train.pt" if checkpoint_dir is not None else None
    if ckpt is not None and resume and ckpt.is_file():
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
        mirror_map.load_state_dict(blob["map"])
        meta_opt.load_state_dict(blob["meta_opt"])
        best_state, best_score, best_step = blob["best"], blob["best_score"], blob["best_step"]
        history, start = blob["history"], blob["step"]

    cache: dict[int, FunctionalTask] = {}

    def get_task(k: int) -> FunctionalTask:
        if k not in cache:
            cache[k] = task_sampler.sample(seed * 1_000_000 + k)
        return cache[k]

    # validation tasks: seeds disjoint from the training pool (offset 500 000)
    val = [task_sampler.sample(seed * 1_000_000 + 500_000 + k) for k in range(val_tasks)]
    if val and start == 0:
        best_score = validation_score(mirror_map, val, val_steps, lr)
        best_step = 0
    bar = progress_bar(progress, meta_steps, start, "meta-train MetaMD (adaptive)")
    t0 = time.perf_counter()
    for step in range(start, meta_steps):
        ks, warms = draw_tasks(seed, step, task_pool, tasks_per_step, max_warm_start)
        meta_opt.zero_grad()
        objs, finals = [], []
        for k, w in zip(ks, warms):
            task = get_task(k)
            obj, final = _window(
                mirror_map, task, w, unroll_steps, _lr(task, lr), second_order, objective, reference_steps
            )
            obj = obj / len(ks)
            if not torch.isfinite(obj):
                continue  # a diverged window contributes no (meaningless) gradient
            obj.backward()
            objs.append(float(obj.detach()) * len(ks))
            finals.append(final)
        meta_update(mirror_map, meta_opt, grad_clip, bool(objs))
        rec = {
            "step": step + 1,
            "objective": sum(objs) / len(objs) if objs else math.nan,
            "final_loss": sum(finals) / len(finals) if finals else math.nan,
        }
        if val and ((step + 1) % val_every == 0 or step + 1 == meta_steps):
            score = validation_score(mirror_map, val, val_steps, lr)
            rec["val_score"] = score
            if score < best_score:
                best_score, best_step = score, step + 1
                best_state = {k: v.detach().clone() for k, v in mirror_map.state_dict().items()}
        history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(logB=f"{rec['objective']:.3f}", best_val=f"{best_score:.3f}")
        if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == meta_steps):
            blob = {
                "map": mirror_map.state_dict(),
                "meta_opt": meta_opt.state_dict(),
                "history": history,
                "step": step + 1,
                "best": best_state,
                "best_score": best_score,
                "best_step": best_step,
            }
            save_checkpoint(ckpt, blob)
    if bar is not None:
        bar.close()
    if val:
        mirror_map.load_state_dict(best_state)  # model selection on the validation tasks
    mirror_map.validate()
    mirror_map.meta = {
        "trained_by": "lightning_papers.metamd.meta_train",
        "family": "adaptive",
        "objective": "adaptive_regret_bound" if objective == "regret_bound" else "unrolled_log_loss",
        "meta_steps": meta_steps,
        "tasks_per_step": tasks_per_step,
        "unroll_steps": unroll_steps,
        "max_warm_start": max_warm_start,
        "meta_lr": meta_lr,
        "second_order": second_order,
        "task_pool": task_pool,
        "val_tasks": val_tasks,
        "val_steps": val_steps,
        "selected_step": best_step,
        "selected_val_score": best_score if val else None,
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return MetaTrainResult(mirror_map, history, None)
