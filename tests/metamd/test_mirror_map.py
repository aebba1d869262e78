import pytest
import torch

from lightning_papers.metamd import MirrorMap
from lightning_papers.metamd.mirror_map import _InverseFn


def _nonlinear_map(dtype=torch.float64):
    return MirrorMap.from_values(
        d=[1.5, 0.8], beta=[[0.7, -0.2], [2.0, 0.5]], gamma=[[1.0, 3.0], [0.5, 20.0]], assignment="kind"
    ).to(dtype)


@pytest.mark.parametrize("slot", [0, 1])
def test_inverse_roundtrip_float64(slot):
    m = _nonlinear_map()
    x = torch.linspace(-30, 30, 4001, dtype=torch.float64)
    assert torch.allclose(m.h_inverse(m.h(x, slot), slot), x, atol=1e-6, rtol=0)
    # and h(h_inverse(u)) = u on the dual side
    u = torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10
    assert torch.allclose(m.h(m.h_inverse(u, slot), slot), u, atol=1e-8)


def test_inverse_roundtrip_float32():
    m = _nonlinear_map(torch.float32)
    x = torch.linspace(-3, 3, 1001)
    err = (m.h_inverse(m.h(x, 1), 1) - x).abs().max()
    assert err < 1e-5


def test_h_prime_matches_autograd():
    m = _nonlinear_map()
    x = torch.linspace(-2, 2, 50, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m.h(x, 1).sum(), x)
    assert torch.allclose(g, m.h_prime(x.detach(), 1), atol=1e-10)
    assert (m.h_prime(x.detach(), 1) > 0).all()


def test_psi_gradient_is_h():
    m = _nonlinear_map()
    x = torch.linspace(-40, 40, 101, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m.psi(x, 0), x)
    assert torch.allclose(g, m.h(x.detach(), 0), atol=1e-9)


def test_gradcheck_inverse_wrt_input_and_map_params():
    """Implicit-function gradients of h⁻¹ w.r.t. u and the map's raw parameters match finite differences."""
    m = _nonlinear_map()
    u = (
        torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        .mul(3)
        .requires_grad_(True)
    )

    def f(u, log_d, beta, log_gamma):
        # the same custom Function MirrorMap.h_inverse applies, on differentiable copies of slot 1's raw params
        return _InverseFn.apply(u, log_d, beta, log_gamma, 1e-13, 60)

    args = (
        u,
        m.log_d[1].detach().clone().requires_grad_(True),
        m.beta[1].detach().clone().requires_grad_(True),
        m.log_gamma[1].detach().clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


def test_bregman_nonnegative_and_zero_only_on_diagonal():
    m = _nonlinear_map()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, dtype=torch.float64, generator=g) * 3
    y = torch.randn(2000, dtype=torch.float64, generator=g) * 3
    for s in (0, 1):
        d = m.bregman(x, y, s, reduction="none")
        assert (d > 0).all()
        assert m.bregman(x, x, s, reduction="none").abs().max() < 1e-12
        # matches the definition ψ(x) − ψ(y) − h(y)(x − y)
        ref = m.psi(x, s, "none") - m.psi(y, s, "none") - m.h(y, s) * (x - y)
        assert torch.allclose(d, ref, atol=1e-8)
        # strong convexity: D ≥ (floor/2)(x − y)² with floor = exp(log_d)
        floor = torch.exp(m.log_d[s]).item()
        assert (d >= 0.5 * floor * (x - y) ** 2 - 1e-9).all()


def test_identity_map():
    m = MirrorMap.identity()
    x = torch.randn(10)
    assert torch.equal(m.h(x), x) and torch.equal(m.h_inverse(x), x)
    assert m.is_linear(0)


def test_save_load_roundtrip(tmp_path):
    m = _nonlinear_map(torch.float32)
    path = m.save(tmp_path / "map.pt", note="test")
    m2 = MirrorMap.load(path)
    x = torch.linspace(-2, 2, 9)
    assert torch.equal(m.h(x, 1), m2.h(x, 1)) and m2.assignment == "kind" and m2.meta["note"] == "test"


def test_non_monotone_map_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not strictly increasing"):
        MirrorMap.from_values(d=1.0, beta=[-1.0], gamma=[2.0])  # slope at 0 is 1 − 2 < 0
    m = MirrorMap(num_terms=1)
    with torch.no_grad():
        m.log_d.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        m.validate()
    torch.save({"format": "something else"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a MirrorMap file"):
        MirrorMap.load(tmp_path / "bad.pt")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="assignment"):
        MirrorMap(assignment="per-layer")
    with pytest.raises(ValueError, match="num_slots=4"):
        MirrorMap(num_slots=2, assignment="role")
    with pytest.raises(ValueError, match="init_scale"):
        MirrorMap(init_scale=0.0)


def test_role_assignment_generic():
    m = MirrorMap(num_slots=4, num_terms=1, assignment="role")
    ps = [
        torch.zeros(3, 4),
        torch.zeros(3),
        torch.zeros(5, 3),
        torch.zeros(5),
        torch.zeros(2, 5),
        torch.zeros(2),
    ]
    assert m.assign(ps) == [0, 3, 1, 3, 2, 3]
