"""Linen KAN layers: efficient-kan semantics (NumPy float64 reference), grid updates, errors."""
from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import kan_jax
from kan_jax import KAN, KANLinear, from_efficient_kan, refine, refine_opt_state, to_efficient_kan, update_grid


# ---------------------------------------------------------------------------------------------
# Independent NumPy float64 reference of the efficient-kan forward, written from the maths.
def np_bases(x: np.ndarray, grid: np.ndarray, k: int) -> np.ndarray:
    """Cox-de Boor in float64 NumPy. x (B, in), grid (in, M) -> (B, in, M - k - 1)."""
    xe = x[:, :, None]
    b = ((xe >= grid[None, :, :-1]) & (xe < grid[None, :, 1:])).astype(np.float64)
    for p in range(1, k + 1):
        t = grid[None]
        left = (xe - t[..., : -(p + 1)]) / (t[..., p:-1] - t[..., : -(p + 1)])
        right = (t[..., p + 1 :] - xe) / (t[..., p + 1 :] - t[..., 1:-p])
        b = left * b[..., :-1] + right * b[..., 1:]
    return b


def np_silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def np_efficient_kan_forward(state: dict[str, np.ndarray], x: np.ndarray, k: int) -> np.ndarray:
    n_layers = len({key.split(".")[1] for key in state})
    for i in range(n_layers):
        bw = state[f"layers.{i}.base_weight"]
        sw = state[f"layers.{i}.spline_weight"] * state[f"layers.{i}.spline_scaler"][..., None]
        bases = np_bases(x, state[f"layers.{i}.grid"], k)
        x = np_silu(x) @ bw.T + bases.reshape(x.shape[0], -1) @ sw.reshape(sw.shape[0], -1).T
    return x


def random_efficient_kan_state(widths, grid_size=5, k=3, seed=0) -> dict[str, np.ndarray]:
    """A state_dict as efficient-kan stores it, with random (trained-looking) values."""
    rng = np.random.default_rng(seed)
    h = 2.0 / grid_size
    state = {}
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        knots = -1.0 + h * np.arange(-k, grid_size + k + 1)
        state[f"layers.{i}.grid"] = np.tile(knots, (fan_in, 1)) + rng.uniform(0, 0.05, (fan_in, 1))
        state[f"layers.{i}.base_weight"] = rng.normal(0, 1 / math.sqrt(fan_in), (fan_out, fan_in))
        state[f"layers.{i}.spline_weight"] = rng.normal(0, 0.3, (fan_out, fan_in, grid_size + k))
        state[f"layers.{i}.spline_scaler"] = rng.normal(0, 1 / math.sqrt(fan_in), (fan_out, fan_in))
    return state


def test_forward_matches_numpy_efficient_kan_reference_float32():
    state = random_efficient_kan_state([6, 5, 3], seed=1)
    variables = from_efficient_kan(state)  # float32
    model, variables2 = KAN.from_efficient_kan(state)
    assert model.layers_hidden == (6, 5, 3) and model.grid_size == 5 and model.spline_order == 3
    x = np.random.default_rng(2).uniform(-1.3, 1.3, size=(64, 6))
    want = np_efficient_kan_forward(state, x, 3)
    got = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32)))
    assert got.dtype == np.float32
    # 1e-5 relative to the output scale (float32 against float64).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    got2 = np.asarray(model.apply(variables2, jnp.asarray(x, jnp.float32)))
    np.testing.assert_array_equal(got, got2)


def test_interop_round_trip_is_exact():
    state = random_efficient_kan_state([4, 3, 2], seed=3)
    state = {f"module.{k}": v for k, v in state.items()}  # a DataParallel-style prefix
    back = to_efficient_kan(from_efficient_kan(state, dtype=jnp.float64))
    assert set(back) == {k.removeprefix("module.") for k in state}
    for key, value in back.items():
        np.testing.assert_array_equal(value, state["module." + key])


def test_interop_errors():
    state = random_efficient_kan_state([4, 3, 2])
    with pytest.raises(ValueError, match="no efficient-kan layer"):
        from_efficient_kan({"weight": np.zeros(3)})
    bad = dict(state)
    bad.update({k.replace("layers.0", "layers.1"): v for k, v in random_efficient_kan_state([7, 2]).items()})
    with pytest.raises(ValueError, match="layer 1 takes 7 inputs but layer 0 gives 3"):
        from_efficient_kan(bad)
    bad = dict(state)
    del bad["layers.0.grid"]
    with pytest.raises(ValueError, match=r"layer 0 lacks \['grid'\]"):
        from_efficient_kan(bad)


