r"""Curvature operators: symmetric linear operators on a parameter pytree.

Every operator here is built once from the *code* of a model or loss and returns a pure
``matvec(v, params, *data) -> pytree`` whose parameters and data are ordinary (traced) arguments,
in the style of matfree: jit the algorithm that uses it once, then call it with new parameters
or new data without recompiling. Vectors ``v`` are pytrees shaped like ``params``.

* :func:`hessian`: ``v -> \nabla^2_\theta \ell(\theta, B)\, v`` for one batch ``B``
  (forward-over-reverse, ``jvp(grad)``).
* :func:`gauss_newton`: ``v -> J^\top \nabla^2_z \ell(z, y) J v`` with ``z = f(\theta, x)`` the
  model's outputs and ``J = \partial z / \partial \theta`` (generalised Gauss-Newton).
* :func:`over_batches`: lifts any per-batch operator to a sample-weighted sequence of batches.
* :func:`augmented`: ``(v, t) -> (A v + t g, g^\top v - \delta t)``, the HSODM matrix around
  any operator ``A``.
* :func:`dense`: the ``(n, n)`` matrix of any operator (exact oracle for small models).

Batches
-------
One form only. A *batch* is whatever pytree the loss takes (for example ``(x, y)``). A
*sequence of batches* is a **stacked** pytree: the same structure with a leading batch-index
axis of length ``num_batches`` on every leaf (``x: (num_batches, batch_size, ...)``), scanned
with :func:`jax.lax.scan`, together with weights ``w`` of shape ``(num_batches,)`` that sum to 1
(:func:`batch_weights`; equal by default, which is the sample-weighted mean when the batches
have equal sizes). Python lists of batches are refused (stack them with :func:`stack_batches`):
no container type changes the meaning. On several devices, shard the batch axis (axis 1) of
the stacked leaves; the scan and its reductions run unchanged under ``jit``.

References
----------
.. [Pearlmutter1994] B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural
   Computation 6 (1994) 147-160.
.. [Schraudolph2002] N. N. Schraudolph, "Fast curvature matrix-vector products for second-order
   gradient descent", Neural Computation 14 (2002) 1723-1738.
.. [Zhang2022] C. Zhang, D. Ge, C. He, B. Jiang, Y. Jiang, C. Xue, Y. Ye, "A homogeneous
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

__all__ = [
    "hessian",
    "linearized_hessian",
    "gauss_newton",
    "over_batches",
    "augmented",
    "dense",
    "flat",
    "tree_dot",
    "batch_weights",
    "stack_batches",
]


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """``sum_leaves vdot(a, b)`` of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _cast_like(v: PyTree, params: PyTree) -> PyTree:
    return jax.tree.map(lambda p, t: jnp.asarray(t, dtype=jnp.result_type(p)), params, v)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------
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

    Parameters
    ----------
    batches : PyTree
        Stacked batches: leaves ``(num_batches, batch_size, ...)``.
    weights : array-like, optional
        Non-negative weights of shape ``(num_batches,)`` (default: equal). For batches of
        different effective sizes (e.g. per-sample masks inside the loss) pass the sample counts.

    Returns
    -------
    Array, shape ``(num_batches,)``
        ``weights / sum(weights)``.
    """
    nb = _num_batches(batches)
    w = np.ones(nb) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (nb,):
        raise ValueError(f"weights must have shape ({nb},) (one per stacked batch), got {w.shape}")
    if np.any(w < 0) or not np.sum(w) > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w}")
    return jnp.asarray(w / np.sum(w))


def stack_batches(batches: Sequence[PyTree]) -> PyTree:
    """Stack a sequence of equally shaped batch pytrees along a new leading axis.

    Raises
    ------
    ValueError
        If the batches differ in structure or shape (batches of different sizes cannot be
        stacked; weight them through the loss or drop the remainder).
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

    One :func:`jax.lax.scan` over the stacked batches: memory is that of one batch, and this is
    the single code path of every dataset operator (Hessian, Gauss-Newton).

    Parameters
    ----------
    matvec : callable
        ``matvec(v, params, batch) -> pytree``.

    Returns
    -------
    callable
        ``(v, params, batches, weights) -> pytree`` with ``batches`` stacked (see the module
        docstring) and ``weights`` of shape ``(num_batches,)`` summing to 1.
    """

    def lifted(v: PyTree, params: PyTree, batches: PyTree, weights: Array) -> PyTree:
        init = jax.tree.map(jnp.zeros_like, v)

        def body(acc, xs):
            b, w = xs
            out = matvec(v, params, b)
            return jax.tree.map(lambda a, o: a + (w * o).astype(a.dtype), acc, out), None

        acc, _ = jax.lax.scan(body, init, (batches, weights))
        return acc

    return lifted


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------
def hessian(loss_fn: Callable[..., Array]) -> MatVec:
    r"""Hessian-vector product operator of ``loss_fn(params, *data)``.

    .. math:: H v = \frac{\partial}{\partial \epsilon}\, \nabla_\theta \ell(\theta + \epsilon v, B)
              \Big|_{\epsilon = 0}

    computed forward-over-reverse as ``jax.jvp(jax.grad(loss_fn), (params,), (v,))``
    [Pearlmutter1994]_: about two to three gradients of work, no dense matrix.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, *data) -> scalar``.

    Returns
    -------
    callable
        ``matvec(v, params, *data) -> H v`` (``v`` cast to the params' dtypes).

    Examples
    --------
    >>> mv = hessian(lambda p, x: jnp.sum(x * p ** 4))
    >>> mv(jnp.ones(3), jnp.ones(3), jnp.arange(3.0))   # 12 x p^2 v
    Array([ 0., 12., 24.], dtype=float32)
    """

    def matvec(v: PyTree, params: PyTree, *data: Any) -> PyTree:
        grad = jax.grad(lambda p: loss_fn(p, *data))
        return jax.jvp(grad, (params,), (_cast_like(v, params),))[1]

    return matvec


def linearized_hessian(loss_fn: Callable[..., Array], params: PyTree, *data: Any) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Gradient and a Hessian matvec that shares one primal pass (:func:`jax.linearize`).

    Inside a loop of many products at a fixed point (Lanczos, Hutchinson) each product then
    costs only the tangent pass (about a third to half of :func:`hessian`'s product). The
    residuals of the primal pass stay in memory: for large datasets use :func:`over_batches`.

    Returns
    -------
    grad : PyTree
        ``nabla loss_fn(params, *data)``.
    matvec : callable
        ``v -> H v``.
    """
    g, lin = jax.linearize(jax.grad(lambda p: loss_fn(p, *data)), params)
    return g, lambda v: lin(_cast_like(v, params))


def gauss_newton(model_fn: Callable[..., PyTree], output_loss_fn: Callable[..., Array]) -> MatVec:
    r"""Generalised Gauss-Newton operator for a loss on a model's outputs.

    With ``z = f(\theta, x)`` the outputs and ``\ell(z, y)`` the loss (a mean over samples),

    .. math:: G v = J^\top \big(\nabla^2_z \ell(z, y)\big) J v, \qquad J = \partial z / \partial \theta,

    one ``jvp`` through the model, one output-space Hessian product (``jvp`` of ``grad`` in ``z``)
    and one ``vjp`` back [Schraudolph2002]_. ``G`` is positive semi-definite whenever ``\ell`` is
    convex in ``z`` (squared error, softmax cross-entropy) and equals the Hessian when the
    model is linear in ``\theta``.

    Parameters
    ----------
    model_fn : callable
        ``model_fn(params, inputs) -> outputs`` (any pytree).
    output_loss_fn : callable
        ``output_loss_fn(outputs, targets) -> scalar``.

    Returns
    -------
    callable
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
        \begin{pmatrix} A v + t\, g \\ g^\top v - \delta\, t \end{pmatrix}

    on pairs ``(v, t)`` of a params-shaped pytree and a scalar; one product of ``A`` each
    [Zhang2022]_. With ``A`` the Hessian and ``g`` the gradient, the leftmost eigenvector of ``F``
    gives HSODM's direction (:mod:`kan_jax.hsodm`).

    Parameters
    ----------
    matvec : callable
        ``matvec(v, *args) -> A v``.

    Returns
    -------
    callable
        ``((v, t), g, delta, *args) -> (A v + t g, <g, v> - delta t)``.
    """

    def apply(vt: tuple[PyTree, Array], g: PyTree, delta: Array, *args: Any) -> tuple[PyTree, Array]:
        v, t = vt
        av = matvec(v, *args)
        top = jax.tree.map(lambda a, b: a + (t * b).astype(a.dtype), av, g)
        return top, (tree_dot(g, v) - delta * t).astype(jnp.result_type(t))

    return apply


def flat(matvec: Callable[..., PyTree], like: PyTree) -> tuple[Callable[..., Array], Array, Callable[[Array], PyTree]]:
    """Flat view of an operator on pytrees shaped like ``like``.

    Returns
    -------
    flat_matvec : callable
        ``(x (n,), *args) -> (n,)``.
    x0 : Array, shape ``(n,)``
        ``like`` raveled (:func:`jax.flatten_util.ravel_pytree` order).
    unravel : callable
        ``(n,) -> pytree``.
    """
    x0, unravel = ravel_pytree(like)

    def flat_matvec(x: Array, *args: Any) -> Array:
        return ravel_pytree(matvec(unravel(x), *args))[0].astype(x0.dtype)

    return flat_matvec, x0, unravel


def dense(matvec: Callable[..., PyTree], like: PyTree, *args: Any, batch_size: int = 64) -> Array:
    """The ``(n, n)`` matrix of an operator: its products with the unit vectors.

    Column ``j`` is ``matvec(e_j, *args)`` in :func:`jax.flatten_util.ravel_pytree` order,
    computed ``batch_size`` columns at a time (:func:`jax.lax.map`). An oracle for small models
    (``n`` products, ``n^2`` memory); for the loss Hessian :func:`kan_jax.hessian.hessian_matrix`
    is the independent ``jax.hessian`` version.

    Parameters
    ----------
    matvec : callable
        ``matvec(v, *args) -> pytree`` shaped like ``like``.
    like : PyTree
        Any pytree with the operator's domain structure and dtypes (e.g. ``params``).
    *args
        Passed to ``matvec``.
    batch_size : int
        Columns per vectorised chunk.

    Returns
    -------
    Array, shape ``(n, n)``
    """
    fmv, x0, _ = flat(matvec, like)
    n = x0.shape[0]
    cols = jax.lax.map(lambda j: fmv(jax.nn.one_hot(j, n, dtype=x0.dtype), *args), jnp.arange(n), batch_size=min(batch_size, n))
    return cols.T
