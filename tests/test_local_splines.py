"""Local-support B-splines, the spline-branch strategies and their cost rule, the layer initialisation.

References: a scalar Cox-de Boor recursion in float64 written from the definition (0/0 := 0,
so repeated knots are allowed), NumPy least squares, finite differences, and each strategy
against the other.
"""
from __future__ import annotations

import dataclasses
import math
import re

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from kan_jax import KAN, KANLinear, layer, splines
from kan_jax.layer import StrategyThresholds
from kan_jax.layer import init as layer_init
from kan_jax.nnx import KAN as NNXKAN


def cox_de_boor(x: float, knots: np.ndarray, j: int, p: int) -> float:
    """B_{j,p}(x) by the recursive definition, scalar float64, with 0/0 := 0."""
    if p == 0:
        return 1.0 if knots[j] <= x < knots[j + 1] else 0.0
    out = 0.0
    den = knots[j + p] - knots[j]
    if den > 0:
        out += (x - knots[j]) / den * cox_de_boor(x, knots, j, p - 1)
    den = knots[j + p + 1] - knots[j + 1]
    if den > 0:
        out += (knots[j + p + 1] - x) / den * cox_de_boor(x, knots, j + 1, p - 1)
    return out


def oracle_bases(x: np.ndarray, grid: np.ndarray, k: int) -> np.ndarray:
    """All bases, shape (B, in, n), from :func:`cox_de_boor`."""
    n = grid.shape[1] - k - 1
    return np.array(
        [[[cox_de_boor(x[b, i], grid[i], j, k) for j in range(n)] for i in range(grid.shape[0])] for b in range(x.shape[0])]
    )


def grids_for(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A uniform grid, a random non-uniform one, one with repeated knots, and a quantile grid."""
    G = 6
    M = G + 2 * k + 1
    uniform = np.asarray(splines.uniform_grid(G, k, (-1.0, 1.0), in_features=2, dtype=jnp.float64))
    random = np.sort(rng.uniform(-1.5, 1.5, size=(2, M)), axis=1)
    repeated = random.copy()
    repeated[:, M // 2] = repeated[:, M // 2 - 1]  # a zero-width interval in the middle
    samples = rng.normal(0.2, 0.4, size=(300, 2))
    quantile = np.asarray(splines.adaptive_grid(jnp.asarray(samples), G, k, grid_eps=0.02, margin=0.01))
    return {"uniform": uniform, "random": random, "repeated": repeated, "quantile": quantile}


def probe_points(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random points over and beyond each row, every knot exactly, and far outside: (P, in)."""
    cols = []
    for row in grid:
        span = row[-1] - row[0]
        pts = np.concatenate(
            [rng.uniform(row[0] - 0.2 * span, row[-1] + 0.2 * span, 40), row, [row[0], row[-1], -1e6, 1e6]]
        )
        cols.append(pts)
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 5])
def test_local_bases_equal_scalar_cox_de_boor(k):
    rng = np.random.default_rng(10 + k)
    for name, grid in grids_for(k, rng).items():
        x = probe_points(grid, rng)
        start, values = splines.local_bases(jnp.asarray(x), jnp.asarray(grid), k)
        start, values = np.asarray(start), np.asarray(values)
        want = oracle_bases(x, grid, k)
        n = grid.shape[1] - k - 1
        assert values.dtype == np.float64 and values.shape == x.shape + (k + 1,)
        assert start.min() >= 0 and start.max() <= n - k - 1, name
        # The window holds the oracle's values; every basis outside the window is zero.
        placed = np.zeros_like(want)
        for q in range(k + 1):
            np.put_along_axis(placed, (start + q)[..., None], values[..., q : q + 1], axis=-1)
        np.testing.assert_allclose(placed, want, rtol=0, atol=1e-12, err_msg=name)
        # The dense bases built from the local values agree too.
        dense = np.asarray(splines.b_spline_bases(jnp.asarray(x), jnp.asarray(grid), k))
        np.testing.assert_allclose(dense, want, rtol=0, atol=1e-12, err_msg=name)
        # So do the bases of the recursion unrolled over the bases (small grids).
        unrolled = np.asarray(splines.unrolled_bases(jnp.asarray(x), jnp.asarray(grid), k))
        np.testing.assert_allclose(unrolled, want, rtol=0, atol=1e-12, err_msg=name)
        # And the flat (B, in * n) matrix of the dense product, written by one scatter.
        flat = np.asarray(splines.basis_matrix(jnp.asarray(x), jnp.asarray(grid), k))
        np.testing.assert_allclose(flat, want.reshape(x.shape[0], -1), rtol=0, atol=1e-12, err_msg=name)


