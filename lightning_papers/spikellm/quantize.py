"""Block-by-block SpikeLLM quantization of a Hugging Face causal LM (in place, like torchao's ``quantize_``).

1. Capture the inputs of decoder layer 0 (hidden states plus every keyword the model passes: attention
   mask, position ids, rotary ``position_embeddings``) by stopping the forward at layer 0.
2. For each decoder layer: run it in full precision while collecting per-linear statistics
   (first-order saliency, Hessian, activation maxima); pick salient channels; swap its ``nn.Linear``
   modules for :class:`SpikeLinear`; quantize the weights (RTN, GPTQ or OmniQuant LET+LWC); run the
   quantized layer to get the next layer's inputs (so errors propagate as at inference time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.gptq import gptq_quantize
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.saliency import SaliencyStats, hessian_scores, random_mask, select_salient

__all__ = ["QuantizationReport", "find_decoder_layers", "quantize", "quantized_linears", "target_linears"]

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.layers")


@dataclass
class QuantizationReport:
    """What :func:`quantize` did.

    Attributes:
        config: the settings used (as a dict).
        layers: per decoder layer: ``layer``, ``rel_error`` (``||y_fp - y_q||^2 / ||y_fp||^2`` of the
            layer output on calibration data) and ``seconds``.
        linears: per quantized linear: ``name``, ``weight_bits``, ``activation_bits``, ``salient``.
        avg_weight_bits: information bits per weight over quantized linears (weighted by size).
        avg_activation_bits: bits per linear-input activation (weighted by input width).
        avg_activation_steps: GIF steps per activation channel (1 = no spiking).
        seconds: wall time.
    """

    config: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    linears: list[dict[str, Any]] = field(default_factory=list)
    avg_weight_bits: float = 16.0
    avg_activation_bits: float = 16.0
    avg_activation_steps: float = 1.0
    seconds: float = 0.0

    def __str__(self) -> str:
        cfg = self.config
        lines = [
            f"SpikeLLM quantization: pipeline={cfg['pipeline']} W{cfg['w_bits']}A{cfg['a_bits']} "
            f"extra_bits={cfg['extra_bits']} salient_fraction={cfg['salient_fraction']} saliency={cfg['saliency']}",
            f"  avg weight bits {self.avg_weight_bits:.3f}, avg activation bits {self.avg_activation_bits:.3f}"
            f" ({self.avg_activation_steps:.3f} GIF steps/channel), {len(self.linears)} linears, {self.seconds:.1f} s",
        ]
        lines += [f"  layer {row['layer']}: relative output error {row['rel_error']:.4g}" for row in self.layers]
        return "\n".join(lines)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a Llama-style causal LM (``model.model.layers`` and similar).

    Raises:
        ValueError: for an unsupported architecture (no decoder-layer list found).
    """
    for path in _LAYER_PATHS:
        layers = _get(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ValueError(
        f"unsupported architecture {type(model).__name__}: no decoder-layer list at any of {_LAYER_PATHS}; "
        "SpikeLLM supports Llama-style Hugging Face causal LMs"
    )


def _matches(name: str, suffixes: list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def target_linears(layer: nn.Module, config: SpikeLLMConfig, prefix: str = "") -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of one decoder layer that ``config`` quantizes (name -> module)."""
    found = {}
    for name, module in layer.named_modules():
        full = f"{prefix}.{name}" if prefix else name
        if type(module) is nn.Linear and not _matches(full, config.ignore):
            if not config.targets or _matches(name, config.targets):
                found[name] = module
    return found


def quantized_linears(model: nn.Module) -> dict[str, SpikeLinear]:
    """All :class:`SpikeLinear` modules of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SpikeLinear)}


