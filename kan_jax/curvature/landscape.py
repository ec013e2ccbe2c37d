r"""Loss landscapes: 1-D interpolation between parameter vectors, 2-D slices, directions.

Every evaluation is vectorised with :func:`jax.vmap` over the grid of coefficients in one
compiled function; ``loss_fn`` is static (reuse the same function object). ``loss_fn`` is
called as ``loss_fn(params)``, or as ``loss_fn(params, data)`` when ``data`` is given, a traced
argument, so one compiled function serves several datasets. ``chunk_size`` evaluates the grid
in sequential chunks (:func:`jax.lax.map`) to bound memory.

Random directions know nothing of the scale of each weight, so a slice along them mostly shows
how scale-sensitive each layer is. Filter normalisation rescales each *filter* of the direction
to the norm of the matching filter of the parameters,
:math:`d_f \leftarrow d_f \|\theta_f\| / \|d_f\|`. A filter is the slice of one output unit
(:func:`filter_axis`): for a KAN layer all incoming edges of one output node (for
``spline_weight`` every B-spline coefficient of those edges), with the base, spline and scaler
tensors normalised separately so their very different scales stay apart; for Flax ``kernel``
leaves the last axis; for other arrays axis 0. Leaves with ``ndim <= 1`` are zeroed
(``vector_mode="zero"``, as for biases) or rescaled as a whole (``"whole"``). A KAN's knot grid
is not a parameter and is never perturbed.

References:
  H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the loss landscape of neural
  nets", NeurIPS 2018. I. J. Goodfellow, O. Vinyals, A. M. Saxe, "Qualitatively characterizing
  neural network optimization problems", ICLR 2015.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kan_jax.layer import PARAM_OUTPUT_AXIS
from kan_jax.numerics import safe_divide

PyTree = Any
Array = jax.Array

__all__ = ["filter_axis", "filter_normalize", "interpolate", "interpolate_params", "random_direction", "slice_2d"]


def _call(loss_fn, params, data):
    return loss_fn(params) if data is None else loss_fn(params, data)


def _map(fn, xs, chunk_size):
    if chunk_size is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=int(chunk_size))


def interpolate_params(theta0: PyTree, theta1: PyTree, alpha: Any) -> PyTree:
    r"""The point :math:`(1 - \alpha)\,\theta_0 + \alpha\,\theta_1` of the line through two pytrees.

    Pure (jit, vmap and grad safe); every leaf keeps the dtype of its ``theta0`` leaf.

    Args:
        theta0: The point at ``alpha = 0``.
        theta1: The point at ``alpha = 1``, same structure.
        alpha: Scalar coefficient (outside ``[0, 1]`` extrapolates).

    Returns:
        The interpolated pytree.
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

    for every ``alpha`` in ``alphas`` (values outside ``[0, 1]`` extrapolate). With ``theta0``
    the initial and ``theta1`` the trained parameters this is Goodfellow et al.'s plot.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, data)`` with ``data``.
        theta0: Start of the line.
        theta1: End of the line, same structure (each point keeps ``theta0``'s dtypes).
        alphas: ``(A,)`` coefficients.
        data: Second argument of ``loss_fn`` (traced: new data do not recompile).
        chunk_size: Evaluate sequentially in chunks of this many coefficients.

    Returns:
        The ``(A,)`` losses.

    Example:
        >>> loss = lambda p, x: jnp.mean((x * p["w"] - 1.0) ** 2)
        >>> t0, t1 = {"w": jnp.zeros(())}, {"w": jnp.ones(())}
        >>> interpolate(loss, t0, t1, jnp.array([0.0, 1.0]), data=jnp.ones(4))
        Array([1., 0.], dtype=float32)
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

    Args:
        loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, data)`` with ``data``.
        theta: Centre of the plane.
        d1: First direction shaped like ``theta`` (e.g. :func:`random_direction`, or a top
            Hessian eigenvector from :func:`kan_jax.curvature.top_eigenpairs`).
        d2: Second direction.
        alphas: ``(A,)`` coefficients of ``d1``.
        betas: ``(B,)`` coefficients of ``d2``.
        filter_normalize: First rescale ``d1`` and ``d2`` filter-wise to ``theta``.
        vector_mode: ``"zero"`` or ``"whole"``: 1-D and scalar leaves under normalisation.
        data: Second argument of ``loss_fn`` (traced).
        chunk_size: Evaluate sequentially in chunks of this many grid points.

    Returns:
        The ``(A, B)`` losses, ``S[i, j]`` at ``(alphas[i], betas[j])``.
    """
    if filter_normalize:
        d1 = _normalized(d1, theta, vector_mode)
        d2 = _normalized(d2, theta, vector_mode)
    return _slice_jit(loss_fn, theta, d1, d2, jnp.asarray(alphas), jnp.asarray(betas), data, chunk_size)


def filter_axis(path: tuple, leaf: Array) -> int:
    """Axis indexing the filters (output units) of a parameter leaf.

    ``-1`` (last axis) for leaves whose name is ``kernel`` (Flax ``Dense``/``Conv`` store output
    features last), ``spline_weight`` or ``spline_scaler`` (a KAN layer's ``(in, G + k, out)``
    and ``(in, out)``, from :data:`kan_jax.layer.PARAM_OUTPUT_AXIS`), ``0`` otherwise
    (``base_weight`` ``(out, in)``, PyTorch layouts).

    Args:
        path: Key path of the leaf (:func:`jax.tree_util.tree_flatten_with_path`).
        leaf: The leaf.

    Returns:
        The axis.
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
    r"""Rescale a direction filter-wise to the norms of the parameters (Li et al.).

    For each leaf with ``ndim >= 2`` and each filter ``f`` (index along ``axis_fn(path, leaf)``),
    ``d_f <- d_f * ||theta_f|| / ||d_f||`` (a zero filter stays zero); see the module docstring
    for what a filter is in a KAN.

    Args:
        direction: The direction.
        params: The parameters, same structure.
        vector_mode: ``"zero"`` (default) zeroes leaves with ``ndim <= 1``; ``"whole"`` rescales
            them as a whole.
        axis_fn: ``(key_path, leaf) -> axis`` of the filters; default :func:`filter_axis`.

    Returns:
        The normalised direction (dtypes of ``direction`` kept).
    """
    return _normalized(direction, params, vector_mode, axis_fn)