def test_basis_matrix_gradient_and_shape_errors():
    # d/dx of sum(c * basis_matrix(x)) (the dense branch of a hidden layer) against the 3-D bases.
    k = 3
    grid = jnp.asarray(grids_for(k, np.random.default_rng(6))["random"])
    x = jnp.asarray(np.random.default_rng(7).uniform(-1.0, 1.0, size=(9, 2)))
    c = jnp.asarray(np.random.default_rng(8).normal(size=(2, grid.shape[1] - k - 1)))
    g_flat = jax.grad(lambda v: jnp.sum(splines.basis_matrix(v, grid, k) * c.reshape(-1)))(x)
    g_dense = jax.grad(lambda v: jnp.sum(splines.b_spline_bases(v, grid, k) * c))(x)
    np.testing.assert_allclose(np.asarray(g_flat), np.asarray(g_dense), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(B, in\), got \(2, 9, 2\)"):
        splines.basis_matrix(jnp.stack([x, x]), grid, k)


def test_find_intervals_matches_numpy_searchsorted():
    rng = np.random.default_rng(0)
    grid = np.sort(rng.uniform(-1, 1, size=(3, 12)), axis=1)
    grid[1, 4:7] = grid[1, 4]  # repeated knots
    x = np.concatenate([rng.uniform(-1.2, 1.2, size=(50, 3)), grid.T], axis=0)
    got = np.asarray(splines.find_intervals(jnp.asarray(x), jnp.asarray(grid)))
    want = np.stack([np.searchsorted(grid[i], x[:, i], side="right") - 1 for i in range(3)], axis=1)
    np.testing.assert_array_equal(got, want)


def test_local_bases_gradient_matches_finite_differences_and_dense():
    k = 3
    grid = jnp.asarray(grids_for(k, np.random.default_rng(3))["random"])
    x = jnp.asarray(np.random.default_rng(4).uniform(-1.0, 1.0, size=(16, 2)))
    c = jnp.asarray(np.random.default_rng(5).normal(size=(2, grid.shape[1] - k - 1)))

    def spline_local(v):
        start, values = splines.local_bases(v, grid, k)
        coeff = jnp.take_along_axis(c[None], start[..., None] + jnp.arange(k + 1), axis=-1)
        return jnp.sum(values * coeff)

    def spline_dense(v):
        return jnp.sum(splines.b_spline_bases(v, grid, k) * c)

    g_local = np.asarray(jax.grad(spline_local)(x))
    g_dense = np.asarray(jax.grad(spline_dense)(x))
    eps = 1e-6
    fd = np.zeros_like(g_local)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            e = jnp.zeros_like(x).at[b, i].set(eps)
            fd[b, i] = (float(spline_dense(x + e)) - float(spline_dense(x - e))) / (2 * eps)
    np.testing.assert_allclose(g_local, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g_local, g_dense, rtol=1e-10, atol=1e-12)


def layer_params(key, in_f, out_f, grid_size, k, scaler=True, dtype=jnp.float64):
    config = layer.KANLayerConfig(grid_size=grid_size, spline_order=k, enable_standalone_scale_spline=scaler, param_dtype=dtype)
    params, grid = layer.init_layer(key, in_f, out_f, config)
    params["spline_weight"] = jax.random.normal(jax.random.fold_in(key, 1), params["spline_weight"].shape, dtype)
    # A non-uniform grid, as after update_grid.
    x = jax.random.normal(jax.random.fold_in(key, 2), (200, in_f), dtype) * 0.5
    grid = splines.adaptive_grid(x, grid_size, k, grid_eps=0.02, margin=0.01)
    return params, grid


def numpy_spline_branch(params, grid, x, k):
    """Float64 NumPy reference of the spline branch from the oracle bases."""
    bases = oracle_bases(np.asarray(x), np.asarray(grid), k)  # (B, in, n)
    w = np.asarray(params["spline_weight"])  # (in, n, out)
    if "spline_scaler" in params:
        w = w * np.asarray(params["spline_scaler"])[:, None, :]  # (in, out)
    return np.einsum("bij,ijo->bo", bases, w)


@pytest.mark.parametrize("out_f", [4, 40])
@pytest.mark.parametrize("scaler", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_strategies_agree_with_reference_values_and_gradients(k, scaler, out_f):
    params, grid = layer_params(jax.random.key(k), 5, out_f, 7, k, scaler)
    x = jax.random.uniform(jax.random.key(9), (33, 5), jnp.float64, -1.6, 1.6)  # some outside the grid
    want = numpy_spline_branch(params, grid, x, k)
    branch = jax.jit(layer.spline_branch, static_argnums=(3, 4))  # one program each: compiles faster than op by op
    # "local" in blocks of 1 input (the windows of all 5 take more than four blocks).
    blocked = StrategyThresholds(local_block_bytes=33 * (k + 1) * out_f * 8)
    for strategy, rule in (("unrolled", None), ("dense", None), ("local", None), ("local", blocked)):
        got = np.asarray(branch(params, grid, x, strategy, rule))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{strategy} {rule}")
    # The per-edge outputs: summed over the inputs, the branch; each edge against the oracle.
    edges = np.asarray(layer.edge_outputs(params, grid, x))
    assert edges.shape == (33, 5, out_f)
    np.testing.assert_allclose(edges.sum(axis=1), want, rtol=0, atol=1e-12)
    w = np.asarray(layer.scaled_spline_weight(params))
    np.testing.assert_allclose(edges, np.einsum("bij,ijo->bio", oracle_bases(np.asarray(x), np.asarray(grid), k), w), atol=1e-12)

    def loss(p, v, strategy, rule=None):
        return jnp.sum(jnp.sin(layer.spline_branch(p, grid, v, strategy, rule)))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=(2, 3))
    g_dense, g_local, g_unrolled = (grad(params, x, strategy) for strategy in ("dense", "local", "unrolled"))
    for a, b in zip(jax.tree.leaves(grad(params, x, "local", blocked)), jax.tree.leaves(g_dense)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    for a, b, c in zip(jax.tree.leaves(g_dense), jax.tree.leaves(g_local), jax.tree.leaves(g_unrolled)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=1e-10, atol=1e-12)
    # Coefficient gradient against the hand derivation: d/dW_ijo sum_b g_bo s_io B_j(x_bi).
    y = numpy_spline_branch(params, grid, x, k)
    bases = oracle_bases(np.asarray(x), np.asarray(grid), k)
    s = np.asarray(params["spline_scaler"]) if scaler else np.ones((5, out_f))
    want_dw = np.einsum("bo,bij,io->ijo", np.cos(y), bases, s)
    np.testing.assert_allclose(np.asarray(g_local[0]["spline_weight"]), want_dw, rtol=1e-10, atol=1e-12)


def test_local_step_memory_is_bounded_by_the_block_size():
    # A training step's temporaries (XLA's buffer assignment, deterministic): the unblocked local
    # branch holds the (B, in, k + 1, out) windows, 16 MiB here; in blocks of 1 MiB it holds a few.
    batch, widths, k = 512, (64, 32), 3
    windows = batch * widths[0] * (k + 1) * widths[1] * 4
    x = jnp.zeros((batch, widths[0]), jnp.float32)

    def temp_bytes(rule):
        model = KANLinear(widths[1], grid_size=5, spline_strategy="local", strategy_thresholds=rule)
        variables = jax.eval_shape(model.init, jax.random.key(0), x)
        loss = lambda p, g: jnp.sum(model.apply({"params": p, "grid": g}, x) ** 2)
        step = jax.jit(jax.grad(loss)).lower(variables["params"], variables["grid"]).compile()
        return step.memory_analysis().temp_size_in_bytes

    whole = temp_bytes(StrategyThresholds(local_block_bytes=2 * windows))
    blocked = temp_bytes(StrategyThresholds(local_block_bytes=2**20))
    assert whole >= windows
    assert blocked <= windows / 4, (blocked, windows)


def test_blocked_local_branch_has_forward_mode_and_hessian_vector_products():
    params, grid = layer_params(jax.random.key(0), 6, 3, 7, 3)
    x = jax.random.uniform(jax.random.key(1), (9, 6), jnp.float64, -1, 1)
    blocked = StrategyThresholds(local_block_bytes=9 * 4 * 3 * 8)  # one input per block
    loss = lambda p, strategy, rule: jnp.sum(jnp.sin(layer.spline_branch(p, grid, x, strategy, rule)))
    v = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)
    hvp = jax.jit(lambda p, s, r: jax.jvp(jax.grad(lambda q: loss(q, s, r)), (p,), (v,))[1], static_argnums=(1, 2))
    for a, b in zip(jax.tree.leaves(hvp(params, "local", blocked)), jax.tree.leaves(hvp(params, "dense", None))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def test_gather_gradient_sums_samples_in_the_same_interval():
    # Every sample falls into one knot interval: the coefficient gradient must be the sum over
    # all of them (a scatter that overwrote instead of adding would keep only one).
    k = 3
    params, _ = layer_params(jax.random.key(0), 3, 2, 10, k)
    grid = splines.uniform_grid(10, k, (-1.0, 1.0), in_features=3, dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(1).uniform(0.21, 0.39, size=(64, 3)))  # inside [0.2, 0.4)
    assert len(np.unique(np.asarray(splines.find_intervals(x, grid)))) == 1
    bases = oracle_bases(np.asarray(x), np.asarray(grid), k)
    want = np.einsum("bij,io->ijo", bases, np.asarray(params["spline_scaler"]))
    for strategy in ("local", "dense", "unrolled"):
        g = jax.grad(lambda p: jnp.sum(layer.spline_branch(p, grid, x, strategy)))(params)["spline_weight"]
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-12, atol=1e-12, err_msg=strategy)
        assert np.count_nonzero(np.asarray(g)[0, :, 0]) == k + 1


def test_layer_strategy_field_and_auto_rule():
    cpu = layer.default_thresholds("cpu")
    small = cpu.unrolled_max_bases
    assert layer.choose_spline_strategy(8, 3, "cpu") == "unrolled"
    assert layer.choose_spline_strategy(small, 3, "cpu") == "unrolled"
    assert layer.choose_spline_strategy(small + 1, 3, "cpu") == "dense"
    assert layer.choose_spline_strategy(8, 3, "gpu") == "dense"  # not measured there: never unrolled
    factor = cpu.dense_max_bases_per_window
    assert layer.choose_spline_strategy(int(factor * 4), 3, "cpu") == "dense"
    assert layer.choose_spline_strategy(int(factor * 4) + 1, 3, "cpu") == "local"
    x = jax.random.uniform(jax.random.key(0), (16, 4), jnp.float32, -1, 1)
    outs, gathers = {}, {}
    for strategy in ("unrolled", "dense", "local", "auto"):
        model = KAN([4, 3, 2], grid_size=5, spline_strategy=strategy)
        variables = model.init(jax.random.key(1), x)
        gathers[strategy] = str(jax.make_jaxpr(model.apply)(variables, x)).count("gather[")
        outs[strategy] = model.apply(variables, x)
    # The local branch gathers coefficient windows (one more gather per layer); the unrolled
    # recursion gathers nothing; auto is what the backend's rule picks at G = 5.
    assert gathers["local"] >= gathers["dense"] + 2 and gathers["unrolled"] == 0
    assert gathers["auto"] == gathers[layer.choose_spline_strategy(5 + 3, 3)]
    np.testing.assert_allclose(np.asarray(outs["local"]), np.asarray(outs["dense"]), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.asarray(outs["unrolled"]), np.asarray(outs["dense"]), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="UNROLLED_MAX_BASES"):  # its program grows with G
        splines.unrolled_bases(x, splines.uniform_grid(splines.UNROLLED_MAX_BASES, 3, in_features=4), 3)
    with pytest.raises(ValueError, match="spline_strategy"):
        KANLinear(3, spline_strategy="sparse")
    with pytest.raises(ValueError, match="spline_strategy"):
        layer.KANLayerConfig(spline_strategy="fast")


def _train_step_size(grid_size: int, strategy: str) -> tuple[int, int]:
    """(jaxpr equations, HLO instructions) of a jitted Adam step of a [6, 4, 3] KAN."""
    model = KAN([6, 4, 3], grid_size=grid_size, spline_strategy=strategy)
    x = jnp.zeros((8, 6), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    tx = optax.adam(1e-3)

    def step(params, opt_state, grid, x, y):
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p, "grid": grid}, x), y).mean()
        )(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = jax.eval_shape(tx.init, variables["params"])
    args = (variables["params"], opt_state, variables["grid"], x, jnp.zeros((8,), jnp.int32))
    jaxpr = jax.make_jaxpr(step)(*args)

    def count(jpr) -> int:
        return sum(1 + sum(count(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params)) for eqn in jpr.eqns)

    hlo = jax.jit(step).lower(*args).as_text()
    return count(jaxpr.jaxpr), len(re.findall(r"^\s*(%\S+ = |\S+ = stablehlo)", hlo, flags=re.M))


@pytest.mark.parametrize("strategy", ["dense", "local"])
def test_program_size_does_not_depend_on_grid_size(strategy):
    small = _train_step_size(5, strategy)
    large = _train_step_size(500, strategy)
    assert small == large and small[0] > 0


def test_banded_fit_is_the_min_norm_least_squares_fit_and_falls_back_where_it_must():
    # The init's fit of a concrete row of distinct interior knots: banded Cholesky factors of
    # A A^T, checked against NumPy's minimum-norm lstsq of the oracle collocation matrix.
    rng = np.random.default_rng(5)
    cases = [(50, 3, "uniform"), (20, 5, "uniform"), (30, 3, "random"), (4, 1, "uniform")]
    for G, k, kind in cases:
        if kind == "uniform":
            knots = np.asarray(splines.uniform_grid(G, k, (-1.0, 2.0), dtype=jnp.float64))
        else:
            knots = np.sort(rng.uniform(-1, 2, G + 2 * k + 1))
        banded = layer_init._host_banded_fit(tuple(knots.tolist()), k)
        assert banded is not None, (G, k, kind)
        a = np.array([[cox_de_boor(t, knots, j, k) for j in range(G + k)] for t in knots[k : G + k + 1]])
        y = rng.standard_normal((G + 1, 7))
        want = np.linalg.lstsq(a, y, rcond=None)[0]
        got = np.asarray(layer_init._apply_fit({name: jnp.asarray(v) for name, v in banded.items()}, jnp.asarray(y)))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max(), err_msg=f"{G} {k} {kind}")
    # Rank-deficient collocation matrices take the dense pseudo-inverse: a repeated interior knot,
    # and order 0 (the last interior knot lies past the last basis).
    knots = np.sort(rng.uniform(-1, 2, 7 + 2 * 3 + 1))
    knots[6] = knots[5]
    assert layer_init._host_banded_fit(tuple(knots.tolist()), 3) is None
    assert layer_init._host_banded_fit(tuple(np.linspace(-1, 1, 9).tolist()), 0) is None
    # A full init through the banded path: the noise's minimum-norm fit at G = 60.
    G, k, key = 60, 3, jax.random.key(6)
    row = splines.uniform_grid(G, k, (-1.0, 1.0), dtype=jnp.float64)
    w = np.asarray(layer.init_spline_weight(key, row, 2, 3, k, scale_noise=0.1, scale=1.0, dtype=jnp.float64))
    noise = (np.asarray(jax.random.uniform(key, (G + 1, 2, 3), jnp.float64)) - 0.5) * 0.1 / G
    knots = np.asarray(row)
    a = np.array([[cox_de_boor(t, knots, j, k) for j in range(G + k)] for t in knots[k : G + k + 1]])
    want = np.stack([np.linalg.lstsq(a, noise[:, i, :], rcond=None)[0] for i in range(2)])  # (in, n, out)
    np.testing.assert_allclose(w, want, rtol=1e-9, atol=1e-13)


