"""``SpikeLinear``: an ``nn.Linear`` replacement with GIF-spiking activations and quantized weights."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.gif import GIFQuantizer, asym_params, gif_levels, level_bits, mixed_fake_quant
from lightning_papers.spikellm.weight_quant import fake_quant_weight, weight_bits

__all__ = ["SpikeLinear"]


class SpikeLinear(nn.Module):
    """A linear layer whose input is quantized per token with salient channels on a finer GIF grid.

    The weight is stored dequantized (so ``state_dict`` keys match ``nn.Linear`` and the checkpoint stays
    ``save_pretrained``-compatible); ``salient_mask`` is a persistent buffer. Activations are quantized
    dynamically per token (``a_bits``; salient channels get ``T = 2**extra_bits`` GIF steps).

    Args:
        in_features: input channels.
        out_features: output channels.
        bias: whether the layer has a bias.
        config: the quantization settings (bits, spiking targets, grouping).

    Example::

        >>> layer = SpikeLinear.from_linear(nn.Linear(8, 4), SpikeLLMConfig(w_bits=4, a_bits=4))
        >>> layer.salient_mask[:2] = True
        >>> x = torch.randn(3, 8, dtype=torch.float64)
        >>> layer = layer.double()
        >>> torch.allclose(layer(x), layer.spike_forward(x))
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, config: SpikeLLMConfig | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.config = config if config is not None else SpikeLLMConfig()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_buffer("salient_mask", torch.zeros(in_features, dtype=torch.bool))
        self.act_quant = self.config.quantize_activations
        self.weight_quantized = False
        # OmniQuant calibration state, kept out of the state_dict on purpose: "in_scale" (input divided
        # here, weight columns multiplied), "w_in_scale" (input already divided upstream), "out_scale"
        # (weight rows divided), "lwc_up"/"lwc_low" (clipping logits)
        self._calib: dict[str, torch.Tensor] = {}

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: SpikeLLMConfig) -> SpikeLinear:
        """Wrap an existing ``nn.Linear`` (its parameters are reused, not copied)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected nn.Linear, got {type(linear).__name__}")
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features, layer.config = linear.in_features, linear.out_features, config
        layer.weight = linear.weight
        layer.weight.requires_grad_(False)
        layer.bias = linear.bias
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
        layer.register_buffer("salient_mask", torch.zeros(linear.in_features, dtype=torch.bool, device=linear.weight.device))
        layer.act_quant = config.quantize_activations
        layer.weight_quantized = False
        layer._calib = {}
        return layer

    # ---------------------------------------------------------------- weights
    def _weight_mask(self) -> torch.Tensor | None:
        return self.salient_mask if self.config.spike_weights else None

    def transformed_weight(self, ste: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias with pending LET scales applied and (if calibrating) LWC fake quantization."""
        w, b = self.weight, self.bias
        c = self._calib
        for key in ("in_scale", "w_in_scale"):  # X W^T = (X / s)(W s)^T  (OmniQuant Eq. 4)
            if key in c:
                w = w * c[key].view(1, -1)
        if "out_scale" in c:  # the next layer's LET folded into this one's output channels
            w = w / c["out_scale"].view(-1, 1)
            b = None if b is None else b / c["out_scale"]
        if c and self.config.quantize_weights and not self.weight_quantized:
            w = self._fake_quant_weight(w, ste=True)
        return w, b

    def _fake_quant_weight(self, w: torch.Tensor, ste: bool = False) -> torch.Tensor:
        cfg = self.config
        up = torch.sigmoid(self._calib["lwc_up"]) if "lwc_up" in self._calib else None
        low = torch.sigmoid(self._calib["lwc_low"]) if "lwc_low" in self._calib else None
        return fake_quant_weight(
            w, cfg.w_bits, cfg.extra_bits if cfg.spike_weights else 0, self._weight_mask(), cfg.group_size,
            clip_up=up, clip_low=low, ternary=cfg.ternary, ste=ste,
        )  # fmt: skip

    @torch.no_grad()
    def quantize_weight_(self) -> None:
        """Round-to-nearest weight quantization in place (no-op when ``w_bits == 16`` or already done)."""
        if self.config.quantize_weights and not self.weight_quantized:
            self.weight.data = self._fake_quant_weight(self.weight.data.float()).to(self.weight.dtype)
        self.weight_quantized = True

    @torch.no_grad()
    def fold_calibration_(self) -> None:
        """Fold LET scales into the weight, quantize it with the learned clipping, drop calibration state."""
        w, b = self.weight.data.float(), None if self.bias is None else self.bias.data.float()
        c = self._calib
        for key in ("in_scale", "w_in_scale"):
            if key in c:
                w = w * c[key].detach().float().view(1, -1)
        if "out_scale" in c:
            w = w / c["out_scale"].detach().float().view(-1, 1)
            b = None if b is None else b / c["out_scale"].detach().float()
        if self.config.quantize_weights and not self.weight_quantized:
            w = self._fake_quant_weight(w)
        self.weight.data = w.to(self.weight.dtype)
        if b is not None:
            self.bias.data = b.to(self.bias.dtype)
        self._calib = {}
        self.weight_quantized = True

    # ---------------------------------------------------------------- forward
    def quantize_input(self, x: torch.Tensor, ste: bool = False) -> torch.Tensor:
        """Fake-quantize the input per token (salient channels on the ``T``-step GIF grid)."""
        if not self.act_quant:
            return x
        cfg = self.config
        mask = self.salient_mask if cfg.spike_activations else None
        return mixed_fake_quant(x, mask, cfg.a_bits, cfg.extra_bits if cfg.spike_activations else 0, ste=ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._calib:
            w, b = self.transformed_weight(ste=True)
            if "in_scale" in self._calib:
                x = x / self._calib["in_scale"]
            return F.linear(self.quantize_input(x, ste=True), w.to(x.dtype), None if b is None else b.to(x.dtype))
        return F.linear(self.quantize_input(x), self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    @torch.no_grad()
    def spike_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The explicit spiking computation (Sec. 3.2): ``Y = sum_t S_t W^T - z rowsum(W)) * scale + b``.

        Non-salient channels fire one ``a_bits`` spike, salient ones ``T`` GIF spikes; both share the
        token's range. Equal to :meth:`forward` up to floating-point rounding (tested in float64).

        Raises:
            RuntimeError: when activation quantization is off (there are no spikes to fire).
        """
        if not self.act_quant:
            raise RuntimeError("spike_forward needs activation quantization (a_bits < 16)")
        cfg = self.config
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        w = self.weight.to(x.dtype)
        xmin, xmax = x2.amin(-1, keepdim=True), x2.amax(-1, keepdim=True)
        mask = self.salient_mask if cfg.spike_activations and cfg.extra_bits > 0 else torch.zeros_like(self.salient_mask)
        out = torch.zeros(x2.shape[0], self.out_features, dtype=x.dtype, device=x.device)
        for part, extra in ((~mask, 0), (mask, cfg.extra_bits)):
            if not bool(part.any()):
                continue
            neuron = GIFQuantizer(cfg.a_bits, extra)
            scale, zero = asym_params(xmin, xmax, neuron.qmax)
            spikes = neuron.spikes_from_codes(neuron.quantize(x2[:, part], scale, zero))  # (T, N, k)
            wp = w[:, part]
            acc = sum(s @ wp.T for s in spikes)  # integer spikes x weights, one matmul per GIF step
            out += (acc - zero * wp.sum(1)) * scale
        if self.bias is not None:
            out += self.bias.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    # ---------------------------------------------------------------- accounting
    def activation_bits(self) -> float:
        """Average information bits per input activation (16 when unquantized)."""
        cfg = self.config
        if not self.act_quant:
            return 16.0
        if not cfg.spike_activations or cfg.extra_bits == 0:
            return float(cfg.a_bits)
        frac = float(self.salient_mask.float().mean())
        return (1 - frac) * cfg.a_bits + frac * level_bits(gif_levels(cfg.a_bits, cfg.extra_bits))

    def activation_steps(self) -> float:
        """Average GIF steps per input channel (1 without spiking)."""
        cfg = self.config
        if not self.act_quant or not cfg.spike_activations:
            return 1.0
        return 1.0 + float(self.salient_mask.float().mean()) * (2**cfg.extra_bits - 1)

    def weight_bits(self) -> float:
        """Average information bits per weight (16 when unquantized)."""
        cfg = self.config
        if not cfg.quantize_weights:
            return 16.0
        return weight_bits(cfg.w_bits, cfg.extra_bits if cfg.spike_weights else 0, self._weight_mask(), self.in_features, cfg.ternary)

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"w_bits={cfg.w_bits}, a_bits={cfg.a_bits}, extra_bits={cfg.extra_bits}, "
            f"salient={int(self.salient_mask.sum())}"
        )

    def quant_state(self) -> dict[str, Any]:
        """Summary used by reports."""
        return {"weight_bits": self.weight_bits(), "activation_bits": self.activation_bits(),
                "salient": int(self.salient_mask.sum())}  # fmt: skip
