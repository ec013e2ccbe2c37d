r"""Fitting ``y ~ c f(a x + b) + d`` to samples of an edge, for one or many edges at once.

The fit of one edge (samples ``x``, values ``y = phi(x)``) follows the KAN paper:

1. a grid search over ``(a, b)`` maximising the coefficient of determination of the linear
   regression of ``y`` on ``f(a x + b)``,

   .. math:: R^2(a, b) = \frac{\operatorname{cov}(f(a x + b), y)^2}{\operatorname{var} f(a x + b)\,
             \operatorname{var} y},

   on a ``grid_points x grid_points`` grid of ``a_range x b_range``, zoomed ``zooms`` times
   around the best point;
2. ``(c, d)`` by least squares;
3. a few damped Gauss-Newton (Levenberg-Marquardt) steps on all four parameters, which
   recover noiseless data to near machine precision.

Fits are pure and ``vmap``-ed over edges.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.interpret.symbolic.library import SymbolicFunction, get_library

__all__ = ["fit_affine"]


def _r2_linear(fx: jax.Array, y: jax.Array) -> jax.Array:
    """R^2 of the least-squares line of ``y (B,)`` on ``fx (..., B)``; -1 where undefined."""
    fc = fx - jnp.mean(fx, axis=-1, keepdims=True)
    yc = y - jnp.mean(y)
    sff = jnp.sum(fc * fc, axis=-1)
    syy = jnp.sum(yc * yc)
    sfy = jnp.sum(fc * yc, axis=-1)
    r2 = sfy**2 / jnp.where(sff * syy > 0, sff * syy, 1.0)
    return jnp.where(jnp.isfinite(r2) & (sff > 0) & jnp.isfinite(sff), r2, -1.0)


def _grid_search(xs, ys, fn, a_range, b_range, grid_points, zooms):
    """The best ``(a, b)`` of the zoomed grid search on the samples ``xs, ys``."""
    a_lo, a_hi = a_range
    b_lo, b_hi = b_range
    a0 = b0 = None
    for _ in range(zooms + 1):
        av = jnp.linspace(a_lo, a_hi, grid_points)
        bv = jnp.linspace(b_lo, b_hi, grid_points)
        u = av[:, None, None] * xs[None, None, :] + bv[None, :, None]
        best = jnp.argmax(_r2_linear(fn(u), ys).reshape(-1))
        a0, b0 = av[best // grid_points], bv[best % grid_points]
        da = (a_hi - a_lo) / (grid_points - 1)
        db = (b_hi - b_lo) / (grid_points - 1)
        a_lo, a_hi = a0 - 2 * da, a0 + 2 * da
        b_lo, b_hi = b0 - 2 * db, b0 + 2 * db
    return a0, b0


def _fit_one(x, y, fn, a_range, b_range, grid_points, zooms, lm_steps, subsample):
    """``(a, b, c, d)`` and R^2 of one edge (see the module docstring)."""
    n = x.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, subsample)).round().astype(int))
    a0, b0 = _grid_search(x[idx], y[idx], fn, a_range, b_range, grid_points, zooms)
    fx = fn(a0 * x + b0)
    fc = fx - jnp.mean(fx)
    sff = jnp.sum(fc * fc)
    c0 = jnp.where(sff > 0, jnp.sum(fc * (y - jnp.mean(y))) / jnp.where(sff > 0, sff, 1.0), 0.0)
    d0 = jnp.mean(y) - c0 * jnp.mean(fx)
    theta = jnp.stack([a0, b0, c0, d0])

    def resid(t):
        return t[2] * fn(t[0] * x + t[1]) + t[3] - y

    def sse(t):
        r = resid(t)
        v = jnp.sum(r * r)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def lm_step(_, carry):
        t, mu, cur = carry
        J = jax.jacfwd(resid)(t)
        JtJ = J.T @ J
        A = JtJ + mu * (jnp.diag(jnp.diag(JtJ)) + 1e-12 * jnp.eye(4, dtype=t.dtype))
        step = jnp.linalg.solve(A, -(J.T @ resid(t)))
        t_new = t + jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)
        new = sse(t_new)
        ok = new < cur
        return (jnp.where(ok, t_new, t), jnp.where(ok, mu / 3.0, mu * 4.0), jnp.where(ok, new, cur))

    theta, _, final = jax.lax.fori_loop(0, lm_steps, lm_step, (theta, jnp.asarray(1e-3, x.dtype), sse(theta)))
    yc = y - jnp.mean(y)
    syy = jnp.sum(yc * yc)
    r2 = jnp.where(syy > 0, 1.0 - final / jnp.where(syy > 0, syy, 1.0), jnp.where(final == 0, 1.0, 0.0))
    return theta, r2


def _identity_canonical(a, b, c, d):
    return (a, b, c, d)


@functools.partial(
    jax.jit,
    static_argnames=("library", "a_range", "b_range", "grid_points", "zooms", "lm_steps", "subsample"),
)
def _fit_batched(x, y, fidx, library, a_range, b_range, grid_points, zooms, lm_steps, subsample):
    """Fits of ``library[fidx]`` to every row; one compiled program per library (``fidx`` traced)."""
    branches = [f.jax for f in library]

    def fn(u):
        return jax.lax.switch(fidx, branches, u)

    fit = functools.partial(
        _fit_one,
        fn=fn,
        a_range=a_range,
        b_range=b_range,
        grid_points=grid_points,
        zooms=zooms,
        lm_steps=lm_steps,
        subsample=subsample,
    )
    theta, r2 = jax.vmap(fit)(x, y)
    canon = [f.canonical or _identity_canonical for f in library]
    theta = jax.lax.switch(
        fidx, [lambda t, c=c: jnp.stack(c(*(t[:, j] for j in range(4))), axis=-1) for c in canon], theta
    )
    return theta, r2


def fit_affine(
    x: jax.Array,
    y: jax.Array,
    function: Union[str, SymbolicFunction],
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_points: int = 41,
    zooms: int = 2,
    lm_steps: int = 60,
    subsample: int = 200,
    library: Optional[Sequence[SymbolicFunction]] = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Fit ``y ~ c f(a x + b) + d`` for one or many edges.

    Args:
        x: Samples, shape ``(B,)`` or ``(E, B)`` (``E`` edges fitted at once, ``vmap``).
        y: Values, the shape of ``x``.
        function: A library name or a :class:`SymbolicFunction`.
        a_range: Range of the grid search over ``a``.
        b_range: Range of the grid search over ``b``.
        grid_points: Points per axis of the grid (``grid_points**2`` candidates per zoom).
        zooms: Refinements of the grid around the best point (each shrinks it to ``+- 2``
            cells).
        lm_steps: Levenberg-Marquardt steps on ``(a, b, c, d)`` after the grid search (0 for
            none).
        subsample: At most this many evenly spaced samples are used in the grid search (all
            in the least-squares and Levenberg-Marquardt steps).
        library: Optional tuple of functions containing ``function``: fits of any of its
            functions share one compiled program (the function is a traced index).

    Returns:
        ``(theta, r2)``: ``theta (..., 4)`` the constants ``(a, b, c, d)`` (canonicalised, e.g.
        ``a = 1`` for powers) and ``r2 (...)`` the coefficient of determination
        :math:`1 - SSE / SST` of the fit.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kan_jax.interpret.symbolic import fit_affine
        >>> x = jnp.linspace(-1, 1, 100)
        >>> theta, r2 = fit_affine(x, 2 * jnp.sin(3 * x) + 1, "sin")
        >>> [round(float(t), 4) for t in theta], float(r2) > 0.999999
        ([3.0, 0.0, 2.0, 1.0], True)
    """
    (function,) = get_library([function])
    library = tuple(library) if library is not None else (function,)
    if function not in library:
        raise ValueError(f"function {function.name!r} is not in the given library {[f.name for f in library]}")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape or x.ndim not in (1, 2) or x.shape[-1] < 2:
        raise ValueError(f"x and y must have the same shape (B,) or (E, B) with B >= 2, got {x.shape} and {y.shape}")
    dtype = jnp.promote_types(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    single = x.ndim == 1
    if single:
        x, y = x[None], y[None]
    n_edges = x.shape[0]
    bucket = max(4, 1 << (n_edges - 1).bit_length())  # pad the edge count: fewer recompilations
    if bucket > n_edges:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (bucket - n_edges, x.shape[1]))])
        y = jnp.concatenate([y, jnp.broadcast_to(y[:1], (bucket - n_edges, y.shape[1]))])
    theta, r2 = _fit_batched(
        x,
        y,
        jnp.asarray(library.index(function), jnp.int32),
        library,
        tuple(float(v) for v in a_range),
        tuple(float(v) for v in b_range),
        int(grid_points),
        int(zooms),
        int(lm_steps),
        int(subsample),
    )
    theta, r2 = theta[:n_edges], r2[:n_edges]
    return (theta[0], r2[0]) if single else (theta, r2)
