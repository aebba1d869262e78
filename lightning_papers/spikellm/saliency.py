"""Channel saliency for Optimal Brain Spiking (arXiv 2407.04752, Sec. 3.3).

* First order (activations): for ``Y = X W^T`` the loss ``||X W^T||^2`` has gradient ``2 X W^T W``
  w.r.t. ``X``; its first-order Taylor term per channel is ``S_j = mean_tokens((X W^T W) * X)_j``.
* Second order (weights): the OBS cost of perturbing column ``j`` is ``w_ij^2 / [H^-1]_jj``; as in
  GPTQ / PB-LLM we use the Cholesky factor of ``H^-1`` and sum over output rows.
* Random: the control at equal budget.
The top ``salient_fraction`` of input channels by score are salient.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SaliencyStats", "hessian_scores", "inverse_hessian_cholesky", "random_mask", "select_salient"]


class SaliencyStats:
    """Streaming calibration statistics of one linear layer's inputs.

    Args:
        weight: the layer weight ``(out, in)`` (read only).
        first_order: accumulate ``sum((X W^T W) * X)`` per channel.
        hessian: accumulate ``H = 2 X^T X / N``.

    Example::

        >>> w = torch.randn(3, 5)
        >>> stats = SaliencyStats(w, hessian=True)
        >>> stats.add_batch(torch.randn(2, 7, 5))
        >>> stats.first_order_scores().shape, stats.hessian.shape, stats.tokens
        (torch.Size([5]), torch.Size([5, 5]), 14)
    """

    def __init__(self, weight: torch.Tensor, first_order: bool = True, hessian: bool = False) -> None:
        self.weight = weight.detach().float()
        cols = weight.shape[1]
        self.fo_sum = torch.zeros(cols, dtype=torch.float64, device=weight.device) if first_order else None
        self.hessian = torch.zeros(cols, cols, dtype=torch.float32, device=weight.device) if hessian else None
        self.act_absmax = torch.zeros(cols, dtype=torch.float32, device=weight.device)
        self.tokens = 0

    @torch.no_grad()
    def add_batch(self, x: torch.Tensor) -> None:
        """Accumulate the inputs ``x`` of shape ``(..., in)``."""
        x = x.detach().reshape(-1, x.shape[-1]).float()
        n = x.shape[0]
        if self.fo_sum is not None:
            grad = (x @ self.weight.T) @ self.weight
            self.fo_sum += (grad * x).sum(0).double()
        if self.hessian is not None:
            # running mean of 2 x x^T, numerically stable for many batches (as GPTQ)
            self.hessian *= self.tokens / (self.tokens + n)
            xs = x * math.sqrt(2.0 / (self.tokens + n))
            self.hessian += xs.T @ xs
        self.act_absmax = torch.maximum(self.act_absmax, x.abs().amax(0))
        self.tokens += n

    def first_order_scores(self) -> torch.Tensor:
        """``mean_tokens((X W^T W) * X)`` per input channel."""
        if self.fo_sum is None or self.tokens == 0:
            raise RuntimeError("no first-order statistics: call add_batch with first_order=True first")
        return (self.fo_sum / self.tokens).float()


def inverse_hessian_cholesky(hessian: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``, and the dead-column mask.

    Dead columns (zero diagonal, never activated) get ``H_jj = 1`` as in GPTQ.
    """
    h = hessian.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    try:
        chol = torch.linalg.cholesky(h)
    except RuntimeError:  # ill-conditioned: add more dampening rather than fail
        h += 0.1 * torch.mean(torch.diag(h)) * eye
        chol = torch.linalg.cholesky(h)
    hinv = torch.cholesky_inverse(chol)
    return torch.linalg.cholesky(hinv, upper=True).float(), dead


def hessian_scores(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """OBS column saliency ``sum_i w_ij^2 / [chol(H^-1)]_jj^2`` of a weight ``(out, in)``."""
    hinv_chol, _ = inverse_hessian_cholesky(hessian, damp)
    d = torch.diag(hinv_chol)
    return (weight.float() ** 2 / (d**2).unsqueeze(0)).sum(0)


def select_salient(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the ``round(fraction * n)`` highest-scoring channels.

    Raises:
        ValueError: when ``fraction`` is outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"salient_fraction must be in [0, 1], got {fraction}")
    n = scores.numel()
    k = int(round(fraction * n))
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if k:
        mask[torch.topk(scores.float(), k).indices] = True
    return mask


def random_mask(n: int, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random mask with ``round(fraction * n)`` channels set (the control of Sec. 5)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"salient_fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask
