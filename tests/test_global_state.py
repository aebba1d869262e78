"""A library call must leave the caller's process as it found it: RNGs, threads, logging, warnings, cwd, env."""

from __future__ import annotations

import logging
import os
import random
import warnings

import numpy as np
import pytest
import torch


def _snapshot() -> dict:
    return {
        "torch_rng": torch.get_rng_state().clone(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "root_handlers": list(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
        "lightning_level": logging.getLogger("lightning.pytorch").level,
        "warning_filters": list(warnings.filters),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }


def _assert_unchanged(before: dict, after: dict, keys: tuple[str, ...]) -> None:
    assert torch.equal(before["torch_rng"], after["torch_rng"]), "torch's global RNG was reseeded or consumed"
    assert np.array_equal(before["numpy_rng"], after["numpy_rng"]), "numpy's global RNG was reseeded or consumed"
    for key in keys:
        assert before[key] == after[key], f"{key} changed: {before[key]!r} -> {after[key]!r}"


def _concrete_kmeans_fit():
    from sklearn.datasets import load_iris

    from lightning_papers.concrete_kmeans import ConcreteKMeansClusterer

    x = load_iris().data.astype("float32")
    ConcreteKMeansClusterer(n_clusters=3, pretrain_epochs=1, epochs=1, random_state=0).fit(x)


def _tiny_llama():
    from lightning_papers.spikellm import tiny_llama

    tiny_llama(seed=3, num_hidden_layers=1)


def _metamd_step():
    from lightning_papers.metamd import MetaMirrorDescent

    gen = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(2, 4, generator=gen))  # nn.Linear would draw from the global RNG
    opt = MetaMirrorDescent([weight], lr=1e-2)
    (torch.randn(8, 4, generator=gen) @ weight.T).pow(2).mean().backward()
    opt.step()


def _taylor_loss():
    from lightning_papers.taylor_loss import TaylorLoss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen, requires_grad=True)
    TaylorLoss()(logits, torch.tensor([0, 1, 2, 0, 1, 2])).backward()


@pytest.mark.parametrize("call", [_concrete_kmeans_fit, _tiny_llama, _metamd_step, _taylor_loss],
                         ids=["concrete_kmeans_fit", "tiny_llama", "metamd_step", "taylor_loss"])
def test_library_calls_leave_the_process_state_alone(call):
    first = _snapshot()
    call()
    # the first call's lazy imports may register their own loggers and warning filters, once
    _assert_unchanged(first, _snapshot(), ("python_rng", "threads", "deterministic", "root_level", "cwd", "env"))
    before = _snapshot()
    call()
    _assert_unchanged(before, _snapshot(), tuple(k for k in before if k not in ("torch_rng", "numpy_rng")))
