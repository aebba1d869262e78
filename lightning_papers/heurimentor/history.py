"""Bounded per-step history of the Training State Monitor: a ring buffer, a decimated whole-run trace
and running summaries. Its state has the same size after 10^3 or 10^7 steps (constant checkpoint size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["RecordRing", "StepHistory"]

FIELDS = ("step", "tokens", "loss", "grad_norm", "spike", "skipped")


class StepHistory:
    """The last ``capacity`` steps exactly, plus a ``trace_capacity``-point trace of the whole run.

    * ``recent``: ring buffer of :data:`FIELDS` for the last ``capacity`` steps (float64 rows);
    * ``trace``: every ``stride``-th step since the start; when full, every other point is dropped and the
      stride doubles (so it always spans the whole run with at most ``trace_capacity`` points);
    * ``spikes``: ring buffer of the last ``capacity`` spiky steps (step, tokens, loss, skipped);
    * per-source loss: one ring buffer per source (NaN where not reduced that step);
    * ``summary``: counts and loss extremes over the whole run.

    ``history["loss"]`` etc. return the recent window as a list (oldest first).

    Example::

        >>> h = StepHistory(capacity=4, trace_capacity=4)
        >>> for s in range(10):
        ...     h.append(step=s, tokens=10 * s, loss=1.0 / (s + 1), spike=s == 7)
        >>> h["step"], h.summary["spikes"], h.trace_steps()
        ([6, 7, 8, 9], 1, [0, 4, 8])
    """

    def __init__(self, capacity: int = 2048, trace_capacity: int = 1024) -> None:
        if capacity < 1 or trace_capacity < 2:
            raise ValueError(f"need capacity >= 1 and trace_capacity >= 2, got {capacity}, {trace_capacity}")
        self.capacity, self.trace_capacity = int(capacity), int(trace_capacity)
        nan = float("nan")
        self.recent = torch.full((self.capacity, len(FIELDS)), nan, dtype=torch.float64)
        self.trace = torch.full((self.trace_capacity, len(FIELDS)), nan, dtype=torch.float64)
        self.spikes = torch.full((self.capacity, 4), nan, dtype=torch.float64)
        self.source: dict[str, torch.Tensor] = {}
        self.count = 0  # steps appended in total
        self.trace_n, self.stride = 0, 1
        self.spike_count = 0
        self.summary: dict[str, float] = {"steps": 0, "spikes": 0, "skipped": 0, "min_loss": math.inf,
                                          "max_loss": -math.inf, "last_loss": nan}

    # ------------------------------------------------------------------ writing
    def append(self, step: int, tokens: int, loss: float, grad_norm: float = float("nan"), spike: bool = False,
               skipped: bool = False, source_loss: Mapping[str, float] | None = None) -> None:
        row = torch.tensor([step, tokens, loss, grad_norm, float(spike), float(skipped)], dtype=torch.float64)
        slot = self.count % self.capacity
        self.recent[slot] = row
        for name in source_loss or {}:
            if name not in self.source:
                self.source[name] = torch.full((self.capacity,), float("nan"), dtype=torch.float64)
        for name, buf in self.source.items():
            buf[slot] = float((source_loss or {}).get(name, float("nan")))
        if self.count % self.stride == 0:
            if self.trace_n == self.trace_capacity:  # decimate: keep every other point, double the stride
                keep = self.trace[0 : self.trace_n : 2].clone()
                self.trace.fill_(float("nan"))
                self.trace[: len(keep)] = keep
                self.trace_n, self.stride = len(keep), self.stride * 2
            if self.count % self.stride == 0:
                self.trace[self.trace_n] = row
                self.trace_n += 1
        if spike:
            self.spikes[self.spike_count % self.capacity] = torch.tensor([step, tokens, loss, float(skipped)],
                                                                         dtype=torch.float64)
            self.spike_count += 1
        self.count += 1
        s = self.summary
        s["steps"] += 1
        s["spikes"] += int(spike)
        s["skipped"] += int(skipped)
        if math.isfinite(loss):
            s["min_loss"], s["max_loss"] = min(s["min_loss"], loss), max(s["max_loss"], loss)
        s["last_loss"] = float(loss)

    # ------------------------------------------------------------------ reading
    def _ordered(self, buf: torch.Tensor, count: int) -> torch.Tensor:
        n = min(count, len(buf))
        start = count % len(buf) if count > len(buf) else 0
        idx = (torch.arange(n) + start) % len(buf)
        return buf[idx]

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def __getitem__(self, field: str) -> list:
        """The recent window of one field (``"source_loss"``: a list of per-step dicts)."""
        if field == "source_loss":
            cols = {k: self._ordered(v, self.count).tolist() for k, v in self.source.items()}
            return [{k: c[i] for k, c in cols.items() if not math.isnan(c[i])} for i in range(len(self))]
        if field not in FIELDS:
            raise KeyError(f"unknown history field {field!r}; expected one of {FIELDS + ('source_loss',)}")
        col = self._ordered(self.recent, self.count)[:, FIELDS.index(field)].tolist()
        if field in ("step", "tokens"):
            return [int(v) for v in col]
        if field in ("spike", "skipped"):
            return [bool(v) for v in col]
        return col

    def trace_steps(self) -> list[int]:
        return [int(v) for v in self.trace[: self.trace_n, 0].tolist()]

    def series(self) -> dict[str, list]:
        """The whole-run trace followed by the recent window (for plots), as lists per field."""
        recent = self._ordered(self.recent, self.count)
        first = recent[0, 0].item() if len(recent) else math.inf
        old = self.trace[: self.trace_n]
        rows = torch.cat([old[old[:, 0] < first], recent]) if len(recent) else old
        return {f: rows[:, i].tolist() for i, f in enumerate(FIELDS)}

    def spike_rows(self) -> list[tuple[int, int, float, bool]]:
        """(step, tokens, loss, skipped) of the last ``capacity`` spiky steps."""
        return [(int(a), int(b), float(c), bool(d)) for a, b, c, d in self._ordered(self.spikes, self.spike_count).tolist()]

    def source_series(self) -> dict[str, tuple[list[int], list[float]]]:
        """Per source: (tokens, loss) over the recent window where it was reduced."""
        tok = self["tokens"]
        out = {}
        for name, buf in self.source.items():
            vals = self._ordered(buf, self.count).tolist()
            pts = [(t, v) for t, v in zip(tok, vals) if not math.isnan(v)]
            out[name] = ([t for t, _ in pts], [v for _, v in pts])
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity, "trace_capacity": self.trace_capacity, "recent": self.recent.clone(),
            "trace": self.trace.clone(), "spikes": self.spikes.clone(), "source": {k: v.clone() for k, v in self.source.items()},
            "counters": torch.tensor([self.count, self.trace_n, self.stride, self.spike_count], dtype=torch.int64),
            "summary": torch.tensor([self.summary[k] for k in ("steps", "spikes", "skipped", "min_loss", "max_loss", "last_loss")],
                                    dtype=torch.float64),
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or int(state["trace_capacity"]) != self.trace_capacity:
            # a different capacity: keep what fits (the newest rows)
            other = StepHistory(int(state["capacity"]), int(state["trace_capacity"]))
            other.load_state_dict(state)
            self.__init__(self.capacity, self.trace_capacity)
            series = other._ordered(other.recent, other.count)
            src = {k: other._ordered(v, other.count) for k, v in other.source.items()}
            for i, row in enumerate(series.tolist()):
                self.append(int(row[0]), int(row[1]), row[2], row[3], bool(row[4]), bool(row[5]),
                            {k: float(v[i]) for k, v in src.items() if not math.isnan(float(v[i]))})
            return
        self.recent, self.trace, self.spikes = state["recent"].clone(), state["trace"].clone(), state["spikes"].clone()
        self.source = {k: v.clone() for k, v in state["source"].items()}
        self.count, self.trace_n, self.stride, self.spike_count = (int(v) for v in state["counters"].tolist())
        vals = state["summary"].tolist()
        self.summary = dict(zip(("steps", "spikes", "skipped", "min_loss", "max_loss", "last_loss"), vals))
        for k in ("steps", "spikes", "skipped"):
            self.summary[k] = int(self.summary[k])


class RecordRing:
    """The last ``capacity`` records ``(step, tokens, {name: value})`` in a preallocated float64 table.

    Columns are added when a new name first appears (their number grows with sources or parameter types,
    never with steps), so the state has a constant size once every name has been seen. Iterating yields
    ``(step, tokens, dict)`` tuples, oldest first.

    Example::

        >>> r = RecordRing(2)
        >>> for s in range(3):
        ...     r.append(s, 10 * s, {"a": s / 2})
        >>> list(r)
        [(1, 10, {'a': 0.5}), (2, 20, {'a': 1.0})]
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.names: list[str] = []
        self.table = torch.full((self.capacity, 2), float("nan"), dtype=torch.float64)
        self.count = 0

    def append(self, step: int, tokens: int, values: Mapping[str, float]) -> None:
        for k in values:
            if k not in self.names:
                self.names.append(k)
                self.table = torch.cat([self.table, torch.full((self.capacity, 1), float("nan"), dtype=torch.float64)], 1)
        row = torch.full((2 + len(self.names),), float("nan"), dtype=torch.float64)
        row[0], row[1] = float(step), float(tokens)
        for k, v in values.items():
            row[2 + self.names.index(k)] = float(v)
        self.table[self.count % self.capacity] = row
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def __iter__(self):
        n = len(self)
        start = self.count % self.capacity if self.count > self.capacity else 0
        for i in range(n):
            row = self.table[(start + i) % self.capacity].tolist()
            yield int(row[0]), int(row[1]), {k: row[2 + j] for j, k in enumerate(self.names) if not math.isnan(row[2 + j])}

    def __getitem__(self, i: int):
        return list(self)[i]

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "table": self.table.clone(), "count": torch.tensor(self.count)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        table = state["table"]
        if table.shape[0] != self.capacity:  # another capacity: replay the newest records
            other = RecordRing(table.shape[0])
            other.load_state_dict(state)
            self.__init__(self.capacity)
            for rec in other:
                self.append(*rec)
            return
        self.names, self.table, self.count = list(state["names"]), table.clone(), int(state["count"])
