"""``MetaMirrorDescent``: mirror descent with a (meta-learned) mirror map, as a drop-in ``torch.optim.Optimizer``.

Two map families (Gao et al., 2022, learn the Bregman divergence of mirror descent; the adaptive family is ours):

* **adaptive** (default, :class:`~lightning_papers.metamd.adaptive.AdaptiveMirrorMap`): the time-varying
  quadratic potential ``ψ_t(θ) = Σ_i ½ a_{t,i} θ_i²`` with ``a_t`` = Adam's metric × a learned bounded factor;
  ``θ ← θ − η m̂ / a_t``. A neutral map is ``torch.optim.Adam`` exactly (same operations, same order).
* **static** (:class:`~lightning_papers.metamd.mirror_map.MirrorMap`, the paper-literal variant): a fixed
  elementwise map ``h = ∇ψ``; with SGD's gradient transform::

      g ← ∇f(θ)  (negated if maximize)  + weight_decay·θ
      b ← momentum·b + (1 − dampening)·g   (first step: b = g);  g ← b, or g + momentum·b with nesterov
      θ ← h⁻¹(h(θ) − lr·g)                 (h = ∇ψ, the mirror map of the tensor's slot)

  With the identity map the last line is SGD's ``θ.add_(g, alpha=-lr)``, so the optimizer equals
  ``torch.optim.SGD(foreach=False)`` bit for bit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_papers.metamd.adaptive import AdaptiveMirrorMap, tensor_roles
from lightning_papers.metamd.adaptive_step import adaptive_step_
from lightning_papers.metamd.mirror_map import (
    _FORMAT as _STATIC_FORMAT,
)
from lightning_papers.metamd.mirror_map import (
    MirrorMap,
    _coefs,
    available_presets,
    preset_path,
    read_map_file,
)
from lightning_papers.metamd.static_step import StaticStepMixin

__all__ = ["DEFAULT_PRESET", "MetaMirrorDescent", "resolve_mirror_map"]

#: Above this many non-linear elements per param group the step uses per-slot scalar coefficients
#: (no per-element coefficient vectors, no cached dual iterate): less memory, more kernel launches.
FUSED_MAX_NUMEL = 1 << 22

#: The shipped meta-learned map used when ``mirror_map`` is not given (see ``cli_configs/metamd/adaptive_mix.yaml``).
DEFAULT_PRESET = "adaptive_mix"

#: Key marking a state dict as MetaMirrorDescent's (``load_state_dict`` refuses other optimizers' dicts).
_STATE_KEY = "mirror_map"

AnyMap = MirrorMap | AdaptiveMirrorMap


def _map_from_file(path: str | os.PathLike) -> AnyMap:
    blob = read_map_file(path)
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt == _STATIC_FORMAT:
        return MirrorMap.load(path)
    return AdaptiveMirrorMap.from_blob(blob, repr(os.fspath(path)))


def resolve_mirror_map(mirror_map: AnyMap | str | os.PathLike | None) -> AnyMap:
    """Turn a map, a file path or a preset name (None: :data:`DEFAULT_PRESET`) into a validated map.

    Files and presets of either family are recognised by their format tag.

    Raises:
        TypeError: an unsupported type.
        ValueError: an unknown preset name, a corrupt file, or a map that is not valid.
        FileNotFoundError: a path that does not exist.
    """
    if mirror_map is None:
        mirror_map = DEFAULT_PRESET
    if isinstance(mirror_map, (MirrorMap, AdaptiveMirrorMap)):
        mirror_map.validate()
        return mirror_map
    if isinstance(mirror_map, (str, os.PathLike)):
        text = os.fspath(mirror_map)
        if text == "identity":
            return MirrorMap.identity()
        if text == "adam":
            return AdaptiveMirrorMap()
        if text in available_presets():
            return _map_from_file(preset_path(text))
        p = Path(text)
        if p.suffix or os.sep in text or "/" in text:
            return _map_from_file(p)
        raise ValueError(
            f"unknown mirror-map preset {text!r}; available: {available_presets()} (or give a file path)"
        )
    raise TypeError(
        f"mirror_map must be a MirrorMap, an AdaptiveMirrorMap, a preset name or a file path, "
        f"got {type(mirror_map).__name__}"
    )


class MetaMirrorDescent(StaticStepMixin, Optimizer):
    """Mirror descent with a meta-learned mirror map (MetaMD); by default the shipped adaptive map.

    Args:
        params: iterable of tensors or param-group dicts (``torch.optim`` semantics).
        lr: step size ``η`` (> 0). Default ``1e-3`` as Adam's: the adaptive map modulates the step of the
            learning rate you would give Adam. Static maps carry their own scale (the shipped one: ``lr=1``).
        mirror_map: an :class:`AdaptiveMirrorMap` or :class:`MirrorMap`, a path to a saved one, or a preset
            name: ``"adaptive_mix"`` (default, meta-learned over small MLPs/CNNs/logistic regressions/LMs),
            ``"adam"`` (neutral adaptive map: exactly ``torch.optim.Adam``), ``"digits_mlp"`` (the static,
            paper-literal map) or ``"identity"`` (exactly ``torch.optim.SGD``).
        momentum, dampening, nesterov: SGD's momentum (static maps only).
        weight_decay: L2 penalty added to the gradient (both families, as in SGD and Adam).
        betas, eps: Adam's moment decay rates and denominator term (adaptive maps only).
        maximize: maximise the objective instead of minimising it.
        tol: relative residual tolerance of the inner Newton solve for ``h⁻¹`` (static maps).
        max_newton_iter: cap on Newton iterations per step (static maps).

    Raises:
        ValueError: non-positive ``lr`` or other bad hyperparameters (the message names the value), an
            unknown preset, a corrupt map file, or a map whose slots do not fit the parameters.
        TypeError: ``mirror_map`` of an unsupported type.

    Example::

        >>> model = torch.nn.Linear(4, 2)
        >>> opt = MetaMirrorDescent(model.parameters())  # the shipped adaptive map, lr=1e-3
        >>> model(torch.ones(3, 4)).sum().backward()
        >>> opt.step()
        >>> sgd = MetaMirrorDescent(model.parameters(), lr=0.1, mirror_map="identity")  # == torch.optim.SGD
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        mirror_map: AnyMap | str | os.PathLike | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
        tol: float | None = None,
        max_newton_iter: int = 20,
    ) -> None:
        if isinstance(lr, Tensor):
            lr = float(lr)
        if not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        if max_newton_iter < 1:
            raise ValueError(f"max_newton_iter must be >= 1, got {max_newton_iter}")
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.mirror_map = resolve_mirror_map(mirror_map)
        if isinstance(self.mirror_map, AdaptiveMirrorMap) and (momentum != 0 or dampening != 0 or nesterov):
            raise ValueError(
                f"momentum={momentum}, dampening={dampening}, nesterov={nesterov} apply to static mirror maps; "
                "the adaptive map has Adam's momentum: set betas instead"
            )
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
            betas=betas,
            eps=eps,
        )
        self._ready = False
        super().__init__(params, defaults)
        self._ready = True
        self._assign_slots()

    @property
    def adaptive(self) -> bool:
        """True when the map is of the adaptive family (Adam-like steps)."""
        return isinstance(self.mirror_map, AdaptiveMirrorMap)

    # ------------------------------------------------------------------ slots
    def _assign_slots(self) -> None:
        if self.adaptive:
            params = [p for group in self.param_groups for p in group["params"]]
            self._slots = dict(zip(map(id, params), tensor_roles(params)))  # layer roles, for the context
            return
        params, gids = [], []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                params.append(p)
                gids.append(gi)
        slots = self.mirror_map.assign(params, gids)  # raises ValueError when the map does not fit
        self._slots = {id(p): s for p, s in zip(params, slots)}

    def add_param_group(self, param_group: dict[str, Any]) -> None:  # noqa: D102 (torch.optim API)
        if "lr" in param_group and not param_group["lr"] > 0:
            raise ValueError(f"lr must be > 0, got {param_group['lr']!r} in a param group")
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
            if self.adaptive:
                self._adaptive_group_step(group, lr)
                continue
            wd, mom, damp = group["weight_decay"], group["momentum"], group["dampening"]
            nesterov, maximize = group["nesterov"], group["maximize"]
            nl_p: list[Tensor] = []
            nl_g: list[Tensor] = []
            nl_s: list[int] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                _check_dense(p)
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

    def _adaptive_group_step(self, group: dict[str, Any], lr: float) -> None:
        ps, gs, ms, vs, ts, roles = [], [], [], [], [], []
        wd, maximize = group["weight_decay"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            _check_dense(p)
            grad = p.grad if not maximize else -p.grad
            if wd != 0:
                grad = grad.add(p, alpha=wd)
            state = self.state[p]
            if len(state) == 0:
                # as torch.optim.Adam: a float32 step counter and zero moments
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            ps.append(p)
            gs.append(grad)
            ms.append(state["exp_avg"])
            vs.append(state["exp_avg_sq"])
            ts.append(int(state["step"].item()))
            slot = self._slots.get(id(p))
            if slot is None:
                self._assign_slots()
                slot = self._slots[id(p)]
            roles.append(slot)
        if ps:
            adaptive_step_(
                self.mirror_map, ps, gs, ms, vs, ts, roles, lr=lr, betas=group["betas"], eps=group["eps"]
            )

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
        """``torch.optim`` state dict plus the mirror map (family, config, coefficients): resuming is exact."""
        sd = super().state_dict()
        sd[_STATE_KEY] = {
            "family": self.mirror_map.family,
            "config": self.mirror_map.config(),
            "state": {k: v.detach().cpu().clone() for k, v in self.mirror_map.state_dict().items()},
        }
        return sd

    def _check_state_shapes(self, state_dict: dict[str, Any]) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        bad = _state_shape_mismatches(params, state_dict)
        if bad:
            raise ValueError(
                "load_state_dict: the saved optimizer state does not fit these parameters (another model, or the "
                f"parameters in another order): {'; '.join(bad[:3])}" + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict written by :meth:`state_dict` (the map travels inside).

        Raises:
            ValueError: the dict comes from another optimizer class (e.g. ``torch.optim.Adam``'s), or its
                per-parameter state does not fit these parameters' shapes.
        """
        state_dict = dict(state_dict)
        saved_map = state_dict.pop(_STATE_KEY, None)
        if not isinstance(saved_map, dict) or "family" not in saved_map:
            keys = sorted({k for g in state_dict.get("param_groups", []) for k in g} - {"params"})
            raise ValueError(
                "load_state_dict expected a MetaMirrorDescent state dict (with a 'mirror_map' entry of family "
                f"'adaptive' or 'static'); got one with keys {sorted(state_dict)} and param-group keys {keys}: "
                "a state dict of another optimizer class cannot be loaded"
            )
        family = saved_map["family"]
        if family == "adaptive":
            m: AnyMap = AdaptiveMirrorMap(**saved_map["config"])
        elif family == "static":
            m = MirrorMap(**saved_map["config"])
        else:
            raise ValueError(
                f"unknown mirror-map family {family!r} in state dict; expected 'adaptive' or 'static'"
            )
        m.load_state_dict(saved_map["state"])
        m.validate()
        self._check_state_shapes(state_dict)
        super().load_state_dict(state_dict)
        self.mirror_map = m
        self._coef_cache.clear()
        # the loaded dual iterates belong to the parameters restored with them (as Adam's moments do)
        self._trust_loaded_dual = True
        self._assign_slots()


def _state_shape_mismatches(params: list[Tensor], state_dict: dict[str, Any]) -> list[str]:
    """Per-parameter state tensors whose shape differs from the parameter they would be restored to."""
    saved_ids = [i for g in state_dict.get("param_groups", []) for i in g["params"]]
    bad = []
    for index, (saved_id, p) in enumerate(zip(saved_ids, params)):
        for key, value in state_dict.get("state", {}).get(saved_id, {}).items():
            if isinstance(value, Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(p.shape):
                bad.append(f"parameter {index}: {key} {tuple(value.shape)} vs parameter {tuple(p.shape)}")
    return bad


def _check_dense(p: Tensor) -> None:
    if p.grad.is_sparse:
        raise RuntimeError(
            f"MetaMirrorDescent does not support sparse gradients (got a sparse gradient of layout "
            f"{p.grad.layout} for a parameter of shape {tuple(p.shape)}); use dense gradients, e.g. "
            "nn.Embedding(..., sparse=False)"
        )
