"""Typed events and a tiny publish/subscribe bus shared by the three HeuriMentor callbacks.

The Training State Monitor (TSM) *publishes* what it sees; the Adaptive Training Engine (ATE) and the
Data Management Unit (DMU) *subscribe* and act. Every decision carried by an event has already been
reduced across ranks, so all ranks receive the same events in the same order.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = [
    "CheckpointEvent",
    "Event",
    "EventBus",
    "HeldOutEvent",
    "PlateauEvent",
    "RollbackEvent",
    "SkipEvent",
    "SpikeEvent",
    "StageChangeEvent",
    "StepEvent",
    "WeightsChangeEvent",
    "get_bus",
]


@dataclass
class Event:
    """Base class: the global step and the number of tokens seen (all ranks) when it happened."""

    step: int
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass
class SpikeEvent(Event):
    """A loss (or gradient-norm) spike, decided before the optimizer step.

    Attributes:
        loss: this rank's loss at the spiky step (NaN/inf for a non-finite loss).
        reference: what the detector compared against (e.g. last good loss), on the rank that fired.
        detectors: names of the detectors that fired on any rank.
        consecutive: spiky steps in a row, this one included.
        non_finite: the loss or gradient norm was NaN/inf on some rank.
    """

    loss: float = float("nan")
    reference: float = float("nan")
    detectors: list[str] = field(default_factory=list)
    consecutive: int = 1
    non_finite: bool = False


@dataclass
class StepEvent(Event):
    """End of a training step: the rank-mean loss, gradient norm, per-source loss and spike attribution.

    ``culprit`` is the source whose loss rose most above its own running mean at the spiky step
    ``culprit_step`` (reported one step later: the per-sample losses of a step are known after its update).
    """

    loss: float = float("nan")
    grad_norm: float = float("nan")
    source_loss: dict[str, float] = field(default_factory=dict)
    spike: bool = False
    skipped: bool = False
    culprit: str | None = None
    culprit_step: int | None = None


@dataclass
class PlateauEvent(Event):
    """The smoothed loss stopped falling: relative decrease over ``window`` steps below the tolerance."""

    slope: float = 0.0
    window: int = 0


@dataclass
class HeldOutEvent(Event):
    """Periodic held-out loss per source."""

    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class SkipEvent(Event):
    """The ATE skipped the optimizer and scheduler step."""

    reason: str = "spike"


@dataclass
class RollbackEvent(Event):
    """The ATE restored the snapshot taken at ``to_step`` and excluded sample positions ``[start, stop)``."""

    to_step: int = 0
    excluded: tuple[int, int] = (0, 0)
    reason: str = ""


@dataclass
class CheckpointEvent(Event):
    """A good-state snapshot (ATE) or a checkpoint file was written."""

    path: str | None = None


@dataclass
class StageChangeEvent(Event):
    """The mixture moved to another stage."""

    stage: int = 0
    name: str = ""
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class WeightsChangeEvent(Event):
    """The DMU changed the mixture weights of the current stage (online policy, spike down-weighting, user)."""

    weights: dict[str, float] = field(default_factory=dict)
    reason: str = ""


E = TypeVar("E", bound=Event)


class EventBus:
    """Synchronous publish/subscribe: handlers run in subscription order when an event is published.

    Handlers subscribed to a base class also receive its subclasses (``Event`` receives everything).

    Example::

        >>> bus = EventBus()
        >>> seen = []
        >>> bus.subscribe(SpikeEvent, seen.append)
        >>> bus.publish(SpikeEvent(step=3, tokens=96, loss=9.0))
        >>> seen[0].step, len(bus.history)
        (3, 1)
    """

    def __init__(self, keep_history: int = 1024) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = defaultdict(list)
        self.history: deque[Event] = deque(maxlen=keep_history)  # bounded: recent events only
        self.keep_history = keep_history

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise TypeError(f"event_type must be an Event subclass, got {event_type!r}")
        if handler not in self._handlers[event_type]:
            self._handlers[event_type].append(handler)

    def publish(self, event: Event) -> None:
        if not isinstance(event, Event):
            raise TypeError(f"can only publish Event instances, got {type(event).__name__}")
        self.history.append(event)
        for cls in type(event).__mro__:
            for handler in list(self._handlers.get(cls, ())):
                handler(event)

    def of_type(self, event_type: type[E]) -> list[E]:
        """Past events of a type (most recent ``keep_history`` events of all types are kept)."""
        return [e for e in self.history if isinstance(e, event_type)]


def get_bus(trainer: Any) -> EventBus:
    """The bus shared by the HeuriMentor callbacks of ``trainer``.

    The bus belongs to the callbacks (nothing is stored on the Trainer): the first HeuriMentor callback in
    ``trainer.callbacks`` that holds one is asked for it; if none holds one yet, a new bus is returned and
    the caller (a callback in its ``setup``) keeps it, so its siblings find it next.

    Example::

        >>> class T:
        ...     callbacks = []
        >>> isinstance(get_bus(T()), EventBus)
        True
    """
    for cb in getattr(trainer, "callbacks", None) or ():
        bus = getattr(cb, "_bus", None)
        if isinstance(bus, EventBus):
            return bus
    return EventBus()
