"""Quantize a model straight from its safetensors shards, one decoder layer in memory at a time.

The decoder layers are built on the ``meta`` device (no memory); before a layer is processed its tensors are
read from the shards onto the compute device, and afterwards the quantized layer is packed into the output
checkpoint and returned to ``meta``. Peak memory is therefore the embeddings, head and final norm, one layer,
and the calibration activations, whatever the number of layers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.io import CheckpointWriter, _rest_state
from lightning_papers.spikellm.quantization import (
    QuantizationReport,
    find_decoder_layers,
    move_except_layers,
    quantize,
    quantized_linears,
    resolve_dtype,
)

__all__ = ["quantize_pretrained"]


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps large freed buffers otherwise, so the resident size
    would creep up layer after layer although nothing is live)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _shard_index(root: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a Hugging Face model directory."""
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: root / v for k, v in weight_map.items()}
    single = root / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{root} has no model.safetensors or model.safetensors.index.json")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def _read(index: dict[str, Path], keys: Iterable[str], strip: str = "") -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for key in keys:
        if key not in index:
            raise KeyError(f"tensor {key} is not in the model's safetensors files")
        by_file.setdefault(index[key], []).append(key)
    out = {}
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            for key in names:
                out[key[len(strip):]] = f.get_tensor(key)
    return out


def _host_model(root: Path, dtype: torch.dtype | None, attn: str | None) -> tuple[nn.Module, nn.ModuleList, str]:
    """A model whose non-layer modules are real (CPU) and whose decoder layers are on ``meta``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from contextlib import nullcontext as no_init_weights

    config = AutoConfig.from_pretrained(str(root), local_files_only=True)
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if attn is not None:
        kwargs["attn_implementation"] = attn
    with torch.device("meta"):
        full = AutoModelForCausalLM.from_config(config, **kwargs)
    small_cfg = copy.deepcopy(config)
    small_cfg.num_hidden_layers = 1
    if isinstance(getattr(small_cfg, "layer_types", None), list):
        small_cfg.layer_types = small_cfg.layer_types[:1]
    with no_init_weights():  # one real layer keeps the rotary/scale buffers real; its weights are replaced
        host = AutoModelForCausalLM.from_config(small_cfg, **kwargs)
    host_layers, meta_layers = find_decoder_layers(host), find_decoder_layers(full)
    prefix = next(n for n, m in host.named_modules() if m is host_layers)
    parent_name, _, leaf = prefix.rpartition(".")
    setattr(host.get_submodule(parent_name) if parent_name else host, leaf, meta_layers)
    for key in ("num_hidden_layers", "layer_types"):  # the host now has all layers: restore the full config
        if hasattr(config, key):
            setattr(host.config, key, getattr(config, key))
    return host, meta_layers, prefix


def quantize_pretrained(
    model_dir: str | Path,
    calibration: torch.Tensor | Iterable[torch.Tensor],
    config: SpikeLLMConfig,
    output_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    progress: bool = True,
    attn_implementation: str | None = None,
) -> QuantizationReport:
    """Quantize a local Hugging Face model layer by layer from its safetensors shards into a packed checkpoint.

    Args:
        model_dir: a local model directory (``config.json`` and ``model.safetensors[.index.json]``).
        calibration: token ids (see :func:`~lightning_papers.spikellm.quantize`).
        config: SpikeLLM settings.
        output_dir: where the packed checkpoint goes (:func:`~lightning_papers.spikellm.load_quantized` reads it).
        device: compute device for the layer being quantized.
        dtype: dtype of the forward passes (default: the stored one, as ``config.json`` says).
        batch_size: calibration windows per forward pass.
        progress: show a progress bar.
        attn_implementation: attention kernel (``"eager"``, ``"sdpa"``, ...; default: transformers' choice).

    Returns:
        The :class:`QuantizationReport`.
    """
    root = Path(model_dir).expanduser()
    index = _shard_index(root)
    torch_dtype = resolve_dtype(dtype) if dtype is not None else None
    host, layers, prefix = _host_model(root, torch_dtype, attn_implementation)
    compute = torch.device(device)
    layer_keys = f"{prefix}."
    rest_keys = [k for k in host.state_dict() if not k.startswith(layer_keys)]
    present = [k for k in rest_keys if k in index]
    host.load_state_dict(_read(index, present), strict=False)
    if hasattr(host, "tie_weights"):
        host.tie_weights()
    absent = [k for k in rest_keys if k not in index]
    state = host.state_dict()
    untied = [k for k in absent if not any(state[k].data_ptr() == state[p].data_ptr() for p in present)]
    if untied:
        raise ValueError(f"{root} lacks tensors {untied[:5]} of {type(host).__name__}")
    if torch_dtype is not None:
        host.to(torch_dtype)
    move_except_layers(host, layers, compute)
    host.eval()
    def load_layer(idx: int, layer: nn.Module) -> None:
        layer.to_empty(device=compute)
        p = f"{layer_keys}{idx}."
        state = _read(index, [k for k in index if k.startswith(p)], strip=p)
        if torch_dtype is not None:
            state = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in state.items()}
        missing, _ = layer.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"layer {idx} of {root} lacks tensors {missing[:5]}")

    def write_layer(writer: CheckpointWriter, idx: int, layer: nn.Module) -> None:
        linears = {f"{layer_keys}{idx}.{n}": m for n, m in quantized_linears(layer).items()}
        rest = {f"{layer_keys}{idx}.{k}": v.detach().cpu().contiguous().clone() for k, v in layer.state_dict().items()
                if not any(f"{layer_keys}{idx}.{k}".startswith(f"{n}.") for n in linears)}  # fmt: skip
        writer.write({**writer.add_linears(linears), **rest})
        for module in linears.values():  # packed and written: keep nothing of this layer (grids are not on meta)
            module._wparams, module._calib = None, {}
        layer.to("meta")  # free it
        _release_freed_memory()

    with CheckpointWriter(output_dir) as writer:  # replaces output_dir only when complete
        report = quantize(host, calibration, config, batch_size=batch_size, progress=progress, device=compute, offload=True,
                          layer_start=load_layer, layer_end=lambda i, layer: write_layer(writer, i, layer))  # fmt: skip
        rest, aliases = _rest_state(host, {n: None for n in [layer_keys[:-1]]})  # everything outside the layers
        writer.write(rest)
        writer.finish(host, config, aliases)
    return report
