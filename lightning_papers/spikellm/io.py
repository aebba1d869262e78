"""Save and reload SpikeLLM-quantized Hugging Face models.

The directory holds what ``save_pretrained`` writes (config and dequantized weights, loadable by plain
``transformers`` as a full-precision model) plus ``spikellm_config.json`` (the settings and the list of
quantized linears) and ``spikellm_state.safetensors`` (salient masks and every other tensor of the
quantized model, so :func:`load_quantized` restores identical outputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.quantize import _set_module, quantized_linears

__all__ = ["load_quantized", "save_quantized"]

CONFIG_FILE = "spikellm_config.json"
STATE_FILE = "spikellm_state.safetensors"


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write a quantized model to directory ``path`` (created if needed).

    Raises:
        ValueError: when ``model`` has no :class:`SpikeLinear` (it was not quantized).
    """
    from safetensors.torch import save_file

    linears = quantized_linears(model)
    if not linears:
        raise ValueError("model has no SpikeLinear modules; run lightning_papers.spikellm.quantize first")
    config = getattr(model, "spikellm_config", None) or next(iter(linears.values())).config
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(out))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # safetensors refuses shared storage: store each tensor once by name (tied weights are re-tied on load)
    seen: dict[int, str] = {}
    unique = {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        unique[k] = v.clone()
    save_file(unique, str(out / STATE_FILE))
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    meta = {"config": config.to_dict(), "linears": sorted(linears), "model_class": type(model).__name__,
            "attn_implementation": attn}  # fmt: skip
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return out


def load_quantized(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (architecture from its ``config.json``).

    Raises:
        FileNotFoundError: when ``path`` lacks the SpikeLLM files.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    root = Path(path)
    if not (root / CONFIG_FILE).is_file() or not (root / STATE_FILE).is_file():
        raise FileNotFoundError(f"{root} is not a SpikeLLM checkpoint (missing {CONFIG_FILE} or {STATE_FILE})")
    meta = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    config = SpikeLLMConfig.from_dict(meta["config"])
    hf_config = AutoConfig.from_pretrained(str(root), local_files_only=True)
    # the same attention kernel as when saved, so outputs are bit-identical
    attn = meta.get("attn_implementation")
    model = AutoModelForCausalLM.from_config(hf_config, **({"attn_implementation": attn} if attn else {}))
    for name in meta["linears"]:
        lin = model.get_submodule(name)
        sl = SpikeLinear.from_linear(lin, config)
        sl.weight_quantized = True
        _set_module(model, name, sl)
    state = load_file(str(root / STATE_FILE))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"unexpected tensors in {STATE_FILE}: {unexpected[:5]}")
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    really_missing = [k for k in missing if k not in tied]
    if really_missing:
        raise RuntimeError(f"tensors missing from {STATE_FILE}: {really_missing[:5]}")
    model.spikellm_config = config
    return model.to(device).eval()
