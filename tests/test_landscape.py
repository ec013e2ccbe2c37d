"""Tests of kan_jax.curvature.landscape (interpolation, slices, filter normalisation) and kan_jax.training.checkpoint."""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax.training.checkpoint import CheckpointError, load_params, save_params
from kan_jax.curvature import filter_normalize, interpolate, random_direction, slice_2d


@functools.partial(jax.jit, static_argnames=("dtype", "out", "inp", "g_plus_k"))
def kan_like_params(key, dtype=jnp.float64, out=3, inp=4, g_plus_k=8):
    """Parameter tensors with a KAN layer's layout plus a Flax Dense layer and a bias."""
    k = jax.random.split(key, 5)
    return {
        "kan": {
            "base_weight": jax.random.normal(k[0], (out, inp), dtype),
            "spline_weight": 0.1 * jax.random.normal(k[1], (inp, g_plus_k, out), dtype),
            "spline_scaler": jax.random.normal(k[2], (inp, out), dtype),
        },
        "dense": {"kernel": jax.random.normal(k[3], (inp, out), dtype), "bias": jax.random.normal(k[4], (out,), dtype)},
    }


def model_loss(params, data):
    """A small nonlinear loss touching every leaf."""
    x, y = data
    kan = params["kan"]
    h = jnp.tanh(x @ kan["base_weight"].T) + jnp.sin(x @ (kan["spline_weight"].sum(1) * kan["spline_scaler"]))
    out = h @ params["dense"]["kernel"].T + params["dense"]["bias"][: x.shape[1]].sum()
    return jnp.mean((out - y) ** 2)


REF_LOSS = jax.jit(model_loss)  # reference evaluations, one point at a time
REF_POINT = jax.jit(lambda t0, t1, al, data: model_loss(jax.tree.map(lambda a, b: (1 - al) * a + al * b, t0, t1), data))


@functools.partial(jax.jit, static_argnames=("dtype",))
def make_data(seed, dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (32, 4), dtype), jax.random.normal(k2, (32, 4), dtype)


def test_interpolate_equals_python_loop():
    t0 = kan_like_params(jax.random.key(0))
    t1 = kan_like_params(jax.random.key(1))
    alphas = jnp.linspace(-1.5, 2.0, 50)
    for seed in (0, 1):  # a second dataset reuses the compiled function (data is an input)
        data = make_data(seed)
        got = np.asarray(interpolate(model_loss, t0, t1, alphas, data=data))
        ref = [float(REF_POINT(t0, t1, al, data)) for al in np.asarray(alphas)]
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    # chunked evaluation gives the same numbers; closure form loss_fn(params) works too
    chunked = interpolate(model_loss, t0, t1, alphas, data=data, chunk_size=7)
    np.testing.assert_allclose(np.asarray(chunked), got, rtol=1e-12)
    closed = interpolate(lambda p: model_loss(p, data), t0, t1, alphas[:3])
    np.testing.assert_allclose(np.asarray(closed), got[:3], rtol=1e-12)


def test_slice_2d_equals_python_loop_and_uses_filter_normalised_directions():
    theta = kan_like_params(jax.random.key(2))
    data = make_data(3)
    d1 = random_direction(jax.random.key(4), theta, filter_normalize=False)
    d2 = random_direction(jax.random.key(5), theta, filter_normalize=False)
    alphas, betas = jnp.linspace(-1.0, 1.0, 5), jnp.linspace(-0.5, 0.5, 4)
    got = np.asarray(slice_2d(model_loss, theta, d1, d2, alphas, betas, data=data, filter_normalize=True))
    assert got.shape == (5, 4)
    n1, n2 = filter_normalize(d1, theta), filter_normalize(d2, theta)
    for i, a in enumerate(np.asarray(alphas)):
        for j, b in enumerate(np.asarray(betas)):
            p = jax.tree.map(lambda t, u, v: t + a * u + b * v, theta, n1, n2)
            np.testing.assert_allclose(got[i, j], float(REF_LOSS(p, data)), rtol=1e-12)
    # the centre of the plane is the loss at theta
    centre = slice_2d(model_loss, theta, d1, d2, jnp.zeros(1), jnp.zeros(1), data=data)
    np.testing.assert_allclose(float(centre[0, 0]), float(REF_LOSS(theta, data)), rtol=1e-14)