def test_spline_weight_in_efficient_kan_layout_is_rejected_with_the_conversion():
    model = KAN([3, 4, 2])
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.float32))
    w = variables["params"]["layers_0"]["spline_weight"]  # (in, n, out) = (3, 8, 4)
    old = jax.tree.map(lambda a: a, variables)
    old["params"]["layers_0"]["spline_weight"] = jnp.transpose(w, (2, 0, 1))  # (out, in, n)
    with pytest.raises(ValueError, match=r"spline_weight must have shape \(in=3, n, out=4\), got \(4, 3, 8\).*transpose"):
        model.apply(old, jnp.zeros((1, 3), jnp.float32))
    lp = {**variables["params"]["layers_0"], "spline_weight": jnp.transpose(w, (2, 0, 1))}
    grid = variables["grid"]["layers_0"]["grid"]
    with pytest.raises(ValueError, match=r"spline_weight must have shape \(in=3, n, out=4\), got \(4, 3, 8\).*transpose"):
        kan_jax.layer.layer_apply(lp, grid, jnp.zeros((1, 3), jnp.float32))
    lp = {**variables["params"]["layers_0"]}
    lp["spline_scaler"] = lp["spline_scaler"].T  # efficient-kan's (out, in)
    with pytest.raises(ValueError, match=r"spline_scaler must have shape \(in=3, out=4\), got \(4, 3\)"):
        kan_jax.layer.layer_apply(lp, grid, jnp.zeros((1, 3), jnp.float32))


def test_leading_batch_dims_and_variable_layout():
    model = KAN([3, 4, 2])
    x = jax.random.uniform(jax.random.key(0), (2, 5, 3), jnp.float32, -1, 1)
    variables = model.init(jax.random.key(1), x)
    assert set(variables) == {"params", "grid"}
    assert set(variables["params"]["layers_0"]) == {"base_weight", "spline_weight", "spline_scaler"}
    assert variables["params"]["layers_0"]["spline_weight"].shape == (3, 8, 4)  # (in, n, out)
    assert variables["grid"]["layers_0"]["grid"].shape == (3, 12)
    y = model.apply(variables, x)
    assert y.shape == (2, 5, 2)
    np.testing.assert_allclose(np.asarray(y.reshape(10, 2)), np.asarray(model.apply(variables, x.reshape(10, 3))), atol=1e-6)


def test_initialisation_distributions():
    in_f, out_f, g = 50, 40, 5
    model = KANLinear(out_f, grid_size=g, scale_noise=0.1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, in_f), jnp.float32))
    p = variables["params"]
    bound = 1 / math.sqrt(in_f)  # kaiming_uniform with a = sqrt(5)
    for name in ("base_weight", "spline_scaler"):
        w = np.asarray(p[name])
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.95 * bound  # fills the interval (2000 draws)
        assert abs(w.mean()) < 0.05 * bound and abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    # spline_weight interpolates noise of size scale_noise / G at the G + 1 interior knots.
    grid = np.asarray(variables["grid"]["grid"], np.float64)
    interior = grid[:, 3:-3].T
    values = np.einsum("bij,ijo->bio", np_bases(interior, grid, 3), np.asarray(p["spline_weight"], np.float64))
    assert np.abs(values).max() <= 0.5 * 0.1 / g + 1e-6
    assert np.abs(values).max() > 0.9 * 0.5 * 0.1 / g
    # scale_base scales the kaiming 'a'.
    v2 = KANLinear(out_f, scale_base=2.0).init(jax.random.key(0), jnp.zeros((1, in_f), jnp.float32))
    assert np.abs(np.asarray(v2["params"]["base_weight"])).max() <= math.sqrt(6 / ((1 + 20) * in_f))
    v3 = KANLinear(out_f, enable_standalone_scale_spline=False).init(jax.random.key(0), jnp.zeros((1, in_f)))
    assert "spline_scaler" not in v3["params"]


