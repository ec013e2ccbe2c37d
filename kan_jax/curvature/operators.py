r"""Curvature operators: symmetric linear operators on a parameter pytree.

Each operator is built once from the code of a model or loss and returns a pure
``matvec(v, params, *data) -> pytree`` whose parameters and data are ordinary (traced)
arguments: jit the algorithm that uses it once, then call it with new parameters or new data
without recompiling. Vectors ``v`` are pytrees shaped like ``params``.

* :func:`hessian`: ``v -> \nabla^2_\theta \ell(\theta, B)\, v`` (forward-over-reverse).
* :func:`gauss_newton`: ``v -> J^\top \nabla^2_z \ell(z, y) J v`` with ``z = f(\theta, x)``.
* :func:`over_batches`: any per-batch operator summed over a weighted sequence of batches.
* :func:`augmented`: ``(v, t) -> (A v + t g, g^\top v - \delta t)``, the HSODM matrix.
* :func:`dense`: the ``(n, n)`` matrix of any operator (an oracle for small models).

A *batch* is whatever pytree the loss takes (for example ``(x, y)``). A *sequence of batches*
is a **stacked** pytree: every leaf has a leading batch-index axis
(``x: (num_batches, batch_size, ...)``), scanned with :func:`jax.lax.scan`, with weights ``w`` of
shape ``(num_batches,)`` summing to 1 (:func:`batch_weights`). Python lists of batches are
refused (:func:`stack_batches` stacks them). On several devices, shard axis 1 of the stacked
leaves; the scan and its reductions run unchanged under ``jit``.

References:
  B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6 (1994)
  147-160. N. N. Schraudolph, "Fast curvature matrix-vector products for second-order gradient
  descent", Neural Computation 14 (2002) 1723-1738. C. Zhang et al., "A homogeneous
  second-order descent method for nonconvex optimization", arXiv:2211.08212.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any
Array = jax.Array
MatVec = Callable[..., PyTree]

__all__ = ["augmented", "batch_weights", "dense", "flat", "gauss_newton", "hessian", "linearized_hessian",
           "over_batches", "stack_batches", "tree_dot"]


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """``sum_leaves vdot(a, b)`` of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _cast_like(v: PyTree, params: PyTree) -> PyTree:
    return jax.tree.map(lambda p, t: jnp.asarray(t, dtype=jnp.result_type(p)), params, v)


