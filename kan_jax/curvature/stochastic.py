r"""Stochastic estimators on any symmetric operator: Hutchinson, Hutch++, SLQ densities.

As in :mod:`kan_jax.curvature.krylov`, each estimator is built from its sizes and applied to
any ``matvec(v, *args)`` with traced ``args``::

    estimate = hutch_plus_plus(30)
    trace = estimate(matvec, key, like, params, batch)

``like`` is a pytree with the operator's domain structure and dtype (``params`` for a Hessian);
probes are Rademacher vectors of its raveled size.

References:
  M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines", Comm. Statist. Simulation Comput. 18 (1989) 1059-1076. R. A. Meyer,
  C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal stochastic trace estimation", SOSA 2021,
  142-155. S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
  quadrature", SIAM J. Matrix Anal. Appl. 38 (2017) 1075-1099.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from kan_jax.curvature.krylov import lanczos, tridiagonal_eigh
from kan_jax.curvature.operators import flat

PyTree = Any
Array = jax.Array

__all__ = ["SpectralDensity", "TraceEstimate", "gaussian_density", "hutch_plus_plus", "hutchinson",
           "hutchinson_adaptive", "slq"]


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate.

    Attributes:
        mean: The estimate of ``tr(A)``.
        stderr: Standard error ``s / sqrt(N)`` of the ``N`` stochastic probe values (Hutch++:
            of the deflated remainder; its exact part has no sampling error).
        num_probes: Matvecs used (int32).
        samples: ``(max_probes,)`` probe values ``z_i^T A z_i``; NaN past those used.
    """

    mean: Array
    stderr: Array
    num_probes: Array
    samples: Array


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature output.

    Attributes:
        nodes: ``(num_runs, m)`` Gauss quadrature nodes (Ritz values of each run).
        weights: ``(num_runs, m)`` squared first components of the eigenvectors of ``T``; each
            row sums to 1.
        grid: ``(num_points,)`` uniform grid spanning all nodes, padded by ``pad`` kernel widths.
        density: ``(num_points,)`` Gaussian-smoothed density; integrates to 1.
        sigma: Kernel standard deviation.
    """

    nodes: Array
    weights: Array
    grid: Array
    density: Array
    sigma: Array


def _stderr(values: Array) -> Array:
    n = values.shape[0]
    if n < 2:
        return jnp.zeros((), values.dtype)
    return jnp.std(values, ddof=1) / math.sqrt(n)


def _probe_setup(matvec: Callable[..., PyTree], like: PyTree, args: tuple) -> tuple[Callable[[Array], Array], int, Any]:
    fmv, x0, _ = flat(matvec, like)
    return (lambda x: fmv(x, *args)), x0.shape[0], x0.dtype


def hutchinson(num_probes: int) -> Callable[..., TraceEstimate]:
    r"""Hutchinson's estimate of ``tr(A)`` with a fixed number of Rademacher probes.

    .. math:: \widehat{\operatorname{tr}} = \frac1N \sum_{i=1}^N z_i^\top A z_i, \quad
              z_i \in \{\pm1\}^n, \qquad \operatorname{Var} = \frac2N \sum_{i \ne j} A_{ij}^2 .

    Args:
        num_probes: ``N`` (= matvecs, sequential).

    Returns:
        A pure ``estimate(matvec, key, like, *args) -> TraceEstimate``.
    """

    def estimate(matvec: Callable[..., PyTree], key: Array, like: PyTree, *args: Any) -> TraceEstimate:
        mv, n, dtype = _probe_setup(matvec, like, args)
        keys = jax.random.split(key, num_probes)
        vals = jax.lax.map(lambda k: (lambda z: jnp.vdot(z, mv(z)))(jax.random.rademacher(k, (n,), dtype)), keys)
        return TraceEstimate(jnp.mean(vals), _stderr(vals), jnp.asarray(num_probes, jnp.int32), vals)

    return estimate


def hutchinson_adaptive(max_probes: int, min_probes: int = 10) -> Callable[..., TraceEstimate]:
    """Hutchinson with a stopping rule on the standard error.

    Probes one at a time (``lax.while_loop``, Welford mean and variance; probe ``i`` uses
    ``fold_in(key, i)``) until at least ``min_probes`` were used and the standard error is at
    most ``max(atol, rtol |mean|)``, or ``max_probes``.

    Args:
        max_probes: Upper bound on the matvecs.
        min_probes: Lower bound on the matvecs.

    Returns:
        A pure ``estimate(matvec, key, like, *args, atol=0.0, rtol=0.01) -> TraceEstimate``; the
        tolerances may be traced.
    """

    def estimate(matvec: Callable[..., PyTree], key: Array, like: PyTree, *args: Any, atol: Any = 0.0,
                 rtol: Any = 1e-2) -> TraceEstimate:
        mv, n, dtype = _probe_setup(matvec, like, args)
        atol, rtol = jnp.asarray(atol, dtype), jnp.asarray(rtol, dtype)

        def stderr(i, m2):
            i_f = jnp.maximum(i, 1).astype(dtype)
            return jnp.sqrt(m2 / jnp.maximum(i_f - 1, 1) / i_f)

        def cond(c):
            i, mean, m2, _ = c
            done = (i >= min_probes) & (stderr(i, m2) <= jnp.maximum(atol, rtol * jnp.abs(mean)))
            return (i < max_probes) & ~done

        def body(c):
            i, mean, m2, samples = c
            z = jax.random.rademacher(jax.random.fold_in(key, i), (n,), dtype)
            s = jnp.vdot(z, mv(z)).astype(dtype)
            i1 = i + 1
            d = s - mean
            mean = mean + d / i1.astype(dtype)
            m2 = m2 + d * (s - mean)
            return i1, mean, m2, samples.at[i].set(s)

        init = (jnp.asarray(0, jnp.int32), jnp.zeros((), dtype), jnp.zeros((), dtype), jnp.full((max_probes,), jnp.nan, dtype))
        i, mean, m2, samples = jax.lax.while_loop(cond, body, init)
        return TraceEstimate(mean, stderr(i, m2), i, samples)

    return estimate


def hutch_plus_plus(num_matvecs: int) -> Callable[..., TraceEstimate]:
    r"""Hutch++ estimate of ``tr(A)`` with a budget of ``num_matvecs`` matvecs.

    With ``s = floor(N/3)`` sketch and ``r = N - 2s`` probe columns (Rademacher),

    .. math::
        Q = \operatorname{orth}(A S), \qquad
        \widehat{\operatorname{tr}} = \operatorname{tr}(Q^\top A Q)
        + \frac1r \operatorname{tr}\big(G^\top (I - QQ^\top) A (I - QQ^\top) G\big):

    the top of the spectrum is captured exactly and only the remainder is sampled, so the error
    is ``O(1/N)`` instead of ``O(1/sqrt N)`` when the spectrum decays. Memory ``(N, n)``.

    Args:
        num_matvecs: ``N >= 3``.

    Returns:
        A pure ``estimate(matvec, key, like, *args) -> TraceEstimate``.

    Raises:
        ValueError: If ``num_matvecs < 3``.
    """
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs at least 3 matvecs (sketch, projection, probe), got {num_matvecs}")
    s = num_matvecs // 3
    r = num_matvecs - 2 * s

    def estimate(matvec: Callable[..., PyTree], key: Array, like: PyTree, *args: Any) -> TraceEstimate:
        mv, n, dtype = _probe_setup(matvec, like, args)
        k_s, k_g = jax.random.split(key)
        y = jax.lax.map(mv, jax.random.rademacher(k_s, (s, n), dtype))   # (A S)^T
        q = jnp.linalg.qr(y.T)[0]                                          # (n, s)
        exact = jnp.sum(q.T * jax.lax.map(mv, q.T))
        g = jax.random.rademacher(k_g, (r, n), dtype)
        g = g - (g @ q) @ q.T                                              # (I - QQ^T) G, rows
        ag = jax.lax.map(mv, g)
        vals = jnp.sum(g * (ag - (ag @ q) @ q.T), axis=1)
        samples = jnp.concatenate([vals, jnp.full((2 * s,), jnp.nan, dtype)])
        return TraceEstimate(exact + jnp.mean(vals), _stderr(vals), jnp.asarray(num_matvecs, jnp.int32), samples)

    return estimate


@functools.partial(jax.jit, static_argnames=("num_points",))
def gaussian_density(
    nodes: Array,
    weights: Array,
    *,
    num_points: int = 2000,
    sigma: Array | float | None = None,
    rel_sigma: Array | float = 0.005,
    pad: Array | float = 6.0,
) -> tuple[Array, Array, Array]:
    r"""Smooth quadrature rules into a density on a uniform grid.

    .. math:: \phi(x) = \frac1R \sum_{r,i} w_{ri}\, \frac{1}{\sigma\sqrt{2\pi}}
              \exp\!\Big(-\frac{(x - \lambda_{ri})^2}{2\sigma^2}\Big)

    on ``num_points`` points from ``min(nodes) - pad sigma`` to ``max(nodes) + pad sigma``.

    Args:
        nodes: ``(R, m)`` quadrature nodes (a 1-D array is one rule).
        weights: Their weights, same shape.
        num_points: Grid points.
        sigma: Kernel width; ``None`` or ``<= 0`` means ``rel_sigma * (max - min)``.
        rel_sigma: Relative kernel width.
        pad: Grid padding in kernel widths.

    Returns:
        ``(grid, density, sigma)``.
    """
    nodes = jnp.atleast_2d(nodes)
    dtype = nodes.dtype
    weights = jnp.atleast_2d(weights).astype(dtype)
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    spread = hi - lo
    spread = jnp.where(spread > 0, spread, jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 1))
    sigma = jnp.asarray(0.0 if sigma is None else sigma, dtype)
    sigma = jnp.where(sigma > 0, sigma, jnp.asarray(rel_sigma, dtype) * spread)
    pad = jnp.asarray(pad, dtype)
    grid = jnp.linspace(lo - pad * sigma, hi + pad * sigma, num_points, dtype=dtype)
    w = weights.reshape(-1) / nodes.shape[0]
    z = (grid[:, None] - nodes.reshape(-1)[None, :]) / sigma
    density = jnp.exp(-0.5 * z * z) @ w / (sigma * math.sqrt(2 * math.pi))
    return grid, density, sigma


def slq(
    num_runs: int,
    num_steps: int,
    *,
    num_points: int = 2000,
    reorthogonalize: bool | str = True,
) -> Callable[..., SpectralDensity]:
    r"""Spectral density by stochastic Lanczos quadrature.

    For each of ``R`` Rademacher start vectors ``z``, ``m`` Lanczos steps give the Gauss rule
    (nodes ``theta_i``, weights ``tau_i = s_{0i}^2``) with
    ``z^T f(A) z / z^T z ~ sum_i tau_i f(theta_i)``, exact for degree ``<= 2m - 1``; the mean over
    runs estimates ``(1/n) sum_j delta(x - lambda_j)``, smoothed by :func:`gaussian_density`.
    Runs are sequential (memory of one ``(m, n)`` basis); cost ``R m`` matvecs.

    Args:
        num_runs: Start vectors ``R``.
        num_steps: Lanczos steps ``m`` per run.
        num_points: Points of the density grid.
        reorthogonalize: As in :func:`kan_jax.curvature.lanczos`.

    Returns:
        A pure ``density(matvec, key, like, *args, sigma=None, rel_sigma=0.005, pad=6.0) ->
        SpectralDensity`` (see :func:`gaussian_density` for the smoothing arguments).
    """
    tridiag = lanczos(num_steps, reorthogonalize=reorthogonalize)

    def density(matvec: Callable[..., PyTree], key: Array, like: PyTree, *args: Any, sigma: Any = None,
                rel_sigma: Any = 0.005, pad: Any = 6.0) -> SpectralDensity:
        mv, n, dtype = _probe_setup(matvec, like, args)

        def one_run(k):
            res = tridiag(mv, jax.random.rademacher(k, (n,), dtype))
            evals, s = tridiagonal_eigh(res.alphas, res.betas)
            return evals, s[0] ** 2

        nodes, w = jax.lax.map(one_run, jax.random.split(key, num_runs))
        grid, dens, sig = gaussian_density(nodes, w, num_points=num_points, sigma=sigma, rel_sigma=rel_sigma, pad=pad)
        return SpectralDensity(nodes, w, grid, dens, sig)

    return density
