"""Save and reload SpikeLLM-quantized Hugging Face models as packed low-bit checkpoints.

A checkpoint directory holds

* ``config.json``: the Hugging Face model config (architecture, sizes);
* ``spikellm_model.safetensors``, ``spikellm_model-00001.safetensors``, ...: the quantized linears packed at
  their bit width (see :mod:`lightning_papers.spikellm.pack`), one file per decoder layer, and a last file with
  the remaining tensors (embeddings, norms, head) as they are;
* ``spikellm_config.json``: the format name and version, the architecture, the :class:`SpikeLLMConfig` and
  per-linear metadata. It is written last.

Saving writes into a temporary folder next to the target that replaces it only once complete
(:func:`lightning_papers.files.atomic_directory`), so an interrupted save never leaves a directory that loads.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_papers.files import atomic_directory
from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.pack import pack_linear, unpack_linear
from lightning_papers.spikellm.quantization import _set_module, find_decoder_layers, quantized_linears

__all__ = ["CONFIG_FILE", "FORMAT", "MODEL_FILE", "CheckpointWriter", "load_quantized", "read_checkpoint_meta",
           "save_quantized"]

CONFIG_FILE = "spikellm_config.json"
MODEL_FILE = "spikellm_model.safetensors"
FORMAT, VERSION = "spikellm-packed", 1


def _is_checkpoint(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _rest_state(model: nn.Module, linears: dict[str, SpikeLinear]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors outside the quantized linears, each storage once (aliases such as tied heads recorded)."""
    prefixes = tuple(f"{n}." for n in linears)
    seen: dict[Any, str] = {}
    rest, aliases = {}, {}
    for key, value in model.state_dict(keep_vars=False).items():
        if key.startswith(prefixes):
            continue
        ident = (value.data_ptr(), tuple(value.shape), value.dtype) if value.numel() else None
        if ident is not None and ident in seen:
            aliases[key] = seen[ident]
            continue
        if ident is not None:
            seen[ident] = key
        rest[key] = value.detach().cpu().contiguous().clone()
    return rest, aliases


class CheckpointWriter:
    """Writes a checkpoint into a temporary folder that replaces ``path`` only when the ``with`` block succeeds.

    Built on :func:`lightning_papers.files.atomic_directory`: tensors can be written in several files (one per
    decoder layer); :meth:`finish` writes the configs, the SpikeLLM one last. An exception (or interrupt) inside
    the block removes the temporary folder and leaves ``path`` as it was, so nothing half-written ever loads.

    Example::

        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "q"
        >>> try:
        ...     with CheckpointWriter(out) as writer:
        ...         writer.write({"x": torch.zeros(2)})
        ...         raise KeyboardInterrupt  # interrupted before finish()
        ... except KeyboardInterrupt:
        ...     pass
        >>> out.exists(), list(out.parent.iterdir())
        (False, [])
    """

    def __init__(self, path: str | Path) -> None:
        out = Path(path)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_checkpoint(out))):
            raise FileExistsError(f"{out} exists and is not a SpikeLLM checkpoint; refusing to overwrite it")
        self.out = out
        self.linears: dict[str, Any] = {}
        self._files = 0
        self._finished = False
        self._target: contextlib.AbstractContextManager[Path] | None = None
        self.tmp: Path | None = None

    def __enter__(self) -> CheckpointWriter:
        self._target = atomic_directory(self.out, overwrite=True)
        self.tmp = self._target.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._target is not None
        if exc_type is None and not self._finished:  # leaving without finish(): incomplete, discard it
            exc_type, exc = RuntimeError, RuntimeError("CheckpointWriter left without finish(); nothing saved")
            self._target.__exit__(exc_type, exc, None)
            raise exc
        return bool(self._target.__exit__(exc_type, exc, tb))

    def _folder(self) -> Path:
        if self.tmp is None:
            raise RuntimeError("use CheckpointWriter in a with block")
        return self.tmp

    def add_linears(self, linears: dict[str, SpikeLinear]) -> dict[str, torch.Tensor]:
        """Pack quantized linears (qualified names); returns their tensors (not yet written)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in linears.items():
            packed, meta = pack_linear(layer, name)
            tensors.update({f"{name}.{k}": v.contiguous() for k, v in packed.items()})
            self.linears[name] = meta
        return tensors

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write one safetensors file of the checkpoint."""
        from safetensors.torch import save_file

        name = MODEL_FILE if self._files == 0 else MODEL_FILE.replace(".safetensors", f"-{self._files:05d}.safetensors")
        save_file(tensors, str(self._folder() / name), metadata={"format": FORMAT})
        self._files += 1

    def finish(self, model: nn.Module, config: SpikeLLMConfig, aliases: dict[str, str]) -> None:
        """Write the configs, the SpikeLLM one (which marks a checkpoint complete) last; the folder moves into
        place when the ``with`` block ends."""
        folder = self._folder()
        hf_config = getattr(model, "config", None)
        if hf_config is not None and hasattr(hf_config, "save_pretrained"):
            hf_config.save_pretrained(str(folder))
        meta = {
            "format": FORMAT, "version": VERSION, "architecture": type(model).__name__,
            "model_type": getattr(hf_config, "model_type", None),
            "attn_implementation": getattr(hf_config, "_attn_implementation", None),
            "config": config.to_dict(), "linears": self.linears, "aliases": aliases, "files": self._files,
            # non-persistent buffers (rotary frequencies) are rebuilt on load: record their dtypes (model.half()
            # casts them too) so the reloaded model computes in the same precision
            "buffer_dtypes": {k: str(v.dtype) for k, v in model.named_buffers() if v.is_floating_point()},
        }  # fmt: skip
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        self._finished = True


