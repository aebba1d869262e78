"""Skipping an optimizer step the Lightning way: an optimizer wrapper, with the LR scheduler held back.

The :class:`~lightning_papers.heurimentor.AdaptiveTrainingEngine` replaces each optimizer in
``trainer.strategy.optimizers`` by a :class:`SkipStepOptimizer` at ``on_fit_start`` (the pattern of
OLMo-core's ``SkipStepOptimizer``), and each step-interval scheduler in
``trainer.strategy.lr_scheduler_configs`` by a :class:`HeldScheduler`. Lightning then calls
``SkipStepOptimizer.step(closure)``: the closure (forward, backward and the monitor's rank-reduced
decision in ``on_before_optimizer_step``) always runs; when a skip was requested, the inner optimizer's
``step`` is not called, and the held scheduler ignores the following ``step()``. Nothing else is
patched: no module or optimizer method is replaced at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["HeldScheduler", "SkipStepOptimizer"]


class SkipStepOptimizer(torch.optim.Optimizer):
    """Wrap an optimizer so that a step can be skipped after its closure ran.

    ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's (shared, not copied), and
    ``state_dict`` / ``load_state_dict`` are the inner optimizer's, so checkpoints are unchanged.

    Args:
        optimizer: the optimizer to wrap.
        on_skip: called with no argument each time a step is skipped.

    Example::

        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = SkipStepOptimizer(torch.optim.SGD([p], lr=1.0))
        >>> def closure():
        ...     p.grad = torch.ones(2)
        ...     opt.request_skip()  # decided inside the closure, like the monitor does
        ...     return 1.0
        >>> opt.step(closure), p.tolist(), opt.skipped
        (1.0, [1.0, 1.0], True)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, on_skip: Callable[[], None] | None = None) -> None:
        # deliberately no super().__init__: the parameter groups and state live in the inner optimizer
        if isinstance(optimizer, SkipStepOptimizer):
            raise TypeError("optimizer is already a SkipStepOptimizer")
        self.inner = optimizer
        self.on_skip = on_skip
        self._skip_requested = False
        self.skipped = False  # whether the last step() was skipped
        self.skipped_steps = 0

    # shared with the inner optimizer (load_state_dict rebinds the inner attributes, so never cache them)
    @property
    def param_groups(self):  # type: ignore[override]
        return self.inner.param_groups

    @param_groups.setter
    def param_groups(self, value) -> None:
        self.inner.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        return self.inner.state

    @state.setter
    def state(self, value) -> None:
        self.inner.state = value

    @property
    def defaults(self):  # type: ignore[override]
        return self.inner.defaults

    @defaults.setter
    def defaults(self, value) -> None:
        self.inner.defaults = value

    def request_skip(self) -> None:
        """Skip the update of the step in progress (call before or inside its closure)."""
        self._skip_requested = True

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None  # forward, backward, the all-reduced decision
        if self._skip_requested:
            self._skip_requested = False
            self.skipped = True
            self.skipped_steps += 1
            if self.on_skip is not None:
                self.on_skip()
            return loss
        self.skipped = False
        return self.inner.step(**kwargs) if closure is None else self.inner.step(closure=lambda: loss, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.inner.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"SkipStepOptimizer({self.inner!r})"


class HeldScheduler:
    """Proxy of an LR scheduler whose ``step()`` does nothing right after a skipped optimizer step.

    Every other attribute (``state_dict``, ``last_epoch``, ``base_lrs``, ``get_last_lr`` ...) is the
    wrapped scheduler's, so checkpoints and LR monitors see the real scheduler.

    Example::

        >>> p = torch.nn.Parameter(torch.ones(1))
        >>> opt = SkipStepOptimizer(torch.optim.SGD([p], lr=1.0))
        >>> sched = HeldScheduler(torch.optim.lr_scheduler.StepLR(opt.inner, 1, gamma=0.5), opt)
        >>> opt.skipped = True
        >>> sched.step(); sched.last_epoch
        0
    """

    def __init__(self, scheduler: Any, optimizer: SkipStepOptimizer) -> None:
        object.__setattr__(self, "scheduler", scheduler)
        object.__setattr__(self, "skip_optimizer", optimizer)

    def step(self, *args: Any, **kwargs: Any) -> None:
        if self.skip_optimizer.skipped:
            return None  # the LR schedule does not advance on a skipped step
        return self.scheduler.step(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "scheduler"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.scheduler, name, value)

    def __repr__(self) -> str:
        return f"HeldScheduler({self.scheduler!r})"
