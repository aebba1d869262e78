"""Generalized integrate-and-fire (GIF) neurons as exact uniform quantizers (arXiv 2407.04752, Sec. 3.2).

An IF neuron with soft reset run for ``T`` binary steps is a uniform quantizer with ``T + 1`` levels.
A GIF neuron fires a *multi-level* spike in ``[0, 2**bits - 1]`` at every step, so ``T`` GIF steps
represent the integers ``0 .. T * (2**bits - 1)``: the membrane starts at the integer code ``q`` and
each step emits ``s_t = min(mem_t, 2**bits - 1)`` and subtracts it (soft reset).

Exactness. The public reference code quantizes to ``2**(bits + extra_bits)`` levels and then caps each
step at ``2**bits - 1``, so the top ``T - 1`` codes cannot be represented (for 4 + 1 bits, code 31 decodes
as 30). Here the grid has exactly ``T * (2**bits - 1) + 1`` levels, the largest set the ``T`` spikes can
represent, so ``decode(encode(x)) == fake_quant(x)`` holds for every input and every spike stays in
``[0, 2**bits - 1]``. With ``extra_bits = 0`` this is plain ``bits``-bit asymmetric quantization.
"""

from __future__ import annotations

import math

import torch

from lightning_papers.validation import check_each

__all__ = [
    "GIFQuantizer",
    "gif_levels",
    "level_bits",
    "mixed_fake_quant",
    "round_ste",
    "uniform_fake_quant",
]

_EPS = 1e-8


def gif_levels(bits: int, extra_bits: int = 0) -> int:
    """Number of levels ``T * (2**bits - 1) + 1`` of ``T = 2**extra_bits`` GIF steps of ``bits`` each.

    Example::

        >>> gif_levels(4, 0), gif_levels(4, 1), gif_levels(4, 2)
        (16, 31, 61)
    """
    check_each((bits >= 1, f"bits must be >= 1, got {bits}"), (extra_bits >= 0, f"extra_bits must be >= 0, got {extra_bits}"))
    return (2**extra_bits) * (2**bits - 1) + 1


