"""The shared machinery of every criterion in this package: ``nn.CrossEntropyLoss``'s call and options.

A criterion here only says what the loss of one sample would be *if its label were class j*, as a function of
the log-probabilities (:meth:`LabelLoss.label_losses`). :class:`LabelLoss` turns that into the full
``nn.CrossEntropyLoss`` interface with the same semantics:

* ``target`` holds class indices ``(N,)`` / ``(N, d1, ...)`` or class probabilities of the logits' shape;
* ``weight`` (C,): index targets give the weighted mean ``Σ_i w_{y_i} ℓ_i / Σ_i w_{y_i}``; probability targets
  give ``Σ_j w_j q_j ℓ_j`` per sample, averaged over samples (exactly as PyTorch does);
* ``ignore_index``: those targets contribute 0 and drop out of the mean's denominator;
* ``label_smoothing=ε``: the target becomes ``(1 − ε)·onehot + ε/C`` (for index targets the mean is still
  normalised by ``Σ w_{y_i}``, as in PyTorch);
* probability targets are the expectation ``Σ_j q_j ℓ_j``, so one-hot probabilities equal class indices.

Everything is computed in float32 (fp16/bf16 logits are upcast, as cross-entropy is under autocast; float64
logits stay float64) and the result is float32 (float64). ``forward`` never synchronises the host with the device: value checks (targets in range,
valid probabilities) run only when ``validate=True``, or by default when the tensors are on the CPU (where a
check costs no sync) and the call is not being traced by ``torch.compile``. As with PyTorch, a mean over no
samples (empty batch, every target ignored) is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["LabelLoss", "Reduction"]
Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: Reduction) -> Reduction:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


class LabelLoss(nn.Module):
    """Base class: a per-label loss ``ℓ(log p, j)`` with the call and options of ``nn.CrossEntropyLoss``.

    Subclasses implement :meth:`label_losses`. See the module docstring for the exact semantics.

    Args:
        weight: per-class weights, shape ``(C,)`` (a buffer: it follows ``.to(device)``).
        ignore_index: class-index targets with this value are ignored (index targets only).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        label_smoothing: ``ε`` in ``[0, 1]``.
        validate: check target values (range, probabilities). ``None`` (default): only for CPU tensors and
            outside ``torch.compile``, where it needs no host-device sync; ``True``: always (syncs on GPUs);
            ``False``: never.
    """

    def __init__(
        self,
        weight: torch.Tensor | Sequence[float] | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        validate: bool | None = None,
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        self.validate = validate
        if weight is not None:
            w = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
            if w.dim() != 1 or w.numel() < 1:
                raise ValueError(f"weight must be a 1-D tensor of C class weights, got shape {tuple(w.shape)}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"weight must be finite and >= 0, got {w.tolist()}")
            self.register_buffer("weight", w)
        else:
            self.weight: torch.Tensor | None = None

    # -- to implement -------------------------------------------------------------------------------
    def label_losses(self, logp_label: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        """Loss of a sample if its label were the class of ``logp_label``.

        Args:
            logp_label: float32 log-probabilities of the label class, shape ``(n, 1)`` (index targets) or
                ``(n, C)`` (every class as the label: probability targets, label smoothing).
            logp: float32 log-softmax of the logits, shape ``(n, C)``, for row statistics (e.g. NCE's
                normaliser), broadcastable against ``logp_label`` with ``keepdim=True`` reductions.

        Returns:
            Losses of the shape of ``logp_label``.
        """
        raise NotImplementedError

    # -- the CrossEntropyLoss interface -----------------------------------------------------------
    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's name)
        return self.apply_loss(input, target)

    def _validating(self, t: torch.Tensor) -> bool:
        if self.validate is not None:
            return bool(self.validate)
        return t.device.type == "cpu" and not _is_compiling()

    def fused_loss(self, z: torch.Tensor, t: torch.Tensor, soft: bool, plain: bool) -> torch.Tensor | None:
        """Optional fast path: the reduced loss (per-row losses ``(n,)`` for ``"none"``) or ``None``.

        ``z`` are the flattened ``(n, C)`` logits, ``t`` the targets (``(n,)`` indices or ``(n, C)``
        probabilities); ``plain``: the targets were checked and are all class indices in ``[0, C)`` (none
        ignored). Subclasses with a closed-form gradient override this; ``None`` uses autograd.
        """
        return None

    def apply_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z, t, soft, out_shape = _flatten(logits, target)
        n, num_classes = z.shape
        w = self.weight
        if w is not None and w.shape[0] != num_classes:
            raise ValueError(f"weight has {w.shape[0]} entries but the logits have C={num_classes} classes")
        plain = self._validating(t) and _check_values(t, soft, num_classes, self.ignore_index)
        fused = self.fused_loss(z, t, soft, plain)
        if fused is not None:
            return fused.reshape(out_shape) if self.reduction == "none" else fused
        logp = torch.log_softmax(z, dim=-1)
        eps = self.label_smoothing
        if soft:
            q = t.float()
            if eps > 0:
                q = q * (1.0 - eps) + eps / num_classes
            if w is not None:
                q = q * w.to(q.dtype)
            per = (q * self.label_losses(logp, logp)).sum(-1)
            denominator = torch.full((), float(n), device=z.device)
        else:
            valid = t != self.ignore_index
            safe = t * valid  # ignored targets read class 0, then drop out below
            per = self.label_losses(logp.gather(-1, safe[:, None]), logp).squeeze(-1)
            w_y = valid.to(per.dtype) if w is None else w.to(per.dtype)[safe] * valid
            if w is not None:
                per = per * w_y
            if eps > 0:
                every = self.label_losses(logp, logp)
                smooth = (every if w is None else every * w.to(every.dtype)).sum(-1)
                per = (1.0 - eps) * per + (eps / num_classes) * torch.where(valid, smooth, 0.0)
            # w_y is 0 exactly where a target is ignored, so a non-finite loss there must not leak in
            per = torch.where(valid, per, 0.0)
            denominator = w_y.sum()
        if self.reduction == "none":
            return per.reshape(out_shape)
        total = per.sum()
        if self.reduction == "sum":
            return total
        return total / denominator  # NaN when nothing counts (no target, all ignored), as cross-entropy


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool, tuple]:
    """Check shapes/dtypes (metadata only: no sync) and flatten to ``(n, C)`` float32 logits."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"input and target must be tensors, got {type(logits).__name__} and {type(target).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"input (logits) must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0:
        raise ValueError("input must have shape (C,), (N, C) or (N, C, d1, ...), got a 0-dim tensor")
    unbatched = logits.dim() == 1
    if unbatched:
        logits, target = logits.unsqueeze(0), target.unsqueeze(0)
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes (input.shape[1] >= 2), got input shape {tuple(logits.shape)}")
    soft = target.is_floating_point()
    if soft:
        if target.shape != logits.shape:
            raise ValueError(
                f"probability target shape {tuple(target.shape)} does not match input shape {tuple(logits.shape)}"
                " (class probabilities need the input's shape; class indices need it without dim 1)"
            )
    else:
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(f"target must hold class indices (int64) or probabilities (float), got {target.dtype}")
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target shape {tuple(target.shape)} does not match input shape {tuple(logits.shape)}: "
                f"expected class indices of shape {expected}"
            )
    out_shape = () if unbatched else (logits.shape[0], *logits.shape[2:])
    if logits.dim() > 2:  # (N, C, d1, ...) -> (N*d1*..., C), as CrossEntropyLoss does for dense prediction
        logits = logits.movedim(1, -1).reshape(-1, num_classes)
        target = target.movedim(1, -1).reshape(-1, num_classes) if soft else target.reshape(-1)
    z = logits if logits.dtype == torch.float64 else logits.float()  # float64 stays (gradcheck, as CE does)
    return z, (target if soft else target.long()), soft, out_shape


def _check_values(t: torch.Tensor, soft: bool, num_classes: int, ignore_index: int) -> bool:
    """Data-dependent checks: a host sync on accelerators, hence only when validating.

    Returns whether the targets are class indices that all lie in ``[0, C)`` and none equals ``ignore_index``.
    """
    if not t.numel():
        return False
    if soft:
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            bad = t[~torch.isfinite(t) | (t < 0)][:5].tolist()
            raise ValueError(f"probability targets must be finite and >= 0, got values such as {bad}")
        return False
    lo, hi = torch.aminmax(t)
    if 0 <= int(lo) and int(hi) < num_classes:  # the common case in one pass
        return not (int(lo) <= ignore_index <= int(hi) and bool((t == ignore_index).any()))
    bad = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if bool(bad.any()):
        values = sorted(set(t[bad].tolist()))[:5]
        raise ValueError(
            f"target values must lie in [0, {num_classes - 1}] (C={num_classes}) or equal "
            f"ignore_index={ignore_index}, got {values}"
        )
    return False
