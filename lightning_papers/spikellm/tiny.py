"""The embedded tiny Llama (hidden 64, 2 layers, 4 heads, byte vocabulary) and a short CPU trainer.

Used by the ``quantize`` subcommand (when no model path is given), the tests and the benchmark, so that
quantization is evaluated on a model that has actually learned the bundled text (a random-init model's
perplexity means nothing).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["TINY_LLAMA", "plant_massive_activations", "plant_outliers", "tiny_llama", "train_tiny_llama"]

#: ``LlamaConfig`` keyword arguments of the embedded tiny model (same as ``CausalLM``'s defaults).
TINY_LLAMA: dict[str, Any] = dict(
    vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
)  # fmt: skip


def tiny_llama(seed: int = 0, **overrides: Any) -> nn.Module:
    """A freshly initialised tiny ``LlamaForCausalLM`` (eager attention, deterministic init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**TINY_LLAMA, **overrides})
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg)


def train_tiny_llama(
    steps: int = 300,
    seq_len: int = 64,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    corpus: str = "pydoc",
    tokens: torch.Tensor | None = None,
    model: nn.Module | None = None,
    progress: bool = False,
) -> nn.Module:
    """Train the tiny Llama on random windows of ``tokens`` (default: the bundled corpus's train split).

    Plain PyTorch (AdamW, linear warmup then cosine decay) so it is fast on one CPU core.

    Args:
        steps: optimisation steps.
        seq_len: window length.
        batch_size: windows per step.
        lr: peak learning rate.
        seed: seed of the init and the window sampling.
        corpus: bundled corpus when ``tokens`` is None.
        tokens: a 1-D LongTensor to train on.
        model: continue training this model instead of a fresh tiny one.
        progress: show a tqdm bar.

    Returns:
        The trained model in eval mode.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if tokens is None:
        from lightning_papers.data import TextDataModule

        dm = TextDataModule(corpus=corpus, seq_len=seq_len, seed=seed)
        tokens = dm.tokens("train")
    model = model if model is not None else tiny_llama(seed)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))  # fmt: skip
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="train tiny llama", disable=not progress):
        starts = torch.randint(0, tokens.numel() - seq_len - 1, (batch_size,), generator=gen)
        ids = torch.stack([tokens[s : s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def plant_outliers(
    model: nn.Module,
    factor: float = 20.0,
    attn_channels: tuple[int, ...] = (3, 17, 40),
    mlp_channels: tuple[int, ...] = (5, 29),
) -> nn.Module:
    """Create activation-outlier channels in a Llama model *without changing its function*.

    Multiplies the RMSNorm gains of a few channels by ``factor`` and divides the matching input columns
    of the linears that read them (``q/k/v`` and ``gate/up``) by ``factor``: the inverse of a SmoothQuant
    transform. Full-precision outputs are unchanged up to rounding, but the linears' inputs now have the
    few large channels that trained LLMs have and a 2-layer toy model does not develop.

    Returns:
        ``model`` (modified in place).
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        groups = ((layer.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj), list(attn_channels)),
                  (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj), list(mlp_channels)))  # fmt: skip
        for norm, linears, channels in groups:
            if channels:
                norm.weight[channels] *= factor
                for lin in linears:
                    lin.weight[:, channels] /= factor
    return model


@torch.no_grad()
def plant_massive_activations(
    model: nn.Module,
    calibration: torch.Tensor,
    factor: float = 30.0,
    channels: int = 2,
    layers: tuple[int, ...] | None = None,
) -> dict[int, list[int]]:
    """Create token-dependent massive activations at the MLP down-projection inputs, function-preservingly.

    In trained LLMs a few intermediate channels of the SwiGLU product ``silu(gate(x)) * up(x)`` take values
    hundreds of times the median on a few tokens (Sun et al. 2024, "Massive activations in LLMs"; they
    arise in the down-projection input of early layers). Here, in each chosen layer, the ``channels``
    intermediate channels whose magnitude is most token-dependent on ``calibration`` (largest max / median
    of ``|h|`` over tokens) get their ``up_proj`` row multiplied by ``factor`` and their ``down_proj`` column
    divided by it: the product is unchanged, so the model computes the same function (up to rounding), but
    those channels now dominate the per-token range on the tokens where the gate opens and are small
    elsewhere. A static per-channel smoothing scale cannot serve both kinds of token (and OmniQuant's LLaMA
    pipeline, like ours, has no equivalent transform before ``down_proj``).

    Args:
        model: a Llama-style model (``model.model.layers[i].mlp`` with ``up_proj`` / ``down_proj``).
        calibration: token ids ``(n, seqlen)`` used to pick the channels (use training data).
        factor: the scale (> 0).
        channels: channels per layer.
        layers: layer indices (default: all).

    Returns:
        The chosen channels per layer.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    decoder = model.model.layers
    chosen: dict[int, list[int]] = {}
    store: dict[int, torch.Tensor] = {}
    idxs = list(range(len(decoder))) if layers is None else list(layers)
    handles = [decoder[i].mlp.down_proj.register_forward_hook(
        lambda _m, inp, _o, i=i: store.__setitem__(i, inp[0].detach().reshape(-1, inp[0].shape[-1]).abs()))
        for i in idxs]  # fmt: skip
    try:
        model(input_ids=calibration, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for i in idxs:
        h = store[i]
        ratio = h.amax(0) / h.median(0).values.clamp(min=1e-6)
        top = torch.topk(ratio, channels).indices.tolist()
        mlp = decoder[i].mlp
        mlp.up_proj.weight[top] *= factor
        mlp.down_proj.weight[:, top] /= factor
        chosen[i] = top
    return chosen