def test_gradients_match_finite_differences_float64():
    model = KAN([3, 4, 2], param_dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(0), (7, 3), jnp.float64, -0.9, 0.9)
    variables = model.init(jax.random.key(1), x)

    def loss(params, xs):
        return jnp.sum(jnp.sin(model.apply({"params": params, "grid": variables["grid"]}, xs)))

    check_grads(jax.jit(loss), (variables["params"], x), order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)
    grads = jax.jit(jax.grad(loss))(variables["params"], x)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_inputs_outside_the_grid_give_base_branch_only():
    model = KANLinear(3)
    x = jnp.array([[5.0, -7.0], [40.0, -1e4]], jnp.float32)
    variables = model.init(jax.random.key(0), x)
    y = model.apply(variables, x)
    assert bool(jnp.all(jnp.isfinite(y)))
    base = jax.nn.silu(x) @ variables["params"]["base_weight"].T
    np.testing.assert_allclose(np.asarray(y), np.asarray(base), rtol=1e-6)


def _layer_outputs(model, variables, x):
    """Per-layer outputs of a KAN (to check each layer's function separately)."""
    outs = []
    for i, width in enumerate(model.layers_hidden[1:]):
        layer = KANLinear(width, grid_eps=model.grid_eps, spline_order=model.spline_order)
        sub = {"params": variables["params"][f"layers_{i}"], "grid": variables["grid"][f"layers_{i}"]}
        x = layer.apply(sub, x)
        outs.append(x)
    return outs


def test_update_grid_keeps_function_exactly_when_grid_is_representable():
    # grid_eps=1, margin=0 and samples spanning exactly [lo, hi]: the new grid equals the old
    # one, so the refit must reproduce the layer. efficient-kan's double scaling fails here.
    model = KAN([2, 3], grid_eps=1.0)
    x = jax.random.uniform(jax.random.key(0), (300, 2), jnp.float32, -1, 1)
    x = x.at[0].set(-1.0).at[1].set(1.0)
    variables = model.init(jax.random.key(1), x)
    new = update_grid(model, variables, x[:, :], margin=0.0)
    np.testing.assert_allclose(
        np.asarray(new["grid"]["layers_0"]["grid"]), np.asarray(variables["grid"]["layers_0"]["grid"]), atol=1e-6
    )
    y0 = model.apply(variables, x)
    y1 = model.apply(new, x)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y0), atol=1e-5 * float(jnp.abs(y0).max()) + 1e-6)
    # The scaler is kept and applied once: the scaled weight of layer 0 is unchanged.
    p0, p1 = variables["params"]["layers_0"], new["params"]["layers_0"]
    np.testing.assert_allclose(np.asarray(p1["spline_scaler"]), np.asarray(p0["spline_scaler"]))
    np.testing.assert_allclose(
        np.asarray(p1["spline_weight"] * p1["spline_scaler"][:, None, :]),
        np.asarray(p0["spline_weight"] * p0["spline_scaler"][:, None, :]),
        atol=1e-5,
    )


def test_update_grid_keeps_function_on_samples_general_case():
    model = KAN([3, 4, 2])
    key_x, key_p = jax.random.split(jax.random.key(2))
    x = jax.random.uniform(key_x, (2000, 3), jnp.float32, -0.8, 0.9)
    variables = model.init(key_p, x)
    new = model.update_grid(variables, x)
    g_old, g_new = variables["grid"]["layers_0"]["grid"], new["grid"]["layers_0"]["grid"]
    assert float(jnp.abs(g_new - g_old).max()) > 0.05  # the grid really moved
    # First interior knot: 0.02 * (min - margin) + 0.98 * min.
    assert float(g_new[0, 3]) == pytest.approx(float(x[:, 0].min()) - 0.02 * 0.01, abs=1e-5)
    # Each layer's function on its samples is kept up to the least-squares residual: stated
    # tolerance 2e-2 of the output scale (efficient-kan's double scaling errs by O(1)).
    old_outs = _layer_outputs(model, variables, x)
    new_outs = _layer_outputs(model, new, x)
    for y0, y1 in zip(old_outs, new_outs):
        assert float(jnp.abs(y1 - y0).max()) <= 2e-2 * float(jnp.abs(y0).max())


