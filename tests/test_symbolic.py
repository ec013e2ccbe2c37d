"""kan_jax.interpret.symbolic: the c f(a x + b) + d fit recovers known constants of every library function
on noiseless data (compared through each function's hand-derived invariants), the formula of a
fully snapped network equals the hand-composed SymPy expression, users' own functions, rounding.

All fits share one library, hence one compiled fitting program.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

from kan_jax import KAN
from kan_jax import interpret as I
from kan_jax.interpret import symbolic as S

LIB = S.get_library(list(S.LIBRARY) + [S.make_function("sinh", jnp.sinh, sympy.sinh, 3)])


def _sin_canon(a, b, c, d):
    if a < 0:
        a, b, c = -a, -b, -c
    if c < 0:
        b, c = b + math.pi, -c
    return (a, (b + math.pi) % (2 * math.pi) - math.pi, c, d)


def _cos_canon(a, b, c, d):
    return _sin_canon(a, b + math.pi / 2, c, d)


def _odd(a, b, c, d):  # f(-u) = -f(u)
    s = math.copysign(1.0, a)
    return (abs(a), s * b, s * c, d)


# Invariants of (a, b, c, d) under the symmetries of c f(a x + b) + d (hand derivations):
INVARIANTS = {
    "x": lambda a, b, c, d: (c * a, c * b + d),
    "x^2": lambda a, b, c, d: (c * a**2, b / a, d),
    "x^3": lambda a, b, c, d: (c * a**3, b / a, d),
    "x^4": lambda a, b, c, d: (c * a**4, b / a, d),
    "1/x": lambda a, b, c, d: (c / a, b / a, d),
    "exp": lambda a, b, c, d: (a, c * math.exp(b), d),
    "log": lambda a, b, c, d: (c, math.copysign(1, a), b / a, d + c * math.log(abs(a))),
    "sqrt": lambda a, b, c, d: (c * math.sqrt(abs(a)), math.copysign(1, a), b / a, d),
    "tanh": _odd,
    "sinh": _odd,
    "sin": _sin_canon,
    "cos": _cos_canon,
    "abs": lambda a, b, c, d: (c * abs(a), b / a, d),
    "gaussian": lambda a, b, c, d: (abs(a), math.copysign(1, a) * b, c, d),
}

TRUE = {  # (a, b, c, d) inside the grid-search box, singularities outside [-1, 1]
    "x": (2.0, 0.5, 1.5, 0.2),
    "x^2": (1.3, 0.4, 2.0, -1.0),
    "x^3": (1.2, -0.3, 0.9, 0.1),
    "x^4": (1.1, 0.2, 0.7, -0.3),
    "1/x": (1.5, 2.5, 1.0, 0.2),
    "exp": (1.5, 0.2, 0.7, 0.1),
    "log": (1.0, 2.0, 1.3, 0.5),
    "sqrt": (-1.5, 2.0, 0.8, 0.1),
    "tanh": (2.5, -0.4, 1.2, 0.3),
    "sinh": (1.7, 0.3, 0.6, -0.4),
    "sin": (3.0, 0.5, 1.5, 0.2),
    "cos": (2.0, 0.3, -1.0, 0.1),
    "abs": (2.0, 0.4, 1.5, 0.1),
    "gaussian": (1.7, 0.3, 1.1, -0.2),
}


def test_library_covers_the_issue_list():
    for name in ("x", "x^2", "x^3", "x^4", "1/x", "exp", "log", "sqrt", "tanh", "sin", "abs", "gaussian"):
        assert name in S.LIBRARY
    assert set(TRUE) == {f.name for f in LIB}


def test_fit_recovers_known_constants_of_every_function():
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (len(LIB), 400))
    fns = {f.name: f for f in LIB}
    for e, (name, (a, b, c, d)) in enumerate(TRUE.items()):
        f = fns[name]
        y = c * np.asarray(f.jax(jnp.asarray(a * x[e] + b))) + d
        theta, r2 = S.fit_affine(x[e], y, f, library=LIB)
        theta = tuple(float(t) for t in theta)
        assert float(r2) > 1 - 1e-12, (name, float(r2))
        np.testing.assert_allclose(INVARIANTS[name](*theta), INVARIANTS[name](a, b, c, d), rtol=1e-6, atol=1e-7, err_msg=name)
        # and the curve on fresh points
        xt = rng.uniform(-1, 1, 100)
        yt = c * np.asarray(f.jax(jnp.asarray(a * xt + b))) + d
        yp = theta[2] * np.asarray(f.jax(jnp.asarray(theta[0] * xt + theta[1]))) + theta[3]
        np.testing.assert_allclose(yp, yt, rtol=1e-8, atol=1e-8, err_msg=name)


def test_fit_is_vmapped_over_edges_and_ranks_the_true_function_first():
    rng = np.random.default_rng(13)
    x = rng.uniform(-1, 1, (3, 300))
    y = np.stack([np.sin(2.0 * x[0] + 0.1), x[1] ** 2 * 0.5 - 0.2, np.exp(x[2])])
    theta, r2 = S.fit_affine(x, y, "sin", library=LIB)
    assert theta.shape == (3, 4) and r2.shape == (3,)
    assert float(r2[0]) > 1 - 1e-12 and float(r2[1]) < 0.999999
    # suggest_symbolic on an edge snapped to x^2 ranks x^2 first (simplest exact fit)
    _, _, net = _net((2, 1))
    net, _ = S.fix_symbolic(net, None, 0, 0, 0, "x^2", params=(1.0, 0.3, 0.5, -0.2))
    ranking = S.suggest_symbolic(net, jnp.asarray(x[:2].T), 0, 0, 0, LIB)
    assert ranking[0]["name"] == "x^2" and ranking[0]["r2"] > 1 - 1e-12


def _net(widths, seed=0):
    model = KAN(widths, param_dtype=jnp.float64)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, widths[0]), jnp.float64))
    return model, variables, I.from_linen(model, variables)


def test_formula_of_a_fully_fixed_network_equals_the_hand_composed_expression():
    _, _, net = _net((2, 2, 1), seed=14)
    edges = {  # (layer, out, in): (name, a, b, c, d)
        (0, 0, 0): ("sin", 3.0, 0.1, 1.0, 0.0),
        (0, 0, 1): ("x^2", 1.0, 0.0, 1.0, 0.5),
        (0, 1, 0): ("x", 1.0, 0.0, 2.0, -1.0),
        (0, 1, 1): ("exp", 0.5, 0.0, 1.0, 0.0),
        (1, 0, 0): ("exp", 1.0, 0.0, 1.0, 0.0),
        (1, 0, 1): ("tanh", 2.0, 0.0, 3.0, 0.25),
    }
    for (l, o, i), (name, *p) in edges.items():
        net, _ = S.fix_symbolic(net, None, l, o, i, name, params=p)
    x1, x2 = sympy.symbols("x1 x2")
    h0 = sympy.sin(3 * x1 + sympy.Rational(1, 10)) + x2**2 + sympy.Rational(1, 2)
    h1 = 2 * x1 - 1 + sympy.exp(x2 / 2)
    hand = sympy.exp(h0) + 3 * sympy.tanh(2 * h1) + sympy.Rational(1, 4)
    (got,) = S.symbolic_formula(net)
    _assert_same_expression(got, hand)
    # and the network computes the formula
    x = np.random.default_rng(15).uniform(-1, 1, (50, 2))
    f = sympy.lambdify((x1, x2), hand, "numpy")
    np.testing.assert_allclose(np.asarray(I.apply(net.params, net.state, jnp.asarray(x), net.spec))[:, 0], f(x[:, 0], x[:, 1]), rtol=1e-12)
    # pruned edges drop out of the formula
    state = [dict(s) for s in net.state]
    state[1]["mask"] = state[1]["mask"].at[0, 1].set(0.0)
    (pruned,) = S.symbolic_formula(I.KANNet(net.params, state, net.spec), ["x1", "x2"])
    _assert_same_expression(pruned, sympy.exp(h0))


def _assert_same_expression(got, hand):
    """Same variables, same elementary functions, equal values at random points (SymPy's
    ``exp(u + 0.5) -> 1.648721 exp(u)`` evaluation makes exact structural equality too strict)."""
    assert got.free_symbols == hand.free_symbols
    kinds = lambda e: sorted(type(f).__name__ for f in e.atoms(sympy.Function))  # noqa: E731
    assert kinds(got) == kinds(hand)
    rng = np.random.default_rng(17)
    for _ in range(10):
        point = {v: float(rng.uniform(-1, 1)) for v in hand.free_symbols}
        want = float(hand.evalf(30, subs=point))
        assert abs(float(got.evalf(30, subs=point)) - want) <= 1e-12 * max(1.0, abs(want))


def test_snapped_edges_stay_trainable_and_numeric_edges_block_the_formula():
    _, _, net = _net((1, 1), seed=16)
    x = jnp.linspace(-1, 1, 64)[:, None]
    with pytest.raises(ValueError, match=r"alive numeric edges \(out, in\) \[\(0, 0\)\]"):
        S.symbolic_formula(net)
    net, _ = S.fix_symbolic(net, None, 0, 0, 0, "sin", params=(2.0, 0.0, 1.0, 0.0))
    y = 1.5 * jnp.sin(2.5 * x) + 0.3
    trained, hist = I.train_adam(net, x, y, 500, lr=2e-2)
    assert hist[1] < 1e-3 * hist[0]
    a, b, c, d = np.asarray(trained.params[0]["affine"][0, 0])
    np.testing.assert_allclose(_sin_canon(a, b, c, d), _sin_canon(2.5, 0.0, 1.5, 0.3), atol=2e-2)


def test_round_floats_and_errors():
    x = sympy.Symbol("x")
    assert str(S.round_floats(sympy.Float(1.00009999, 15) * x + sympy.Float(2.0000000001, 15), 4)) == "1.0001*x + 2"
    assert str(S.round_floats(sympy.sin(sympy.Float(3.14159265, 15) * x), 2)) == "sin(3.14*x)"
    with pytest.raises(ValueError, match="unknown symbolic function 'cosh'"):
        S.get_library(["cosh"])
    _, _, net = _net((2, 1))
    with pytest.raises(ValueError, match=r"edge \(o=1, i=0\) out of range for layer 0 of shape \(out=1, in=2\)"):
        S.fix_symbolic(net, None, 0, 1, 0, "x", params=(1, 0, 1, 0))


def _numeric_chain(h, g_of_x, grid_size=20, n=400):
    """A numeric [1, 1, 1] KAN whose hidden node is a chain x -> h(x) -> g: both edges are cubic
    splines (no base branch) fitted to h(x) and to the pairs (h(x), g_of_x(x)), so g(h(x)) ~ g_of_x(x)."""
    from kan_jax import splines

    model = KAN((1, 1, 1), grid_size=grid_size, param_dtype=jnp.float64)
    net = I.from_linen(model, model.init(jax.random.PRNGKey(18), jnp.zeros((1, 1), jnp.float64)))
    x = jnp.linspace(-1.0, 1.0, n)[:, None]
    params, state = [dict(p) for p in net.params], [dict(s) for s in net.state]
    z, values = x, (h(x), g_of_x(x))
    for l in range(2):
        grid = splines.adaptive_grid(z, grid_size, 3, grid_eps=1.0)
        params[l]["base_weight"] = jnp.zeros_like(params[l]["base_weight"])
        params[l]["spline_weight"] = splines.fit_spline_coefficients(z, values[l][:, :, None], grid, 3)
        if "spline_scaler" in params[l]:
            params[l]["spline_scaler"] = jnp.ones_like(params[l]["spline_scaler"])
        state[l]["grid"] = grid
        z = values[l]
    return I.KANNet(params, state, net.spec), x


def test_chain_nodes_finds_single_input_single_output_numeric_hidden_nodes():
    _, _, net = _net((2, 4, 1), seed=19)
    state = [dict(s) for s in net.state]
    # node 0: only x1 in, one out -> chain; node 1: x1 and x2 in -> not; node 2: only x2 in but
    # that edge snapped -> not; node 3: no input alive (pruned) -> not
    state[0]["mask"] = jnp.asarray([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    state[0]["symbolic"] = state[0]["symbolic"].at[2, 1].set(1.0)
    assert S.chain_nodes(I.KANNet(net.params, state, net.spec)) == [(0, 0, 0, 0)]
    state[1]["mask"] = state[1]["mask"].at[0, 0].set(0.0)  # node 0's output pruned: no longer a chain
    assert S.chain_nodes(I.KANNet(net.params, state, net.spec)) == []


@pytest.mark.slow
def test_auto_symbolic_merges_a_chain_whose_composite_is_a_library_function():
    # h(x) = x^3 + x and g = sin(pi h^-1(u)) are not library functions; g o h = sin(pi x) is.
    net, x = _numeric_chain(lambda x: x**3 + x, lambda x: jnp.sin(jnp.pi * x))
    y = np.sin(np.pi * np.asarray(x))
    assert np.max(np.abs(np.asarray(I.apply(net.params, net.state, x, net.spec)) - y)) < 5e-3  # the chain is built
    separate, rep_sep = S.auto_symbolic(net, x, LIB, merge_chains=False)
    assert [r["name"] for r in rep_sep][0] != "sin" and not any(r.get("merged") for r in rep_sep)
    merged, rep = S.auto_symbolic(net, x, LIB)
    assert [(r["layer"], r["name"], r.get("merged")) for r in rep] == [(0, "sin", True), (1, "x", True)]
    assert rep[0]["r2"] > 1 - 1e-6 > rep[0]["chain_r2"]
    a, b, c, d = rep[0]["params"]
    np.testing.assert_allclose(_sin_canon(a, b, c, d), _sin_canon(math.pi, 0.0, 1.0, 0.0), atol=1e-2)
    assert rep[1]["params"] == [1.0, 0.0, 1.0, 0.0]
    err = lambda n: float(np.sqrt(np.mean((np.asarray(I.apply(n.params, n.state, x, n.spec)) - y) ** 2)))  # noqa: E731
    assert err(merged) < 1e-3 < err(separate)
    (formula,) = S.symbolic_formula(merged, digits=2)
    assert {type(f).__name__ for f in formula.atoms(sympy.Function)} == {"sin"}


def test_auto_symbolic_keeps_a_chain_of_two_library_functions():
    # h = x^2 and g = exp are library functions: exp(x^2) is better snapped as the chain
    net, x = _numeric_chain(lambda x: x**2, lambda x: jnp.exp(x**2))
    snapped, rep = S.auto_symbolic(net, x, LIB)
    assert [(r["name"], r.get("merged")) for r in rep] == [("x^2", None), ("exp", None)]


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_and_cos_fits_are_canonical(name):
    # any (a, b) is reported as a > 0, |b| <= pi/2 (c's sign absorbs the half periods)
    f = S.LIBRARY[name]
    x = np.random.default_rng(20).uniform(-1, 1, 300)
    for a, b, c in [(-3.0, 9.5, 1.5), (2.0, -7.0, -0.5), (2.5, 2.0, 1.0)]:
        y = c * np.asarray(f.jax(jnp.asarray(a * x + b))) + 0.3
        theta, r2 = S.fit_affine(x, y, name, library=LIB)
        ta, tb, tc, td = (float(t) for t in theta)
        assert float(r2) > 1 - 1e-12 and ta > 0 and abs(tb) <= math.pi / 2 + 1e-12
        np.testing.assert_allclose(tc * np.asarray(f.jax(jnp.asarray(ta * x + tb))) + td, y, atol=1e-8)


def test_formula_uses_canonical_constants_before_rounding():
    # trained constants drift along directions that leave the edge unchanged: c (a x)^2 with
    # c a^2 = 1, sin(u + 2 pi); the formula shows the edge, not the drift
    _, _, net = _net((2, 1), seed=21)
    net, _ = S.fix_symbolic(net, None, 0, 0, 0, "x^2", params=(0.999959, 1e-12, 1.0 / 0.999959**2, 0.0))
    net, _ = S.fix_symbolic(net, None, 0, 0, 1, "sin", params=(-2.0, -2 * math.pi, -1.0, 0.0))
    assert str(S.symbolic_formula(net, digits=4)[0]) == "x1**2 + sin(2*x2)"
