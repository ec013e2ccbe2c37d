"""Flax NNX front (kan_jax.nnx): agreement with the Linen front, grid as non-Param state,
grid update / refinement keep the function, compiled steps see the new grid, training, errors.

Compilation dominates the run time, so the tests share a few layer shapes (KAN [2, 3, 1],
i.e. layers 2->3 and 3->1) and a sample count of N = 256: fresh random values, same shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from kan_jax.layer import layer_regularization_loss
from kan_jax.layer import linen as linen_front
from kan_jax.nnx import KAN, Grid, KANLinear

f32 = jnp.float32
N = 256


def uniform(seed: int, shape: tuple[int, ...], lo: float = -1.0, hi: float = 1.0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape, f32, lo, hi)


def layer_variables(layer: KANLinear) -> tuple[dict, dict]:
    params = {"base_weight": layer.base_weight[...], "spline_weight": layer.spline_weight[...]}
    if layer.spline_scaler is not None:
        params["spline_scaler"] = layer.spline_scaler[...]
    return params, {"grid": layer.grid[...]}


def linen_variables(model: KAN) -> dict:
    """The Linen ``KAN`` variables holding the same numbers as an NNX ``KAN``."""
    params, grid = {}, {}
    for i, layer in enumerate(model.layers):
        params[f"layers_{i}"], grid[f"layers_{i}"] = layer_variables(layer)
    return {"params": params, "grid": grid}


def randomize_splines(model: nnx.Module, seed: int, scale: float = 1.0) -> None:
    """Replace every spline_weight by N(0, scale^2) so the spline branch is not negligible."""
    key = jax.random.key(seed)
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, KANLinear):
            key, sub = jax.random.split(key)
            w = layer.spline_weight
            w[...] = scale * jax.random.normal(sub, w.shape, w.dtype)


def smooth_splines(layer: KANLinear, seed: int, amplitude: float = 1.0) -> None:
    """Make every edge spline a smooth random curve c * sin(w t + p), large against the base
    branch (as after some training): coefficient j is the curve at the Greville abscissa
    (mean of knots j+1..j+k), Schoenberg's variation-diminishing spline approximation."""
    n_in, _, n_out = layer.spline_weight.shape  # (in, n, out)
    k = layer.spline_order
    ka, kw, kp = jax.random.split(jax.random.key(seed), 3)
    c = amplitude * jax.random.uniform(ka, (n_in, 1, n_out), f32, 0.5, 1.0)
    w = jax.random.uniform(kw, (n_in, 1, n_out), f32, 1.0, 3.0)
    p = jax.random.uniform(kp, (n_in, 1, n_out), f32, -3.0, 3.0)
    grid = layer.grid[...]
    greville = jnp.stack([grid[:, j + 1 : j + k + 1].mean(-1) for j in range(grid.shape[1] - k - 1)], -1)
    scaled = c * jnp.sin(w * greville[..., None] + p)
    scaler = layer.spline_scaler[...][:, None, :] if layer.spline_scaler is not None else 1.0
    layer.spline_weight[...] = (scaled / scaler).astype(f32)


def max_abs(a: jax.Array) -> float:
    return float(jnp.abs(a).max())


# --------------------------------------------------------------------------- Linen agreement


@pytest.mark.slow
@pytest.mark.parametrize("scaler", [True, False])
def test_kan_matches_linen_front_float32(scaler):
    model = KAN([2, 3, 1], enable_standalone_scale_spline=scaler, rngs=nnx.Rngs(0))
    randomize_splines(model, 1, 0.3)
    x = uniform(2, (4, 64, 2), -1.2, 1.2)  # leading batch dims, some inputs outside the grid
    linen = linen_front.KAN([2, 3, 1], enable_standalone_scale_spline=scaler)
    variables = linen_variables(model)
    assert ("spline_scaler" in variables["params"]["layers_0"]) == scaler
    want = jax.jit(linen.apply)(variables, x)
    got = model(x)
    assert got.shape == (4, 64, 1) and got.dtype == f32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got.reshape(N, 1)), np.asarray(model(x.reshape(N, 2))), rtol=0, atol=1e-6)

    # The same after a grid update on both fronts (same samples): grids and outputs agree.
    samples = uniform(3, (N, 2), -0.8, 1.5)
    new = jax.jit(linen.update_grid)(variables, samples)
    model.update_grid(samples)
    for i, layer in enumerate(model.layers):
        np.testing.assert_allclose(
            np.asarray(layer.grid[...]), np.asarray(new["grid"][f"layers_{i}"]["grid"]), rtol=0, atol=1e-6
        )
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(jax.jit(linen.apply)(new, x)), rtol=0, atol=1e-5)


