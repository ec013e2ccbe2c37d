"""Pruning a KAN: remove the hidden nodes and edges that carry (almost) nothing on the data.

A hidden node is kept if both its incoming and outgoing scores
(:func:`kan_jax.interpret.node_scores`) exceed a threshold (``1e-2`` by default); an edge is
kept if its L1 norm on the data (:func:`kan_jax.interpret.edge_scores`) does. Inputs and
outputs are never removed.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.interpret.network import KANNet, LayerParams, LayerState, forward
from kan_jax.interpret.scores import edge_scores, node_scores
from kan_jax.layer import PARAM_OUTPUT_AXIS

__all__ = ["prune_mask", "prune"]


def _kept_nodes(acts: list[jax.Array], threshold: float) -> list[np.ndarray]:
    """Per hidden layer, the nodes whose incoming and outgoing scores both exceed ``threshold``."""
    return [np.asarray((inc > threshold) & (out > threshold)) for inc, out in node_scores(acts)]


def _slice_layer(lp: LayerParams, ls: LayerState, rows: np.ndarray, cols: np.ndarray):
    """The layer restricted to the outputs ``rows`` and inputs ``cols`` (boolean masks)."""
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    # Edge tensors are (out, in, ...), except those whose output axis is the last
    # (PARAM_OUTPUT_AXIS): the spline ones, (in, n, out) and (in, out).
    new_p = {k: (v[c][..., r] if PARAM_OUTPUT_AXIS.get(k, 0) == -1 else v[r][:, c]) for k, v in lp.items()}
    new_s = {k: (v[c] if k == "grid" else v[r][:, c]) for k, v in ls.items()}
    return new_p, new_s


def prune_mask(net: KANNet, x: jax.Array, threshold: float = 1e-2, edge_threshold: Optional[float] = None) -> KANNet:
    """Pruning that keeps the shapes: removed nodes' edges and weak edges get ``mask = 0``.

    Args:
        net: The network.
        x: Data ``(B, n_0)`` on which the scores are measured.
        threshold: A hidden node is removed when its incoming or outgoing score is at most this.
        edge_threshold: An edge is removed when its score is at most this (default
            ``threshold``).

    Returns:
        The network with updated masks (same widths, params and spec).
    """
    edge_threshold = threshold if edge_threshold is None else edge_threshold
    _, _, acts = forward(net.params, net.state, jnp.asarray(x), net.spec)
    keep = _kept_nodes(acts, threshold)
    widths = net.widths
    alive = [np.ones(widths[0], bool)] + keep + [np.ones(widths[-1], bool)]
    new_state = []
    for idx, (ls, e) in enumerate(zip(net.state, edge_scores(acts))):
        m = (np.asarray(e) > edge_threshold) & alive[idx + 1][:, None] & alive[idx][None, :]
        s = dict(ls)
        s["mask"] = ls["mask"] * jnp.asarray(m, ls["mask"].dtype)
        new_state.append(s)
    return KANNet(list(net.params), new_state, net.spec)


def prune(net: KANNet, x: jax.Array, threshold: float = 1e-2, edge_threshold: Optional[float] = None) -> KANNet:
    """A smaller network: hidden nodes below ``threshold`` removed, weak edges masked.

    The decisions are those of :func:`prune_mask`; removed hidden nodes are sliced out of the
    params and state (narrower widths), so the kept edges compute exactly what they did. A
    hidden layer keeps at least its best node (by ``min(incoming, outgoing)``) so the network
    stays connected.

    Args:
        net: The network.
        x: Data ``(B, n_0)`` on which the scores are measured.
        threshold: Node threshold (see :func:`prune_mask`).
        edge_threshold: Edge threshold (default ``threshold``).

    Returns:
        The pruned network.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from kan_jax import KAN, interpret as I
        >>> model = KAN([2, 3, 1])
        >>> net = I.from_linen(model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2))))
        >>> I.prune(net, jnp.ones((8, 2)), threshold=1e9).widths  # every node is weak
        (2, 1, 1)
    """
    x = jnp.asarray(x)
    masked = prune_mask(net, x, threshold, edge_threshold)
    _, _, acts = forward(net.params, net.state, x, net.spec)
    keep = _kept_nodes(acts, threshold)
    for h, (inc, out) in enumerate(node_scores(acts)):
        if not keep[h].any():
            keep[h] = np.zeros_like(keep[h])
            keep[h][int(np.argmax(np.minimum(np.asarray(inc), np.asarray(out))))] = True
    widths = net.widths
    alive = [np.ones(widths[0], bool)] + keep + [np.ones(widths[-1], bool)]
    params, state = [], []
    for idx, (lp, ls) in enumerate(zip(masked.params, masked.state)):
        p, s = _slice_layer(lp, ls, alive[idx + 1], alive[idx])
        params.append(p)
        state.append(s)
    return KANNet(params, state, net.spec)
