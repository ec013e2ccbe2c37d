"""B-spline maths for KAN layers: knot grids, bases, least-squares fits, adaptive grids.

Every function here is pure and safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (the
grid size and spline order are static Python integers; arrays and floats are traced, so new
values never recompile; the basis functions are compiled per order and shape when called
eagerly and inline into the caller's program under ``jit``). Only ``k + 1`` bases are non-zero at
any point: :func:`local_bases` computes those from the knots around the point's interval, so
the work per input value and the size of every compiled program are independent of the grid
size; :func:`b_spline_bases` places them into the full basis array where a dense matrix is
wanted (least-squares fits, small grids) and :func:`basis_matrix` straight into the flat
``(B, in · n)`` matrix of a layer's dense product. Shapes use

* ``B`` samples, ``in`` input features, ``out`` output features,
* ``G`` grid intervals, ``k`` spline order (degree), ``n = G + k`` bases per input,
* ``M = G + 2k + 1`` knots per input (the grid extended by ``k`` knots each side).

References:
  C. de Boor, *A Practical Guide to Splines*, Springer (1978), ch. IX (Cox-de Boor recursion,
  ``BSPLVB``).
  Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
  Blealtan, *efficient-kan* (PyTorch), the basis-then-matmul formulation used here.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.numerics import safe_divide

__all__ = [
    "uniform_grid",
    "validate_grid_args",
    "find_intervals",
    "local_bases",
    "dense_from_local",
    "basis_matrix",
    "b_spline_bases",
    "unrolled_bases",
    "UNROLLED_MAX_BASES",
    "num_bases",
    "fit_coefficients",
    "fit_spline_coefficients",
    "adaptive_grid",
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

    Args:
      grid_size: Number of intervals ``G >= 1`` between ``lo`` and ``hi``.
      spline_order: Spline order (degree) ``k >= 0``.
      grid_range: ``(lo, hi)`` with ``hi > lo``.
      in_features: If given, the knot row is repeated for every input.
      dtype: Floating dtype of the result.

    Returns:
      The knots, ``(in, G + 2k + 1)`` with ``in_features``, else ``(G + 2k + 1,)``.

    Example:
      >>> from kan_jax import splines
      >>> splines.uniform_grid(2, 1).tolist()
      [-2.0, -1.0, 0.0, 1.0, 2.0]
    """
    knots = uniform_knots_host(grid_size, spline_order, grid_range, dtype)
    if in_features is None:
        return jnp.asarray(knots)
    if in_features < 1:
        raise ValueError(f"in_features must be >= 1, got {in_features}")
    return jnp.asarray(np.broadcast_to(knots, (in_features, knots.shape[0])))  # built on the host


def uniform_knots_host(
    grid_size: int,
    spline_order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    dtype: jnp.dtype = jnp.float32,
) -> np.ndarray:
    """The knot row of :func:`uniform_grid` as a NumPy array of ``dtype``, shape ``(G + 2k + 1,)``.

    Computed in float64 and rounded once to ``dtype``, on the host: reading it needs no device
    round trip (which would wait for every computation already dispatched).
    """
    validate_grid_args(grid_size, spline_order, grid_range)
    lo, hi = float(grid_range[0]), float(grid_range[1])
    h = (hi - lo) / grid_size
    knots = np.arange(-spline_order, grid_size + spline_order + 1) * h + lo
    return knots.astype(jnp.dtype(dtype))


def num_bases(grid: jax.Array, spline_order: int) -> int:
    """Number of B-spline bases ``n = M - k - 1`` on a knot grid with ``M`` knots per input."""
    n = grid.shape[-1] - spline_order - 1
    if n < 1:
        raise ValueError(
            f"a grid with {grid.shape[-1]} knots per input has no B-spline bases of order {spline_order}"
        )
    return n


