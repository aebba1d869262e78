"""A learned *adaptive* mirror map: a time-varying quadratic potential that contains Adam.

Mirror descent may use a potential that changes with the step ``t``. With the separable quadratic
``ψ_t(θ) = Σ_i ½ a_{t,i} θ_i²`` and the (bias-corrected) first moment ``m̂_t`` as the linear term (dual
averaging with momentum), the mirror step is ``θ_{t+1} = θ_t − η m̂_t / a_t``. AdaGrad, RMSProp and Adam are
exactly this family (Duchi, Hazan & Singer 2011): Adam is ``a_t = √v̂_t + ε``. MetaMD's adaptive family
multiplies Adam's metric by a learned, bounded, positive factor::

    a_{t,i} = (√v̂_{t,i} + ε) · exp(−c_τ(t)) · (cosh k_τ(t) − s_{t,i} sinh k_τ(t)),   s_{t,i} = sign(g_{t,i} m_{t−1,i})
    (c_τ, k_τ) = (C·tanh(o₀), K·tanh(o₁)),   o = W₂ tanh(W₁ x_τ(t) + b₁) + b₂,   W₂ = b₂ = 0 at init

so the step of coordinate ``i`` of tensor ``τ`` is Adam's times ``exp(c_τ(t) + k_τ(t)·s_{t,i})`` (for
``s = ±1``; ``s = 0`` gives ``e^{c}/cosh k``), a factor in ``[e^{−C−K}, e^{C+K}]``. The tiny network ``g_φ`` (``W₁, b₁, W₂, b₂``) sees scale-free per-tensor context
``x_τ(t)`` (log t, 1/√t, the mean |m̂|/√v̂ and the mean gradient agreement on a fixed sample of the tensor's
coordinates, the tensor's layer role and log size) and runs once per tensor per step; per coordinate only
the agreement sign enters, so a step is a handful of fused elementwise ops. At init the factor is exactly 1:
the optimizer *is* Adam, and meta-training moves it from there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["NUM_FEATURES", "AdaptiveMirrorMap", "context_features", "tensor_roles"]

_FORMAT = "lightning_papers.metamd.AdaptiveMirrorMap"
#: Per-tensor context features: log t, 1/√t, mean |m̂|/√v̂, mean agreement, 4 role indicators, log size.
NUM_FEATURES = 9
#: Coordinates sampled per tensor for the context statistics (a fixed strided sample: cost independent of size).
SAMPLE = 1024
_LOG_T_REF = math.log(1000.0)


def tensor_roles(params: Sequence[Tensor]) -> list[int]:
    """Layer role of each tensor: 0 first weight matrix, 1 middle ones, 2 last one, 3 vectors/scalars.

    Example::

        >>> tensor_roles([torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, 3)])
        [0, 3, 2]
    """
    mats = [i for i, p in enumerate(params) if p.dim() >= 2]
    out = [3] * len(params)
    for i in mats:
        out[i] = 1
    if mats:
        out[mats[-1]] = 2
        out[mats[0]] = 0
    return out


def _sample(x: Tensor) -> Tensor:
    flat = x.reshape(-1)
    stride = max(1, flat.numel() // SAMPLE)
    return flat[::stride]


@torch.no_grad()
def context_features(
    steps: Sequence[int],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    roles: Sequence[int],
    numels: Sequence[int],
    betas: tuple[float, float],
    eps: float,
) -> Tensor:
    """The ``(num_tensors, NUM_FEATURES)`` context of the steps ``steps`` (≥ 1, one per tensor) taken with ``grads``.

    ``exp_avgs``/``exp_avg_sqs`` are the moments *before* this step (zeros at step 1). The statistics
    use a fixed strided sample of at most :data:`SAMPLE` coordinates per tensor, so their cost does not grow
    with the model. Every feature is invariant to rescaling the loss.
    """
    n = len(grads)
    out = torch.zeros(n, NUM_FEATURES, dtype=torch.float32)
    b1, b2 = betas
    stats = []
    for i, (t, g, m, v) in enumerate(zip(steps, grads, exp_avgs, exp_avg_sqs)):
        out[i, 0] = min(math.log(t) / _LOG_T_REF, 2.0)
        out[i, 1] = 1.0 / math.sqrt(t)
        if t > 1:
            bc1, bc2 = 1 - b1 ** (t - 1), 1 - b2 ** (t - 1)
            gs, ms, vs = _sample(g).float(), _sample(m).float(), _sample(v).float()
            den = (vs / bc2).sqrt_().add_(eps)
            stats.append((i, (ms.abs() / bc1).div_(den).clamp_(max=2.0).mean(), torch.sign(gs * ms).mean()))
    if stats:
        idx = torch.tensor([s[0] for s in stats])
        out[idx, 2] = torch.stack([s[1] for s in stats])
        out[idx, 3] = torch.stack([s[2] for s in stats])
    out[torch.arange(n), 4 + torch.tensor(list(roles), dtype=torch.long)] = 1.0
    out[:, 8] = torch.tensor([math.log(max(k, 1)) / math.log(1e6) for k in numels])
    return out


class AdaptiveMirrorMap(nn.Module):
    """The learned part ``g_φ`` of MetaMD's adaptive mirror map (Adam's metric × a bounded learned factor).

    Args:
        hidden: width of the per-tensor network.
        step_bound: ``C``, bound of the per-tensor log step factor ``c_τ(t)``.
        agreement_bound: ``K``, bound of the per-coordinate agreement gain ``k_τ(t)`` (0 disables it).

    Raises:
        ValueError: a non-positive width or a negative / non-finite bound.

    Example::

        >>> m = AdaptiveMirrorMap()
        >>> m.is_neutral()  # a fresh map is exactly Adam
        True
        >>> m.coefficients(torch.zeros(3, NUM_FEATURES)).abs().max().item()
        0.0
    """

    family = "adaptive"

    def __init__(self, hidden: int = 16, step_bound: float = 1.0, agreement_bound: float = 0.5) -> None:
        super().__init__()
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        for name, val in {"step_bound": step_bound, "agreement_bound": agreement_bound}.items():
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {val!r}")
        self.hidden = hidden
        self.step_bound = float(step_bound)
        self.agreement_bound = float(agreement_bound)
        g = torch.Generator().manual_seed(0)  # a fixed first layer: same fresh map everywhere, no global RNG
        self.w1 = nn.Parameter(torch.randn(hidden, NUM_FEATURES, generator=g) / math.sqrt(NUM_FEATURES))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.zeros(2, hidden))  # zero last layer: factor exactly 1 (Adam) at init
        self.b2 = nn.Parameter(torch.zeros(2))
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ the map
    def is_neutral(self) -> bool:
        """True when the learned factor is exactly 1 everywhere (the optimizer is then Adam)."""
        return bool((self.w2 == 0).all() and (self.b2 == 0).all())

    def coefficients(self, features: Tensor) -> Tensor:
        """``(num_tensors, 2)``: the log step factor ``c_τ`` and agreement gain ``k_τ`` (differentiable)."""
        h = torch.tanh(features.to(self.w1) @ self.w1.T + self.b1)
        o = torch.tanh(h @ self.w2.T + self.b2)
        return o * torch.tensor([self.step_bound, self.agreement_bound], dtype=o.dtype, device=o.device)

    def forward(self, features: Tensor) -> Tensor:  # noqa: D102 (nn.Module protocol)
        return self.coefficients(features)

    def validate(self) -> None:
        """Check that every coefficient is finite.

        Raises:
            ValueError: a non-finite parameter.
        """
        for name, p in self.named_parameters():
            if not torch.isfinite(p).all():
                raise ValueError(f"adaptive mirror map parameter {name!r} has non-finite values")

    # ------------------------------------------------------------------ I/O
    def config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this map before loading its state."""
        return {"hidden": self.hidden, "step_bound": self.step_bound, "agreement_bound": self.agreement_bound}

    def save(self, path: str | os.PathLike, **meta: Any) -> Path:
        """Save config, parameters and ``meta`` to ``path`` (written atomically, read with ``weights_only``)."""
        from lightning_papers.metamd.mirror_map import write_map_file

        return write_map_file(path, _FORMAT, self.family, self, {**self.meta, **meta})

    @classmethod
    def from_blob(cls, blob: Any, where: str) -> AdaptiveMirrorMap:
        """Rebuild a map from a loaded file dict (``where`` names its origin in errors)."""
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(
                f"{where} holds a mirror map of format {found!r}, expected the adaptive family ({_FORMAT!r})"
            )
        try:
            m = cls(**blob["config"])
            m.load_state_dict(blob["state"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{where} is not a valid adaptive mirror map: {err}") from None
        m.meta = dict(blob.get("meta", {}))
        m.validate()
        return m

    @classmethod
    def load(cls, path: str | os.PathLike) -> AdaptiveMirrorMap:
        """Load a map written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is corrupt, or holds another map family.
        """
        from lightning_papers.metamd.mirror_map import read_map_file

        return cls.from_blob(read_map_file(path), repr(str(path)))

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, step_bound={self.step_bound}, agreement_bound={self.agreement_bound}"
