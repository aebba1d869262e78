"""Optional K/V-cache activation spiking (arXiv 2407.04752, Sec. 4: "salient K/V channels get +1 bit").

With ``config.kv_bits < 16`` the outputs of the key and value projections (what a KV cache stores) are
fake-quantized per token and per head on ``kv_bits`` levels; with ``config.spike_kv`` the salient K/V
channels of each projection get ``2**extra_bits`` GIF steps on the same range, exactly like salient input
channels. Saliency here is the channel energy ``mean_tokens(y_j^2)`` of the projection output (a
first-order proxy; the paper's ``(Q^T Q K^T) * K^T`` needs the queries and attention probabilities, see the
method card). Fused projections (``qkv_proj``, ``query_key_value``, ``c_attn``) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.saliency import select_salient

__all__ = ["KVHooks", "kv_stats_hooks"]


def _head_dim(layer: nn.Module) -> int | None:
    for module in layer.modules():
        hd = getattr(module, "head_dim", None)
        if isinstance(hd, int) and hd > 0:
            return hd
    return None


@dataclass
class KVHooks:
    """Forward hooks collecting K/V output energy, and :meth:`attach` to configure the quantized layers."""

    config: SpikeLLMConfig
    head_dim: int | None = None
    energy: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    handles: list[Any] = field(default_factory=list)

    def _hook(self, name: str):
        def hook(_module, _inp, out):
            y = out.detach().reshape(-1, out.shape[-1]).float()
            self.energy[name] = self.energy.get(name, 0) + (y**2).sum(0)
            self.counts[name] = self.counts.get(name, 0) + y.shape[0]

        return hook

    def attach(self, name: str, layer: nn.Module) -> None:
        """Turn on output quantization of ``layer`` (a SpikeLinear) when ``name`` is a K/V projection."""
        if name not in self.energy:
            return
        cfg = self.config
        mask = torch.zeros(layer.out_features, dtype=torch.bool)
        if cfg.spike_kv:
            mask = select_salient(self.energy[name] / self.counts[name], cfg.salient_fraction)
        group = self.head_dim if self.head_dim and layer.out_features % self.head_dim == 0 else layer.out_features
        layer.enable_output_quant(cfg.kv_bits, cfg.extra_bits if cfg.spike_kv else 0, mask, group)


def kv_stats_hooks(layer: nn.Module, linears: dict[str, nn.Module], config: SpikeLLMConfig) -> KVHooks:
    """Register energy hooks on the K/V projections of ``layer`` (none when ``config.kv_bits == 16``)."""
    hooks = KVHooks(config, _head_dim(layer))
    if config.kv_bits >= 16:
        return hooks
    for name, lin in linears.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in config.kv_targets:
            hooks.handles.append(lin.register_forward_hook(hooks._hook(name)))
    return hooks
