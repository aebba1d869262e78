"""Text corpora that ship with Python itself, and a language-modelling DataModule over them.

The default corpus is the English documentation bundled with CPython (``pydoc_data.topics``, about
465k characters), so nothing is ever downloaded. Plain text files (e.g. WikiText-2) work by path.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["TextDataModule", "TokenWindows", "bundled_text", "decode_bytes", "encode_bytes"]

#: Standard-library modules whose source forms the ``"stdlib_source"`` corpus (sorted, deterministic).
_STDLIB_MODULES = (
    "argparse", "ast", "calendar", "collections/__init__", "configparser", "csv", "dataclasses", "datetime",
    "difflib", "enum", "fractions", "functools", "heapq", "inspect", "ipaddress", "json/decoder",
    "json/encoder", "logging/__init__", "pathlib", "pprint", "random", "shutil", "statistics", "string",
    "textwrap", "typing", "urllib/parse", "uuid", "zipfile",
)  # fmt: skip


def bundled_text(name: Literal["pydoc", "stdlib_source"] = "pydoc", max_chars: int | None = None) -> str:
    """Return a corpus bundled with the running Python.

    Args:
        name: ``"pydoc"`` (CPython's English documentation topics, prose with code samples) or
            ``"stdlib_source"`` (Python source code of a fixed list of standard-library modules).
        max_chars: truncate to this many characters.

    Returns:
        The corpus as one string (deterministic for a given Python version).

    Example::

        >>> len(bundled_text("pydoc")) > 100_000
        True
    """
    if name == "pydoc":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[key] for key in sorted(topics))
    elif name == "stdlib_source":
        root = Path(sysconfig.get_paths()["stdlib"])
        parts = []
        for module in _STDLIB_MODULES:
            file = root / f"{module}.py"
            if file.is_file():
                parts.append(file.read_text(encoding="utf-8", errors="replace"))
        if not parts:
            raise FileNotFoundError(f"no standard-library sources found under {root}")
        text = "\n\n".join(parts)
    else:
        raise ValueError(f"unknown bundled corpus {name!r}; expected 'pydoc' or 'stdlib_source'")
    return text[:max_chars] if max_chars is not None else text


def encode_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as a 1-D LongTensor of ids in [0, 255]."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def decode_bytes(ids: torch.Tensor | Sequence[int]) -> str:
    """Inverse of :func:`encode_bytes` (invalid UTF-8 sequences are replaced)."""
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    return bytes(int(v) for v in values).decode("utf-8", errors="replace")


class TokenWindows(Dataset):
    """Fixed-length windows over a 1-D token stream; item ``i`` is ``{"input_ids", "labels"}``."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, starts: torch.Tensor) -> None:
        self.tokens, self.seq_len, self.starts = tokens, seq_len, starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[index])
        window = self.tokens[start : start + self.seq_len]
        return {"input_ids": window, "labels": window.clone()}


