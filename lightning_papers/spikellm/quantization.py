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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.gptq import gptq_quantize
from lightning_papers.spikellm.kv import kv_stats_hooks
from lightning_papers.spikellm.linear import SpikeLinear, is_conv1d
from lightning_papers.spikellm.saliency import SaliencyStats, hessian_scores, random_mask, select_salient

__all__ = [
    "QuantizationReport",
    "capture_layer_inputs",
    "check_token_ids",
    "find_decoder_layers",
    "move_except_layers",
    "quantize",
    "quantized_linears",
    "resolve_dtype",
    "run_layer",
    "target_linears",
    "vocab_size_of",
]

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
        if isinstance(layers, nn.ModuleList):
            if len(layers) == 0:
                raise ValueError(f"{type(model).__name__} has no decoder layers ({path} is empty); nothing to quantize")
            return layers
    raise ValueError(
        f"unsupported architecture {type(model).__name__}: no decoder-layer list at any of {_LAYER_PATHS}; "
        "SpikeLLM supports Hugging Face decoder-only causal LMs (Llama, Qwen2, Mistral, Gemma, Phi-3, OPT, GPT-NeoX, "
        "GPT-2, ...)"
    )


def _matches(name: str, suffixes: list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def target_linears(layer: nn.Module, config: SpikeLLMConfig, prefix: str = "") -> dict[str, nn.Module]:
    """The ``nn.Linear`` (or GPT-2 ``Conv1D``) modules of one decoder layer that ``config`` quantizes."""
    found = {}
    for name, module in layer.named_modules():
        full = f"{prefix}.{name}" if prefix else name
        if (type(module) is nn.Linear or is_conv1d(module)) and not _matches(full, config.ignore):
            if not config.targets or _matches(name, config.targets):
                found[name] = module
    return found


def quantized_linears(model: nn.Module) -> dict[str, SpikeLinear]:
    """All :class:`SpikeLinear` modules of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SpikeLinear)}


def _linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as ``(out, in)`` (a ``Conv1D`` stores it transposed)."""
    return module.weight.t() if is_conv1d(module) else module.weight


def vocab_size_of(model: nn.Module) -> int | None:
    """The input vocabulary size (rows of the input embedding), or None when unknown."""
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if isinstance(emb, nn.Embedding):
        return emb.num_embeddings
    return getattr(getattr(model, "config", None), "vocab_size", None)


def check_token_ids(ids: torch.Tensor, vocab_size: int | None, what: str = "calibration") -> None:
    """Raise a ``ValueError`` naming the first token id outside ``[0, vocab_size)``."""
    if vocab_size is None or ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{what} token id {int(ids[pos])} at position {pos} is outside the model's vocabulary of size "
            f"{vocab_size} (valid ids: 0..{vocab_size - 1})"
        )


def _calibration_batches(
    calibration: Any, config: SpikeLLMConfig, batch_size: int, vocab_size: int | None = None
) -> list[torch.Tensor]:
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
        if item.dim() != 2 or item.shape[0] == 0:
            if item.dim() == 2:
                continue
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
        raise ValueError("calibration data is empty: pass at least one window of token ids (shape (n, seqlen), n >= 1)")
    ids = torch.cat(rows)
    check_token_ids(ids, vocab_size)
    return list(ids.split(batch_size))


class _StopForward(Exception):
    pass