def _knot_rows(grid: jax.Array, x: jax.Array, spline_order: int) -> jax.Array:
    """Validate ``grid`` against ``x`` and return it as ``(in, M)`` rows in the dtype of ``x``."""
    if int(spline_order) != spline_order or spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0, got {spline_order!r}")
    if x.ndim < 1:
        raise ValueError(f"expected inputs of shape (..., in), got a scalar of shape {tuple(x.shape)}")
    num_bases(grid, spline_order)
    if grid.ndim == 1:
        grid = jnp.broadcast_to(grid, (x.shape[-1], grid.shape[0]))
    elif grid.ndim != 2 or grid.shape[0] != x.shape[-1]:
        raise ValueError(
            f"grid has {grid.shape[0] if grid.ndim == 2 else grid.shape} rows (one per input feature) "
            f"but x has last dimension {x.shape[-1]}; expected a grid of shape ({x.shape[-1]}, M) or (M,)"
        )
    return jnp.asarray(grid, dtype=x.dtype)


def find_intervals(x: jax.Array, grid: jax.Array) -> jax.Array:
    r"""Index ``j`` of the knot interval ``t_j <= x < t_{j+1}`` of every input value.

    A binary search in each input's knot row (``searchsorted``, ``O(log M)`` per value, the
    same program for every ``M``); exact for any non-decreasing row, repeated knots included
    (the last of equal knots is taken, so the interval found is never empty).

    Args:
      x: Inputs, ``(..., in)``.
      grid: Knots, ``(in, M)``, each row non-decreasing.

    Returns:
      ``int32`` ``(..., in)``: ``-1`` below ``t_0``, ``M - 1`` at or above ``t_{M-1}``,
      otherwise the interval index in ``[0, M - 2]``.
    """
    lead = x.shape[:-1]
    xt = x.reshape(-1, x.shape[-1]).T  # (in, B): one search per knot row
    j = jax.vmap(lambda row, v: jnp.searchsorted(row, v, side="right"))(grid, xt) - 1
    return j.T.reshape(*lead, x.shape[-1]).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("spline_order",))
def local_bases(x: jax.Array, grid: jax.Array, spline_order: int) -> tuple[jax.Array, jax.Array]:
    r"""The ``k + 1`` B-spline bases that can be non-zero at each input, and where they start.

    On the knot interval :math:`t_j \le x < t_{j+1}` only :math:`B_{j-k,k}, \dots, B_{j,k}`
    are non-zero. They are computed by the local Cox-de Boor triangle (de Boor, ch. IX)

    .. math::
        N^{(0)}_0 = 1, \qquad
        N^{(p)}_r = \frac{x - t_{j-p+r}}{t_{j+r} - t_{j-p+r}} N^{(p-1)}_{r-1}
                  + \frac{t_{j+r+1} - x}{t_{j+r+1} - t_{j-p+r+1}} N^{(p-1)}_{r},

    with :math:`N^{(p)}_r = B_{j-p+r,p}(x)` and terms outside :math:`0 \le r \le p` (or with a
    zero-width knot span) taken as 0, from the :math:`2k + 2` knots :math:`t_{j-k}, \dots,
    t_{j+k+1}` around the interval: ``O(k^2)`` work and a program whose size does not depend
    on the number of knots. The values are those of :func:`b_spline_bases` exactly (same
    recursion, same operations per basis), on any non-decreasing grid.

    The window of ``k + 1`` bases is reported in the coordinates of the ``n = M - k - 1``
    existing bases: it starts at ``start = clip(j - k, 0, n - k - 1)`` (so it always lies in
    ``[0, n)``), and ``values[..., q]`` is :math:`B_{start+q,k}(x)`. Near the ends of the
    extended grid, where some of the ``k + 1`` triangle entries belong to bases that do not
    exist, the window is shifted inwards and those entries are dropped; outside
    ``[t_0, t_{M-1})`` all values are 0 (as :func:`b_spline_bases`).

    Args:
      x: Inputs, ``(..., in)``.
      grid: Knots, ``(in, M)`` (one non-decreasing row per input) or ``(M,)`` shared, with
        ``M >= 2k + 2`` (at least ``k + 1`` bases).
      spline_order: Order ``k >= 0`` (static).

    Returns:
      ``(start, values)``: ``int32`` ``(..., in)`` and ``(..., in, k + 1)`` in the dtype of ``x``.
    """
    k = int(spline_order)
    g = _knot_rows(grid, x, k)
    n_knots = g.shape[-1]
    n = n_knots - k - 1
    if n < k + 1:
        raise ValueError(
            f"local B-spline windows need at least k + 1 = {k + 1} bases, but a grid with {n_knots} knots "
            f"per input has {n} bases of order {k} (use at least {2 * k + 2} knots, i.e. grid_size >= 1)"
        )
    j = find_intervals(x, g)
    inside = (j >= 0) & (j < n_knots - 1)
    jc = jnp.clip(j, 0, n_knots - 2)
    # Knots t_{j-k} .. t_{j+k+1} (indices clipped into the row: the clipped ones only enter
    # triangle entries of bases that do not exist, which are dropped below).
    offsets = jnp.arange(-k, k + 2, dtype=jnp.int32)
    knot_idx = jnp.clip(jc[..., None] + offsets, 0, n_knots - 1)
    rows = jnp.broadcast_to(g, (*x.shape[:-1], *g.shape))
    t = jnp.take_along_axis(rows, knot_idx, axis=-1)  # (..., in, 2k + 2); t[..., m] = t_{j-k+m}

    def knot(offset: int) -> jax.Array:  # t_{j + offset}
        return t[..., offset + k]

    # Outside the extended grid every value is 0; evaluating there at the knot t_j instead of x
    # keeps far-away (even infinite) inputs from producing 0 * inf = NaN (gradient 0 either way).
    x = jnp.where(inside, x, knot(0))
    tri = [inside.astype(x.dtype)]
    for p in range(1, k + 1):
        new = []
        for r in range(p + 1):
            term = jnp.zeros_like(x)
            if r >= 1:  # (x - t_{j-p+r}) / (t_{j+r} - t_{j-p+r}) * N^{(p-1)}_{r-1}
                lo, hi = knot(r - p), knot(r)
                term = term + safe_divide(x - lo, hi - lo) * tri[r - 1]
            if r <= p - 1:  # (t_{j+r+1} - x) / (t_{j+r+1} - t_{j-p+r+1}) * N^{(p-1)}_r
                lo, hi = knot(r - p + 1), knot(r + 1)
                term = term + safe_divide(hi - x, hi - lo) * tri[r]
            new.append(term)
        tri = new
    # tri[r] = B_{jc-k+r}; shift into the window [start, start + k] of existing bases.
    start = jnp.clip(jc - k, 0, n - k - 1)
    shift = start - (jc - k)  # in [-k, k]: window position q holds triangle entry q + shift
    values = []
    for q in range(k + 1):
        v = jnp.zeros_like(x)
        for r in range(k + 1):
            v = jnp.where(shift == r - q, tri[r], v)
        values.append(v)
    return start.astype(jnp.int32), jnp.stack(values, axis=-1)


