"""``MetaMirrorDescent``: mirror descent with a (meta-learned) mirror map, as a drop-in ``torch.optim.Optimizer``.

Update (Gao et al., 2022, mirror-descent step; dual-space momentum is our addition)::

    g ← ∇f(θ)  (negated if maximize)  + weight_decay·θ
    b ← momentum·b + (1 − dampening)·g   (first step: b = g);  g ← b, or g + momentum·b with nesterov
    θ ← h⁻¹(h(θ) − lr·g)                 (h = ∇ψ, the mirror map of the tensor's slot)

The first two lines are exactly ``torch.optim.SGD``'s; with the identity map the last line is SGD's
``θ.add_(g, alpha=-lr)``, so the optimizer equals ``torch.optim.SGD(foreach=False)`` bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_papers.metamd.mirror_map import (
    MirrorMap,
    _coefs,
    available_presets,
    fast_inverse,
    h_prime_scalar,
    solve_inverse,
)

__all__ = ["DEFAULT_PRESET", "MetaMirrorDescent", "resolve_mirror_map"]

#: Above this many non-linear elements per param group the step uses per-slot scalar coefficients
#: (no per-element coefficient vectors, no cached dual iterate): less memory, more kernel launches.
FUSED_MAX_NUMEL = 1 << 22

#: The shipped meta-learned map used when ``mirror_map`` is not given (see ``cli_configs/metamd/digits_mlp.yaml``).
DEFAULT_PRESET = "digits_mlp"


def resolve_mirror_map(mirror_map: MirrorMap | str | os.PathLike | None) -> MirrorMap:
    """Turn a ``MirrorMap``, a file path or a preset name (None: :data:`DEFAULT_PRESET`) into a validated map.

    Raises:
        TypeError: an unsupported type.
        ValueError: an unknown preset name, or a map that is not strictly increasing.
        FileNotFoundError: a path that does not exist.
    """
    if mirror_map is None:
        mirror_map = DEFAULT_PRESET
    if isinstance(mirror_map, MirrorMap):
        mirror_map.validate()
        return mirror_map
    if isinstance(mirror_map, (str, os.PathLike)):
        text = os.fspath(mirror_map)
        if text in available_presets():
            return MirrorMap.from_preset(text)
        p = Path(text)
        if p.suffix or os.sep in text or "/" in text:
            return MirrorMap.load(p)
        raise ValueError(
            f"unknown mirror-map preset {text!r}; available: {available_presets()} (or give a file path)"
        )
    raise TypeError(
        f"mirror_map must be a MirrorMap, a preset name or a file path, got {type(mirror_map).__name__}"
    )


class MetaMirrorDescent(Optimizer):
    """Mirror descent ``θ ← h⁻¹(h(θ) − lr·g)`` with a learned elementwise mirror map (MetaMD).

    Args:
        params: iterable of tensors or param-group dicts (``torch.optim`` semantics).
        lr: step size ``η`` (> 0). The shipped maps were meta-trained at ``lr=1``: the map carries the scale.
        mirror_map: a :class:`MirrorMap`, a path to a saved one, or a preset name (default
            ``"digits_mlp"``, the shipped meta-learned map; ``"identity"`` gives plain SGD).
        momentum: momentum factor (dual-space heavy ball; 0 = the paper's plain mirror descent).
        dampening: dampening for momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum.
        maximize: maximise the objective instead of minimising it.
        tol: relative residual tolerance of the inner Newton solve for ``h⁻¹``.
        max_newton_iter: cap on Newton iterations per step.

    Raises:
        ValueError: non-positive ``lr``, negative momentum/weight decay, bad nesterov setting, an unknown
            preset, a non-monotone map, or a map whose slots do not fit the parameters.
        TypeError: ``mirror_map`` of an unsupported type.

    Example::

        >>> model = torch.nn.Linear(4, 2)
        >>> opt = MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map="identity")
        >>> model(torch.ones(3, 4)).sum().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        mirror_map: MirrorMap | str | os.PathLike | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        tol: float | None = None,
        max_newton_iter: int = 20,
    ) -> None:
        if isinstance(lr, Tensor):
            lr = float(lr)
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        if max_newton_iter < 1:
            raise ValueError(f"max_newton_iter must be >= 1, got {max_newton_iter}")
        self.mirror_map = resolve_mirror_map(mirror_map)
        self.tol = tol
        self.max_newton_iter = int(max_newton_iter)
        self._coef_cache: dict[Any, Any] = {}
        self._slots: dict[int, int] = {}
        self._versions: dict[int, int] = {}
        self._trust_loaded_dual = False
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        self._ready = False
        super().__init__(params, defaults)
        self._ready = True
        self._assign_slots()

    # ------------------------------------------------------------------ slots
    def _assign_slots(self) -> None:
        params, gids = [], []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                params.append(p)
                gids.append(gi)
        slots = self.mirror_map.assign(params, gids)  # raises ValueError when the map does not fit
        self._slots = {id(p): s for p, s in zip(params, slots)}

    def add_param_group(self, param_group: dict[str, Any]) -> None:  # noqa: D102 (torch.optim API)
        if "lr" in param_group and not param_group["lr"] > 0:
            raise ValueError(f"lr must be > 0, got {param_group['lr']!r}")
        super().add_param_group(param_group)
        if getattr(self, "_ready", False):
            self._assign_slots()

    def _coefs_for(self, slot: int, ref: Tensor) -> tuple[Any, ...]:
        """(terms [(β_j, γ_j)], linear?, d) of ``slot`` as python floats, cached until the map changes."""
        m = self.mirror_map
        version = (m.log_d._version, m.beta._version, m.log_gamma._version, id(m), m.log_d.dtype)
        key = slot
        hit = self._coef_cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        with torch.no_grad():
            d, b, g = _coefs(m.log_d[slot].detach(), m.beta[slot].detach(), m.log_gamma[slot].detach())
            linear = m.is_linear(slot)
            terms = [(float(bj), float(gj)) for bj, gj in zip(b.tolist(), g.tolist()) if bj != 0.0]
            val = (terms, linear, float(d))
        self._coef_cache[key] = (version, val)
        return val

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one mirror-descent step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            if isinstance(lr, Tensor):
                lr = float(lr)
            wd, mom, damp = group["weight_decay"], group["momentum"], group["dampening"]
            nesterov, maximize = group["nesterov"], group["maximize"]
            nl_p: list[Tensor] = []
            nl_g: list[Tensor] = []
            nl_s: list[int] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MetaMirrorDescent does not support sparse gradients")
                # --- exactly torch.optim.SGD's gradient transform (same ops, same order)
                grad = p.grad if not maximize else -p.grad
                if wd != 0:
                    grad = grad.add(p, alpha=wd)
                if mom != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(mom).add_(grad, alpha=1 - damp)
                    grad = grad.add(buf, alpha=mom) if nesterov else buf
                slot = self._slots.get(id(p))
                if slot is None:  # params replaced behind our back (e.g. load_state_dict of groups)
                    self._assign_slots()
                    slot = self._slots[id(p)]
                _, linear, d_float = self._coefs_for(slot, p)
                if linear:
                    # h(x) = d·x: θ ← θ − (lr/d)·g; for d == 1 this is SGD's very op
                    p.add_(grad, alpha=-lr if d_float == 1.0 else -lr / d_float)
                    continue
                nl_p.append(p)
                nl_g.append(grad)
                nl_s.append(slot)
            if not nl_p:
                continue
            if sum(p.numel() for p in nl_p) <= FUSED_MAX_NUMEL:
                self._fused_mirror_step(nl_p, nl_g, nl_s, lr)
            else:  # very large models: per-slot scalar coefficients, no per-element coefficient vectors
                for slot in sorted(set(nl_s)):
                    idx = [i for i, s in enumerate(nl_s) if s == slot]
                    self._mirror_step(
                        [nl_p[i] for i in idx],
                        [nl_g[i] for i in idx],
                        lr,
                        self._coefs_for(slot, nl_p[idx[0]]),
                    )
                    for i in idx:
                        self.state[nl_p[i]].pop("dual", None)
                        self.state[nl_p[i]].pop("h_prime", None)
        self._trust_loaded_dual = False
        return loss

    def _flat_coefs(self, ps: list[Tensor], slots: list[int]) -> dict[str, Any]:
        """Per-element coefficient vectors for a bucket of tensors (cached until the map or the bucket changes)."""
        m = self.mirror_map
        ref = ps[0]
        key = (
            "flat",
            tuple(id(p) for p in ps),
            tuple(p.numel() for p in ps),
            tuple(slots),
            ref.dtype,
            ref.device,
            m.log_d._version,
            m.beta._version,
            m.log_gamma._version,
            id(m),
            m.log_d.dtype,
        )
        hit = self._coef_cache.get("flat")
        if hit is not None and hit[0] == key:
            return hit[1]
        sizes = [p.numel() for p in ps]
        per_slot = {s: self._coefs_for(s, ref) for s in set(slots)}
        k = m.num_terms

        def vec(fn) -> Tensor:
            return torch.cat(
                [torch.full((n,), fn(s), dtype=ref.dtype, device=ref.device) for n, s in zip(sizes, slots)]
            )

        def term(s: int, j: int) -> tuple[float, float]:
            terms = per_slot[s][0]
            return terms[j] if j < len(terms) else (0.0, 1.0)

        kk = max(len(per_slot[s][0]) for s in per_slot) if per_slot else 0
        kk = min(kk, k)
        d = vec(lambda s: per_slot[s][2])
        gam = [vec(lambda s, j=j: term(s, j)[1]) for j in range(kk)]
        bet = [vec(lambda s, j=j: term(s, j)[0]) for j in range(kk)]
        bg = [b * g for b, g in zip(bet, gam)]
        c0 = d + sum(bg) if bg else d.clone()
        beta_abs = max(sum(abs(b) for b, _ in per_slot[s][0]) for s in per_slot)
        val = {"d": d, "gam": gam, "bet": bet, "bg": bg, "c0": c0, "beta_abs": beta_abs, "sizes": sizes}
        self._coef_cache["flat"] = (key, val)
        return val

    @staticmethod
    def _eval_flat(x: Tensor, c: dict[str, Any]) -> tuple[Tensor, Tensor]:
        # h(x) = d x + Σ β tanh(γ x),  h'(x) = (d + Σ βγ) − Σ βγ tanh²(γ x); 5 in-place ops per term
        hx = x * c["d"]
        hp = c["c0"].clone()
        for b, g, bg in zip(c["bet"], c["gam"], c["bg"]):
            t = torch.tanh(x * g)
            hx.addcmul_(b, t)
            hp.addcmul_(bg, t.mul_(t), value=-1.0)
        return hx, hp

    def _fused_mirror_step(self, ps: list[Tensor], gs: list[Tensor], slots: list[int], lr: float) -> None:
        """All non-linear tensors of a group in one flat vector with per-element coefficients.

        The dual iterate ``u = h(θ)`` and ``h'(θ)`` of the last step are kept in the state (``dual``,
        ``h_prime``) and reused when the parameter was not modified since (checked by its version counter,
        or right after ``load_state_dict``), which saves one evaluation of ``h`` per step.
        """
        c = self._flat_coefs(ps, slots)
        x = torch.cat([p.reshape(-1) for p in ps]) if len(ps) > 1 else ps[0].reshape(-1).clone()
        gr = torch.cat([q.reshape(-1) for q in gs]) if len(gs) > 1 else gs[0].reshape(-1)
        states = [self.state[p] for p in ps]
        cached = all("dual" in st for st in states) and (
            self._trust_loaded_dual or all(self._versions.get(id(p)) == p._version for p in ps)
        )
        if cached:
            u_prev = (
                torch.cat([st["dual"].reshape(-1) for st in states])
                if len(ps) > 1
                else states[0]["dual"].reshape(-1)
            )
            hp_prev = (
                torch.cat([st["h_prime"].reshape(-1) for st in states])
                if len(ps) > 1
                else states[0]["h_prime"].reshape(-1)
            )
        else:
            u_prev, hp_prev = self._eval_flat(x, c)
        u = u_prev - gr * lr  # the dual step h(θ) − η g
        x_new = x - gr.div(hp_prev).mul_(lr)  # linearised step θ − η g / h'(θ): one Newton step from θ
        tol = self.tol if self.tol is not None else (1e-12 if x.dtype == torch.float64 else 1e-6)
        scale = (u.abs() + (1.0 + c["beta_abs"])).mul_(tol)
        converged = False
        for _ in range(min(4, self.max_newton_iter)):
            hx, hp = self._eval_flat(x_new, c)
            r = hx.sub_(u)
            if bool((r.abs() <= scale).all()):
                converged = True
                break
            x_new = x_new - r.div_(hp)
        if not converged:  # safeguarded, bracketed solve per slot (always converges)
            x_new = self._bracketed(u, slots, c["sizes"])
            _, hp = self._eval_flat(x_new, c)
        duals = u.split(c["sizes"])
        hps = hp.split(c["sizes"])
        for p, st, chunk, du, dh in zip(ps, states, x_new.split(c["sizes"]), duals, hps):
            p.copy_(chunk.view_as(p))
            st["dual"] = du.view_as(p)
            st["h_prime"] = dh.view_as(p)
            self._versions[id(p)] = p._version

    def _bracketed(self, u: Tensor, slots: list[int], sizes: list[int]) -> Tensor:
        out = torch.empty_like(u)
        start = 0
        m = self.mirror_map
        for s, n in zip(slots, sizes):
            d, b, g = _coefs(m.log_d[s].detach(), m.beta[s].detach(), m.log_gamma[s].detach())
            out[start : start + n] = solve_inverse(
                u[start : start + n],
                d.to(u),
                b.to(u),
                g.to(u),
                tol=1e-6 if u.dtype != torch.float64 else 1e-12,
                max_iter=100,
            )
            start += n
        return out

    def _mirror_step(self, ps: list[Tensor], gs: list[Tensor], lr: float, coefs: tuple[Any, ...]) -> None:
        terms, _, d = coefs
        # one flat vector per slot: a few large elementwise ops instead of many small ones
        x = torch.cat([p.reshape(-1) for p in ps]) if len(ps) > 1 else ps[0].reshape(-1)
        gr = torch.cat([q.reshape(-1) for q in gs]) if len(gs) > 1 else gs[0].reshape(-1)
        hx, hp = h_prime_scalar(x, d, terms)
        u = hx.sub_(gr, alpha=lr)  # the dual step h(θ) − η g
        x0 = x - gr.div(hp).mul_(lr)  # linearised step θ − η g / h'(θ): one Newton step from the root
        tol = self.tol if self.tol is not None else (1e-12 if x.dtype == torch.float64 else 1e-6)
        x_new = fast_inverse(u, x0, d, terms, tol, self.max_newton_iter)
        if len(ps) == 1:
            ps[0].copy_(x_new.view_as(ps[0]))
            return
        for p, chunk in zip(ps, x_new.split([p.numel() for p in ps])):
            p.copy_(chunk.view_as(p))

    # ------------------------------------------------------------------ state
    def __getstate__(self) -> dict[str, Any]:  # pickling / deepcopy keep the map and solver settings
        state = super().__getstate__()
        state.update(mirror_map=self.mirror_map, tol=self.tol, max_newton_iter=self.max_newton_iter)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._coef_cache = {}
        self._versions = {}
        self._trust_loaded_dual = True  # a copy's params match its cached dual iterates
        self._ready = True
        if "mirror_map" in state:
            self._assign_slots()

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim`` state dict plus the mirror map (config and coefficients), so resuming is exact."""
        sd = super().state_dict()
        sd["mirror_map"] = {
            "config": self.mirror_map.config(),
            "state": {k: v.detach().cpu().clone() for k, v in self.mirror_map.state_dict().items()},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict from :meth:`state_dict` (a plain SGD-style dict without a map also works)."""
        state_dict = dict(state_dict)
        saved_map = state_dict.pop("mirror_map", None)
        super().load_state_dict(state_dict)
        if saved_map is not None:
            m = MirrorMap(**saved_map["config"])
            m.load_state_dict(saved_map["state"])
            m.validate()
            self.mirror_map = m
        self._coef_cache.clear()
        # the loaded dual iterates belong to the parameters restored with them (as Adam's moments do)
        self._trust_loaded_dual = True
        self._assign_slots()