def test_thresholds_are_immutable_and_explicit_overrides_change_the_strategy():
    rule = StrategyThresholds(unrolled_max_bases=0, dense_max_bases_per_window=1.0)
    assert layer.choose_spline_strategy(4, 3, thresholds=rule) == "dense"  # n <= 1.0 * (k + 1)
    assert layer.choose_spline_strategy(5, 3, thresholds=rule) == "local"
    assert layer.choose_spline_strategy(5, 3, thresholds=rule.replace(unrolled_max_bases=5)) == "unrolled"
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.unrolled_max_bases = 3
    with pytest.raises(TypeError):
        layer.DEFAULT_STRATEGY_THRESHOLDS["cpu"] = rule
    with pytest.raises(TypeError):
        layer.PARAM_OUTPUT_AXIS["base_weight"] = 1
    with pytest.raises(ValueError, match="strategy_thresholds"):
        layer.KANLayerConfig(strategy_thresholds={"unrolled_max_bases": 0})
    # Through the layer's field: "auto" under a rule compiles what the named strategy compiles.
    x = jax.random.uniform(jax.random.key(0), (16, 4), jnp.float32, -1, 1)

    def gathers(**fields):
        model = KAN([4, 3, 2], grid_size=5, **fields)
        return str(jax.make_jaxpr(model.apply)(model.init(jax.random.key(1), x), x)).count("gather[")

    for rule, strategy in ((StrategyThresholds(unrolled_max_bases=100), "unrolled"), (rule, "local")):
        assert gathers(strategy_thresholds=rule) == gathers(spline_strategy=strategy)
    assert gathers(strategy_thresholds=rule) > gathers(strategy_thresholds=rule.replace(unrolled_max_bases=100))


