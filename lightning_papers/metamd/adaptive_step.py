"""The adaptive mirror step, twice: in place for the optimizer (foreach ops) and differentiable for meta-training.

Both compute, per tensor ``τ`` and coordinate ``i`` (see :mod:`lightning_papers.metamd.adaptive`)::

    m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²                 (Adam's moments)
    a = (√v / √(1 − β₂ᵗ) + ε) · exp(−c_τ) · (cosh k_τ − s·sinh k_τ),  s = sign(g · m_old)   (metric of ψ_t)
    θ ← θ − η · m / ((1 − β₁ᵗ) · a)                                  (the mirror step of ψ_t)

With a neutral map the in-place version runs exactly ``torch.optim.Adam``'s operations, in its order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_papers.metamd.adaptive import AdaptiveMirrorMap, context_features

__all__ = ["adaptive_step_", "functional_adaptive_step"]


@torch.no_grad()
def adaptive_step_(
    mirror_map: AdaptiveMirrorMap,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    roles: list[int],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One in-place MetaMD step of a list of tensors (``steps`` are the step numbers being taken, ≥ 1).

    ``grads`` already include weight decay / maximize. Cost: Adam's 7 elementwise passes, plus 4 for the
    per-coordinate agreement factor when the map uses it; the network ``g_φ`` runs once per tensor.
    """
    b1, b2 = betas
    neutral = mirror_map.is_neutral()
    coefs: list[list[float]] = []
    prods: list[Tensor] | None = None
    if not neutral:
        ctx = context_features(
            steps, grads, exp_avgs, exp_avg_sqs, roles, [p.numel() for p in params], betas, eps
        )
        coefs = mirror_map.coefficients(ctx).tolist()
        if mirror_map.agreement_bound > 0:
            prods = torch._foreach_mul(grads, exp_avgs)  # g · m_old: the agreement sign, before m moves
    torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
    torch._foreach_mul_(exp_avg_sqs, b2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - b2)
    bc1 = [1 - b1 ** float(t) for t in steps]
    bc2_sqrt = [(1 - b2 ** float(t)) ** 0.5 for t in steps]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bc2_sqrt)
    torch._foreach_add_(denom, eps)
    if neutral:
        step_size = [(lr / bc) * -1 for bc in bc1]
    else:
        step_size = [(lr / bc) * -math.exp(c[0]) for bc, c in zip(bc1, coefs)]
        if prods is not None:
            # denominator × exp(−k·s) = cosh k · (1 − s·tanh k) for s = ±1 (s = 0 gives cosh k): the step is
            # multiplied by exp(k·s). cosh k goes into the scalar step size, (1 − s·tanh k) costs 2 passes.
            idx = [i for i, (c, t) in enumerate(zip(coefs, steps)) if t > 1 and c[1] != 0.0]
            if idx:
                sel = [prods[i] for i in idx]
                dsel = [denom[i] for i in idx]
                torch._foreach_sign_(sel)
                torch._foreach_addcmul_(dsel, dsel, sel, [-math.tanh(coefs[i][1]) for i in idx])
                for i in idx:
                    step_size[i] /= math.cosh(coefs[i][1])
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


def functional_adaptive_step(
    mirror_map: AdaptiveMirrorMap,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    step: int,
    roles: Sequence[int],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """The same step, out of place and differentiable w.r.t. the map (and ``grads`` when they carry a graph).

    Returns:
        ``(new_params, new_exp_avgs, new_exp_avg_sqs, metric)`` where ``metric[τ] = η⁻¹``-free ``a_t`` of each
        tensor (the per-coordinate metric of ``ψ_t``), used by the regret bound.

    The context features are computed from detached values (they are inputs of ``g_φ``, not differentiated).
    """
    b1, b2 = betas
    ctx = context_features(
        [step] * len(params),
        [g.detach() for g in grads],
        [m.detach() for m in exp_avgs],
        [v.detach() for v in exp_avg_sqs],
        roles,
        [p.numel() for p in params],
        betas,
        eps,
    )
    co = mirror_map.coefficients(ctx)
    bc1 = 1 - b1**step
    bc2_sqrt = (1 - b2**step) ** 0.5
    new_p, new_m, new_v, metric = [], [], [], []
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        m2 = torch.lerp(m, g, 1 - b1)
        v2 = v * b2 + (1 - b2) * g * g
        # clamp: d√v/dv is infinite at v = 0 (exactly-zero gradients, e.g. dead units); √1e-30 ≪ ε
        a = v2.clamp_min(1e-30).sqrt() / bc2_sqrt + eps
        log_fac = co[i, 0].to(p.dtype)
        a = a * torch.exp(-log_fac)
        if step > 1 and mirror_map.agreement_bound > 0:
            k = co[i, 1].to(p.dtype)
            s = torch.sign(g.detach() * m.detach())
            a = a * (torch.cosh(k) - s * torch.sinh(k))  # = exp(−k·s) for s = ±1
        new_p.append(p - (lr / bc1) * m2 / a)
        new_m.append(m2)
        new_v.append(v2)
        metric.append(a)
    return new_p, new_m, new_v, metric
