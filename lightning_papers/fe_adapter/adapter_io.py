"""Adapter files: only the FE-Adapter (and head) weights, PEFT-style, in safetensors.

A file holds the trainable tensors plus, as safetensors metadata, the :class:`FEAdapterConfig`, the
number of frames, the backbone's name and a SHA-256 fingerprint of the backbone's frozen weights. Loading
rebuilds nothing silently: the adapters are injected from the stored config when the model has none, and a
model whose frozen weights differ from the ones the adapters were trained on is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from lightning_papers.fe_adapter.adapter import FEAdapterConfig, fe_adapters, inject_fe_adapters
from lightning_papers.files import atomic_write

__all__ = ["frozen_fingerprint", "load_adapter", "read_adapter_metadata", "save_adapter"]

FORMAT = "lightning_papers.fe_adapter/1"
_ADAPTER_KEY = ".fe_adapter."


def _is_adapter(name: str) -> bool:
    return _ADAPTER_KEY in name or name.startswith("fe_adapter.")


def frozen_fingerprint(backbone: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a backbone's weights, adapters excluded.

    Tensors are hashed one at a time on the CPU, so memory stays flat for large models.

    Example::

        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> frozen_fingerprint(a) == frozen_fingerprint(a), frozen_fingerprint(a) == frozen_fingerprint(b)
        (True, False)
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        if _is_adapter(name):
            continue
        t = tensor.detach().contiguous().reshape(-1).cpu()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _parts(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, str]]:
    """(backbone, tensors to store, metadata) of a classifier or of a bare adapted ViT."""
    from lightning_papers.fe_adapter.module import FEAdapterClassifier

    if isinstance(model, FEAdapterClassifier):
        if model.mode == "full_finetune":
            raise ValueError(
                "mode='full_finetune' trains the whole backbone; save a Lightning checkpoint instead"
            )
        keys = model.trainable_keys()
        state = model.state_dict()
        tensors = {k: state[k] for k in sorted(keys)}
        meta = {
            "kind": "classifier", "backbone": str(model.hparams.backbone), "mode": model.mode,
            "config": json.dumps(model.hparams.adapter, sort_keys=True), "num_frames": str(model.num_frames),
            "num_classes": str(model.num_classes), "class_names": json.dumps(model.class_names),
        }  # fmt: skip
        return model.backbone, tensors, meta
    adapters = fe_adapters(model)
    if not adapters:
        raise ValueError(f"{type(model).__name__} has no FE-Adapters; call inject_fe_adapters first")
    tensors = {k: v for k, v in model.state_dict().items() if _is_adapter(k)}
    timm_cfg = getattr(model, "pretrained_cfg", None) or {}
    meta = {
        "kind": "backbone",
        "backbone": str(timm_cfg.get("architecture") or type(model).__name__),
        "config": json.dumps(dataclasses.asdict(adapters[0].config), sort_keys=True),
        "num_frames": str(adapters[0].num_frames),
    }
    return model, tensors, meta


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write only the adapter (and head) weights of ``model`` to a safetensors file, atomically.

    Args:
        model: an :class:`~lightning_papers.fe_adapter.FEAdapterClassifier` (adapters + head) or a timm ViT
            with injected FE-Adapters (adapters only).
        path: the file to write (``.safetensors`` by convention).

    Returns:
        The path written.

    Example::

        >>> import tempfile, timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2,
        ...                         num_heads=2, num_classes=0)
        >>> vit = inject_fe_adapters(vit, num_frames=4, config=FEAdapterConfig(bottleneck=2))
        >>> f = save_adapter(vit, tempfile.mkdtemp() + "/fe.safetensors")
        >>> read_adapter_metadata(f)["config"]["bottleneck"]
        2
    """
    from safetensors.torch import save

    backbone, tensors, meta = _parts(model)
    meta.update(format=FORMAT, fingerprint=frozen_fingerprint(backbone))
    # safetensors wants contiguous CPU tensors that share no storage
    payload = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=meta)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(payload)
    return path


def read_adapter_metadata(path: str | Path) -> dict:
    """The metadata of an adapter file (``config`` and ``class_names`` decoded from JSON).

    Raises:
        FileNotFoundError: no such file. ValueError: not an FE-Adapter file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error type for truncated or foreign files
        raise ValueError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); expected an FE-Adapter "
            "file written by save_adapter (truncated or corrupt?)"
        ) from err
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an FE-Adapter file (format {meta.get('format')!r}, expected {FORMAT!r})"
        )
    meta["config"] = json.loads(meta["config"])
    if "class_names" in meta:
        meta["class_names"] = json.loads(meta["class_names"])
    return meta


def load_adapter(model: nn.Module, path: str | Path, check_backbone: bool = True) -> nn.Module:
    """Load adapter (and head) weights written by :func:`save_adapter` into ``model``, in place.

    ``model`` is a freshly built :class:`~lightning_papers.fe_adapter.FEAdapterClassifier` with the same
    settings, or a timm ViT (FE-Adapters are injected from the file's config when it has none).

    Raises:
        ValueError: the file was written for another kind of model, backbone, mode, adapter config or
            number of classes, or (``check_backbone``) the model's frozen backbone weights differ from the
            ones the adapters were trained with; tensors are missing or unexpected.
    """
    from safetensors.torch import load_file

    from lightning_papers.fe_adapter.module import FEAdapterClassifier

    meta = read_adapter_metadata(path)
    config = meta["config"]
    if isinstance(model, FEAdapterClassifier):
        if meta["kind"] != "classifier":
            raise ValueError(
                f"{path} holds bare adapters (no head); load it into a timm ViT, not a classifier"
            )
        mine = {
            "backbone": str(model.hparams.backbone), "mode": model.mode, "num_classes": str(model.num_classes),
        }  # fmt: skip
        for key, value in mine.items():
            if meta[key] != value:
                raise ValueError(f"{path} was saved with {key}={meta[key]!r}, this model has {key}={value!r}")
        if model.mode != "linear_probe" and config != json.loads(
            json.dumps(model.hparams.adapter, sort_keys=True)
        ):
            diff = {k: (config.get(k), v) for k, v in model.hparams.adapter.items() if config.get(k) != v}
            raise ValueError(f"{path} was saved with another adapter config (file vs model): {diff}")
        backbone, target = model.backbone, model
        expected = model.trainable_keys()
    else:
        if meta["kind"] != "backbone":
            raise ValueError(
                f"{path} holds a classifier's adapters and head; load it into FEAdapterClassifier"
            )
        if not fe_adapters(model):
            inject_fe_adapters(model, int(meta["num_frames"]), FEAdapterConfig(**config))
        backbone, target = model, model
        expected = {k for k in model.state_dict() if _is_adapter(k)}
    if check_backbone:
        got = frozen_fingerprint(backbone)
        if got != meta["fingerprint"]:
            raise ValueError(
                f"the backbone's frozen weights differ from the ones the adapters in {path} were trained with "
                f"(fingerprint {got[:12]} vs {meta['fingerprint'][:12]}; backbone {meta['backbone']!r}): "
                "build it with the same pretrained weights / seed, or pass check_backbone=False"
            )
    try:
        tensors = load_file(str(path))
    except Exception as err:  # the header read fine but the tensor data is cut short
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); save the adapter again") from err
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    ref = next(iter(target.state_dict().values()))
    target.load_state_dict({k: v.to(ref.device) for k, v in tensors.items()}, strict=False)
    return model
