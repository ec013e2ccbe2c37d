"""Basis families of the KAN layer: Chebyshev, Legendre, Fourier, RBF against float64 NumPy.

Every family's layer is compared with an independent NumPy evaluation written from the maths
(closed forms, ``numpy.polynomial.legendre``), its gradients with finite differences, its grid
extension with the function it should keep, its fronts with each other, the tools that take any
network (input derivatives, Hessian-vector products, the network view) with references, and,
where jaxKAN 0.3.7 is installed, with jaxKAN's layers on the same coefficients.
"""
from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

import kan_jax
from kan_jax import KAN, interpret as I
from kan_jax.layer import BASES, KANLayerConfig, basis_family, init_layer, layer_apply, layer_update_grid
from kan_jax.nnx import KAN as NnxKAN

OTHERS = ("chebyshev", "legendre", "fourier", "rbf")


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_bases(basis: str, x: np.ndarray, grid: np.ndarray, n: int) -> np.ndarray:
    """``phi[b, i, j]`` from closed forms, float64. x (B, in), grid (in, M)."""
    if basis == "chebyshev":  # cos(j arccos t), valid away from t = +-1
        return np.cos(np.arange(n) * np.arccos(np.tanh(x))[..., None])
    if basis == "legendre":
        return np.polynomial.legendre.legvander(np.tanh(x), n - 1)
    if basis == "fourier":
        j = np.arange(1, n // 2 + 1)
        out = np.empty(x.shape + (n,))
        out[..., 0::2], out[..., 1::2] = np.cos(x[..., None] * j), np.sin(x[..., None] * j)
        return out
    assert basis == "rbf"
    h = (grid[:, -1] - grid[:, 0]) / (grid.shape[1] - 1)
    return np.exp(-(((x[..., None] - grid) / h[:, None]) ** 2))


def np_layer(basis, params, grid, x):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    w = p["spline_weight"] * p.get("spline_scaler", np.ones(p["spline_weight"].shape[::2]))[:, None, :]
    phi = np_bases(basis, x, np.asarray(grid, np.float64), w.shape[1])
    return np_silu(x) @ p["base_weight"].T + np.einsum("bij,ijo->bo", phi, w)


def random_layer(basis, key, in_f=3, out_f=2, grid_size=4, **kw):
    config = KANLayerConfig(basis=basis, grid_size=grid_size, **{"param_dtype": jnp.float64, **kw})
    params, grid = init_layer(key, in_f, out_f, config)
    # coefficients of unit order, so that every basis matters in the comparison
    params = {**params, "spline_weight": jax.random.normal(jax.random.fold_in(key, 1), params["spline_weight"].shape)}
    return config, params, grid


@pytest.mark.parametrize("basis", OTHERS)
def test_layer_matches_numpy_is_finite_far_out_and_has_exact_gradients(basis):
    scaler = basis in ("fourier", "rbf")  # with and without spline_scaler
    config, params, grid = random_layer(basis, jax.random.key(0), in_f=2, enable_standalone_scale_spline=scaler)
    assert ("spline_scaler" in params) == scaler
    x = jax.random.uniform(jax.random.key(1), (8, 2), jnp.float64, -2.0, 2.0)
    got = layer_apply(params, grid, x, config)
    want = np_layer(basis, params, grid, np.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
    # the per-edge outputs sum to the spline branch
    edges = kan_jax.layer.edge_outputs(params, grid, x, basis)
    base = np_silu(np.asarray(x)) @ np.asarray(params["base_weight"]).T
    np.testing.assert_allclose(np.asarray(edges.sum(1)) + base, want, rtol=1e-12, atol=1e-12)
    # gradients against float64 finite differences
    check_grads(lambda p, z: layer_apply(p, grid, z, config), (params, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    # finite values and gradients at tanh's saturation (t = +-1 exactly) and far out
    far = jnp.array([0.0, 1.0, -1.0, 40.0, -40.0, 1e4, 1e30, -1e30], jnp.float64).reshape(4, 2)
    y, vjp = jax.vjp(lambda p, z: layer_apply(p, grid, z, config), params, jnp.concatenate([far, x[:4]]))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves((y, vjp(jnp.ones_like(y))))), basis


def test_polynomials_at_the_ends():
    """T_j(1) = P_j(1) = 1 and T_j(-1) = P_j(-1) = (-1)^j, where tanh saturates."""
    from kan_jax.layer.polynomial import chebyshev_bases, legendre_bases

    signs = (-1.0) ** np.arange(7)
    for bases in (chebyshev_bases, legendre_bases):
        vals = bases(jnp.array([40.0, -40.0]), 6)
        np.testing.assert_allclose(np.asarray(vals), np.stack([np.ones(7), signs]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("basis", ["chebyshev", "fourier"])
def test_refine_nested_families_exactly_and_coarsen_by_least_squares(basis):
    config, params, grid = random_layer(basis, jax.random.key(5), grid_size=3)
    x = jax.random.uniform(jax.random.key(6), (64, 3), jnp.float64, -2.0, 2.0)
    y = layer_apply(params, grid, x, config)
    if basis == "chebyshev":  # an update at the same degree: nothing to adapt
        same, _ = layer_update_grid(params, grid, x, basis=basis)
        np.testing.assert_array_equal(np.asarray(same["spline_weight"]), np.asarray(params["spline_weight"]))
    up, up_grid = layer_update_grid(params, grid, x, grid_size=6, basis=basis)
    family = basis_family(basis)
    assert up["spline_weight"].shape[1] == family.num_bases(6) and family.layer_grid_size(up, up_grid) == 6
    np.testing.assert_allclose(np.asarray(layer_apply(up, up_grid, x, config)), np.asarray(y), rtol=0, atol=1e-12)
    # lowering the resolution: the least-squares fit of each edge on the samples (NumPy lstsq)
    down, down_grid = layer_update_grid(params, grid, x, grid_size=2, basis=basis)
    xs = np.asarray(x)
    edges = np.einsum("bij,ijo->bio", np_bases(basis, xs, None, family.num_bases(3)), np.asarray(params["spline_weight"]))
    phi = np_bases(basis, xs, None, family.num_bases(2))
    for i in range(3):
        # the scaled edges are fitted and divided by the scaler, a constant per column: the fit of the raw edges
        fit = np.linalg.lstsq(phi[:, i], edges[:, i], rcond=None)[0]
        np.testing.assert_allclose(np.asarray(down["spline_weight"][i]), fit, rtol=1e-8, atol=1e-10)


def test_rbf_grid_update_places_centres_and_fits_by_least_squares():
    config, params, grid = random_layer(
        "rbf", jax.random.key(7), grid_size=5, grid_range=(-2.0, 2.0), enable_standalone_scale_spline=True
    )
    x = jax.random.uniform(jax.random.key(8), (256, 3), jnp.float64, -1.5, 1.8)
    new, new_grid = layer_update_grid(params, grid, x, grid_size=9, grid_eps=1.0, margin=0.1, basis="rbf")
    xs = np.asarray(x)
    centres = np.linspace(xs.min(0) - 0.1, xs.max(0) + 0.1, 9).T  # (in, 9): uniform over the samples
    np.testing.assert_allclose(np.asarray(new_grid), centres, rtol=0, atol=1e-12)
    scaled = np.asarray(params["spline_weight"]) * np.asarray(params["spline_scaler"])[:, None, :]
    edges = np.einsum("bij,ijo->bio", np_bases("rbf", xs, np.asarray(grid), 5), scaled)
    phi = np_bases("rbf", xs, centres, 9)
    for i in range(3):
        fit = np.linalg.lstsq(phi[:, i], edges[:, i], rcond=None)[0] / np.asarray(params["spline_scaler"])[i]
        np.testing.assert_allclose(np.asarray(new["spline_weight"][i]), fit, rtol=1e-6, atol=1e-6)
    # the function is kept on the samples to the fit's residual (Gaussian spaces are not nested)
    y, y_new = layer_apply(params, grid, x, config), layer_apply(new, new_grid, x, config)
    assert float(jnp.max(jnp.abs(y_new - y))) < 2e-2 * float(jnp.max(jnp.abs(y)))


def test_refine_opt_state_carries_the_moments_of_kept_coefficients():
    config, params, grid = random_layer("chebyshev", jax.random.key(9), in_f=2, out_f=3, grid_size=3)
    x = jax.random.uniform(jax.random.key(10), (32, 2), jnp.float64, -1.0, 1.0)
    tx = optax.adam(1e-2)
    step = jax.jit(lambda p: tx.update(jax.grad(lambda q: jnp.sum(layer_apply(q, grid, x, config) ** 2))(p), tx.init(p), p)[1])
    state = step(params)
    refined, _ = layer_update_grid(params, grid, x, grid_size=5, basis="chebyshev")
    carried = kan_jax.refine_opt_state(state, tx, refined, basis="chebyshev")
    mu_old, mu = state[0].mu["spline_weight"], carried[0].mu["spline_weight"]
    assert mu.shape == (2, 6, 3)
    np.testing.assert_array_equal(np.asarray(mu[:, :4]), np.asarray(mu_old))
    np.testing.assert_array_equal(np.asarray(mu[:, 4:]), 0.0)
    np.testing.assert_array_equal(np.asarray(carried[0].nu["base_weight"]), np.asarray(state[0].nu["base_weight"]))
    assert int(carried[0].count) == 1
    reset = kan_jax.refine_opt_state(state, tx, refined)  # the B-spline rule: a new shape restarts
    np.testing.assert_array_equal(np.asarray(reset[0].mu["spline_weight"]), 0.0)


@pytest.mark.parametrize("basis", ["chebyshev", pytest.param("rbf", marks=pytest.mark.slow)])
def test_linen_and_nnx_fronts_agree(basis):
    x = jax.random.uniform(jax.random.key(10), (8, 2), jnp.float32, -1.0, 1.0)
    nnx_model = NnxKAN([2, 3, 1], basis=basis, rngs=nnx.Rngs(0))
    linen = KAN([2, 3, 1], basis=basis)
    # the Linen front initialises every layer with the values of init_layer for its key
    variables = {
        "params": {f"layers_{i}": {k: v[...] for k, v in nnx.state(l, nnx.Param).items()} for i, l in enumerate(nnx_model.layers)},
        "grid": {f"layers_{i}": {"grid": l.grid[...]} for i, l in enumerate(nnx_model.layers)},
    }
    np.testing.assert_allclose(np.asarray(linen.apply(variables, x)), np.asarray(nnx_model(x)), rtol=0, atol=1e-6)
    refined = linen.refine(variables, x, grid_size=6)
    nnx_model.refine(x, 6)
    assert nnx_model.grid_size == 6
    np.testing.assert_allclose(np.asarray(linen.apply(refined, x)), np.asarray(nnx_model(x)), rtol=0, atol=1e-5)


def test_input_derivatives_of_a_chebyshev_layer_are_analytic():
    from kan_jax.pde import input_derivatives, kan_input_derivatives

    model = KAN([2, 1], basis="chebyshev", grid_size=4, param_dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(11), (16, 2), jnp.float64, -2.0, 2.0)
    variables = model.init(jax.random.key(1), x)
    p = {k: np.asarray(v) for k, v in variables["params"]["layers_0"].items()}
    d = jax.jit(lambda z: input_derivatives(lambda u: model.apply(variables, u), z, first=(0, 1), second=(0, 1)))(x)
    xs = np.asarray(x)
    sig = 1.0 / (1.0 + np.exp(-xs))
    silu1, silu2 = sig * (1 + xs * (1 - sig)), sig * (1 - sig) * (2 + xs * (1 - 2 * sig))
    t = np.tanh(xs)
    for i in range(2):
        series = np.polynomial.Chebyshev(p["spline_weight"][i, :, 0] * p["spline_scaler"][i, 0])
        f1, f2 = series.deriv(1)(t[:, i]), series.deriv(2)(t[:, i])
        dt = 1 - t[:, i] ** 2  # d tanh / dx;   d^2 tanh / dx^2 = -2 t dt
        first = p["base_weight"][0, i] * silu1[:, i] + f1 * dt
        second = p["base_weight"][0, i] * silu2[:, i] + f2 * dt**2 - 2 * t[:, i] * dt * f1
        np.testing.assert_allclose(np.asarray(d.first[:, 0, i]), first, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(d.second[:, 0, i]), second, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="basis='chebyshev'.*input_derivatives"):
        kan_input_derivatives(model, variables, x, first=(0,))


def test_hessian_vector_product_matches_jax_hessian():
    from kan_jax import curvature as cv

    model = KAN([2, 1], basis="legendre", grid_size=2, param_dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(12), (8, 2), jnp.float64, -1.0, 1.0)
    y = jnp.sin(x[:, :1])
    variables = model.init(jax.random.key(2), x)
    flat, unravel = jax.flatten_util.ravel_pytree(variables["params"])

    def loss(params, batch):
        xb, yb = batch
        return jnp.mean((model.apply({**variables, "params": params}, xb) - yb) ** 2)

    v = jax.random.normal(jax.random.key(13), flat.shape, jnp.float64)
    got = jax.jit(lambda p, w: jax.flatten_util.ravel_pytree(cv.hvp(lambda q: loss(q, (x, y)), p, unravel(w)))[0])(
        variables["params"], v
    )
    want = jax.jit(jax.hessian(lambda f: loss(unravel(f), (x, y))))(flat) @ v
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_network_view_reads_other_families():
    basis = "rbf"
    model = KAN([2, 2, 1], basis=basis)
    x = jax.random.uniform(jax.random.key(14), (32, 2), jnp.float32, -1.0, 1.0)
    variables = model.init(jax.random.key(3), x)
    net = I.from_linen(model, variables)
    assert net.spec.basis == basis
    np.testing.assert_allclose(np.asarray(I.apply(net.params, net.state, x, net.spec)), np.asarray(model.apply(variables, x)), atol=1e-5)
    back_model, back = I.to_linen(I.update_grids(net, x))
    assert back_model.basis == basis and back_model.grid_size == 5
    assert back["grid"]["layers_1"]["grid"].shape == (2, 5)
    extents = I.input_extents(net.state + [{"grid": jnp.zeros((3, 0))}], net.spec.spline_order)
    np.testing.assert_allclose(np.asarray(extents[0]), 2.0, atol=1e-3)  # the centres' range
    np.testing.assert_array_equal(np.asarray(extents[-1]), 1.0)  # a family without a grid


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match="basis must be one of"):
        KANLayerConfig(basis="wavelet")
    with pytest.raises(ValueError, match="basis must be one of"):
        basis_family("spline")
    with pytest.raises(ValueError, match="basis must be one of"):
        KAN([2, 1], basis="cheb")
    with pytest.raises(ValueError, match="basis must be one of"):
        NnxKAN([2, 1], basis="cheb", rngs=nnx.Rngs(0))
    for basis in BASES:
        with pytest.raises(ValueError, match="grid_size must be an integer >= 1"):
            KANLayerConfig(basis=basis, grid_size=0)
    with pytest.raises(ValueError, match="'rbf' needs grid_size >= 2"):
        KANLayerConfig(basis="rbf", grid_size=1)
    _, params, grid = random_layer("fourier", jax.random.key(15))
    with pytest.raises(ValueError, match="7 bases per input is not a 'fourier' layer"):
        basis_family("fourier").edge_outputs({**params, "spline_weight": params["spline_weight"][:, :7]}, grid, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"grid must have shape \(3, 0\)"):
        basis_family("chebyshev").spline_branch(random_layer("chebyshev", jax.random.key(0))[1], jnp.zeros((3, 1)), jnp.ones((1, 3)))
    chebyshev = {"params": {"layers_0": {"base_weight": jnp.zeros((1, 2)), "spline_weight": jnp.zeros((2, 6, 1))}},
                 "grid": {"layers_0": {"grid": jnp.zeros((2, 0))}}}
    with pytest.raises(ValueError, match="efficient-kan holds B-spline layers"):
        kan_jax.to_efficient_kan(chebyshev)
    with pytest.raises(ValueError, match="efficient-kan layers are B-spline layers"):
        KAN.from_efficient_kan({}, basis="rbf")
    with pytest.raises(ValueError, match="'rbf' needs an integer grid_size >= 2"):
        kan_jax.refine(KAN([2, 1], basis="rbf"), chebyshev, jnp.ones((4, 2)), grid_size=1)


def test_initial_spline_branch_has_the_size_scale_noise():
    """Output std of the spline branch at init = scale_noise on each family's reference inputs."""
    from kan_jax.layer.init import coefficient_initializer

    n_in, n_out = 16, 64
    rng = np.random.default_rng(0)
    ref = {  # inputs distributed as each family's variance rule assumes
        "chebyshev": np.arctanh(np.cos(np.pi * rng.uniform(size=(256, n_in))) * 0.999999),
        "legendre": np.arctanh(rng.uniform(-1, 1, size=(256, n_in)) * 0.999999),
        "fourier": rng.uniform(-np.pi, np.pi, size=(256, n_in)),
        "rbf": rng.uniform(-1, 1, size=(256, n_in)),
    }
    scaler = rng.uniform(-1, 1, size=(n_in, n_out)) / np.sqrt(n_in)  # efficient-kan's scaler at gain 1
    for basis in OTHERS:
        for scaled in (True, False):
            config = KANLayerConfig(basis=basis, grid_size=8, scale_noise=0.5, enable_standalone_scale_spline=scaled)
            family = basis_family(basis)
            w = coefficient_initializer(config)(jax.random.key(4), (n_in, family.num_bases(8), n_out), jnp.float64)
            params = {"base_weight": np.zeros((n_out, n_in)), "spline_weight": np.asarray(w)}
            if scaled:
                params["spline_scaler"] = scaler
            grid = family.initial_grid(config, n_in)
            std = float(np.std(np_layer(basis, params, grid, ref[basis])))
            assert 0.42 < std < 0.58, (basis, scaled, std)


@pytest.mark.slow
def test_jaxkan_parity_on_the_same_coefficients():
    """jaxKAN 0.3.7's Chebyshev, Legendre, Fourier and RBF layers = ours on the same coefficients."""
    pytest.importorskip("jaxkan")
    from jaxkan.layers import ChebyshevLayer, FourierLayer, LegendreLayer, RBFLayer

    n_in, n_out, d = 3, 2, 4
    x = jax.random.uniform(jax.random.key(16), (16, n_in), jnp.float32, -2.0, 2.0)
    no_base = dict(enable_standalone_scale_spline=False, grid_size=d, param_dtype=jnp.float32)
    for name, layer in (
        ("chebyshev", ChebyshevLayer(n_in, n_out, D=d, flavor="exact", seed=1)),
        ("legendre", LegendreLayer(n_in, n_out, D=d, seed=2)),
    ):
        layer.bias[...] = jax.random.normal(jax.random.key(17), (n_out,))
        c = jnp.transpose(layer.c_basis[...], (1, 2, 0))  # (in, D, out): T_1 .. T_D
        const = jnp.broadcast_to(layer.bias[...] / n_in, (n_in, 1, n_out))  # the bias spread over the edges
        params = {"base_weight": jnp.zeros((n_out, n_in)), "spline_weight": jnp.concatenate([const, c], axis=1)}
        config = KANLayerConfig(basis=name, **no_base)
        np.testing.assert_allclose(np.asarray(layer_apply(params, jnp.zeros((n_in, 0)), x, config)), np.asarray(layer(x)), atol=2e-5)
    fourier = FourierLayer(n_in, n_out, D=d, seed=3)
    w = jnp.stack([fourier.c_cos[...], fourier.c_sin[...]], axis=-1).reshape(n_out, n_in, 2 * d)  # interleaved
    params = {"base_weight": jnp.zeros((n_out, n_in)), "spline_weight": jnp.transpose(w, (1, 2, 0))}
    got = layer_apply(params, jnp.zeros((n_in, 0)), x, KANLayerConfig(basis="fourier", **no_base))
    np.testing.assert_allclose(np.asarray(got), np.asarray(fourier(x) - fourier.bias[...]), atol=2e-5)
    h = 4.0 / (d - 1)  # jaxKAN's centres on (-2, 2); its exp(-(u/std)^2 / 2) is ours for std = h / sqrt(2)
    rbf = RBFLayer(n_in, n_out, D=d, kernel={"type": "gaussian", "std": h / math.sqrt(2.0)}, grid_range=(-2.0, 2.0), seed=4)
    params = {"base_weight": jnp.zeros((n_out, n_in)), "spline_weight": jnp.transpose(rbf.c_basis[...], (1, 2, 0))}
    config = KANLayerConfig(basis="rbf", grid_range=(-2.0, 2.0), **no_base)
    grid = basis_family("rbf").initial_grid(config, n_in)
    np.testing.assert_allclose(np.asarray(grid), np.asarray(rbf.grid.item), atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer_apply(params, grid, x, config)), np.asarray(rbf(x) - rbf.bias[...]), atol=2e-5)


@pytest.mark.slow
def test_model_sharded_epoch_with_other_bases(mnist_dir):
    """Chebyshev and RBF layers with the spline weights split over a "model" axis == one device."""
    from tests.test_sharding import _run_checks

    _run_checks(mnist_dir, ["model_sharded_epoch_bases"])
