"""On-disk token shards: ``prepare-data`` writes them, :class:`ShardWindows` reads windows by memory map.

Format (one directory per source, nanoGPT / Megatron style): ``tokens-00000.bin``, ``tokens-00001.bin``
... raw little-endian ``uint16`` (vocab <= 65536) or ``uint32`` token ids, documents concatenated with
the tokenizer's EOS between them, plus ``index.json`` (format, dtype, tokenizer name and fingerprint,
vocab size, per-file token counts and byte sizes). A directory is *complete* only when ``index.json``
exists: ``prepare_data`` writes everything into a temporary directory, writes the index last and renames
the directory into place (atomic on one filesystem), so an interrupted run leaves no directory that reads
as complete. Readers check every file's size against the index (truncation) and the tokenizer/dtype
against what the caller expects.

Why not litdata's optimized format: the mixture sampler, not the dataset, decides which window of which
source comes next (exact resume, exclusions, stage budgets across ranks); it needs O(1) random access
``window i of source s``, which a flat memory-mapped array gives with no cache or worker protocol.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_papers.files import atomic_directory, atomic_write_text

__all__ = ["FORMAT", "ShardWindows", "check_compatible", "prepare_data", "read_index", "tokenizer_info"]

FORMAT = "lightning-papers-token-shards"
INDEX = "index.json"


def tokenizer_info(tokenizer: str | None) -> tuple[Any, dict[str, Any]]:
    """Load a local Hugging Face tokenizer (``None``: UTF-8 bytes) and describe it.

    Returns ``(encode, info)`` where ``encode(text) -> list[int]`` and ``info`` holds ``name``,
    ``fingerprint`` (SHA-256 of the vocabulary), ``vocab_size`` and ``eos_id``.

    Example::

        >>> encode, info = tokenizer_info(None)
        >>> encode("hi"), info["vocab_size"], info["name"]
        ([104, 105], 256, 'bytes')
    """
    if tokenizer is None:
        return (lambda text: list(text.encode("utf-8"))), {"name": "bytes", "fingerprint": "bytes", "vocab_size": 256, "eos_id": None}
    path = Path(tokenizer).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer must be a local Hugging Face tokenizer directory, got {tokenizer!r}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    vocab = sorted(tok.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    info = {"name": path.name, "fingerprint": digest, "vocab_size": len(tok), "eos_id": tok.eos_token_id}
    return (lambda text: tok(text, add_special_tokens=False)["input_ids"]), info


def _documents(path: Path, text_key: str, block_chars: int) -> Iterator[tuple[str, int, bool]]:
    """Yield (text, bytes read, end of document) from a .txt (one document, read in line blocks) or .jsonl file."""
    jsonl = path.suffix in (".jsonl", ".json", ".ndjson")
    with path.open("r", encoding="utf-8", errors="replace") as f:
        if jsonl:
            for lineno, line in enumerate(f, 1):
                nbytes = len(line.encode("utf-8"))
                if not line.strip():
                    yield "", nbytes, False
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict) or text_key not in record:
                    raise ValueError(f"{path}:{lineno}: expected a JSON object with key {text_key!r}")
                yield str(record[text_key]), nbytes, True
        else:
            block: list[str] = []
            size = 0
            for line in f:  # blocks end at line boundaries, so a token never spans two blocks
                block.append(line)
                size += len(line)
                if size >= block_chars:
                    text = "".join(block)
                    yield text, len(text.encode("utf-8")), False
                    block, size = [], 0
            text = "".join(block)
            yield text, len(text.encode("utf-8")), True


class _ShardWriter:
    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.files: list[dict[str, Any]] = []
        self._f = None
        self._n = 0

    def _open(self) -> None:
        name = f"tokens-{len(self.files):05d}.bin"
        self._f = (self.directory / name).open("wb")
        self.files.append({"name": name, "tokens": 0, "bytes": 0})
        self._n = 0

    def write(self, tokens: np.ndarray) -> None:
        tokens = tokens.astype(self.dtype, copy=False)
        while len(tokens):
            if self._f is None or self._n >= self.shard_tokens:
                self.close()
                self._open()
            take = tokens[: self.shard_tokens - self._n]
            self._f.write(take.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
            self._n += len(take)
            self.files[-1]["tokens"] = self._n
            self.files[-1]["bytes"] = self._n * self.dtype.itemsize
            tokens = tokens[len(take):]

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None


def prepare_data(
    inputs: list[str],
    output_dir: str,
    tokenizer: str | None = None,
    text_key: str = "text",
    shard_tokens: int = 1 << 28,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Tokenize text / JSONL files into a token shard directory for ``MixtureDataModule(token_shards=...)``.

    One directory is one source (run it once per source). ``.jsonl``/``.json``/``.ndjson`` files hold one
    JSON object per line with the text under ``text_key``; any other file is one plain-text document.
    Documents are separated by the tokenizer's EOS token (none for bytes). Atomic: the directory appears
    only when complete.

    Args:
        inputs: text or JSONL files.
        output_dir: the shard directory to create.
        tokenizer: a local Hugging Face tokenizer directory (default: UTF-8 bytes, vocab 256).
        text_key: the JSONL field with the text.
        shard_tokens: tokens per ``.bin`` file.
        overwrite: replace an existing ``output_dir``.
        progress: show a progress bar (bytes read).

    Returns:
        A one-line summary.

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("hello world")
        >>> prepare_data([str(d / "a.txt")], str(d / "shards"), progress=False).split(":")[0]
        'wrote 11 tokens'
    """
    from tqdm.auto import tqdm

    if not inputs:
        raise ValueError("prepare-data needs at least one input file")
    paths = [Path(p).expanduser() for p in inputs]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"input file not found: {p}")
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    out = Path(output_dir).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite true) to replace it")
    encode, info = tokenizer_info(tokenizer)
    dtype = np.dtype(np.uint16 if info["vocab_size"] <= 1 << 16 else np.uint32)
    total_bytes = sum(p.stat().st_size for p in paths)
    documents = 0
    # the new folder replaces ``out`` only once complete: a crash leaves the old one (or none), never a mix
    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer = _ShardWriter(tmp, dtype, int(shard_tokens))
        try:
            with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"prepare-data {out.name}", disable=not progress) as bar:
                for p in paths:
                    for text, nbytes, end in _documents(p, text_key, 1 << 22):
                        ids = encode(text) if text else []
                        if end and info["eos_id"] is not None:
                            ids = [*ids, int(info["eos_id"])]
                        if ids:
                            writer.write(np.asarray(ids, dtype=np.int64))
                        documents += int(end)
                        bar.update(nbytes)
            writer.close()
            if not writer.files:
                raise ValueError(f"the input files hold no text to tokenize: {[str(p) for p in paths]}")
            index = {
                "format": FORMAT, "version": 1, "dtype": dtype.name, "tokenizer": info["name"],
                "tokenizer_fingerprint": info["fingerprint"], "vocab_size": info["vocab_size"],
                "num_tokens": sum(f["tokens"] for f in writer.files), "documents": documents, "files": writer.files,
                "inputs": [str(p) for p in paths],
            }  # fmt: skip
            atomic_write_text(tmp / INDEX, json.dumps(index, indent=1))  # the completion marker, written last
        except BaseException:
            writer.close()
            raise
    return f"wrote {index['num_tokens']:,} tokens: {documents} documents, {len(writer.files)} shard file(s), {dtype.name}, tokenizer {info['name']} -> {out}"