def _normalized(direction: PyTree, params: PyTree, vector_mode: str, axis_fn: Callable[[tuple, Array], int] = filter_axis) -> PyTree:
    if vector_mode not in ("zero", "whole"):
        raise ValueError(f"vector_mode must be 'zero' or 'whole', got {vector_mode!r}")
    return _filter_normalize_jit(direction, params, vector_mode, axis_fn)


@functools.partial(jax.jit, static_argnames=("vector_mode", "axis_fn"))
def _filter_normalize_jit(direction, params, vector_mode, axis_fn):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    d_leaves = treedef.flatten_up_to(direction)
    out = [_normalize_leaf(d, t, axis_fn(path, t), vector_mode) for (path, t), d in zip(leaves, d_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def random_direction(
    key: Array,
    params: PyTree,
    *,
    filter_normalize: bool = True,
    vector_mode: str = "zero",
) -> PyTree:
    """A standard-normal direction shaped like ``params``, filter-normalised by default.

    Args:
        key: PRNG key.
        params: Template (structure, shapes, dtypes) and reference norms.
        filter_normalize: Apply :func:`filter_normalize`.
        vector_mode: ``"zero"`` or ``"whole"``, as in :func:`filter_normalize`.

    Returns:
        The direction, with the structure and dtypes of ``params``.
    """
    d = _random_tree(key, params)
    return _normalized(d, params, vector_mode) if filter_normalize else d


@jax.jit
def _random_tree(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    d = [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, d)
