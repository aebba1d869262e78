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
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["DEFAULT_STAGES", "Draw", "MixtureDataModule", "MixtureDataset", "MixtureSampler", "Stage", "parse_stages"]

_MASK = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash (counter-based RNG)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(seed: int, position: int) -> float:
    """A uniform in [0, 1) that depends only on ``(seed, position)``."""
    return (_mix64(_mix64(seed & _MASK) ^ position) >> 11) * (2.0**-53)


@dataclass
class Stage:
    """One stage of a mixture schedule.

    Args:
        weights: sampling probability per source name; non-negative, summing to 1 (sources not listed get 0).
        tokens: token budget of the stage (``None``: unbounded, only allowed for the last stage).
        name: a label for logs (e.g. ``"K6"``).

    Raises:
        ValueError: on an empty mapping, a negative or non-finite weight, weights not summing to 1,
            or a non-positive budget.

    Example::

        >>> Stage({"web": 0.8, "code": 0.2}, tokens=1000, name="K6").weights["web"]
        0.8
    """

    weights: dict[str, float]
    tokens: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(f"Stage weights must be a non-empty mapping of source name -> weight, got {self.weights!r}")
        clean = {}
        for name, w in self.weights.items():
            w = float(w)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"Stage {self.name!r}: weight of source {name!r} must be finite and >= 0, got {w}")
            clean[str(name)] = w
        total = sum(clean.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"Stage {self.name!r}: weights must sum to 1, got {total:.6g} ({clean})")
        self.weights = clean
        if self.tokens is not None:
            if int(self.tokens) != self.tokens or self.tokens <= 0:
                raise ValueError(f"Stage {self.name!r}: tokens must be a positive integer or None, got {self.tokens!r}")
            self.tokens = int(self.tokens)


def parse_stages(stages: Sequence[Stage | Mapping[str, Any]]) -> list[Stage]:
    """Turn YAML-style dicts (``{"weights": {...}, "tokens": N, "name": ...}``) into :class:`Stage` objects."""
    out = []
    for i, st in enumerate(stages):
        if isinstance(st, Stage):
            out.append(st)
        elif isinstance(st, Mapping):
            unknown = set(st) - {"weights", "tokens", "name"}
            if unknown:
                raise ValueError(f"stage {i}: unknown keys {sorted(unknown)}; expected weights, tokens, name")
            out.append(Stage(dict(st["weights"]), st.get("tokens"), str(st.get("name", f"stage{i}"))))
        else:
            raise TypeError(f"stage {i} must be a Stage or a mapping, got {type(st).__name__}")
    return out


class Draw(NamedTuple):
    """One sampled window: its source, its index inside the source, and its global stream position."""

    source: str
    index: int
    position: int


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


class MixtureSampler(DistributedSampler):
    """Deterministic, resumable, rank-aware sampler over named sources with a staged mixture.

    Iterates :class:`Draw` ``(source, index, position)`` tuples (unpack the first two for the
    ``(source_name, index)`` pair). It subclasses ``DistributedSampler`` only so Lightning does not wrap
    it again: ranks are already handled here.

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
        # no super().__init__: DistributedSampler would require a dataset and a process group
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
        self.num_replicas, self.epoch, self.shuffle, self.drop_last = self.world_size, 0, True, True
        self.tokens_per_sample = int(tokens_per_sample)
        sizes = {str(k): int(v) for k, v in source_sizes.items()}
        self._check_stages(self.stages, sizes)
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
        self._perm_cache: dict[tuple[str, int], torch.Tensor] = {}
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
    def _perm(self, source: str, epoch: int) -> torch.Tensor:
        key = (source, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            sid = self.sources.index(source)
            g = torch.Generator().manual_seed(_mix64((self.seed << 20) ^ (sid << 40) ^ epoch) & ((1 << 63) - 1))
            perm = torch.randperm(self._s.sizes[source], generator=g)
            self._perm_cache[key] = perm
        return perm

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
            index = int(self._perm(source, n // size)[n % size])
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

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the world size may differ from the saving run)."""
        if state.get("version") != 1:
            raise ValueError(f"unsupported MixtureSampler state version {state.get('version')!r}")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
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
        self._perm_cache.clear()


