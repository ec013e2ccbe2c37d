r"""A loss function as curvature operators: the analysed loss, its gradient and Hessian matvec.

Two forms of loss are accepted throughout :mod:`kan_jax.curvature`:

* ``loss_fn(params) -> scalar`` (``batches=None``): the data are closed over. Products share
  one primal pass (:func:`jax.linearize`).
* ``loss_fn(params, batch) -> scalar`` with ``batches=`` a stacked pytree (every leaf has a
  leading batch-index axis) and optional per-batch ``weights`` (default equal, normalised to
  sum 1). The analysed loss is

  .. math:: L(\theta) = \sum_b w_b\, \ell(\theta, B_b),

  and every Hessian-vector product scans the same batches, so Lanczos sees one fixed symmetric
  operator (:func:`kan_jax.curvature.over_batches`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.curvature import operators as ops

PyTree = Any
Array = jax.Array
LossFn = Callable[..., Array]

__all__ = ["LossFn", "augmented_operator", "hessian_operator", "matmul_precision", "normalized_weights", "num_params",
           "total_loss"]


def num_params(params: PyTree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def matmul_precision(precision: str | None) -> ContextManager:
    """``jax.default_matmul_precision(precision)``, or no change for ``None``.

    The analysis runs at ``"highest"`` by default: TF32 products on GPUs otherwise limit
    eigenvalue accuracy to about 1e-4 relative.
    """
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def normalized_weights(batches: PyTree | None, weights: Sequence[float] | Array | None) -> Array | None:
    """Per-batch weights summing to 1 (:func:`kan_jax.curvature.batch_weights`), ``None`` without batches.

    Raises:
        ValueError: If ``weights`` come without ``batches``, or as in ``batch_weights``.
    """
    if batches is None:
        if weights is not None:
            raise ValueError("weights given without batches")
        return None
    return ops.batch_weights(batches, weights)


def total_loss(loss_fn: LossFn, batches: PyTree | None = None, weights: Sequence[float] | Array | None = None) -> Callable[[PyTree], Array]:
    """The analysed loss ``L(params)``: ``loss_fn`` itself, or ``sum_b w_b loss_fn(params, B_b)``.

    Args:
        loss_fn: ``loss_fn(params)``, or ``loss_fn(params, batch)`` with ``batches``.
        batches: Stacked batches, or ``None``.
        weights: Per-batch weights (default equal), normalised to sum 1.

    Returns:
        ``L(params) -> scalar`` (one ``lax.scan`` over the batches).
    """
    w = normalized_weights(batches, weights)
    if batches is None:
        return loss_fn

    def total(params: PyTree) -> Array:
        def body(acc, xs):
            b, wb = xs
            return acc + wb.astype(acc.dtype) * loss_fn(params, b), None

        dtype = jnp.result_type(*jax.tree.leaves(params))
        return jax.lax.scan(body, jnp.zeros((), dtype), (batches, w))[0]

    return total


def hessian_operator(
    loss_fn: LossFn,
    params: PyTree,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient and Hessian matvec of the analysed loss at ``params``, for your own jitted code.

    Without batches the primal pass is shared (:func:`jax.linearize`); with stacked batches each
    product scans them. Not compiled by itself.

    Args:
        loss_fn: ``loss_fn(params)``, or ``loss_fn(params, batch)`` with ``batches``.
        params: The point.
        batches: Stacked batches, or ``None``.
        weights: Per-batch weights (default equal; traced weights are accepted).

    Returns:
        ``(grad, matvec)``: the gradient pytree and ``v -> H v`` on params-shaped pytrees.
    """
    w = normalized_weights(batches, weights)
    if batches is None:
        return ops.linearized_hessian(loss_fn, params)
    w = w.astype(jnp.result_type(*jax.tree.leaves(params)))
    grad = ops.over_batches(lambda _, p, b: jax.grad(loss_fn)(p, b))(params, params, batches, w)
    hvp = ops.over_batches(ops.hessian(loss_fn))
    return grad, lambda v: hvp(v, params, batches, w)


def augmented_operator(
    loss_fn: LossFn,
    params: PyTree,
    delta: float | Array,
    *,
    batches: PyTree | None = None,
    weights: Sequence[float] | Array | None = None,
) -> Callable[[tuple[PyTree, Array]], tuple[PyTree, Array]]:
    r"""The augmented Hessian ``[[H, g], [g^T, -delta]]`` at ``params`` as a matvec on ``(v, t)``.

    :func:`kan_jax.curvature.augmented` bound to the loss: ``(v, t) -> (H v + t g,
    <g, v> - delta t)``, one HVP each.

    Returns:
        ``matvec((v, t)) -> (params-shaped pytree, scalar)``.
    """
    g, matvec = hessian_operator(loss_fn, params, batches=batches, weights=weights)
    amv = ops.augmented(matvec)
    return lambda vt: amv(vt, g, delta)
