r"""Stochastic estimators on any symmetric operator: Hutchinson, Hutch++, SLQ densities.

Pure functions of ``(matvec, key, ..., *args)`` on flat vectors, ``matvec(x (n,), *args)``,
with ``args`` traced (see :mod:`kan_jax.curvature.operators`).

References
----------
.. [Hutchinson1989] M. F. Hutchinson, "A stochastic estimator of the trace of the influence
   matrix for Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18 (1989) 1059-1076.
.. [Meyer2021] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: optimal stochastic
   trace estimation", SOSA 2021, 142-155.
.. [Ubaru2017] S. Ubaru, J. Chen, Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
   quadrature", SIAM J. Matrix Anal. Appl. 38 (2017) 1075-1099.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from kan_jax.curvature.lanczos import lanczos_flat, tridiagonal_eigh

Array = jax.Array

__all__ = [
    "TraceEstimate",
    "SpectralDensity",
    "hutchinson",
    "hutchinson_adaptive",
    "hutch_plus_plus",
    "slq",
    "gaussian_density",
]


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate.

    Attributes
    ----------
    mean : Array, scalar
        The estimate of ``tr(A)``.
    stderr : Array, scalar
        Standard error of the stochastic part: ``s / sqrt(N)`` with ``s`` the sample standard
        deviation of its ``N`` probe values (for Hutch++ the deflated remainder's probes; the
        exact part ``tr(Q^T A Q)`` has no sampling error given ``Q``).
    num_probes : Array, int scalar
        Matvecs used.
    samples : Array, shape ``(max_probes,)``
        Probe values ``z_i^T A z_i`` (Hutch++: of the deflated operator); NaN past those used.
    """

    mean: Array
    stderr: Array
    num_probes: Array
    samples: Array


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature output.

    Attributes
    ----------
    nodes : Array, shape ``(num_runs, m)``
        Gauss quadrature nodes (Ritz values of each run).
    weights : Array, shape ``(num_runs, m)``
        Squared first components of the eigenvectors of ``T``; each row sums to 1.
    grid : Array, shape ``(num_points,)``
        Uniform grid spanning all runs' nodes, padded by ``pad`` kernel widths.
    density : Array, shape ``(num_points,)``
        Gaussian-smoothed density; integrates to 1.
    sigma : Array, scalar
        Kernel standard deviation.
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


def hutchinson(matvec: Callable[..., Array], key: Array, n: int, num_probes: int, *args: Any, dtype: Any = jnp.float32) -> TraceEstimate:
    r"""Hutchinson's estimate of ``tr(A)`` with a fixed number of Rademacher probes.

    .. math:: \widehat{\operatorname{tr}} = \frac1N \sum_{i=1}^N z_i^\top A z_i, \quad
              z_i \in \{\pm1\}^n, \qquad \operatorname{Var} = \frac2N \sum_{i \ne j} A_{ij}^2

    [Hutchinson1989]_; unbiased, error ``O(1/sqrt N)``. Cost: ``N`` matvecs (sequential).
    """
    keys = jax.random.split(key, num_probes)
    vals = jax.lax.map(lambda k: (lambda z: jnp.vdot(z, matvec(z, *args)))(jax.random.rademacher(k, (n,), dtype)), keys)
    return TraceEstimate(jnp.mean(vals), _stderr(vals), jnp.asarray(num_probes, jnp.int32), vals)


def hutchinson_adaptive(
    matvec: Callable[..., Array],
    key: Array,
    n: int,
    max_probes: int,
    min_probes: int,
    atol: Array,
    rtol: Array,
    *args: Any,
    dtype: Any = jnp.float32,
) -> TraceEstimate:
    """Hutchinson with a stopping rule: probes one at a time (``lax.while_loop``, Welford
    mean/variance) until at least ``min_probes`` were used and the standard error is at most
    ``max(atol, rtol |mean|)``, or ``max_probes``. Probe ``i`` uses ``fold_in(key, i)``."""
    atol = jnp.asarray(atol, dtype)
    rtol = jnp.asarray(rtol, dtype)

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
        s = jnp.vdot(z, matvec(z, *args)).astype(dtype)
        i1 = i + 1
        d = s - mean
        mean = mean + d / i1.astype(dtype)
        m2 = m2 + d * (s - mean)
        return i1, mean, m2, samples.at[i].set(s)

    init = (jnp.asarray(0, jnp.int32), jnp.zeros((), dtype), jnp.zeros((), dtype), jnp.full((max_probes,), jnp.nan, dtype))
    i, mean, m2, samples = jax.lax.while_loop(cond, body, init)
    return TraceEstimate(mean, stderr(i, m2), i, samples)


