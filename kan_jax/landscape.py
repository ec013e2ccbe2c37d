r"""Loss-landscape tools: 1-D interpolation between parameter vectors, 2-D slices, directions.

All evaluations are vectorised with :func:`jax.vmap` over the grid of coefficients inside one
:func:`jax.jit`-compiled function (``loss_fn`` is static: reuse the same function object).
``loss_fn`` is called as ``loss_fn(params)``, or as ``loss_fn(params, data)`` when ``data`` is
given, so one compiled function serves several datasets (e.g. freshly seeded test sets).
For big models, ``chunk_size`` evaluates the grid in sequential chunks of that many points
(:func:`jax.lax.map`) to bound memory.

Filter normalisation
--------------------
Random directions in parameter space have no notion of the scale of each weight, so a slice
along them mostly shows how scale-sensitive each layer is. Li et al. rescale each *filter* of
the direction to the norm of the matching filter of the parameters [Li2018]_:

.. math:: d_{f} \leftarrow \frac{d_{f}}{\|d_{f}\|}\, \|\theta_{f}\|.

A filter is the slice belonging to one output unit:

* KAN layers (``kan_jax.layers``): for ``base_weight`` ``(out, in)`` the filter ``o`` is the
  axis-0 slice ``[o]``, for ``spline_weight`` ``(in, G + k, out)`` and ``spline_scaler``
  ``(in, out)`` the last-axis slice ``[..., o]``: all incoming edges of output node ``o`` (for
  ``spline_weight``, every B-spline coefficient of those edges). Normalising the base, spline and
  scaler tensors separately keeps their very different scales (``spline_weight`` starts near
  ``scale_noise / G``) apart.
* Any other array with ``ndim >= 2`` also uses axis 0 (PyTorch / conv-filter convention),
  except leaves named ``kernel`` (Flax ``Dense`` / ``Conv``: output features last), which use
  the last axis.
* Leaves with ``ndim <= 1`` (biases, scalars): by default (``vector_mode="zero"``) the
  direction is set to zero there, as Li et al. do for biases and batch-norm parameters, so the
  slice does not move them; ``vector_mode="whole"`` instead rescales the whole leaf to
  ``||theta_leaf||``.

Filters of the direction with zero norm stay zero. A KAN's knot grid is not a parameter (it lives
in its own variable collection) and is never perturbed.

References
----------
.. [Li2018] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the loss landscape of
   neural nets", NeurIPS 2018.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kan_jax.functional import PARAM_OUTPUT_AXIS
from kan_jax.numerics import safe_divide

PyTree = Any
Array = jax.Array

__all__ = ["interpolate", "interpolate_params", "slice_2d", "random_direction", "filter_normalize", "filter_axis"]


def _call(loss_fn, params, data):
    return loss_fn(params) if data is None else loss_fn(params, data)


def _map(fn, xs, chunk_size):
    if chunk_size is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=int(chunk_size))


def interpolate_params(theta0: PyTree, theta1: PyTree, alpha: Any) -> PyTree:
    r"""The point :math:`(1 - \alpha)\,\theta_0 + \alpha\,\theta_1` of the line through two pytrees.

    Every leaf keeps the dtype of its ``theta0`` leaf. ``alpha`` is a scalar (``0`` gives
    ``theta0``, ``1`` gives ``theta1``; values outside ``[0, 1]`` extrapolate); pure and
    jit/vmap/grad safe.
    """
    return jax.tree.map(lambda x0, x1: ((1 - alpha) * x0 + alpha * x1).astype(jnp.result_type(x0)), theta0, theta1)


@functools.partial(jax.jit, static_argnames=("loss_fn", "chunk_size"))
def _interpolate_jit(loss_fn, theta0, theta1, alphas, data, chunk_size):
    def at(a):
        return _call(loss_fn, interpolate_params(theta0, theta1, a), data)

    return _map(at, alphas, chunk_size)


def interpolate(
    loss_fn: Callable[..., Array],
    theta0: PyTree,
    theta1: PyTree,
    alphas: Array,
    *,
    data: PyTree | None = None,
    chunk_size: int | None = None,
) -> Array:
    r"""Loss along the straight line through two parameter vectors.

    .. math:: \ell(\alpha) = L\big((1 - \alpha)\,\theta_0 + \alpha\,\theta_1\big)

    for every ``alpha`` in ``alphas`` (values outside ``[0, 1]`` extrapolate), evaluated with
    ``vmap``. With ``theta0`` the initial and ``theta1`` the trained parameters this is the
    Goodfellow et al. (2015) linear-interpolation plot.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params) -> scalar``, or ``loss_fn(params, data)`` if ``data`` is given.
    theta0, theta1 : PyTree
        Parameters of identical structure (each interpolated leaf keeps ``theta0``'s dtype).
    alphas : Array, shape ``(A,)``
        Interpolation coefficients.
    data : PyTree, optional
        Passed to ``loss_fn`` as its second argument (a traced input, so new data do not
        recompile).
    chunk_size : int, optional
        Evaluate sequentially in chunks of this many coefficients (memory bound for big models).

    Returns
    -------
    Array, shape ``(A,)``
        Losses.

    Examples
    --------
    >>> alphas = jnp.linspace(-1.5, 2.0, 50)
    >>> losses = interpolate(loss_fn, theta_init, theta_final, alphas, data=(x_test, y_test))
    """
    alphas = jnp.asarray(alphas)
    return _interpolate_jit(loss_fn, theta0, theta1, alphas, data, chunk_size)


@functools.partial(jax.jit, static_argnames=("loss_fn", "chunk_size"))
def _slice_jit(loss_fn, theta, d1, d2, alphas, betas, data, chunk_size):
    a, b = jnp.meshgrid(alphas, betas, indexing="ij")

    def at(ab):
        x, y = ab
        p = jax.tree.map(lambda t, u, v: (t + x * u + y * v).astype(jnp.result_type(t)), theta, d1, d2)
        return _call(loss_fn, p, data)

    out = _map(at, (a.reshape(-1), b.reshape(-1)), chunk_size)
    return out.reshape(a.shape)


def slice_2d(
    loss_fn: Callable[..., Array],
    theta: PyTree,
    d1: PyTree,
    d2: PyTree,
    alphas: Array,
    betas: Array,
    *,
    filter_normalize: bool = False,
    vector_mode: str = "zero",
    data: PyTree | None = None,
    chunk_size: int | None = None,
) -> Array:
    r"""Loss on a 2-D plane through ``theta``.

    .. math:: S_{ij} = L(\theta + \alpha_i d_1 + \beta_j d_2)

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params) -> scalar``, or ``loss_fn(params, data)`` if ``data`` is given.
    theta : PyTree
        Centre of the plane.
    d1, d2 : PyTree
        Directions shaped like ``theta`` (e.g. from :func:`random_direction`, or the top
        Hessian eigenvectors from :func:`kan_jax.hessian.top_eigenpairs`).
    alphas : Array, shape ``(A,)``
    betas : Array, shape ``(B,)``
    filter_normalize : bool
        First rescale ``d1`` and ``d2`` filter-wise to ``theta`` (:func:`filter_normalize`).
    vector_mode : {"zero", "whole"}
        Treatment of 1-D / scalar leaves when ``filter_normalize`` is set.
    data : PyTree, optional
        Passed to ``loss_fn`` as its second argument.
    chunk_size : int, optional
        Evaluate sequentially in chunks of this many grid points.

    Returns
    -------
    Array, shape ``(A, B)``
        ``S[i, j]`` is the loss at ``(alphas[i], betas[j])``.
    """
    if filter_normalize:
        d1 = _filter_normalize(d1, theta, vector_mode=vector_mode)
        d2 = _filter_normalize(d2, theta, vector_mode=vector_mode)
    return _slice_jit(loss_fn, theta, d1, d2, jnp.asarray(alphas), jnp.asarray(betas), data, chunk_size)


def filter_axis(path: tuple, leaf: Array) -> int:
    """Axis indexing the filters (output units) of a parameter leaf.

    ``-1`` (last axis) for leaves whose name is ``kernel`` (Flax ``Dense``/``Conv`` store output
    features last), ``spline_weight`` or ``spline_scaler`` (a KAN layer's ``(in, G + k, out)``
    and ``(in, out)``), ``0`` otherwise (``base_weight`` ``(out, in)``, PyTorch layouts).

    Parameters
    ----------
    path : tuple
        Key path of the leaf (from :func:`jax.tree_util.tree_flatten_with_path`).
    leaf : Array

    Returns
    -------
    int
    """
    name = None
    if path:
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", None))
    return -1 if name == "kernel" else PARAM_OUTPUT_AXIS.get(name, 0)


def _normalize_leaf(d, t, axis, vector_mode):
    d = jnp.asarray(d)
    t = jnp.asarray(t)
    if d.ndim <= 1:
        if vector_mode == "zero":
            return jnp.zeros_like(d)
        nd = jnp.linalg.norm(d)
        return (d * safe_divide(jnp.linalg.norm(t), nd)).astype(d.dtype)
    axis = axis % d.ndim
    others = tuple(i for i in range(d.ndim) if i != axis)
    nd = jnp.sqrt(jnp.sum(d * d, axis=others, keepdims=True))
    nt = jnp.sqrt(jnp.sum(t * t, axis=others, keepdims=True))
    return (d * safe_divide(nt, nd)).astype(d.dtype)


def filter_normalize(
    direction: PyTree,
    params: PyTree,
    *,
    vector_mode: str = "zero",
    axis_fn: Callable[[tuple, Array], int] = filter_axis,
) -> PyTree:
    r"""Rescale a direction filter-wise to the norms of the parameters [Li2018]_.

    For each leaf with ``ndim >= 2`` and each filter ``f`` (index along ``axis_fn(path, leaf)``),
    ``d_f <- d_f * ||theta_f|| / ||d_f||``; see the module docstring for what a filter is in a
    KAN. Leaves with ``ndim <= 1`` are zeroed (``vector_mode="zero"``, default) or rescaled as a
    whole (``"whole"``).

    Parameters
    ----------
    direction, params : PyTree
        Same structure.
    vector_mode : {"zero", "whole"}
    axis_fn : callable
        ``(key_path, leaf) -> axis`` of the filters; default :func:`filter_axis`.

    Returns
    -------
    PyTree
        The normalised direction (dtypes of ``direction`` kept).
    """
    if vector_mode not in ("zero", "whole"):
        raise ValueError(f"vector_mode must be 'zero' or 'whole', got {vector_mode!r}")
    return _filter_normalize_jit(direction, params, vector_mode, axis_fn)


@functools.partial(jax.jit, static_argnames=("vector_mode", "axis_fn"))
def _filter_normalize_jit(direction, params, vector_mode, axis_fn):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    d_leaves = treedef.flatten_up_to(direction)
    out = [_normalize_leaf(d, t, axis_fn(path, t), vector_mode) for (path, t), d in zip(leaves, d_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


# Alias usable inside functions whose ``filter_normalize`` flag shadows the function name.
_filter_normalize = filter_normalize


def random_direction(
    key: Array,
    params: PyTree,
    *,
    filter_normalize: bool = True,
    vector_mode: str = "zero",
) -> PyTree:
    """A standard-normal direction shaped like ``params``, filter-normalised by default.

    Parameters
    ----------
    key : PRNG key
    params : PyTree
        Template (structure, shapes and floating dtypes) and reference norms.
    filter_normalize : bool
        Apply :func:`filter_normalize` (default ``True``).
    vector_mode : {"zero", "whole"}
        Treatment of 1-D / scalar leaves under filter normalisation.

    Returns
    -------
    PyTree
        Direction with the structure and dtypes of ``params``.
    """
    d = _random_tree(key, params)
    if filter_normalize:
        d = _filter_normalize(d, params, vector_mode=vector_mode)
    return d


@jax.jit
def _random_tree(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    d = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, d)
