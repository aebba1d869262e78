"""lightning-papers: six research methods as reusable PyTorch Lightning artifacts.

Method subpackages are imported lazily, so ``import lightning_papers`` and ``lightning-papers --help``
stay fast and do not pull in transformers, timm or video decoders until a method needs them.

Example::

    >>> import lightning_papers
    >>> lightning_papers.METHODS[0]
    'concrete_kmeans'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The six method subpackages, in the order the README lists them.
METHODS: tuple[str, ...] = (
    "concrete_kmeans",
    "taylor_loss",
    "metamd",
    "fe_adapter",
    "spikellm",
    "heurimentor",
)

_LAZY = set(METHODS) | {"data", "metrics", "models", "optim", "bench", "cli"}

__all__ = ["METHODS", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
