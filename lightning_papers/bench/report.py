"""One writer for every benchmark table: markdown under ``benchmarks/results/`` and the same on stdout."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lightning_papers.files import atomic_write_text

__all__ = ["BenchReport", "device_description", "markdown_table", "mean_std", "render", "write_report"]


@dataclass
class BenchReport:
    """What a benchmark module's ``run(quick, out_dir)`` returns.

    Args:
        name: method name, also the file name (``<name>.md``).
        title: table title.
        columns: column headers.
        rows: table rows (numbers are formatted with 4 significant digits).
        notes: markdown shown under the table: settings, the goal, the verdict, the paper's numbers.
        headline: one line for the ``bench all`` summary.
        goal_met: whether the benchmark's goal was met in this run (None when it has no single goal).
        figures: file names of plots saved inside ``out_dir``.
    """

    name: str
    title: str
    columns: list[str]
    rows: list[list]
    notes: str = ""
    headline: str = ""
    goal_met: bool | None = None
    figures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"row {i} of {self.name!r} has {len(row)} cells, expected {len(self.columns)}")


def mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``"mean ± std"`` of ``values`` (sample std; just the mean for one value).

    Example::

        >>> mean_std([0.8, 0.82, 0.84])
        '0.820 ± 0.020'
    """
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return "n/a"
    if arr.size == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else ("yes" if value else "no")
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def device_description() -> str:
    """The hardware benchmarks ran on: the CUDA device's name when one is in use, else the CPU and its core count.

    Example::

        >>> isinstance(device_description(), str)
        True
    """
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU, {cores} cores, {torch.get_num_threads()} torch threads"


def render(report: BenchReport, command: str, seconds: float | None = None) -> str:
    """The markdown document for one report."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# {report.title}", "", markdown_table(report.columns, report.rows), ""]
    if report.notes:
        parts += [report.notes.strip(), ""]
    for fig in report.figures:
        parts += [f"![{fig}]({fig})", ""]
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    parts.append(
        f"_Made by `{command}` on {stamp}{took} ({platform.machine()}, Python {platform.python_version()}, {device_description()})._"
    )
    return "\n".join(parts) + "\n"


def write_report(report: BenchReport, out_dir: Path, command: str, seconds: float | None = None) -> Path:
    """Write ``<out_dir>/<name>.md`` and return its path."""
    return atomic_write_text(Path(out_dir) / f"{report.name}.md", render(report, command, seconds))