def test_initialisation_and_state_layout():
    model = KAN([2, 3, 1], grid_size=5, spline_order=3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    flat = {".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(params)}
    # The names parallel efficient-kan's state_dict: layers.0.base_weight, ...
    assert flat == {f"layers.{i}.{n}" for i in (0, 1) for n in ("base_weight", "spline_weight", "spline_scaler")}
    layer = model.layers[0]
    assert (layer.in_features, layer.out_features, layer.grid_size) == (2, 3, 5)
    assert layer.base_weight.shape == (3, 2)
    assert layer.spline_weight.shape == (2, 8, 3)  # (in, n, out)
    assert layer.spline_scaler.shape == (2, 3)  # (in, out)
    assert layer.grid.shape == (2, 12)
    assert all(v.dtype == f32 for v in jax.tree.leaves(nnx.state(model)))
    # Kaiming-uniform bounds (+-1/sqrt(in) at scale 1); the spline init is small noise.
    assert max_abs(layer.base_weight[...]) <= 1 / np.sqrt(2) + 1e-6
    assert max_abs(layer.spline_scaler[...]) <= 1 / np.sqrt(2) + 1e-6
    assert 0 < max_abs(layer.spline_weight[...]) < 0.1
    np.testing.assert_allclose(np.asarray(layer.grid[0]), -1 + 0.4 * np.arange(-3, 9), atol=1e-6)


def test_bfloat16_params_survive_grid_update():
    # LAPACK has no bfloat16 least squares: the refit runs in float32 and is stored back.
    layer = KANLinear(2, 3, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = uniform(1, (N, 2)).astype(jnp.bfloat16)
    y0 = layer(x)
    layer.update_grid(x)
    assert {v.dtype for v in jax.tree.leaves(nnx.state(layer))} == {jnp.dtype(jnp.bfloat16)}
    assert layer(x).dtype == jnp.bfloat16
    # bfloat16 has 8 significant bits: 2e-2 of the output scale.
    assert max_abs((layer(x) - y0).astype(f32)) <= 2e-2 * max_abs(y0.astype(f32))


# --------------------------------------------------------------------------- grid is not a Param


def test_grid_is_state_but_not_a_param():
    model = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    param_paths = [path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    grid_paths = [path for path, _ in nnx.to_flat_state(nnx.state(model, Grid))]
    assert not any("grid" in map(str, path) for path in param_paths)
    assert grid_paths == [("layers", 0, "grid"), ("layers", 1, "grid")]
    assert not isinstance(model.layers[0].grid, nnx.Param)

    # Gradients (nnx.grad differentiates nnx.Param by default) and the optimizer skip it.
    x = uniform(1, (N, 2))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    assert not any("grid" in map(str, path) for path, _ in nnx.to_flat_state(grads))
    grids_before = [np.asarray(layer.grid[...]) for layer in model.layers]
    optimizer = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
    assert not any(leaf.shape in {(2, 12), (3, 12)} for leaf in jax.tree.leaves(optimizer.opt_state))
    optimizer.update(model, grads)
    for layer, before in zip(model.layers, grids_before):
        np.testing.assert_array_equal(np.asarray(layer.grid[...]), before)


# --------------------------------------------------------------------------- update_grid


def test_update_grid_exact_case_keeps_grid_and_function():
    # grid_eps=1, margin=0, samples spanning exactly [lo, hi]: the new grid is the old one.
    layer = KANLinear(2, 3, grid_eps=1.0, rngs=nnx.Rngs(0))
    randomize_splines(layer, 1)
    x = uniform(2, (N, 2)).at[0].set(-1.0).at[1].set(1.0)
    old_grid = layer.grid[...]
    y0 = layer(x)
    layer.update_grid(x, margin=0.0)
    np.testing.assert_allclose(np.asarray(layer.grid[...]), np.asarray(old_grid), rtol=0, atol=1e-6)
    # 1e-5 relative to the output scale (float32 least squares).
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(y0), rtol=0, atol=1e-5 * max_abs(y0))


def test_update_grid_keeps_function_on_samples_inside_old_range():
    layer = KANLinear(2, 3, rngs=nnx.Rngs(3))  # default grid_eps=0.02: a quantile grid
    smooth_splines(layer, 4)
    x = jnp.clip(jax.random.normal(jax.random.key(5), (N, 2), f32) * 0.4, -0.99, 0.99)  # non-uniform
    y0 = layer(x)
    spline0 = y0 - jax.nn.silu(x) @ layer.base_weight[...].T
    assert max_abs(spline0) > 1.0  # the spline branch dominates the output
    old_grid = layer.grid[...]
    layer.update_grid(x)
    assert max_abs(layer.grid[...] - old_grid) > 5e-2  # the grid did change
    # Tolerance: max abs difference <= 1e-2 * max |y| (a smooth spline re-fitted by least
    # squares on a different grid: close, not exact).
    assert max_abs(layer(x) - y0) <= 1e-2 * max_abs(y0)

    # The same, sequentially through a KAN whose hidden activations stay inside the grid.
    model = KAN([2, 3, 1], rngs=nnx.Rngs(6))
    for i, lyr in enumerate(model.layers):
        smooth_splines(lyr, 7 + i, amplitude=0.25)
    x = uniform(8, (N, 2), -0.9, 0.9)
    assert max_abs(model.layers[0](x)) < 1.0
    y0 = model(x)
    model.update_grid(x)
    assert max_abs(model(x) - y0) <= 1e-2 * max_abs(y0)


def test_compiled_step_sees_new_grid_after_update():
    model = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    randomize_splines(model, 1)
    traces = []

    @nnx.jit
    def f(model, x):
        traces.append(1)
        return model(x)

    x = uniform(2, (N, 2))
    y_old = f(model, x)
    np.testing.assert_allclose(np.asarray(y_old), np.asarray(model(x)), rtol=0, atol=1e-6)
    old_grid = model.layers[0].grid[...]
    model.update_grid(uniform(3, (N, 2), 2.0, 4.0))  # samples from another range
    assert max_abs(model.layers[0].grid[...] - old_grid) > 0.5
    y_new = f(model, x)
    # The compiled function uses the new grid (equal to the eager output with it) ...
    np.testing.assert_allclose(np.asarray(y_new), np.asarray(model(x)), rtol=0, atol=1e-6)
    assert max_abs(y_new - y_old) > 1e-2
    # ... without being retraced: the grid is a traced input, not a baked-in constant.
    assert len(traces) == 1


def test_update_grid_runs_under_nnx_jit():
    a = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    b = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    x = uniform(1, (N, 2), -0.5, 1.5)
    a.update_grid(x)
    nnx.jit(lambda m, x: m.update_grid(x))(b, x)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(np.asarray(lb.grid[...]), np.asarray(la.grid[...]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(b(x)), np.asarray(a(x)), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- refine


def test_refine_keeps_function_nested_grid_exactly():
    # Uniform G=5 -> 10 over the same range (grid_eps=1, margin=0, samples containing lo and
    # hi): the old spline space is contained in the new one, so the fit is exact.
    layer = KANLinear(2, 3, grid_size=5, grid_eps=1.0, rngs=nnx.Rngs(0))
    randomize_splines(layer, 1)
    x = uniform(2, (N, 2)).at[0].set(-1.0).at[1].set(1.0)
    y0 = layer(x)
    layer.refine(x, grid_size=10, margin=0.0)
    assert layer.grid_size == 10
    assert layer.spline_weight.shape == (2, 13, 3) and layer.grid.shape == (2, 17)
    np.testing.assert_allclose(np.asarray(layer.grid[0, 3:-3]), np.linspace(-1, 1, 11), atol=1e-6)
    # 1e-5 relative to the output scale (float32 least squares).
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(y0), rtol=0, atol=1e-5 * max_abs(y0))


def test_kan_refine_then_rebuilt_optimizer_trains():
    model = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    x = uniform(1, (N, 2))
    y0 = model(x)
    model.refine(x, grid_size=10)
    assert model.grid_size == 10
    assert [layer.spline_weight.shape for layer in model.layers] == [(2, 13, 3), (3, 13, 1)]
    # General (quantile-mixed, non-nested) case: function kept to 1e-2 of the output scale.
    assert max_abs(model(x) - y0) <= 1e-2 * max_abs(y0)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)  # rebuilt after refine
    grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads)
    assert bool(jnp.all(jnp.isfinite(model(x))))


# --------------------------------------------------------------------------- training


class StemKANHead(nnx.Module):
    """A user model: Dense stem, tanh, KAN head."""

    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Linear(2, 3, rngs=rngs)
        self.head = KANLinear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.stem(x)))