class MixtureDataset(Dataset):
    """Maps a :class:`Draw` to a training example carrying its source id, sample id and position.

    Args:
        sources: name -> a dataset whose items are 1-D LongTensor windows (or dicts with ``input_ids``).
        sampler: the :class:`MixtureSampler` (for source ids and sample ids).
        corrupt: optional ``(source, start, stop, seed)``: windows of ``source`` drawn at global positions
            in ``[start, stop)`` are replaced by uniform random tokens (to simulate a bad data shard).
        vocab_size: range of the noise tokens.
    """

    def __init__(
        self,
        sources: Mapping[str, Dataset],
        sampler: MixtureSampler,
        corrupt: tuple[str, int, int, int] | None = None,
        vocab_size: int = 256,
    ) -> None:
        self.sources, self.sampler, self.corrupt, self.vocab_size = dict(sources), sampler, corrupt, vocab_size

    def __len__(self) -> int:
        return sum(len(d) for d in self.sources.values())

    def __getitem__(self, draw: Draw) -> dict[str, torch.Tensor]:
        if not isinstance(draw, tuple) or len(draw) != 3:
            raise TypeError(f"MixtureDataset is indexed by Draw(source, index, position), got {draw!r}")
        source, index, position = draw
        item = self.sources[source][index]
        ids = item["input_ids"] if isinstance(item, Mapping) else item
        ids = torch.as_tensor(ids, dtype=torch.long)
        if self.corrupt is not None and source == self.corrupt[0] and self.corrupt[1] <= position < self.corrupt[2]:
            g = torch.Generator().manual_seed(_mix64(self.corrupt[3] * 1_000_003 + position) & ((1 << 63) - 1))
            ids = torch.randint(0, self.vocab_size, ids.shape, generator=g)
        return {
            "input_ids": ids,
            "labels": ids.clone(),
            "source_ids": torch.tensor(self.sampler.sources.index(source)),
            "sample_ids": torch.tensor(self.sampler.source_offset(source) + int(index)),
            "positions": torch.tensor(int(position)),
        }


# ====================================================================== Lightning DataModule
import lightning.pytorch as L  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

#: The default three-stage schedule of the tiny runs (token budgets of a short CPU run), mirroring
#: language modelling (K6) -> knowledge (K61-63) -> target-oriented QA (K64).
DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "language", "weights": {"prose": 0.6, "code": 0.3, "qa": 0.1}, "tokens": 40_960},
    {"name": "knowledge", "weights": {"prose": 0.4, "code": 0.4, "qa": 0.2}, "tokens": 40_960},
    {"name": "target", "weights": {"prose": 0.25, "code": 0.25, "qa": 0.5}, "tokens": None},
]


