r"""Importance of edges and nodes on data, and the KAN paper's sample-based sparsity regulariser.

The L1 norm of an edge over ``N`` samples is :math:`|\phi|_1 = \frac1N \sum_s |\phi(x_s)|`;
a layer's is the sum over its edges, its entropy
:math:`S = -\sum p \log p` with :math:`p = |\phi|_1 / |\Phi|_1`. A hidden node's incoming
score is the largest L1 norm of its input edges, its outgoing score that of its output edges.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), sections 2.5
    (pruning) and 2.5.1 (the regulariser).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from kan_jax.interpret.network import LayerParams, LayerState

__all__ = ["edge_scores", "node_scores", "activation_regularizer", "input_extents"]


def edge_scores(acts: Sequence[jax.Array]) -> list[jax.Array]:
    r"""The L1 norm of every edge on the data, :math:`|\phi_{o,i}|_1 = \operatorname{mean}_s |\phi_{o,i}(x_s)|`.

    Args:
        acts: Edge activations per layer, ``(B, out, in)`` (from
            :func:`kan_jax.interpret.forward`).

    Returns:
        One array ``(out, in)`` per layer.
    """
    return [jnp.mean(jnp.abs(a), axis=0) for a in acts]


def node_scores(acts: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    r"""Incoming and outgoing scores of the hidden nodes.

    Node ``i`` of hidden layer ``l`` (``1 <= l < L``) has incoming score
    :math:`I = \max_k |\phi_{l-1,i,k}|_1` and outgoing score :math:`O = \max_j |\phi_{l,j,i}|_1`.

    Args:
        acts: Edge activations per layer, ``(B, out, in)``.

    Returns:
        One pair ``(incoming, outgoing)`` of arrays ``(n_l,)`` per hidden layer.
    """
    e = edge_scores(acts)
    return [(jnp.max(e[h - 1], axis=1), jnp.max(e[h], axis=0)) for h in range(1, len(e))]


def activation_regularizer(
    acts: Sequence[jax.Array],
    params: Optional[Sequence[LayerParams]] = None,
    *,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    input_scales: Optional[Sequence[jax.Array]] = None,
) -> jax.Array:
    r"""The sample-based sparsity regulariser (pykan's ``reg``), without the overall ``lamb``.

    .. math::
        R = \sum_l \Big(\mu_1 |\Phi_l|_1 + \mu_2 S(\Phi_l)
            + \mu_3 \sum_{o,i} \overline{|w_{oi\cdot}|} + \mu_4 \sum_{o,i} \overline{|\Delta w_{oi\cdot}|}\Big),

    with :math:`\mu_1..\mu_4` = ``lamb_l1``, ``lamb_entropy``, ``lamb_coef``,
    ``lamb_coefdiff``, ``w`` the unscaled spline coefficients and ``Delta`` their differences
    along the basis axis. The paper's total loss is ``mse + lamb * R``.

    Args:
        acts: Edge activations per layer, ``(B, out, in)``.
        params: Layer params; needed only when ``lamb_coef`` or ``lamb_coefdiff`` is non-zero.
        lamb_l1: Weight of the L1 norms.
        lamb_entropy: Weight of the entropies.
        lamb_coef: Weight of the mean absolute spline coefficients.
        lamb_coefdiff: Weight of their mean absolute differences.
        input_scales: Optional ``(in,)`` per layer: every edge's L1 norm is divided by the
            scale of its input (pykan divides by the extent of the input's grid,
            :func:`input_extents`), so an edge amplifying a small-range input is not cheap.

    Returns:
        The scalar ``R``.
    """
    if params is None and any(isinstance(v, (int, float)) and v != 0 for v in (lamb_coef, lamb_coefdiff)):
        raise ValueError("lamb_coef / lamb_coefdiff need the layer params; got params=None")
    total = jnp.zeros((), acts[0].dtype)
    for idx, a in enumerate(acts):
        l1 = jnp.mean(jnp.abs(a), axis=0)
        if input_scales is not None:
            l1 = l1 / input_scales[idx][None, :]
        s = jnp.sum(l1)
        p = l1 / jnp.where(s == 0, 1.0, s)
        # p log p with 0 log 0 = 0 and a finite gradient at p = 0 (pruned edges have p = 0;
        # xlogy's derivative log p + 1 is -inf there, and 0 * inf would poison the gradient).
        plogp = p * jnp.log(jnp.where(p > 0, p, 1.0))
        total = total + lamb_l1 * s - lamb_entropy * jnp.sum(plogp)
        if params is not None:
            w = params[idx]["spline_weight"]  # (in, n, out)
            total = total + lamb_coef * jnp.sum(jnp.mean(jnp.abs(w), 1))
            total = total + lamb_coefdiff * jnp.sum(jnp.mean(jnp.abs(jnp.diff(w, axis=1)), 1))
    return total


def input_extents(state: Sequence[LayerState], spline_order: int, floor: float = 1e-4) -> list[jax.Array]:
    """Extent of every layer's interior grid per input, ``grid[:, G + k] - grid[:, k] + floor``.

    After a grid update this is the range of the inputs the layer saw (plus the margins). For
    RBF layers (``k = 0``) it is the range of the centres; a family without a grid (``(in, 0)``)
    gives extents of 1.

    Args:
        state: Layer states (their ``grid``).
        spline_order: The splines' order ``k``.
        floor: Added to every extent (keeps a collapsed grid from dividing by zero).

    Returns:
        One array ``(in,)`` per layer.
    """
    k = spline_order
    return [
        s["grid"][:, -k - 1] - s["grid"][:, k] + floor if s["grid"].shape[-1] else jnp.ones(s["grid"].shape[:1])
        for s in state
    ]
