"""Reading a KAN: edge functions on data, scores, pruning, training, plots, symbolic formulas.

A KAN layer computes ``y_o = sum_i phi_{o,i}(x_i)``. This package exposes every edge function
``phi_{o,i}`` on data and builds pykan's interpretability workflow on the layers of
:mod:`kan_jax.layer` (Linen and NNX models convert to the same pure data, a
:class:`KANNet`):

=====================================  ==========================================================
:mod:`~kan_jax.interpret.network`      :class:`KANNet`, conversions, :func:`forward`, :func:`apply`
:mod:`~kan_jax.interpret.scores`       edge and node scores, the sparsity regulariser
:mod:`~kan_jax.interpret.pruning`      :func:`prune`, :func:`prune_mask`
:mod:`~kan_jax.interpret.training`     :func:`train` (L-BFGS or Adam with grid updates)
:mod:`~kan_jax.interpret.plots`        :func:`plot_kan` (matplotlib, the ``interpret`` extra)
:mod:`~kan_jax.interpret.symbolic`     snapping edges to ``c f(a x + b) + d``, SymPy formulas
=====================================  ==========================================================

``kan_jax.interpret.symbolic`` is loaded on first use; matplotlib and SymPy only when a figure
or a formula is made.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from kan_jax import KAN, interpret as I
    >>> model = KAN([2, 5, 1])
    >>> net = I.from_linen(model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2))))
    >>> x = jax.random.uniform(jax.random.PRNGKey(1), (64, 2), minval=-1, maxval=1)
    >>> y, inputs, acts = I.forward(net.params, net.state, x, net.spec)
    >>> [a.shape for a in acts]
    [(64, 5, 2), (64, 1, 5)]

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.
"""
from __future__ import annotations

import importlib
from typing import Any

from kan_jax.interpret.network import (
    KANNet,
    KANSpec,
    apply,
    forward,
    from_linen,
    from_nnx,
    from_params,
    layer_edge_activations,
    pykan_init,
    to_linen,
)
from kan_jax.interpret.plots import edge_panels, plot_kan
from kan_jax.interpret.pruning import prune, prune_mask
from kan_jax.interpret.scores import activation_regularizer, edge_scores, input_extents, node_scores
from kan_jax.interpret.training import mse_loss, train, train_adam, train_lbfgs, update_grids

__all__ = [
    "activation_regularizer",
    "apply",
    "edge_panels",
    "edge_scores",
    "forward",
    "from_linen",
    "from_nnx",
    "from_params",
    "input_extents",
    "KANNet",
    "KANSpec",
    "layer_edge_activations",
    "mse_loss",
    "node_scores",
    "plot_kan",
    "prune",
    "prune_mask",
    "pykan_init",
    "symbolic",
    "to_linen",
    "train",
    "train_adam",
    "train_lbfgs",
    "update_grids",
]


def __getattr__(name: str) -> Any:
    if name == "symbolic":
        return importlib.import_module("kan_jax.interpret.symbolic")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
