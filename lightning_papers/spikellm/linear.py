"""``SpikeLinear``: an ``nn.Linear`` replacement with GIF-spiking activations and quantized weights."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_papers.spikellm.config import SpikeLLMConfig
from lightning_papers.spikellm.gif import GIFQuantizer, asym_params, gif_levels, level_bits, mixed_fake_quant
from lightning_papers.spikellm.weight_quant import fake_quant_weight, weight_bits

__all__ = ["SpikeLinear", "is_conv1d"]


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (GPT-2's transposed linear), without importing it."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None and module.weight.dim() == 2


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
        self.qat = False
        self._wparams: dict[str, torch.Tensor] | None = None
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
        layer.qat = False
        layer._wparams = None
        layer._calib = {}
        return layer

    @classmethod
    def from_module(cls, module: nn.Module, config: SpikeLLMConfig) -> SpikeLinear:
        """Wrap an ``nn.Linear`` or a GPT-2 style ``Conv1D`` (``y = x W + b`` with ``W`` of shape (in, out)).

        A ``Conv1D`` becomes an equivalent linear layer (its weight transposed once, a new parameter).
        """
        if isinstance(module, nn.Linear):
            return cls.from_linear(module, config)
        if is_conv1d(module):
            lin = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=module.bias is not None,
                            device="meta")  # fmt: skip
            lin.weight = nn.Parameter(module.weight.detach().t().contiguous(), requires_grad=False)
            if module.bias is not None:
                lin.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
            return cls.from_linear(lin, config)
        raise TypeError(f"expected nn.Linear or a Conv1D, got {type(module).__name__}")

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

    def _fake_quant_weight(self, w: torch.Tensor, ste: bool = False, keep_params: bool = False) -> torch.Tensor:
        cfg = self.config
        up = torch.sigmoid(self._calib["lwc_up"]) if "lwc_up" in self._calib else None
        low = torch.sigmoid(self._calib["lwc_low"]) if "lwc_low" in self._calib else None
        out, params = fake_quant_weight(
            w, cfg.w_bits, cfg.extra_bits if cfg.spike_weights else 0, self._weight_mask(), cfg.group_size,
            clip_up=up, clip_low=low, ternary=cfg.ternary, ste=ste, return_params=True,
        )  # fmt: skip
        if keep_params:
            self._wparams = params
        return out

    def _set_mask_persistence(self, persistent: bool) -> None:
        for name in ("salient_mask", "out_salient_mask"):
            if name in self._buffers:
                self.register_buffer(name, self._buffers[name], persistent=persistent)

    @torch.no_grad()
    def quantize_weight_(self) -> None:
        """Round-to-nearest weight quantization in place (no-op when ``w_bits == 16`` or already done).

        After quantization-aware training this bakes the latent weights into the grid the forward used.
        """
        if self.config.quantize_weights and not self.weight_quantized:
            # written into the existing storage: a new tensor per layer would leave the old one alive wherever it
            # is still referenced (a memory-mapped checkpoint keeps every page it backs), doubling peak memory
            self.weight.data.copy_(self._fake_quant_weight(self.weight.data.float(), keep_params=True))
        self.weight_quantized = True
        if self.qat:
            self.qat = False
            self._set_mask_persistence(True)
            self.weight.requires_grad_(False)
            if self.bias is not None:
                self.bias.requires_grad_(False)

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
            w = self._fake_quant_weight(w, keep_params=True)
        self.weight.data.copy_(w)  # in place, see quantize_weight_
        if b is not None:
            self.bias.data.copy_(b)
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

    def weight_params(self) -> dict[str, torch.Tensor] | None:
        """The grids the stored weight was rounded on (``scale_lo``, ``zero_lo``, ...), or None."""
        return self._wparams

    def set_weight_params(self, params: dict[str, torch.Tensor]) -> None:
        """Record the grids of an externally quantized weight (GPTQ), so it can be packed exactly."""
        self._wparams = {k: v.detach() for k, v in params.items()}
        self.weight_quantized = True

    def enable_output_quant(self, bits: int, extra_bits: int, salient: torch.Tensor, group: int) -> None:
        """Fake-quantize this layer's output per token and per ``group`` channels (a head: the KV cache), with
        ``salient`` output channels on the ``2**extra_bits``-step GIF grid."""
        if self.out_features % group:
            raise ValueError(f"group={group} does not divide out_features={self.out_features}")
        self.out_bits, self.out_extra_bits, self.out_group = bits, extra_bits, group
        self.register_buffer("out_salient_mask", salient.to(self.weight.device, torch.bool).clone())

    def _quantize_output(self, y: torch.Tensor, ste: bool = False) -> torch.Tensor:
        bits = getattr(self, "out_bits", 16)
        if bits >= 16:
            return y
        g = self.out_group
        mask = self.out_salient_mask.view(-1, g)  # (groups, g): per-head masks
        yg = y.reshape(*y.shape[:-1], -1, g)
        return mixed_fake_quant(yg, mask if self.out_extra_bits else None, bits, self.out_extra_bits, ste=ste).reshape_as(y)

    def enable_qat(self) -> None:
        """Quantization-aware training: the weight becomes a trainable latent tensor that is fake-quantized
        (round-to-nearest on its current range) in every forward, with straight-through gradients, and the
        input is fake-quantized with straight-through rounding as well."""
        self.qat = True
        self.weight_quantized = False
        self._wparams = None
        # masks live in the callback's checkpoint state: keep the module's state_dict that of an nn.Linear, so a
        # Lightning checkpoint restores into the unquantized model before the callback re-inserts the layers
        self._set_mask_persistence(False)
        self.weight.requires_grad_(True)
        if self.bias is not None:
            self.bias.requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qat:
            ste = torch.is_grad_enabled()
            w = self._fake_quant_weight(self.weight, ste=ste) if self.config.quantize_weights else self.weight
            b = None if self.bias is None else self.bias.to(x.dtype)
            return self._quantize_output(F.linear(self.quantize_input(x, ste=ste), w.to(x.dtype), b), ste)
        if self._calib:
            w, b = self.transformed_weight(ste=True)
            if "in_scale" in self._calib:
                x = x / self._calib["in_scale"]
            y = F.linear(self.quantize_input(x, ste=True), w.to(x.dtype), None if b is None else b.to(x.dtype))
            return self._quantize_output(y, ste=True)
        y = F.linear(self.quantize_input(x), self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        return self._quantize_output(y)

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

    def output_bits(self) -> float:
        """Average information bits per output value when the output (K/V cache) is quantized, else 16."""
        bits = getattr(self, "out_bits", 16)
        if bits >= 16:
            return 16.0
        if not self.out_extra_bits:
            return float(bits)
        frac = float(self.out_salient_mask.float().mean())
        return (1 - frac) * bits + frac * level_bits(gif_levels(bits, self.out_extra_bits))

    def quant_state(self) -> dict[str, Any]:
        """Summary used by reports."""
        return {"weight_bits": self.weight_bits(), "activation_bits": self.activation_bits(),
                "salient": int(self.salient_mask.sum()), "output_bits": self.output_bits()}  # fmt: skip
