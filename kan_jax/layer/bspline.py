r"""The B-spline basis family of a KAN layer: its spline branch, per-edge outputs and refit.

A layer of this family has the parameters ``spline_weight`` ``(in, n, out)`` and optionally
``spline_scaler`` ``(in, out)`` beside the base branch's ``base_weight`` ``(out, in)``, and a
knot grid ``(in, M)``, ``M = n + k + 1``. The spline branch is

.. math::
    y_o = \sum_i s_{io} \sum_j B_j(x_i)\, W_{s,ijo},

``B`` being the order-``k`` B-spline bases on input ``i``'s knot row (:mod:`kan_jax.splines`).
Only ``k + 1`` of the ``n`` bases are non-zero at any point, so the branch has three exact
formulations (:func:`spline_branch`):

* ``"dense"``: the full ``(B, in·n)`` basis matrix times the ``(in·n, out)`` scaled weights
  (efficient-kan's formulation; its cost grows with ``n``);
* ``"unrolled"``: the same product, the bases from the recursion unrolled over the bases
  (:func:`kan_jax.splines.unrolled_bases`; small grids only);
* ``"local"``: for every ``(sample, input)`` the ``k + 1`` coefficient rows of the interval
  the input falls in are gathered and combined with the ``k + 1`` local basis values (work
  proportional to ``k + 1``, not to ``n``; the gradient is the matching scatter-add), over
  blocks of inputs whose gathered windows fit in
  :attr:`~kan_jax.layer.StrategyThresholds.local_block_bytes` (memory bounded whatever the
  batch and width).

Both spline tensors are stored in the order of the product, inputs first and outputs last
(efficient-kan's ``(out, in, n)`` and ``(out, in)`` transposed), so the product, the gather of
coefficient rows and their gradients work on contiguous ``(in·n, out)`` rows.

This module is the family's whole interface to the rest of the layer: :func:`layer_spline_order`
(shape check), :func:`spline_branch`, :func:`edge_outputs` and :func:`refit_spline_weight`; its
coefficient initialiser is :func:`kan_jax.layer.init.init_spline_weight`.

References:
  Blealtan, *efficient-kan* (PyTorch implementation of the same layer).
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
from jax import lax

from kan_jax import splines
from kan_jax.layer.config import SPLINE_STRATEGIES, StrategyThresholds, choose_spline_strategy, default_thresholds

__all__ = ["layer_spline_order", "scaled_spline_weight", "spline_branch", "edge_outputs", "refit_spline_weight"]

Params = Mapping[str, jax.Array]


def layer_spline_order(params: Params, grid: jax.Array) -> int:
    """Check a layer's shapes and return its spline order ``k = M - n - 1``.

    Args:
      params: ``spline_weight`` ``(in, n, out)``, optionally ``base_weight`` ``(out, in)`` and
        ``spline_scaler`` ``(in, out)``.
      grid: Knots, ``(in, M)``.

    Returns:
      The order ``k`` implied by the ``M`` knots and ``n`` bases per input.

    Raises:
      ValueError: If the shapes disagree; the message names the expected and the actual shape
        (and the conversion from efficient-kan's layout where that is the likely cause).
    """
    w = params["spline_weight"]
    base = params.get("base_weight")
    if w.ndim != 3 or (base is not None and tuple(base.shape) != (w.shape[2], w.shape[0])):
        want = "(in, n, out)" if base is None else f"(in={base.shape[1]}, n, out={base.shape[0]})"
        raise ValueError(
            f"spline_weight must have shape {want}, got {tuple(w.shape)} (efficient-kan's (out, in, n) "
            "layout converts with jnp.transpose(w, (1, 2, 0)), or use from_efficient_kan)"
        )
    scaler = params.get("spline_scaler")
    if scaler is not None and tuple(scaler.shape) != (w.shape[0], w.shape[2]):
        raise ValueError(
            f"spline_scaler must have shape (in={w.shape[0]}, out={w.shape[2]}), got {tuple(scaler.shape)} "
            "(efficient-kan's (out, in) converts with its transpose)"
        )
    if grid.ndim != 2 or grid.shape[0] != w.shape[0]:
        raise ValueError(
            f"grid must have shape (in={w.shape[0]}, M) for spline_weight of shape (in, n, out) = "
            f"{tuple(w.shape)}, got {tuple(grid.shape)}"
        )
    k = grid.shape[-1] - w.shape[1] - 1
    if k < 0:
        raise ValueError(
            f"grid with {grid.shape[-1]} knots per input cannot carry {w.shape[1]} bases "
            f"(need at least {w.shape[1] + 1} knots)"
        )
    return k


def scaled_spline_weight(params: Params) -> jax.Array:
    """``W_s,ijo · s_io`` of shape ``(in, n, out)`` (``spline_weight`` itself without a scaler)."""
    w = params["spline_weight"]
    scaler = params.get("spline_scaler")
    return w if scaler is None else w * scaler[:, None, :]


def _gather_windows(w: jax.Array, start: jax.Array, width: int) -> jax.Array:
    """``w[i, start[b, i] + q, :]`` for every ``(b, i)`` and ``q < width``: shape ``(B, in, width, out)``.

    The ``(in, n, out)`` weight is viewed as an ``(in · n, out)`` table, so each window is one
    contiguous ``(width, out)`` block; the gradient of this gather is a scatter-add of the same
    blocks, which sums the contributions of all samples in the same interval.
    """
    in_features, n, out_features = w.shape
    table = w.reshape(in_features * n, out_features)
    first_row = (jnp.arange(in_features, dtype=start.dtype) * n + start)[..., None]  # (B, in, 1)
    dims = lax.GatherDimensionNumbers(offset_dims=(2, 3), collapsed_slice_dims=(), start_index_map=(0,))
    # start lies in [0, n - width]: every window lies inside its input's rows.
    return lax.gather(
        table, first_row, dims, slice_sizes=(width, out_features), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
    )


def _window_edges(w: jax.Array, scaler: Optional[jax.Array], grid: jax.Array, x: jax.Array, k: int) -> jax.Array:
    # y[b, i, o] = s_io · sum_q B_{start+q}(x_bi) w[i, start+q, o] for inputs x (B, c), w (c, n, out).
    start, values = splines.local_bases(x, grid.astype(x.dtype), k)
    edges = jnp.einsum("biq,biqo->bio", values, _gather_windows(w, start, k + 1))
    return edges if scaler is None else edges * scaler


def _local_block(w: jax.Array, scaler: Optional[jax.Array], grid: jax.Array, x: jax.Array, k: int) -> jax.Array:
    # The block's part of the branch, (B, out): its edges summed over its inputs.
    return jnp.sum(_window_edges(w, scaler, grid, x, k), axis=1)


def _num_blocks(in_features: int, most_per_block: int) -> int:
    """The fewest blocks of equal size, at most ``most_per_block`` inputs each, that tile the
    inputs (``in_features`` when no count up to twice the fewest divides it)."""
    fewest = -(-in_features // most_per_block)
    for count in range(fewest, min(2 * fewest, in_features) + 1):
        if in_features % count == 0:
            return count
    return in_features


def _local_branch(params: Params, grid: jax.Array, x: jax.Array, k: int, block_bytes: int) -> jax.Array:
    """The local formulation of the branch, ``(B, out)``, over blocks of inputs of bounded size.

    The gathered windows of ``c`` inputs take ``B · c · (k + 1) · out`` elements. While those of
    all inputs fit in four blocks of ``block_bytes``, one block (blocking would cost more time
    than it saves memory); otherwise a :func:`jax.lax.scan` over equal blocks of inputs of at
    most ``block_bytes`` accumulates the output, its body rematerialised in the backward pass
    (:func:`jax.checkpoint`), so that only a few blocks are alive at once in either pass. Every
    transformation (``grad``, ``jvp``, ``vmap``, Hessian-vector products) applies.
    """
    w, scaler = _cast_weights(params, x.dtype)
    in_features, n, out_features = w.shape
    batch = x.shape[0]
    per_input = batch * (k + 1) * out_features * jnp.dtype(x.dtype).itemsize
    if per_input * in_features <= 4 * int(block_bytes):
        return _local_block(w, scaler, grid, x, k)
    blocks = _num_blocks(in_features, max(1, int(block_bytes) // per_input))
    c = in_features // blocks

    @jax.checkpoint
    def block(xs):
        xb, gb, wb, sb = xs
        return _local_block(wb, sb, gb, xb, k)

    xs = (
        jnp.swapaxes(x.reshape(batch, blocks, c), 0, 1),   # (blocks, B, c)
        grid.reshape(blocks, c, grid.shape[-1]),
        w.reshape(blocks, c, n, out_features),
        None if scaler is None else scaler.reshape(blocks, c, out_features),
    )
    y, _ = lax.scan(lambda acc, xs: (acc + block(xs), None), jnp.zeros((batch, out_features), x.dtype), xs)
    return y


def _cast_weights(params: Params, dtype) -> tuple[jax.Array, Optional[jax.Array]]:
    # spline_weight and spline_scaler (or None) in the computation dtype.
    scaler = params.get("spline_scaler")
    return params["spline_weight"].astype(dtype), None if scaler is None else scaler.astype(dtype)


def _local_edges(params: Params, grid: jax.Array, x: jax.Array, k: int) -> jax.Array:
    # y[b, i, o] = s_io · sum_q B_{start+q}(x_bi) W_{i,start+q,o}, all in the dtype of x.
    return _window_edges(*_cast_weights(params, x.dtype), grid, x, k)


@jax.jit
def edge_outputs(params: Params, grid: jax.Array, x: jax.Array) -> jax.Array:
    r"""Output of every edge's spline, :math:`y_{bio} = s_{io} \sum_j B_j(x_{bi})\, W_{s,ijo}`.

    Args:
      params: The layer (``spline_weight`` and optionally ``spline_scaler``).
      grid: Knots, ``(in, M)``.
      x: Inputs, ``(B, in)``; the result has their dtype.

    Returns:
      The per-edge spline outputs, ``(B, in, out)``; their sum over ``in`` is the spline branch.
    """
    k = layer_spline_order(params, grid)
    return _local_edges(params, grid, x, k)


@functools.partial(jax.jit, static_argnames=("strategy", "thresholds"))
def spline_branch(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    strategy: str = "auto",
    thresholds: Optional[StrategyThresholds] = None,
) -> jax.Array:
    r"""The spline branch :math:`\sum_i s_{io} \sum_j B_j(x_i) W_{s,ijo}` of a layer.

    Args:
      params: The layer (``spline_weight`` and optionally ``spline_scaler``).
      grid: Knots, ``(in, M)``.
      x: Inputs, ``(B, in)``, in the computation dtype.
      strategy: ``"unrolled"``, ``"dense"``, ``"local"`` or ``"auto"``; all give the same values
        and gradients up to rounding.
      thresholds: Cost rule of ``"auto"`` (default: the backend's
        :func:`kan_jax.layer.config.default_thresholds`).

    Returns:
      The branch's outputs, ``(B, out)``.
    """
    k = layer_spline_order(params, grid)
    w = params["spline_weight"].astype(x.dtype)
    _, n, out_features = w.shape
    if strategy == "auto":
        strategy = choose_spline_strategy(n, k, thresholds=thresholds)
    if strategy == "local":
        rule = default_thresholds() if thresholds is None else thresholds
        return _local_branch(params, grid, x, k, rule.local_block_bytes)
    if strategy == "dense":
        bases = splines.basis_matrix(x, grid.astype(x.dtype), k)
    elif strategy == "unrolled":
        bases = splines.unrolled_bases(x, grid.astype(x.dtype), k).reshape(x.shape[0], -1)
    else:
        raise ValueError(f"strategy must be one of {SPLINE_STRATEGIES}, got {strategy!r}")
    w_scaled = scaled_spline_weight({**params, "spline_weight": w}).astype(x.dtype)
    return jnp.dot(bases, w_scaled.reshape(-1, out_features))  # (B, in · n) @ (in · n, out)


def refit_spline_weight(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    grid_size: int,
    grid_eps: float,
    margin: float,
) -> tuple[jax.Array, jax.Array]:
    r"""A new grid adapted to samples and the spline weight refitted on it.

    The per-edge outputs on the old grid (:func:`edge_outputs`) are fitted by least squares on
    :func:`kan_jax.splines.adaptive_grid` of the samples; the fit is the new *scaled* weight, so
    the raw weight is it divided by ``spline_scaler`` (0 where the scaler is 0).

    Args:
      params: The layer, in the fit dtype (at least float32).
      grid: Knots, ``(in, M)``, in the fit dtype.
      x: Samples, ``(B, in)``, in the fit dtype.
      grid_size: Intervals of the new grid.
      grid_eps: Uniform share of the new grid.
      margin: Padding beyond the sample range.

    Returns:
      ``(spline_weight, grid)``: ``(in, grid_size + k, out)`` and ``(in, grid_size + 2k + 1)``.
    """
    k = layer_spline_order(params, grid)
    y = _local_edges(params, grid, x, k)
    new_grid = splines.adaptive_grid(x, grid_size, k, grid_eps, margin)
    fitted = splines.fit_spline_coefficients(x, y, new_grid, k)
    scaler = params.get("spline_scaler")
    if scaler is not None:
        s = scaler[:, None, :]
        fitted = jnp.where(s == 0, 0.0, fitted / jnp.where(s == 0, 1.0, s))
    return fitted, new_grid
