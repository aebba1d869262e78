"""Meta-training a mirror map by minimising the regret bound of mirror descent on training trajectories.

For mirror descent ``θ_{t+1} = h⁻¹(h(θ_t) − η g_t)`` the three-point identity of Bregman divergences gives,
for any comparator ``θ*`` (here a reference solution of the task's *training* loss)::

    Σ_t ⟨g_t, θ_t − θ*⟩ = (1/η)·[D_ψ(θ*, θ_1) − D_ψ(θ*, θ_{T+1}) + Σ_t D_ψ(θ_t, θ_{t+1})]
                        ≤ (1/η)·[D_ψ(θ*, θ_1) + Σ_t D_ψ(θ_t, θ_{t+1})]  =:  η·T·B(ψ)

and for convex losses the left side bounds the regret ``Σ_t f(θ_t) − f(θ*)``. ``B(ψ)`` (the bound per step)
is the meta-objective (Gao et al., 2022, "minimise the regret bound"; their textbook form replaces
``D_ψ(θ_t, θ_{t+1})`` by its upper bound ``η²‖g_t‖²_*/(2α)`` — we keep the exact per-step term, which is
tighter and needs no strong-convexity constant). On a quadratic it is minimised exactly by Newton's step.
It is computed on training trajectories only (no validation data) and differentiated through the
unrolled mirror steps (second order through ``g_t`` when ``second_order``; implicit gradients for ``h⁻¹``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_papers.metamd._meta_common import draw_tasks, meta_update, progress_bar, save_checkpoint
from lightning_papers.metamd.adaptive import AdaptiveMirrorMap
from lightning_papers.metamd.adaptive_meta import meta_train_adaptive
from lightning_papers.metamd.mirror_map import MirrorMap
from lightning_papers.metamd.tasks import FunctionalTask, TaskSampler
from lightning_papers.validation import check_each

__all__ = ["MetaTrainResult", "meta_train", "reference_solution", "regret_bound", "unrolled_regret_bound"]


def reference_solution(task: FunctionalTask, steps: int = 300, lr: float = 0.01) -> list[Tensor]:
    """A comparator ``θ*`` for the regret bound: Adam on the task's training loss from ``θ_1``."""
    params = [p.detach().clone().requires_grad_(True) for p in task.params]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        task.loss(params).backward()
        opt.step()
    return [p.detach() for p in params]


def _bregman64(m: MirrorMap, x: Tensor, y: Tensor, slot: int) -> Tensor:
    # float64: D(θ_t, θ_{t+1}) of nearby float32 points would otherwise lose most digits to cancellation
    return m.bregman(x.double(), y.double(), slot)


def regret_bound(
    mirror_map: MirrorMap,
    trajectory: Sequence[Sequence[Tensor]],
    reference: Sequence[Tensor],
    lr: float,
) -> Tensor:
    """The regret bound per step ``B = [D_ψ(θ*, θ_1) + Σ_t D_ψ(θ_t, θ_{t+1})] / (η·T)`` of a given trajectory.

    Args:
        mirror_map: the map ``ψ``.
        trajectory: ``[θ_1, ..., θ_{T+1}]``, each a list of tensors.
        reference: the comparator ``θ*``.
        lr: the step size ``η`` the trajectory used.
    """
    if len(trajectory) < 2:
        raise ValueError("trajectory needs at least two points")
    slots = mirror_map.assign(list(trajectory[0]))
    total = sum(_bregman64(mirror_map, r, p, s) for r, p, s in zip(reference, trajectory[0], slots))
    for a, b in zip(trajectory[:-1], trajectory[1:]):
        total = total + sum(_bregman64(mirror_map, x, y, s) for x, y, s in zip(a, b, slots))
    return total / (lr * (len(trajectory) - 1))


def _md_step(
    m: MirrorMap, params: Sequence[Tensor], grads: Sequence[Tensor], slots: Sequence[int], lr: float
):
    return [m.h_inverse(m.h(p, s) - lr * g, s) for p, g, s in zip(params, grads, slots)]