class TextDataModule(L.LightningDataModule):
    """Causal language-modelling data: non-overlapping windows of a tokenised corpus.

    The token stream is cut into contiguous ``seq_len`` windows; a seeded shuffle assigns
    ``val_fraction`` of them to validation, so train and validation never share tokens.

    Args:
        corpus: ``"pydoc"`` or ``"stdlib_source"`` (see :func:`bundled_text`); ignored when ``text_files``
            is given.
        text_files: plain-text files to read instead (concatenated in order).
        tokenizer: ``None`` for byte-level ids (vocab 256) or a local Hugging Face tokenizer directory.
        seq_len: tokens per window.
        batch_size: windows per batch.
        val_fraction: fraction of windows held out for validation.
        seed: seed of the split and the shuffling.
        max_chars: truncate the corpus (for quick runs).
        num_workers: DataLoader workers.

    Example::

        >>> dm = TextDataModule(seq_len=64, batch_size=4)
        >>> dm.setup()
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["input_ids"].shape), dm.vocab_size
        ((4, 64), 256)
    """

    def __init__(
        self,
        corpus: Literal["pydoc", "stdlib_source"] = "pydoc",
        text_files: list[str] | None = None,
        tokenizer: str | None = None,
        seq_len: int = 128,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_chars: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if corpus not in ("pydoc", "stdlib_source"):
            raise ValueError(f"unknown corpus {corpus!r}; expected 'pydoc' or 'stdlib_source' (or use text_files)")
        if text_files is not None and len(text_files) == 0:
            # almost always an empty glob: training silently on the bundled corpus would hide it
            raise ValueError("text_files is an empty list; pass the files to read, or None for the bundled corpus")
        self.corpus, self.text_files, self.tokenizer_name = corpus, text_files, tokenizer
        self.seq_len, self.batch_size, self.val_fraction = seq_len, batch_size, val_fraction
        self.seed, self.max_chars, self.num_workers = seed, max_chars, num_workers
        self._tokenizer = None
        self._splits: dict[str, torch.Tensor] | None = None

    @property
    def vocab_size(self) -> int:
        """256 for byte-level ids, else the tokenizer's vocabulary size."""
        return 256 if self.tokenizer_name is None else len(self._load_tokenizer())

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = Path(self.tokenizer_name).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"tokenizer directory not found: {path} (only local tokenizers are loaded)")
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return self._tokenizer

    def read_text(self) -> str:
        """The raw corpus text (bundled corpus or the concatenated ``text_files``)."""
        if self.text_files:
            parts = []
            for name in self.text_files:
                file = Path(name).expanduser()
                if not file.is_file():
                    raise FileNotFoundError(f"text file not found: {file}")
                content = file.read_text(encoding="utf-8", errors="replace")
                if not content.strip():
                    raise ValueError(f"text file {file} is empty; expected plain text to train or evaluate on")
                parts.append(content)
            text = "\n".join(parts)
        else:
            text = bundled_text(self.corpus)
        return text[: self.max_chars] if self.max_chars is not None else text

    def encode(self, text: str) -> torch.Tensor:
        """Tokenise ``text`` into a 1-D LongTensor."""
        if self.tokenizer_name is None:
            return encode_bytes(text)
        return torch.tensor(self._load_tokenizer()(text)["input_ids"], dtype=torch.long)

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        stream = self.encode(self.read_text())
        n_windows = len(stream) // self.seq_len
        if n_windows < 2:
            raise ValueError(
                f"corpus has {len(stream)} tokens, fewer than two windows of seq_len={self.seq_len}"
            )
        order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, int(round(self.val_fraction * n_windows)))
        val_ids, train_ids = order[:n_val].sort().values, order[n_val:].sort().values
        self._stream = stream
        self._splits = {"train": train_ids * self.seq_len, "val": val_ids * self.seq_len}

    def _dataset(self, split: str) -> TokenWindows:
        self.setup()
        return TokenWindows(self._stream, self.seq_len, self._splits[split])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self._dataset("train"),
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def tokens(self, split: Literal["train", "val"] = "val") -> torch.Tensor:
        """All tokens of a split as one 1-D LongTensor (its windows concatenated in corpus order)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        ds = self._dataset(split)
        return torch.cat([ds[i]["input_ids"] for i in range(len(ds))])

    def calibration_batches(self, nsamples: int = 128, seqlen: int | None = None, seed: int = 0) -> torch.Tensor:
        """``nsamples`` random windows of ``seqlen`` tokens from the training split, shape (nsamples, seqlen).

        Raises:
            ValueError: when the training split has no run of ``seqlen`` contiguous tokens.
        """
        seqlen = seqlen or self.seq_len
        train = self.tokens("train")
        if len(train) <= seqlen:
            raise ValueError(f"training split has {len(train)} tokens, not more than seqlen={seqlen}")
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, len(train) - seqlen, (nsamples,), generator=g)
        return torch.stack([train[s : s + seqlen] for s in starts.tolist()])
