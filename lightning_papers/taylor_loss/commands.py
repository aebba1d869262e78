"""``lightning-papers search-loss``: the CMA-ES Taylor-loss search on built-in or your own tasks."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import Any

from lightning_papers.taylor_loss.pools import search_tasks
from lightning_papers.taylor_loss.search import LossSearch, SearchResult
from lightning_papers.taylor_loss.tasks import LossTask, parse_noise, resolve

__all__ = ["parse_noise", "search_loss"]


def search_loss(
    out_dir: str = "runs/taylor_loss_search",
    tasks: list[dict[str, Any]] | None = None,
    task_seeds: Sequence[int] = (100,),
    degree: int = 5,
    other_degree: int = 0,
    basis: str = "bernstein",
    generations: int = 12,
    popsize: int = 8,
    sigma0: float = 0.5,
    seed: int = 0,
    tasks_per_generation: int | None = 8,
    epochs: int = 120,
    lr: float = 0.01,
    batch_size: int | None = None,
    device: str = "cpu",
    workers: int = 2,
    executor: str | None = None,
    final_evaluation: bool = True,
    resume: bool = True,
    preset_out: str | None = None,
    preset_name: str = "searched",
    progress: bool = True,
) -> SearchResult:
    """Search Taylor-loss coefficients with CMA-ES; fitness = mean clean-validation accuracy over tasks.

    Every candidate trains one network per task from scratch on corrupted labels (full-batch Adam unless
    ``batch_size``) and is scored on the task's clean validation split. Interrupt at any time: rerunning the
    same command resumes from ``out_dir/search_state.pkl``.

    Args:
        out_dir: checkpoint, per-generation log (``search_log.jsonl``) and ``best_preset.yaml`` go here.
        tasks: your task pool, one entry per task: ``{data: {class_path, init_args}, model: {class_path,
            init_args}, noise: "symmetric:0.4" | "asymmetric:0.4" | "pairflip:0.3" | "clean" | "own", seed,
            name, max_train_samples}``. Default: the built-in development pool (digits MLP/CNN, MNIST-1D,
            Gaussian blobs × clean/symmetric/pairflip noise), once per ``task_seeds`` entry.
        task_seeds: seeds of the built-in pool's tasks (ignored with ``tasks``).
        degree: number of powers of ``1 - p_y``.
        other_degree: number of powers of ``Σ_{j≠y} p_j²``.
        basis: ``bernstein`` (monotone losses) or ``monomial``.
        generations: total CMA-ES generations.
        popsize: CMA-ES population size.
        sigma0: CMA-ES initial step size.
        seed: CMA-ES seed (the search is deterministic given it).
        tasks_per_generation: tasks drawn from the pool per generation (``null``: all).
        epochs: training epochs per candidate and task.
        lr: Adam learning rate.
        batch_size: mini-batch size (default: full batch).
        device: where the training runs happen.
        workers: local scoring processes (0: in-process), one thread each; ignored with ``executor``.
        executor: ``"module:function"`` returning a ``concurrent.futures.Executor`` (e.g. a Dask client's
            ``get_executor()`` on a SLURM cluster).
        final_evaluation: score the result and the unsearched start on the whole pool at the end.
        resume: continue from an existing checkpoint in ``out_dir``.
        preset_out: also write the preset to this path (e.g. ``lightning_papers/taylor_loss/presets/x.yaml``).
        preset_name: the ``name`` field of that preset.
        progress: show a progress bar.

    Returns:
        The :class:`~lightning_papers.taylor_loss.search.SearchResult` (printed as a summary).
    """
    pool = [LossTask.from_dict(t) for t in tasks] if tasks else search_tasks(seeds=task_seeds)
    pool_executor = None
    if executor:
        factory = resolve(executor)
        pool_executor = factory() if callable(factory) else factory
    command = (
        "lightning-papers search-loss " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and "search-loss" in sys.argv[1:2]
        else None
    )
    search = LossSearch(
        pool, out_dir=out_dir, degree=degree, other_degree=other_degree, basis=basis, popsize=popsize,
        sigma0=sigma0, seed=seed, tasks_per_generation=tasks_per_generation, epochs=epochs, lr=lr,
        batch_size=batch_size, device=device, workers=workers, executor=pool_executor,
        final_evaluation=final_evaluation, command=command,
    )
    result = search.run(generations=generations, resume=resume, progress=progress)
    if preset_out:
        search.write_preset(result, preset_out, name=preset_name)
        result.preset_path = f"{result.preset_path} and {preset_out}"
    return result
