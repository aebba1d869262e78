"""The evolved Taylor loss: a polynomial of the softmax output, and its presets.

Gao, Gouk & Hospedales (ICCV 2021, "Searching for Robustness") write a classification loss as a polynomial
of the network's output and search its coefficients. Our parameterisation (the paper's exact one was not
available to us, see the method card) is

.. math::

    L(z, y) = \\sum_{k=1}^{K} c_k\\, u^k + \\sum_{m=1}^{M} d_m\\, s^m,
    \\qquad u = 1 - p_y, \\qquad s = \\sum_{j \\ne y} p_j^2,

with ``p = softmax(z)``. Cross-entropy is the limit ``c_k = 1/k, K → ∞`` (``−log p_y = Σ_k u^k / k``) and
MAE (Ghosh et al., 2017) is ``K = 1`` up to a factor 2; a finite ``K`` bounds the loss and the per-sample
gradient, which is what makes the polynomial robust to flipped labels.

The search works in a better-conditioned basis (:func:`coefficients_from_gradient_weights`): the slope
``P'(u)`` written in the Bernstein basis, whose coefficients ``β_i ≥ 0`` are the slope near ``u = i/(K−1)``,
so every candidate is a loss that increases with ``1 − p_y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from pathlib import Path
from typing import Any

import torch

from lightning_papers.taylor_loss.baselines import one_minus_p
from lightning_papers.taylor_loss.criterion import LabelLoss, Reduction, _is_compiling
from lightning_papers.taylor_loss.fused import (
    MEAN,
    NONE,
    SUM,
    TaylorDenseLoss,
    TaylorIndexLoss,
    value_and_slope_matrix,
)

__all__ = [
    "TaylorLoss",
    "available_presets",
    "ce_taylor_coefficients",
    "coefficients_from_gradient_weights",
    "gradient_weights_from_coefficients",
    "load_preset",
    "taylor_loss",
]

_MODES = {"none": NONE, "sum": SUM, "mean": MEAN}
PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "robust"


def ce_taylor_coefficients(degree: int) -> list[float]:
    """Coefficients ``c_k = 1/k`` (k = 1..degree) of cross-entropy's Taylor series in ``u = 1 - p_y``.

    Example::

        >>> ce_taylor_coefficients(3)
        [1.0, 0.5, 0.3333333333333333]
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ValueError(f"degree must be a positive integer, got {degree!r}")
    return [1.0 / k for k in range(1, degree + 1)]


def coefficients_from_gradient_weights(weights: Sequence[float]) -> list[float]:
    """Monomial coefficients ``c_1..c_K`` of ``P(u) = ∫_0^u Σ_i β_i b_{i,K-1}(t) dt`` (``b``: Bernstein basis).

    ``β_i`` is the slope ``P'`` at the control point ``u = i/(K−1)``; non-negative ``β`` give a loss that never
    decreases as the labelled class gets less likely. ``P(1) = mean(β)``.

    Example::

        >>> coefficients_from_gradient_weights([1.0, 1.0])  # P'(u) = 1: MAE/2
        [1.0, 0.0]
        >>> [round(c, 6) for c in coefficients_from_gradient_weights(gradient_weights_from_coefficients([1, .5, .25]))]
        [1.0, 0.5, 0.25]
    """
    beta = [float(b) for b in weights]
    if not beta:
        raise ValueError("weights must hold at least one value")
    n = len(beta) - 1
    slope = [0.0] * (n + 1)  # monomial coefficients of P'(u)
    for i, b in enumerate(beta):
        for j in range(i, n + 1):
            slope[j] += b * comb(n, i) * comb(n - i, j - i) * (-1) ** (j - i)
    return [a / (j + 1) for j, a in enumerate(slope)]


def gradient_weights_from_coefficients(coefficients: Sequence[float]) -> list[float]:
    """Inverse of :func:`coefficients_from_gradient_weights`: the Bernstein coefficients of ``P'(u)``.

    Example::

        >>> [round(b, 4) for b in gradient_weights_from_coefficients(ce_taylor_coefficients(3))]
        [1.0, 1.5, 3.0]
    """
    c = [float(v) for v in coefficients]
    n = len(c) - 1
    slope = [(j + 1) * c[j] for j in range(n + 1)]
    return [sum(comb(i, j) / comb(n, j) * slope[j] for j in range(i + 1)) for i in range(n + 1)]


