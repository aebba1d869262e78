"""A learnable, strictly monotone, elementwise mirror map ``h = ∇ψ`` and its Bregman divergence.

Mirror descent (Nemirovski & Yudin; Beck & Teboulle 2003) updates ``θ' = h⁻¹(h(θ) − η g)`` where ``h = ∇ψ``
is the gradient of a strictly convex potential ``ψ``. MetaMD (Gao et al., 2022) meta-learns ``ψ``. Here ``ψ``
is separable over coordinates and each coordinate uses the scalar map of its *slot* (a group of tensors)::

    h(x)  = d·x + Σ_j β_j · tanh(γ_j · x)                       (slope floor m = d + Σ_j min(0, β_j γ_j) > 0)
    h'(x) = d + Σ_j β_j γ_j · sech²(γ_j · x)
    ψ(x)  = d·x²/2 + Σ_j (β_j / γ_j) · log cosh(γ_j · x)
    D_ψ(x, y) = ψ(x) − ψ(y) − h(y)·(x − y)                     (Bregman divergence, ≥ 0, = 0 iff x = y)

Parameterisation (why it is always monotone): ``γ_j = exp(log_gamma_j) > 0``, ``β_j`` free, and
``d = exp(log_d) + Σ_j relu(−β_j) γ_j``, so ``h' ≥ exp(log_d) > 0`` everywhere: ψ is ``exp(log_d)``-strongly
convex and ``h`` is a bijection of ℝ. ``h⁻¹`` has no closed form; it is solved by safeguarded Newton
(bracketed by the slope bounds) and differentiated with the implicit-function theorem (``_InverseFn``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_papers.files import atomic_write

__all__ = ["ASSIGNMENTS", "MirrorMap", "available_presets", "preset_path", "read_map_file", "write_map_file"]

#: How tensors are mapped to slots (each slot has its own scalar map).
#: ``shared``: one map for everything; ``kind``: 0 = tensors with ndim ≥ 2 (weights), 1 = vectors/scalars;
#: ``role``: 0 = first weight matrix, 1 = other weight matrices, 2 = last weight matrix, 3 = vectors/scalars
#: (fits any architecture); ``group``: slot = param-group index; ``tensor``: slot = tensor index (in order).
ASSIGNMENTS: dict[str, int | None] = {"shared": 1, "kind": 2, "role": 4, "group": None, "tensor": None}

_FORMAT = "lightning_papers.metamd.MirrorMap"
_PRESET_DIR = Path(__file__).resolve().parent / "presets"


def available_presets() -> list[str]:
    """Map names ``MetaMirrorDescent`` accepts: ``"identity"`` (SGD), ``"adam"`` (a neutral adaptive map) and the
    shipped ``presets/*.pt`` of either family."""
    shipped = sorted(p.stem for p in _PRESET_DIR.glob("*.pt")) if _PRESET_DIR.is_dir() else []
    return ["identity", "adam", *shipped]


def preset_path(name: str) -> Path:
    """Path of the shipped preset file ``presets/<name>.pt`` (it may not exist)."""
    return _PRESET_DIR / f"{name}.pt"


def read_map_file(path: str | os.PathLike) -> Any:
    """Read a saved mirror-map file with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file exists but cannot be read (corrupt, truncated, or not a plain-tensor file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mirror-map file at {str(path)!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling/zip errors differ by torch version: one clear message
        raise ValueError(
            f"could not read mirror-map file {str(path)!r} (corrupt, or not written by MirrorMap.save / "
            f"AdaptiveMirrorMap.save): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None


def write_map_file(path: str | os.PathLike, fmt: str, family: str, module: nn.Module, meta: dict) -> Path:
    """Write a map file (format tag, family, config, CPU tensors, meta) atomically: temp name, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": fmt,
        "version": 1,
        "family": family,
        "config": module.config(),
        "state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "meta": meta,
    }
    with atomic_write(path, "wb", encoding=None) as handle:
        torch.save(blob, handle)
    return path


def _logcosh(z: Tensor) -> Tensor:
    # log cosh z = |z| + log(1 + e^{-2|z|}) − log 2, stable for large |z|
    a = z.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def _coefs(log_d: Tensor, beta: Tensor, log_gamma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(d, β, γ) of one slot from its raw parameters (differentiable)."""
    gamma = torch.exp(log_gamma)
    d = torch.exp(log_d) + (torch.relu(-beta) * gamma).sum(-1)
    return d, beta, gamma


def _h(x: Tensor, d: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
    if beta.numel() == 0:
        return d * x
    return d * x + (beta * torch.tanh(x.unsqueeze(-1) * gamma)).sum(-1)


def _h_and_prime(x: Tensor, d: Tensor, beta: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    if beta.numel() == 0:
        return d * x, d.expand_as(x)
    t = torch.tanh(x.unsqueeze(-1) * gamma)
    hx = d * x + (beta * t).sum(-1)
    hp = d + ((beta * gamma) * (1.0 - t * t)).sum(-1)
    return hx, hp


def _psi(x: Tensor, d: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
    out = 0.5 * d * x * x
    if beta.numel():
        out = out + ((beta / gamma) * _logcosh(x.unsqueeze(-1) * gamma)).sum(-1)
    return out


def h_prime_scalar(x: Tensor, d: float, terms: Sequence[tuple[float, float]], need_prime: bool = True):
    """``h(x)`` (and ``h'(x)``) for python-float coefficients ``terms = [(β_j, γ_j), ...]``.

    The optimizer's hot path: one pass per term with in-place ops on flat vectors, no ``(N, K)``
    intermediates and no reductions (several times faster on CPU than the broadcast form).
    """
    hx = x * d
    hp = torch.full_like(x, d + sum(b * g for b, g in terms)) if need_prime else None
    for b, g in terms:
        t = torch.tanh(x * g)
        hx.add_(t, alpha=b)
        if need_prime:
            hp.sub_(t.mul_(t), alpha=b * g)  # β γ (1 − tanh²) = βγ − βγ tanh²
    return hx, hp


def fast_inverse(
    u: Tensor, x0: Tensor, d: float, terms: Sequence[tuple[float, float]], tol: float, max_iter: int
) -> Tensor:
    """``h⁻¹(u)`` from a close warm start ``x0`` by plain Newton with python-float coefficients.

    Falls back to the bracketed :func:`solve_inverse` when Newton has not converged in 3 steps
    (or produced a non-finite value), so it is exactly as robust.
    """
    with torch.no_grad():
        scale = (u.abs() + (1.0 + sum(abs(b) for b, _ in terms))).mul_(tol)
        x = x0
        for _ in range(3):
            hx, hp = h_prime_scalar(x, d, terms)
            r = hx.sub_(u)
            if bool((r.abs() <= scale).all()):
                return x
            x = x - r.div_(hp)
        hx, _ = h_prime_scalar(x, d, terms, need_prime=False)
        if bool(((hx - u).abs() <= scale).all()):
            return x
        dt = torch.tensor(d, dtype=u.dtype, device=u.device)
        bt = torch.tensor([b for b, _ in terms], dtype=u.dtype, device=u.device)
        gt = torch.tensor([g for _, g in terms], dtype=u.dtype, device=u.device)
        return solve_inverse(u, dt, bt, gt, x0=None, tol=tol, max_iter=max(max_iter, 50))


def solve_inverse(
    u: Tensor,
    d: Tensor,
    beta: Tensor,
    gamma: Tensor,
    x0: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 50,
) -> Tensor:
    """Solve ``h(x) = u`` elementwise by Newton's method safeguarded with a bracket (no autograd).

    The bracket comes from the slope bounds ``m ≤ h' ≤ M``: with ``r = h(x0) − u`` the root lies in
    ``[x0 − r/m, x0 − r/M]`` (ordered), so every iterate stays in a shrinking interval and the method
    cannot diverge; a Newton step that leaves the bracket is replaced by bisection.
    """
    with torch.no_grad():
        if beta.numel() == 0:
            return u / d
        bg = beta * gamma
        m = d + torch.clamp(bg, max=0).sum(-1)
        big_m = d + torch.clamp(bg, min=0).sum(-1)
        # residuals below rounding of the terms of h cannot be improved: tolerance scales with them
        scale = tol * (1.0 + u.abs() + beta.abs().sum())
        x = u / big_m if x0 is None else x0
        hx, hp = _h_and_prime(x, d, beta, gamma)
        r = hx - u
        if x0 is not None:
            # fast path: from a warm start next to the root plain Newton converges in 1–2 steps
            xs, rs, hps = x, r, hp
            for _ in range(min(3, max_iter)):
                if bool((rs.abs() <= scale).all()):  # (NaN residuals fail this and fall through)
                    return xs
                xs = xs - rs / hps
                hxs, hps = _h_and_prime(xs, d, beta, gamma)
                rs = hxs - u
            if bool((rs.abs() <= scale).all()):
                return xs
        a = x - r / m
        b = x - r / big_m
        lo = torch.minimum(a, b)
        hi = torch.maximum(a, b)
        for _ in range(max_iter):
            if not bool((r.abs() > scale).any()):
                break
            pos = r > 0  # h increasing: root is left of x where r > 0
            hi = torch.where(pos, torch.minimum(hi, x), hi)
            lo = torch.where(pos, lo, torch.maximum(lo, x))
            xn = x - r / hp
            bad = (xn <= lo) | (xn >= hi)
            x = torch.where(bad, 0.5 * (lo + hi), xn)
            hx, hp = _h_and_prime(x, d, beta, gamma)
            r = hx - u
        return x


class _InverseFn(torch.autograd.Function):
    """``x = h⁻¹(u; φ)`` with implicit-function gradients: ``∂x/∂u = 1/h'(x)``, ``∂x/∂φ = −(∂h/∂φ)(x)/h'(x)``."""

    @staticmethod
    def forward(ctx, u, log_d, beta, log_gamma, tol, max_iter):  # noqa: D102
        d, b, g = _coefs(log_d.detach(), beta.detach(), log_gamma.detach())
        x = solve_inverse(u.detach(), d, b, g, tol=tol, max_iter=max_iter)
        ctx.save_for_backward(x, log_d, beta, log_gamma)
        return x

    @staticmethod
    def backward(ctx, grad_x):  # noqa: D102
        x, log_d, beta, log_gamma = ctx.saved_tensors
        with torch.enable_grad():
            raw = [t.detach().requires_grad_(True) for t in (log_d, beta, log_gamma)]
            d, b, g = _coefs(*raw)
            hx, hp = _h_and_prime(x.detach(), d, b, g)
            v = grad_x / hp
            need = [ctx.needs_input_grad[i] for i in (1, 2, 3)]
            grads: list[Tensor | None] = [None, None, None]
            wanted = [r for r, n in zip(raw, need) if n]
            if wanted:
                # differentiate h(x; φ) at fixed x; −v is the adjoint of the implicit equation
                got = torch.autograd.grad(hx, wanted, grad_outputs=-v.detach(), allow_unused=True)
                it = iter(got)
                grads = [next(it) if n else None for n in need]
                grads = [
                    torch.zeros_like(r) if (gr is None and n) else gr for gr, r, n in zip(grads, raw, need)
                ]
        grad_u = v.detach() if ctx.needs_input_grad[0] else None
        return grad_u, grads[0], grads[1], grads[2], None, None


class MirrorMap(nn.Module):
    """Learned elementwise mirror map ``h = ∇ψ`` (strictly increasing), one scalar map per slot.

    Args:
        num_slots: number of independent scalar maps; must fit ``assignment`` (``shared`` 1, ``kind`` 2,
            ``role`` 4; ``group``/``tensor``: any, checked against the parameters when used).
        num_terms: number of ``tanh`` terms ``K`` (0 gives a linear map ``h(x) = d·x``).
        assignment: how tensors map to slots, one of :data:`ASSIGNMENTS`.
        init_scale: initial linear coefficient ``d`` (the step of mirror descent at ``lr=1`` is ``≈ 1/h'``).
        init_gammas: initial ``γ_j`` (default: geometric from 1 to 64, matching weight magnitudes 0.01–1).
        init_beta: initial ``β_j`` (default 0: the map starts linear).

    Raises:
        ValueError: ``num_slots``/``num_terms``/``init_scale`` invalid or ``assignment`` unknown.

    Example::

        >>> m = MirrorMap(num_slots=1, num_terms=2, init_beta=0.5)
        >>> x = torch.linspace(-2, 2, 5, dtype=torch.float64)
        >>> torch.allclose(m.h_inverse(m.h(x.float()).double()).double(), x, atol=1e-5)
        True
    """

    family = "static"

    def __init__(
        self,
        num_slots: int = 1,
        num_terms: int = 4,
        assignment: str = "shared",
        init_scale: float = 1.0,
        init_gammas: Sequence[float] | None = None,
        init_beta: float = 0.0,
    ) -> None:
        super().__init__()
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment!r}")
        if not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int, got {num_slots!r}")
        fixed = ASSIGNMENTS[assignment]
        if fixed is not None and num_slots != fixed:
            raise ValueError(f"assignment {assignment!r} needs num_slots={fixed}, got {num_slots}")
        if not isinstance(num_terms, int) or num_terms < 0:
            raise ValueError(f"num_terms must be an int >= 0, got {num_terms!r}")
        if not (isinstance(init_scale, (int, float)) and init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        if init_gammas is None:
            init_gammas = [64.0 ** (j / max(num_terms - 1, 1)) for j in range(num_terms)]
        if len(init_gammas) != num_terms or any(g <= 0 for g in init_gammas):
            raise ValueError(f"init_gammas must be {num_terms} positive numbers, got {list(init_gammas)!r}")
        self.assignment = assignment
        self.num_slots = num_slots
        self.num_terms = num_terms
        self.log_d = nn.Parameter(torch.full((num_slots,), math.log(init_scale)))
        self.beta = nn.Parameter(torch.full((num_slots, num_terms), float(init_beta)))
        self.log_gamma = nn.Parameter(
            torch.log(torch.tensor([list(map(float, init_gammas))] * num_slots)).reshape(num_slots, num_terms)
        )
        if init_beta < 0:  # keep d at init_scale: log_d stores only the slope floor
            floor = init_scale + float(init_beta) * sum(init_gammas)
            if floor <= 0:
                raise ValueError(
                    f"init_beta={init_beta} makes the map non-monotone for init_scale={init_scale}"
                )
            with torch.no_grad():
                self.log_d.fill_(math.log(floor))
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def identity(cls, num_slots: int = 1, assignment: str = "shared") -> MirrorMap:
        """The map ``h(x) = x``: mirror descent with it is plain SGD (bit for bit in :class:`MetaMirrorDescent`)."""
        return cls(num_slots=num_slots, num_terms=0, assignment=assignment, init_scale=1.0)

    @classmethod
    def from_values(
        cls,
        d: float | Sequence[float],
        beta: Sequence[float] | Sequence[Sequence[float]] = (),
        gamma: Sequence[float] | Sequence[Sequence[float]] = (),
        assignment: str = "shared",
    ) -> MirrorMap:
        """Build a map from explicit coefficients ``h(x) = d·x + Σ β_j tanh(γ_j x)`` (one row per slot).

        Raises:
            ValueError: shapes disagree, ``γ ≤ 0``, or the map is not strictly increasing
                (slope floor ``d + Σ min(0, β_j γ_j) ≤ 0``).
        """
        d_t = torch.as_tensor(d, dtype=torch.float64).reshape(-1)
        b_t = torch.as_tensor(beta, dtype=torch.float64)
        g_t = torch.as_tensor(gamma, dtype=torch.float64)
        if b_t.dim() <= 1:
            b_t = b_t.reshape(1, -1).expand(d_t.numel(), -1) if d_t.numel() > 1 else b_t.reshape(1, -1)
        if g_t.dim() <= 1:
            g_t = g_t.reshape(1, -1).expand(d_t.numel(), -1) if d_t.numel() > 1 else g_t.reshape(1, -1)
        if b_t.shape != g_t.shape or b_t.shape[0] != d_t.numel():
            raise ValueError(
                f"beta {tuple(b_t.shape)} and gamma {tuple(g_t.shape)} must be (num_slots={d_t.numel()}, K)"
            )
        if (g_t <= 0).any() or not torch.isfinite(g_t).all():
            raise ValueError(f"gamma must be finite and > 0, got {g_t.tolist()}")
        floor = d_t - torch.relu(-b_t * g_t).sum(-1)
        if (floor <= 0).any() or not torch.isfinite(floor).all():
            raise ValueError(
                f"mirror map is not strictly increasing: slope floor d + Σ min(0, β·γ) = {floor.tolist()} must be > 0"
            )
        m = cls(num_slots=d_t.numel(), num_terms=b_t.shape[1], assignment=assignment)
        with torch.no_grad():
            m.log_d.copy_(torch.log(floor))
            m.beta.copy_(b_t)
            m.log_gamma.copy_(torch.log(g_t))
        return m

    @classmethod
    def from_preset(cls, name: str) -> MirrorMap:
        """Load a shipped map by name (see :func:`available_presets`)."""
        if name == "identity":
            return cls.identity()
        path = preset_path(name)
        if not path.is_file() or name == "adam":
            raise ValueError(f"unknown mirror-map preset {name!r}; available: {available_presets()}")
        return cls.load(path)

    # ------------------------------------------------------------------ slot access
    def coefficients(self, slot: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """``(d, β, γ)`` of one slot, differentiable w.r.t. the raw parameters."""
        if not 0 <= slot < self.num_slots:
            raise IndexError(f"slot {slot} out of range for a map with {self.num_slots} slots")
        return _coefs(self.log_d[slot], self.beta[slot], self.log_gamma[slot])

    def is_linear(self, slot: int = 0) -> bool:
        """True when the slot's map is ``d·x`` (no active ``tanh`` term)."""
        return self.num_terms == 0 or bool((self.beta[slot] == 0).all())

    def assign(self, params: Sequence[Tensor], group_ids: Sequence[int] | None = None) -> list[int]:
        """Slot index of each tensor in ``params`` (in order) under this map's ``assignment``.

        Raises:
            ValueError: the map's number of slots does not fit the parameters (``tensor``/``group`` modes).
        """
        n = len(params)
        mode = self.assignment
        if mode == "shared":
            return [0] * n
        if mode == "kind":
            return [0 if p.dim() >= 2 else 1 for p in params]
        if mode == "role":
            mats = [i for i, p in enumerate(params) if p.dim() >= 2]
            out = [3] * n
            for i in mats:
                out[i] = 1
            if mats:
                out[mats[-1]] = 2
                out[mats[0]] = 0
            return out
        if mode == "tensor":
            if n != self.num_slots:
                raise ValueError(
                    f"mirror map has {self.num_slots} per-tensor slots but the optimizer got {n} parameter tensors"
                )
            return list(range(n))
        ids = list(group_ids) if group_ids is not None else [0] * n
        groups = sorted(set(ids))
        if len(groups) != self.num_slots:
            raise ValueError(
                f"mirror map has {self.num_slots} per-group slots but the optimizer has {len(groups)} param groups"
            )
        return ids

    # ------------------------------------------------------------------ the map
    def h(self, x: Tensor, slot: int = 0) -> Tensor:
        """The mirror map ``h(x) = ∇ψ(x)`` elementwise."""
        return _h(x, *self.coefficients(slot))

    def h_prime(self, x: Tensor, slot: int = 0) -> Tensor:
        """``h'(x) = ψ''(x) > 0`` elementwise."""
        return _h_and_prime(x, *self.coefficients(slot))[1]

    def h_inverse(self, u: Tensor, slot: int = 0, tol: float | None = None, max_iter: int = 50) -> Tensor:
        """``h⁻¹(u) = ∇ψ*(u)`` elementwise, by safeguarded Newton; gradients by the implicit-function theorem.

        Args:
            u: dual coordinates.
            slot: which slot's map.
            tol: residual tolerance relative to ``1 + |u| + Σ|β|`` (default 1e-12 for float64, 1e-6 otherwise).
            max_iter: Newton iterations at most.
        """
        if tol is None:
            tol = 1e-12 if u.dtype == torch.float64 else 1e-6
        if not 0 <= slot < self.num_slots:
            raise IndexError(f"slot {slot} out of range for a map with {self.num_slots} slots")
        log_d = self.log_d[slot].to(u.dtype)
        beta = self.beta[slot].to(u.dtype)
        log_gamma = self.log_gamma[slot].to(u.dtype)
        return _InverseFn.apply(u, log_d, beta, log_gamma, tol, max_iter)

    def psi(self, x: Tensor, slot: int = 0, reduction: Literal["sum", "none"] = "sum") -> Tensor:
        """The potential ``ψ(x)`` (``reduction="sum"`` over elements, or ``"none"``)."""
        out = _psi(x, *self.coefficients(slot))
        return out.sum() if reduction == "sum" else out

    def bregman(self, x: Tensor, y: Tensor, slot: int = 0, reduction: Literal["sum", "none"] = "sum") -> Tensor:
        """Bregman divergence ``D_ψ(x, y) = ψ(x) − ψ(y) − ⟨h(y), x − y⟩`` (≥ 0; 0 iff ``x = y``)."""
        d, b, g = self.coefficients(slot)
        # quadratic part in closed form (no cancellation), tanh part as a difference
        out = 0.5 * d * (x - y) ** 2
        if b.numel():
            xe, ye = x.unsqueeze(-1) * g, y.unsqueeze(-1) * g
            out = out + ((b / g) * (_logcosh(xe) - _logcosh(ye) - (xe - ye) * torch.tanh(ye))).sum(-1)
        return out.sum() if reduction == "sum" else out

    def forward(self, x: Tensor, slot: int = 0) -> Tensor:  # noqa: D102 (nn.Module protocol)
        return self.h(x, slot)

    # ------------------------------------------------------------------ checks and I/O
    def validate(self, lo: float = -10.0, hi: float = 10.0, num: int = 2001) -> None:
        """Check that every slot's map is finite and strictly increasing (analytically and on a grid).

        Raises:
            ValueError: a non-finite coefficient, a non-positive slope floor, or a decrease on the grid.
        """
        with torch.no_grad():
            for s in range(self.num_slots):
                d, b, g = self.coefficients(s)
                if not (torch.isfinite(d) and torch.isfinite(b).all() and torch.isfinite(g).all()):
                    raise ValueError(f"mirror map slot {s} has non-finite coefficients")
                floor = d + torch.clamp(b * g, max=0).sum()
                if floor <= 0:
                    raise ValueError(
                        f"mirror map slot {s} is not strictly increasing (slope floor {float(floor):.3g})"
                    )
                x = torch.linspace(lo, hi, num, dtype=torch.float64)
                y = _h(x, d.double(), b.double(), g.double())
                if not bool((y[1:] > y[:-1]).all()):
                    raise ValueError(f"mirror map slot {s} is not strictly increasing on [{lo}, {hi}]")

    def config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this map before loading its state."""
        return {"num_slots": self.num_slots, "num_terms": self.num_terms, "assignment": self.assignment}

    def save(self, path: str | os.PathLike, **meta: Any) -> Path:
        """Save config, coefficients and ``meta`` (e.g. how it was trained) to ``path`` (``torch.save``)."""
        return write_map_file(path, _FORMAT, self.family, self, {**self.meta, **meta})

    @classmethod
    def load(cls, path: str | os.PathLike) -> MirrorMap:
        """Load a map written by :meth:`save` and validate it.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a mirror-map file, or the stored map is not strictly increasing.
        """
        blob = read_map_file(path)
        if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
            found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
            raise ValueError(
                f"{str(path)!r} is not a MirrorMap file of the static family: found format {found!r}, "
                f"expected {_FORMAT!r}"
            )
        try:
            m = cls(**blob["config"])
            m.load_state_dict(blob["state"])
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(f"{str(path)!r} is not a valid MirrorMap file: {err}") from None
        m.meta = dict(blob.get("meta", {}))
        m.validate()
        return m

    def extra_repr(self) -> str:
        return f"num_slots={self.num_slots}, num_terms={self.num_terms}, assignment={self.assignment!r}"