def dense_from_local(start: jax.Array, values: jax.Array, n_bases: int) -> jax.Array:
    """Scatter local basis windows into the full ``(..., in, n)`` basis array.

    ``out[..., i, start + q] = values[..., i, q]`` and 0 elsewhere, written as ``k + 1``
    selects against the column index (no scatter): one fused elementwise loop whose program
    size does not depend on ``n``.

    Args:
      start: Window starts, integer ``(..., in)``, with ``0 <= start <= n - k - 1``.
      values: Window values, ``(..., in, k + 1)``.
      n_bases: Number of bases ``n`` (static).

    Returns:
      The bases, ``(..., in, n)``.
    """
    offset = jnp.arange(n_bases, dtype=jnp.int32) - start[..., None]
    out = jnp.zeros(start.shape + (n_bases,), values.dtype)
    for q in range(values.shape[-1]):
        out = jnp.where(offset == q, values[..., q : q + 1], out)
    return out


def basis_matrix(x: jax.Array, grid: jax.Array, spline_order: int) -> jax.Array:
    """The bases as one ``(B, in · n)`` matrix, rows the samples: ``b_spline_bases(x).reshape(B, -1)``.

    The left operand of the dense spline product, built by one scatter of the ``k + 1`` local
    values of every ``(sample, input)`` (:func:`local_bases`) into a zero matrix at the distinct
    columns ``i · n + start + q``: the flat matrix is written directly, so no reshape of a
    ``(B, in, n)`` array is fused into its producer.

    Args:
      x: Inputs, ``(B, in)``.
      grid: Knots, ``(in, M)`` or ``(M,)``.
      spline_order: Order ``k >= 0`` (static).

    Returns:
      The bases, ``(B, in · (M - k - 1))``, in the dtype of ``x``.
    """
    if x.ndim != 2:
        raise ValueError(f"basis_matrix expects inputs of shape (B, in), got {tuple(x.shape)}")
    n = num_bases(grid, spline_order)
    if n < spline_order + 1:  # fewer bases than a window (never in a KAN layer)
        return b_spline_bases(x, grid, spline_order).reshape(x.shape[0], -1)
    start, values = local_bases(x, grid, spline_order)
    batch, in_features, width = values.shape
    first = start + jnp.arange(in_features, dtype=start.dtype) * n  # (B, in)
    cols = first[..., None] + jnp.arange(width, dtype=start.dtype)  # (B, in, k + 1), distinct per row
    rows = jnp.broadcast_to(jnp.arange(batch, dtype=start.dtype)[:, None, None], cols.shape)
    out = jnp.zeros((batch, in_features * n), values.dtype)
    return out.at[rows, cols].set(values, unique_indices=True, indices_are_sorted=True, mode="promise_in_bounds")


