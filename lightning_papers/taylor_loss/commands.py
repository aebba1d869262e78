"""``lightning-papers search-loss``: the CMA-ES Taylor-loss search as a CLI subcommand."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from lightning_papers.taylor_loss.search import DATASETS, LossSearch, SearchResult, default_tasks

__all__ = ["parse_noise", "search_loss"]


def parse_noise(spec: str) -> tuple[str | None, float]:
    """Parse ``"symmetric:0.4"``, ``"asymmetric:0.4"``, ``"pairflip:0.2"`` or ``"clean"`` into (type, rate).

    Example::

        >>> parse_noise("symmetric:0.4"), parse_noise("clean")
        (('symmetric', 0.4), (None, 0.0))
    """
    text = spec.strip().lower()
    if text in ("clean", "none", "none:0", "clean:0"):
        return None, 0.0
    kind, sep, rate = text.partition(":")
    if not sep or kind not in ("symmetric", "asymmetric", "pairflip"):
        raise ValueError(
            f"noise spec must look like 'symmetric:0.4' (or asymmetric/pairflip, or 'clean'), got {spec!r}"
        )
    try:
        value = float(rate)
    except ValueError as err:
        raise ValueError(f"noise rate in {spec!r} is not a number") from err
    if not 0.0 <= value < 1.0:
        raise ValueError(f"noise rate in {spec!r} must be in [0, 1)")
    return kind, value


def search_loss(
    out_dir: str = "runs/taylor_loss_search",
    datasets: Sequence[str] = DATASETS,
    noise: Sequence[str] = ("symmetric:0.2", "symmetric:0.6"),
    hidden: Sequence[Sequence[int]] = ((128,),),
    task_seeds: Sequence[int] = (100,),
    mnist1d_samples: int = 2000,
    degree: int = 4,
    other_degree: int = 0,
    generations: int = 20,
    popsize: int = 8,
    sigma0: float = 0.3,
    seed: int = 0,
    epochs: int = 200,
    lr: float = 0.01,
    batch_size: int | None = None,
    workers: int = 1,
    resume: bool = True,
    preset_out: str | None = None,
    preset_name: str = "searched",
    progress: bool = True,
) -> SearchResult:
    """Search Taylor-loss coefficients with CMA-ES; fitness = mean clean-validation accuracy over a task grid.

    The grid is datasets × noise × hidden × task_seeds; every candidate trains one MLP per task from
    scratch on noisy labels (full-batch Adam unless ``batch_size``). Interrupt at any time: rerunning the
    same command resumes from ``out_dir/search_state.pkl``.

    Args:
        out_dir: checkpoint, per-generation log (``search_log.jsonl``) and ``best_preset.yaml`` go here.
        datasets: any of ``digits``, ``mnist1d``.
        noise: noise settings such as ``symmetric:0.4``, ``asymmetric:0.4``, ``clean``.
        hidden: MLP hidden widths, one list per architecture.
        task_seeds: split/noise/initialisation seeds of the tasks.
        mnist1d_samples: size of the generated MNIST-1D set.
        degree: number of powers of ``1 - p_y``.
        other_degree: number of powers of ``Σ_{j≠y} p_j²``.
        generations: total CMA-ES generations.
        popsize: CMA-ES population size.
        sigma0: CMA-ES initial step size.
        seed: CMA-ES seed (the search is deterministic given it).
        epochs: training epochs per candidate and task.
        lr: Adam learning rate.
        batch_size: mini-batch size (default: full batch).
        workers: scoring processes (0: in-process). Each uses one thread.
        resume: continue from an existing checkpoint in ``out_dir``.
        preset_out: also write the best preset to this path (e.g. ``lightning_papers/taylor_loss/presets/x.yaml``).
        preset_name: the ``name`` field of that preset.
        progress: show a progress bar.

    Returns:
        The :class:`~lightning_papers.taylor_loss.search.SearchResult` (printed as a summary).
    """
    tasks = default_tasks(
        datasets=datasets,
        noise=[parse_noise(s) for s in noise],
        hidden=[tuple(h) for h in hidden],
        seeds=task_seeds,
        n_samples=mnist1d_samples,
    )
    command = (
        "lightning-papers search-loss " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1
        else None
    )
    search = LossSearch(
        tasks,
        out_dir=out_dir,
        degree=degree,
        other_degree=other_degree,
        popsize=popsize,
        sigma0=sigma0,
        seed=seed,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        workers=workers,
        command=command,
    )
    result = search.run(generations=generations, resume=resume, progress=progress)
    if preset_out:
        search.write_preset(result, preset_out, name=preset_name)
        result.preset_path = f"{result.preset_path} and {preset_out}"
    return result
