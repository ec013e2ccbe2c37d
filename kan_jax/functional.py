"""Pure functions of one KAN layer (efficient-kan formulation), shared by the Linen and NNX fronts.

A layer is a parameter dict and a knot grid::

    params = {"base_weight":   (out, in),
              "spline_weight": (out, in, n),      # n = G + k
              "spline_scaler": (out, in)}         # optional
    grid = (in, G + 2k + 1)

and computes, for ``x`` of shape ``(..., in)``,

.. math::
    y = \\operatorname{silu}(x)\\, W_b^\\top
        + \\operatorname{vec}(B(x))\\, \\operatorname{vec}(W_s \\odot s)^\\top,

``B(x)`` being the ``(in, n)`` B-spline bases (:func:`kan_jax.splines.b_spline_bases`). The
grid is state, not a parameter: it is an argument of every function here and never
differentiated.

References
----------
Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
Blealtan, *efficient-kan* (PyTorch implementation of the same layer).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from kan_jax import splines

__all__ = [
    "validate_layer_config",
    "kaiming_uniform",
    "init_layer",
    "layer_apply",
    "scaled_spline_weight",
    "layer_update_grid",
    "layer_regularization_loss",
]

Params = Mapping[str, jax.Array]


def validate_layer_config(
    grid_size: int,
    spline_order: int,
    grid_range: tuple[float, float],
    scale_noise: float,
    scale_base: float,
    scale_spline: float,
    grid_eps: float,
) -> None:
    """Raise ``ValueError`` naming the argument for an invalid layer configuration.

    ``grid_size >= 1`` and ``spline_order >= 0`` integers, ``grid_range = (lo, hi)`` with
    ``hi > lo``, non-negative scales, ``grid_eps`` in ``[0, 1]``.
    """
    splines._check_grid_args(grid_size, spline_order, grid_range)
    for name, value in (("scale_noise", scale_noise), ("scale_base", scale_base), ("scale_spline", scale_spline)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps!r}")


def kaiming_uniform(a: float) -> Callable[..., jax.Array]:
    r"""PyTorch's ``kaiming_uniform_(w, a)`` for a weight of shape ``(out, in)``.

    Uniform on :math:`\pm\sqrt{6 / ((1 + a^2)\, \mathrm{in})}`, i.e. ``nn.Linear``'s default
    :math:`\pm 1/\sqrt{\mathrm{in}}` for :math:`a = \sqrt 5`.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        bound = math.sqrt(6.0 / ((1.0 + a * a) * shape[-1]))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@functools.partial(jax.jit, static_argnames=("out_features", "spline_order", "scale_noise", "scale", "dtype"))
