"""Validated configuration of a SpikeLLM quantization run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

__all__ = ["PIPELINES", "SALIENCY", "SPIKE_TARGETS", "Pipeline", "Saliency", "SpikeLLMConfig", "SpikeTarget"]

Saliency = Literal["first_order", "hessian", "random"]
Pipeline = Literal["rtn", "gptq", "omniquant"]
SpikeTarget = Literal["auto", "activations", "weights", "both", "none"]
SALIENCY, PIPELINES, SPIKE_TARGETS = get_args(Saliency), get_args(Pipeline), get_args(SpikeTarget)


@dataclass
class SpikeLLMConfig:
    """What to quantize and how (arXiv 2407.04752, Sec. 3-4).

    Args:
        w_bits: base weight bits (per output channel, asymmetric); 16 leaves weights in full precision.
        a_bits: base activation bits (per token, dynamic, asymmetric); 16 = no activation quantization.
        extra_bits: salient channels get ``T = 2**extra_bits`` GIF steps of ``bits`` each.
        salient_fraction: fraction of input channels of every quantized linear that are salient; strictly
            between 0 and 1 when spiking (``extra_bits > 0``).
        saliency: ``"first_order"`` (activation saliency, ``mean((X W^T W) * X)``), ``"hessian"``
            (``W^2 / [chol(H^-1)]_jj^2``, OBS style) or ``"random"`` (the control).
        pipeline: ``"rtn"`` (round to nearest), ``"gptq"`` (error feedback) or ``"omniquant"`` (LET + LWC).
        spike: where salient channels get extra GIF steps: ``"activations"``, ``"weights"``, ``"both"``,
            ``"none"`` or ``"auto"`` (activations when ``a_bits < 16``, else weights).
        ternary: non-salient weight columns become ternary ``{-a, 0, a}`` (the fully additive variant).
        group_size: weight quantization group along input channels; ``-1`` = one group per output row.
        nsamples: calibration windows used.
        seqlen: tokens per calibration window.
        ignore: module-name suffixes never quantized (``lm_head`` stays full precision).
        targets: linear-name suffixes to quantize inside decoder layers; empty = every ``nn.Linear``.
        gptq_damp: GPTQ dampening, a fraction of the mean Hessian diagonal.
        gptq_block: GPTQ lazy-update block width.
        kv_bits: bits of the K/V projection outputs (the KV cache), per token and head; 16 = not quantized.
        spike_kv: salient K/V channels (by output energy) get ``2**extra_bits`` GIF steps (paper's optional
            K/V spiking).
        kv_targets: leaf names of the K and V projections.
        let_alpha: OmniQuant LET migration strength ``s = max|X|^a / max|W|^(1-a)``.
        let: learn equivalent transforms in the OmniQuant pipeline.
        lwc: learn weight clipping in the OmniQuant pipeline.
        epochs: OmniQuant epochs per decoder layer.
        let_lr: learning rate of the LET scales.
        lwc_lr: learning rate of the LWC logits.
        seed: seed of random saliency and calibration sampling.

    Raises:
        ValueError: when a field is outside its range (the message names it).

    Example::

        >>> SpikeLLMConfig(w_bits=4, a_bits=4, extra_bits=1, salient_fraction=0.1).spike_activations
        True
    """

    w_bits: int = 4
    a_bits: int = 4
    extra_bits: int = 1
    salient_fraction: float = 0.1
    saliency: Saliency = "first_order"
    pipeline: Pipeline = "rtn"
    spike: SpikeTarget = "auto"
    ternary: bool = False
    group_size: int = -1
    nsamples: int = 128
    seqlen: int = 2048
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    targets: list[str] = field(default_factory=list)
    gptq_damp: float = 0.01
    gptq_block: int = 128
    let_alpha: float = 0.75
    let: bool = True
    lwc: bool = True
    epochs: int = 20
    let_lr: float = 1e-3
    lwc_lr: float = 1e-2
    seed: int = 0
    kv_bits: int = 16
    spike_kv: bool = False
    kv_targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj"])

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= 16):
                raise ValueError(f"{name} must be an integer in [1, 16] (16 = full precision), got {value!r}")
        if isinstance(self.kv_bits, bool) or not isinstance(self.kv_bits, int) or not (2 <= self.kv_bits <= 16):
            raise ValueError(f"kv_bits must be an integer in [2, 16] (16 = K/V cache not quantized), got {self.kv_bits!r}")
        if isinstance(self.extra_bits, bool) or not isinstance(self.extra_bits, int) or not 0 <= self.extra_bits <= 4:
            raise ValueError(f"extra_bits must be an integer in [0, 4], got {self.extra_bits!r}")
        if not isinstance(self.salient_fraction, (int, float)) or not 0.0 <= float(self.salient_fraction) <= 1.0:
            raise ValueError(f"salient_fraction must be in [0, 1], got {self.salient_fraction!r}")
        self.salient_fraction = float(self.salient_fraction)
        spiking = self.extra_bits > 0 and self.spike != "none"
        if spiking and self.salient_fraction in (0.0, 1.0):
            raise ValueError(
                f"salient_fraction={self.salient_fraction} with extra_bits={self.extra_bits}: spiking needs a fraction "
                "strictly between 0 and 1 (0 spikes no channel: set extra_bits=0; 1 spikes every channel: that is "
                "plain quantization on the finer grid)"
            )
        if self.spike_kv and self.kv_bits >= 16:
            raise ValueError("spike_kv=True needs K/V cache quantization: set kv_bits < 16")
        if self.saliency not in SALIENCY:
            raise ValueError(f"saliency must be one of {SALIENCY}, got {self.saliency!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        if self.spike not in SPIKE_TARGETS:
            raise ValueError(f"spike must be one of {SPIKE_TARGETS}, got {self.spike!r}")
        if self.group_size == 0 or self.group_size < -1:
            raise ValueError(f"group_size must be -1 (per row) or a positive integer, got {self.group_size}")
        for name in ("nsamples", "seqlen", "gptq_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not 0.0 <= self.let_alpha <= 1.0:
            raise ValueError(f"let_alpha must be in [0, 1], got {self.let_alpha}")
        if self.gptq_damp < 0:
            raise ValueError(f"gptq_damp must be >= 0, got {self.gptq_damp}")
        if self.ternary and self.w_bits >= 16:
            raise ValueError("ternary=True needs weight quantization (w_bits < 16)")
        self.ignore, self.targets, self.kv_targets = list(self.ignore), list(self.targets), list(self.kv_targets)

    @property
    def quantize_weights(self) -> bool:
        """Whether weights are quantized (``w_bits < 16``)."""
        return self.w_bits < 16

    @property
    def quantize_activations(self) -> bool:
        """Whether decoder-linear inputs are quantized (``a_bits < 16``)."""
        return self.a_bits < 16

    @property
    def spike_activations(self) -> bool:
        """Whether salient activation channels get ``2**extra_bits`` GIF steps."""
        mode = self.spike if self.spike != "auto" else ("activations" if self.quantize_activations else "weights")
        return self.quantize_activations and mode in ("activations", "both")

    @property
    def spike_weights(self) -> bool:
        """Whether salient weight columns get ``2**extra_bits`` GIF steps."""
        mode = self.spike if self.spike != "auto" else ("activations" if self.quantize_activations else "weights")
        return self.quantize_weights and mode in ("weights", "both")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (for saving with the model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpikeLLMConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SpikeLLMConfig keys: {sorted(unknown)}")
        return cls(**data)