def _calibration_batches(calibration: Any, config: SpikeLLMConfig, batch_size: int) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        source: Iterable = [calibration]
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes)):
        source = calibration
    else:
        raise TypeError(f"calibration must be a LongTensor (nsamples, seqlen) or an iterable of them, got {type(calibration).__name__}")
    rows: list[torch.Tensor] = []
    total = 0
    for item in source:
        if isinstance(item, dict):
            item = item.get("input_ids")
        if not isinstance(item, torch.Tensor) or item.dtype not in (torch.int64, torch.int32):
            raise TypeError("calibration batches must be integer token-id tensors of shape (batch, seqlen)")
        if item.dim() == 1:
            item = item.unsqueeze(0)
        if item.dim() != 2:
            raise ValueError(f"calibration batches must have shape (batch, seqlen), got {tuple(item.shape)}")
        if item.shape[1] < config.seqlen:
            raise ValueError(
                f"calibration windows have {item.shape[1]} tokens, shorter than seqlen={config.seqlen}; "
                "pass longer windows or lower config.seqlen"
            )
        take = item[: config.nsamples - total, : config.seqlen].long()
        rows.append(take)
        total += take.shape[0]
        if total >= config.nsamples:
            break
    if total == 0:
        raise ValueError("calibration data is empty")
    ids = torch.cat(rows)
    return list(ids.split(batch_size))


class _StopForward(Exception):
    pass