def _unroll(
    mirror_map: MirrorMap,
    task: FunctionalTask,
    unroll_steps: int,
    lr: float,
    second_order: bool,
    warm_start_steps: int,
) -> tuple[Tensor, Tensor, dict[str, float]]:
    if unroll_steps < 1:
        raise ValueError(f"unroll_steps must be >= 1, got {unroll_steps}")
    if task.reference is None:
        raise ValueError("task.reference (θ*) is missing; compute it with reference_solution(task)")
    slots = mirror_map.assign(task.params)
    theta = [p.detach().clone() for p in task.params]
    for _ in range(warm_start_steps):
        th = [p.requires_grad_(True) for p in theta]
        grads = torch.autograd.grad(task.loss(th), th)
        with torch.no_grad():
            theta = [q.detach() for q in _md_step(mirror_map, th, grads, slots, lr)]
    theta = [p.detach().requires_grad_(True) for p in theta]
    total = sum(_bregman64(mirror_map, r, p, s) for r, p, s in zip(task.reference, theta, slots))
    losses: list[Tensor] = []
    loss = task.loss(theta)
    first = float(loss.detach())
    for _ in range(unroll_steps):
        grads = torch.autograd.grad(loss, theta, create_graph=second_order)
        new = _md_step(mirror_map, theta, grads, slots, lr)
        total = total + sum(_bregman64(mirror_map, x, y, s) for x, y, s in zip(theta, new, slots))
        theta = new
        loss = task.loss(theta)
        losses.append(loss)
    with torch.no_grad():
        ref = float(task.loss(task.reference))
    bound = total / (lr * unroll_steps)
    mean_loss = torch.stack(losses).mean()
    seen = [first, *(float(v.detach()) for v in losses[:-1])]
    stats = {
        "final_loss": float(losses[-1].detach()),
        "regret": sum(seen) / len(seen) - ref,
        "reference_loss": ref,
    }
    return bound, mean_loss, stats


