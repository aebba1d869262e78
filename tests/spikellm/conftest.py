"""Shared fixtures: one tiny Llama trained once per test session on the bundled corpus (about 15 s)."""

from __future__ import annotations

import copy

import pytest
import torch

SEQLEN = 64


@pytest.fixture(scope="session")
def text_data():
    from lightning_papers.data import TextDataModule

    dm = TextDataModule(seq_len=SEQLEN, seed=0)
    dm.setup()
    return {
        "train": dm.tokens("train"),
        "val": dm.tokens("val")[: 96 * SEQLEN],  # 96 windows keep evaluation fast
        "calib": dm.calibration_batches(16, SEQLEN, seed=0),
    }


@pytest.fixture(scope="session")
def trained_state(text_data):
    from lightning_papers.spikellm import train_tiny_llama

    torch.manual_seed(0)
    model = train_tiny_llama(steps=300, seq_len=SEQLEN, batch_size=16, tokens=text_data["train"], seed=0)
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def trained_model(trained_state):
    """A fresh copy of the trained tiny model (tests may quantize it in place)."""
    from lightning_papers.spikellm import tiny_llama

    model = tiny_llama(0)
    model.load_state_dict(trained_state)
    return model.eval()
