"""The monitor's PNG dashboard, drawn on a ``matplotlib.figure.Figure`` (no pyplot, no global backend change)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_papers.files import atomic_write

__all__ = ["save_dashboard"]


def save_dashboard(
    path: str | Path,
    history: Any,
    heldout: Sequence[tuple[int, int, dict[str, float]]] = (),
    weights: Sequence[tuple[int, int, dict[str, float]]] = (),
    rollbacks: Sequence[tuple[int, int]] = (),
    trajectory: Sequence[tuple[int, dict[str, float]]] = (),
) -> Path:
    """Write a 2x2 PNG: loss (spikes, skips, rollbacks), per-source loss, mixture weights, weight trajectory.

    ``history`` is a :class:`~lightning_papers.heurimentor.history.StepHistory`. The file is written
    atomically (temporary name, then ``os.replace``).
    """

    from matplotlib.figure import Figure

    series = history.series()
    tok = np.asarray(series["tokens"], dtype=float)
    loss = np.asarray(series["loss"], dtype=float)
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    ax.plot(tok, loss, lw=1, label="train loss (rank mean)")
    spikes = history.spike_rows()
    finite = loss[np.isfinite(loss)]
    top = float(finite.max()) if finite.size else 1.0
    if spikes:
        st = np.asarray([t for _, t, _, _ in spikes], float)
        sl = np.nan_to_num(np.asarray([v for _, _, v, _ in spikes], float), nan=top, posinf=top)
        ax.scatter(st, sl, c="red", marker="x", label="spike", zorder=3)
        skipped = np.asarray([s for _, _, _, s in spikes], bool)
        if skipped.any():
            ax.scatter(st[skipped], sl[skipped], facecolors="none", edgecolors="orange", label="skipped step", zorder=3)
    steps = np.asarray(series["step"], dtype=float)
    for i, (step, _) in enumerate(rollbacks):
        if len(steps):
            j = min(int(np.searchsorted(steps, step)), len(tok) - 1)
            ax.axvline(tok[j], color="purple", ls="--", lw=1, label="rollback" if i == 0 else None)
    ax.set(title="training loss", xlabel="tokens", ylabel="loss")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    src = history.source_series()
    for k, (t, v) in sorted(src.items()):
        ax.plot(t, v, lw=0.8, label=f"train {k}")
    for k in sorted({k for _, _, d in heldout for k in d}):
        ax.plot([t for _, t, _ in heldout], [d.get(k, np.nan) for _, _, d in heldout], "o--", ms=3, label=f"held-out {k}")
    ax.set(title="per-source loss (recent window)", xlabel="tokens")
    if src or heldout:
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    if weights:
        names = sorted({k for _, _, w in weights for k in w})
        wt = [t for _, t, _ in weights] + [tok[-1] if len(tok) else 0]
        for k in names:
            ws = [w.get(k, 0.0) for _, _, w in weights]
            ax.step(wt, ws + ws[-1:], where="post", label=k)
        ax.legend(fontsize=8)
    ax.set(title="mixture weights", xlabel="tokens", ylim=(0, 1))
    ax = axes[1, 1]
    if trajectory:
        for k in sorted({k for _, d in trajectory for k in d}):
            ax.plot([t for t, _ in trajectory], [d.get(k, np.nan) for _, d in trajectory], marker=".", label=k)
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    ax.set(title="weight trajectory: Fréchet(std over layers) per 1B tokens", xlabel="tokens")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", encoding=None) as handle:
        fig.savefig(handle, dpi=90, format="png")
    return path