class KeyProbe(nn.Module):
    """Records the first key a module draws from its "params" stream (the key KANLinear splits)."""

    @nn.compact
    def __call__(self, x):
        return self.param("key", lambda key: jax.random.key_data(key))


@pytest.mark.parametrize("scaler", [True, False])
@pytest.mark.parametrize("strategy", ["auto", "unrolled", "dense", "local"])
def test_linen_init_is_init_layer_with_the_layers_key(strategy, scaler):
    # Linen's per-parameter initialisers draw from the layer's key as init_layer does: the
    # parameters are init_layer's bit for bit, and init's output is the layer's on them.
    config = layer.KANLayerConfig(grid_size=6, spline_strategy=strategy, param_dtype=jnp.float64,
                                  enable_standalone_scale_spline=scaler, scale_spline=0.7)
    key = jax.random.key(11)
    x = jax.random.uniform(jax.random.key(12), (2, 5, 4), jnp.float64, -1.2, 1.2)
    model = KANLinear(3, **{name: getattr(config, name) for name in config.field_names()})
    out, variables = model.init_with_output(key, x)
    layer_key = jax.random.wrap_key_data(KeyProbe().init(key, x)["params"]["key"])
    want_params, want_grid = layer.init_layer(layer_key, 4, 3, config)
    assert set(variables["params"]) == set(want_params)
    for name in want_params:
        np.testing.assert_array_equal(np.asarray(variables["params"][name]), np.asarray(want_params[name]))
    np.testing.assert_array_equal(np.asarray(variables["grid"]["grid"]), np.asarray(want_grid))
    assert out.shape == (2, 5, 3)
    want = layer.layer_apply(want_params, want_grid, x, config)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out), np.asarray(model.apply(variables, x)), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="out_features must be an integer >= 1"):
        layer.init_layer(key, 4, 0, config)


