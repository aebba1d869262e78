"""OmniQuant-style calibration of one decoder layer (Shao et al. 2024), with OBSpiking activations.

Learnable equivalent transformation (LET, OmniQuant Eq. 4): a per-channel scale ``s`` moves activation
outliers into the weights, ``X W^T = (X / s)(diag(s) W^T)``; initialised as in SmoothQuant,
``s = max|X|^alpha / max|W|^(1 - alpha)``. For Llama layers ``s`` is folded into the RMSNorm gain
before ``q/k/v`` and ``gate/up`` and into ``v_proj``'s rows before ``o_proj``.
Learnable weight clipping (LWC, Eq. 2): per-row factors ``sigmoid(gamma) * max(W)``,
``sigmoid(beta) * min(W)``, initialised at ``sigmoid(4)``.
Both are trained to minimise ``MSE(layer_fp(X), layer_q(X))`` with AdamW and then folded in place.
The salient masks were chosen before smoothing (arXiv 2407.04752, Sec. 4).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.quantization import run_layer
from lightning_papers.spikellm.saliency import SaliencyStats

__all__ = ["omniquant_layer"]

_LWC_INIT = 4.0


def _smooth_init(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    w_max = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0)
    s = act_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


def _let_groups(layer: nn.Module, linears: dict[str, SpikeLinear]) -> list[dict[str, Any]]:
    """The LET groups of a Llama-style layer: (norm, linears reading its output) and (v_proj -> o_proj)."""
    groups: list[dict[str, Any]] = []
    pairs = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
             ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))  # fmt: skip
    for norm_name, names in pairs:
        norm = getattr(layer, norm_name, None)
        if norm is not None and getattr(norm, "weight", None) is not None and all(n in linears for n in names):
            groups.append({"kind": "norm", "norm": norm, "linears": [linears[n] for n in names], "stats_of": names[0]})
    v, o = linears.get("self_attn.v_proj"), linears.get("self_attn.o_proj")
    if v is not None and o is not None and v.out_features == o.in_features:
        groups.append({"kind": "vo", "v": v, "o": o, "stats_of": "self_attn.o_proj"})
    return groups


def omniquant_layer(
    layer: nn.Module,
    linears: dict[str, SpikeLinear],
    stats: dict[str, SaliencyStats],
    inputs: list[torch.Tensor],
    kwargs_list: list[dict[str, Any]],
    fp_outs: list[torch.Tensor],
    config: SpikeLLMConfig,
) -> list[float]:
    """Learn LET scales and LWC factors of one decoder layer, then fold them in place.

    Args:
        layer: the decoder layer whose target linears are already :class:`SpikeLinear`.
        linears: those linears by name relative to ``layer``.
        stats: calibration statistics of each linear's input (for ``max|X|``).
        inputs: the layer's (quantized-model) inputs per batch.
        kwargs_list: the layer's keyword arguments per batch.
        fp_outs: the full-precision layer outputs per batch (the targets).
        config: settings (``let``, ``lwc``, ``epochs``, learning rates, ``let_alpha``).

    Returns:
        The mean training loss of each epoch.
    """
    params_let: list[torch.Tensor] = []
    params_lwc: list[torch.Tensor] = []
    groups = _let_groups(layer, linears) if config.let and config.quantize_activations else []
    if config.let and config.quantize_activations and not groups:
        warnings.warn("LET skipped: the layer is not Llama-style (no input_layernorm/q,k,v/...); LWC only", stacklevel=2)
    for g in groups:
        act_max = stats[g["stats_of"]].act_absmax
        if g["kind"] == "norm":
            s = nn.Parameter(_smooth_init(act_max, [lin.weight for lin in g["linears"]], config.let_alpha))
            for lin in g["linears"]:
                lin._calib["in_scale"] = s
        else:
            s = nn.Parameter(_smooth_init(act_max, [g["o"].weight], config.let_alpha))
            g["v"]._calib["out_scale"] = s
            g["o"]._calib["w_in_scale"] = s
        g["scale"] = s
        params_let.append(s)
    if config.lwc and config.quantize_weights and not config.ternary:
        for lin in linears.values():
            groups_n = 1 if config.group_size == -1 else lin.in_features // config.group_size
            shape = (lin.out_features, groups_n, 1)
            lin._calib["lwc_up"] = nn.Parameter(torch.full(shape, _LWC_INIT, device=lin.weight.device))
            lin._calib["lwc_low"] = nn.Parameter(torch.full(shape, _LWC_INIT, device=lin.weight.device))
            params_lwc += [lin._calib["lwc_up"], lin._calib["lwc_low"]]
    if not params_let and not params_lwc:
        return []
    for lin in linears.values():
        # activate calibration mode even for layers without learnable parameters (so weights fake-quantize)
        lin._calib.setdefault("active", torch.ones(()))

    frozen = [p for p in layer.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    groups_opt = []
    if params_let:
        groups_opt.append({"params": params_let, "lr": config.let_lr, "weight_decay": 0.0})
    if params_lwc:
        groups_opt.append({"params": params_lwc, "lr": config.lwc_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups_opt)
    losses = []
    try:
        with torch.enable_grad():
            for _ in range(config.epochs):
                total = 0.0
                for x, kw, y in zip(inputs, kwargs_list, fp_outs):
                    out = run_layer(layer, x, kw)
                    loss = torch.nn.functional.mse_loss(out.float(), y.float())
                    if not torch.isfinite(loss):
                        raise FloatingPointError("OmniQuant loss is not finite; lower let_lr / lwc_lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        for s in params_let:
                            s.clamp_(min=1e-5)
                    total += float(loss.detach())
                losses.append(total / max(1, len(inputs)))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        for g in groups:
            if g["kind"] == "norm":
                norm, scale = g["norm"], g["scale"].detach().float()
                if "Gemma" in type(norm).__name__:  # Gemma's RMSNorm multiplies by (1 + weight)
                    norm.weight.data.copy_((1 + norm.weight.data.float()) / scale - 1)
                else:
                    norm.weight.data.copy_(norm.weight.data.float() / scale)
        for lin in linears.values():
            lin._calib.pop("active", None)
            lin.fold_calibration_()
    return losses
