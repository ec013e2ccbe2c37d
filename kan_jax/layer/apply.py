r"""The forward pass and the regulariser of one KAN layer, as pure functions.

A layer is a parameter dict and a knot grid::

    params = {"base_weight":   (out, in),
              "spline_weight": (in, n, out),      # n = G + k
              "spline_scaler": (in, out)}         # optional
    grid = (in, G + 2k + 1)

and computes, for ``x`` of shape ``(..., in)``,

.. math::
    y_o = \sum_i \operatorname{silu}(x_i)\, W_{b,oi}
        + \sum_i s_{io} \sum_j B_j(x_i)\, W_{s,ijo},

the second sum being the B-spline family's branch (:mod:`kan_jax.layer.bspline`), or another
family's with ``config.basis`` (:func:`kan_jax.layer.basis_family`: the bases
:math:`B_j` and the grid change, the parameters keep their names and layouts). The grid is
state, not a parameter: an argument of every function here, never differentiated. Only
integers, shapes, dtypes and strategy names are static (callables such as the base
activation are applied outside the compiled part), so an eager call costs one compilation per
layer shape and a call under ``jit`` inlines into the caller's program.

References:
  Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
  Blealtan, *efficient-kan* (PyTorch), ``KAN.regularization_loss``.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from kan_jax.layer.bases import basis_family
from kan_jax.layer.config import KANLayerConfig, StrategyThresholds

__all__ = ["layer_apply", "layer_regularization_loss", "check_input"]

Params = Mapping[str, jax.Array]


def check_input(grid: jax.Array, x: jax.Array) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(..., in)`` for a grid of ``in`` knot rows."""
    if x.ndim < 1 or x.shape[-1] != grid.shape[0]:
        raise ValueError(
            f"KAN layer expects inputs with last dimension in_features={grid.shape[0]}, "
            f"got an input of shape {tuple(x.shape)}"
        )


def layer_apply(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    config: Optional[KANLayerConfig] = None,
) -> jax.Array:
    """Forward pass of one layer.

    Args:
      params: The layer's parameters (module docstring); the spline order is read from their
        shapes and the grid's.
      grid: Knots, ``(in, M)``.
      x: Inputs, ``(..., in)``; leading dimensions are flattened and restored.
      config: Uses ``base_activation``, ``dtype``, ``spline_strategy``,
        ``strategy_thresholds`` and ``basis`` (default ``KANLayerConfig()``: SiLU, promoted
        dtype, automatic strategy, B-splines).

    Returns:
      The outputs, ``(..., out)``.

    Raises:
      ValueError: If the shapes of ``params``, ``grid`` and ``x`` disagree.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kan_jax.layer import init_layer, layer_apply
      >>> params, grid = init_layer(jax.random.key(0), 4, 3)
      >>> layer_apply(params, grid, jnp.zeros((2, 5, 4))).shape
      (2, 5, 3)
    """
    config = KANLayerConfig() if config is None else config
    check_input(grid, x)
    w_base = params["base_weight"]
    dtype = config.dtype if config.dtype is not None else jnp.result_type(x, w_base)
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    y = _layer_sum(
        params, grid, x2, config.base_activation(x2), config.spline_strategy, config.strategy_thresholds, config.basis
    )
    return y.reshape(*x.shape[:-1], w_base.shape[0])


@functools.partial(jax.jit, static_argnames=("strategy", "thresholds", "basis"))
def _layer_sum(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    activated: jax.Array,
    strategy: str,
    thresholds: Optional[StrategyThresholds],
    basis: str = "bspline",
) -> jax.Array:
    # Base branch (on the activated inputs) plus spline branch, one program when called eagerly.
    base = jnp.dot(activated, params["base_weight"].astype(x.dtype).T)
    return base + basis_family(basis).spline_branch(params, grid, x, strategy, thresholds)


def layer_regularization_loss(
    params: Params, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> jax.Array:
    r"""efficient-kan's weight-based sparsity regulariser of one layer.

    .. math::
        \ell_{oi} = \operatorname{mean}_j |W_{s,ijo}|, \quad A = \sum_{oi} \ell_{oi}, \quad
        p = \ell / A, \quad R = a A + e \Big(-\sum_{oi} p_{oi} \log p_{oi}\Big),

    with :math:`0 \log 0 = 0`. pykan's regulariser uses activation magnitudes on data; this
    stand-in uses the unscaled spline weights and needs no bases.

    Args:
      params: The layer's parameters (only ``spline_weight`` is read).
      regularize_activation: Weight ``a`` of the L1 term.
      regularize_entropy: Weight ``e`` of the entropy term.

    Returns:
      The scalar ``R``.
    """
    l1 = jnp.mean(jnp.abs(params["spline_weight"]), axis=1)  # (in, out)
    act = jnp.sum(l1)
    p = l1 / jnp.where(act == 0, 1.0, act)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))
    return regularize_activation * act + regularize_entropy * entropy
