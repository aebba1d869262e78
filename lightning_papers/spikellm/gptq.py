"""GPTQ (Frantar et al. 2023) with OBSpiking: the quantizer of each column is chosen by its saliency.

Hessian accumulation and the column-wise error feedback are the usual GPTQ ones
(``W[:, i:] -= err / d * Hinv[i, i:]`` with ``Hinv`` the upper Cholesky factor of ``H^-1``); the only
change is that a salient column is rounded on the ``T``-step GIF grid (arXiv 2407.04752, Sec. 4) and a
non-salient one on the base grid (or ternary).
"""

from __future__ import annotations

import torch

from lightning_papers.spikellm.saliency import inverse_hessian_cholesky
from lightning_papers.spikellm.weight_quant import apply_weight_qparams, weight_qparams

__all__ = ["gptq_quantize"]


@torch.no_grad()
def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    extra_bits: int = 0,
    salient: torch.Tensor | None = None,
    group_size: int = -1,
    ternary: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    return_params: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Quantize ``weight`` (out, in) with GPTQ error feedback; returns the dequantized weight.

    Args:
        weight: the layer weight.
        hessian: ``2 X^T X / N`` of the layer inputs, ``(in, in)``.
        bits: base bits.
        extra_bits: GIF extra bits of salient columns.
        salient: bool mask over input channels (None: none salient).
        group_size: quantization group width along inputs (-1: per row).
        ternary: non-salient columns ternary.
        damp: dampening fraction of the mean Hessian diagonal.
        block_size: lazy-batch width.
        return_params: also return the per-group grids (``scale_lo``, ``zero_lo``, ... ``(out, groups, 1)``),
            from which :func:`~lightning_papers.spikellm.weight_quant.weight_codes` recovers the integer codes.

    Returns:
        The quantized (dequantized-valued) weight, same shape and dtype as ``weight`` (and the grids).

    Raises:
        ValueError: on shape mismatches or a group size that does not divide the input width.

    Example::

        >>> w, x = torch.randn(8, 16), torch.randn(256, 16)
        >>> q = gptq_quantize(w, 2 * x.T @ x / 256, bits=3)
        >>> q.shape
        torch.Size([8, 16])
    """
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be ({cols}, {cols}) for a weight of shape {tuple(weight.shape)}, got {tuple(hessian.shape)}")
    g = cols if group_size in (-1, None) or group_size >= cols else group_size
    if cols % g:
        raise ValueError(f"group_size={group_size} does not divide the {cols} input channels")
    sal = torch.zeros(cols, dtype=torch.bool, device=weight.device) if salient is None else salient.to(weight.device)
    ext = extra_bits if bool(sal.any()) else 0
    w = weight.detach().clone().float()
    hinv, dead = inverse_hessian_cholesky(hessian.to(w.device), damp)
    w[:, dead] = 0.0
    q = torch.zeros_like(w)
    params = None
    per_group: list[dict[str, torch.Tensor]] = []
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % g == 0:
                # the group's range from the *current* (error-updated) weights
                current = torch.cat([w1[:, i:], w[:, i2:]], dim=1)[:, :g]
                params = weight_qparams(current.unsqueeze(1), bits, ext, sal[col : col + g].view(1, 1, g), ternary=ternary)
                per_group.append(params)
            wc = w1[:, i]
            qc = apply_weight_qparams(wc.view(rows, 1, 1), params, sal[col].view(1, 1, 1)).view(rows)
            q[:, col] = qc
            e = (wc - qc) / h1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if not return_params:
        return q.to(weight.dtype)
    stacked = {k: torch.cat([p[k] for p in per_group], dim=1) if per_group[0][k].dim() == 3 else per_group[0][k]
               for k in per_group[0]}  # fmt: skip
    return q.to(weight.dtype), stacked
