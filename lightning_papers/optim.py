"""Learning-rate schedules shared by the methods' LightningModules."""

from __future__ import annotations

import math

import torch

__all__ = ["warmup_cosine"]


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base LR, then cosine decay to ``min_lr_ratio * base_lr``.

    Args:
        optimizer: the optimizer whose param-group LRs are scaled.
        warmup_steps: steps of linear warmup (0 disables warmup).
        total_steps: total optimizer steps; after it the LR stays at the floor.
        min_lr_ratio: floor as a fraction of the base LR, in [0, 1].

    Returns:
        A ``LambdaLR`` to step once per optimizer step.

    Raises:
        ValueError: on negative step counts or a floor outside [0, 1].

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = warmup_cosine(opt, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
        >>> [round(g["lr"], 3) for g in opt.param_groups]
        [0.5]
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"warmup_steps must be >= 0 and total_steps >= 1, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
