"""Packing a :class:`SpikeLinear` into integer codes at its bit width, and back (bit-exact).

Layout per quantized linear ``<name>`` (names follow compressed-tensors' ``pack-quantized`` format, whose
``pack_to_int32`` / ``unpack_from_int32`` do the packing: 32 ``b``-bit values in ``b`` int32 words):

* ``<name>.weight_packed`` (int32) and ``<name>.weight_shape``: the base codes, signed as compressed-tensors
  stores them (``code - 2**(b-1)``); for ternary columns ``b = 2`` and codes ``{-1, 0, 1} + 1``. A salient
  column (weight spiking) holds its *first* GIF spike here.
* ``<name>.weight_scale`` / ``<name>.weight_zero_point``: per row (or row group) scale (float32) and integer
  zero point of the base grid (ternary: the scale is ``alpha`` and there is no zero point).
* with weight spiking: ``<name>.weight_scale_hi`` / ``weight_zero_point_hi`` (the ``T``-step grid of the
  salient columns) and ``<name>.weight_spike_residual``: the remaining ``T - 1`` GIF spikes of the salient
  columns, ``b`` bits each, packed the same way.
* ``<name>.salient_index`` (int32): the salient input channels; ``<name>.bias`` as is;
  ``<name>.out_salient_index`` with K/V-cache spiking.

The stored weight is reconstructed as ``(q - zero) * scale`` in float32 and cast to the model dtype, the same
operations that produced it, so a reloaded model gives bit-identical outputs.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_papers.spikellm.gif import GIFQuantizer
from lightning_papers.spikellm.linear import SpikeLinear
from lightning_papers.spikellm.weight_quant import dequantize_codes, fake_quant_weight, weight_codes

__all__ = ["pack_codes", "pack_linear", "unpack_codes", "unpack_linear"]

_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes in ``[0, 2**bits - 1]`` of shape ``(rows, cols)`` (int32 words for
    ``bits <= 8`` via compressed-tensors, int16 otherwise).

    Example::

        >>> c = torch.tensor([[0, 15, 7, 3]])
        >>> torch.equal(unpack_codes(pack_codes(c, 4), 4, (1, 4)), c)
        True
    """
    if bits > 8:
        return codes.to(torch.int16 if bits < 16 else torch.int32)
    from compressed_tensors.compressors import pack_to_int32

    signed = (codes.long() - 2 ** (bits - 1)).to(torch.int8)
    return pack_to_int32(signed, bits)


