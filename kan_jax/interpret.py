"""Reading a KAN: edge activations, the sample-based regulariser, scores, pruning, plots, training.

A KAN layer computes ``y_o = sum_i phi_{o,i}(x_i)``. This module exposes every edge function
``phi_{o,i}`` on data and builds pykan's interpretability workflow on top of the efficient-kan
layers of :mod:`kan_jax.functional` (Linen and NNX models are converted to the same pure data).

Representation of a network being read (the "symbolic KAN")
-----------------------------------------------------------
A network is a :class:`KANNet` ``(params, state, spec)``:

``params`` (trainable, a list with one dict per layer)
    the layer parameters of :mod:`kan_jax.functional`: ``base_weight (out, in)``,
    ``spline_weight (in, G + k, out)``, optional ``spline_scaler (in, out)``, plus ``affine
    (out, in, 4)``:
    the parameters ``(a, b, c, d)`` of the symbolic form ``c f(a x + b) + d`` of every edge
    (used only by snapped edges, so snapped edges stay trainable).
``state`` (not trainable, a list with one dict per layer)
    ``grid (in, G + 2k + 1)``, ``mask (out, in)`` (1 = edge alive, 0 = pruned), ``symbolic
    (out, in)`` (1 = the edge is the symbolic function, its spline part is not used) and
    ``fn (out, in)`` (int32, the index of its function in ``spec.functions``).
``spec`` (static, hashable)
    :class:`KANSpec`: spline order, base activation and the tuple of symbolic functions the
    ``fn`` indices refer to.

The edge function is

.. math::
    \\phi_{o,i}(x) = m_{oi}\\Big[(1 - s_{oi})\\big(w^b_{oi}\\, b(x) + \\sum_j B_j(x)\\,
    \\tilde w_{ijo}\\big) + s_{oi}\\big(c_{oi} f_{oi}(a_{oi} x + b_{oi}) + d_{oi}\\big)\\Big],

``b`` the base activation (SiLU), :math:`\\tilde w` the scaled spline weight. With ``m = 1``
and ``s = 0`` everywhere, :func:`apply` equals the Linen/NNX model's forward pass.

References
----------
Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), sections 2.5
(simplification: sparsification, pruning, symbolification) and 2.5.1 (the regulariser).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kan_jax import functional, splines

__all__ = [
    "KANSpec",
    "KANNet",
    "from_params",
    "from_linen",
    "from_nnx",
    "pykan_init",
    "to_linen",
    "layer_edge_activations",
    "forward",
    "apply",
    "edge_scores",
    "node_scores",
    "activation_regularizer",
    "mse_loss",
    "input_extents",
    "prune",
    "prune_mask",
    "update_grids",
    "train_lbfgs",
    "train_adam",
    "train",
    "plot_kan",
]

LayerParams = dict[str, jax.Array]
LayerState = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class KANSpec:
    """Static description of a network being read (hashable: a ``jit`` static argument).

    Attributes
    ----------
    spline_order:
        Order ``k`` of the splines of every layer.
    base_activation:
        Activation of the residual branch (SiLU in efficient-kan).
    functions:
        The symbolic functions the ``fn`` indices of the state refer to (objects with a
        ``jax`` attribute, e.g. :class:`kan_jax.symbolic.SymbolicFunction`).
    """

    spline_order: int
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu
    functions: tuple[Any, ...] = ()


class KANNet(NamedTuple):
    """A network being read: trainable ``params``, non-trainable ``state``, static ``spec``."""

    params: list[LayerParams]
    state: list[LayerState]
    spec: KANSpec

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths ``(n_0, n_1, ..., n_L)``."""
        return (int(self.params[0]["base_weight"].shape[1]),) + tuple(
            int(p["base_weight"].shape[0]) for p in self.params
        )




