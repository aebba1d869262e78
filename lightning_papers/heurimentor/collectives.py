"""One collective per step, on the strategy's root device.

NCCL (every multi-GPU run) reduces only CUDA tensors, and each collective is a synchronisation point.
The monitor therefore gathers every value it needs summed over ranks during a step (loss, gradient sum
of squares, non-finite flag, tokens, per-detector flags, per-source loss sums, weight-trajectory sums) in
a :class:`StepReducer`, and :meth:`StepReducer.reduce` sends them as *one* float64 tensor through
``trainer.strategy.reduce`` on ``trainer.strategy.root_device``. Which parts are added at a step depends
only on rank-identical state, so every rank issues the same sequence of collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["StepReducer"]


class StepReducer:
    """Collect named float vectors during a step; sum them over ranks with a single collective.

    Example::

        >>> class _Strategy:  # a single process: the strategy's reduce is the identity
        ...     root_device = torch.device("cpu")
        ...     def reduce(self, tensor, reduce_op="sum"):
        ...         return tensor
        >>> class _Trainer:
        ...     strategy, world_size = _Strategy(), 1
        >>> r = StepReducer()
        >>> r.add("loss", [2.5])
        >>> r.add("flags", torch.tensor([0.0, 1.0]))
        >>> {k: v.tolist() for k, v in r.reduce(_Trainer()).items()}
        {'loss': [2.5], 'flags': [0.0, 1.0]}
    """

    def __init__(self) -> None:
        self._parts: list[tuple[str, Any]] = []
        self.calls = 0  # collectives issued (for tests and the benchmark)

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, name: str, values: Sequence[float] | torch.Tensor) -> None:
        """Queue ``values`` (Python floats or a tensor on any device) under ``name`` for the next reduce."""
        if any(n == name for n, _ in self._parts):
            raise ValueError(f"part {name!r} was already added in this step")
        self._parts.append((name, values))

    def reduce(self, trainer: Any) -> dict[str, torch.Tensor]:
        """Sum every queued part over ranks (one ``trainer.strategy.reduce`` call); return CPU float64 parts."""
        parts, self._parts = self._parts, []
        if not parts:
            return {}
        strategy = trainer.strategy
        device = strategy.root_device
        pieces, sizes = [], []
        host = [float(x) for _, v in parts if not isinstance(v, torch.Tensor) for x in v]
        host_t = torch.tensor(host, dtype=torch.float64).to(device, non_blocking=True) if host else None
        offset = 0
        for _, v in parts:
            if isinstance(v, torch.Tensor):
                t = v.detach().reshape(-1).to(device=device, dtype=torch.float64)
            else:
                n = len(v)
                t = host_t[offset : offset + n]
                offset += n
            pieces.append(t)
            sizes.append(t.numel())
        flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0].clone()
        if getattr(trainer, "world_size", 1) > 1:
            flat = strategy.reduce(flat, reduce_op="sum")
            self.calls += 1
        flat = flat.to("cpu", torch.float64)
        out, i = {}, 0
        for (name, _), n in zip(parts, sizes):
            out[name] = flat[i : i + n]
            i += n
        return out