def test_init_matches_numpy_min_norm_fit_of_the_noise():
    # init_spline_weight: minimum-norm least-squares fit of the noise at the G + 1 interior knots.
    k, G, in_f, out_f = 3, 7, 3, 2
    row = splines.uniform_grid(G, k, (-1.0, 2.0), dtype=jnp.float64)
    key = jax.random.key(4)
    w = np.asarray(layer.init_spline_weight(key, row, in_f, out_f, k, scale_noise=0.1, scale=2.0, dtype=jnp.float64))
    noise = (np.asarray(jax.random.uniform(key, (G + 1, in_f, out_f), jnp.float64)) - 0.5) * 0.1 / G
    knots = np.asarray(row)
    interior = knots[k : G + k + 1]
    a = np.array([[cox_de_boor(t, knots, j, k) for j in range(G + k)] for t in interior])
    want = np.stack([np.linalg.lstsq(a, noise[:, i, :], rcond=None)[0] for i in range(in_f)], axis=1)  # (n, in, out)
    np.testing.assert_allclose(w, 2.0 * np.transpose(want, (1, 0, 2)), rtol=1e-9, atol=1e-13)
    # The same fit with the row traced (the pseudo-inverse then computed inside the program).
    traced = jax.jit(lambda r: layer.init_spline_weight(key, r, in_f, out_f, k, 0.1, 2.0, jnp.float64))(row)
    np.testing.assert_allclose(np.asarray(traced), w, rtol=1e-9, atol=1e-13)
    # A concrete non-uniform row with a repeated knot (host pseudo-inverse of a rank-deficient matrix).
    knots = np.sort(np.random.default_rng(1).uniform(-1, 2, G + 2 * k + 1))
    knots[5] = knots[4]
    w = np.asarray(layer.init_spline_weight(key, jnp.asarray(knots), in_f, out_f, k, 0.1, 1.0, jnp.float64))
    a = np.array([[cox_de_boor(t, knots, j, k) for j in range(G + k)] for t in knots[k : G + k + 1]])
    want = np.stack([np.linalg.lstsq(a, noise[:, i, :], rcond=None)[0] for i in range(in_f)], axis=1)
    np.testing.assert_allclose(w, np.transpose(want, (1, 0, 2)), rtol=1e-8, atol=1e-12)


