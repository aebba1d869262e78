"""Hand-designed noise-robust losses and PolyLoss, with the call and options of ``nn.CrossEntropyLoss``.

Each is a :class:`~lightning_papers.taylor_loss.criterion.LabelLoss`: it defines the loss of a sample whose
label is class ``j`` from the log-probabilities, and inherits ``weight``, ``ignore_index``, ``reduction``,
``label_smoothing``, probability targets, float32 computation and the sync-free ``forward``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from lightning_papers.taylor_loss.criterion import LabelLoss, Reduction

__all__ = ["GeneralizedCrossEntropy", "MeanAbsoluteError", "NCEandRCE", "PolyLoss", "SymmetricCrossEntropy"]

_Weight = torch.Tensor | Sequence[float] | None


def one_minus_p(logp_label: torch.Tensor) -> torch.Tensor:
    """``u = 1 − p`` from ``log p`` as ``−expm1(log p)``: accurate for small ``u``, exactly 1 for ``p = 0``."""
    return -torch.expm1(logp_label)


def _check_log_zero(log_zero: float) -> float:
    if not log_zero < 0:
        raise ValueError(f"log_zero must be negative (the log of a small number), got {log_zero}")
    return float(log_zero)


def _check_pair(alpha: float, beta: float) -> tuple[float, float]:
    if alpha < 0 or beta < 0 or alpha + beta == 0:
        raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
    return float(alpha), float(beta)


class MeanAbsoluteError(LabelLoss):
    """MAE between the softmax output and the one-hot label (Ghosh et al., AAAI 2017).

    ``L = scale · Σ_j |p_j − 1[j=y]| = 2·scale·(1 − p_y)``; symmetric, hence noise-tolerant, but slow to fit.

    Args:
        scale: multiplier (Active-Passive-Losses' ``MAELoss`` equals ``scale=0.5``).
        weight, ignore_index, reduction, label_smoothing, validate: as ``nn.CrossEntropyLoss``
            (see :class:`~lightning_papers.taylor_loss.criterion.LabelLoss`).

    Example::

        >>> float(MeanAbsoluteError()(torch.tensor([[0.0, 0.0]]), torch.tensor([0])))
        1.0
    """

    def __init__(self, scale: float = 1.0, weight: _Weight = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing, validate)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def label_losses(self, logp_label, logp):
        return (2.0 * self.scale) * one_minus_p(logp_label)


class GeneralizedCrossEntropy(LabelLoss):
    """Generalised cross-entropy ``(1 − p_y^q) / q`` (Zhang & Sabuncu, NeurIPS 2018).

    ``q → 0`` gives CE, ``q = 1`` gives MAE/2. ``p_y^q`` is computed as ``exp(q log p_y)``: finite for any logits.

    Args:
        q: exponent in ``(0, 1]``; 0.7 is the paper's default.
        weight, ignore_index, reduction, label_smoothing, validate: as ``nn.CrossEntropyLoss``.

    Example::

        >>> round(float(GeneralizedCrossEntropy(q=1.0)(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))), 4)
        0.5
    """

    def __init__(self, q: float = 0.7, weight: _Weight = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing, validate)
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q}")
        self.q = float(q)

    def label_losses(self, logp_label, logp):
        return -torch.expm1(self.q * logp_label) / self.q


class _WithReverseCE(LabelLoss):
    """An active term weighted ``alpha`` plus reverse cross-entropy weighted ``beta`` (SCE, NCE+RCE)."""

    def __init__(self, alpha: float, beta: float, log_zero: float, weight: _Weight, ignore_index: int,
                 reduction: Reduction, label_smoothing: float, validate: bool | None) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing, validate)
        self.alpha, self.beta = _check_pair(alpha, beta)
        self.log_zero = _check_log_zero(log_zero)

    def rce(self, logp_label: torch.Tensor) -> torch.Tensor:
        # reverse CE -Σ_j p_j log q_j with the one-hot q clamped to [e^log_zero, 1] equals -log_zero · (1 - p_y)
        return (self.beta * -self.log_zero) * one_minus_p(logp_label)


class SymmetricCrossEntropy(_WithReverseCE):
    """Symmetric cross-entropy ``α·CE + β·RCE`` (Wang et al., ICCV 2019).

    RCE is reverse cross-entropy with ``log 0`` replaced by ``A = log(1e-4)``, i.e. ``−A (1 − p_y)``.

    Args:
        alpha: weight of CE (0.1 for CIFAR-10 in the paper).
        beta: weight of RCE (1.0 for CIFAR-10).
        log_zero: the value standing in for ``log 0`` (default ``log 1e-4``).
        weight, ignore_index, reduction, label_smoothing, validate: as ``nn.CrossEntropyLoss``.

    Example::

        >>> import torch.nn.functional as F
        >>> z, y = torch.randn(3, 5), torch.tensor([0, 1, 2])
        >>> torch.allclose(SymmetricCrossEntropy(alpha=1.0, beta=0.0)(z, y), F.cross_entropy(z, y))
        True
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = math.log(1e-4),
                 weight: _Weight = None, ignore_index: int = -100, reduction: Reduction = "mean",
                 label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        super().__init__(alpha, beta, log_zero, weight, ignore_index, reduction, label_smoothing, validate)

    def label_losses(self, logp_label, logp):
        return self.alpha * (-logp_label) + self.rce(logp_label)


