"""B-spline maths against independent references (scalar de Boor in float64, NumPy lstsq)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax import splines


def de_boor(x: float, knots: np.ndarray, coeffs: np.ndarray, k: int) -> float:
    """Spline value sum_j c_j B_{j,k}(x) by de Boor's algorithm (scalar, float64).

    Valid for knots[k] <= x < knots[len(coeffs)].
    """
    m = int(np.searchsorted(knots, x, side="right")) - 1
    d = [float(coeffs[m - k + j]) for j in range(k + 1)]
    for r in range(1, k + 1):
        for j in range(k, r - 1, -1):
            lo, hi = knots[m - k + j], knots[m + 1 + j - r]
            alpha = (x - lo) / (hi - lo)
            d[j] = (1.0 - alpha) * d[j - 1] + alpha * d[j]
    return d[k]


def reference_bases(x: float, knots: np.ndarray, k: int) -> np.ndarray:
    """All bases B_{j,k}(x) on ``knots`` from de Boor with unit coefficients.

    The knot vector is padded by k knots on each side so that the whole extended grid
    [t_0, t_{M-1}) lies in de Boor's valid range; the original bases are the padded
    vector's bases k..k+n-1 (a B-spline depends only on its own k+2 knots).
    """
    n = len(knots) - k - 1
    if not knots[0] <= x < knots[-1]:
        return np.zeros(n)
    h_lo, h_hi = knots[1] - knots[0], knots[-1] - knots[-2]
    padded = np.concatenate([knots[0] - h_lo * np.arange(k, 0, -1), knots, knots[-1] + h_hi * np.arange(1, k + 1)])
    n_padded = n + 2 * k
    return np.array([de_boor(x, padded, np.eye(n_padded)[k + j], k) for j in range(n)])


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_bases_match_scalar_de_boor_float64(k):
    rng = np.random.default_rng(k)
    in_features, grid_size = 3, 6
    # Non-uniform knots (one row per input) and points spread over and beyond the grid.
    inner = np.sort(rng.uniform(-1, 1, size=(in_features, grid_size + 2 * k + 1)), axis=1)
    grid = inner + np.linspace(0, 0.5, grid_size + 2 * k + 1)  # keep knots distinct
    x = rng.uniform(grid.min() - 0.3, grid.max() + 0.3, size=(40, in_features))
    got = np.asarray(splines.b_spline_bases(jnp.asarray(x), jnp.asarray(grid), k))
    assert got.dtype == np.float64 and got.shape == (40, in_features, grid_size + k)
    want = np.stack([np.stack([reference_bases(x[b, i], grid[i], k) for i in range(in_features)]) for b in range(40)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_partition_of_unity_inside_grid_range(k):
    grid = splines.uniform_grid(7, k, (-2.0, 3.0), in_features=4, dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(0), (500, 4), jnp.float64, -2.0, 3.0)
    total = splines.b_spline_bases(x, grid, k).sum(-1)
    np.testing.assert_allclose(np.asarray(total), 1.0, atol=1e-12)


def test_bases_vanish_outside_extended_grid_and_are_nonnegative():
    grid = splines.uniform_grid(5, 3, in_features=2, dtype=jnp.float64)
    x = jnp.array([[-1e3, 9.0], [-2.3, 2.21], [jnp.inf, -jnp.inf]])
    b = splines.b_spline_bases(x, grid, 3)
    np.testing.assert_array_equal(np.asarray(b), 0.0)
    inside = splines.b_spline_bases(jax.random.uniform(jax.random.key(1), (100, 2), jnp.float64, -2.2, 2.2), grid, 3)
    assert float(inside.min()) >= 0.0


def test_uniform_grid_matches_formula():
    g = np.asarray(splines.uniform_grid(5, 3, (-1.0, 1.0), in_features=3, dtype=jnp.float64))
    h = 0.4
    expected = -1.0 + h * np.arange(-3, 5 + 3 + 1)
    assert g.shape == (3, 12)
    np.testing.assert_allclose(g, np.broadcast_to(expected, (3, 12)), atol=1e-15)
    # The host row: a NumPy array (reading it needs no device), the float64 formula rounded once.
    row = splines.uniform_knots_host(5, 3, (-1.0, 1.0), jnp.float32)
    assert isinstance(row, np.ndarray) and row.dtype == np.float32
    np.testing.assert_array_equal(row, expected.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(splines.uniform_grid(5, 3, (-1.0, 1.0), dtype=jnp.bfloat16)), expected.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="grid_size"):
        splines.uniform_knots_host(0, 3)


def test_fit_coefficients_equals_numpy_lstsq():
    rng = np.random.default_rng(3)
    k, in_features, out_features = 3, 2, 3
    grid = splines.uniform_grid(5, k, in_features=in_features, dtype=jnp.float64)
    x = rng.uniform(-1, 1, size=(200, in_features))
    y = rng.normal(size=(200, in_features, out_features))
    coeff = np.asarray(splines.fit_spline_coefficients(jnp.asarray(x), jnp.asarray(y), grid, k))
    assert coeff.shape == (in_features, 8, out_features)
    for i in range(in_features):
        a = np.stack([reference_bases(xi, np.asarray(grid[i]), k) for xi in x[:, i]])
        want, *_ = np.linalg.lstsq(a, y[:, i, :], rcond=None)
        np.testing.assert_allclose(coeff[i], want, rtol=1e-9, atol=1e-10)


def test_fit_reproduces_a_spline_exactly():
    k = 3
    grid = splines.uniform_grid(6, k, in_features=3, dtype=jnp.float64)
    c = jax.random.normal(jax.random.key(2), (3, 9, 2), jnp.float64)  # (in, n, out)
    x = jax.random.uniform(jax.random.key(3), (300, 3), jnp.float64, -1, 1)
    y = jnp.einsum("bij,ijo->bio", splines.b_spline_bases(x, grid, k), c)
    np.testing.assert_allclose(np.asarray(splines.fit_spline_coefficients(x, y, grid, k)), np.asarray(c), atol=1e-9)


def test_adaptive_grid_matches_hand_computation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(101, 2))
    g = np.asarray(splines.adaptive_grid(jnp.asarray(x), 4, 2, grid_eps=0.25, margin=0.1))
    assert g.shape == (2, 4 + 2 * 2 + 1)
    for i in range(2):
        s = np.sort(x[:, i])
        quant = s[[0, 25, 50, 75, 100]]
        step = (s[-1] - s[0] + 0.2) / 4
        uni = s[0] - 0.1 + step * np.arange(5)
        mid = 0.25 * uni + 0.75 * quant
        want = np.concatenate([mid[0] - step * np.array([2, 1]), mid, mid[-1] + step * np.array([1, 2])])
        np.testing.assert_allclose(g[i], want, atol=1e-12)


def test_adaptive_grid_is_increasing_for_constant_inputs():
    x = jnp.full((64, 3), -1.0)
    g = np.asarray(splines.adaptive_grid(x, 5, 3))
    assert np.all(np.diff(g, axis=1) > 0)
    b = splines.b_spline_bases(x, jnp.asarray(g), 3)
    assert np.all(np.isfinite(np.asarray(b)))
    np.testing.assert_allclose(np.asarray(b.sum(-1)), 1.0, atol=1e-5)


def test_bases_jit_vmap_grad_and_half_precision():
    grid = splines.uniform_grid(5, 3, in_features=2)
    x = jax.random.uniform(jax.random.key(5), (4, 7, 2), jnp.float32, -1, 1)
    eager = splines.b_spline_bases(x, grid, 3)
    jitted = jax.jit(splines.b_spline_bases, static_argnums=2)(x, grid, 3)
    mapped = jax.vmap(lambda xi: splines.b_spline_bases(xi, grid, 3))(x)
    assert eager.shape == (4, 7, 2, 8) and eager.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), atol=1e-6)
    # d/dx sum_j B_j(x) = 0 inside the range (partition of unity).
    dsum = jax.grad(lambda v: splines.b_spline_bases(v, grid, 3).sum())(x)
    np.testing.assert_allclose(np.asarray(dsum), 0.0, atol=1e-4)
    for dt in (jnp.bfloat16, jnp.float16):
        b = splines.b_spline_bases(x.astype(dt), grid, 3)
        assert b.dtype == dt
        np.testing.assert_allclose(np.asarray(b.astype(jnp.float32).sum(-1)), 1.0, atol=3e-2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grid_size=0, spline_order=3), "grid_size"),
        (dict(grid_size=5, spline_order=-1), "spline_order"),
        (dict(grid_size=5, spline_order=3, grid_range=(1.0, 1.0)), "grid_range"),
        (dict(grid_size=5, spline_order=3, grid_range=(1.0, -1.0)), "hi > lo"),
    ],
)
def test_grid_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        splines.uniform_grid(**kwargs)


def test_shape_errors_name_sizes():
    grid = splines.uniform_grid(5, 3, in_features=3)
    with pytest.raises(ValueError, match="3 rows.*last dimension 4"):
        splines.b_spline_bases(jnp.ones((2, 4)), grid, 3)
    with pytest.raises(ValueError, match=r"\(B, in\).*\(B, in, out\)"):
        splines.fit_spline_coefficients(jnp.ones((5, 3)), jnp.ones((5, 2, 1)), grid, 3)
