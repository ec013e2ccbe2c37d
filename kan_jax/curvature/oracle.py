"""Dense Hessian oracles of a loss for small models: :func:`jax.hessian` and ``eigh``.

Independent of the operators in :mod:`kan_jax.curvature.operators` (the tests compare the two).
The loss forms are those of :mod:`kan_jax.curvature.loss`; the loss function is a static
argument of the compiled program, its ``params``, ``batches`` and ``weights`` are traced.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from kan_jax.curvature.loss import matmul_precision, normalized_weights, num_params, total_loss

PyTree = Any
Array = jax.Array

__all__ = ["DEFAULT_MAX_PARAMS", "exact_spectrum", "hessian_matrix"]

#: Largest model, in parameters, for which a dense Hessian is built by default: an 800 MB
#: float64 matrix and 10,000 HVPs.
DEFAULT_MAX_PARAMS = 10_000


def _check_size(params: PyTree, max_params: int | None, what: str) -> None:
    n = num_params(params)
    if max_params is not None and n > max_params:
        gib = n * n * 8 / 2**30
        raise ValueError(
            f"{what}: the model has {n:,} parameters, more than max_params={max_params:,} "
            f"(a dense {n:,} x {n:,} Hessian is {gib:.1f} GiB in float64 and costs {n:,} HVPs). "
            "Use the Lanczos-based top_eigenpairs / min_eigenpair / spectral_density / "
            "hessian_trace instead, or raise max_params."
        )


def _dense(loss_fn: Callable[..., Array], params: PyTree, batches: PyTree | None, weights: Array | None) -> Array:
    x0, unravel = ravel_pytree(params)
    total = total_loss(loss_fn, batches, weights)
    return jax.hessian(lambda x: total(unravel(x)))(x0)


@functools.partial(jax.jit, static_argnames=("loss_fn", "eigen", "eigenvectors"))
def _oracle(loss_fn, params, batches, weights, *, eigen, eigenvectors):
    h = _dense(loss_fn, params, batches, weights)
    if not eigen:
        return h
    h = 0.5 * (h + h.T)
    if not eigenvectors:
        return jnp.linalg.eigvalsh(h)
    evals, evecs = jnp.linalg.eigh(h)
    return evals, jax.vmap(ravel_pytree(params)[1])(evecs.T)


def hessian_matrix(
    loss_fn: Callable[..., Array],
    params: PyTree,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    precision: str | None = "highest",
) -> Array:
    r"""Dense Hessian ``H_ij = d^2 L / d theta_i d theta_j`` of the raveled parameters.

    :func:`jax.hessian` of the flat loss: the exact oracle for small models (``O(n)`` HVPs,
    ``O(n^2)`` memory).

    Args:
        loss_fn: ``loss_fn(params)``, or ``loss_fn(params, batch)`` with ``batches``.
        params: The point.
        batches: Stacked batches, or ``None``.
        weights: Per-batch weights (default equal).
        max_params: Refuse larger models (``None``: no limit).
        precision: Matmul precision of the analysis (``None``: JAX's default).

    Returns:
        The ``(n, n)`` Hessian in :func:`jax.flatten_util.ravel_pytree` order.

    Raises:
        ValueError: Above ``max_params`` parameters.
    """
    _check_size(params, max_params, "hessian_matrix")
    with matmul_precision(precision):
        return _oracle(loss_fn, params, batches, normalized_weights(batches, weights), eigen=False, eigenvectors=False)


def exact_spectrum(
    loss_fn: Callable[..., Array],
    params: PyTree,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    eigenvectors: bool = False,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    precision: str | None = "highest",
) -> Array | tuple[Array, PyTree]:
    """All Hessian eigenvalues (ascending) by ``eigh`` of the dense, symmetrised Hessian.

    Args:
        loss_fn: ``loss_fn(params)``, or ``loss_fn(params, batch)`` with ``batches``.
        params: The point.
        batches: Stacked batches, or ``None``.
        weights: Per-batch weights (default equal).
        eigenvectors: Also return the eigenvectors (params-shaped, leading axis ``n``).
        max_params: Refuse larger models (``None``: no limit).
        precision: Matmul precision of the analysis (``None``: JAX's default).

    Returns:
        The ``(n,)`` eigenvalues, or ``(eigenvalues, eigenvectors)``.
    """
    _check_size(params, max_params, "exact_spectrum")
    with matmul_precision(precision):
        return _oracle(loss_fn, params, batches, normalized_weights(batches, weights), eigen=True, eigenvectors=bool(eigenvectors))