class NCEandRCE(_WithReverseCE):
    """Active-passive loss NCE + RCE (Ma et al., ICML 2020).

    ``NCE = log p_y / Σ_j log p_j`` (normalised CE, in [0, 1]) and RCE as in :class:`SymmetricCrossEntropy`.

    Args:
        alpha: weight of NCE (1.0 for CIFAR-10 in the paper).
        beta: weight of RCE (1.0 for CIFAR-10).
        log_zero: stand-in for ``log 0`` in RCE.
        weight, ignore_index, reduction, label_smoothing, validate: as ``nn.CrossEntropyLoss``.

    Example::

        >>> round(float(NCEandRCE(1.0, 0.0)(torch.zeros(1, 4), torch.tensor([2]))), 4)
        0.25
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, log_zero: float = math.log(1e-4),
                 weight: _Weight = None, ignore_index: int = -100, reduction: Reduction = "mean",
                 label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        super().__init__(alpha, beta, log_zero, weight, ignore_index, reduction, label_smoothing, validate)

    def label_losses(self, logp_label, logp):
        # log p_j >= the float32 floor, so the denominator is finite and strictly negative
        floor = torch.finfo(logp.dtype).min / (4 * logp.shape[-1])
        nce = logp_label.clamp(min=floor) / logp.clamp(min=floor).sum(-1, keepdim=True)
        return self.alpha * nce + self.rce(logp_label)


class PolyLoss(LabelLoss):
    """Poly-1 loss ``CE + ε (1 − p_y)`` (Leng et al., ICLR 2022): CE's Taylor series with a tuned first term.

    Args:
        epsilon: the extra weight of the first polynomial term (1.0 is the paper's common choice; ``0`` = CE).
        weight, ignore_index, reduction, label_smoothing, validate: as ``nn.CrossEntropyLoss``.

    Example::

        >>> import torch.nn.functional as F
        >>> z, y = torch.randn(3, 5), torch.tensor([0, 1, 2])
        >>> torch.allclose(PolyLoss(epsilon=0.0)(z, y), F.cross_entropy(z, y))
        True
    """

    def __init__(self, epsilon: float = 1.0, weight: _Weight = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", label_smoothing: float = 0.0, validate: bool | None = None) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing, validate)
        if not math.isfinite(epsilon) or epsilon < -1.0:
            raise ValueError(f"epsilon must be a finite number >= -1 (the loss stays monotone), got {epsilon}")
        self.epsilon = float(epsilon)

    def label_losses(self, logp_label, logp):
        return -logp_label + self.epsilon * one_minus_p(logp_label)