def _num_batches(batches: PyTree) -> int:
    if isinstance(batches, list):
        raise TypeError(
            f"batches must be a stacked pytree (every leaf with a leading batch-index axis), got a "
            f"Python list of {len(batches)} entries; stack equal-size batches with "
            "kan_jax.curvature.stack_batches(list)"
        )
    leaves = jax.tree.leaves(batches)
    if not leaves:
        raise ValueError("batches has no array leaves")
    sizes = {int(np.shape(a)[0]) if np.ndim(a) else None for a in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = [tuple(np.shape(a)) for a in leaves]
        raise ValueError(
            "batches must be a stacked pytree whose leaves all have the same leading "
            f"batch-index axis (num_batches, batch_size, ...); got leaf shapes {shapes}"
        )
    return sizes.pop()


def batch_weights(batches: PyTree, weights: Sequence[float] | Array | None = None) -> Array:
    """Validated per-batch weights of stacked ``batches``, normalised to sum 1.

    Args:
        batches: Stacked batches, leaves ``(num_batches, batch_size, ...)``.
        weights: Non-negative ``(num_batches,)`` weights (default equal). For batches of
            different effective sizes (per-sample masks inside the loss) pass the sample counts.
            Traced weights are normalised without the value checks.

    Returns:
        ``weights / sum(weights)``, shape ``(num_batches,)``.

    Raises:
        TypeError: If ``batches`` is a Python list.
        ValueError: If the leaves disagree on the batch axis or the weights are invalid.
    """
    nb = _num_batches(batches)
    shape = (nb,) if weights is None else np.shape(weights)
    if shape != (nb,):
        raise ValueError(f"weights must have shape ({nb},) (one per stacked batch), got {shape}")
    try:
        w = np.ones(nb) if weights is None else np.asarray(weights, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:  # inside a trace: no value checks
        return weights / jnp.sum(weights)
    if np.any(w < 0) or not np.sum(w) > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    return jnp.asarray(w / np.sum(w))


def stack_batches(batches: Sequence[PyTree]) -> PyTree:
    """Stack equally shaped batch pytrees along a new leading axis.

    Raises:
        ValueError: If the batches differ in structure or shape (weight unequal batches through
            the loss or drop the remainder).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("stack_batches needs at least one batch")
    struct = jax.tree.structure(batches[0])
    shapes = [np.shape(a) for a in jax.tree.leaves(batches[0])]
    for i, b in enumerate(batches[1:], 1):
        if jax.tree.structure(b) != struct or [np.shape(a) for a in jax.tree.leaves(b)] != shapes:
            got = [np.shape(a) for a in jax.tree.leaves(b)]
            raise ValueError(f"batch {i} has leaf shapes {got}, expected {shapes} like batch 0")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def over_batches(matvec: MatVec) -> Callable[..., PyTree]:
    r"""Lift a per-batch operator to a weighted sequence of stacked batches.

    .. math:: A(\theta; \{B_b\}, w)\, v = \sum_b w_b\, A(\theta; B_b)\, v

    One :func:`jax.lax.scan` over the batches: the memory of one batch.

    Args:
        matvec: ``matvec(v, params, batch) -> pytree``.

    Returns:
        ``lifted(v, params, batches, weights) -> pytree`` with stacked ``batches`` and
        ``(num_batches,)`` weights summing to 1; the result has ``matvec``'s dtypes.
    """

    def lifted(v: PyTree, params: PyTree, batches: PyTree, weights: Array) -> PyTree:
        first = jax.tree.map(lambda a: a[0], batches)
        init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(matvec, v, params, first))

        def body(acc, xs):
            b, w = xs
            out = matvec(v, params, b)
            return jax.tree.map(lambda a, o: a + (w * o).astype(a.dtype), acc, out), None

        return jax.lax.scan(body, init, (batches, weights))[0]

    return lifted


def hessian(loss_fn: Callable[..., Array]) -> MatVec:
    r"""Hessian-vector product operator of ``loss_fn(params, *data)``.

    .. math:: H v = \frac{\partial}{\partial \epsilon}\, \nabla_\theta \ell(\theta + \epsilon v, B)
              \Big|_{\epsilon = 0},

    forward-over-reverse, ``jax.jvp(jax.grad(loss_fn), (params,), (v,))``: about two to three
    gradients of work, no dense matrix.

    Args:
        loss_fn: ``loss_fn(params, *data) -> scalar``.

    Returns:
        ``matvec(v, params, *data) -> H v`` (``v`` cast to the params' dtypes).

    Example:
        >>> mv = hessian(lambda p, x: jnp.sum(x * p ** 4))
        >>> mv(jnp.ones(3), jnp.ones(3), jnp.arange(3.0))   # 12 x p^2 v
        Array([ 0., 12., 24.], dtype=float32)
    """

    def matvec(v: PyTree, params: PyTree, *data: Any) -> PyTree:
        grad = jax.grad(lambda p: loss_fn(p, *data))
        return jax.jvp(grad, (params,), (_cast_like(v, params),))[1]

    return matvec


def linearized_hessian(loss_fn: Callable[..., Array], params: PyTree, *data: Any) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient and a Hessian matvec sharing one primal pass (:func:`jax.linearize`).

    In a loop of many products at a fixed point (Lanczos, Hutchinson) each product then costs
    only the tangent pass. The primal residuals stay in memory: for large datasets use
    :func:`over_batches`.

    Returns:
        ``(grad, matvec)``: ``nabla loss_fn(params, *data)`` and ``v -> H v``.
    """
    g, lin = jax.linearize(jax.grad(lambda p: loss_fn(p, *data)), params)
    return g, lambda v: lin(_cast_like(v, params))


def gauss_newton(model_fn: Callable[..., PyTree], output_loss_fn: Callable[..., Array]) -> MatVec:
    r"""Generalised Gauss-Newton operator for a loss on a model's outputs.

    .. math:: G v = J^\top \big(\nabla^2_z \ell(z, y)\big) J v, \qquad z = f(\theta, x), \
              J = \partial z / \partial \theta,

    one ``jvp`` through the model, one output-space Hessian product and one ``vjp``. ``G`` is
    positive semi-definite when ``\ell`` is convex in ``z`` and equals the Hessian for a model
    linear in ``\theta``.

    Args:
        model_fn: ``model_fn(params, inputs) -> outputs`` (any pytree).
        output_loss_fn: ``output_loss_fn(outputs, targets) -> scalar``.

    Returns:
        ``matvec(v, params, batch) -> G v`` with ``batch = (inputs, targets)``.
    """

    def matvec(v: PyTree, params: PyTree, batch: tuple[Any, Any]) -> PyTree:
        inputs, targets = batch
        f = lambda p: model_fn(p, inputs)  # noqa: E731
        out, vjp = jax.vjp(f, params)
        jv = jax.jvp(f, (params,), (_cast_like(v, params),))[1]
        hjv = jax.jvp(jax.grad(lambda z: output_loss_fn(z, targets)), (out,), (jv,))[1]
        return vjp(hjv)[0]

    return matvec


def augmented(matvec: Callable[..., PyTree]) -> Callable[..., tuple[PyTree, Array]]:
    r"""The HSODM aggregated matrix around an operator ``A``.

    .. math::
        F = \begin{pmatrix} A & g \\ g^\top & -\delta \end{pmatrix}, \qquad
        F \begin{pmatrix} v \\ t \end{pmatrix} =
        \begin{pmatrix} A v + t\, g \\ g^\top v - \delta\, t \end{pmatrix},

    on pairs of a params-shaped pytree and a scalar, one product of ``A`` each. With ``A`` the
    Hessian and ``g`` the gradient its leftmost eigenvector gives HSODM's direction
    (:func:`kan_jax.optim.hsodm`).

    Args:
        matvec: ``matvec(v, *args) -> A v``.

    Returns:
        ``apply((v, t), g, delta, *args) -> (A v + t g, <g, v> - delta t)``.
    """

    def apply(vt: tuple[PyTree, Array], g: PyTree, delta: Array, *args: Any) -> tuple[PyTree, Array]:
        v, t = vt
        av = matvec(v, *args)
        top = jax.tree.map(lambda a, b: a + (t * b).astype(a.dtype), av, g)
        return top, (tree_dot(g, v) - delta * t).astype(jnp.result_type(t))

    return apply


def flat(matvec: Callable[..., PyTree], like: PyTree) -> tuple[Callable[..., Array], Array, Callable[[Array], PyTree]]:
    """Flat view of an operator on pytrees shaped like ``like``.

    Returns:
        ``(flat_matvec, x0, unravel)``: ``flat_matvec(x, *args)`` on ``(n,)`` vectors, ``like``
        raveled (:func:`jax.flatten_util.ravel_pytree` order) and its inverse.
    """
    x0, unravel = ravel_pytree(like)

    def flat_matvec(x: Array, *args: Any) -> Array:
        return ravel_pytree(matvec(unravel(x), *args))[0].astype(x0.dtype)

    return flat_matvec, x0, unravel


def dense(matvec: Callable[..., PyTree], like: PyTree, *args: Any, batch_size: int = 64) -> Array:
    """The ``(n, n)`` matrix of an operator: its products with the unit vectors.

    Column ``j`` is ``matvec(e_j, *args)`` in :func:`jax.flatten_util.ravel_pytree` order,
    ``batch_size`` columns at a time (:func:`jax.lax.map`): ``n`` products, ``n^2`` memory. For
    the loss Hessian :func:`kan_jax.curvature.hessian_matrix` is the independent
    ``jax.hessian`` oracle.

    Args:
        matvec: ``matvec(v, *args) -> pytree`` shaped like ``like``.
        like: Any pytree with the operator's domain structure and dtypes (e.g. ``params``).
        *args: Passed to ``matvec``.
        batch_size: Columns per vectorised chunk.

    Returns:
        The ``(n, n)`` matrix.
    """
    fmv, x0, _ = flat(matvec, like)
    n = x0.shape[0]
    cols = jax.lax.map(lambda j: fmv(jax.nn.one_hot(j, n, dtype=x0.dtype), *args), jnp.arange(n), batch_size=min(batch_size, n))
    return cols.T
