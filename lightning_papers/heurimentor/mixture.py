"""Staged data mixtures: :class:`Stage`, the resumable :class:`MixtureSampler` and :class:`MixtureDataModule`.

Sampling model (plain Python, no Lightning needed):

* the training stream is a sequence of *global positions* ``0, 1, 2, ...``; positions are generated in
  *rounds* of ``world_size`` and rank ``r`` takes the ``r``-th position of each round, so ranks never
  share a position and together consume exactly the single-process stream;
* the source of position ``g`` is chosen by inverse-CDF on a counter-based uniform ``u(seed, g)``
  (SplitMix64), so it depends only on the seed, the position and the weights in force;
* inside a source, windows are visited in a seeded permutation per pass (without replacement), so
  no window repeats before the source is exhausted;
* a stage ends exactly when the tokens consumed in it reach its budget (Aquila2 §3.3: K6 → K61–63 → K64);
* live changes (``set_weights``, ``advance_stage``, ``add_source``, ``exclude_range``) are logged with the
  position where they take effect, and the state *before* each round is kept, so the state at the
  position after the last *trained* sample can be saved even though the DataLoader prefetches.
"""

from __future__ import annotations

import bisect
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Sampler

from lightning_papers.heurimentor.stages import (  # noqa: F401  (re-exported)
    Draw,
    Stage,
    _mix64,
    _uniform,
    parse_stages,
    permute_index,
)

__all__ = ["Draw", "MixtureSampler", "Stage", "parse_stages", "permute_index"]

@dataclass
class _State:
    position: int = 0  # next global position to generate (start of the next round)
    consumed: int = 0  # samples consumed so far (all ranks)
    stage: int = 0
    stage_start: int = 0  # samples consumed when the current stage began
    weights: dict[str, float] = field(default_factory=dict)
    drawn: dict[str, int] = field(default_factory=dict)  # per source: windows taken (incl. blocked ones)
    used: dict[str, int] = field(default_factory=dict)  # per source: windows actually yielded
    excluded: list[list[int]] = field(default_factory=list)
    blocked: set[int] = field(default_factory=set)
    sizes: dict[str, int] = field(default_factory=dict)  # registration order = source id order


