"""Perplexity on non-overlapping windows (the GPTQ / OmniQuant / SpikeLLM WikiText-2 protocol)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from lightning_papers.spikellm.quantization import check_token_ids, vocab_size_of

__all__ = ["perplexity"]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokens: torch.Tensor | Iterable,
    seqlen: int = 2048,
    batch_size: int = 8,
    max_windows: int | None = None,
) -> float:
    """``exp`` of the mean next-token negative log-likelihood over non-overlapping windows.

    Args:
        model: a causal LM returning ``.logits`` (Hugging Face style).
        tokens: a 1-D LongTensor cut into ``len // seqlen`` windows (the tail is dropped), or an iterable
            of ``(batch, L)`` LongTensors / dicts with ``input_ids`` (each window scored on its own).
        seqlen: window length when ``tokens`` is 1-D.
        batch_size: windows per forward pass.
        max_windows: score at most this many windows (for quick runs).

    Returns:
        The perplexity (a float >= 1).

    Raises:
        ValueError: when ``tokens`` holds no complete window, or a token id outside the model's vocabulary.

    Example::

        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> lm = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
        ...                        num_hidden_layers=1, num_attention_heads=2))
        >>> 100 < perplexity(lm, torch.randint(0, 256, (200,)), seqlen=50) < 1000
        True
    """
    if isinstance(tokens, torch.Tensor):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D LongTensor, got shape {tuple(tokens.shape)}")
        if seqlen < 2:
            raise ValueError(f"seqlen must be >= 2, got {seqlen}")
        n = tokens.numel() // seqlen
        if n == 0:
            raise ValueError(f"{tokens.numel()} tokens hold no complete window of seqlen={seqlen}")
        windows: Iterable = tokens[: n * seqlen].view(n, seqlen).split(batch_size)
    else:
        windows = tokens
    device = next(model.parameters()).device
    vocab = vocab_size_of(model)
    was_training = model.training
    model.eval()
    nll, count, seen = 0.0, 0, 0
    try:
        for batch in windows:
            ids = batch["input_ids"] if isinstance(batch, dict) else batch
            if max_windows is not None:
                ids = ids[: max_windows - seen]
                if ids.shape[0] == 0:
                    break
            check_token_ids(ids, vocab, what="evaluation")
            ids = ids.to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            nll += float(loss)
            count += ids[:, 1:].numel()
            seen += ids.shape[0]
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no windows to evaluate")
    return math.exp(nll / count)
