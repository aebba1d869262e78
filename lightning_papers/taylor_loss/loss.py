"""Polynomial (Taylor) classification losses and the hand-designed noise-robust baselines.

Every criterion here is an ``nn.Module`` called like :class:`torch.nn.CrossEntropyLoss`:
``criterion(logits, target)`` with ``logits`` of shape ``(N, C)`` (or ``(N, C, d1, ...)``) and integer
``target`` of shape ``(N,)`` (or ``(N, d1, ...)``). All of them compute in float32 (fp16/bf16 logits are
upcast, like CE under autocast) and return a float32 loss.

The Taylor family (Gao, Gouk & Hospedales, ICCV 2021, "Searching for Robustness") writes the loss as a
polynomial of the softmax output. Our parameterisation (the paper's exact one was not available to us,
see the method card) is

.. math::

    L(z, y) = \\sum_{k=1}^{K} c_k\\, u^k + \\sum_{m=1}^{M} d_m\\, s^m,
    \\qquad u = 1 - p_y = \\sum_{j \\ne y} p_j, \\qquad s = \\sum_{j \\ne y} p_j^2,

with ``p = softmax(z)``. Cross-entropy is the limit ``c_k = 1/k, K → ∞`` (``-log p_y = Σ_k u^k / k``)
and MAE (Ghosh et al., 2017) is ``K = 1`` up to a factor 2; a finite ``K`` bounds the loss and the
per-sample gradient, which is what makes the polynomial robust to flipped labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GeneralizedCrossEntropy",
    "MeanAbsoluteError",
    "NCEandRCE",
    "SymmetricCrossEntropy",
    "TaylorLoss",
    "available_presets",
    "ce_taylor_coefficients",
    "load_preset",
    "taylor_loss",
]

_REDUCTIONS = ("mean", "sum", "none")
PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "robust"


# --------------------------------------------------------------------------------------------------
# shared input handling
# --------------------------------------------------------------------------------------------------
def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _flatten_inputs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Validate ``(logits, target)`` like CrossEntropyLoss and flatten to ``(n, C)`` / ``(n,)`` float32/int64.

    Returns the flat logits, flat targets and the per-sample output shape (for ``reduction="none"``).
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"logits and target must be tensors, got {type(logits).__name__} and {type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(
            f"target must hold integer class indices (torch.long), got dtype {target.dtype}; "
            "soft/probability targets are not supported"
        )
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (N, C) or (N, C, d1, ...), got shape {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes (logits.shape[1] >= 2), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}: "
            f"expected target of shape {expected}"
        )
    if target.numel() and (bool((target < 0).any()) or bool((target >= num_classes).any())):
        lo, hi = int(target.min()), int(target.max())
        raise ValueError(
            f"target values must lie in [0, {num_classes - 1}] (C={num_classes}), got range [{lo}, {hi}]"
        )
    if logits.dim() > 2:  # (N, C, d1, ...) -> (N*d1*..., C), as CrossEntropyLoss does for dense prediction
        logits = logits.movedim(1, -1).reshape(-1, num_classes)
        target = target.reshape(-1)
    return logits.float(), target.long(), expected


def _reduce(per_sample: torch.Tensor, reduction: str, shape: tuple) -> torch.Tensor:
    if reduction == "mean":
        # an empty batch gives 0 (not NaN) so a training loop never poisons its weights
        return per_sample.mean() if per_sample.numel() else per_sample.sum()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.reshape(shape)


def _target_and_rest(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p, p_y, u)`` with ``u = Σ_{j≠y} p_j`` summed directly (accurate even when ``p_y`` rounds to 1)."""
    p = torch.softmax(logits, dim=-1)
    onehot = F.one_hot(target, logits.shape[-1]).to(p.dtype)
    p_y = (p * onehot).sum(-1)
    u = (p * (1.0 - onehot)).sum(-1)
    return p, p_y, u