class MixtureSampler(Sampler):
    """Deterministic, resumable, rank-aware sampler over named sources with a staged mixture.

    Iterates :class:`Draw` ``(source, index, position)`` tuples (unpack the first two for the
    ``(source_name, index)`` pair). Ranks are handled here: hand it to Lightning with
    ``Trainer(use_distributed_sampler=False)`` (otherwise Lightning would wrap it in a DistributedSampler).
    Memory is O(1) in the number of windows: within-source orders are computed permutations, not arrays.

    Args:
        source_sizes: number of windows in each source (insertion order fixes the source ids).
        stages: the schedule; every stage but the last needs a token budget.
        seed: seed of the source choice and of the within-source permutations.
        rank: this data-parallel rank.
        world_size: number of data-parallel ranks.
        tokens_per_sample: tokens in one window (stage budgets are in tokens).
        samples_per_epoch: global samples per ``__iter__`` (default: the total number of windows).

    Raises:
        ValueError: on an unknown source in a stage, a missing budget, bad sizes or a bad rank.

    Example::

        >>> s = MixtureSampler({"a": 100, "b": 100}, [Stage({"a": 0.5, "b": 0.5})], seed=0)
        >>> draws = [d for _, d in zip(range(4), s)]
        >>> [d.position for d in draws]
        [0, 1, 2, 3]
    """

    _MAX_SNAPSHOTS = 1024

    def __init__(
        self,
        source_sizes: Mapping[str, int],
        stages: Sequence[Stage | Mapping[str, Any]],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tokens_per_sample: int = 1,
        samples_per_epoch: int | None = None,
    ) -> None:
        if not isinstance(source_sizes, Mapping) or not source_sizes:
            raise ValueError(f"source_sizes must be a non-empty mapping name -> size, got {source_sizes!r}")
        for name, size in source_sizes.items():
            if int(size) != size or size < 1:
                raise ValueError(f"source {name!r} must have a positive integer size, got {size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if tokens_per_sample < 1:
            raise ValueError(f"tokens_per_sample must be >= 1, got {tokens_per_sample}")
        self.stages = parse_stages(stages)
        if not self.stages:
            raise ValueError("stages must contain at least one Stage")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        self.tokens_per_sample = int(tokens_per_sample)
        sizes = {str(k): int(v) for k, v in source_sizes.items()}
        self._check_stages(self.stages, sizes)
        self._check_budgets()
        self.samples_per_epoch = int(samples_per_epoch) if samples_per_epoch else sum(sizes.values())
        if self.samples_per_epoch < self.world_size:
            raise ValueError(f"samples_per_epoch={self.samples_per_epoch} is smaller than world_size={self.world_size}")
        self._s = _State(
            weights=self._full_weights(self.stages[0].weights, sizes),
            drawn={k: 0 for k in sizes},
            used={k: 0 for k in sizes},
            sizes=sizes,
        )
        self._pending: list[tuple[int, str, Any]] = []  # (position, op, payload), applied before that round
        self._oplog: list[tuple[int, str, Any]] = []
        self._snapshots: OrderedDict[int, _State] = OrderedDict()
        self._warned_end = False

    # ---------------------------------------------------------------- validation and helpers
    @staticmethod
    def _check_stages(stages: list[Stage], sizes: Mapping[str, int]) -> None:
        for i, st in enumerate(stages):
            unknown = set(st.weights) - set(sizes)
            if unknown:
                raise ValueError(
                    f"stage {i} ({st.name!r}) uses unknown source(s) {sorted(unknown)}; known sources: {list(sizes)}"
                )
            if st.tokens is None and i < len(stages) - 1:
                raise ValueError(f"stage {i} ({st.name!r}) has no token budget but is not the last stage")

    def _check_budgets(self) -> None:
        round_tokens = self.tokens_per_sample * self.world_size
        for i, st in enumerate(self.stages):
            if st.tokens is not None and st.tokens % round_tokens:
                raise ValueError(
                    f"stage {i} ({st.name!r}): token budget {st.tokens} is not a multiple of tokens_per_sample x "
                    f"world_size = {self.tokens_per_sample} x {self.world_size} = {round_tokens}; the stage would end "
                    "inside a round of ranks (choose budgets that every world size you run on divides)"
                )

    @staticmethod
    def _full_weights(weights: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
        return {k: float(weights.get(k, 0.0)) for k in sizes}

    def _validate_weights(self, weights: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
        unknown = set(weights) - set(sizes)
        if unknown:
            raise ValueError(f"unknown source(s) {sorted(unknown)}; known sources: {list(sizes)}")
        return self._full_weights(Stage(dict(weights)).weights, sizes)

    @property
    def sources(self) -> list[str]:
        """Source names in id order (the id of a source is its index here)."""
        return list(self._s.sizes)

    @property
    def source_sizes(self) -> dict[str, int]:
        return dict(self._s.sizes)

    def source_offset(self, source: str) -> int:
        """First global sample id of ``source`` (ids are ``offset + index``; stable when sources are added)."""
        offset = 0
        for name, size in self._s.sizes.items():
            if name == source:
                return offset
            offset += size
        for _, op, payload in self._pending:  # a source added but not yet applied
            if op == "add_source":
                if payload[0] == source:
                    return offset
                offset += payload[1]
        raise ValueError(f"unknown source {source!r}; known sources: {self.sources}")

    def sample_id(self, draw: Draw) -> int:
        """Globally unique id of the window of ``draw``."""
        return self.source_offset(draw.source) + draw.index

    @property
    def stage_index(self) -> int:
        """Index of the stage of the next generated sample (ignores changes not yet applied)."""
        return self._s.stage

    @property
    def weights(self) -> dict[str, float]:
        """Weights for the next samples, including changes that are logged but not yet applied."""
        w = dict(self._s.weights)
        stage = self._s.stage
        for _, op, payload in self._pending:
            if op == "weights":
                w = dict(payload)
            elif op == "advance" and stage + 1 < len(self.stages):
                stage += 1
                w = self._full_weights(self.stages[stage].weights, self._s.sizes)
            elif op == "add_source":
                w.setdefault(payload[0], 0.0)
        return w

    @property
    def consumed_samples(self) -> int:
        return self._s.consumed

    @property
    def consumed_tokens(self) -> int:
        return self._s.consumed * self.tokens_per_sample

    @property
    def consumed_per_source(self) -> dict[str, int]:
        return dict(self._s.used)

    @property
    def position(self) -> int:
        """The next global position to be generated."""
        return self._s.position

    @property
    def excluded_ranges(self) -> list[tuple[int, int]]:
        return [tuple(r) for r in self._s.excluded]

    @property
    def blocked_ids(self) -> set[int]:
        return set(self._s.blocked)

    def __len__(self) -> int:
        return self.samples_per_epoch // self.world_size

    def set_epoch(self, epoch: int) -> None:  # the stream continues across epochs
        self.epoch = epoch

    # ---------------------------------------------------------------- live operations
    def _log(self, op: str, payload: Any) -> None:
        entry = (self._s.position, op, payload)
        self._pending.append(entry)
        self._oplog.append(entry)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Use ``weights`` for the current stage from the next generated round on (until the stage ends)."""
        sizes = dict(self._s.sizes)
        for _, op, payload in self._pending:
            if op == "add_source":
                sizes[payload[0]] = payload[1]
        self._log("weights", self._validate_weights(weights, sizes))

    def advance_stage(self) -> None:
        """End the current stage now (the next stage starts with the next generated round)."""
        self._log("advance", None)

    def add_source(self, name: str, size: int) -> None:
        """Register a new source (weight 0 until ``set_weights`` gives it some)."""
        if name in self._s.sizes or any(op == "add_source" and p[0] == name for _, op, p in self._pending):
            raise ValueError(f"source {name!r} already exists")
        if int(size) != size or size < 1:
            raise ValueError(f"source {name!r} must have a positive integer size, got {size!r}")
        self._log("add_source", (str(name), int(size)))

    def exclude_range(self, start: int, stop: int) -> None:
        """Never train on global positions ``[start, stop)``, nor on the windows drawn there (PaLM-style skip).

        Typical use after a rollback: the sampler is back at ``start`` (the restored snapshot) and
        ``stop`` is where generation had reached; the windows those positions would have produced are
        blocked for the rest of training and the positions are skipped.
        """
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
        self._log("exclude", (int(start), int(stop)))

    # ---------------------------------------------------------------- generation
    def _perm_key(self, source: str, epoch: int) -> int:
        sid = self.sources.index(source)
        return _mix64((self.seed << 20) ^ (sid << 40) ^ epoch)

    def _apply_pending(self) -> None:
        s = self._s
        keep = []
        for entry in self._pending:
            pos, op, payload = entry
            if pos > s.position:
                keep.append(entry)
                continue
            if op == "weights":
                s.weights = self._full_weights(payload, s.sizes)
            elif op == "advance":
                self._enter_stage(s.stage + 1)
            elif op == "add_source":
                name, size = payload
                s.sizes[name] = size
                s.drawn[name], s.used[name] = 0, 0
                s.weights.setdefault(name, 0.0)
            elif op == "exclude":
                self._exclude(*payload)
        self._pending = keep

    def _enter_stage(self, index: int) -> None:
        s = self._s
        if index >= len(self.stages):
            if not self._warned_end:
                warnings.warn("the last stage's token budget is spent; continuing with its weights", stacklevel=3)
                self._warned_end = True
            return
        s.stage, s.stage_start = index, s.consumed
        s.weights = self._full_weights(self.stages[index].weights, s.sizes)

    def _draw_one(self, position: int) -> Draw:
        s = self._s
        budget = self.stages[s.stage].tokens
        if budget is not None and (s.consumed - s.stage_start) * self.tokens_per_sample >= budget:
            self._enter_stage(s.stage + 1)  # switch exactly when the budget is reached
        u = _uniform(self.seed, position)
        names = [k for k, w in s.weights.items() if w > 0]
        cum, acc = [], 0.0
        for k in names:
            acc += s.weights[k]
            cum.append(acc)
        i = min(bisect.bisect_right(cum, u * acc), len(names) - 1)
        source = names[i]
        size = s.sizes[source]
        offset = self.source_offset(source)
        for _ in range(size + 1):
            n = s.drawn[source]
            s.drawn[source] = n + 1
            index = permute_index(n % size, size, self._perm_key(source, n // size))
            if offset + index not in s.blocked:
                break
        else:
            raise RuntimeError(f"every window of source {source!r} is blocked by exclusions")
        s.used[source] += 1
        s.consumed += 1
        return Draw(source, index, position)

    def _exclude(self, start: int, stop: int) -> None:
        """Fast-forward over [start, stop): block the windows those positions draw, without consuming tokens."""
        s = self._s
        s.excluded.append([start, stop])
        if s.position < start or s.position >= stop:
            return
        keep = (s.consumed, s.stage, s.stage_start, dict(s.weights), dict(s.used))
        for pos in range(s.position, stop):
            d = self._draw_one(pos)
            s.blocked.add(self.source_offset(d.source) + d.index)
        s.consumed, s.stage, s.stage_start, s.weights, s.used = keep
        s.position = stop

    def _snapshot(self) -> None:
        s = self._s
        self._snapshots[s.position] = _State(
            s.position, s.consumed, s.stage, s.stage_start, dict(s.weights), dict(s.drawn), dict(s.used),
            [list(r) for r in s.excluded], set(s.blocked), dict(s.sizes),
        )
        while len(self._snapshots) > self._MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)
        if self._snapshots:
            oldest = next(iter(self._snapshots))
            self._oplog = [e for e in self._oplog if e[0] >= oldest]

    def next_round(self) -> list[Draw]:
        """Generate the next ``world_size`` draws (one per rank)."""
        self._snapshot()
        self._apply_pending()
        s = self._s
        while True:  # skip positions inside excluded ranges
            hit = [r for r in s.excluded if r[0] <= s.position < r[1]]
            if not hit:
                break
            s.position = max(r[1] for r in hit)
        draws = [self._draw_one(s.position + j) for j in range(self.world_size)]
        s.position += self.world_size
        return draws

    def __iter__(self) -> Iterator[Draw]:
        for _ in range(len(self)):
            yield self.next_round()[self.rank]

    # ---------------------------------------------------------------- state
    def stage_at(self, position: int) -> int:
        """Stage index in force at the start of the round at ``position`` (live stage if not kept)."""
        snap = self._snapshots.get(position)
        return snap.stage if snap is not None else self._s.stage

    def next_round_after(self, position: int) -> int:
        """Start of the round that follows the round containing ``position`` (where training resumes)."""
        keys = list(self._snapshots)
        i = bisect.bisect_right(keys, position)
        return keys[i] if i < len(keys) else self._s.position

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """The sampler state at the start of the round at ``position`` (default: the live state).

        Pass ``next_round_after(last_trained_position)`` to save what a resumed run needs although the
        DataLoader has already prefetched further.
        """
        if position is None or position == self._s.position:
            state, pending = self._s, list(self._pending)
        elif position in self._snapshots:
            state = self._snapshots[position]
            pending = [e for e in self._oplog if e[0] >= position]
        else:
            raise ValueError(f"no sampler state kept for position {position}; known: live {self._s.position}")
        return {
            "version": 1,
            "seed": self.seed,
            "tokens_per_sample": self.tokens_per_sample,
            "position": state.position,
            "consumed": state.consumed,
            "stage": state.stage,
            "stage_start": state.stage_start,
            "weights": dict(state.weights),
            "drawn": dict(state.drawn),
            "used": dict(state.used),
            "excluded": [list(r) for r in state.excluded],
            "blocked": sorted(state.blocked),
            "sizes": dict(state.sizes),
            "pending": [[p, op, payload] for p, op, payload in pending],
            "stages": [{"weights": st.weights, "tokens": st.tokens, "name": st.name} for st in self.stages],
        }

    def load_state_dict(self, state: Mapping[str, Any], check_sources: bool = True) -> None:
        """Restore a state from :meth:`state_dict` (the world size may differ from the saving run).

        Raises:
            ValueError: on another seed, or (``check_sources``) when the saved sources or their sizes differ
                from this sampler's (resuming on different data would silently change the stream).
        """
        if state.get("version") != 1:
            raise ValueError(f"unsupported MixtureSampler state version {state.get('version')!r}")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        if check_sources:
            saved, now = {k: int(v) for k, v in state["sizes"].items()}, self._s.sizes
            if list(saved) != list(now):
                missing, extra = [k for k in saved if k not in now], [k for k in now if k not in saved]
                raise ValueError(
                    f"cannot resume: the checkpoint's mixture has sources {list(saved)}, this run has {list(now)} "
                    f"(missing here: {missing}, not in the checkpoint: {extra}); use the same sources in the same order"
                )
            changed = {k: (saved[k], now[k]) for k in saved if saved[k] != now[k]}
            if changed:
                raise ValueError(
                    "cannot resume: source sizes (windows) differ from the checkpoint's, "
                    + ", ".join(f"{k!r}: checkpoint {a} vs now {b}" for k, (a, b) in changed.items())
                    + " (the data, seq_len or held-out split changed)"
                )
        self.stages = parse_stages(state["stages"])
        self._s = _State(
            position=int(state["position"]),
            consumed=int(state["consumed"]),
            stage=int(state["stage"]),
            stage_start=int(state["stage_start"]),
            weights={k: float(v) for k, v in state["weights"].items()},
            drawn={k: int(v) for k, v in state["drawn"].items()},
            used={k: int(v) for k, v in state["used"].items()},
            excluded=[list(map(int, r)) for r in state["excluded"]],
            blocked={int(i) for i in state["blocked"]},
            sizes={k: int(v) for k, v in state["sizes"].items()},
        )
        self._pending = [(int(p), op, tuple(x) if isinstance(x, list) else x) for p, op, x in state["pending"]]
        self._oplog = list(self._pending)
        self._snapshots.clear()