def level_bits(levels: int) -> float:
    """Information content ``log2(levels)`` of one code (e.g. 4.95 bits for 31 levels)."""
    return math.log2(levels)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` with a straight-through gradient (identity), used when calibrating LET/LWC."""
    return (x.round() - x).detach() + x


def asym_params(
    xmin: torch.Tensor, xmax: torch.Tensor, qmax: torch.Tensor | int, ste: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and integer zero point mapping ``[xmin, xmax]`` onto ``[0, qmax]``."""
    scale = (xmax - xmin).clamp(min=_EPS) / qmax
    zero = -xmin / scale
    zero = round_ste(zero) if ste else zero.round()
    return scale, zero


def uniform_fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: torch.Tensor | int, ste: bool = False
) -> torch.Tensor:
    """``(clamp(round(x / scale) + zero, 0, qmax) - zero) * scale`` (broadcasting)."""
    r = round_ste(x / scale) if ste else torch.round(x / scale)
    q = torch.clamp(r + zero, torch.zeros_like(zero), torch.as_tensor(qmax, dtype=x.dtype, device=x.device))
    return (q - zero) * scale


class GIFQuantizer:
    """Per-token asymmetric quantizer whose integer code is emitted as ``T`` GIF spikes.

    Args:
        bits: bits of one spike (the base bit width ``b``); spikes lie in ``[0, 2**b - 1]``.
        extra_bits: ``a``; the neuron runs ``T = 2**a`` steps, giving ``T * (2**b - 1) + 1`` levels.
        dim: the dimension the range is taken over (``-1``: per token over channels).

    Example::

        >>> quant = GIFQuantizer(bits=4, extra_bits=1)
        >>> x = torch.randn(3, 8)
        >>> spikes, scale, zero = quant.encode(x)
        >>> spikes.shape, int(spikes.max()) <= 15
        (torch.Size([2, 3, 8]), True)
        >>> torch.allclose(quant.decode(spikes, scale, zero), quant.fake_quant(x))
        True
    """

    def __init__(self, bits: int, extra_bits: int = 0, dim: int = -1) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 15:
            raise ValueError(f"bits must be an integer in [1, 15], got {bits!r}")
        if isinstance(extra_bits, bool) or not isinstance(extra_bits, int) or not 0 <= extra_bits <= 8:
            raise ValueError(f"extra_bits must be an integer in [0, 8], got {extra_bits!r}")
        self.bits, self.extra_bits, self.dim = bits, extra_bits, dim
        self.steps = 2**extra_bits
        self.spike_max = 2**bits - 1
        self.qmax = self.steps * self.spike_max

    @property
    def levels(self) -> int:
        """Number of representable levels."""
        return self.qmax + 1

    def params(self, x: torch.Tensor, ste: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic scale and zero point over ``dim`` (kept as a size-1 dimension)."""
        xmin = x.amin(dim=self.dim, keepdim=True)
        xmax = x.amax(dim=self.dim, keepdim=True)
        return asym_params(xmin, xmax, self.qmax, ste=ste)

    def quantize(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Integer codes ``q = clamp(round(x / scale) + zero, 0, qmax)`` (as ``x``'s float dtype)."""
        return torch.clamp(torch.round(x / scale) + zero, 0, self.qmax)

    def spikes_from_codes(self, q: torch.Tensor) -> torch.Tensor:
        """Run the GIF membrane: ``mem_1 = q; s_t = min(mem_t, 2^b - 1); mem_{t+1} = mem_t - s_t``.

        Returns:
            Spikes of shape ``(T, *q.shape)``, each in ``[0, 2**bits - 1]``; they sum to ``q`` exactly
            because ``q <= T * (2**bits - 1)``.

        Raises:
            ValueError: when a code lies outside ``[0, qmax]`` or is not an integer.
        """
        if q.numel() and (bool((q < 0).any()) or bool((q > self.qmax).any()) or bool((q != q.round()).any())):
            raise ValueError(f"codes must be integers in [0, {self.qmax}] for {self.steps} steps of {self.bits} bits")
        mem = q.clone()
        spikes = []
        for _ in range(self.steps):
            s = torch.clamp(mem, max=self.spike_max)
            spikes.append(s)
            mem = mem - s  # soft reset: subtract what was fired
        return torch.stack(spikes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize ``x`` and emit its codes as GIF spikes.

        Returns:
            ``(spikes[T, *x.shape], scale, zero)``; ``scale`` and ``zero`` keep ``dim`` as size 1.
        """
        scale, zero = self.params(x)
        return self.spikes_from_codes(self.quantize(x, scale, zero)), scale, zero

    @staticmethod
    def decode(spikes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """``(sum_t s_t - zero) * scale``: the dequantized tensor."""
        return (spikes.sum(0) - zero) * scale

    def fake_quant(self, x: torch.Tensor, ste: bool = False) -> torch.Tensor:
        """Quantize-dequantize in one step (equal to ``decode(*encode(x))``)."""
        scale, zero = self.params(x, ste=ste)
        return uniform_fake_quant(x, scale, zero, self.qmax, ste=ste)


def mixed_fake_quant(
    x: torch.Tensor, salient: torch.Tensor | None, bits: int, extra_bits: int, ste: bool = False
) -> torch.Tensor:
    """Per-token activation quantization with salient channels on a finer GIF grid (OBSpiking).

    Both channel sets share the token's range ``[min, max]`` over all channels; non-salient channels use
    one step (``2**bits`` levels), salient channels ``T = 2**extra_bits`` steps
    (``T * (2**bits - 1) + 1`` levels).

    Args:
        x: activations ``(..., channels)``.
        salient: bool mask ``(channels,)`` or None (no salient channels).
        bits: base bits.
        extra_bits: extra bits of salient channels (``0`` = plain ``bits``-bit quantization).
        ste: straight-through rounding (for gradient-based calibration).

    Returns:
        The fake-quantized activations, same shape and dtype as ``x``.
    """
    xmin = x.amin(dim=-1, keepdim=True)
    xmax = x.amax(dim=-1, keepdim=True)
    low_q = 2**bits - 1
    s_lo, z_lo = asym_params(xmin, xmax, low_q, ste=ste)
    low = uniform_fake_quant(x, s_lo, z_lo, low_q, ste=ste)
    if salient is None or extra_bits == 0 or not bool(salient.any()):
        return low
    high_q = gif_levels(bits, extra_bits) - 1
    s_hi, z_hi = asym_params(xmin, xmax, high_q, ste=ste)
    high = uniform_fake_quant(x, s_hi, z_hi, high_q, ste=ste)
    return torch.where(salient.to(x.device), high, low)