def read_index(directory: str | Path) -> dict[str, Any]:
    """Read and validate a shard directory's ``index.json`` (files present with the recorded sizes).

    Raises:
        FileNotFoundError: the directory or its index (i.e. an incomplete directory) is missing.
        ValueError: an unknown format or dtype, or a missing / truncated shard file (naming it).
    """
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"token shard directory not found: {d}")
    idx_path = d / INDEX
    if not idx_path.is_file():
        raise FileNotFoundError(
            f"{d} has no {INDEX}: not a complete token shard directory (prepare-data writes the index last; "
            "rerun `lightning-papers prepare-data`)"
        )
    index = json.loads(idx_path.read_text())
    if index.get("format") != FORMAT or index.get("version") != 1:
        raise ValueError(f"{idx_path}: not a {FORMAT} v1 index (format={index.get('format')!r}, version={index.get('version')!r})")
    if index.get("dtype") not in ("uint16", "uint32"):
        raise ValueError(f"{idx_path}: dtype must be 'uint16' or 'uint32', got {index.get('dtype')!r}")
    itemsize = np.dtype(index["dtype"]).itemsize
    for f in index["files"]:
        path = d / f["name"]
        if not path.is_file():
            raise ValueError(f"shard file {path} listed in {INDEX} is missing")
        size = path.stat().st_size
        if size != f["bytes"] or f["bytes"] != f["tokens"] * itemsize:
            raise ValueError(
                f"shard file {path} has {size} bytes but {INDEX} says {f['bytes']} ({f['tokens']} {index['dtype']} "
                "tokens): truncated or replaced; rerun prepare-data"
            )
    return index


