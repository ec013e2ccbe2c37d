"""B-spline maths for KAN layers: knot grids, bases, least-squares fits, adaptive grids.

Every function here is pure and safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (the
grid size and spline order are static Python integers; arrays may be traced). Shapes use

* ``B`` samples, ``in`` input features, ``out`` output features,
* ``G`` grid intervals, ``k`` spline order (degree), ``n = G + k`` bases per input,
* ``M = G + 2k + 1`` knots per input (the grid extended by ``k`` knots each side).

References
----------
C. de Boor, *A Practical Guide to Splines*, Springer (1978), ch. IX (Cox-de Boor recursion).
Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
Blealtan, *efficient-kan* (PyTorch), the basis-then-matmul formulation used here.
"""
from __future__ import annotations

from typing import Optional

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "uniform_grid",
    "b_spline_bases",
    "num_bases",
    "fit_spline_coefficients",
    "adaptive_grid",
    "spline_order_of",
]


def uniform_grid(
    grid_size: int,
    spline_order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    in_features: Optional[int] = None,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    r"""Uniform knot vector extended by ``spline_order`` knots on each side.

    .. math:: h = (hi - lo) / G, \qquad t_i = lo + h\,i, \quad i = -k, \dots, G + k.

    Parameters
    ----------
    grid_size:
        Number of intervals ``G >= 1`` between ``lo`` and ``hi``.
    spline_order:
        Spline order (degree) ``k >= 0``.
    grid_range:
        ``(lo, hi)`` with ``hi > lo``.
    in_features:
        If given, the knot row is repeated for every input: shape ``(in, G + 2k + 1)``;
        otherwise shape ``(G + 2k + 1,)``.
    dtype:
        Floating dtype of the result.
    """
    _check_grid_args(grid_size, spline_order, grid_range)
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid_size
    knots = jnp.asarray(np.arange(-spline_order, grid_size + spline_order + 1) * h + lo, dtype=dtype)
    if in_features is None:
        return knots
    if in_features < 1:
        raise ValueError(f"in_features must be >= 1, got {in_features}")
    return jnp.broadcast_to(knots, (in_features, knots.shape[0]))


def num_bases(grid: jax.Array, spline_order: int) -> int:
    """Number of B-spline bases ``n = M - k - 1`` on a knot grid with ``M`` knots per input."""
    n = grid.shape[-1] - spline_order - 1
    if n < 1:
        raise ValueError(
            f"a grid with {grid.shape[-1]} knots per input has no B-spline bases of order {spline_order}"
        )
    return n


def spline_order_of(grid: jax.Array, n_bases: int) -> int:
    """Spline order ``k = M - n - 1`` implied by ``M`` knots and ``n`` bases per input."""
    return grid.shape[-1] - n_bases - 1


def _safe_inv(den: jax.Array) -> jax.Array:
    # Repeated knots give zero-width supports; the matching lower-order basis is zero there,
    # so the usual convention 0/0 := 0 applies: use 1/0 := 0 (finite values and gradients).
    zero = den == 0
    return jnp.where(zero, 0.0, 1.0 / jnp.where(zero, 1.0, den))


@functools.partial(jax.jit, static_argnames=("spline_order",))
def b_spline_bases(x: jax.Array, grid: jax.Array, spline_order: int) -> jax.Array:
    r"""B-spline basis values by the Cox-de Boor recursion.

    .. math::
        B_{j,0}(x) &= [t_j \le x < t_{j+1}], \\
        B_{j,p}(x) &= \frac{x - t_j}{t_{j+p} - t_j} B_{j,p-1}(x)
                    + \frac{t_{j+p+1} - x}{t_{j+p+1} - t_{j+1}} B_{j+1,p-1}(x).

    Inside ``[t_k, t_{G+k})`` the bases sum to one (partition of unity); outside the extended
    grid ``[t_0, t_{M-1})`` they are all zero.

    Parameters
    ----------
    x:
        Inputs, shape ``(..., in)``.
    grid:
        Knots, shape ``(in, M)`` (one non-decreasing row per input) or ``(M,)`` shared.
    spline_order:
        Order ``k >= 0`` (static).

    Returns
    -------
    jax.Array
        Shape ``(..., in, M - k - 1)``, dtype of ``x``.
    """
    if spline_order < 0:
        raise ValueError(f"spline_order must be >= 0, got {spline_order}")
    num_bases(grid, spline_order)
    if grid.ndim == 2 and grid.shape[0] != x.shape[-1]:
        raise ValueError(
            f"grid has {grid.shape[0]} rows (one per input feature) but x has last dimension {x.shape[-1]}"
        )
    g = jnp.asarray(grid, dtype=x.dtype)
    # Clamp far-away (even infinite) inputs to just outside the extended grid, where all bases
    # are 0, so that 0 * inf never produces NaN; the gradient there is 0 either way.
    x = jnp.clip(x, g[..., 0] - 1, g[..., -1] + 1)
    # Each basis is its own (..., in) array and the knots are (in,) rows: every operation is an
    # elementwise op vectorised along the inputs, which XLA fuses into one loop. (Slicing a
    # (..., in, M) array along its short last axis instead is ~15x slower on CPU.)
    t = [g[..., j] for j in range(g.shape[-1])]
    bases = [((x >= t[j]) & (x < t[j + 1])).astype(x.dtype) for j in range(len(t) - 1)]
    for p in range(1, spline_order + 1):
        bases = [
            (x - t[j]) * _safe_inv(t[j + p] - t[j]) * bases[j]
            + (t[j + p + 1] - x) * _safe_inv(t[j + p + 1] - t[j + 1]) * bases[j + 1]
            for j in range(len(bases) - 1)
        ]
    return jnp.stack(bases, axis=-1)


@functools.partial(jax.jit, static_argnames=("spline_order", "rcond"))
def fit_spline_coefficients(
    x: jax.Array,
    y: jax.Array,
    grid: jax.Array,
    spline_order: int,
    rcond: Optional[float] = None,
) -> jax.Array:
    r"""Least-squares spline coefficients reproducing target curves (efficient-kan's ``curve2coeff``).

    For every input ``i`` and output ``o`` solve

    .. math:: \min_c \sum_b \Big(\sum_j B_j(x_{b,i})\, c_{o,i,j} - y_{b,i,o}\Big)^2

    with an SVD-based least-squares solver (minimum-norm solution when the system is
    under-determined or rank deficient), never the normal equations.

    Parameters
    ----------
    x:
        Sample points, shape ``(B, in)``.
    y:
        Target values per input and output, shape ``(B, in, out)``.
    grid:
        Knots, shape ``(in, M)``.
    spline_order:
        Order ``k``.
    rcond:
        Cut-off for small singular values, as in ``jnp.linalg.lstsq``.

    Returns
    -------
    jax.Array
        Coefficients, shape ``(out, in, M - k - 1)``.
    """
    if x.ndim != 2 or y.ndim != 3 or y.shape[:2] != x.shape:
        raise ValueError(f"expected x of shape (B, in) and y of shape (B, in, out); got {x.shape} and {y.shape}")
    a = jnp.swapaxes(b_spline_bases(x, grid, spline_order), 0, 1)  # (in, B, n)
    b = jnp.swapaxes(y, 0, 1).astype(a.dtype)  # (in, B, out)
    solve = jax.vmap(lambda ai, bi: jnp.linalg.lstsq(ai, bi, rcond=rcond)[0])
    return jnp.transpose(solve(a, b), (2, 0, 1))


@functools.partial(jax.jit, static_argnames=("grid_size", "spline_order"))
def adaptive_grid(
    x: jax.Array,
    grid_size: int,
    spline_order: int,
    grid_eps: float = 0.02,
    margin: float = 0.01,
) -> jax.Array:
    r"""Knot grid adapted to samples: sample quantiles mixed with a uniform grid.

    Per input, with the samples sorted, ``G + 1`` quantile knots ``q_i`` (sorted samples at
    indices ``floor(i (B - 1) / G)``) and ``G + 1`` uniform knots
    ``u_i = min - margin + i h`` with ``h = (max - min + 2 margin) / G`` are mixed as
    ``t_i = eps u_i + (1 - eps) q_i`` and extended by ``k`` steps ``h`` on each side.
    With ``grid_eps = 1`` the grid is uniform over the data range; with ``0`` it follows the
    quantiles. For ``grid_eps > 0`` the knots are strictly increasing even when the samples
    of an input are all equal.

    Parameters
    ----------
    x:
        Samples, shape ``(B, in)``.
    grid_size:
        Number of intervals ``G`` of the new grid (static).
    spline_order:
        Order ``k`` (static).
    grid_eps:
        Weight of the uniform grid, in ``[0, 1]``.
    margin:
        Padding of the uniform grid beyond the sample range.

    Returns
    -------
    jax.Array
        Knots, shape ``(in, G + 2k + 1)``.
    """
    _check_grid_args(grid_size, spline_order, (0.0, 1.0))
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"expected samples of shape (B, in) with B >= 1, got {x.shape}")
    n = x.shape[0]
    x_sorted = jnp.sort(x, axis=0)
    idx = np.floor(np.linspace(0.0, n - 1, grid_size + 1)).astype(np.int64)
    grid_adaptive = x_sorted[idx]  # (G + 1, in)
    step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / grid_size  # (in,)
    steps = jnp.arange(grid_size + 1, dtype=x.dtype)[:, None]
    grid_uniform = steps * step + x_sorted[0] - margin
    grid = grid_eps * grid_uniform + (1 - grid_eps) * grid_adaptive
    ext = jnp.arange(1, spline_order + 1, dtype=x.dtype)[:, None] * step
    grid = jnp.concatenate([grid[:1] - ext[::-1], grid, grid[-1:] + ext], axis=0)
    return grid.T


def _check_grid_args(grid_size: int, spline_order: int, grid_range: tuple[float, float]) -> None:
    if int(grid_size) != grid_size or grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    if int(spline_order) != spline_order or spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0, got {spline_order!r}")
    if len(grid_range) != 2 or not float(grid_range[1]) > float(grid_range[0]):
        raise ValueError(f"grid_range must be (lo, hi) with hi > lo, got {tuple(grid_range)!r}")
