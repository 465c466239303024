"""Tests of :mod:`sb_angcl.objective.balancing` against grid searches and closed forms."""

import math

import pytest
import torch

from sb_angcl.objective.balancing import (
    FixedBalancer,
    MGDABalancer,
    gradient_dots,
    make_balancer,
    min_norm_alpha_from_dots,
)
from sb_angcl.objective.losses import AngularSupConLoss


def min_norm_alpha(g1, g2):
    """The balancer's closed form on two gradients (its dot products, then the solve)."""
    return min_norm_alpha_from_dots(*gradient_dots([g1], [g2]).cpu())

GRID = torch.linspace(0.0, 1.0, 100001, dtype=torch.float64)


def grid_sq_norms(g1, g2, grid=GRID):
    """``||a g1 + (1 - a) g2||^2`` for every ``a`` of the grid (float64)."""
    g1, g2 = g1.double().reshape(-1), g2.double().reshape(-1)
    g11, g12, g22 = g1 @ g1, g1 @ g2, g2 @ g2
    return grid**2 * g11 + 2 * grid * (1 - grid) * g12 + (1 - grid) ** 2 * g22


def combined_sq_norm(alpha, g1, g2):
    g = alpha * g1.double() + (1 - alpha) * g2.double()
    return float(g.reshape(-1) @ g.reshape(-1))


# --------------------------------------------------------------------------
# Closed form vs grid search
# --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_min_norm_alpha_matches_grid_random(seed):
    gen = torch.Generator().manual_seed(seed)
    d = int(torch.randint(1, 50, (1,), generator=gen))
    g1 = torch.randn(d, generator=gen, dtype=torch.float64) * float(
        torch.rand(1, generator=gen) * 5
    )
    g2 = torch.randn(d, generator=gen, dtype=torch.float64) * float(
        torch.rand(1, generator=gen) * 5
    )
    if seed % 3 == 0:  # make interior solutions likely: same norm scale
        g2 = g2 / g2.norm() * g1.norm()
    alpha = float(min_norm_alpha(g1, g2))
    norms = grid_sq_norms(g1, g2)
    best = float(GRID[norms.argmin()])
    assert abs(alpha - best) < 1e-3
    assert combined_sq_norm(alpha, g1, g2) <= float(norms.min()) + 1e-12


def test_min_norm_alpha_interior_case_is_really_interior():
    g1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([0.0, 2.0], dtype=torch.float64)
    alpha = float(min_norm_alpha(g1, g2))
    assert abs(alpha - 0.8) < 1e-12  # (4 - 0) / (1 + 4)
    assert abs(alpha - float(GRID[grid_sq_norms(g1, g2).argmin()])) < 1e-3


@pytest.mark.parametrize(
    "name,g1,g2,expected",
    [
        ("parallel, g2 = 3 g1", [1.0, 2.0, -1.0], [3.0, 6.0, -3.0], 1.0),
        ("parallel, g1 = 2 g2", [2.0, 4.0, 2.0], [1.0, 2.0, 1.0], 0.0),
        ("opposite", [3.0, 0.0, 0.0], [-1.0, 0.0, 0.0], 0.25),
        ("opposite, equal norm", [0.0, 2.0, 0.0], [0.0, -2.0, 0.0], 0.5),
        ("g1 zero", [0.0, 0.0, 0.0], [1.0, -2.0, 0.5], 1.0),
        ("g2 zero", [1.0, -2.0, 0.5], [0.0, 0.0, 0.0], 0.0),
        ("both equal", [1.0, -2.0, 0.5], [1.0, -2.0, 0.5], None),
        ("both zero", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], None),
    ],
)
def test_min_norm_alpha_edge_cases(name, g1, g2, expected):
    g1 = torch.tensor(g1, dtype=torch.float64)
    g2 = torch.tensor(g2, dtype=torch.float64)
    alpha = min_norm_alpha(g1, g2)
    assert alpha.dtype == torch.float64
    alpha = float(alpha)
    assert 0.0 <= alpha <= 1.0
    norms = grid_sq_norms(g1, g2)
    # the chosen alpha reaches the grid's minimum norm in every case
    assert combined_sq_norm(alpha, g1, g2) <= float(norms.min()) + 1e-12
    if expected is None:  # every alpha is optimal: documented answer 0.5
        assert alpha == 0.5
    else:
        assert abs(alpha - expected) < 1e-12, name
        assert abs(alpha - float(GRID[norms.argmin()])) < 1e-3