class ShardWindows(Dataset):
    """Windows of ``seq_len`` tokens of a shard directory, read by memory map (O(1) memory in its size).

    Windows never cross a shard file boundary. ``start``/``stop`` select a range of window indices (the
    held-out split). Memory maps are opened lazily in each process (DataLoader workers included).

    Example::

        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("abcdefgh")
        >>> _ = prepare_data([str(d / "a.txt")], str(d / "s"), progress=False)
        >>> w = ShardWindows(d / "s", seq_len=4)
        >>> len(w), bytes(w[1].tolist())
        (2, b'efgh')
    """

    def __init__(self, directory: str | Path, seq_len: int, start: int = 0, stop: int | None = None) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.directory = Path(directory).expanduser()
        self.index = read_index(self.directory)
        self.seq_len = int(seq_len)
        self.dtype = np.dtype(self.index["dtype"])
        self._files = [f["name"] for f in self.index["files"]]
        counts = [f["tokens"] // self.seq_len for f in self.index["files"]]
        self._cum = np.cumsum([0, *counts]).tolist()  # one entry per file, not per window
        total = self._cum[-1]
        stop = total if stop is None else int(stop)
        if not 0 <= start <= stop <= total:
            raise ValueError(f"window range [{start}, {stop}) outside [0, {total}) of {self.directory}")
        self.start, self.stop = int(start), stop
        self._maps: dict[int, np.memmap] = {}
        self._pid = os.getpid()

    @property
    def total_windows(self) -> int:
        return self._cum[-1]

    def __len__(self) -> int:
        return self.stop - self.start

    def _map(self, i: int) -> np.memmap:
        if self._pid != os.getpid():  # a forked worker: do not share the parent's maps
            self._maps, self._pid = {}, os.getpid()
        m = self._maps.get(i)
        if m is None:
            m = np.memmap(self.directory / self._files[i], dtype=self.dtype.newbyteorder("<"), mode="r")
            self._maps[i] = m
        return m

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} outside [0, {len(self)})")
        w = self.start + int(index)
        f = bisect.bisect_right(self._cum, w) - 1
        off = (w - self._cum[f]) * self.seq_len
        return torch.from_numpy(self._map(f)[off : off + self.seq_len].astype(np.int64))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state


def check_compatible(indexes: Sequence[tuple[str, dict[str, Any]]], expected: dict[str, Any] | None = None) -> None:
    """All sources must share one tokenizer and dtype (and match ``expected`` from the user's tokenizer)."""
    ref_name, ref = indexes[0]
    for name, idx in indexes[1:]:
        for key in ("tokenizer_fingerprint", "dtype"):
            if idx[key] != ref[key]:
                raise ValueError(
                    f"token shards of source {name!r} were made with {key.split('_')[0]} {idx['tokenizer'] if key != 'dtype' else ''}"
                    f"({key}={idx[key]!r}) but source {ref_name!r} with {key}={ref[key]!r}: prepare all sources with "
                    "the same tokenizer"
                )
    if expected is not None and ref["tokenizer_fingerprint"] != expected["fingerprint"]:
        raise ValueError(
            f"token shards of source {ref_name!r} were made with tokenizer {ref['tokenizer']!r} "
            f"(fingerprint {ref['tokenizer_fingerprint']}), not with the given tokenizer {expected['name']!r} "
            f"(fingerprint {expected['fingerprint']})"
        )
