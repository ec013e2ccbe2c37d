"""kan_jax.interpret: edge activations against a NumPy reference, the sample-based regulariser,
pruning of a network with known dead edges, the plot's edge panels, conversions and training.

Small float64 networks (KAN [2, 4, 1] and [2, 3, 1], G = 5, k = 3); fresh random inputs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kan_jax import KAN, splines
from kan_jax import interpret as I
from kan_jax import nnx as kan_nnx

f64 = jnp.float64


def np_bases(x: np.ndarray, grid: np.ndarray, k: int) -> np.ndarray:
    """Cox-de Boor in float64 NumPy, one input row at a time: (B, in) -> (B, in, M - k - 1)."""
    out = []
    for i in range(x.shape[1]):
        t = grid[i]
        xi = x[:, i][:, None]
        b = ((xi >= t[:-1]) & (xi < t[1:])).astype(float)
        for p in range(1, k + 1):
            left = (xi - t[: -p - 1]) / (t[p:-1] - t[: -p - 1]) * b[:, :-1]
            right = (t[p + 1 :] - xi) / (t[p + 1 :] - t[1:-p]) * b[:, 1:]
            b = left + right
        out.append(b)
    return np.stack(out, axis=1)


def np_edges(lp: dict, grid: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Edge functions phi[b, o, i] = bw[o,i] silu(x_i) + sum_j B_j(x_i) sw[i,j,o] scaler[i,o]."""
    silu = x / (1 + np.exp(-x))
    w = np.asarray(lp["spline_weight"]) * np.asarray(lp["spline_scaler"])[:, None, :]  # (in, n, out)
    return silu[:, None, :] * np.asarray(lp["base_weight"])[None] + np.einsum("bij,ijo->boi", np_bases(x, grid, k), w)


def linen_net(widths, seed):
    model = KAN(widths, param_dtype=f64)
    variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, widths[0]), f64))
    return model, variables, I.from_linen(model, variables)


def test_edge_activations_sum_to_layer_output_and_match_numpy():
    rng = np.random.default_rng(1)
    model, variables, net = linen_net((2, 4, 1), seed=int(rng.integers(1 << 30)))
    x = rng.uniform(-1.3, 1.3, (64, 2))  # also outside the grid range of the first layer
    y, inputs, acts = I.forward(net.params, net.state, jnp.asarray(x), net.spec)
    h = x
    for l, (lp, ls) in enumerate(zip(net.params, net.state)):
        ref = np_edges(lp, np.asarray(ls["grid"]), h, 3)
        np.testing.assert_allclose(np.asarray(acts[l]), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(inputs[l]), h, rtol=1e-12, atol=1e-12)
        h = ref.sum(-1)  # the layer output is the sum of its edges
    # ... and equals the Linen model's own (matmul) forward pass.
    np.testing.assert_allclose(np.asarray(model.apply(variables, jnp.asarray(x))), h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(y), h, rtol=1e-10, atol=1e-12)
    assert acts[0].shape == (64, 4, 2) and acts[1].shape == (64, 1, 4)


def test_from_nnx_matches_nnx_forward_and_roundtrip_to_linen():
    model = kan_nnx.KAN([2, 3, 1], param_dtype=f64, rngs=nnx.Rngs(7))
    net = I.from_nnx(model)
    x = jax.random.uniform(jax.random.key(8), (32, 2), f64, -1, 1)
    np.testing.assert_allclose(np.asarray(I.apply(net.params, net.state, x, net.spec)), np.asarray(model(x)), rtol=1e-10, atol=1e-12)
    linen, variables = I.to_linen(net)
    np.testing.assert_allclose(np.asarray(linen.apply(variables, x)), np.asarray(model(x)), rtol=1e-10, atol=1e-12)


def test_regularizer_matches_hand_computation():
    rng = np.random.default_rng(2)
    acts = [jnp.asarray(rng.normal(size=(50, 3, 2))), jnp.asarray(rng.normal(size=(50, 1, 3)))]
    params = [{"spline_weight": jnp.asarray(rng.normal(size=(2, 8, 3)))}, {"spline_weight": jnp.asarray(rng.normal(size=(3, 8, 1)))}]
    mu = (0.7, 3.0, 0.2, 0.5)
    ref = 0.0
    for a, p in zip(acts, params):
        l1 = np.abs(np.asarray(a)).mean(0)
        q = l1 / l1.sum()
        w = np.asarray(p["spline_weight"])
        ref += mu[0] * l1.sum() - mu[1] * np.sum(q * np.log(q))
        ref += mu[2] * np.abs(w).mean(1).sum() + mu[3] * np.abs(np.diff(w, axis=1)).mean(1).sum()  # over the n axis
    got = I.activation_regularizer(acts, params, lamb_l1=mu[0], lamb_entropy=mu[1], lamb_coef=mu[2], lamb_coefdiff=mu[3])
    np.testing.assert_allclose(float(got), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="need the layer params"):
        I.activation_regularizer(acts, None, lamb_coef=1.0)


def dead_network():
    """KAN [2, 4, 1] with hidden nodes 1 and 3 disconnected from the output and edge x2 -> h0 zero."""
    _, _, net = linen_net((2, 4, 1), seed=3)
    p0, p1 = dict(net.params[0]), dict(net.params[1])
    p1["base_weight"] = p1["base_weight"].at[:, jnp.array([1, 3])].set(0.0)  # (out, in)
    p1["spline_weight"] = p1["spline_weight"].at[jnp.array([1, 3])].set(0.0)  # (in, n, out)
    p0["base_weight"] = p0["base_weight"].at[0, 1].set(0.0)
    p0["spline_weight"] = p0["spline_weight"].at[1, :, 0].set(0.0)
    return I.KANNet([p0, p1], net.state, net.spec)


