"""Shared pytest settings: quiet Lightning, deterministic seeds, results written to tmp dirs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning.pytorch  # noqa: F401  (its log handlers must bind to the session's stderr, not one test's capsys)
import pytest

os.environ.setdefault("PYTHONHASHSEED", "0")
ROOT = Path(__file__).resolve().parents[1]  # tests reach configs and examples through ROOT, never the cwd
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*litlogger.*")


@pytest.fixture(autouse=True)
def _cwd_outside_the_repository(tmp_path, monkeypatch):
    """Each test runs in its own temporary directory: nothing a test writes can land in the repository."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(autouse=True)
def _seed():
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def quiet_trainer_kwargs(**overrides) -> dict:
    """Trainer arguments for tests: CPU, no logger, no checkpoints, no progress bar."""
    kwargs = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return kwargs