def test_user_model_with_kan_head_trains_under_nnx_jit():
    x = uniform(0, (N, 2))
    y = jnp.sin(jnp.pi * x[:, :1]) * x[:, 1:]
    model = StemKANHead(nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    for i in range(50):
        if i == 25:  # same-size grid update mid-training: optimizer and compiled step stay valid
            model.head.update_grid(jnp.tanh(model.stem(x)))
        losses.append(float(step(model, optimizer, x, y)))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_kan_trains_with_regularization():
    x = uniform(0, (N, 2))
    y = x[:, :1] ** 2 + jnp.sin(2 * x[:, 1:])
    model = KAN([2, 3, 1], rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, optax.adam(2e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(m):
            return jnp.mean((m(x) - y) ** 2) + 1e-4 * m.regularization_loss()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, y)) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_regularization_loss_matches_linen_and_functional():
    model = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    randomize_splines(model, 1)
    want = linen_front.regularization_loss(linen_variables(model)["params"], 0.5, 2.0)
    assert float(model.regularization_loss(0.5, 2.0)) == pytest.approx(float(want), rel=1e-6)
    layer = model.layers[1]
    assert float(layer.regularization_loss()) == pytest.approx(
        float(layer_regularization_loss(layer_variables(layer)[0])), rel=1e-6
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid_size=0), "grid_size"),
        (dict(spline_order=-1), "spline_order"),
        (dict(grid_range=(1.0, 1.0)), "grid_range"),
        (dict(grid_range=(1.0, -1.0)), "grid_range"),
        (dict(scale_noise=-0.1), "scale_noise"),
        (dict(scale_base=-1.0), "scale_base"),
        (dict(scale_spline=-1.0), "scale_spline"),
        (dict(grid_eps=1.5), "grid_eps"),
    ],
)
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KANLinear(2, 3, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match=match):
        KAN([2, 3], rngs=nnx.Rngs(0), **kwargs)


def test_width_and_input_size_errors():
    with pytest.raises(ValueError, match="out_features"):
        KANLinear(2, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="layers_hidden"):
        KAN([2], rngs=nnx.Rngs(0))
    layer = KANLinear(2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"in_features=2.*\(4, 5\)"):
        layer(jnp.ones((4, 5), f32))
    with pytest.raises(ValueError, match=r"in_features=2.*\(4, 5\)"):
        layer.update_grid(jnp.ones((4, 5), f32))
    model = KAN([2, 3, 1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"2.*\(4, 5\)"):
        model(jnp.ones((4, 5), f32))
    with pytest.raises(ValueError, match="grid_size"):
        model.refine(jnp.ones((4, 2), f32), grid_size=0)
