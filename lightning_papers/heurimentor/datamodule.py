"""Mixture data for Lightning: :class:`MixtureDataset` (a :class:`Draw` -> a training example) and
:class:`MixtureDataModule` (named sources, a stage schedule, held-out batches).

Sources are either on-disk token shards read by memory map (``token_shards``; written by
``lightning-papers prepare-data``; memory O(1) in corpus size) or in-memory windows (the embedded demo
sources, ``source_files`` or ``datasets``). The :class:`MixtureSampler` runs in the main process and
decides ``(source, index, position)``; DataLoader workers only read the windows, so N ranks x M workers
read exactly the single-process stream, split by position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_papers.heurimentor.mixture import Draw, MixtureSampler, _mix64, parse_stages
from lightning_papers.validation import check_each

__all__ = ["DEFAULT_STAGES", "MixtureDataModule", "MixtureDataset"]


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


#: The default three-stage schedule of the tiny runs (token budgets of a short CPU run), mirroring
#: language modelling (K6) -> knowledge (K61-63) -> target-oriented QA (K64).
DEFAULT_STAGES: list[dict[str, Any]] = [
    {"name": "language", "weights": {"prose": 0.6, "code": 0.3, "qa": 0.1}, "tokens": 40_960},
    {"name": "knowledge", "weights": {"prose": 0.4, "code": 0.4, "qa": 0.2}, "tokens": 40_960},
    {"name": "target", "weights": {"prose": 0.25, "code": 0.25, "qa": 0.5}, "tokens": None},
]


class MixtureDataModule(L.LightningDataModule):
    """Named sources of token windows mixed by a :class:`MixtureSampler` with a stage schedule.

    Batches are dicts ``{"input_ids", "labels", "source_ids", "sample_ids", "positions"}``. Create the
    Trainer with ``use_distributed_sampler=False``: the sampler splits the stream across ranks itself.

    Args:
        sources: built-in sources to use (``"prose"``, ``"code"``, ``"qa"``); ignored for names given in
            ``token_shards``, ``source_files`` or ``datasets``.
        token_shards: source name -> a token shard directory made by ``lightning-papers prepare-data``
            (read by memory map; the scalable path). The last ``heldout_windows`` windows of each are held out.
        source_files: user data kept in memory: source name -> local text files (byte-level unless ``tokenizer``).
        tokenizer: a local Hugging Face tokenizer directory (default: bytes, vocab 256); with
            ``token_shards`` it is checked against the tokenizer the shards were made with.
        stages: the schedule, a list of ``{"weights": {...}, "tokens": N, "name": ...}`` (or :class:`Stage`);
            every budget must be a multiple of the global batch in tokens (``world x batch_size x seq_len``).
        seq_len: tokens per window.
        batch_size: windows per batch per rank.
        seed: sampling and split seed.
        heldout_fraction: share of each in-memory source's windows held out.
        max_chars: truncate each in-memory text source (keeps tiny runs fast).
        samples_per_epoch: global samples per epoch (default: all windows once).
        heldout_windows: windows per source in the held-out evaluation batches.
        corrupt_source / corrupt_start / corrupt_stop: replace windows of that source drawn at global
            positions in ``[start, stop)`` by random tokens (simulates a corrupted shard; benchmarks/tests).
        datasets: Python API: name -> dataset of windows (1-D LongTensors), used as-is.
        num_workers: DataLoader workers (the sampler always runs in the main process).

    Raises:
        ValueError: an unknown source, shards made with different tokenizers/dtypes, a stage budget the
            global batch does not divide, or a Trainer that would wrap the sampler.

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
        token_shards: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        check_each((seq_len >= 2, f"seq_len must be >= 2, got {seq_len}"),
                   (batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"))
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        from lightning_papers.heurimentor.data import BUILTIN_SOURCES

        self.token_shards = {str(k): str(v) for k, v in (token_shards or {}).items()}
        user = list(self.token_shards) + list(source_files or {}) + list(datasets or {})
        if sources is None:
            names = [] if self.token_shards else list(BUILTIN_SOURCES)
        else:
            names = list(sources)
        for n in names:
            if n not in BUILTIN_SOURCES and n not in user:
                raise ValueError(f"unknown source {n!r}: not built-in {BUILTIN_SOURCES} and not in token_shards/source_files/datasets")
        for n in user:
            if n not in names:
                names.append(n)
        self.source_names = names
        self.source_files, self.tokenizer_name = dict(source_files or {}), tokenizer
        self.stages = parse_stages(stages if stages is not None else DEFAULT_STAGES)
        MixtureSampler._check_stages(self.stages, dict.fromkeys(names, 1))  # a stage naming an absent source fails now
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
        from lightning_papers.heurimentor.shards import tokenizer_info

        encode, info = tokenizer_info(self.tokenizer_name)
        self._vocab_size = info["vocab_size"]
        return torch.tensor(encode(text), dtype=torch.long)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            kwargs = trainer.distributed_sampler_kwargs or {}
            return int(kwargs.get("rank", trainer.global_rank)), int(kwargs.get("num_replicas", trainer.world_size))
        return 0, 1

    def _setup_shards(self) -> None:
        from lightning_papers.heurimentor.shards import (
            ShardWindows,
            check_compatible,
            read_index,
            tokenizer_info,
        )

        indexes = [(name, read_index(d)) for name, d in self.token_shards.items()]
        expected = tokenizer_info(self.tokenizer_name)[1] if self.tokenizer_name is not None else None
        check_compatible(indexes, expected)
        self._vocab_size = int(indexes[0][1]["vocab_size"])
        for name, d in self.token_shards.items():
            full = ShardWindows(d, self.seq_len)
            n = full.total_windows
            if n < self.heldout_windows + 1:
                raise ValueError(
                    f"source {name!r} ({d}) has {n} windows of seq_len={self.seq_len}, fewer than heldout_windows + 1 = "
                    f"{self.heldout_windows + 1}"
                )
            self.train_sets[name] = ShardWindows(d, self.seq_len, 0, n - self.heldout_windows)
            self.heldout_sets[name] = ShardWindows(d, self.seq_len, n - self.heldout_windows, n)

    def setup(self, stage: str | None = None) -> None:
        if self.sampler is not None:
            return
        from lightning_papers.heurimentor.data import (
            WindowDataset,
            builtin_source_text,
            load_text_files,
            make_windows,
        )

        if self.token_shards:
            self._setup_shards()
        for i, name in enumerate(self.source_names):
            if name in self.token_shards:
                continue
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
        global_batch = world * self.batch_size * self.seq_len
        for i, st in enumerate(self.stages):
            if st.tokens is not None and st.tokens % global_batch:
                raise ValueError(
                    f"stage {i} ({st.name!r}): token budget {st.tokens} is not a multiple of the global batch "
                    f"world_size x batch_size x seq_len = {world} x {self.batch_size} x {self.seq_len} = {global_batch}; "
                    f"the stage would switch inside an optimizer step (e.g. use {st.tokens // global_batch * global_batch or global_batch})"
                )
        self.sampler = MixtureSampler(
            {k: len(self.train_sets[k]) for k in self.source_names},
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

    def _check_trainer(self) -> None:
        trainer = getattr(self, "trainer", None)
        connector = getattr(trainer, "_accelerator_connector", None)
        if connector is not None and connector.use_distributed_sampler and connector.is_distributed:
            raise ValueError(
                "MixtureDataModule splits the stream across ranks itself: create the Trainer with "
                "use_distributed_sampler=False (Lightning would otherwise wrap the MixtureSampler)"
            )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        self._check_trainer()
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