# --------------------------------------------------------------------------------------------------
# Taylor family
# --------------------------------------------------------------------------------------------------
def ce_taylor_coefficients(degree: int) -> list[float]:
    """Coefficients ``c_k = 1/k`` (k = 1..degree) of cross-entropy's Taylor series in ``u = 1 - p_y``.

    Example::

        >>> ce_taylor_coefficients(3)
        [1.0, 0.5, 0.3333333333333333]
    """
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be a positive integer, got {degree!r}")
    return [1.0 / k for k in range(1, degree + 1)]


def _as_coefficients(values: Any, name: str, allow_empty: bool) -> torch.Tensor:
    if values is None:
        values = []
    if isinstance(values, torch.Tensor):
        t = values.detach().double().flatten()
    else:
        try:
            t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from err
    if t.numel() == 0 and not allow_empty:
        raise ValueError(f"{name} must hold at least one coefficient (c_1 ... c_K), got an empty sequence")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def _horner(coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_{k=1}^{K} coeffs[k-1] x^k`` by Horner's rule (no large intermediate powers)."""
    out = torch.zeros_like(x)
    for c in reversed(coeffs.tolist()):
        out = (out + c) * x
    return out


def taylor_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    coefficients: Sequence[float] | torch.Tensor,
    other_coefficients: Sequence[float] | torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Functional Taylor loss ``Σ_k c_k (1 - p_y)^k + Σ_m d_m (Σ_{j≠y} p_j²)^m``.

    Args:
        logits: unnormalised scores, shape ``(N, C)`` or ``(N, C, d1, ...)``; any float dtype.
        target: class indices, shape ``(N,)`` or ``(N, d1, ...)``, values in ``[0, C)``.
        coefficients: ``c_1 ... c_K`` (at least one) of the powers of ``u = 1 - p_y``.
        other_coefficients: optional ``d_1 ... d_M`` of the powers of ``s = Σ_{j≠y} p_j²``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The float32 loss (a scalar, or per-sample values of shape ``target.shape`` for ``"none"``).

    Raises:
        ValueError: on empty/non-finite coefficients, mismatched shapes, out-of-range targets or a bad
            reduction.
        TypeError: on non-tensor inputs, integer logits or floating-point targets.

    Example::

        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> y = torch.tensor([0])
        >>> u = 1 - torch.softmax(logits, -1)[0, 0]
        >>> torch.allclose(taylor_loss(logits, y, [1.0, 0.5]), u + 0.5 * u**2)
        True
    """
    _check_reduction(reduction)
    c = _as_coefficients(coefficients, "coefficients", allow_empty=False)
    d = _as_coefficients(other_coefficients, "other_coefficients", allow_empty=True)
    z, y, shape = _flatten_inputs(logits, target)
    p, _, u = _target_and_rest(z, y)
    loss = _horner(c, u)
    if d.numel():
        onehot = F.one_hot(y, z.shape[-1]).to(p.dtype)
        s = (p.square() * (1.0 - onehot)).sum(-1)
        loss = loss + _horner(d, s)
    return _reduce(loss, reduction, shape)


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``lightning_papers/taylor_loss/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(preset: str | Path) -> dict[str, Any]:
    """Read a preset: a shipped name (see :func:`available_presets`), ``"ce<K>"`` or a path to a YAML file.

    A preset file holds at least ``coefficients`` (list of floats) and optionally ``other_coefficients``,
    plus provenance (``source``, ``recipe``, ``fitness``).

    Raises:
        ValueError: for an unknown name or a file without ``coefficients``.
        FileNotFoundError: for a path that does not exist.

    Example::

        >>> load_preset("ce3")["coefficients"]
        [1.0, 0.5, 0.3333333333333333]
    """
    import yaml

    name = str(preset)
    if name.startswith("ce") and name[2:].isdigit():
        degree = int(name[2:])
        return {
            "name": name,
            "coefficients": ce_taylor_coefficients(degree),
            "other_coefficients": [],
            "source": f"cross-entropy's Taylor series truncated at degree {degree}",
        }
    path = Path(name).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown Taylor-loss preset {name!r}; expected one of {available_presets()}, 'ce<K>' "
                "(cross-entropy's series to degree K) or a path to a .yaml preset"
            )
    if not path.is_file():
        raise FileNotFoundError(f"preset file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "coefficients" not in data:
        raise ValueError(f"preset {path} has no 'coefficients' list")
    data.setdefault("other_coefficients", [])
    data.setdefault("name", path.stem)
    return data


class TaylorLoss(nn.Module):
    """A classification loss that is a polynomial of the softmax output (evolved Taylor loss).

    ``TaylorLoss()`` with no arguments is the shipped noise-robust preset (``presets/robust.yaml``, found
    by our own CMA-ES search; see its ``source``/``recipe`` fields and the method card).

    Args:
        coefficients: ``c_1 ... c_K`` of the powers of ``u = 1 - p_y``. Mutually exclusive with ``preset``.
        preset: a shipped preset name, ``"ce<K>"`` (cross-entropy's series to degree ``K``) or a YAML path.
        other_coefficients: ``d_1 ... d_M`` of the powers of ``s = Σ_{j≠y} p_j²`` (only with ``coefficients``).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Raises:
        ValueError: if both ``coefficients`` and ``preset`` are given, for an unknown preset, or for
            empty/non-finite coefficients.

    Example::

        >>> crit = TaylorLoss(coefficients=[1.0, 0.5])
        >>> crit(torch.randn(4, 10), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([])
    """

    def __init__(
        self,
        coefficients: Sequence[float] | None = None,
        preset: str | None = None,
        other_coefficients: Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        if coefficients is not None and preset is not None:
            raise ValueError("give either `coefficients` or `preset`, not both")
        if coefficients is None:
            if other_coefficients:
                raise ValueError(
                    "`other_coefficients` needs explicit `coefficients` (a preset carries its own)"
                )
            data = load_preset(preset or DEFAULT_PRESET)
            coefficients, other_coefficients = data["coefficients"], data.get("other_coefficients") or []
            self.preset = str(data.get("name", preset or DEFAULT_PRESET))
        else:
            self.preset = None
        c = _as_coefficients(coefficients, "coefficients", allow_empty=False)
        d = _as_coefficients(other_coefficients, "other_coefficients", allow_empty=True)
        # buffers: they follow .to(device) and land in state_dict, so checkpoints record the loss used
        self.register_buffer("coefficients", c.float(), persistent=True)
        self.register_buffer("other_coefficients", d.float(), persistent=True)

    @property
    def degree(self) -> int:
        """Degree ``K`` of the polynomial in ``1 - p_y``."""
        return int(self.coefficients.numel())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return taylor_loss(
            logits, target, self.coefficients.double(), self.other_coefficients.double(), self.reduction
        )

    def extra_repr(self) -> str:
        c = ", ".join(f"{v:.4g}" for v in self.coefficients.tolist())
        text = f"coefficients=[{c}]"
        if self.other_coefficients.numel():
            text += (
                ", other_coefficients=["
                + ", ".join(f"{v:.4g}" for v in self.other_coefficients.tolist())
                + "]"
            )
        if self.preset:
            text += f", preset={self.preset!r}"
        return text + f", reduction={self.reduction!r}"


# --------------------------------------------------------------------------------------------------
# hand-designed robust baselines (same call signature)
# --------------------------------------------------------------------------------------------------
class _Criterion(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z, y, shape = _flatten_inputs(logits, target)
        return _reduce(self.per_sample(z, y), self.reduction, shape)


class MeanAbsoluteError(_Criterion):
    """MAE between the softmax output and the one-hot label (Ghosh et al., AAAI 2017).

    ``L = scale · Σ_j |p_j - 1[j=y]| = 2·scale·(1 - p_y)``; symmetric, hence noise-tolerant, but slow to fit.

    Args:
        scale: multiplier (Active-Passive-Losses' ``MAELoss`` equals ``scale=0.5``).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> float(MeanAbsoluteError()(torch.tensor([[0.0, 0.0]]), torch.tensor([0])))
        1.0
    """

    def __init__(self, scale: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def per_sample(self, logits, target):
        _, _, u = _target_and_rest(logits, target)
        return 2.0 * self.scale * u


class GeneralizedCrossEntropy(_Criterion):
    """Generalised cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu, NeurIPS 2018).

    ``q → 0`` gives CE, ``q = 1`` gives MAE/2.

    Args:
        q: exponent in ``(0, 1]``; 0.7 is the paper's default.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> round(float(GeneralizedCrossEntropy(q=1.0)(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))), 4)
        0.5
    """

    def __init__(self, q: float = 0.7, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q}")
        self.q = float(q)

    def per_sample(self, logits, target):
        # p_y^q = exp(q log p_y): finite for any logits, unlike clamping p_y
        log_py = torch.log_softmax(logits, -1).gather(-1, target[:, None]).squeeze(-1)
        return (1.0 - torch.exp(self.q * log_py)) / self.q


def _rce(logits: torch.Tensor, target: torch.Tensor, log_zero: float) -> torch.Tensor:
    # reverse CE -Σ_j p_j log q_j with the one-hot q clamped to [e^log_zero, 1]: = -log_zero · (1 - p_y)
    _, _, u = _target_and_rest(logits, target)
    return -log_zero * u


class SymmetricCrossEntropy(_Criterion):
    """Symmetric cross-entropy ``α·CE + β·RCE`` (Wang et al., ICCV 2019).

    RCE is reverse cross-entropy with ``log 0`` replaced by ``A = log(1e-4)``, i.e. ``-A (1 - p_y)``.

    Args:
        alpha: weight of CE (0.1 for CIFAR-10 in the paper).
        beta: weight of RCE (1.0 for CIFAR-10).
        log_zero: the value standing in for ``log 0`` (default ``log 1e-4``).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> sce = SymmetricCrossEntropy(alpha=1.0, beta=0.0)
        >>> z, y = torch.randn(3, 5), torch.tensor([0, 1, 2])
        >>> torch.allclose(sce(z, y), F.cross_entropy(z, y))
        True
    """

    def __init__(
        self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = math.log(1e-4), reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        if not log_zero < 0:
            raise ValueError(f"log_zero must be negative (log of a small number), got {log_zero}")
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def per_sample(self, logits, target):
        ce = F.cross_entropy(logits, target, reduction="none")
        return self.alpha * ce + self.beta * _rce(logits, target, self.log_zero)


class NCEandRCE(_Criterion):
    """Active-passive loss NCE + RCE (Ma et al., ICML 2020).

    ``NCE = log p_y / Σ_j log p_j`` (normalised CE, in [0, 1]) and RCE as in :class:`SymmetricCrossEntropy`.

    Args:
        alpha: weight of NCE (1.0 for CIFAR-10 in the paper).
        beta: weight of RCE (1.0 for CIFAR-10).
        log_zero: stand-in for ``log 0`` in RCE.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> round(float(NCEandRCE(1.0, 0.0)(torch.zeros(1, 4), torch.tensor([2]))), 4)
        0.25
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 1.0, log_zero: float = math.log(1e-4), reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        if not log_zero < 0:
            raise ValueError(f"log_zero must be negative (log of a small number), got {log_zero}")
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def per_sample(self, logits, target):
        logp = torch.log_softmax(logits, -1)
        # log p_j >= the float32 floor, so the denominator is finite and strictly negative
        logp = logp.clamp(min=torch.finfo(logp.dtype).min / (4 * logits.shape[-1]))
        nce = logp.gather(-1, target[:, None]).squeeze(-1) / logp.sum(-1)
        return self.alpha * nce + self.beta * _rce(logits, target, self.log_zero)