def unpack_codes(packed: torch.Tensor, bits: int, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pack_codes` (int64 codes)."""
    if bits > 8:
        return packed.long().reshape(shape)
    from compressed_tensors.compressors import unpack_from_int32

    return unpack_from_int32(packed, bits, torch.Size(shape)).long() + 2 ** (bits - 1)


def _int_tensor(x: torch.Tensor) -> torch.Tensor:
    x = x.round().long()
    small = x.numel() == 0 or (int(x.min()) >= -(2**15) and int(x.max()) < 2**15)
    return x.to(torch.int16 if small else torch.int32)


def _grouped(layer: SpikeLinear, w: torch.Tensor) -> tuple[torch.Tensor, int]:
    rows, cols = w.shape
    gs = layer.config.group_size
    g = cols if gs in (-1, None) or gs >= cols else gs
    return w.reshape(rows, cols // g, g), g


def _codes_on_grid(layer: SpikeLinear, name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """Integer codes (grouped) whose dequantization reproduces the stored weight exactly."""
    cfg = layer.config
    w = layer.weight.detach()
    wg, g = _grouped(layer, w.float())
    sal = layer.salient_mask.reshape(1, -1, g) if cfg.spike_weights else None
    params = layer.weight_params()
    if params is None or layer.qat:  # latent (QAT) weights: pack their round-to-nearest quantization
        _, params = fake_quant_weight(w.float(), cfg.w_bits, cfg.extra_bits if cfg.spike_weights else 0,
                                      layer.salient_mask if cfg.spike_weights else None, cfg.group_size,
                                      ternary=cfg.ternary, return_params=True)  # fmt: skip
        return weight_codes(wg, params, sal), params, sal
    codes = weight_codes(wg, params, sal)
    target = w.reshape(wg.shape)
    deq = dequantize_codes(codes, params, sal).to(w.dtype)
    bad = deq != target
    if bool(bad.any()):  # a low-precision weight can round to a neighbouring code: pick the one that matches
        for delta in (-1, 1):
            alt = codes + delta
            fixed = bad & (dequantize_codes(alt, params, sal).to(w.dtype) == target)
            codes = torch.where(fixed, alt, codes)
            bad = bad & ~fixed
        if bool(bad.any()):
            raise ValueError(
                f"the weight of {name} is not on its quantization grid ({int(bad.sum())} values differ); was it "
                "modified after quantize()? Re-run quantize() before saving"
            )
    return codes, params, sal


def pack_linear(layer: SpikeLinear, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (keys relative to ``name``) and JSON metadata of one quantized linear."""
    cfg = layer.config
    tensors: dict[str, torch.Tensor] = {"salient_index": layer.salient_mask.nonzero().flatten().to(torch.int32).cpu()}
    meta: dict[str, Any] = {"shape": [layer.out_features, layer.in_features], "dtype": str(layer.weight.dtype)}
    if layer.bias is not None:
        tensors["bias"] = layer.bias.detach().cpu()
    if getattr(layer, "out_bits", 16) < 16:
        tensors["out_salient_index"] = layer.out_salient_mask.nonzero().flatten().to(torch.int32).cpu()
        meta["output_quant"] = {"bits": layer.out_bits, "extra_bits": layer.out_extra_bits, "group": layer.out_group}
    if not cfg.quantize_weights or not (layer.weight_quantized or layer.qat):
        tensors["weight"] = layer.weight.detach().cpu()
        meta["packed"] = False
        return tensors, meta
    codes, params, sal = _codes_on_grid(layer, name)
    rows, cols = layer.out_features, layer.in_features
    codes = codes.reshape(rows, cols).long()
    bits = 2 if cfg.ternary else cfg.w_bits
    salient = layer.salient_mask.cpu() if cfg.spike_weights else torch.zeros(cols, dtype=torch.bool)
    base = codes + 1 if cfg.ternary else codes.clone()
    if cfg.ternary:
        base[:, salient] = codes[:, salient]
    extra = cfg.extra_bits if cfg.spike_weights else 0
    if extra and bool(salient.any()):
        spikes = GIFQuantizer(cfg.w_bits, extra).spikes_from_codes(codes[:, salient].double()).long()  # (T, rows, k)
        base[:, salient] = spikes[0]
        tensors["weight_spike_residual"] = pack_codes(spikes[1:].reshape(-1, int(salient.sum())), cfg.w_bits)
    tensors["weight_packed"] = pack_codes(base.cpu(), bits)
    tensors["weight_shape"] = torch.tensor([rows, cols], dtype=torch.int64)
    if cfg.ternary:
        tensors["weight_scale"] = params["alpha"].squeeze(-1).float().cpu()
    else:
        tensors["weight_scale"] = params["scale_lo"].squeeze(-1).float().cpu()
        tensors["weight_zero_point"] = _int_tensor(params["zero_lo"].squeeze(-1).cpu())
    if extra:
        tensors["weight_scale_hi"] = params["scale_hi"].squeeze(-1).float().cpu()
        tensors["weight_zero_point_hi"] = _int_tensor(params["zero_hi"].squeeze(-1).cpu())
    meta.update({"packed": True, "bits": bits, "group": int(codes.shape[1] // params["scale_lo"].shape[1])})
    return tensors, meta


def _mask(index: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[index.long()] = True
    return mask


def unpack_linear(layer: SpikeLinear, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Fill ``layer`` (already a SpikeLinear of the right shape) from :func:`pack_linear`'s output."""
    cfg = layer.config
    rows, cols = meta["shape"]
    if (layer.out_features, layer.in_features) != (rows, cols):
        raise ValueError(f"shape mismatch: checkpoint has ({rows}, {cols}), the model ({layer.out_features}, "
                         f"{layer.in_features})")  # fmt: skip
    dtype = _DTYPES[meta["dtype"]]
    mask = _mask(tensors["salient_index"], cols)
    layer.salient_mask = mask.to(layer.weight.device)
    if "bias" in tensors:
        layer.bias = torch.nn.Parameter(tensors["bias"].clone(), requires_grad=False)
    if "output_quant" in meta:
        oq = meta["output_quant"]
        layer.enable_output_quant(oq["bits"], oq["extra_bits"], _mask(tensors["out_salient_index"], rows), oq["group"])
    if not meta["packed"]:
        layer.weight = torch.nn.Parameter(tensors["weight"].clone(), requires_grad=False)
        layer.weight_quantized = cfg.quantize_weights
        return
    bits, g = meta["bits"], meta["group"]
    codes = unpack_codes(tensors["weight_packed"], bits, (rows, cols))
    salient = mask if cfg.spike_weights else torch.zeros(cols, dtype=torch.bool)
    if cfg.ternary:
        codes[:, ~salient] -= 1
    if "weight_spike_residual" in tensors:
        k = int(salient.sum())
        steps = 2**cfg.extra_bits - 1
        rest = unpack_codes(tensors["weight_spike_residual"], cfg.w_bits, (steps * rows, k)).reshape(steps, rows, k)
        codes[:, salient] += rest.sum(0)
    params: dict[str, torch.Tensor] = {}
    if cfg.ternary:
        params["alpha"] = tensors["weight_scale"].float().unsqueeze(-1)
        params["scale_lo"] = params["alpha"]
    else:
        params["scale_lo"] = tensors["weight_scale"].float().unsqueeze(-1)
        params["zero_lo"] = tensors["weight_zero_point"].float().unsqueeze(-1)
    if "weight_scale_hi" in tensors:
        params["scale_hi"] = tensors["weight_scale_hi"].float().unsqueeze(-1)
        params["zero_hi"] = tensors["weight_zero_point_hi"].float().unsqueeze(-1)
    sal = salient.reshape(1, -1, g) if "weight_scale_hi" in tensors else None
    weight = dequantize_codes(codes.reshape(rows, cols // g, g), params, sal).reshape(rows, cols).to(dtype)
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    layer.set_weight_params(params)