def _as_coefficients(values: Any, name: str, allow_empty: bool) -> torch.Tensor:
    if values is None:
        values = []
    if isinstance(values, torch.Tensor):
        t = values.detach().to("cpu", torch.float64).flatten()
    else:
        try:
            t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from err
    if t.numel() == 0 and not allow_empty:
        raise ValueError(f"{name} must hold at least one coefficient (c_1 ... c_K), got an empty sequence")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if not allow_empty and not bool((t != 0).any()):
        raise ValueError(f"{name} are all zero ({t.tolist()}): the loss would be constant and train nothing")
    return t


def _polynomial(coefficients: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``Σ_{k=1}^{K} c_k x^k`` by Horner's rule; ``c`` stays a device tensor (no ``.tolist()``: no host sync)."""
    c = coefficients.to(x.dtype)
    acc = c[-1] * x
    for k in range(c.shape[0] - 2, -1, -1):  # K is static metadata, not data
        acc = (acc + c[k]) * x
    return acc


class TaylorLoss(LabelLoss):
    """A classification loss that is a polynomial of the softmax output (evolved Taylor loss).

    ``TaylorLoss()`` is the shipped preset (``presets/robust.yaml``, found by our own CMA-ES search over
    randomised tasks; see its ``source``/``recipe`` fields and the method card). It is called exactly like
    ``nn.CrossEntropyLoss`` and takes the same options.

    Args:
        coefficients: ``c_1 ... c_K`` of the powers of ``u = 1 - p_y``. Mutually exclusive with ``preset``.
        preset: a shipped preset name, ``"ce<K>"`` (cross-entropy's series to degree ``K``) or a YAML path.
        other_coefficients: ``d_1 ... d_M`` of the powers of ``s = Σ_{j≠y} p_j²`` (only with ``coefficients``).
        weight: per-class weights ``(C,)``: weighted mean ``Σ w_y ℓ / Σ w_y``, as ``nn.CrossEntropyLoss``.
        ignore_index: class-index targets with this value contribute nothing and leave the mean.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        label_smoothing: ``ε``: the target becomes ``(1 − ε)·onehot + ε/C``.
        validate: check target values; ``None`` = only on CPU tensors outside ``torch.compile`` (never a sync).

    Targets are class indices (int64, ``(N,)`` / ``(N, d1, ...)``) or class probabilities of the input's shape
    (the loss is then ``Σ_j q_j ℓ(p, j)``, so one-hot probabilities equal indices).

    Raises:
        ValueError: if both ``coefficients`` and ``preset`` are given, for an unknown preset, or for
            empty, non-finite or all-zero coefficients.
        FileNotFoundError: for a preset path that does not exist.

    Example::

        >>> crit = TaylorLoss(coefficients=[1.0, 0.5], ignore_index=-1)
        >>> crit(torch.randn(4, 10), torch.tensor([0, 1, -1, 3])).shape
        torch.Size([])
    """

    def __init__(
        self,
        coefficients: Sequence[float] | None = None,
        preset: str | None = None,
        other_coefficients: Sequence[float] | None = None,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        validate: bool | None = None,
    ) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing, validate)
        if coefficients is not None and preset is not None:
            raise ValueError("give either `coefficients` or `preset`, not both")
        if coefficients is None:
            if other_coefficients:
                raise ValueError("`other_coefficients` needs explicit `coefficients` (a preset carries its own)")
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
        self._fused_cache: tuple | None = None

    @property
    def degree(self) -> int:
        """Degree ``K`` of the polynomial in ``1 - p_y``."""
        return int(self.coefficients.numel())

    def label_losses(self, logp_label: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        loss = _polynomial(self.coefficients, one_minus_p(logp_label))
        if self.other_coefficients.shape[0]:
            p_label = logp_label.exp()
            s = ((logp.exp().square().sum(-1, keepdim=True)) - p_label.square()).clamp_min(0.0)
            loss = loss + _polynomial(self.other_coefficients, s)
        return loss

    def _value_and_slope(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`~lightning_papers.taylor_loss.fused.value_and_slope_matrix` of the coefficients, cached.

        The cache holds the coefficient tensor itself and its version counter, so ``.to()``, ``load_state_dict``
        or an in-place edit all invalidate it.
        """
        c = self.coefficients
        if _is_compiling():
            return value_and_slope_matrix(c.to(dtype))
        cached = self._fused_cache
        if cached is None or cached[0] is not c or cached[1] != (c._version, dtype):
            cached = self._fused_cache = (c, (c._version, dtype), value_and_slope_matrix(c.detach().to(dtype)))
        return cached[2]

    def fused_loss(self, z: torch.Tensor, t: torch.Tensor, soft: bool, plain: bool) -> torch.Tensor | None:
        # closed-form gradient (fused.py): the values of label_losses + autograd with a quarter of the kernels
        if self.other_coefficients.shape[0] or self.coefficients.requires_grad:
            return None
        mode = _MODES[self.reduction]
        m, b = self._value_and_slope(z.dtype)
        w, eps, num_classes = self.weight, self.label_smoothing, z.shape[1]
        if plain and w is None and eps == 0:  # checked on the CPU: nothing ignored, nothing weighted
            return TaylorIndexLoss.apply(z, t, None, None, m, b, mode)
        w = None if w is None else w.to(z.dtype)
        if soft:
            q = t.to(z.dtype)
            if eps > 0:
                q = q * (1.0 - eps) + eps / num_classes
            if w is not None:
                q = q * w
            denominator = torch.full((), float(z.shape[0]), device=z.device, dtype=z.dtype)
            return TaylorDenseLoss.apply(z, q, m, b, mode, denominator)
        valid = t != self.ignore_index
        safe = t * valid  # ignored targets read class 0 with weight 0
        row_weight = valid.to(z.dtype) if w is None else w[safe] * valid
        if eps == 0:
            return TaylorIndexLoss.apply(z, safe, valid, row_weight, m, b, mode)
        # label smoothing: Q = (1 − ε)·w_y·onehot + (ε/C)·w (valid rows), mean still over Σ w_y as in PyTorch
        base = valid.to(z.dtype).unsqueeze(-1) * (eps / num_classes)
        q = (base if w is None else base * w).expand(-1, num_classes).clone()
        q.scatter_add_(-1, safe.unsqueeze(-1), ((1.0 - eps) * row_weight).unsqueeze(-1))
        return TaylorDenseLoss.apply(z, q, m, b, mode, row_weight.sum())

    def extra_repr(self) -> str:
        c = ", ".join(f"{v:.4g}" for v in self.coefficients.tolist())
        text = f"coefficients=[{c}]"
        if self.other_coefficients.numel():
            text += ", other_coefficients=[" + ", ".join(f"{v:.4g}" for v in self.other_coefficients.tolist()) + "]"
        if self.preset:
            text += f", preset={self.preset!r}"
        return text + f", reduction={self.reduction!r}"


def taylor_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    coefficients: Sequence[float] | torch.Tensor,
    other_coefficients: Sequence[float] | torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Functional Taylor loss ``Σ_k c_k (1 - p_y)^k + Σ_m d_m (Σ_{j≠y} p_j²)^m`` (options as ``F.cross_entropy``).

    Args:
        logits: unnormalised scores, shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``; any float dtype.
        target: class indices (``(N,)`` / ``(N, d1, ...)``) or class probabilities (the logits' shape).
        coefficients: ``c_1 ... c_K`` (at least one) of the powers of ``u = 1 - p_y``.
        other_coefficients: optional ``d_1 ... d_M`` of the powers of ``s = Σ_{j≠y} p_j²``.
        weight, ignore_index, reduction, label_smoothing: as :func:`torch.nn.functional.cross_entropy`.

    Returns:
        The float32 loss (a scalar, or per-sample values of shape ``target.shape`` for ``"none"``).

    Example::

        >>> logits, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
        >>> u = 1 - torch.softmax(logits, -1)[0, 0]
        >>> torch.allclose(taylor_loss(logits, y, [1.0, 0.5]), u + 0.5 * u**2)
        True
    """
    crit = TaylorLoss(coefficients, other_coefficients=other_coefficients, weight=weight,
                      ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    return crit.to(logits.device)(logits, target)


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``lightning_papers/taylor_loss/presets``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(preset: str | Path) -> dict[str, Any]:
    """Read a preset: a shipped name (see :func:`available_presets`), ``"ce<K>"`` or a path to a YAML file.

    A preset file holds at least ``coefficients`` (list of floats) and optionally ``other_coefficients``,
    plus provenance (``source``, ``recipe``, ``fitness``).

    Raises:
        ValueError: for an unknown name or a file without a non-empty ``coefficients`` list.
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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"preset {path} is not valid YAML ({err}); expected a mapping with a 'coefficients' list") from err
    if not isinstance(data, dict) or not data.get("coefficients"):
        raise ValueError(f"preset {path} has no non-empty 'coefficients' list")
    data.setdefault("other_coefficients", [])
    data.setdefault("name", path.stem)
    return data