def from_params(
    layer_params: Sequence[Any],
    grids: Sequence[jax.Array],
    *,
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu,
) -> KANNet:
    """Build a :class:`KANNet` (all edges alive and numeric) from layer params and grids.

    Parameters
    ----------
    layer_params:
        One layer parameter dict per layer, as in :mod:`kan_jax.functional` (``base_weight
        (out, in)``, ``spline_weight (in, G + k, out)``, optional ``spline_scaler (in, out)``).
    grids:
        One knot grid ``(in, G + 2k + 1)`` per layer.
    base_activation:
        Activation of the residual branch.
    """
    if len(layer_params) != len(grids) or not layer_params:
        raise ValueError(
            f"expected one grid per layer and at least one layer, got {len(layer_params)} layer(s) "
            f"and {len(grids)} grid(s)"
        )
    params, state = [], []
    order = None
    for idx, (p, g) in enumerate(zip(layer_params, grids)):
        missing = [k for k in ("base_weight", "spline_weight") if k not in p]
        if missing:
            raise ValueError(f"layer {idx} params lack {missing}; got keys {sorted(p)}")
        bw = jnp.asarray(p["base_weight"])
        sw = jnp.asarray(p["spline_weight"])
        g = jnp.asarray(g)
        out_f, in_f = bw.shape
        if sw.ndim != 3 or (sw.shape[0], sw.shape[2]) != (in_f, out_f) or g.ndim != 2 or g.shape[0] != in_f:
            raise ValueError(
                f"layer {idx}: expected spline_weight (in={in_f}, n, out={out_f}) and grid (in={in_f}, M), "
                f"got {tuple(sw.shape)} and {tuple(g.shape)}"
            )
        k = g.shape[-1] - sw.shape[1] - 1
        if order is None:
            order = k
        elif k != order:
            raise ValueError(f"every layer must have the same spline order; layer 0 has {order}, layer {idx} has {k}")
        if idx > 0 and in_f != params[-1]["base_weight"].shape[0]:
            raise ValueError(
                f"layer {idx} expects {in_f} inputs but layer {idx - 1} has {params[-1]['base_weight'].shape[0]} outputs"
            )
        lp = {"base_weight": bw, "spline_weight": sw}
        if p.get("spline_scaler") is not None:
            lp["spline_scaler"] = jnp.asarray(p["spline_scaler"])
            if lp["spline_scaler"].shape != (in_f, out_f):
                raise ValueError(
                    f"layer {idx}: expected spline_scaler (in={in_f}, out={out_f}), got {tuple(lp['spline_scaler'].shape)}"
                )
        affine = jnp.zeros((out_f, in_f, 4), bw.dtype).at[..., 0].set(1.0).at[..., 2].set(1.0)
        lp["affine"] = affine
        params.append(lp)
        state.append(
            {
                "grid": g,
                "mask": jnp.ones((out_f, in_f), bw.dtype),
                "symbolic": jnp.zeros((out_f, in_f), bw.dtype),
                "fn": jnp.zeros((out_f, in_f), jnp.int32),
            }
        )
    return KANNet(params, state, KANSpec(int(order), base_activation))


def pykan_init(net: KANNet, scale_base: float = 1.0, scale_spline: float = 1.0) -> KANNet:
    """``net`` with pykan's initial scales: every ``base_weight = scale_base`` and
    ``spline_scaler = scale_spline`` (the splines keep their small random coefficients).

    efficient-kan draws both uniformly around zero with random signs; pykan starts every edge
    as ``silu(x) + small spline``, a symmetric start from which the sparsity regulariser
    reliably selects few nodes (the tutorial's ``[2, 5, 1] -> [2, 1, 1]``).
    """
    params = []
    for p in net.params:
        q = dict(p)
        q["base_weight"] = jnp.full_like(p["base_weight"], scale_base)
        if "spline_scaler" in p:
            q["spline_scaler"] = jnp.full_like(p["spline_scaler"], scale_spline)
        else:
            q["spline_weight"] = p["spline_weight"] * scale_spline
        params.append(q)
    return KANNet(params, list(net.state), net.spec)


def from_linen(model: Any, variables: Any) -> KANNet:
    """Convert a Linen :class:`kan_jax.layers.KAN` and its variables to a :class:`KANNet`."""
    if "params" not in variables or "grid" not in variables:
        raise ValueError(f"expected Linen KAN variables with 'params' and 'grid' collections, got {list(variables)}")
    n = len(variables["params"])
    names = [f"layers_{i}" for i in range(n)]
    for name in names:
        if name not in variables["params"]:
            raise ValueError(f"expected sub-modules layers_0..layers_{n - 1}, got {sorted(variables['params'])}")
    return from_params(
        [variables["params"][nm] for nm in names],
        [variables["grid"][nm]["grid"] for nm in names],
        base_activation=getattr(model, "base_activation", jax.nn.silu),
    )