def _layer_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _is_cache(obj: Any) -> bool:
    return hasattr(obj, "get_seq_length") or type(obj).__name__.endswith("Cache")


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module, layers: nn.ModuleList, batches: list[torch.Tensor], device: torch.device | None = None
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Inputs (hidden states, keyword arguments) of the first decoder layer for each batch.

    Positional arguments after the hidden states (GPT-2 passes its mask positionally) are kept under the
    key ``"__args__"``; KV caches are replaced by None (calibration needs none).
    """
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
        rest = tuple(None if _is_cache(a) else a for a in args[1:])
        if rest:
            kw["__args__"] = rest
        hidden.append(h.detach())
        kwargs_list.append(kw)
        raise _StopForward

    device = device if device is not None else _first_device(model)
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


def run_layer(layer: nn.Module, x: torch.Tensor, kw: dict[str, Any]) -> torch.Tensor:
    """Call a decoder layer with captured arguments and return its hidden-state output."""
    args = kw.get("__args__", ())
    rest = {k: v for k, v in kw.items() if k != "__args__"}
    return _layer_out(layer(x, *args, **rest))


def _first_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def move_except_layers(model: nn.Module, layers: nn.ModuleList, device: torch.device | str) -> None:
    """Move every parameter and buffer of ``model`` outside ``layers`` to ``device`` (tied weights stay tied)."""

    def rec(module: nn.Module) -> None:
        for p in module._parameters.values():
            if p is not None and p.device.type != "meta":
                p.data = p.data.to(device)
        for key, b in module._buffers.items():
            if b is not None and b.device.type != "meta":
                module._buffers[key] = b.to(device)
        for child in module.children():
            if child is not layers:
                rec(child)

    rec(model)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


LayerHook = Callable[[int, nn.Module], None]


@torch.no_grad()
def quantize(
    model: nn.Module,
    calibration: torch.Tensor | Iterable[torch.Tensor],
    config: SpikeLLMConfig | None = None,
    batch_size: int = 8,
    progress: bool = True,
    device: str | torch.device | None = None,
    offload: bool = False,
    dtype: str | torch.dtype | None = None,
    layer_start: LayerHook | None = None,
    layer_end: LayerHook | None = None,
    qat: bool = False,
) -> QuantizationReport:
    """Quantize a causal LM in place with SpikeLLM (OBSpiking on RTN, GPTQ or OmniQuant).

    Args:
        model: a Hugging Face decoder-only causal LM (Llama, Qwen2, Mistral, Gemma, Phi-3, OPT, GPT-NeoX,
            GPT-2, ...): decoder layers at ``model.layers``, ``transformer.h``, ``gpt_neox.layers``, ...
        calibration: token ids ``(nsamples, seqlen)`` (LongTensor) or an iterable of such batches
            (or of dicts with ``input_ids``); windows longer than ``config.seqlen`` are truncated.
        config: settings (default ``SpikeLLMConfig()``: W4A4, 10% salient channels with +1 bit).
        batch_size: calibration windows per forward pass.
        progress: show a tqdm bar over decoder layers.
        device: compute device (default: where the model is). Without ``offload`` the whole model moves there.
        offload: keep the decoder layers on the CPU and move one at a time to ``device`` (embeddings, final
            norm and head go to ``device``; calibration activations stay there): peak device memory is one
            layer plus activations, so a 7B model quantizes on one small GPU. The model ends on the CPU.
        dtype: cast the model to this dtype first (``"bfloat16"``, ``"float16"``, ...); forward passes then
            run in it, while statistics, GPTQ and scales are computed in float32.
        layer_start: called as ``layer_start(index, layer)`` before a layer is processed (e.g. to load its
            weights from disk); ``layer_end`` after (e.g. to write it out and free it).
        qat: prepare quantization-aware training instead: choose the salient masks from calibration and
            insert :class:`SpikeLinear` modules whose weights stay trainable and are fake-quantized (with
            straight-through gradients) in every forward; no weight rounding or OmniQuant calibration here.

    Returns:
        A :class:`QuantizationReport`.

    Raises:
        ValueError: unsupported architecture, no decoder layers or supported linears, empty calibration,
            token ids outside the vocabulary, calibration shorter than ``seqlen``.
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
            f"(and GPT-2 Conv1D) modules inside decoder layers (targets={config.targets or 'all'}, ignore={config.ignore})"
        )
    batches = _calibration_batches(calibration, config, batch_size, vocab_size_of(model))
    if dtype is not None:
        model.to(resolve_dtype(dtype))
    compute = torch.device(device) if device is not None else _first_device(model)
    if offload:
        move_except_layers(model, layers, compute)
    elif device is not None:
        model.to(compute)
    was_training = model.training
    model.eval()
    inputs, kwargs_list = capture_layer_inputs(model, layers, batches, compute)
    report = QuantizationReport(config=config.to_dict())
    gen = torch.Generator().manual_seed(config.seed)
    need_hessian = (config.pipeline == "gptq" and config.quantize_weights) or config.saliency == "hessian"
    acc = [0.0] * 5  # weight-bit sum, weights, activation-bit sum, GIF-step sum, input channels

    bar = tqdm(range(len(layers)), desc="SpikeLLM layers", disable=not progress)
    for idx in bar:
        t0 = time.perf_counter()
        if layer_start is not None:
            layer_start(idx, layers[idx])
        layer = layers[idx]
        if offload:
            layer.to(compute)
        linears = targets[idx] if layer_start is None else target_linears(layer, config, f"{layer_prefix}.{idx}")
        stats = {
            name: SaliencyStats(_linear_weight(lin), first_order=config.saliency == "first_order", hessian=need_hessian)
            for name, lin in linears.items()
        }
        kv = kv_stats_hooks(layer, linears, config)
        handles = [
            lin.register_forward_hook(lambda _m, inp, _out, s=stats[name]: s.add_batch(inp[0]))
            for name, lin in linears.items()
        ] + kv.handles
        try:
            fp_outs = [run_layer(layer, x, kw) for x, kw in zip(inputs, kwargs_list)]
        finally:
            for h in handles:
                h.remove()

        spiking: dict[str, SpikeLinear] = {}
        for name, lin in linears.items():
            st = stats[name]
            weight = _linear_weight(lin)
            if config.saliency == "first_order":
                mask = select_salient(st.first_order_scores(), config.salient_fraction)
            elif config.saliency == "hessian":
                mask = select_salient(hessian_scores(weight, st.hessian, config.gptq_damp), config.salient_fraction)
            else:
                mask = random_mask(weight.shape[1], config.salient_fraction, gen)
            sl = SpikeLinear.from_module(lin, config)
            sl.salient_mask.copy_(mask.to(sl.salient_mask.device))
            kv.attach(name, sl)
            _set_module(layer, name, sl)
            spiking[name] = sl
        targets[idx] = {}  # drop references to the replaced modules (their tensors may be freed by layer_end)
        del linears

        if config.pipeline == "omniquant" and not qat:
            from lightning_papers.spikellm.omniquant import omniquant_layer

            omniquant_layer(layer, spiking, stats, inputs, kwargs_list, fp_outs, config)
        for name, sl in spiking.items():
            if qat:
                sl.enable_qat()
            elif config.pipeline == "gptq" and config.quantize_weights:
                mask = sl.salient_mask if config.spike_weights else None
                q, params = gptq_quantize(
                    sl.weight.data, stats[name].hessian, config.w_bits, config.extra_bits if config.spike_weights else 0,
                    mask, config.group_size, config.ternary, config.gptq_damp, config.gptq_block, return_params=True,
                )  # fmt: skip
                sl.weight.data.copy_(q)  # in place: no second copy of the layer's weights
                sl.set_weight_params(params)
            else:
                sl.quantize_weight_()

        num = den = 0.0
        new_inputs = []
        for x, kw, y in zip(inputs, kwargs_list, fp_outs):
            q = run_layer(layer, x, kw)
            num += float(((q.float() - y.float()) ** 2).sum())
            den += float((y.float() ** 2).sum())
            new_inputs.append(q)
        inputs = new_inputs
        rel = num / max(den, 1e-30)
        report.layers.append({"layer": idx, "rel_error": rel, "seconds": time.perf_counter() - t0})
        bar.set_postfix(rel_error=f"{rel:.3g}")
        del fp_outs, stats
        for name, sl in spiking.items():  # summarised now: layer_end may free the layer
            state = sl.quant_state()
            report.linears.append({"name": f"{layer_prefix}.{idx}.{name}", **state})
            acc[0] += state["weight_bits"] * sl.weight.numel()
            acc[1] += sl.weight.numel()
            acc[2] += state["activation_bits"] * sl.in_features
            acc[3] += sl.activation_steps() * sl.in_features
            acc[4] += sl.in_features
        if offload:
            layer.to("cpu")
        if layer_end is not None:
            layer_end(idx, layer)

    report.avg_weight_bits = acc[0] / max(acc[1], 1)
    report.avg_activation_bits = acc[2] / max(acc[4], 1)
    report.avg_activation_steps = acc[3] / max(acc[4], 1)
    report.seconds = time.perf_counter() - start
    if offload:
        move_except_layers(model, layers, "cpu")
    model.spikellm_config = config
    model.train(was_training)
    if not math.isfinite(sum(r["rel_error"] for r in report.layers)):
        raise FloatingPointError("quantization produced non-finite layer outputs")
    return report


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` -> ``torch.bfloat16`` (and fp16, fp32 alike)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}  # fmt: skip
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]
