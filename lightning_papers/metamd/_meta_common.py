"""Pieces shared by the static and adaptive meta-training loops."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_papers.files import atomic_write

__all__ = ["draw_tasks", "meta_update", "progress_bar", "save_checkpoint"]


def draw_tasks(seed: int, step: int, pool: int, n: int, max_warm: int) -> tuple[list[int], list[int]]:
    """Task indices and warm-start lengths of meta-step ``step``: they depend only on (seed, step), so resume is exact."""
    rng = random.Random(seed * 7919 + step)
    ks = [rng.randrange(pool) for _ in range(n)]
    return ks, [rng.randint(0, max_warm) for _ in ks]


def meta_update(
    mirror_map: nn.Module, meta_opt: torch.optim.Optimizer, grad_clip: float, any_obj: bool
) -> None:
    """Clip and apply the accumulated meta-gradient unless it is missing or non-finite."""
    grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in mirror_map.parameters())
    if any_obj and grads_ok:
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(mirror_map.parameters(), grad_clip)
        meta_opt.step()


def progress_bar(progress: bool, total: int, start: int, desc: str):
    """A tqdm bar (or None)."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)


def save_checkpoint(path: Path, blob: dict[str, Any]) -> None:
    """Write a meta-training checkpoint atomically (a crash mid-write leaves the previous one)."""
    with atomic_write(path, "wb", encoding=None) as handle:
        torch.save(blob, handle)