def test_init_layer_draws_are_jax_random_uniform():
    # base_weight and spline_scaler: Kaiming-uniform draws from the first and third key.
    key, in_f, out_f = jax.random.key(9), 5, 3
    params, _ = layer.init_layer(key, in_f, out_f, layer.KANLayerConfig(scale_base=2.0, scale_spline=0.5))
    k_base, _, k_scaler = jax.random.split(key, 3)
    for name, k_, scale in (("base_weight", k_base, 2.0), ("spline_scaler", k_scaler, 0.5)):
        bound = math.sqrt(6.0 / ((1.0 + 5.0 * scale**2) * in_f))
        want = jax.random.uniform(k_, (out_f, in_f), jnp.float32, -bound, bound)  # (out, in) draws
        got = params[name] if name == "base_weight" else params[name].T  # the scaler is stored (in, out)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, err_msg=name)


def test_one_configuration_for_both_fronts():
    config = layer.KANLayerConfig(grid_size=4, spline_order=2, scale_noise=0.0, grid_range=(-2, 2))
    assert config.grid_range == (-2.0, 2.0) and hash(config) == hash(config.replace())
    linen = KAN([3, 2], **{name: getattr(config, name) for name in config.field_names()})
    assert linen.config == config
    model = NNXKAN([3, 2], config=config, rngs=nnx.Rngs(0))
    assert model.layers[0].config == config and model.layers[0].spline_order == 2
    assert NNXKAN([3, 2], rngs=nnx.Rngs(0), grid_size=4).layers[0].config.grid_size == 4
    with pytest.raises(TypeError, match="unknown KAN layer option.*grid_sise"):
        NNXKAN([3, 2], rngs=nnx.Rngs(0), grid_sise=4)
    for bad, match in [
        (dict(grid_size=0), "grid_size"),
        (dict(spline_order=-1), "spline_order"),
        (dict(grid_range=(1.0, 0.0)), "grid_range"),
        (dict(scale_noise=-1.0), "scale_noise"),
        (dict(grid_eps=1.5), "grid_eps"),
        (dict(base_activation=3), "base_activation"),
    ]:
        with pytest.raises(ValueError, match=match):
            layer.KANLayerConfig(**bad)
        with pytest.raises(ValueError, match=match):
            KANLinear(2, **bad)
        with pytest.raises(ValueError, match=match):
            NNXKAN([2, 1], rngs=nnx.Rngs(0), **bad)


def test_large_grid_layer_trains_and_refines_keeping_its_function():
    # The local path at G = 100 and 200: init, Adam steps and a refinement work,
    # and refining a uniform grid by a factor of 2 (grid_eps = 1, no margin, samples spanning
    # the range) keeps the function exactly (nested spline spaces).
    model = KAN([3, 1], grid_size=100, grid_eps=1.0, spline_strategy="local")
    x = jax.random.uniform(jax.random.key(0), (512, 3), jnp.float32, -1, 1)
    x = x.at[0].set(-1.0).at[1].set(1.0 - 1e-7)
    y = jnp.sin(3 * x[:, :1]) * x[:, 1:2]
    variables = model.init(jax.random.key(1), x)
    tx = optax.adam(1e-2)
    params, grid = variables["params"], variables["grid"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss, g = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p, "grid": grid}, x) - y) ** 2))(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(20):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]
    before = model.apply({"params": params, "grid": grid}, x)
    new = model.refine({"params": params, "grid": grid}, x, grid_size=200, margin=0.0)
    assert new["params"]["layers_0"]["spline_weight"].shape == (3, 203, 1)
    np.testing.assert_allclose(np.asarray(model.apply(new, x)), np.asarray(before), atol=1e-4)

