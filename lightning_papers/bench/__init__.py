"""``lightning-papers bench <method>|all``: run benchmarks and write their tables to ``benchmarks/results/``.

Each method has a module ``lightning_papers.bench.<method>`` with
``run(quick: bool, out_dir: Path) -> BenchReport``; this module only dispatches and writes.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from pathlib import Path

from lightning_papers import METHODS
from lightning_papers.bench.report import BenchReport, markdown_table, mean_std, write_report
from lightning_papers.files import atomic_write_text

__all__ = ["BenchReport", "bench", "default_results_dir", "mean_std", "run_benchmark", "write_report"]


def default_results_dir() -> Path:
    """Where tables go when no ``out_dir`` is given.

    ``benchmarks/results`` of the source checkout the package runs from (an editable install); otherwise
    ``$XDG_CACHE_HOME/lightning-papers/benchmarks`` (``~/.cache/...``), never the current directory.

    Example::

        >>> default_results_dir().name in ("results", "benchmarks")
        True
    """
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "benchmarks").is_dir():
        return checkout / "benchmarks" / "results"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lightning-papers" / "benchmarks"


def run_benchmark(method: str, quick: bool = False, out_dir: str | Path | None = None) -> tuple[BenchReport, Path]:
    """Run one method's benchmark and write its table; returns the report and the file written."""
    if method not in METHODS:
        raise ValueError(f"unknown benchmark {method!r}; expected one of {', '.join(METHODS)} or 'all'")
    base = Path(out_dir) if out_dir is not None else default_results_dir()
    target = base / "quick" if quick else base
    target.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"lightning_papers.bench.{method}")
    start = time.perf_counter()
    report = module.run(quick=quick, out_dir=target)
    seconds = time.perf_counter() - start
    command = f"lightning-papers bench {method}" + (" --quick" if quick else "")
    return report, write_report(report, target, command, seconds)


def bench(method: str, quick: bool = False, out_dir: str | None = None) -> None:
    """Run benchmarks and write markdown tables to ``benchmarks/results/`` (``quick/`` with ``--quick``).

    Args:
        method: a method name (concrete_kmeans, taylor_loss, metamd, fe_adapter, spikellm, heurimentor) or ``all``.
        quick: fewest seeds and epochs, same code path (minutes in all on a CPU).
        out_dir: results folder (default: :func:`default_results_dir`, the checkout's ``benchmarks/results``).
    """
    methods = list(METHODS) if method == "all" else [method]
    if method != "all" and method not in METHODS:
        raise ValueError(f"unknown benchmark {method!r}; expected one of {', '.join(METHODS)} or 'all'")
    summary: list[list] = []
    for name in methods:
        print(f"\n=== bench {name}{' (quick)' if quick else ''} ===", flush=True)
        start = time.perf_counter()
        try:
            report, path = run_benchmark(name, quick=quick, out_dir=out_dir)
        except Exception as err:  # one failing benchmark must not hide the others' results
            if len(methods) == 1:
                raise
            traceback.print_exc()
            summary.append([name, f"FAILED: {type(err).__name__}: {err}", None, time.perf_counter() - start])
            continue
        print(path.read_text(encoding="utf-8"), flush=True)
        summary.append([name, report.headline or report.title, report.goal_met, time.perf_counter() - start])
    if len(methods) > 1:
        table = markdown_table(["method", "headline", "goal met", "seconds"], summary)
        base = Path(out_dir) if out_dir is not None else default_results_dir()
        target = base / "quick" if quick else base
        atomic_write_text(
            target / "summary.md", f"# lightning-papers benchmark summary{' (quick)' if quick else ''}\n\n{table}\n"
        )
        print("\n" + table)
        if any(str(row[1]).startswith("FAILED") for row in summary):
            raise RuntimeError("some benchmarks failed; see the summary table above")