@functools.partial(jax.jit, static_argnames=("spline_order",))
def b_spline_bases(x: jax.Array, grid: jax.Array, spline_order: int) -> jax.Array:
    r"""All B-spline basis values by the Cox-de Boor recursion.

    .. math::
        B_{j,0}(x) &= [t_j \le x < t_{j+1}], \\
        B_{j,p}(x) &= \frac{x - t_j}{t_{j+p} - t_j} B_{j,p-1}(x)
                    + \frac{t_{j+p+1} - x}{t_{j+p+1} - t_{j+1}} B_{j+1,p-1}(x).

    Inside ``[t_k, t_{G+k})`` the bases sum to one (partition of unity); outside the extended
    grid ``[t_0, t_{M-1})`` they are all zero. Computed from the ``k + 1`` local values
    (:func:`local_bases`) placed into their columns (:func:`dense_from_local`): the cost is
    ``O(k^2 + n)`` per input value and the program size does not depend on ``n``.

    Args:
      x: Inputs, ``(..., in)``.
      grid: Knots, ``(in, M)`` (one non-decreasing row per input) or ``(M,)`` shared.
      spline_order: Order ``k >= 0`` (static).

    Returns:
      The bases, ``(..., in, M - k - 1)``, in the dtype of ``x``.
    """
    n = num_bases(grid, spline_order)
    if n < spline_order + 1:  # fewer bases than a window (never in a KAN layer): the plain recursion
        return _per_basis_recursion(x, _knot_rows(grid, x, spline_order), int(spline_order))
    start, values = local_bases(x, grid, spline_order)
    return dense_from_local(start, values, n)


#: Most bases per input :func:`unrolled_bases` accepts: its program grows with ``n · k``.
UNROLLED_MAX_BASES = 64


def unrolled_bases(x: jax.Array, grid: jax.Array, spline_order: int) -> jax.Array:
    r"""All B-spline basis values by the Cox-de Boor recursion unrolled over the bases.

    The values of :func:`b_spline_bases` (the same recursion; knot-span reciprocals taken on
    the ``(in,)`` knot rows, so the last bits may differ), computed with one ``(..., in)`` array
    per basis and per level: every operation is elementwise along the inputs, which XLA fuses
    with whatever produces ``x`` (e.g. a batch gathered from a dataset inside a ``lax.scan``)
    and with the matrix product that consumes the bases. The program has ``O(n · k)``
    operations, so this is for small grids only (at most :data:`UNROLLED_MAX_BASES` bases).
    Arguments and result as :func:`b_spline_bases`.
    """
    k = int(spline_order)
    g = _knot_rows(grid, x, k)
    n = g.shape[-1] - k - 1
    if n > UNROLLED_MAX_BASES:
        raise ValueError(
            f"unrolled_bases is for at most UNROLLED_MAX_BASES = {UNROLLED_MAX_BASES} bases per input "
            f"(its program grows with their number), got {n}; use b_spline_bases"
        )
    return _per_basis_recursion(x, g, k)