def unrolled_regret_bound(
    mirror_map: MirrorMap,
    task: FunctionalTask,
    unroll_steps: int = 20,
    lr: float = 1.0,
    second_order: bool = True,
    warm_start_steps: int = 0,
) -> tuple[Tensor, dict[str, float]]:
    """Run ``unroll_steps`` mirror-descent steps on ``task`` and return the differentiable bound ``B`` and stats.

    ``warm_start_steps`` steps are first taken without gradient tracking, so the unrolled window can sit
    later in training (truncated unrolling); ``θ_1`` of the bound is the window's first point.
    ``stats``: ``final_loss``, ``regret`` (realised ``mean_t f(θ_t) − f(θ*)``), ``reference_loss``.

    Raises:
        ValueError: the task has no reference solution, or ``unroll_steps < 1``.
    """
    bound, _, stats = _unroll(mirror_map, task, unroll_steps, lr, second_order, warm_start_steps)
    return bound, stats


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns: the learned map, the per-step history and the file written."""

    mirror_map: MirrorMap
    history: list[dict[str, float]] = field(default_factory=list)
    output: Path | None = None


def meta_train(
    task_sampler: TaskSampler | torch.nn.Module,
    mirror_map: MirrorMap | AdaptiveMirrorMap | None = None,
    *,
    data: Any = None,
    loss: str | Callable | None = None,
    n_examples: int = 256,
    meta_steps: int = 200,
    tasks_per_step: int = 2,
    unroll_steps: int = 20,
    max_warm_start: int = 0,
    lr: float | None = None,
    meta_lr: float = 0.03,
    second_order: bool = True,
    task_pool: int = 64,
    reference_steps: int = 300,
    reference_lr: float = 0.01,
    grad_clip: float = 1.0,
    objective: Literal["regret_bound", "loss"] | None = None,
    val_tasks: int = 4,
    val_every: int = 10,
    val_steps: int = 100,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 20,
    resume: bool = True,
    output: str | os.PathLike | None = None,
    progress: bool = True,
) -> MetaTrainResult:
    """Meta-learn a mirror map by minimising the regret bound of mirror descent on tasks of a family.

    ``task_sampler`` is a :class:`TaskSampler`, or your own ``nn.Module`` / ``LightningModule`` with ``data``
    (DataLoader, LightningDataModule, Dataset or tensors) and ``loss``: tasks are then (fresh init, random
    subset of ``n_examples``) run with ``torch.func.functional_call`` (:class:`ModuleTaskSampler`).

    **Adaptive family** (``mirror_map`` an :class:`AdaptiveMirrorMap`, the default: a fresh one, i.e. Adam):
    unrolls ``unroll_steps`` steps at the base ``lr`` (None: each task's ``info["lr"]``, else 1e-3) after a
    random warm start of up to ``max_warm_start`` steps, minimises ``objective`` (None → ``"loss"``: the mean log
    unrolled training loss; ``"regret_bound"``: the log adaptive regret bound, see
    :mod:`lightning_papers.metamd.adaptive_meta`), and keeps the map scoring best on ``val_tasks``
    validation tasks (every ``val_every`` meta-steps, ``val_steps`` steps each; 0 tasks: no selection).

    **Static family** (``mirror_map`` a :class:`MirrorMap`, the paper-literal variant): each meta-step draws
    ``tasks_per_step`` tasks, unrolls mirror steps at ``lr`` (None: 1.0) and takes an Adam step along
    ``∇ mean_tasks log B`` with ``B`` the bound of ``objective`` (``"regret_bound"`` or the ablation ``"loss"``).

    Both: reference solutions ``θ*`` by Adam on the task's *training* loss (``reference_steps``; static:
    ``reference_lr``, adaptive: the task's lr), cached for ``task_pool`` task seeds; Adam on the map with
    ``meta_lr`` and ``grad_clip``; checkpoints in ``checkpoint_dir`` every ``checkpoint_every`` steps, and
    ``resume`` continues from one to exactly the map an uninterrupted run gives.

    Returns:
        MetaTrainResult with the map, the history (``objective``, ``final_loss``, ``val_score``...) and path.

    Raises:
        ValueError / TypeError: non-positive counts or rates, a bad objective, unsupported model or data.

    Example::

        >>> from lightning_papers.metamd.tasks import LeastSquaresSampler
        >>> res = meta_train(LeastSquaresSampler(dim=5, n=20), MirrorMap(num_terms=0), meta_steps=2,
        ...                  unroll_steps=3, task_pool=2, reference_steps=50, progress=False)
        >>> len(res.history)
        2
    """
    if isinstance(task_sampler, torch.nn.Module):
        from lightning_papers.metamd.module_tasks import ModuleTaskSampler

        if data is None:
            raise ValueError(
                "meta_train on a model needs data= (a DataLoader, LightningDataModule or Dataset)"
            )
        task_sampler = ModuleTaskSampler(task_sampler, data, loss, n_examples=n_examples, lr=lr or 1e-3)
    elif not isinstance(task_sampler, TaskSampler):
        raise TypeError(
            f"task_sampler must be a TaskSampler or an nn.Module, got {type(task_sampler).__name__}"
        )
    if objective not in (None, "regret_bound", "loss"):
        raise ValueError(f"objective must be 'regret_bound' or 'loss', got {objective!r}")
    if mirror_map is None:
        mirror_map = AdaptiveMirrorMap()
    if (
        objective is None
    ):  # chosen on validation tasks for the adaptive family; the paper's for the static one
        objective = "loss" if isinstance(mirror_map, AdaptiveMirrorMap) else "regret_bound"
    counts = {
        "meta_steps": meta_steps,
        "tasks_per_step": tasks_per_step,
        "unroll_steps": unroll_steps,
        "task_pool": task_pool,
        "checkpoint_every": checkpoint_every,
    }
    if isinstance(mirror_map, AdaptiveMirrorMap):
        counts.update(val_every=val_every, val_steps=val_steps)  # only the adaptive loop validates
    for name, val in counts.items():
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if isinstance(mirror_map, AdaptiveMirrorMap):
        check_each((meta_lr > 0, f"meta_lr must be > 0, got {meta_lr!r}"),
                   (lr is None or lr > 0, f"lr must be > 0 (or None for each task's own), got {lr!r}"))
        check_each(*((value >= 0, f"{name} must be >= 0, got {value!r}") for name, value in
                     (("max_warm_start", max_warm_start), ("reference_steps", reference_steps), ("val_tasks", val_tasks))))
        mirror_map.validate()
        res = meta_train_adaptive(
            task_sampler,
            mirror_map,
            meta_steps=meta_steps,
            tasks_per_step=tasks_per_step,
            unroll_steps=unroll_steps,
            max_warm_start=max_warm_start,
            lr=lr,
            meta_lr=meta_lr,
            second_order=second_order,
            task_pool=task_pool,
            reference_steps=reference_steps,
            grad_clip=grad_clip,
            objective=objective,
            val_tasks=val_tasks,
            val_every=val_every,
            val_steps=val_steps,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
            progress=progress,
        )
        res.output = mirror_map.save(output) if output is not None else None
        return res
    lr = 1.0 if lr is None else lr
    for name, val in {"lr": lr, "meta_lr": meta_lr, "reference_lr": reference_lr}.items():
        if not val > 0:
            raise ValueError(f"{name} must be > 0, got {val!r}")
    if objective not in ("regret_bound", "loss"):
        raise ValueError(f"objective must be 'regret_bound' or 'loss', got {objective!r}")
    if max_warm_start < 0 or reference_steps < 0:
        raise ValueError("max_warm_start and reference_steps must be >= 0")
    if not isinstance(mirror_map, MirrorMap):
        raise TypeError(
            f"mirror_map must be a MirrorMap or AdaptiveMirrorMap, got {type(mirror_map).__name__}"
        )
    mirror_map.validate()
    meta_opt = torch.optim.Adam(mirror_map.parameters(), lr=meta_lr)
    history: list[dict[str, float]] = []
    start = 0
    ckpt = Path(checkpoint_dir) / "metamd_meta_train.pt" if checkpoint_dir is not None else None
    if ckpt is not None and resume and ckpt.is_file():
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
        mirror_map.load_state_dict(blob["map"])
        meta_opt.load_state_dict(blob["meta_opt"])
        history, start = blob["history"], blob["step"]

    cache: dict[int, FunctionalTask] = {}

    def get_task(k: int) -> FunctionalTask:
        if k not in cache:
            task = task_sampler.sample(seed * 1_000_000 + k)
            if task.reference is None:
                task.reference = reference_solution(task, reference_steps, reference_lr)
            cache[k] = task
        return cache[k]

    bar = progress_bar(progress, meta_steps, start, "meta-train MetaMD")
    t0 = time.perf_counter()
    for step in range(start, meta_steps):
        ks, warms = draw_tasks(seed, step, task_pool, tasks_per_step, max_warm_start)
        meta_opt.zero_grad()
        objs, finals, regrets = [], [], []
        for k, w in zip(ks, warms):
            bound, mean_loss, stats = _unroll(mirror_map, get_task(k), unroll_steps, lr, second_order, w)
            obj = torch.log(bound if objective == "regret_bound" else mean_loss) / len(ks)
            if not torch.isfinite(obj):
                continue  # a diverged trajectory contributes no (meaningless) gradient
            obj.backward()
            objs.append(float(obj.detach()) * len(ks))
            finals.append(stats["final_loss"])
            regrets.append(stats["regret"])
        meta_update(mirror_map, meta_opt, grad_clip, bool(objs))
        rec = {
            "step": step + 1,
            "objective": sum(objs) / len(objs) if objs else math.nan,
            "final_loss": sum(finals) / len(finals) if finals else math.nan,
            "regret": sum(regrets) / len(regrets) if regrets else math.nan,
        }
        history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(logB=f"{rec['objective']:.3f}", loss=f"{rec['final_loss']:.3f}")
        if ckpt is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == meta_steps):
            save_checkpoint(
                ckpt,
                {"map": mirror_map.state_dict(), "meta_opt": meta_opt.state_dict(), "history": history, "step": step + 1},
            )
    if bar is not None:
        bar.close()
    mirror_map.validate()
    mirror_map.meta = {
        "trained_by": "lightning_papers.metamd.meta_train",
        "meta_steps": meta_steps,
        "tasks_per_step": tasks_per_step,
        "unroll_steps": unroll_steps,
        "max_warm_start": max_warm_start,
        "lr": lr,
        "meta_lr": meta_lr,
        "second_order": second_order,
        "task_pool": task_pool,
        "seed": seed,
        "objective": objective,
        "seconds": round(time.perf_counter() - t0, 1),
        "objective_first": history[0]["objective"] if history else None,
        "objective_last": history[-1]["objective"] if history else None,
    }
    out = mirror_map.save(output) if output is not None else None
    return MetaTrainResult(mirror_map, history, out)