def _by_decoder_layer(model: nn.Module, linears: dict[str, SpikeLinear]) -> dict[str, dict[str, SpikeLinear]]:
    """Quantized linears grouped by decoder layer (``"model.layers.3"``), in model order; key ``""`` holds any
    outside the decoder-layer list."""
    try:
        layers = find_decoder_layers(model)
        prefix = next(n for n, m in model.named_modules() if m is layers) + "."
    except ValueError:
        prefix = None
    groups: dict[str, dict[str, SpikeLinear]] = {}
    for name, layer in linears.items():
        inside = prefix is not None and name.startswith(prefix)
        key = prefix + name[len(prefix) :].split(".")[0] if inside else ""
        groups.setdefault(key, {})[name] = layer
    return groups


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write a quantized model to directory ``path`` as a packed low-bit checkpoint (atomically).

    An existing SpikeLLM checkpoint at ``path`` is replaced; any other non-empty directory is refused.

    Raises:
        ValueError: when ``model`` has no :class:`SpikeLinear` (it was not quantized) or a weight is not on its
            quantization grid.
        FileExistsError: when ``path`` is a non-empty directory that is not a SpikeLLM checkpoint.

    Example::

        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from lightning_papers.spikellm import quantize
        >>> lm = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
        ...                        num_hidden_layers=1, num_attention_heads=2))
        >>> _ = quantize(lm, torch.randint(0, 256, (2, 16)), SpikeLLMConfig(nsamples=2, seqlen=16), progress=False)
        >>> import tempfile; tmp = tempfile.mkdtemp()
        >>> again = load_quantized(save_quantized(lm, tmp + "/q"))
        >>> ids = torch.randint(0, 256, (1, 8))
        >>> torch.equal(lm(input_ids=ids).logits, again(input_ids=ids).logits)
        True
    """
    linears = quantized_linears(model)
    if not linears:
        raise ValueError("model has no SpikeLinear modules; run lightning_papers.spikellm.quantize first")
    config = getattr(model, "spikellm_config", None) or next(iter(linears.values())).config
    with CheckpointWriter(path) as writer:
        # one file per decoder layer, each packed just before it is written: the save holds one layer's packed
        # tensors at a time instead of the whole model's (memory flat in depth, as when streaming)
        groups = _by_decoder_layer(model, linears)
        for key, group in groups.items():
            if key:
                writer.write(writer.add_linears(group))
        rest, aliases = _rest_state(model, linears)  # embeddings, norms, head (and linears outside the layers)
        writer.write({**writer.add_linears(groups.get("", {})), **rest})
        writer.finish(model, config, aliases)
    return Path(path)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The ``spikellm_config.json`` of a checkpoint directory, validated.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when it is not a (complete) SpikeLLM checkpoint of a supported format version.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no SpikeLLM checkpoint at {root}: the path does not exist")
    if not (root / CONFIG_FILE).is_file() or not (root / MODEL_FILE).is_file():  # a renamed-in directory has both
        raise ValueError(f"{root} is not a SpikeLLM checkpoint (expected {CONFIG_FILE} and {MODEL_FILE})")
    try:
        meta = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{root / CONFIG_FILE} is not valid JSON: {err}") from err
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{root} holds format {meta.get('format')!r} version {meta.get('version')!r}; this version of "
                         f"lightning-papers reads {FORMAT!r} version {VERSION}")  # fmt: skip
    return meta


def _build_model(root: Path, meta: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from contextlib import nullcontext as no_init_weights

    hf_config = AutoConfig.from_pretrained(str(root), local_files_only=True)
    attn = meta.get("attn_implementation")
    with no_init_weights():  # every tensor is overwritten from the file
        model = AutoModelForCausalLM.from_config(hf_config, **({"attn_implementation": attn} if attn else {}))
    return model


def load_quantized(
    path: str | Path, device: str | torch.device = "cpu", model: nn.Module | None = None
) -> nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (the architecture from its ``config.json``).

    Args:
        path: the checkpoint directory.
        device: where the model goes.
        model: optionally, an unquantized model of the same architecture to load into (its linears are
            replaced); by default one is built from ``config.json``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when ``path`` is not a SpikeLLM checkpoint, or was saved from a different architecture
            than ``model`` (or its tensors do not fit it).
    """
    from safetensors.torch import load_file

    root = Path(path)
    meta = read_checkpoint_meta(root)
    files = sorted(root.glob(MODEL_FILE.replace(".safetensors", "*.safetensors")))
    if len(files) != meta.get("files", 1):
        raise ValueError(f"{root} is incomplete: {len(files)} tensor files, the config lists {meta.get('files', 1)}")
    if model is None:
        model = _build_model(root, meta)
    saved_arch = meta.get("architecture")
    if type(model).__name__ != saved_arch:
        raise ValueError(f"{root} holds a quantized {saved_arch}, not a {type(model).__name__}; load it into a "
                         f"{saved_arch} (or without model=)")  # fmt: skip
    config = SpikeLLMConfig.from_dict(meta["config"])
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as err:  # safetensors' own error type: a truncated or overwritten tensor file
            raise ValueError(
                f"{file} is not a readable safetensors file ({type(err).__name__}: {err}); the checkpoint is "
                "truncated or corrupt: save it again with save_quantized"
            ) from err
    for name, lmeta in meta["linears"].items():
        try:
            module = model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(f"{root} was saved from a different {saved_arch} configuration: no module {name}") from err
        layer = module if isinstance(module, SpikeLinear) else SpikeLinear.from_module(module, config)
        layer.config = config
        prefix = f"{name}."
        unpack_linear(layer, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, lmeta)
        _set_module(model, name, layer)
    prefixes = tuple(f"{n}." for n in meta["linears"])
    rest = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
    for alias, source in meta.get("aliases", {}).items():
        rest[alias] = rest[source]
    expected = {k for k in model.state_dict() if not k.startswith(prefixes)}
    missing, unexpected = expected - set(rest), set(rest) - expected
    if missing or unexpected:
        raise ValueError(f"{root} does not fit this {saved_arch}: missing {sorted(missing)[:5]}, unexpected "
                         f"{sorted(unexpected)[:5]}")  # fmt: skip
    state = model.state_dict()
    for key, value in rest.items():
        if state[key].shape != value.shape:
            raise ValueError(f"{root} does not fit this {saved_arch}: {key} has shape {tuple(value.shape)} in the "
                             f"file and {tuple(state[key].shape)} in the model")  # fmt: skip
    model.load_state_dict(rest, strict=False)
    for key, value in rest.items():  # dtypes as saved (load_state_dict copies into the model's dtype)
        owner, _, leaf = key.rpartition(".")
        mod = model.get_submodule(owner) if owner else model
        current = getattr(mod, leaf)
        if isinstance(current, torch.Tensor) and current.dtype != value.dtype:
            current.data = current.data.to(value.dtype)
    dtypes = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
    for key, dtype in meta.get("buffer_dtypes", {}).items():
        owner, _, leaf = key.rpartition(".")
        mod = model.get_submodule(owner) if owner else model
        buf = mod._buffers.get(leaf)
        if buf is not None and str(buf.dtype) != dtype and dtype in dtypes:
            mod._buffers[leaf] = buf.to(dtypes[dtype])
    model.spikellm_config = config
    return model.to(device).eval()