def test_refine_keeps_function_nested_grid_exactly_and_general_case_closely():
    model = KAN([2, 3], grid_eps=1.0)
    x = jax.random.uniform(jax.random.key(3), (500, 2), jnp.float32, -1, 1).at[0].set(-1.0).at[1].set(1.0)
    variables = model.init(jax.random.key(4), x)
    fine = refine(model, variables, x, grid_size=10, margin=0.0)
    assert fine["params"]["layers_0"]["spline_weight"].shape == (2, 13, 3)
    assert fine["grid"]["layers_0"]["grid"].shape == (2, 17)
    np.testing.assert_allclose(np.asarray(fine["grid"]["layers_0"]["grid"][0, 3:-3]), np.linspace(-1, 1, 11), atol=1e-6)
    y0, y1 = model.apply(variables, x), model.apply(fine, x)
    # Uniform G=5 -> G=10 on the same range: the old spline space is nested in the new one.
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y0), atol=1e-5 * float(jnp.abs(y0).max()) + 1e-6)
    # General: two layers, quantile-mixed grids of another size, samples in a sub-range;
    # each layer's function kept to 2e-2 of its output scale.
    model2 = KAN([2, 3, 1])
    v = model2.init(jax.random.key(5), x)
    xs = x * 0.7
    fine2 = model2.refine(v, xs, grid_size=8)
    assert fine2["params"]["layers_1"]["spline_weight"].shape == (3, 11, 1)
    for ya, yb in zip(_layer_outputs(model2, v, xs), _layer_outputs(model2, fine2, xs)):
        assert float(jnp.abs(yb - ya).max()) <= 2e-2 * float(jnp.abs(ya).max())


@pytest.mark.slow
def test_refine_opt_state_carries_unchanged_leaves():
    model = KAN([2, 3, 1])
    x = jax.random.uniform(jax.random.key(6), (100, 2), jnp.float32, -1, 1)
    variables = model.init(jax.random.key(7), x)
    tx = optax.adam(1e-2)
    state = tx.init(variables["params"])
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p, "grid": variables["grid"]}, x) ** 2))(
        variables["params"]
    )
    _, state = tx.update(grads, state, variables["params"])
    fine = refine(model, variables, x, grid_size=7)
    carried = refine_opt_state(state, tx, fine["params"])
    mu_old, mu_new = state[0].mu["layers_0"], carried[0].mu["layers_0"]
    np.testing.assert_array_equal(np.asarray(mu_new["base_weight"]), np.asarray(mu_old["base_weight"]))
    assert mu_new["spline_weight"].shape == (2, 10, 3)
    np.testing.assert_array_equal(np.asarray(mu_new["spline_weight"]), 0.0)
    assert int(carried[0].count) == 1
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, fine["params"]), carried, fine["params"])
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, fine["params"])


def test_compiled_step_sees_updated_grid_without_recompiling():
    model = KAN([2, 4, 1])
    x = jax.random.uniform(jax.random.key(8), (400, 2), jnp.float32, -1, 1)
    variables = model.init(jax.random.key(9), x)

    @jax.jit
    def forward(params, grid, xs):
        return model.apply({"params": params, "grid": grid}, xs)

    y_old = forward(variables["params"], variables["grid"], x)
    new = update_grid(model, variables, 2.5 * x)  # samples in [-2.5, 2.5]: the grid widens
    y_new = forward(new["params"], new["grid"], 2.5 * x)
    np.testing.assert_allclose(np.asarray(y_new), np.asarray(model.apply(new, 2.5 * x)), atol=1e-6)
    assert float(jnp.abs(forward(new["params"], new["grid"], x) - y_old).max()) > 1e-4
    assert forward._cache_size() == 1
    # update_grid itself is jit-able for a fixed grid size.
    jitted = jax.jit(functools.partial(update_grid, model))(variables, 2.5 * x)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(new)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_regularization_loss_matches_numpy():
    model = KAN([3, 4, 2])
    variables = model.init(jax.random.key(10), jnp.zeros((1, 3), jnp.float32))
    want = 0.0
    for name in ("layers_0", "layers_1"):
        l1 = np.abs(np.asarray(variables["params"][name]["spline_weight"], np.float64)).mean(1)  # (in, out)
        p = l1 / l1.sum()
        want += 0.5 * l1.sum() + 2.0 * -(p * np.log(p)).sum()
    got = kan_jax.regularization_loss(variables["params"], 0.5, 2.0)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(model.regularization_loss(variables["params"], 0.5, 2.0)) == pytest.approx(want, rel=1e-5)
    zeros = jax.tree.map(jnp.zeros_like, variables["params"])
    assert float(kan_jax.regularization_loss(zeros)) == 0.0


class StemKANHead(nn.Module):
    """A user-written model: a Dense stem, then a KAN head."""

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(8)(x))
        return KANLinear(1, grid_size=6)(x)


