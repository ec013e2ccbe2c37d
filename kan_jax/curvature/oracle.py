"""Dense Hessian oracles of a loss for small models: :func:`jax.hessian` and ``eigh``.

Independent of the operators in :mod:`kan_jax.curvature.operators` (the tests compare the two).
The loss forms and the batch form are those of :mod:`kan_jax.hessian`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from kan_jax.curvature import operators as ops
from kan_jax.curvature._trace import jit_call

PyTree = Any
Array = jax.Array

__all__ = ["DEFAULT_MAX_PARAMS", "hessian_matrix", "exact_spectrum"]

#: Default limit on the number of parameters for which a dense Hessian is built
#: (10,000 parameters: an 800 MB float64 matrix and 10,000 HVPs).
DEFAULT_MAX_PARAMS = 10_000


def _precision_ctx(precision: str | None):
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def _num_params(params: PyTree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _prepare(batches, weights):
    if batches is None:
        if weights is not None:
            raise ValueError("weights given without batches")
        return None, None
    return batches, ops.batch_weights(batches, weights)


def _loss_and_data(loss_fn, batches, weights):
    """The analysed loss ``L(params)``: ``loss_fn`` itself, or ``sum_b w_b loss_fn(params, B_b)``
    over stacked batches (one ``lax.scan``)."""
    if batches is None:
        return loss_fn

    def total(p):
        def body(acc, xs):
            b, w = xs
            return acc + w.astype(acc.dtype) * loss_fn(p, b), None

        dtype = jnp.result_type(*jax.tree.leaves(p))
        return jax.lax.scan(body, jnp.zeros((), dtype), (batches, weights))[0]

    return total


def _check_size(params, max_params: int | None, what: str) -> int:
    n = _num_params(params)
    if max_params is not None and n > max_params:
        gib = n * n * 8 / 2**30
        raise ValueError(
            f"{what}: the model has {n:,} parameters, more than max_params={max_params:,} "
            f"(a dense {n:,} x {n:,} Hessian is {gib:.1f} GiB in float64 and costs {n:,} HVPs). "
            "Use the Lanczos-based top_eigenpairs / min_eigenpair / spectral_density / "
            "hessian_trace instead, or raise max_params."
        )
    return n


def _hessian_impl(loss_fn, params, batches, weights):
    x0, unravel = ravel_pytree(params)
    total = _loss_and_data(loss_fn, batches, weights)
    return jax.hessian(lambda x: total(unravel(x)))(x0)


def hessian_matrix(
    loss_fn: Callable[..., Array],
    params: PyTree,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    precision: str | None = "highest",
) -> Array:
    r"""Dense Hessian ``H_{ij} = d^2 L / d theta_i d theta_j`` of the raveled parameters.

    :func:`jax.hessian` of the flat loss: the exact oracle for small models (``O(n)`` HVPs,
    ``O(n^2)`` memory). Raises ``ValueError`` above ``max_params`` parameters.
    """
    _check_size(params, max_params, "hessian_matrix")
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        return jit_call(_hessian_impl, loss_fn, params, batches, w)


def _exact_spectrum_impl(loss_fn, params, batches, weights, eigenvectors):
    h = _hessian_impl(loss_fn, params, batches, weights)
    h = 0.5 * (h + h.T)
    if not eigenvectors:
        return jnp.linalg.eigvalsh(h)
    evals, evecs = jnp.linalg.eigh(h)
    return evals, jax.vmap(ravel_pytree(params)[1])(evecs.T)


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
    """All Hessian eigenvalues (ascending) by ``eigh`` of the dense, symmetrised Hessian;
    with ``eigenvectors=True`` also the eigenvectors (params-shaped, leading axis ``n``)."""
    _check_size(params, max_params, "exact_spectrum")
    batches, w = _prepare(batches, weights)
    with _precision_ctx(precision):
        return jit_call(_exact_spectrum_impl, loss_fn, params, batches, w, bool(eigenvectors))