class MixtureDataModule(L.LightningDataModule):
    """Named sources of token windows mixed by a :class:`MixtureSampler` with a stage schedule.

    Batches are dicts ``{"input_ids", "labels", "source_ids", "sample_ids", "positions"}``.

    Args:
        sources: built-in sources to use (``"prose"``, ``"code"``, ``"qa"``); ignored for names given in
            ``source_files`` or ``datasets``.
        source_files: user data: source name -> local text files (byte-level unless ``tokenizer``).
        tokenizer: a local Hugging Face tokenizer directory (default: bytes, vocab 256).
        stages: the schedule, a list of ``{"weights": {...}, "tokens": N, "name": ...}`` (or :class:`Stage`).
        seq_len: tokens per window.
        batch_size: windows per batch per rank.
        seed: sampling and split seed.
        heldout_fraction: share of each source's windows held out.
        max_chars: truncate each text source (keeps tiny runs fast).
        samples_per_epoch: global samples per epoch (default: all windows once).
        heldout_windows: windows per source in the held-out evaluation batches.
        corrupt_source / corrupt_start / corrupt_stop: replace windows of that source drawn at global
            positions in ``[start, stop)`` by random tokens (simulates a corrupted shard; benchmarks/tests).
        datasets: Python API: name -> dataset of windows (1-D LongTensors), used as-is.
        num_workers: DataLoader workers (the sampler always runs in the main process).

    Example::

        >>> dm = MixtureDataModule(seq_len=32, batch_size=4, max_chars=20_000)
        >>> dm.setup("fit")
        >>> b = next(iter(dm.train_dataloader()))
        >>> sorted(b), tuple(b["input_ids"].shape)
        (['input_ids', 'labels', 'positions', 'sample_ids', 'source_ids'], (4, 32))
    """

    def __init__(
        self,
        sources: list[str] | None = None,
        source_files: dict[str, list[str]] | None = None,
        tokenizer: str | None = None,
        stages: list[dict[str, Any]] | None = None,
        seq_len: int = 64,
        batch_size: int = 8,
        seed: int = 0,
        heldout_fraction: float = 0.05,
        max_chars: int | None = 200_000,
        samples_per_epoch: int | None = None,
        heldout_windows: int = 16,
        corrupt_source: str | None = None,
        corrupt_start: int = 0,
        corrupt_stop: int = 0,
        datasets: dict[str, Dataset] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if seq_len < 2 or batch_size < 1:
            raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got seq_len={seq_len}, batch_size={batch_size}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        from lightning_papers.heurimentor.data import BUILTIN_SOURCES

        names = list(sources) if sources is not None else list(BUILTIN_SOURCES)
        for n in names:
            if n not in BUILTIN_SOURCES and n not in (source_files or {}) and n not in (datasets or {}):
                raise ValueError(f"unknown source {n!r}: not built-in {BUILTIN_SOURCES} and not in source_files/datasets")
        for n in list(source_files or {}) + list(datasets or {}):
            if n not in names:
                names.append(n)
        self.source_names = names
        self.source_files, self.tokenizer_name = dict(source_files or {}), tokenizer
        self.stages = parse_stages(stages if stages is not None else DEFAULT_STAGES)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.heldout_fraction, self.max_chars = heldout_fraction, max_chars
        self.samples_per_epoch, self.heldout_windows, self.num_workers = samples_per_epoch, heldout_windows, num_workers
        if corrupt_source is not None and corrupt_source not in names:
            raise ValueError(f"corrupt_source {corrupt_source!r} is not one of the sources {names}")
        self.corrupt = (corrupt_source, corrupt_start, corrupt_stop, seed) if corrupt_source else None
        self._user_datasets = dict(datasets or {})
        self.train_sets: dict[str, Dataset] = {}
        self.heldout_sets: dict[str, Dataset] = {}
        self.sampler: MixtureSampler | None = None
        self._vocab_size = 256

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def _encode(self, text: str) -> torch.Tensor:
        if self.tokenizer_name is None:
            from lightning_papers.data import encode_bytes

            return encode_bytes(text)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.tokenizer_name, local_files_only=True)
        self._vocab_size = len(tok)
        return torch.tensor(tok(text)["input_ids"], dtype=torch.long)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            kwargs = trainer.distributed_sampler_kwargs or {}
            return int(kwargs.get("rank", trainer.global_rank)), int(kwargs.get("num_replicas", trainer.world_size))
        return 0, 1

    def setup(self, stage: str | None = None) -> None:
        if self.sampler is not None:
            return
        from lightning_papers.heurimentor.data import (
            WindowDataset,
            builtin_source_text,
            load_text_files,
            make_windows,
        )

        for i, name in enumerate(self.source_names):
            if name in self._user_datasets:
                ds = self._user_datasets[name]
                n_held = max(1, int(round(self.heldout_fraction * len(ds))))
                idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.seed + i))
                self.train_sets[name] = torch.utils.data.Subset(ds, idx[n_held:].sort().values.tolist())
                self.heldout_sets[name] = torch.utils.data.Subset(ds, idx[:n_held].sort().values.tolist())
                continue
            if name in self.source_files:
                text = load_text_files(self.source_files[name])
                text = text[: self.max_chars] if self.max_chars else text
            else:
                text = builtin_source_text(name, self.max_chars, seed=self.seed)
            train, held = make_windows(self._encode(text), self.seq_len, self.heldout_fraction, self.seed + i)
            self.train_sets[name], self.heldout_sets[name] = WindowDataset(train), WindowDataset(held)
        rank, world = self._rank_world()
        self.sampler = MixtureSampler(
            {k: len(v) for k, v in self.train_sets.items()},
            self.stages,
            seed=self.seed,
            rank=rank,
            world_size=world,
            tokens_per_sample=self.seq_len,
            samples_per_epoch=self.samples_per_epoch,
        )
        self.train_dataset = MixtureDataset(self.train_sets, self.sampler, self.corrupt, self.vocab_size)

    def add_source(self, name: str, dataset: Dataset, heldout: Dataset | None = None) -> None:
        """Add a source during training (weight 0 until the DMU or ``sampler.set_weights`` gives it some)."""
        if self.sampler is None:
            raise RuntimeError("call setup() before add_source()")
        self.train_sets[name] = dataset
        if heldout is not None:
            self.heldout_sets[name] = heldout
        self.source_names.append(name)
        self.sampler.add_source(name, len(dataset))

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.num_workers,
        )

    def _heldout_dataset(self) -> Dataset:
        items = []
        for sid, name in enumerate(self.source_names):
            ds = self.heldout_sets.get(name)
            if ds is None:
                continue
            for j in range(min(self.heldout_windows, len(ds))):
                ids = torch.as_tensor(ds[j], dtype=torch.long)
                items.append({"input_ids": ids, "labels": ids.clone(), "source_ids": torch.tensor(sid),
                              "sample_ids": torch.tensor(-1 - j), "positions": torch.tensor(-1)})
        return items  # a list is a valid map-style dataset

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(self._heldout_dataset(), batch_size=self.batch_size)

    def heldout_batches(self) -> dict[str, dict[str, torch.Tensor]]:
        """One batch of held-out windows per source (for the monitor's periodic per-source loss)."""
        self.setup("fit")
        out = {}
        for sid, name in enumerate(self.source_names):
            ds = self.heldout_sets.get(name)
            if ds is None:
                continue
            ids = torch.stack([torch.as_tensor(ds[j], dtype=torch.long) for j in range(min(self.heldout_windows, len(ds)))])
            out[name] = {"input_ids": ids, "labels": ids.clone(), "source_ids": torch.full((len(ids),), sid)}
        return out
