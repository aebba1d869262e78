"""Weight quantization with salient columns on a GIF grid (and optional ternary non-salient columns).

Every output row (or row group of ``group_size`` input channels) has one range ``[wmin, wmax]``,
optionally shrunk by learnable clipping factors (OmniQuant LWC: ``sigmoid(gamma) * max``,
``sigmoid(beta) * min``). Non-salient columns use ``2**bits`` levels (or ternary ``{-a, 0, a}``);
salient columns use ``T = 2**extra_bits`` GIF steps, i.e. ``T * (2**bits - 1) + 1`` levels on the
same range.
"""

from __future__ import annotations

import torch

from lightning_papers.spikellm.gif import asym_params, gif_levels, level_bits, round_ste

__all__ = [
    "WeightQParams",
    "apply_weight_qparams",
    "dequantize_codes",
    "fake_quant_weight",
    "weight_bits",
    "weight_codes",
    "weight_qparams",
]

WeightQParams = dict[str, torch.Tensor]


def _group(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    rows, cols = w.shape
    g = cols if group_size in (-1, None) or group_size >= cols else group_size
    if cols % g:
        raise ValueError(f"group_size={group_size} does not divide the {cols} input channels")
    return w.reshape(rows, cols // g, g), g


def weight_qparams(
    wg: torch.Tensor,
    bits: int,
    extra_bits: int = 0,
    salient: torch.Tensor | None = None,
    clip_up: torch.Tensor | None = None,
    clip_low: torch.Tensor | None = None,
    ternary: bool = False,
    ste: bool = False,
) -> WeightQParams:
    """Quantization parameters of grouped weights ``wg`` of shape ``(rows, groups, group_size)``.

    Args:
        wg: grouped weights.
        bits: base bits.
        extra_bits: extra bits of salient columns.
        salient: bool ``(groups, group_size)`` mask (used for the ternary scale of non-salient entries).
        clip_up: LWC factors in (0, 1] for the max, broadcastable to ``(rows, groups, 1)``.
        clip_low: LWC factors for the min.
        ternary: compute a ternary scale for non-salient columns.
        ste: straight-through rounding of the zero points.

    Returns:
        A dict with ``scale_lo, zero_lo, qmax_lo, scale_hi, zero_hi, qmax_hi`` and ``alpha`` (ternary).
    """
    wmax = wg.amax(dim=-1, keepdim=True)
    wmin = wg.amin(dim=-1, keepdim=True)
    if clip_up is not None:
        wmax = wmax * clip_up
    if clip_low is not None:
        wmin = wmin * clip_low
    q_lo = 2**bits - 1
    q_hi = gif_levels(bits, extra_bits) - 1
    s_lo, z_lo = asym_params(wmin, wmax, q_lo, ste=ste)
    s_hi, z_hi = asym_params(wmin, wmax, q_hi, ste=ste)
    params: WeightQParams = {
        "scale_lo": s_lo, "zero_lo": z_lo, "qmax_lo": torch.tensor(float(q_lo)),
        "scale_hi": s_hi, "zero_hi": z_hi, "qmax_hi": torch.tensor(float(q_hi)),
    }  # fmt: skip
    if ternary:
        # Ternary weight networks (Li & Liu 2016): threshold 0.7 * mean|w|, scale = mean of the kept |w|.
        absw = wg.abs()
        keep = torch.ones_like(absw, dtype=torch.bool) if salient is None else ~salient.expand_as(absw)
        count = keep.sum(-1, keepdim=True).clamp(min=1)
        delta = 0.7 * (absw * keep).sum(-1, keepdim=True) / count
        big = keep & (absw > delta)
        alpha = (absw * big).sum(-1, keepdim=True) / big.sum(-1, keepdim=True).clamp(min=1)
        params["alpha"] = alpha.clamp(min=1e-8)
    return params


def apply_weight_qparams(
    wg: torch.Tensor, params: WeightQParams, salient: torch.Tensor | None, ste: bool = False
) -> torch.Tensor:
    """Fake-quantize ``wg`` (any shape broadcastable with ``params``) given a salient column mask."""
    rnd = round_ste if ste else torch.round

    def grid(scale, zero, qmax):
        q = torch.clamp(rnd(wg / scale) + zero, torch.zeros_like(zero), qmax.to(wg))
        return (q - zero) * scale

    if "alpha" in params:
        alpha = params["alpha"]
        low = torch.clamp(rnd(wg / alpha), -1, 1) * alpha
    else:
        low = grid(params["scale_lo"], params["zero_lo"], params["qmax_lo"])
    if salient is None or not bool(salient.any()):
        return low
    high = grid(params["scale_hi"], params["zero_hi"], params["qmax_hi"])
    return torch.where(salient.to(wg.device), high, low)


def weight_codes(wg: torch.Tensor, params: WeightQParams, salient: torch.Tensor | None) -> torch.Tensor:
    """Integer codes of ``wg`` (grouped, ``(rows, groups, group_size)``) on the grids of ``params``.

    Non-salient entries get base-grid codes in ``[0, 2**bits - 1]`` (ternary: ``{-1, 0, 1}``), salient ones
    GIF-grid codes in ``[0, T * (2**bits - 1)]``; :func:`dequantize_codes` maps them back exactly as
    :func:`apply_weight_qparams` computes its output.
    """
    if "alpha" in params:
        low = torch.clamp(torch.round(wg / params["alpha"]), -1, 1)
    else:
        low = torch.clamp(torch.round(wg / params["scale_lo"]) + params["zero_lo"], torch.zeros_like(params["zero_lo"]),
                          params["qmax_lo"].to(wg))  # fmt: skip
    if salient is None or not bool(salient.any()):
        return low
    high = torch.clamp(torch.round(wg / params["scale_hi"]) + params["zero_hi"], torch.zeros_like(params["zero_hi"]),
                       params["qmax_hi"].to(wg))  # fmt: skip
    return torch.where(salient.to(wg.device), high, low)


def dequantize_codes(codes: torch.Tensor, params: WeightQParams, salient: torch.Tensor | None) -> torch.Tensor:
    """``(q - zero) * scale`` per grid (``q * alpha`` for ternary entries), the inverse of :func:`weight_codes`."""
    codes = codes.to(torch.float32)
    low = codes * params["alpha"] if "alpha" in params else (codes - params["zero_lo"]) * params["scale_lo"]
    if salient is None or not bool(salient.any()):
        return low
    high = (codes - params["zero_hi"]) * params["scale_hi"]
    return torch.where(salient.to(codes.device), high, low)


def fake_quant_weight(
    w: torch.Tensor,
    bits: int,
    extra_bits: int = 0,
    salient: torch.Tensor | None = None,
    group_size: int = -1,
    clip_up: torch.Tensor | None = None,
    clip_low: torch.Tensor | None = None,
    ternary: bool = False,
    ste: bool = False,
    return_params: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, WeightQParams]:
    """Round-to-nearest quantize-dequantize of a weight matrix ``(out, in)``.

    Args:
        w: weights.
        bits: base bits.
        extra_bits: extra GIF bits of salient columns (0 = none).
        salient: bool mask over input channels ``(in,)``.
        group_size: group width along input channels (-1: whole row).
        clip_up: LWC max factors ``(out, groups, 1)`` (or broadcastable).
        clip_low: LWC min factors.
        ternary: non-salient columns ternary.
        ste: straight-through rounding.
        return_params: also return the grids (``scale_lo``, ``zero_lo``, ... of shape ``(out, groups, 1)``).

    Returns:
        The dequantized weights, same shape as ``w`` (and the parameters when ``return_params``).

    Example::

        >>> w = torch.randn(4, 8)
        >>> (fake_quant_weight(w, 8) - w).abs().max() < 0.02
        tensor(True)
    """
    wg, g = _group(w, group_size)
    sal = None if salient is None else salient.reshape(1, -1, g)
    params = weight_qparams(wg, bits, extra_bits, sal, clip_up, clip_low, ternary, ste)
    out = apply_weight_qparams(wg, params, sal, ste).reshape_as(w)
    if return_params:
        return out, {k: v.detach() for k, v in params.items()}
    return out


def weight_bits(bits: int, extra_bits: int, salient: torch.Tensor | None, in_features: int, ternary: bool = False) -> float:
    """Average information bits per weight of one linear (scales and zero points not counted)."""
    low = level_bits(3) if ternary else float(bits)
    if salient is None or extra_bits == 0:
        return low
    frac = float(salient.float().mean()) if salient.numel() else 0.0
    return (1 - frac) * low + frac * level_bits(gif_levels(bits, extra_bits))
