"""The static-map (paper-literal) mirror step of ``MetaMirrorDescent``: fused Newton solve of ``h⁻¹``.

All non-linear tensors of a param group are processed as one flat vector with per-element coefficients;
the dual iterate ``h(θ)`` and ``h'(θ)`` are cached in the optimizer state while ``θ`` is untouched.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_papers.metamd.mirror_map import _coefs, fast_inverse, h_prime_scalar, solve_inverse

__all__ = ["StaticStepMixin"]


class StaticStepMixin:
    """Methods of :class:`~lightning_papers.metamd.optimizer.MetaMirrorDescent` for static mirror maps."""

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