def test_min_norm_alpha_from_dots_float32_inputs_and_nonfinite():
    g1 = torch.randn(1000)
    g2 = torch.randn(1000)
    dots = gradient_dots([g1], [g2])
    assert dots.dtype == torch.float64
    torch.testing.assert_close(
        dots, torch.stack([g1 @ g1, g1 @ g2, g2 @ g2]).double(), rtol=1e-5, atol=1e-3
    )
    assert float(min_norm_alpha_from_dots(float("nan"), 0.0, 1.0)) == 0.5
    assert float(min_norm_alpha_from_dots(float("inf"), 0.0, 1.0)) == 0.5


def test_gradient_dots_none_entries_are_zero():
    a = [torch.tensor([1.0, 2.0]), None, torch.tensor([3.0])]
    b = [None, torch.tensor([1.0]), torch.tensor([2.0])]
    # g1 = [1, 2, 0, 3], g2 = [0, 0, 1, 2]
    torch.testing.assert_close(
        gradient_dots(a, b), torch.tensor([14.0, 6.0, 5.0], dtype=torch.float64)
    )


# --------------------------------------------------------------------------
# The balancers on a tiny model
# --------------------------------------------------------------------------
class Tiny(torch.nn.Module):
    """Encoder -> embedding -> (cosine classifier, AM-SupCon)."""

    def __init__(self, seed=0, n_in=12, d=8, n_cls=4):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(n_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)
        )
        self.head = torch.nn.Linear(d, n_cls, bias=False)
        self.x = torch.randn(16, n_in)
        self.y = torch.arange(n_cls).repeat_interleave(16 // n_cls)
        self.con = AngularSupConLoss(0.2, 0.1)

    def losses(self, cls_scale=1.0):
        emb = self.encoder(self.x)
        cls = cls_scale * torch.nn.functional.cross_entropy(self.head(emb), self.y)
        return emb, cls, self.con(emb, self.y)


def test_mgda_ub_combined_gradient_has_min_norm_over_grid():
    interior = 0
    grid = torch.linspace(0.0, 1.0, 10001, dtype=torch.float64)
    for seed, scale in [(0, 30.0), (1, 20.0), (2, 60.0), (3, 1.0), (4, 300.0)]:
        model = Tiny(seed)
        emb, loss_cls, loss_con = model.losses(scale)
        out = MGDABalancer("mgda_ub", distributed=False)(loss_cls, loss_con, shared=emb)
        (g,) = torch.autograd.grad(out.loss, emb, retain_graph=True)
        (g_cls,) = torch.autograd.grad(loss_cls, emb, retain_graph=True)
        (g_con,) = torch.autograd.grad(loss_con, emb, retain_graph=True)
        grid_min = float(grid_sq_norms(g_cls, g_con, grid).min())
        got = float((g.double() ** 2).sum())
        assert got <= grid_min * (1 + 1e-5) + 1e-12, (seed, got, grid_min)
        # out.loss really is the alpha-weighted sum
        alpha = float(out.alpha)
        assert math.isclose(
            float(out.loss),
            alpha * float(loss_cls) + (1 - alpha) * float(loss_con),
            rel_tol=1e-6,
        )
        interior += 0.01 < alpha < 0.99
        out.loss.backward()  # the graph survives the balancer
        assert model.encoder[0].weight.grad is not None
    assert interior >= 2, "test should cover interior alphas"


def test_mgda_on_parameters_equals_closed_form():
    interior = 0
    for seed, scale in [(0, 40.0), (1, 1.0), (2, 60.0)]:
        model = Tiny(seed)
        emb, loss_cls, loss_con = model.losses(scale)
        params = list(model.encoder.parameters())
        out = MGDABalancer("mgda", distributed=False)(
            loss_cls, loss_con, parameters=iter(params)
        )
        g_cls = torch.autograd.grad(loss_cls, params, retain_graph=True)
        g_con = torch.autograd.grad(loss_con, params, retain_graph=True)
        flat_cls = torch.cat([g.reshape(-1) for g in g_cls]).double()
        flat_con = torch.cat([g.reshape(-1) for g in g_con]).double()
        d = flat_cls - flat_con
        expected = float(((flat_con - flat_cls) @ flat_con / (d @ d)).clamp(0, 1))
        assert abs(float(out.alpha) - expected) < 1e-5
        assert (
            abs(
                float(out.alpha)
                - float(GRID[grid_sq_norms(flat_cls, flat_con).argmin()])
            )
            < 1e-3
        )
        interior += 0.01 < expected < 0.99
        # different from mgda_ub on the same batch (parameters vs embedding)
        ub = MGDABalancer("mgda_ub", distributed=False)(loss_cls, loss_con, shared=emb)
        assert ub.alpha.dtype == torch.float32
    assert interior >= 1


@pytest.mark.parametrize("mode", ["mgda_ub", "mgda"])
@pytest.mark.parametrize("normalization", ["none", "loss"])
def test_grad_scale_does_not_change_alpha(mode, normalization):
    model = Tiny(7)
    emb, loss_cls, loss_con = model.losses(30.0)
    bal = MGDABalancer(mode, normalization, distributed=False)
    kwargs = (
        {"shared": emb}
        if mode == "mgda_ub"
        else {"parameters": list(model.encoder.parameters())}
    )
    a1 = float(bal(loss_cls, loss_con, **kwargs).alpha)
    a2 = float(bal(loss_cls, loss_con, grad_scale=65536.0, **kwargs).alpha)
    assert 0.01 < a1 < 0.99  # an interior alpha, where a scale error would show
    assert abs(a1 - a2) < 1e-6


def test_l2_normalization_is_not_offered():
    """Sener & Koltun's l2 normaliser is a fixed 0.5 for two objectives: use fixed."""
    with pytest.raises(ValueError, match="normalization"):
        MGDABalancer("mgda_ub", "l2")


def test_loss_normalization_solves_on_gradients_per_unit_loss():
    model = Tiny(3)
    emb, loss_cls, loss_con = model.losses(30.0)
    out = MGDABalancer("mgda_ub", "loss", distributed=False)(
        loss_cls, loss_con, shared=emb
    )
    (g_cls,) = torch.autograd.grad(loss_cls, emb, retain_graph=True)
    (g_con,) = torch.autograd.grad(loss_con, emb, retain_graph=True)
    l1, l2 = float(loss_cls), float(loss_con)
    a = float(min_norm_alpha(g_cls.double() / l1, g_con.double() / l2))
    assert 0.0 < a < 1.0
    assert math.isclose(float(out.alpha), a, rel_tol=1e-5)
    assert math.isclose(float(out.loss), a * l1 + (1 - a) * l2, rel_tol=1e-5)


@pytest.mark.parametrize("alpha_min,alpha_max", [(0.2, 1.0), (0.0, 0.01), (0.3, 0.4)])
def test_alpha_bounds_respected(alpha_min, alpha_max):
    bal = MGDABalancer("mgda_ub", distributed=False, alpha_min=alpha_min, alpha_max=alpha_max)
    free = MGDABalancer("mgda_ub", distributed=False)
    seen = []
    for seed in range(12):
        for scale in (0.01, 1.0, 30.0, 3000.0):
            model = Tiny(seed)
            emb, loss_cls, loss_con = model.losses(scale)
            a = float(bal(loss_cls, loss_con, shared=emb).alpha)
            a_free = float(free(loss_cls, loss_con, shared=emb).alpha)
            assert alpha_min - 1e-7 <= a <= alpha_max + 1e-7
            assert math.isclose(a, min(max(a_free, alpha_min), alpha_max), abs_tol=1e-6)
            seen.append(a_free)
    # the unbounded alphas did fall outside the bounds somewhere
    assert any(not alpha_min <= v <= alpha_max for v in seen)


def test_alpha_smoothing_is_an_exponential_moving_average():
    beta = 0.8
    bal = MGDABalancer("mgda_ub", distributed=False, alpha_smoothing=beta)
    free = MGDABalancer("mgda_ub", distributed=False)
    average = None
    for seed, scale in [(0, 1.0), (1, 30.0), (2, 0.1), (3, 5.0)]:
        model = Tiny(seed)
        emb, loss_cls, loss_con = model.losses(scale)
        raw = float(free(loss_cls, loss_con, shared=emb).alpha)
        got = float(bal(loss_cls, loss_con, shared=emb).alpha)
        average = raw if average is None else beta * average + (1 - beta) * raw
        assert math.isclose(got, average, rel_tol=1e-5)
    # the average is state: saved and restored with the balancer
    other = MGDABalancer("mgda_ub", distributed=False, alpha_smoothing=beta)
    other.load_state_dict(bal.state_dict())
    assert math.isclose(float(other.alpha_average), average, rel_tol=1e-6)


def test_balancer_argument_errors():
    with pytest.raises(ValueError, match="alpha_min"):
        MGDABalancer(alpha_min=0.6, alpha_max=0.4)
    with pytest.raises(ValueError, match="alpha_smoothing"):
        MGDABalancer(alpha_smoothing=1.0)


def test_flat_objective_gets_no_weight():
    emb = torch.randn(6, 4, requires_grad=True)
    loss_cls = (emb**2).sum()
    loss_con = AngularSupConLoss()(
        emb, torch.arange(6)
    )  # no positive: zero loss, zero grad
    out = MGDABalancer("mgda_ub", distributed=False)(loss_cls, loss_con, shared=emb)
    assert float(out.alpha) == 1.0
    out2 = MGDABalancer("mgda_ub", distributed=False)(loss_con, loss_cls, shared=emb)
    assert float(out2.alpha) == 0.0


def test_fixed_balancer_weights():
    bal = FixedBalancer(contrastive_weight=0.3)
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(5.0, requires_grad=True)
    out = bal(a, b)
    assert math.isclose(float(out.loss), 0.7 * 2.0 + 0.3 * 5.0, rel_tol=1e-6)
    assert math.isclose(float(out.alpha), 0.7, rel_tol=1e-6)
    out.loss.backward()
    assert math.isclose(float(a.grad), 0.7, rel_tol=1e-6)
    assert math.isclose(float(b.grad), 0.3, rel_tol=1e-6)
    assert float(FixedBalancer(0.0)(a, b).loss) == 2.0
    assert float(FixedBalancer(1.0)(a, b).loss) == 5.0
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError):
            FixedBalancer(bad)


def test_make_balancer_and_errors():
    assert isinstance(make_balancer("fixed", 0.2), FixedBalancer)
    assert make_balancer("fixed", 0.2).contrastive_weight == 0.2
    bal = make_balancer("mgda", normalization="loss", distributed=False)
    assert isinstance(bal, MGDABalancer)
    assert (bal.mode, bal.normalization, bal.needs_parameters) == ("mgda", "loss", True)
    assert make_balancer("mgda_ub").needs_parameters is False
    with pytest.raises(ValueError, match="balancing"):
        make_balancer("mgda-ub")
    with pytest.raises(ValueError):
        MGDABalancer("fixed")
    with pytest.raises(ValueError):
        MGDABalancer("mgda_ub", normalization="l1")
    emb = torch.randn(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="shared"):
        MGDABalancer("mgda_ub")(emb.sum(), emb.sum())
    with pytest.raises(ValueError, match="parameters"):
        MGDABalancer("mgda")(emb.sum(), emb.sum())
