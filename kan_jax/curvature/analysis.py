r"""Questions about a loss's Hessian: products, extreme eigenpairs, trace, spectral density.

Each function takes a scalar loss and a parameter pytree (any Flax model's ``params``) in the
two forms of :mod:`kan_jax.curvature.loss` and returns pytrees wherever a vector in parameter
space is meant (flat order: :func:`jax.flatten_util.ravel_pytree`). Each composes an operator
(:mod:`kan_jax.curvature.loss`) with an algorithm (:mod:`kan_jax.curvature.krylov`,
:mod:`kan_jax.curvature.stochastic`) in one compiled program.

Compilation: ``params``, ``batches``, ``weights``, keys and tolerances are traced; the loss
function and the sizes (steps, probes, ``k``) are static. New parameters or new data passed
through ``batches=`` never recompile; a new loss function object compiles once, so pass data
as arguments rather than in a fresh closure each call. Analysis runs under
``jax.default_matmul_precision("highest")`` by default.

References:
  Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: neural networks through the lens
  of the Hessian", IEEE BigData 2020 (the questions asked; its power iteration is replaced by
  Lanczos and its density by stochastic Lanczos quadrature here).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from kan_jax.curvature import operators as ops
from kan_jax.curvature import stochastic as st
from kan_jax.curvature.krylov import Eigenpairs, extreme_eigenpairs
from kan_jax.curvature.loss import LossFn, augmented_operator, hessian_operator, matmul_precision, normalized_weights, num_params

PyTree = Any
Array = jax.Array
Weights = Sequence[float] | Array | None

__all__ = ["AugmentedEigenpair", "Eigenpair", "augmented_min_eigenpair", "dataset_hvp", "hessian_trace", "hvp",
           "min_eigenpair", "spectral_density", "top_eigenpairs"]


class Eigenpair(NamedTuple):
    """One eigenpair: ``eigenvalue``, unit ``eigenvector`` (params-shaped) and
    ``residual_norm = ||H v - lambda v||`` (one extra HVP)."""

    eigenvalue: Array
    eigenvector: PyTree
    residual_norm: Array


class AugmentedEigenpair(NamedTuple):
    """Minimum eigenpair ``(v, t)`` of ``[[H, g], [g^T, -delta]]`` with ``||v||^2 + t^2 = 1``.

    Attributes:
        eigenvalue: The Ritz value.
        vector: The parameter part ``v`` (params-shaped).
        scalar: The last component ``t``.
        residual_norm: ``||F (v, t) - lambda (v, t)||`` (one extra matvec).
    """

    eigenvalue: Array
    vector: PyTree
    scalar: Array
    residual_norm: Array


def _key(key: Array | None) -> Array:
    return jax.random.key(0) if key is None else key


def _random_like(key: Array, params: PyTree) -> PyTree:
    x0, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(key, x0.shape, x0.dtype))


# --------------------------------------------------------------------------------------------
# Compiled programs: the loss and the sizes are static, everything else is traced
# --------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _hvp(loss_fn, params, v, batches, weights):
    if batches is None:
        return ops.hessian(loss_fn)(v, params)
    return ops.over_batches(ops.hessian(loss_fn))(v, params, batches, weights)


@functools.partial(jax.jit, static_argnames=("loss_fn", "k", "num_steps", "largest"))
def _extreme(loss_fn, params, batches, weights, key, *, k, num_steps, largest):
    _, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)
    return extreme_eigenpairs(num_steps, k, largest=largest)(matvec, _random_like(key, params))


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_steps"))
def _augmented_min(loss_fn, params, batches, weights, delta, key, *, num_steps):
    x0, unravel = ravel_pytree(params)
    matvec = augmented_operator(loss_fn, params, delta.astype(x0.dtype), batches=batches, weights=weights)
    z0 = jax.random.normal(key, (x0.shape[0] + 1,), x0.dtype)
    res = extreme_eigenpairs(num_steps, 1, largest=False)(matvec, (unravel(z0[:-1]), z0[-1]))
    v, t = res.eigenvectors
    return AugmentedEigenpair(res.eigenvalues[0], jax.tree.map(lambda a: a[0], v), t[0], res.residual_norms[0])


@functools.partial(jax.jit, static_argnames=("loss_fn", "estimator", "num_matvecs", "max_probes", "min_probes"))
def _trace(loss_fn, params, batches, weights, key, atol, rtol, *, estimator, num_matvecs, max_probes, min_probes):
    _, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)
    if estimator == "hutch++":
        return st.hutch_plus_plus(num_matvecs)(matvec, key, params)
    if num_matvecs is not None:
        return st.hutchinson(num_matvecs)(matvec, key, params)
    return st.hutchinson_adaptive(max_probes, min_probes)(matvec, key, params, atol=atol, rtol=rtol)


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_runs", "num_steps", "num_points"))
def _density(loss_fn, params, batches, weights, key, sigma, rel_sigma, pad, *, num_runs, num_steps, num_points):
    _, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)
    return st.slq(num_runs, num_steps, num_points=num_points)(matvec, key, params, sigma=sigma, rel_sigma=rel_sigma, pad=pad)


# --------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------
def hvp(loss_fn: LossFn, params: PyTree, v: PyTree, *, precision: str | None = "highest") -> PyTree:
    r"""Hessian-vector product ``H v`` of ``loss_fn(params)`` by forward-over-reverse differentiation.

    .. math:: H v = \frac{\partial}{\partial \epsilon} \nabla L(\theta + \epsilon v)\Big|_{\epsilon=0}

    Example:
        >>> loss = lambda p: jnp.sum(p["w"] ** 4)
        >>> hvp(loss, {"w": jnp.ones(3)}, {"w": jnp.ones(3)})["w"]   # 12 w^2 v
        Array([12., 12., 12.], dtype=float32)
    """
    with matmul_precision(precision):
        return _hvp(loss_fn, params, v, None, None)


def dataset_hvp(
    loss_fn: LossFn,
    params: PyTree,
    v: PyTree,
    batches: PyTree,
    weights: Weights = None,
    *,
    precision: str | None = "highest",
) -> PyTree:
    r"""Data-averaged Hessian-vector product over stacked batches.

    .. math:: H v = \sum_b w_b\, \nabla^2_\theta \ell(\theta, B_b)\, v, \qquad \sum_b w_b = 1,

    one product per batch in one ``lax.scan``: the memory of a single batch.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar``.
        params: The point.
        v: A params-shaped vector.
        batches: Stacked batches (leaves ``(num_batches, batch_size, ...)``).
        weights: Per-batch weights (default equal), normalised to sum 1.
        precision: Matmul precision (``None``: JAX's default).

    Returns:
        ``H v``, params-shaped.
    """
    if batches is None:
        raise ValueError("dataset_hvp needs batches")
    w = normalized_weights(batches, weights)
    with matmul_precision(precision):
        return _hvp(loss_fn, params, v, batches, w)


def _default_steps(n: int, k: int) -> int:
    return min(n, max(4 * k + 40, 60))


def top_eigenpairs(
    loss_fn: LossFn,
    params: PyTree,
    k: int = 1,
    *,
    num_steps: int | None = None,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Weights = None,
    precision: str | None = "highest",
) -> Eigenpairs:
    r"""The ``k`` algebraically largest Hessian eigenpairs by Lanczos.

    ``num_steps`` Lanczos steps from a Gaussian start, the top ``k`` Ritz pairs and their
    residuals ``||H v_i - theta_i v_i||`` (``k`` more HVPs).

    Args:
        loss_fn: ``loss_fn(params)``, or ``loss_fn(params, batch)`` with ``batches``.
        params: The point.
        k: Number of eigenpairs.
        num_steps: Lanczos steps (default ``min(n, max(4k + 40, 60))``).
        key: PRNG key of the start vector (default ``jax.random.key(0)``).
        batches: Stacked batches, or ``None``.
        weights: Per-batch weights (default equal).
        precision: Matmul precision (``None``: JAX's default).

    Returns:
        :class:`Eigenpairs`: ``eigenvalues (k,)`` descending, ``eigenvectors`` (params-shaped,
        leading ``k``), ``residual_norms (k,)``.
    """
    steps = _default_steps(num_params(params), k) if num_steps is None else int(num_steps)
    w = normalized_weights(batches, weights)
    with matmul_precision(precision):
        return _extreme(loss_fn, params, batches, w, _key(key), k=int(k), num_steps=steps, largest=True)


def min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    *,
    num_steps: int = 80,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Weights = None,
    precision: str | None = "highest",
) -> Eigenpair:
    """The algebraically smallest Hessian eigenpair by Lanczos, with its residual.

    The eigenvalue error is at most the residual, about ``residual^2 / gap`` once isolated.
    Arguments as in :func:`top_eigenpairs`.

    Returns:
        :class:`Eigenpair`.
    """
    w = normalized_weights(batches, weights)
    with matmul_precision(precision):
        res = _extreme(loss_fn, params, batches, w, _key(key), k=1, num_steps=int(num_steps), largest=False)
    return Eigenpair(res.eigenvalues[0], jax.tree.map(lambda x: x[0], res.eigenvectors), res.residual_norms[0])


def augmented_min_eigenpair(
    loss_fn: LossFn,
    params: PyTree,
    delta: float,
    *,
    num_steps: int = 100,
    key: Array | None = None,
    batches: PyTree | None = None,
    weights: Weights = None,
    precision: str | None = "highest",
) -> AugmentedEigenpair:
    r"""Minimum eigenpair of the augmented Hessian ``[[H, g], [g^T, -delta]]`` by Lanczos.

    By Cauchy interlacing the minimum eigenvalue is at most ``min(lambda_min(H), -delta)``.
    The eigenvector's sign is arbitrary. HSODM (:func:`kan_jax.optim.hsodm`) steps along it.
    Other arguments as in :func:`top_eigenpairs`.

    Returns:
        :class:`AugmentedEigenpair`.
    """
    w = normalized_weights(batches, weights)
    with matmul_precision(precision):
        return _augmented_min(loss_fn, params, batches, w, jnp.asarray(delta), _key(key), num_steps=int(num_steps))


def hessian_trace(
    loss_fn: LossFn,
    params: PyTree,
    *,
    key: Array | None = None,
    estimator: str = "hutchinson",
    num_matvecs: int | None = None,
    max_probes: int = 100,
    min_probes: int = 10,
    stderr_tol: float | None = None,
    rel_stderr_tol: float | None = 1e-2,
    batches: PyTree | None = None,
    weights: Weights = None,
    precision: str | None = "highest",
) -> st.TraceEstimate:
    r"""Stochastic estimate of ``tr(H)``: Hutchinson or Hutch++.

    * ``"hutchinson"``: ``mean_i z_i^T H z_i`` over Rademacher probes; with ``num_matvecs=N``
      exactly ``N`` probes, otherwise probes until at least ``min_probes`` were used and the
      standard error is at most ``max(stderr_tol, rel_stderr_tol |mean|)``, or ``max_probes``.
    * ``"hutch++"``: a budget of ``num_matvecs`` (default ``max_probes``) HVPs, a third of them
      sketching the top of the spectrum exactly (:func:`kan_jax.curvature.hutch_plus_plus`).

    Other arguments as in :func:`top_eigenpairs`.

    Returns:
        :class:`~kan_jax.curvature.TraceEstimate`: ``mean``, ``stderr``, ``num_probes`` (HVPs)
        and the per-probe ``samples``.

    Raises:
        ValueError: For an unknown estimator or too few probes.
    """
    if estimator not in ("hutchinson", "hutch++"):
        raise ValueError(f"estimator must be 'hutchinson' or 'hutch++', got {estimator!r}")
    if estimator == "hutch++" and num_matvecs is None:
        num_matvecs = max_probes
    least = 3 if estimator == "hutch++" else 1
    if num_matvecs is not None and int(num_matvecs) < least:
        raise ValueError(f"num_matvecs must be at least {least} for {estimator}, got {num_matvecs}")
    if not 1 <= min_probes <= max_probes:
        raise ValueError(f"need 1 <= min_probes <= max_probes, got min_probes={min_probes}, max_probes={max_probes}")
    w = normalized_weights(batches, weights)
    atol = jnp.asarray(0.0 if stderr_tol is None else float(stderr_tol))
    rtol = jnp.asarray(0.0 if rel_stderr_tol is None else float(rel_stderr_tol))
    with matmul_precision(precision):
        return _trace(loss_fn, params, batches, w, _key(key), atol, rtol, estimator=estimator,
                      num_matvecs=None if num_matvecs is None else int(num_matvecs), max_probes=int(max_probes),
                      min_probes=int(min_probes))


def spectral_density(
    loss_fn: LossFn,
    params: PyTree,
    *,
    num_runs: int = 10,
    num_steps: int = 100,
    key: Array | None = None,
    num_points: int = 2000,
    sigma: float | None = None,
    rel_sigma: float = 0.005,
    pad: float = 6.0,
    batches: PyTree | None = None,
    weights: Weights = None,
    precision: str | None = "highest",
) -> st.SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature.

    ``num_runs`` Rademacher start vectors, ``num_steps`` Lanczos steps each, the Gauss rules
    averaged and smoothed by :func:`kan_jax.curvature.gaussian_density`.
    ``sum_i tau_i theta_i`` and ``sum_i tau_i theta_i^2`` estimate ``tr(H)/n`` and
    ``||H||_F^2/n`` without bias. Cost: ``num_runs * num_steps`` HVPs. Other arguments as in
    :func:`top_eigenpairs` and :func:`~kan_jax.curvature.gaussian_density`.

    Returns:
        :class:`~kan_jax.curvature.SpectralDensity`.
    """
    w = normalized_weights(batches, weights)
    sig = jnp.asarray(0.0 if sigma is None else float(sigma))
    with matmul_precision(precision):
        return _density(loss_fn, params, batches, w, _key(key), sig, jnp.asarray(float(rel_sigma)), jnp.asarray(float(pad)),
                        num_runs=int(num_runs), num_steps=int(num_steps), num_points=int(num_points))
