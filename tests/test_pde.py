"""Physics-informed pieces: input derivatives (against float64 finite differences and scipy's
analytic B-spline derivatives), collocation sampling, residual-based resampling and attention."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import BSpline

from kan_jax import KAN, KANLinear
from kan_jax.layer import scaled_spline_weight
from kan_jax.pde import (
    grid_points,
    input_derivatives,
    kan_input_derivatives,
    rba_update,
    rba_weighted_mse,
    resample,
    resampling_probabilities,
    sobol_points,
)

STRATEGIES = ("unrolled", "dense", "local")
#: Dense in the default run, the other two (longer to compile under per-point Hessians) marked slow.
STRATEGY_PARAMS = [pytest.param(s, marks=() if s == "dense" else pytest.mark.slow) for s in STRATEGIES]


def _network(strategy: str, seed: int):
    model = KAN([2, 4, 2], grid_size=6, spline_strategy=strategy)
    x = jax.random.uniform(jax.random.key(seed), (64, 2), jnp.float64, -0.9, 0.9)
    variables = model.init(jax.random.key(seed + 1), x)
    # Non-trivial splines: random coefficients instead of the near-zero initial noise.
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.key(seed + 2), len(leaves))
    params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])
    return lambda z: model.apply({"params": params, "grid": variables["grid"]}, z), x


def _finite_differences(fn, x: np.ndarray, c: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    e = np.zeros_like(x)
    e[:, c] = h
    f = lambda z: np.asarray(fn(jnp.asarray(z)))
    fp, f0, fm = f(x + e), f(x), f(x - e)
    fp2, fm2 = f(x + 2 * e), f(x - 2 * e)
    d1 = (8 * (fp - fm) - (fp2 - fm2)) / (12 * h)                   # fourth order
    d2 = (-fp2 + 16 * fp - 30 * f0 + 16 * fm - fm2) / (12 * h * h)
    return d1, d2


@pytest.mark.parametrize("strategy", STRATEGY_PARAMS)
def test_derivatives_match_finite_differences_between_and_at_knots(strategy):
    fn, x = _network(strategy, seed=np.random.randint(1000))
    # The first layer's knots on [-1, 1] with G = 6 sit at multiples of 1/3: put points on them.
    x = np.asarray(x).copy()
    x[:8, 1] = np.array([-2, -1, 0, 1, 2, -2, 1, 0]) / 3.0
    x[8:12, 0] = 1 / 3.0
    d = jax.jit(lambda z: input_derivatives(fn, z, first=(0, 1), second=(0, 1)))(jnp.asarray(x))
    np.testing.assert_allclose(d.value, fn(jnp.asarray(x)), rtol=1e-13, atol=1e-13)
    # Reverse over forward mode, point by point: another route through the same splines.
    point = lambda z: fn(z[None])[0]
    jac = jax.jit(jax.vmap(jax.jacrev(point)))(jnp.asarray(x))          # (B, out, in)
    hess = jax.jit(jax.vmap(jax.hessian(point)))(jnp.asarray(x))        # (B, out, in, in)
    np.testing.assert_allclose(d.first, jac, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(d.second, jnp.diagonal(hess, axis1=2, axis2=3), rtol=1e-10, atol=1e-10)
    for i, c in enumerate((0, 1)):
        d1, d2 = _finite_differences(fn, x, c, 1e-4)
        # Cubic splines are C² at their knots: the stencil's error is h² (first) and h (second)
        # times the jump of the third derivative where a knot of some layer falls within 2h.
        np.testing.assert_allclose(d.first[..., i], d1, atol=1e-6 * np.abs(d1).max())
        np.testing.assert_allclose(d.second[..., i], d2, atol=1e-3 * np.abs(d2).max())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_layer_derivatives_equal_scipy_analytic_bspline_derivatives(strategy):
    layer = KANLinear(1, grid_size=7, spline_order=3, spline_strategy=strategy)
    x = jnp.linspace(-0.97, 0.97, 41)[:, None]
    variables = layer.init(jax.random.key(3), x)
    params = dict(variables["params"])
    params["spline_weight"] = jax.random.normal(jax.random.key(4), params["spline_weight"].shape, jnp.float64)
    fn = lambda z: layer.apply({"params": params, "grid": variables["grid"]}, z)
    d = input_derivatives(fn, x, first=(0,), second=(0,))
    # Independent reference: scipy's BSpline on the same knots and coefficients, and SiLU by hand.
    knots = np.asarray(variables["grid"]["grid"][0])
    coef = np.asarray(scaled_spline_weight(params))[0, :, 0]
    spline = BSpline(knots, coef, 3)
    xs = np.asarray(x[:, 0])
    s = 1 / (1 + np.exp(-xs))
    w = float(params["base_weight"][0, 0])
    silu1 = s * (1 + xs * (1 - s))
    silu2 = s * (1 - s) * (2 + xs * (1 - 2 * s))
    np.testing.assert_allclose(d.first[:, 0, 0], w * silu1 + spline.derivative(1)(xs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d.second[:, 0, 0], w * silu2 + spline.derivative(2)(xs), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("strategy, order", [pytest.param("dense", 1, marks=pytest.mark.slow),
                                             pytest.param("dense", 2, marks=pytest.mark.slow), ("dense", 3),
                                             pytest.param("unrolled", 3, marks=pytest.mark.slow),
                                             pytest.param("local", 3, marks=pytest.mark.slow)])
def test_one_pass_kan_derivatives_equal_nested_forward_mode(strategy, order):
    model = KAN([2, 3, 2], grid_size=6, spline_order=order, spline_strategy=strategy)
    x = jax.random.uniform(jax.random.key(order), (48, 2), jnp.float64, -1.3, 1.3)   # some outside the grid
    variables = model.init(jax.random.key(1), x)
    leaves, tree = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.key(2), len(leaves))
    variables = {"params": jax.tree.unflatten(tree, [jax.random.normal(k, l.shape, jnp.float64) for k, l in zip(keys, leaves)]),
                 "grid": variables["grid"]}
    ref = jax.jit(lambda v: input_derivatives(lambda z: model.apply(v, z), x, first=(1, 0), second=(1,)))(variables)
    got = jax.jit(lambda v: kan_input_derivatives(model, v, x, first=(1, 0), second=(1,)))(variables)
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.abs(b).max()))
    # Its parameter gradient is the nested forward mode's too.
    loss = lambda f: lambda p: jnp.sum(f({"params": p, "grid": variables["grid"]}).second ** 2)
    g_ref = jax.jit(jax.grad(loss(lambda v: input_derivatives(lambda z: model.apply(v, z), x, second=(1,)))))(variables["params"])
    g_got = jax.jit(jax.grad(loss(lambda v: kan_input_derivatives(model, v, x, second=(1,)))))(variables["params"])
    for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * float(jnp.abs(b).max()))
    with pytest.raises(ValueError, match="must be a kan_jax.KAN"):
        kan_input_derivatives(KANLinear(1), variables, x, first=(0,))
    with pytest.raises(ValueError, match="must have 2 coordinates"):
        kan_input_derivatives(model, variables, x[:, :1], first=(0,))


def test_manufactured_solution_has_zero_residual():
    """u = e^{-t} sin(πx) solves u_t = u_xx + e^{-t} (π² − 1) sin(πx) exactly."""
    u = lambda z: jnp.exp(-z[:, 0]) * jnp.sin(jnp.pi * z[:, 1])
    z = jnp.asarray(sobol_points(256, [(0.0, 1.0), (0.0, 1.0)], dtype=np.float64))
    d = input_derivatives(u, z, first=(0,), second=(1,))
    source = jnp.exp(-z[:, 0]) * (jnp.pi ** 2 - 1) * jnp.sin(jnp.pi * z[:, 1])
    residual = d.first[:, 0, 0] - d.second[:, 0, 0] - source
    assert d.value.shape == (256, 1) and float(jnp.abs(residual).max()) < 1e-13


def test_derivatives_compose_with_jit_and_parameter_gradients():
    model = KAN([2, 4, 1], grid_size=4, spline_strategy="dense")
    x = jax.random.uniform(jax.random.key(0), (32, 2), jnp.float64, -1, 1)
    variables = model.init(jax.random.key(1), x)
    variables = {"params": jax.tree.map(lambda a: a.astype(jnp.float64), variables["params"]),
                 "grid": variables["grid"]}

    def loss(params):
        d = input_derivatives(lambda z: model.apply({"params": params, "grid": variables["grid"]}, z), x,
                              first=(0,), second=(1,))
        return jnp.mean((d.first[..., 0] - 0.1 * d.second[..., 0] + d.value) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))  # one program for the gradient and the values
    _, g = value_and_grad(variables["params"])
    v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape, a.dtype), variables["params"])
    eps = 1e-6
    plus, _ = value_and_grad(jax.tree.map(lambda p, t: p + eps * t, variables["params"], v))
    minus, _ = value_and_grad(jax.tree.map(lambda p, t: p - eps * t, variables["params"], v))
    directional = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    assert float(directional) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-6)


def test_first_only_and_empty_requests_and_bad_input():
    u = lambda z: z[:, :1] ** 3 + z[:, 1:] * z[:, :1]
    x = jnp.array([[2.0, 5.0], [1.0, -1.0]])
    d = input_derivatives(u, x, first=(1, 0))
    np.testing.assert_allclose(d.first[:, 0], [[2.0, 12.0 + 5.0], [1.0, 3.0 - 1.0]])
    assert d.second.shape == (2, 1, 0)
    assert input_derivatives(lambda z: z[:, 0] ** 2, x, second=(0,)).second[:, 0, 0].tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match=r"first must list input coordinates in \[0, 2\)"):
        input_derivatives(u, x, first=(2,))
    with pytest.raises(ValueError, match="twice"):
        input_derivatives(u, x, second=(0, 0))
    with pytest.raises(ValueError, match=r"shape \(B, in\)"):
        input_derivatives(u, x[0], first=(0,))


def test_sobol_and_grid_points():
    bounds = [(0.0, 1.0), (-1.0, 3.0)]
    p = sobol_points(1024, bounds, seed=7)
    assert p.shape == (1024, 2) and p.dtype == np.float32
    assert np.all(p >= [0, -1]) and np.all(p <= [1, 3])
    np.testing.assert_array_equal(p, sobol_points(1024, bounds, seed=7))
    assert not np.array_equal(p, sobol_points(1024, bounds, seed=8))
    # Low discrepancy: every one of the 16 × 16 cells of the box holds exactly 1024 / 256 points.
    cells = np.floor((p - [0, -1]) / [1 / 16, 4 / 16]).astype(int)
    counts = np.bincount(cells[:, 0] * 16 + cells[:, 1], minlength=256)
    assert counts.min() == counts.max() == 4
    g = grid_points(bounds, (3, 1))
    np.testing.assert_allclose(g, [[0, -1], [0.5, -1], [1, -1]])
    assert grid_points(bounds, (4, 5)).shape == (20, 2)
    with pytest.raises(ValueError, match="lo < hi"):
        sobol_points(8, [(1.0, 0.0)])
    with pytest.raises(ValueError, match="one int >= 1 per coordinate"):
        grid_points(bounds, (3,))
    with pytest.raises(ValueError, match="num must be"):
        sobol_points(0, bounds)


def test_resampling_probabilities_and_draws():
    r = jnp.array([0.0, 1.0, 3.0, -4.0])
    ref = np.abs(np.asarray(r)) ** 2 / np.mean(np.abs(np.asarray(r)) ** 2) + 0.5
    np.testing.assert_allclose(resampling_probabilities(r, 2.0, 0.5), ref / ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(resampling_probabilities(jnp.zeros(5)), np.full(5, 0.2))
    # Candidates on [0, 1]; the residual lives on the right half only: draws follow it.
    candidates = jnp.linspace(0, 1, 4000)[:, None]
    residual = jnp.where(candidates[:, 0] > 0.5, 1.0, 0.0)
    drawn = resample(jax.random.key(0), candidates, residual, 1000, exponent=1.0, offset=0.1)
    assert drawn.shape == (1000, 1) and np.unique(np.asarray(drawn)).size == 1000
    right = float(jnp.mean(drawn[:, 0] > 0.5))
    # p(right) per candidate = (2 + 0.1) / (2 + 0.2) before depletion; without replacement it is a bit lower.
    assert 0.85 < right < 0.97
    with pytest.raises(ValueError, match="one row per candidate"):
        resample(jax.random.key(0), candidates, residual[:10], 5)
    with pytest.raises(ValueError, match=r"num must be in \[1, 4000\]"):
        resample(jax.random.key(0), candidates, residual, 5000)


def test_rba_weights_follow_the_formula_are_bounded_and_not_differentiated():
    rng = np.random.default_rng(0)
    w = jnp.ones(50)
    r = jnp.asarray(rng.normal(size=50))
    ref = 0.9 * np.ones(50) + 0.05 * np.abs(np.asarray(r)) / np.abs(np.asarray(r)).max()
    np.testing.assert_allclose(rba_update(w, r, 0.9, 0.05), ref, rtol=1e-12)
    for _ in range(500):
        w = rba_update(w, r, 0.9, 0.05)
    assert float(w.max()) <= 0.05 / (1 - 0.9) + 1e-9
    np.testing.assert_allclose(w[jnp.argmax(jnp.abs(r))], 0.5, rtol=1e-6)   # the fixed point η / (1 − γ)
    g = jax.grad(lambda res: rba_weighted_mse(w, res))(r)
    np.testing.assert_allclose(g, 2 * np.asarray(w) ** 2 * np.asarray(r) / 50, rtol=1e-12)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        rba_update(w, r, 1.0)
    with pytest.raises(ValueError, match="same shape"):
        rba_update(w, r[:3])
