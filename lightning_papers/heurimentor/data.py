"""The three embedded sources of the tiny Aquila2 runs: prose, code and QA-style templates.

* ``prose``: CPython's bundled documentation topics (``bundled_text("pydoc")``);
* ``code``: Python source of standard-library modules (``bundled_text("stdlib_source")``);
* ``qa``: procedurally generated question/answer templates (arithmetic, comparisons, string
  operations and facts about Python keywords), a stand-in for the FLAN-style K64/K65 data.

Each source is byte-tokenised and cut into non-overlapping windows; a seeded share of the windows is
held out per source for the per-source held-out loss.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["BUILTIN_SOURCES", "WindowDataset", "builtin_source_text", "make_windows", "qa_text"]

BUILTIN_SOURCES = ("prose", "code", "qa")

_KEYWORDS = {
    "def": "defines a function",
    "class": "defines a class",
    "return": "leaves a function with a value",
    "yield": "produces a value from a generator",
    "lambda": "creates an anonymous function",
    "import": "loads a module",
    "with": "enters a context manager",
    "try": "starts an exception handler",
    "raise": "raises an exception",
    "while": "repeats while a condition holds",
    "for": "iterates over an iterable",
    "pass": "does nothing",
    "global": "declares a module-level name",
    "assert": "checks a condition in debug mode",
}
_WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "orbit", "maple", "quartz", "delta", "ember")


def qa_text(n_items: int = 6000, seed: int = 0) -> str:
    """Deterministic QA-style templates (``Q: ...\\nA: ...``), about 45 characters per item.

    Example::

        >>> qa_text(2, seed=0).count("Q:")
        2
    """
    rng = random.Random(seed)
    items = []
    for _ in range(n_items):
        kind = rng.randrange(5)
        if kind == 0:
            a, b = rng.randrange(100), rng.randrange(100)
            items.append(f"Q: What is {a} plus {b}?\nA: {a + b}.")
        elif kind == 1:
            a, b = rng.randrange(20), rng.randrange(20)
            items.append(f"Q: What is {a} times {b}?\nA: {a * b}.")
        elif kind == 2:
            a, b = rng.randrange(1000), rng.randrange(1000)
            big = max(a, b)
            items.append(f"Q: Which is larger, {a} or {b}?\nA: {big}.")
        elif kind == 3:
            w = rng.choice(_WORDS)
            items.append(f"Q: Spell '{w}' backwards.\nA: {w[::-1]}.")
        else:
            k = rng.choice(sorted(_KEYWORDS))
            items.append(f"Q: What does the Python keyword '{k}' do?\nA: It {_KEYWORDS[k]}.")
    return "\n\n".join(items) + "\n"


def builtin_source_text(name: str, max_chars: int | None = None, seed: int = 0) -> str:
    """Text of one built-in source (``"prose"``, ``"code"`` or ``"qa"``).

    Raises:
        ValueError: for an unknown source name.
    """
    from lightning_papers.data import bundled_text

    if name == "prose":
        text = bundled_text("pydoc")
    elif name == "code":
        text = bundled_text("stdlib_source")
    elif name == "qa":
        text = qa_text(seed=seed)
    else:
        raise ValueError(f"unknown built-in source {name!r}; expected one of {BUILTIN_SOURCES}")
    return text[:max_chars] if max_chars is not None else text


def make_windows(tokens: torch.Tensor, seq_len: int, heldout_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D token stream into ``(n, seq_len)`` windows; return (train, heldout) split by a seeded shuffle.

    Raises:
        ValueError: when the stream has fewer than two windows.
    """
    n = len(tokens) // seq_len
    if n < 2:
        raise ValueError(f"a source has {len(tokens)} tokens, fewer than two windows of seq_len={seq_len}")
    windows = tokens[: n * seq_len].view(n, seq_len)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = max(1, int(round(heldout_fraction * n)))
    return windows[order[n_held:].sort().values], windows[order[:n_held].sort().values]


class WindowDataset(Dataset):
    """Rows of an ``(n, seq_len)`` LongTensor as items."""

    def __init__(self, windows: torch.Tensor) -> None:
        if windows.ndim != 2:
            raise ValueError(f"windows must be 2-D (n, seq_len), got shape {tuple(windows.shape)}")
        self.windows = windows

    def __len__(self) -> int:
        return self.windows.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.windows[index]


def load_text_files(paths: Sequence[str]) -> str:
    """Concatenate local text files (user data for paper-scale configs)."""
    from pathlib import Path

    parts = []
    for p in paths:
        f = Path(p).expanduser()
        if not f.is_file():
            raise FileNotFoundError(f"source text file not found: {f}")
        parts.append(f.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)