def test_prune_removes_dead_nodes_and_edges_and_keeps_the_function():
    net = dead_network()
    x = jax.random.uniform(jax.random.key(4), (200, 2), f64, -1, 1)
    y, _, acts = I.forward(net.params, net.state, x, net.spec)
    small = I.prune(net, x, threshold=1e-9)  # only exact zeros are below it
    assert small.widths == (2, 2, 1)
    y2, _, acts2 = I.forward(small.params, small.state, x, small.spec)
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y), rtol=1e-12, atol=1e-12)
    kept = np.array([0, 2])
    np.testing.assert_allclose(np.asarray(acts2[0]), np.asarray(acts[0])[:, kept, :], rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.asarray(acts2[1]), np.asarray(acts[1])[:, :, kept], rtol=1e-12, atol=0)
    # the zero edge x2 -> h0 is masked, the others kept
    np.testing.assert_array_equal(np.asarray(small.state[0]["mask"]), [[1, 0], [1, 1]])
    np.testing.assert_array_equal(np.asarray(small.state[1]["mask"]), [[1, 1]])
    # the masking variant keeps the shapes and the function
    masked = I.prune_mask(net, x, threshold=1e-9)
    assert masked.widths == (2, 4, 1)
    np.testing.assert_array_equal(np.asarray(masked.state[1]["mask"]), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(np.asarray(masked.state[0]["mask"])[[1, 3]], 0)
    np.testing.assert_allclose(np.asarray(I.apply(masked.params, masked.state, x, masked.spec)), np.asarray(y), rtol=1e-12, atol=1e-12)
    # node scores: incoming = max over the node's input edges, outgoing = max over its output edges
    (inc, out), = I.node_scores(acts)
    e = [np.abs(np.asarray(a)).mean(0) for a in acts]
    np.testing.assert_allclose(np.asarray(inc), e[0].max(1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out), e[1].max(0), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(out)[[1, 3]], 0.0)


def test_plot_has_one_panel_per_alive_edge(tmp_path):
    import matplotlib.pyplot as plt

    _, _, net = linen_net((2, 3, 1), seed=5)
    x = jax.random.uniform(jax.random.key(6), (100, 2), f64, -1, 1)
    fig = I.plot_kan(net, x, tmp_path / "net.png", in_vars=["x_1", "x_2"], out_vars=["y"])
    assert len(I.edge_panels(fig)) == 2 * 3 + 3 * 1
    assert sorted(a.get_label() for a in I.edge_panels(fig))[0] == "edge 0,0,0"
    assert (tmp_path / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = [dict(s) for s in net.state]
    state[0]["mask"] = state[0]["mask"].at[1, 0].set(0.0)
    fig2 = I.plot_kan(I.KANNet(net.params, state, net.spec), x, tmp_path / "net.pdf")
    assert len(I.edge_panels(fig2)) == 8
    assert (tmp_path / "net.pdf").read_bytes()[:4] == b"%PDF"
    plt.close("all")


def test_adam_training_reduces_the_loss_and_grid_update_keeps_the_function():
    _, _, net = linen_net((2, 3, 1), seed=9)
    x = jax.random.uniform(jax.random.key(10), (128, 2), f64, -1, 1)
    y = jnp.sin(2 * x[:, :1]) + x[:, 1:] ** 2
    trained, hist = I.train_adam(net, x, y, 300, lr=1e-2, lamb=1e-3)
    assert hist[1] < 0.1 * hist[0]
    # same grid size: the new grid is the adaptive grid of the samples, the scaled spline
    # weights their least-squares fit (NumPy, on NumPy bases) to the old splines' outputs
    upd = I.update_grids(trained, x)
    p0, x0 = trained.params[0], np.asarray(x)
    new_grid = np.asarray(splines.adaptive_grid(x, 5, 3, 0.02, 0.01))
    np.testing.assert_allclose(np.asarray(upd.state[0]["grid"]), new_grid, rtol=1e-12)
    scaler = np.asarray(p0["spline_scaler"])
    old = np.einsum("bij,ijo->bio", np_bases(x0, np.asarray(trained.state[0]["grid"]), 3),
                    np.asarray(p0["spline_weight"]) * scaler[:, None, :])
    bases = np_bases(x0, new_grid, 3)
    ref = np.stack([np.linalg.lstsq(bases[:, i], old[:, i], rcond=None)[0] for i in range(2)]) / scaler[:, None, :]
    np.testing.assert_allclose(np.asarray(upd.params[0]["spline_weight"]), ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        np.asarray(I.apply(upd.params, upd.state, x, upd.spec)),
        np.asarray(I.apply(trained.params, trained.state, x, trained.spec)),
        atol=5e-2,
    )


def test_errors_name_expected_and_got():
    _, _, net = linen_net((2, 3, 1), seed=11)
    with pytest.raises(ValueError, match=r"expected inputs of shape \(B, 2\)"):
        I.forward(net.params, net.state, jnp.zeros((4, 3)), net.spec)
    with pytest.raises(ValueError, match="one grid per layer"):
        I.from_params([net.params[0]], [], base_activation=jax.nn.silu)
    with pytest.raises(TypeError, match="unknown regulariser arguments"):
        I.train_adam(net, jnp.zeros((4, 2)), jnp.zeros((4, 1)), 1, lamb_foo=1.0)