def _per_basis_recursion(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
    # Cox-de Boor with one (..., in) array per basis and level, on (in, M) knot rows g.
    # Far-away (even infinite) inputs are moved to just outside the extended grid, where every
    # basis is 0, so that 0 * inf never gives NaN (the gradient there is 0 either way).
    x = jnp.clip(x, g[:, 0] - 1, g[:, -1] + 1)
    t = [g[:, j] for j in range(g.shape[-1])]
    bases = [((x >= t[j]) & (x < t[j + 1])).astype(x.dtype) for j in range(len(t) - 1)]
    for p in range(1, k + 1):
        bases = [
            (x - t[j]) * safe_divide(1.0, t[j + p] - t[j]) * bases[j]
            + (t[j + p + 1] - x) * safe_divide(1.0, t[j + p + 1] - t[j + 1]) * bases[j + 1]
            for j in range(len(bases) - 1)
        ]
    return jnp.stack(bases, axis=-1)


def fit_spline_coefficients(
    x: jax.Array,
    y: jax.Array,
    grid: jax.Array,
    spline_order: int,
    rcond: Optional[float] = None,
) -> jax.Array:
    r"""Least-squares spline coefficients reproducing target curves (efficient-kan's ``curve2coeff``).

    For every input ``i`` and output ``o`` solve

    .. math:: \min_c \sum_b \Big(\sum_j B_j(x_{b,i})\, c_{i,j,o} - y_{b,i,o}\Big)^2

    with an SVD-based least-squares solver (minimum-norm solution when the system is
    under-determined or rank deficient), never the normal equations.

    Args:
      x: Sample points, ``(B, in)``.
      y: Target values per input and output, ``(B, in, out)``.
      grid: Knots, ``(in, M)``.
      spline_order: Order ``k``.
      rcond: Cut-off for small singular values, as in ``jnp.linalg.lstsq``.

    Returns:
      The coefficients, ``(in, M - k - 1, out)`` (the layout of a layer's ``spline_weight``).
    """
    if x.ndim != 2 or y.ndim != 3 or y.shape[:2] != x.shape:
        raise ValueError(f"expected x of shape (B, in) and y of shape (B, in, out); got {x.shape} and {y.shape}")
    return fit_coefficients(b_spline_bases(x, grid, spline_order), y, rcond)


def fit_coefficients(bases: jax.Array, y: jax.Array, rcond: Optional[float] = None) -> jax.Array:
    r"""Least-squares coefficients of any bases per input: :math:`\min_c \sum_b (\sum_j \phi_{bij} c_{ijo} - y_{bio})^2`.

    Args:
      bases: Basis values ``phi[b, i, j]`` at the samples, ``(B, in, n)``.
      y: Target values per input and output, ``(B, in, out)``.
      rcond: Cut-off for small singular values, as in ``jnp.linalg.lstsq``.

    Returns:
      The coefficients, ``(in, n, out)``: SVD-based, the minimum-norm solution where the
      system is under-determined or rank deficient.
    """
    a = jnp.swapaxes(bases, 0, 1)  # (in, B, n)
    b = jnp.swapaxes(y, 0, 1).astype(a.dtype)  # (in, B, out)
    solve = jax.vmap(lambda ai, bi: jnp.linalg.lstsq(ai, bi, rcond=rcond)[0])
    return solve(a, b)


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

    Args:
      x: Samples, ``(B, in)``.
      grid_size: Number of intervals ``G`` of the new grid (static).
      spline_order: Order ``k`` (static).
      grid_eps: Weight of the uniform grid, in ``[0, 1]``.
      margin: Padding of the uniform grid beyond the sample range.

    Returns:
      The knots, ``(in, G + 2k + 1)``.
    """
    validate_grid_args(grid_size, spline_order, (0.0, 1.0))
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


def validate_grid_args(grid_size: int, spline_order: int, grid_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Check the arguments of a grid.

    Raises:
      ValueError: Naming the argument, unless ``grid_size >= 1`` and ``spline_order >= 0`` are
        integers and ``grid_range = (lo, hi)`` has ``hi > lo``.
    """
    if int(grid_size) != grid_size or grid_size < 1:
        raise ValueError(f"grid_size must be an integer >= 1, got {grid_size!r}")
    if int(spline_order) != spline_order or spline_order < 0:
        raise ValueError(f"spline_order must be an integer >= 0, got {spline_order!r}")
    if len(grid_range) != 2 or not float(grid_range[1]) > float(grid_range[0]):
        raise ValueError(f"grid_range must be (lo, hi) with hi > lo, got {tuple(grid_range)!r}")
