r"""Drawing a KAN as pykan does: nodes per layer, every alive edge as its learned 1-D function.

matplotlib (the ``interpret`` extra) is imported when a figure is drawn.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5;
    pykan's ``KAN.plot``, https://github.com/KindXiaoming/pykan.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax._optional import require
from kan_jax.interpret.network import KANNet, forward
from kan_jax.interpret.scores import edge_scores
from kan_jax.io import save_figure

__all__ = ["plot_kan", "edge_panels"]


def _draw_edges(ax: Any, net: KANNet, inputs, acts, node_x, beta: float) -> None:
    """One inset panel per alive edge, joined to its nodes by lines of opacity ``tanh(beta |phi|_1)``."""
    widths, scores, panel_h = net.widths, edge_scores(acts), 0.42
    for lyr in range(len(net.params)):
        mask = np.asarray(net.state[lyr]["mask"]) > 0
        sym = np.asarray(net.state[lyr]["symbolic"]) > 0
        edges = [(o, i) for i in range(widths[lyr]) for o in range(widths[lyr + 1]) if mask[o, i]]
        n = max(len(edges), 1)
        pw = min(0.8 / n, 0.14)
        xin, act, sc = np.asarray(inputs[lyr]), np.asarray(acts[lyr]), np.asarray(scores[lyr])
        for e, (o, i) in enumerate(edges):
            cx, cy = (e + 0.5) / n, lyr + 0.5
            alpha = float(np.tanh(beta * sc[o, i]))
            color = "red" if sym[o, i] else "black"
            ax.plot([node_x(lyr, i), cx], [lyr, cy - panel_h / 2], color=color, alpha=alpha, lw=1)
            ax.plot([cx, node_x(lyr + 1, o)], [cy + panel_h / 2, lyr + 1], color=color, alpha=alpha, lw=1)
            inset = ax.inset_axes((cx - pw / 2, cy - panel_h / 2, pw, panel_h), transform=ax.transData)
            inset.set_label(f"edge {lyr},{o},{i}")
            order = np.argsort(xin[:, i])
            inset.plot(xin[order, i], act[order, o, i], color=color, alpha=max(alpha, 0.05), lw=1.5)
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_alpha(max(alpha, 0.05))


def plot_kan(
    net: KANNet,
    x: jax.Array,
    path: Optional[str | Path] = None,
    *,
    beta: float = 3.0,
    in_vars: Optional[Sequence[str]] = None,
    out_vars: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    scale: float = 1.0,
) -> Any:
    r"""Draw the network: nodes per layer, every alive edge as a panel of its function.

    Each alive edge ``(l, o, i)`` gets a small panel showing :math:`\phi_{o,i}` over the values
    its input takes on ``x`` (symbolic edges in red), joined to its input and output nodes by
    lines whose opacity is :math:`\tanh(\beta\, |\phi|_1)` (pykan's ``beta``). Panels are
    labelled ``"edge l,o,i"`` (see :func:`edge_panels`).

    Args:
        net: The network.
        x: Data ``(B, n_0)`` defining the input ranges and the edge importances.
        path: If given, the figure is written there atomically (format from the suffix).
        beta: Opacity steepness.
        in_vars: Names of the inputs, drawn below the network.
        out_vars: Names of the outputs, drawn above it.
        title: Figure title.
        scale: Size factor of the figure.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ImportError: If matplotlib is not installed (``pip install "kan-jax[interpret]"``).
    """
    matplotlib = require("matplotlib", "interpret")
    matplotlib.use("Agg", force=False)
    plt = require("matplotlib.pyplot", "interpret")

    _, inputs, acts = forward(net.params, net.state, jnp.asarray(x), net.spec)
    widths = net.widths
    n_layers = len(net.params)
    max_edges = max(int(np.sum(np.asarray(s["mask"]) > 0)) for s in net.state)
    fig_w = scale * max(4.0, min(14.0, 0.9 * max(max_edges, max(widths))))
    fig = plt.figure(figsize=(fig_w, scale * 2.2 * n_layers + 0.6))
    ax = fig.add_axes((0.02, 0.04, 0.96, 0.90 if title else 0.94))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.15, n_layers + 0.15)
    ax.axis("off")

    def node_x(lyr: int, i: int) -> float:
        return (i + 0.5) / widths[lyr]

    for lyr, w in enumerate(widths):
        for i in range(w):
            ax.scatter([node_x(lyr, i)], [lyr], s=60, color="black", zorder=3)
    for i, name in enumerate(in_vars or ()):
        ax.text(node_x(0, i), -0.1, f"${name}$" if "$" not in name else name, ha="center", va="top", fontsize=11)
    for o, name in enumerate(out_vars or ()):
        ax.text(node_x(n_layers, o), n_layers + 0.08, name, ha="center", va="bottom", fontsize=11)
    _draw_edges(ax, net, inputs, acts, node_x, beta)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


def edge_panels(fig: Any) -> list[Any]:
    """The edge panels of a figure made by :func:`plot_kan` (axes labelled ``"edge l,o,i"``).

    Args:
        fig: The figure.

    Returns:
        The panels' axes.
    """
    out = []
    for a in fig.axes:
        for c in [a, *getattr(a, "child_axes", [])]:
            if c.get_label().startswith("edge "):
                out.append(c)
    return out