def init_spline_weight(
    key: jax.Array,
    grid: jax.Array,
    out_features: int,
    spline_order: int,
    scale_noise: float = 0.1,
    scale: float = 1.0,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """efficient-kan's spline initialisation: a least-squares fit of small uniform noise.

    Noise ``(U(0, 1) - 1/2) * scale_noise / G`` is drawn at the ``G + 1`` interior knots of
    every edge and fitted by :func:`kan_jax.splines.fit_spline_coefficients` (minimum-norm
    solution, the system being under-determined for ``k > 1``), then multiplied by ``scale``.

    Returns
    -------
    jax.Array
        Shape ``(out, in, G + k)``.
    """
    in_features, n_knots = grid.shape
    grid_size = n_knots - 2 * spline_order - 1
    fit_dtype = jnp.promote_types(dtype, jnp.float32)  # fit half-precision weights in float32
    grid = grid.astype(fit_dtype)
    interior = grid[:, spline_order : n_knots - spline_order].T  # (G + 1, in)
    noise = jax.random.uniform(key, (grid_size + 1, in_features, out_features), fit_dtype)
    noise = (noise - 0.5) * scale_noise / grid_size
    coeff = splines.fit_spline_coefficients(interior, noise, grid, spline_order)
    return (scale * coeff).astype(dtype)


@functools.partial(
    jax.jit,
    static_argnames=(
        "in_features",
        "out_features",
        "grid_size",
        "spline_order",
        "scale_noise",
        "scale_base",
        "scale_spline",
        "enable_standalone_scale_spline",
        "grid_range",
        "dtype",
    ),
)
def init_layer(
    key: jax.Array,
    in_features: int,
    out_features: int,
    *,
    grid_size: int = 5,
    spline_order: int = 3,
    scale_noise: float = 0.1,
    scale_base: float = 1.0,
    scale_spline: float = 1.0,
    enable_standalone_scale_spline: bool = True,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    dtype: jnp.dtype = jnp.float32,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Parameters and grid of a fresh layer, with efficient-kan's distributions.

    Returns
    -------
    (params, grid)
        ``params`` as in the module docstring, ``grid`` of shape ``(in, G + 2k + 1)``.
    """
    grid = splines.uniform_grid(grid_size, spline_order, grid_range, in_features, dtype)
    k_base, k_spline, k_scaler = jax.random.split(key, 3)
    params = {
        "base_weight": kaiming_uniform(math.sqrt(5) * scale_base)(k_base, (out_features, in_features), dtype),
        "spline_weight": init_spline_weight(
            k_spline,
            grid,
            out_features,
            spline_order,
            scale_noise,
            1.0 if enable_standalone_scale_spline else scale_spline,
            dtype,
        ),
    }
    if enable_standalone_scale_spline:
        params["spline_scaler"] = kaiming_uniform(math.sqrt(5) * scale_spline)(
            k_scaler, (out_features, in_features), dtype
        )
    return params, grid


def scaled_spline_weight(params: Params) -> jax.Array:
    """``spline_weight * spline_scaler[..., None]`` (or ``spline_weight`` without a scaler)."""
    w = params["spline_weight"]
    scaler = params.get("spline_scaler")
    return w if scaler is None else w * scaler[..., None]


def _check_input(grid: jax.Array, x: jax.Array) -> None:
    if x.ndim < 1 or x.shape[-1] != grid.shape[0]:
        raise ValueError(
            f"KAN layer expects inputs with last dimension in_features={grid.shape[0]}, "
            f"got an input of shape {tuple(x.shape)}"
        )


@functools.partial(jax.jit, static_argnames=("spline_order", "base_activation", "dtype"))
def layer_apply(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    *,
    spline_order: int,
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu,
    dtype: Optional[jnp.dtype] = None,
) -> jax.Array:
    """Forward pass of one layer.

    Parameters
    ----------
    params, grid:
        As in the module docstring.
    x:
        Inputs, shape ``(..., in)``; leading dimensions are flattened and restored.
    spline_order:
        Order ``k`` of the splines (static).
    base_activation:
        Activation of the residual branch (SiLU in efficient-kan).
    dtype:
        Computation dtype; by default the promotion of the input and parameter dtypes.

    Returns
    -------
    jax.Array
        Shape ``(..., out)``.
    """
    _check_input(grid, x)
    w_base = params["base_weight"]
    w_spline = scaled_spline_weight(params)
    if dtype is None:
        dtype = jnp.result_type(x, w_base)
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    out_features = w_base.shape[0]
    base = jnp.dot(base_activation(x2), w_base.astype(dtype).T)
    bases = splines.b_spline_bases(x2, grid, spline_order).reshape(x2.shape[0], -1)
    spline = jnp.dot(bases, w_spline.astype(dtype).reshape(out_features, -1).T)
    return (base + spline).reshape(*x.shape[:-1], out_features)


@functools.partial(jax.jit, static_argnames=("spline_order", "grid_size"))
def layer_update_grid(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    *,
    spline_order: int,
    grid_size: Optional[int] = None,
    grid_eps: float = 0.02,
    margin: float = 0.01,
) -> tuple[dict[str, jax.Array], jax.Array]:
    r"""Adapt the grid to samples and refit the splines so the layer's function is kept.

    The per-edge spline outputs :math:`y_{b,i,o} = \sum_j B_j(x_{b,i})\, (W_s \odot s)_{o,i,j}`
    on the samples are computed on the old grid; the new grid is
    :func:`kan_jax.splines.adaptive_grid` of the samples (``grid_size`` intervals, by default
    the current ``G``: a grid *update*; another value refines or coarsens the grid, pykan's
    ``refine``); the scaled coefficients on it are the least-squares fit of ``y``. Unlike
    efficient-kan, which stores the fitted *scaled* weight as the raw weight (so the scaler is
    applied twice afterwards), the raw weight is the fit divided by ``spline_scaler`` (0 where
    the scaler is 0), so ``scaled_spline_weight`` equals the fit. The base branch is unchanged.
    The layer's outputs on the samples are kept up to the least-squares residual, which is zero
    when the old spline lies in the new spline space (e.g. the same grid, or a nested finer one).

    Parameters
    ----------
    params, grid:
        The layer, as in the module docstring.
    x:
        Samples, shape ``(..., in)``.
    spline_order:
        Order ``k`` (static).
    grid_size:
        Intervals of the new grid (static); ``None`` keeps the current size.
    grid_eps, margin:
        See :func:`kan_jax.splines.adaptive_grid`.

    Returns
    -------
    (params, grid)
        New parameters (only ``spline_weight`` changes, and changes shape iff ``grid_size``
        does) and the new grid ``(in, grid_size + 2k + 1)``.
    """
    _check_input(grid, x)
    w = params["spline_weight"]
    if grid_size is None:
        grid_size = w.shape[-1] - spline_order
    fit_dtype = jnp.promote_types(w.dtype, jnp.float32)  # LAPACK has no half-precision lstsq
    x2 = x.reshape(-1, x.shape[-1]).astype(fit_dtype)
    bases = splines.b_spline_bases(x2, grid.astype(fit_dtype), spline_order)  # (B, in, n)
    y = jnp.einsum("bij,oij->bio", bases, scaled_spline_weight(params).astype(fit_dtype))
    new_grid = splines.adaptive_grid(x2, grid_size, spline_order, grid_eps, margin)
    fitted = splines.fit_spline_coefficients(x2, y, new_grid, spline_order)
    new_grid = new_grid.astype(grid.dtype)
    scaler = params.get("spline_scaler")
    if scaler is not None:
        s = scaler[..., None].astype(fit_dtype)
        fitted = jnp.where(s == 0, 0.0, fitted / jnp.where(s == 0, 1.0, s))
    new_params = dict(params)
    new_params["spline_weight"] = fitted.astype(w.dtype)
    return new_params, new_grid


def layer_regularization_loss(
    params: Params, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> jax.Array:
    r"""efficient-kan's weight-based sparsity regulariser of one layer.

    .. math::
        \ell_{oi} = \operatorname{mean}_j |W_{s,oij}|, \quad A = \sum_{oi} \ell_{oi}, \quad
        p = \ell / A, \quad R = a A + e \Big(-\sum_{oi} p_{oi} \log p_{oi}\Big),

    with :math:`0 \log 0 = 0`. (pykan's original regulariser uses activation magnitudes on
    data; this cheaper stand-in uses the unscaled spline weights.)
    """
    l1 = jnp.mean(jnp.abs(params["spline_weight"]), axis=-1)
    act = jnp.sum(l1)
    p = l1 / jnp.where(act == 0, 1.0, act)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))
    return regularize_activation * act + regularize_entropy * entropy