def test_kan_head_inside_user_model_trains_under_jit():
    key_x, key_p = jax.random.split(jax.random.key(11))
    x = jax.random.uniform(key_x, (256, 4), jnp.float32, -1, 1)
    y = jnp.sin(2.0 * x[:, :1]) * x[:, 1:2] + 0.5 * x[:, 2:3] ** 2
    model = StemKANHead()
    variables = model.init(key_p, x)
    tx = optax.adam(1e-2)

    def loss_fn(params, grid):
        return jnp.mean((model.apply({"params": params, "grid": grid}, x) - y) ** 2)

    @jax.jit
    def step(params, opt_state, grid):
        loss, grads = jax.value_and_grad(loss_fn)(params, grid)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state, grid = variables["params"], tx.init(variables["params"]), variables["grid"]
    assert "grid" not in jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(params)[0])
    initial = float(loss_fn(params, grid))
    for _ in range(50):
        params, opt_state, _ = step(params, opt_state, grid)
    final = float(loss_fn(params, grid))
    assert final < 0.3 * initial
    # Grid update inside the user model (the KAN head adapts to the stem's activations) keeps
    # the fit: the loss moves by less than 5%.
    new = update_grid(model, {"params": params, "grid": grid}, x)
    assert float(loss_fn(new["params"], new["grid"])) == pytest.approx(final, rel=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(features=3, grid_size=0), "grid_size"),
        (dict(features=3, spline_order=-1), "spline_order"),
        (dict(features=3, grid_range=(1.0, -1.0)), "grid_range"),
        (dict(features=3, grid_range=(0.5, 0.5)), "grid_range"),
        (dict(features=3, scale_noise=-0.1), "scale_noise"),
        (dict(features=3, scale_base=-1.0), "scale_base"),
        (dict(features=3, scale_spline=-1.0), "scale_spline"),
        (dict(features=3, grid_eps=1.5), "grid_eps"),
        (dict(features=0), "features"),
    ],
)
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KANLinear(**kwargs)


def test_kan_construction_and_input_errors():
    with pytest.raises(ValueError, match="layers_hidden"):
        KAN([3])
    with pytest.raises(ValueError, match="grid_size"):
        KAN([3, 2], grid_size=0)
    layer = KANLinear(2)
    variables = layer.init(jax.random.key(0), jnp.zeros((1, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"in_features=3.*shape \(5, 4\)"):
        layer.apply(variables, jnp.zeros((5, 4), jnp.float32))
    with pytest.raises(ValueError, match="'grid' collection"):
        layer.apply({"params": variables["params"]}, jnp.zeros((5, 3), jnp.float32))
    with pytest.raises(ValueError, match=r"last dimension 3.*shape \(2, 7\)"):
        KAN([3, 2]).init(jax.random.key(0), jnp.zeros((2, 7)))


@pytest.mark.parametrize("param_dtype", [jnp.bfloat16, jnp.float64])
def test_dtypes(param_dtype):
    model = KAN([3, 2], param_dtype=param_dtype)
    x = jnp.ones((4, 3), param_dtype) * 0.3
    variables = model.init(jax.random.key(0), x)
    assert all(leaf.dtype == param_dtype for leaf in jax.tree.leaves(variables))
    y = model.apply(variables, x)
    assert y.dtype == param_dtype and bool(jnp.all(jnp.isfinite(y)))


def test_layer_fields_are_dataclass_fields_with_the_configurations_defaults():
    config_names = set(kan_jax.KANLayerConfig.field_names())
    for cls, own in ((KANLinear, "features"), (KAN, "layers_hidden")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert config_names | {own} <= set(fields)
        for name in config_names:
            assert fields[name].default == getattr(kan_jax.KANLayerConfig(), name), name
            assert fields[name].kw_only, name
    assert KANLinear(3, grid_size=7).config == kan_jax.KANLayerConfig(grid_size=7)


def test_kan_passes_its_configuration_to_every_layer():
    model = KAN([3, 4, 2], grid_size=7, spline_order=2, enable_standalone_scale_spline=False,
                grid_range=(-2.0, 3.0), param_dtype=jnp.float64)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.float64))
    for name, fan_in in (("layers_0", 3), ("layers_1", 4)):
        params = variables["params"][name]
        assert set(params) == {"base_weight", "spline_weight"}  # no scaler
        assert params["spline_weight"].shape == (fan_in, 7 + 2, params["base_weight"].shape[0])
        grid = np.asarray(variables["grid"][name]["grid"])
        assert grid.shape == (fan_in, 7 + 2 * 2 + 1) and grid.dtype == np.float64
        np.testing.assert_allclose(grid[0, [2, -3]], [-2.0, 3.0])