def test_filter_normalisation_matches_parameter_row_norms():
    """Property: each filter of the normalised direction has the norm of the matching parameter
    filter (axis-0 rows of base_weight, the last axis of spline_weight, spline_scaler and a Flax
    kernel); 1-D leaves zeroed
    by default, rescaled as a whole with vector_mode="whole"."""
    theta = kan_like_params(jax.random.key(6))
    d = random_direction(jax.random.key(7), theta)  # filter-normalised by default
    for name in ("base_weight", "spline_weight", "spline_scaler"):
        t, u = np.asarray(theta["kan"][name]), np.asarray(d["kan"][name])
        axes = tuple(range(t.ndim - 1)) if name != "base_weight" else (1,)  # all but the output axis
        np.testing.assert_allclose(np.sqrt((u**2).sum(axes)), np.sqrt((t**2).sum(axes)), rtol=1e-12)
    t, u = np.asarray(theta["dense"]["kernel"]), np.asarray(d["dense"]["kernel"])
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), np.linalg.norm(t, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(d["dense"]["bias"]), 0.0)
    whole = filter_normalize(random_direction(jax.random.key(8), theta, filter_normalize=False), theta, vector_mode="whole")
    np.testing.assert_allclose(np.linalg.norm(whole["dense"]["bias"]), np.linalg.norm(theta["dense"]["bias"]), rtol=1e-12)
    # direction is parallel to the raw one within each filter
    raw = random_direction(jax.random.key(7), theta, filter_normalize=False)["kan"]["spline_weight"][..., 1]
    got = d["kan"]["spline_weight"][..., 1]
    cos = float(jnp.vdot(raw, got) / (jnp.linalg.norm(raw) * jnp.linalg.norm(got)))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
    # a zero parameter row gives a zero direction row, and float32 is kept
    t32 = jax.tree.map(lambda a: a.astype(jnp.float32), theta)
    t32["kan"]["base_weight"] = t32["kan"]["base_weight"].at[0].set(0.0)
    d32 = random_direction(jax.random.key(9), t32)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(d32))
    np.testing.assert_array_equal(np.asarray(d32["kan"]["base_weight"][0]), 0.0)
    with pytest.raises(ValueError, match="vector_mode"):
        filter_normalize(d, theta, vector_mode="bogus")


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


def test_checkpoint_round_trip_and_errors(tmp_path):
    params = {"kan": [{"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)}, {"w": jnp.ones((3,), jnp.float64)}],
              "pair": Pair(jnp.array(2.5, jnp.bfloat16), jnp.arange(3, dtype=jnp.int32))}
    path = tmp_path / "runs" / "theta0.msgpack"
    assert save_params(path, params) == path
    assert [p.name for p in path.parent.iterdir()] == ["theta0.msgpack"]  # no temp file left
    back = load_params(path, target=params)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
    raw = load_params(str(path))  # no target: nested dicts with string keys
    np.testing.assert_array_equal(raw["kan"]["0"]["w"], np.asarray(params["kan"][0]["w"]))
    # overwrite keeps a single file and the new content
    save_params(path, {"x": jnp.zeros(2)})
    assert list(load_params(path)) == ["x"]

    with pytest.raises(FileNotFoundError, match="missing.msgpack"):
        load_params(tmp_path / "missing.msgpack")
    bad = tmp_path / "corrupt.msgpack"
    bad.write_bytes(path.read_bytes()[:-5])  # truncated
    with pytest.raises(CheckpointError, match="corrupt.msgpack"):
        load_params(bad)
    bad.write_bytes(b"\x01")  # valid msgpack, not a checkpoint
    with pytest.raises(ValueError, match="corrupt.msgpack"):
        load_params(bad)
    with pytest.raises(CheckpointError, match="target"):
        load_params(path, target={"y": jnp.zeros(2)})
    # same structure, another shape (e.g. a spline_weight saved in efficient-kan's layout)
    with pytest.raises(CheckpointError, match=r"\['x'\] has shape \(2,\), the target expects \(3,\)"):
        load_params(path, target={"x": jnp.zeros(3)})
    assert os.listdir(path.parent) == ["theta0.msgpack"]


def test_atomic_write_permissions_failure_and_writer(tmp_path):
    import os
    import stat

    from kan_jax.io import atomic_write

    target = tmp_path / "sub" / "out.json"
    atomic_write(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600

    def failing(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == '{"a": 1}'  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temporary left
    png = atomic_write(tmp_path / "fig.png", lambda p: p.write_bytes(b"\x89PNG" + p.suffix.encode()))
    assert png.read_bytes() == b"\x89PNG.png"  # the writer sees the destination's suffix