def _value(v: Any) -> Any:
    if v is None:
        return None
    try:
        return jnp.asarray(v[...])
    except Exception:  # plain arrays or None-like data
        return None if getattr(v, "value", v) is None else jnp.asarray(getattr(v, "value", v))


def from_nnx(model: Any) -> KANNet:
    """Convert an NNX :class:`kan_jax.nnx.KAN` (attribute ``layers``) to a :class:`KANNet`."""
    layers = list(getattr(model, "layers", []))
    if not layers:
        raise ValueError(f"expected an NNX KAN with a non-empty 'layers' list, got {type(model).__name__}")
    params = [
        {
            "base_weight": _value(l.base_weight),
            "spline_weight": _value(l.spline_weight),
            "spline_scaler": _value(getattr(l, "spline_scaler", None)),
        }
        for l in layers
    ]
    grids = [_value(l.grid) for l in layers]
    return from_params(params, grids, base_activation=getattr(layers[0], "base_activation", jax.nn.silu))


def to_linen(net: KANNet, **kan_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A Linen :class:`kan_jax.layers.KAN` and variables computing ``net`` (no symbolic edges).

    Pruned (masked) edges have their weights set to zero. Raises ``ValueError`` if an alive edge
    is symbolic (a Linen KAN has no symbolic edges).
    """
    from kan_jax.layers import KAN

    for l, s in enumerate(net.state):
        if bool(jnp.any((s["symbolic"] * s["mask"]) > 0)):
            raise ValueError(f"layer {l} has symbolic edges; a Linen KAN can only hold numeric edges")
    p_out, g_out = {}, {}
    for l, (p, s) in enumerate(zip(net.params, net.state)):
        m = s["mask"]
        lp = {"base_weight": p["base_weight"] * m, "spline_weight": p["spline_weight"] * m.T[:, None, :]}
        if "spline_scaler" in p:
            lp["spline_scaler"] = p["spline_scaler"]
        p_out[f"layers_{l}"] = lp
        g_out[f"layers_{l}"] = {"grid": s["grid"]}
    g0 = net.state[0]["grid"]
    k = net.spec.spline_order
    grid_size = g0.shape[-1] - 2 * k - 1
    kwargs = dict(
        grid_size=grid_size,
        spline_order=k,
        base_activation=net.spec.base_activation,
        enable_standalone_scale_spline="spline_scaler" in net.params[0],
        param_dtype=net.params[0]["base_weight"].dtype,
    )
    kwargs.update(kan_kwargs)
    return KAN(net.widths, **kwargs), {"params": p_out, "grid": g_out}


# ----------------------------------------------------------------------------- forward


def _numeric_edges(lp: LayerParams, grid: jax.Array, x: jax.Array, spec: KANSpec) -> jax.Array:
    bases = splines.b_spline_bases(x, grid, spec.spline_order)  # (B, in, n)
    spline = jnp.einsum("bij,ijo->boi", bases, functional.scaled_spline_weight(lp).astype(x.dtype))
    base = spec.base_activation(x)[:, None, :] * lp["base_weight"].astype(x.dtype)[None]
    return base + spline


def layer_edge_activations(lp: LayerParams, ls: LayerState, x: jax.Array, spec: KANSpec) -> jax.Array:
    r"""Every edge function of one layer on a batch: ``phi[b, o, i] = phi_{o,i}(x[b, i])``.

    Parameters
    ----------
    lp, ls:
        The layer's params and state (see the module docstring).
    x:
        Inputs, shape ``(B, in)``.
    spec:
        The network's :class:`KANSpec`.

    Returns
    -------
    jax.Array
        Shape ``(B, out, in)``; the sum over the last axis is the layer output.
    """
    if x.ndim != 2 or x.shape[1] != ls["grid"].shape[0]:
        raise ValueError(f"expected layer inputs of shape (B, {ls['grid'].shape[0]}), got {tuple(x.shape)}")
    acts = _numeric_edges(lp, ls["grid"], x, spec)
    if spec.functions:
        aff = lp["affine"].astype(x.dtype)
        a, b, c, d = (aff[..., j] for j in range(4))
        u = a[None] * x[:, None, :] + b[None]
        sym = jnp.zeros_like(u)
        for idx, f in enumerate(spec.functions):
            sym = jnp.where(ls["fn"][None] == idx, f.jax(u), sym)
        sym = c[None] * sym + d[None]
        acts = jnp.where(ls["symbolic"][None] > 0, sym, acts)
    return acts * ls["mask"].astype(x.dtype)[None]


def forward(
    params: Sequence[LayerParams], state: Sequence[LayerState], x: jax.Array, spec: KANSpec
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """The network on ``x (B, n_0)`` with every layer's inputs and edge activations.

    Returns
    -------
    (y, inputs, acts)
        ``y (B, n_L)``; ``inputs[l] (B, n_l)`` the inputs of layer ``l``; ``acts[l]
        (B, n_{l+1}, n_l)`` its edge activations (:func:`layer_edge_activations`).
    """
    if x.ndim != 2 or x.shape[1] != params[0]["base_weight"].shape[1]:
        raise ValueError(
            f"expected inputs of shape (B, {params[0]['base_weight'].shape[1]}), got {tuple(x.shape)}"
        )
    inputs, acts = [], []
    h = x
    for lp, ls in zip(params, state):
        inputs.append(h)
        a = layer_edge_activations(lp, ls, h, spec)
        acts.append(a)
        h = jnp.sum(a, axis=-1)
    return h, inputs, acts


@functools.partial(jax.jit, static_argnames=("spec",))
def apply(params: Sequence[LayerParams], state: Sequence[LayerState], x: jax.Array, spec: KANSpec) -> jax.Array:
    """The network's output ``(B, n_L)`` on ``x (B, n_0)`` (pure, jitted; ``spec`` static)."""
    return forward(params, state, x, spec)[0]


_forward_jit = jax.jit(forward, static_argnames=("spec",))


# ----------------------------------------------------------------------------- scores, regulariser


def edge_scores(acts: Sequence[jax.Array]) -> list[jax.Array]:
    r"""The L1 norm of every edge on the data: :math:`|\phi_{o,i}|_1 = \operatorname{mean}_s |\phi_{o,i}(x_s)|`.

    ``acts[l]`` of shape ``(B, out, in)`` gives an array ``(out, in)`` per layer.
    """
    return [jnp.mean(jnp.abs(a), axis=0) for a in acts]


def node_scores(acts: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    r"""Incoming and outgoing scores of the hidden nodes (KAN paper, section 2.5).

    Node ``i`` of hidden layer ``l`` (``1 <= l < L``) has incoming score
    :math:`I = \max_k |\phi_{l-1,i,k}|_1` and outgoing score :math:`O = \max_j |\phi_{l,j,i}|_1`.

    Returns
    -------
    list of (incoming, outgoing)
        One pair of arrays ``(n_l,)`` per hidden layer.
    """
    e = edge_scores(acts)
    return [(jnp.max(e[l - 1], axis=1), jnp.max(e[l], axis=0)) for l in range(1, len(e))]


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
    r"""The KAN paper's sample-based sparsity regulariser (pykan's ``reg``), without ``lamb``.

    .. math::
        R = \sum_l \Big(\mu_1 |\Phi_l|_1 + \mu_2 S(\Phi_l)
            + \mu_3 \sum_{o,i} \overline{|w_{oi\cdot}|} + \mu_4 \sum_{o,i} \overline{|\Delta w_{oi\cdot}|}\Big),
        \quad |\Phi_l|_1 = \sum_{o,i} |\phi_{o,i}|_1, \quad
        S(\Phi_l) = -\sum_{o,i} p_{oi} \log p_{oi},\ p = |\phi|_1 / |\Phi_l|_1,

    with :math:`\mu_1..\mu_4` = ``lamb_l1``, ``lamb_entropy``, ``lamb_coef``, ``lamb_coefdiff``,
    ``w`` the (unscaled) spline coefficients and ``Delta`` their differences along the basis axis.
    The total loss of the paper is ``mse + lamb * R``.

    Parameters
    ----------
    acts:
        Edge activations per layer, ``(B, out, in)`` (from :func:`forward`).
    params:
        Layer params; needed only when ``lamb_coef`` or ``lamb_coefdiff`` is non-zero.
    input_scales:
        Optional ``(in,)`` per layer: every edge's L1 norm is divided by the scale of its input
        (pykan divides by the extent of the input's grid, :func:`input_extents`), so an edge
        that amplifies a small-range input is not cheap.
    """
    if params is None and any(isinstance(v, (int, float)) and v != 0 for v in (lamb_coef, lamb_coefdiff)):
        raise ValueError("lamb_coef / lamb_coefdiff need the layer params; got params=None")
    total = jnp.zeros((), acts[0].dtype)
    for l, a in enumerate(acts):
        l1 = jnp.mean(jnp.abs(a), axis=0)
        if input_scales is not None:
            l1 = l1 / input_scales[l][None, :]
        s = jnp.sum(l1)
        p = l1 / jnp.where(s == 0, 1.0, s)
        # p log p with 0 log 0 = 0 and a finite gradient at p = 0 (pruned edges have p = 0;
        # xlogy's derivative log p + 1 is -inf there, and 0 * inf would poison the gradient).
        plogp = p * jnp.log(jnp.where(p > 0, p, 1.0))
        total = total + lamb_l1 * s - lamb_entropy * jnp.sum(plogp)
        if params is not None:
            w = params[l]["spline_weight"]
            total = total + lamb_coef * jnp.sum(jnp.mean(jnp.abs(w), 1))  # w: (in, n, out)
            total = total + lamb_coefdiff * jnp.sum(jnp.mean(jnp.abs(jnp.diff(w, axis=1)), 1))
    return total


def input_extents(state: Sequence[LayerState], spline_order: int, floor: float = 1e-4) -> list[jax.Array]:
    """Extent of every layer's interior grid per input, ``grid[:, G + k] - grid[:, k] + floor``.

    After a grid update this is the range of the inputs the layer saw (plus the margins).
    """
    k = spline_order
    return [s["grid"][:, -k - 1] - s["grid"][:, k] + floor for s in state]


def mse_loss(
    params: Sequence[LayerParams],
    state: Sequence[LayerState],
    x: jax.Array,
    y: jax.Array,
    spec: KANSpec,
    reg: Optional[dict[str, float]] = None,
) -> jax.Array:
    """Mean squared error plus ``reg["lamb"] *`` :func:`activation_regularizer` (pure).

    ``reg`` holds ``lamb`` and the regulariser's weights, and ``normalize`` (> 0: divide the
    edge norms by :func:`input_extents`, as pykan does).
    """
    pred, _, acts = forward(params, state, x, spec)
    loss = jnp.mean((pred - y) ** 2)
    if reg:
        reg = dict(reg)
        lamb = reg.pop("lamb", 0.0)
        normalize = reg.pop("normalize", 0.0)
        scales = [jnp.where(normalize > 0, e, 1.0) for e in input_extents(state, spec.spline_order)]
        loss = loss + lamb * activation_regularizer(acts, params, input_scales=scales, **reg)
    return loss


# ----------------------------------------------------------------------------- pruning


def _kept_nodes(acts: Sequence[jax.Array], threshold: float) -> list[np.ndarray]:
    return [
        np.asarray((inc > threshold) & (out > threshold)) for inc, out in node_scores(acts)
    ]


def _slice_layer(lp: LayerParams, ls: LayerState, rows: np.ndarray, cols: np.ndarray):
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    # Edge tensors are (out, in, ...), except those whose output axis is the last
    # (functional.PARAM_OUTPUT_AXIS): the spline ones, (in, n, out) and (in, out).
    new_p = {k: (v[c][..., r] if functional.PARAM_OUTPUT_AXIS.get(k, 0) == -1 else v[r][:, c]) for k, v in lp.items()}
    new_s = {k: (v[c] if k == "grid" else v[r][:, c]) for k, v in ls.items()}
    return new_p, new_s


def prune_mask(net: KANNet, x: jax.Array, threshold: float = 1e-2, edge_threshold: Optional[float] = None) -> KANNet:
    """Pruning that keeps the shapes: removed nodes' edges and weak edges get ``mask = 0``.

    A hidden node is removed when its incoming or outgoing score (:func:`node_scores`) is at
    most ``threshold``; an edge is removed when its score (:func:`edge_scores`) is at most
    ``edge_threshold`` (default ``threshold``). Inputs and outputs are never removed.
    """
    edge_threshold = threshold if edge_threshold is None else edge_threshold
    _, _, acts = _forward_jit(net.params, net.state, jnp.asarray(x), net.spec)
    keep = _kept_nodes(acts, threshold)
    widths = net.widths
    alive = [np.ones(widths[0], bool)] + keep + [np.ones(widths[-1], bool)]
    new_state = []
    for l, (ls, e) in enumerate(zip(net.state, edge_scores(acts))):
        m = (np.asarray(e) > edge_threshold) & alive[l + 1][:, None] & alive[l][None, :]
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
    """
    x = jnp.asarray(x)
    masked = prune_mask(net, x, threshold, edge_threshold)
    _, _, acts = _forward_jit(net.params, net.state, x, net.spec)
    keep = _kept_nodes(acts, threshold)
    for h, (inc, out) in enumerate(node_scores(acts)):
        if not keep[h].any():
            keep[h] = np.zeros_like(keep[h])
            keep[h][int(np.argmax(np.minimum(np.asarray(inc), np.asarray(out))))] = True
    widths = net.widths
    alive = [np.ones(widths[0], bool)] + keep + [np.ones(widths[-1], bool)]
    params, state = [], []
    for l, (lp, ls) in enumerate(zip(masked.params, masked.state)):
        p, s = _slice_layer(lp, ls, alive[l + 1], alive[l])
        params.append(p)
        state.append(s)
    return KANNet(params, state, net.spec)


# ----------------------------------------------------------------------------- grids and training


def update_grids(net: KANNet, x: jax.Array, grid_eps: float = 0.02, margin: float = 0.01) -> KANNet:
    """Adapt every layer's grid to the inputs it sees on ``x`` and refit its splines.

    Layer by layer (inputs recomputed with the updated earlier layers), as
    :func:`kan_jax.functional.layer_update_grid` does (spline outputs on the samples,
    :func:`kan_jax.splines.adaptive_grid`, least-squares refit of the scaled weights): the numeric
    edges keep their function on the samples up to the least-squares residual; the base branch,
    the symbolic constants and the masks are untouched.
    """
    params, state = list(net.params), [dict(s) for s in net.state]
    h = jnp.asarray(x)
    for l in range(len(params)):
        new_w, new_grid = _refit_layer(params[l], state[l]["grid"], h, net.spec.spline_order, grid_eps, margin)
        params[l] = {**params[l], "spline_weight": new_w}
        state[l]["grid"] = new_grid
        h = jnp.sum(layer_edge_activations(params[l], state[l], h, net.spec), axis=-1)
    return KANNet(params, state, net.spec)


@functools.partial(jax.jit, static_argnames=("spline_order",))
def _refit_layer(lp, grid, x, spline_order, grid_eps, margin):
    # The spline outputs on the samples, a new adaptive grid, their least-squares refit; the raw
    # weight is the fit divided by the scaler (0 where the scaler is 0), so that the scaled
    # weight equals the fit. Built on the stable kan_jax.splines API only.
    k = spline_order
    w = functional.scaled_spline_weight(lp)
    fit_dtype = jnp.promote_types(w.dtype, jnp.float32)
    x = x.astype(fit_dtype)
    y = jnp.einsum("bij,ijo->bio", splines.b_spline_bases(x, grid.astype(fit_dtype), k), w.astype(fit_dtype))
    new_grid = splines.adaptive_grid(x, grid.shape[-1] - 2 * k - 1, k, grid_eps, margin)
    fitted = splines.fit_spline_coefficients(x, y, new_grid, k)
    scaler = lp.get("spline_scaler")
    if scaler is not None:
        s = scaler[:, None, :].astype(fit_dtype)
        fitted = jnp.where(s == 0, 0.0, fitted / jnp.where(s == 0, 1.0, s))
    return fitted.astype(lp["spline_weight"].dtype), new_grid.astype(grid.dtype)


@functools.partial(jax.jit, static_argnames=("spec", "memory_size"))
def _lbfgs_run(params, state, x, y, reg, steps, spec, memory_size):
    # ``steps`` is traced (a while loop): one compilation per network shape, any step count.
    def loss(p):
        return mse_loss(p, state, x, y, spec, reg)

    opt = optax.lbfgs(memory_size=memory_size)
    vg = optax.value_and_grad_from_state(loss)

    def step(_, carry):
        p, s, _ = carry
        value, grad = vg(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), s, value

    first = loss(params)
    params, _, last = jax.lax.fori_loop(0, steps, step, (params, opt.init(params), first))
    return params, jnp.stack([first, loss(params)])


@functools.partial(jax.jit, static_argnames=("spec",))
def _adam_run(params, state, x, y, reg, lr, steps, spec):
    def loss(p):
        return mse_loss(p, state, x, y, spec, reg)

    opt = optax.adam(lr)

    def step(_, carry):
        p, s = carry
        grad = jax.grad(loss)(p)
        updates, s = opt.update(grad, s, p)
        return optax.apply_updates(p, updates), s

    first = loss(params)
    params, _ = jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))
    return params, jnp.stack([first, loss(params)])


_REG_DEFAULTS = dict(lamb=0.0, lamb_l1=1.0, lamb_entropy=2.0, lamb_coef=0.0, lamb_coefdiff=0.0, normalize=False)


def _reg_dict(**kw: float) -> dict[str, float]:
    # Always a dict of floats (traced): training with and without the regulariser compiles once.
    bad = sorted(set(kw) - set(_REG_DEFAULTS))
    if bad:
        raise TypeError(f"unknown regulariser arguments {bad}; expected some of {sorted(_REG_DEFAULTS)}")
    return {k: float(v) for k, v in {**_REG_DEFAULTS, **kw}.items()}


def train_lbfgs(
    net: KANNet, x: jax.Array, y: jax.Array, steps: int, *, memory_size: int = 10, **reg: float
) -> tuple[KANNet, np.ndarray]:
    """``steps`` L-BFGS iterations (optax's, zoom line search) on ``mse + lamb * R``.

    ``reg`` takes ``lamb``, ``lamb_l1``, ``lamb_entropy``, ``lamb_coef``, ``lamb_coefdiff``
    (see :func:`activation_regularizer`). One compiled loop (the step count is traced, so any
    count reuses the compilation); returns the new network and the loss ``[before, after]``.
    (One of pykan's L-BFGS "steps" is up to 20 iterations of PyTorch's L-BFGS.)
    """
    r = _reg_dict(**reg)
    params, hist = _lbfgs_run(list(net.params), list(net.state), jnp.asarray(x), jnp.asarray(y), r, int(steps), net.spec, memory_size)
    return KANNet(list(params), list(net.state), net.spec), np.asarray(hist)


def train_adam(
    net: KANNet, x: jax.Array, y: jax.Array, steps: int, *, lr: float = 1e-2, **reg: float
) -> tuple[KANNet, np.ndarray]:
    """``steps`` full-batch Adam steps on ``mse + lamb * R`` (see :func:`train_lbfgs`)."""
    r = _reg_dict(**reg)
    params, hist = _adam_run(list(net.params), list(net.state), jnp.asarray(x), jnp.asarray(y), r, lr, int(steps), net.spec)
    return KANNet(list(params), list(net.state), net.spec), np.asarray(hist)


def train(
    net: KANNet,
    x: jax.Array,
    y: jax.Array,
    steps: int,
    *,
    opt: str = "lbfgs",
    update_grid: bool = True,
    grid_update_every: int = 5,
    stop_grid_update_step: int = 50,
    grid_eps: float = 0.02,
    **kwargs: Any,
) -> tuple[KANNet, np.ndarray]:
    """pykan-style training: ``opt`` ('lbfgs' or 'adam') with grid updates every few steps.

    Before the steps ``0, grid_update_every, 2 grid_update_every, ... < stop_grid_update_step``
    the grids are adapted to the data (:func:`update_grids`) and, for L-BFGS, the optimiser's
    memory restarts. Remaining keyword arguments go to :func:`train_lbfgs` / :func:`train_adam`.
    """
    if opt not in ("lbfgs", "adam"):
        raise ValueError(f"opt must be 'lbfgs' or 'adam', got {opt!r}")
    run = train_lbfgs if opt == "lbfgs" else train_adam
    hist = []
    done = 0
    while done < steps:
        if update_grid and done < stop_grid_update_step and done % grid_update_every == 0:
            net = update_grids(net, x, grid_eps)
            n = min(grid_update_every, steps - done)
        else:
            n = steps - done
        net, h = run(net, x, y, n, **kwargs)
        hist.append(h)
        done += n
    return net, (np.concatenate(hist) if hist else np.zeros(0))


# ----------------------------------------------------------------------------- plot


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
):
    r"""Draw the network like pykan: nodes per layer, every alive edge as its learned function.

    Each alive edge ``(l, o, i)`` gets a small panel showing :math:`\phi_{o,i}` over the values
    its input takes on ``x`` (symbolic edges in red), joined to its input and output nodes by
    lines whose opacity is :math:`\tanh(\beta\, |\phi|_1)` (pykan's ``beta``). Panels are
    labelled ``"edge l,o,i"``.

    Parameters
    ----------
    net:
        The network.
    x:
        Data ``(B, n_0)`` defining the input ranges and the edge importances.
    path:
        If given, the figure is written there atomically (format from the suffix: PNG, PDF, ...).
    beta:
        Opacity steepness.
    in_vars, out_vars:
        Names of the inputs / outputs drawn below / above the network.
    title:
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = jnp.asarray(x)
    _, inputs, acts = _forward_jit(net.params, net.state, x, net.spec)
    scores = edge_scores(acts)
    widths = net.widths
    n_layers = len(net.params)
    max_edges = max(int(np.sum(np.asarray(s["mask"]) > 0)) for s in net.state)
    fig_w = scale * max(4.0, min(14.0, 0.9 * max(max_edges, max(widths))))
    fig = plt.figure(figsize=(fig_w, scale * 2.2 * n_layers + 0.6))
    ax = fig.add_axes((0.02, 0.04, 0.96, 0.90 if title else 0.94))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.15, n_layers + 0.15)
    ax.axis("off")

    def node_x(l: int, i: int) -> float:
        return (i + 0.5) / widths[l]

    for l, w in enumerate(widths):
        for i in range(w):
            ax.scatter([node_x(l, i)], [l], s=60, color="black", zorder=3)
    if in_vars is not None:
        for i, name in enumerate(in_vars):
            ax.text(node_x(0, i), -0.1, f"${name}$" if "$" not in name else name, ha="center", va="top", fontsize=11)
    if out_vars is not None:
        for o, name in enumerate(out_vars):
            ax.text(node_x(n_layers, o), n_layers + 0.08, name, ha="center", va="bottom", fontsize=11)

    panel_h = 0.42
    for l in range(n_layers):
        mask = np.asarray(net.state[l]["mask"]) > 0
        sym = np.asarray(net.state[l]["symbolic"]) > 0
        edges = [(o, i) for i in range(widths[l]) for o in range(widths[l + 1]) if mask[o, i]]
        n = max(len(edges), 1)
        pw = min(0.8 / n, 0.14)
        xin = np.asarray(inputs[l])
        act = np.asarray(acts[l])
        sc = np.asarray(scores[l])
        for e, (o, i) in enumerate(edges):
            cx = (e + 0.5) / n
            cy = l + 0.5
            alpha = float(np.tanh(beta * sc[o, i]))
            color = "red" if sym[o, i] else "black"
            ax.plot([node_x(l, i), cx], [l, cy - panel_h / 2], color=color, alpha=alpha, lw=1)
            ax.plot([cx, node_x(l + 1, o)], [cy + panel_h / 2, l + 1], color=color, alpha=alpha, lw=1)
            inset = ax.inset_axes((cx - pw / 2, cy - panel_h / 2, pw, panel_h), transform=ax.transData)
            inset.set_label(f"edge {l},{o},{i}")
            order = np.argsort(xin[:, i])
            inset.plot(xin[order, i], act[order, o, i], color=color, alpha=max(alpha, 0.05), lw=1.5)
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_alpha(max(alpha, 0.05))
    if title:
        fig.suptitle(title)
    if path is not None:
        from kan_jax.checkpoint import atomic_write

        atomic_write(path, lambda p: fig.savefig(p, dpi=120))
    return fig


def edge_panels(fig) -> list:
    """The edge panels of a figure made by :func:`plot_kan` (axes labelled ``"edge l,o,i"``)."""
    out = []
    for a in fig.axes:
        for c in [a, *getattr(a, "child_axes", [])]:
            if c.get_label().startswith("edge "):
                out.append(c)
    return out