def hutch_plus_plus(matvec: Callable[..., Array], key: Array, n: int, num_matvecs: int, *args: Any, dtype: Any = jnp.float32) -> TraceEstimate:
    r"""Hutch++ estimate of ``tr(A)`` with a budget of ``num_matvecs`` matvecs.

    With ``s = floor(N/3)`` sketch columns and ``r = N - 2s`` probe columns (Rademacher),

    .. math::
        Q = \operatorname{orth}(A S), \qquad
        \widehat{\operatorname{tr}} = \operatorname{tr}(Q^\top A Q)
        + \frac1r \operatorname{tr}\big(G^\top (I - QQ^\top) A (I - QQ^\top) G\big)

    [Meyer2021]_: the top of the spectrum is captured exactly by the sketch and only the
    remainder is sampled, so the error is ``O(1/N)`` (instead of Hutchinson's ``O(1/sqrt N)``)
    when the spectrum decays; unbiased for any ``Q`` (``G`` is independent of ``S``). Costs
    ``s + s + r = N`` matvecs; memory ``(N, n)``.

    Raises
    ------
    ValueError
        If ``num_matvecs < 3``.
    """
    if num_matvecs < 3:
        raise ValueError(f"Hutch++ needs at least 3 matvecs (sketch, projection, probe), got {num_matvecs}")
    s = num_matvecs // 3
    r = num_matvecs - 2 * s
    k_s, k_g = jax.random.split(key)
    mv = lambda x: matvec(x, *args).astype(dtype)  # noqa: E731
    sk = jax.random.rademacher(k_s, (s, n), dtype)
    y = jax.lax.map(mv, sk)                                   # (s, n) = (A S)^T
    q = jnp.linalg.qr(y.T)[0]                                 # (n, s)
    aq = jax.lax.map(mv, q.T)                                 # (s, n) = (A Q)^T
    exact = jnp.sum(q.T * aq)
    g = jax.random.rademacher(k_g, (r, n), dtype)
    g = g - (g @ q) @ q.T                                     # (I - QQ^T) G, rows
    ag = jax.lax.map(mv, g)
    ag = ag - (ag @ q) @ q.T
    vals = jnp.sum(g * ag, axis=1)
    samples = jnp.concatenate([vals, jnp.full((2 * s,), jnp.nan, dtype)])
    return TraceEstimate(exact + jnp.mean(vals), _stderr(vals), jnp.asarray(num_matvecs, jnp.int32), samples)


def gaussian_density(nodes: Array, weights: Array, num_points: int, sigma: Array | float, rel_sigma: float, pad: float) -> tuple[Array, Array, Array]:
    r"""Smooth quadrature rules into a density (pure).

    .. math:: \phi(x) = \frac1R \sum_{r,i} w_{ri}\, \frac{1}{\sigma\sqrt{2\pi}}
              \exp\!\Big(-\frac{(x - \lambda_{ri})^2}{2\sigma^2}\Big)

    on ``num_points`` points from ``min(nodes) - pad sigma`` to ``max(nodes) + pad sigma``;
    ``sigma <= 0`` means ``rel_sigma * (max - min)``.
    """
    dtype = nodes.dtype
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    spread = hi - lo
    spread = jnp.where(spread > 0, spread, jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 1))
    sigma = jnp.asarray(sigma, dtype)
    sigma = jnp.where(sigma > 0, sigma, jnp.asarray(rel_sigma, dtype) * spread)
    grid = jnp.linspace(lo - pad * sigma, hi + pad * sigma, num_points, dtype=dtype)
    w = weights.reshape(-1) / nodes.shape[0]
    z = (grid[:, None] - nodes.reshape(-1)[None, :]) / sigma
    density = jnp.exp(-0.5 * z * z) @ w / (sigma * math.sqrt(2 * math.pi))
    return grid, density, sigma


def slq(
    matvec: Callable[..., Array],
    key: Array,
    n: int,
    num_runs: int,
    num_steps: int,
    *args: Any,
    dtype: Any = jnp.float32,
    num_points: int = 2000,
    sigma: Array | float = 0.0,
    rel_sigma: float = 0.005,
    pad: float = 6.0,
    reorthogonalize: bool | str = True,
) -> SpectralDensity:
    r"""Spectral density by stochastic Lanczos quadrature.

    For each of ``R`` Rademacher start vectors, ``m`` Lanczos steps give the Gauss rule
    (nodes ``theta_i``, weights ``s_{0i}^2``) with
    ``z^T f(A) z / z^T z ~ sum_i tau_i f(theta_i)`` (exact for degree ``<= 2m - 1``); the mean
    over runs estimates the spectral measure ``(1/n) sum_j delta(x - lambda_j)`` [Ubaru2017]_,
    smoothed by :func:`gaussian_density`. Runs are sequential (``lax.map``): memory of one
    ``(m, n)`` basis. Cost: ``R m`` matvecs.
    """

    def one_run(k):
        z = jax.random.rademacher(k, (n,), dtype)
        res = lanczos_flat(matvec, z, num_steps, *args, reorthogonalize=reorthogonalize)
        evals, s = tridiagonal_eigh(res.alphas, res.betas)
        return evals, s[0] ** 2

    nodes, w = jax.lax.map(one_run, jax.random.split(key, num_runs))
    grid, density, sig = gaussian_density(nodes, w, num_points, sigma, rel_sigma, pad)
    return SpectralDensity(nodes, w, grid, density, sig)