def _layer_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module, layers: nn.ModuleList, batches: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Inputs (hidden states, keyword arguments) of the first decoder layer for each batch."""
    hidden: list[torch.Tensor] = []
    kwargs_list: list[dict[str, Any]] = []

    def hook(_module, args, kwargs):
        h = args[0] if args else kwargs.pop("hidden_states")
        kw = dict(kwargs)
        for key in ("past_key_value", "past_key_values", "cache", "layer_past"):
            if key in kw:
                kw[key] = None
        if "use_cache" in kw:
            kw["use_cache"] = False
        hidden.append(h.detach())
        kwargs_list.append(kw)
        raise _StopForward

    device = next(model.parameters()).device
    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    if len(hidden) != len(batches):
        raise RuntimeError("the model never called its first decoder layer; unsupported architecture")
    return hidden, kwargs_list


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


@torch.no_grad()
def quantize(
    model: nn.Module,
    calibration: torch.Tensor | Iterable[torch.Tensor],
    config: SpikeLLMConfig | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> QuantizationReport:
    """Quantize a causal LM in place with SpikeLLM (OBSpiking on RTN, GPTQ or OmniQuant).

    Args:
        model: a Hugging Face Llama-style causal LM (``model.model.layers`` of decoder layers).
        calibration: token ids ``(nsamples, seqlen)`` (LongTensor) or an iterable of such batches
            (or of dicts with ``input_ids``); windows longer than ``config.seqlen`` are truncated.
        config: settings (default ``SpikeLLMConfig()``: W4A4, 10% salient channels with +1 bit).
        batch_size: calibration windows per forward pass.
        progress: show a tqdm bar over decoder layers.

    Returns:
        A :class:`QuantizationReport`.

    Raises:
        ValueError: unsupported architecture, no supported linears, calibration shorter than ``seqlen``.
        TypeError: calibration of the wrong type.

    Example::

        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> lm = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
        ...                        num_hidden_layers=1, num_attention_heads=2))
        >>> cfg = SpikeLLMConfig(nsamples=2, seqlen=16)
        >>> report = quantize(lm, torch.randint(0, 256, (2, 16)), cfg, progress=False)
        >>> len(report.linears)
        7
    """
    config = config if config is not None else SpikeLLMConfig()
    if not isinstance(config, SpikeLLMConfig):
        raise TypeError(f"config must be a SpikeLLMConfig, got {type(config).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    layers = find_decoder_layers(model)
    layer_prefix = next(n for n, m in model.named_modules() if m is layers)
    targets = [target_linears(layer, config, f"{layer_prefix}.{i}") for i, layer in enumerate(layers)]
    if not any(targets):
        raise ValueError(
            f"no supported linear layers to quantize in {type(model).__name__}: SpikeLLM replaces torch.nn.Linear "
            f"modules inside decoder layers (targets={config.targets or 'all'}, ignore={config.ignore})"
        )
    batches = _calibration_batches(calibration, config, batch_size)
    was_training = model.training
    model.eval()
    inputs, kwargs_list = capture_layer_inputs(model, layers, batches)
    report = QuantizationReport(config=config.to_dict())
    gen = torch.Generator().manual_seed(config.seed)
    need_hessian = (config.pipeline == "gptq" and config.quantize_weights) or config.saliency == "hessian"

    bar = tqdm(range(len(layers)), desc="SpikeLLM layers", disable=not progress)
    for idx in bar:
        t0 = time.perf_counter()
        layer = layers[idx]
        linears = targets[idx]
        stats = {
            name: SaliencyStats(lin.weight, first_order=config.saliency == "first_order", hessian=need_hessian)
            for name, lin in linears.items()
        }
        handles = [
            lin.register_forward_hook(lambda _m, inp, _out, s=stats[name]: s.add_batch(inp[0]))
            for name, lin in linears.items()
        ]
        try:
            fp_outs = [_layer_out(layer(x, **kw)) for x, kw in zip(inputs, kwargs_list)]
        finally:
            for h in handles:
                h.remove()

        spiking: dict[str, SpikeLinear] = {}
        for name, lin in linears.items():
            st = stats[name]
            if config.saliency == "first_order":
                mask = select_salient(st.first_order_scores(), config.salient_fraction)
            elif config.saliency == "hessian":
                mask = select_salient(hessian_scores(lin.weight, st.hessian, config.gptq_damp), config.salient_fraction)
            else:
                mask = random_mask(lin.in_features, config.salient_fraction, gen)
            sl = SpikeLinear.from_linear(lin, config)
            sl.salient_mask.copy_(mask.to(sl.salient_mask.device))
            _set_module(layer, name, sl)
            spiking[name] = sl

        if config.pipeline == "omniquant":
            from lightning_papers.spikellm.omniquant import omniquant_layer

            omniquant_layer(layer, spiking, stats, inputs, kwargs_list, fp_outs, config)
        for name, sl in spiking.items():
            if config.pipeline == "gptq" and config.quantize_weights:
                mask = sl.salient_mask if config.spike_weights else None
                sl.weight.data = gptq_quantize(
                    sl.weight.data, stats[name].hessian, config.w_bits, config.extra_bits if config.spike_weights else 0,
                    mask, config.group_size, config.ternary, config.gptq_damp, config.gptq_block,
                ).to(sl.weight.dtype)  # fmt: skip
                sl.weight_quantized = True
            else:
                sl.quantize_weight_()

        num = den = 0.0
        new_inputs = []
        for x, kw, y in zip(inputs, kwargs_list, fp_outs):
            q = _layer_out(layer(x, **kw))
            num += float(((q.float() - y.float()) ** 2).sum())
            den += float((y.float() ** 2).sum())
            new_inputs.append(q)
        inputs = new_inputs
        rel = num / max(den, 1e-30)
        report.layers.append({"layer": idx, "rel_error": rel, "seconds": time.perf_counter() - t0})
        bar.set_postfix(rel_error=f"{rel:.3g}")
        del fp_outs, stats

    w_num = w_den = a_num = a_den = s_num = 0.0
    for name, sl in quantized_linears(model).items():
        state = sl.quant_state()
        report.linears.append({"name": name, **state})
        w_num += state["weight_bits"] * sl.weight.numel()
        w_den += sl.weight.numel()
        a_num += state["activation_bits"] * sl.in_features
        s_num += sl.activation_steps() * sl.in_features
        a_den += sl.in_features
    report.avg_weight_bits = w_num / w_den
    report.avg_activation_bits = a_num / a_den
    report.avg_activation_steps = s_num / a_den
    report.seconds = time.perf_counter() - start
    model.spikellm_config = config
    model.train(was_training)
    if not math.isfinite(sum(r["rel_error"] for r in report.layers)):
        raise FloatingPointError("quantization produced non-finite layer outputs")
    return report
