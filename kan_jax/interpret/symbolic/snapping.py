"""Snapping KAN edges to library functions: ranking, fixing one edge, snapping every edge.

A snapped edge ``(l, o, i)`` (output ``o``, input ``i`` of layer ``l``) computes
``c f(a x + b) + d`` with trainable ``(a, b, c, d)`` in ``params[l]["affine"][o, i]``, so
training continues after snapping. Candidates are ranked by pykan's preference

.. math:: \\text{score} = w\\,\\text{complexity} + (1 - w) \\log_2(1 - R^2 + 10^{-5})

(``w = weight_simple``, lower is better): fits better than ``1 - R^2 = 1e-5`` differ only by
complexity.

A hidden node with exactly one alive incoming and one alive outgoing numeric edge is a
*chain*: it computes ``g(h(x_i))``, a function of one variable whose split into ``h`` and
``g`` the data do not determine (any invertible reparametrisation of the node gives the same
network), so training may leave both nonlinear with ``g o h`` a library function and neither
``h`` nor ``g`` one. :func:`merge_chain_nodes` fits such a composite as one edge when that
scores better than the two separate snaps.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1;
    pykan's ``suggest_symbolic`` and ``auto_symbolic``, https://github.com/KindXiaoming/pykan.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax.interpret.network import KANNet, forward, layer_edge_activations
from kan_jax.interpret.symbolic.fit import fit_affine
from kan_jax.interpret.symbolic.library import LIBRARY, SymbolicFunction, get_library

__all__ = [
    "suggest_symbolic",
    "fix_symbolic",
    "auto_symbolic",
    "with_library",
    "chain_nodes",
    "merge_chain_nodes",
]

Library = Optional[Sequence[Union[str, SymbolicFunction]]]


def _selection_score(r2: np.ndarray, complexity: np.ndarray, weight_simple: float) -> np.ndarray:
    """pykan's preference (see the module docstring); lower is better."""
    loss = np.log2(np.clip(1.0 - r2, 0.0, None) + 1e-5)
    return weight_simple * complexity + (1.0 - weight_simple) * loss


def _edge_data(net: KANNet, x: jax.Array):
    """Every layer's inputs and edge activations on ``x``."""
    _, inputs, acts = forward(net.params, net.state, jnp.asarray(x), net.spec)
    return inputs, acts


def _check_edge(net: KANNet, lyr: int, o: int, i: int) -> None:
    if not 0 <= lyr < len(net.params):
        raise ValueError(f"layer must be in [0, {len(net.params)}), got {lyr}")
    out_f, in_f = net.params[lyr]["base_weight"].shape
    if not (0 <= o < out_f and 0 <= i < in_f):
        raise ValueError(f"edge (o={o}, i={i}) out of range for layer {lyr} of shape (out={out_f}, in={in_f})")


def _fit_library(
    xe: jax.Array, ye: jax.Array, fns: Sequence[SymbolicFunction], **fit_kwargs: Any
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`fit_affine` of every function to the curves ``ye`` over ``xe`` (both ``(E, B)``).

    Returns the per-function ``(E, 4)`` constants and the R^2 as ``(F, E)``.
    """
    thetas, r2s = [], []
    for f in fns:
        th, r2 = fit_affine(xe, ye, f, library=fns, **fit_kwargs)
        thetas.append(np.asarray(th))
        r2s.append(np.asarray(r2))
    return thetas, np.stack(r2s)


def suggest_symbolic(
    net: KANNet,
    x: jax.Array,
    l: int,
    o: int,
    i: int,
    lib: Library = None,
    *,
    weight_simple: float = 0.8,
    **fit_kwargs: Any,
) -> list[dict[str, Any]]:
    """Rank the library's functions for edge ``(l, o, i)`` (output ``o``, input ``i`` of layer ``l``).

    Args:
        net: The network.
        x: Data ``(B, n_0)``; the edge's function is fitted on the values its input takes.
        l: Layer.
        o: Output of the edge.
        i: Input of the edge.
        lib: Library names or functions (default :data:`DEFAULT_LIB`).
        weight_simple: Weight of the complexity in the score (module docstring).
        **fit_kwargs: Passed to :func:`fit_affine`.

    Returns:
        One ``{"name", "r2", "complexity", "params": (a, b, c, d), "score"}`` per function,
        best first.
    """
    _check_edge(net, l, o, i)
    inputs, acts = _edge_data(net, x)
    xe, ye = inputs[l][:, i], acts[l][:, o, i]
    rows = []
    fns = get_library(lib)
    for f in fns:
        theta, r2 = fit_affine(xe, ye, f, library=fns, **fit_kwargs)
        rows.append({"name": f.name, "r2": float(r2), "complexity": f.complexity, "params": tuple(float(t) for t in theta)})
    scores = _selection_score(
        np.array([r["r2"] for r in rows]), np.array([r["complexity"] for r in rows]), weight_simple
    )
    for r, s in zip(rows, scores):
        r["score"] = float(s)
    return sorted(rows, key=lambda r: r["score"])


def _with_function(net: KANNet, f: SymbolicFunction) -> tuple[KANNet, int]:
    """``net`` with ``f`` registered in its spec, and ``f``'s index there."""
    names = [g.name for g in net.spec.functions]
    if f.name in names:
        idx = names.index(f.name)
        if net.spec.functions[idx] is not f and f is not LIBRARY.get(f.name):
            raise ValueError(f"a different function named {f.name!r} is already used by this network")
        return net, idx
    spec = dataclasses.replace(net.spec, functions=net.spec.functions + (f,))
    return KANNet(net.params, net.state, spec), len(names)


def with_library(net: KANNet, lib: Library = None) -> KANNet:
    """``net`` with the library's functions registered in its spec (edges unchanged).

    Snapping edges to registered functions later keeps the spec, so compiled training and
    forward functions are reused (a new function in the spec means a new compilation).

    Args:
        net: The network.
        lib: Library names or functions (default :data:`DEFAULT_LIB`).

    Returns:
        The network with the extended spec.
    """
    for f in get_library(lib):
        net, _ = _with_function(net, f)
    return net


def _set_edges(net: KANNet, lyr: int, edges: Sequence[tuple[int, int]], idxs, thetas) -> KANNet:
    """Snap the edges ``(o, i)`` of layer ``lyr`` to the functions ``idxs`` with constants ``thetas``."""
    params = [dict(p) for p in net.params]
    state = [dict(s) for s in net.state]
    if edges:
        o = np.array([e[0] for e in edges])
        i = np.array([e[1] for e in edges])
        aff = params[lyr]["affine"]
        params[lyr]["affine"] = aff.at[o, i].set(jnp.asarray(thetas, aff.dtype))
        state[lyr]["symbolic"] = state[lyr]["symbolic"].at[o, i].set(1.0)
        state[lyr]["fn"] = state[lyr]["fn"].at[o, i].set(jnp.asarray(idxs, jnp.int32))
    return KANNet(params, state, net.spec)


def fix_symbolic(
    net: KANNet,
    x: Optional[jax.Array],
    l: int,
    o: int,
    i: int,
    function: Union[str, SymbolicFunction],
    *,
    params: Optional[Sequence[float]] = None,
    **fit_kwargs: Any,
) -> tuple[KANNet, float]:
    """Snap edge ``(l, o, i)`` to ``c f(a x + b) + d``.

    Args:
        net: The network.
        x: Data ``(B, n_0)`` to fit the constants on (unused when ``params`` is given).
        l: Layer.
        o: Output of the edge.
        i: Input of the edge.
        function: A library name or a :class:`SymbolicFunction`.
        params: ``(a, b, c, d)`` to set as given; ``None`` fits them (:func:`fit_affine`) to
            the edge's current function on ``x``.
        **fit_kwargs: Passed to :func:`fit_affine`.

    Returns:
        The new network and the fit's R^2 (``nan`` when ``params`` is given).
    """
    _check_edge(net, l, o, i)
    (f,) = get_library([function])
    net, idx = _with_function(net, f)
    if params is None:
        if x is None:
            raise ValueError("fix_symbolic needs data x to fit the constants, or params=(a, b, c, d)")
        inputs, acts = _edge_data(net, x)
        theta, r2 = fit_affine(inputs[l][:, i], acts[l][:, o, i], f, **fit_kwargs)
        r2 = float(r2)
    else:
        if len(params) != 4:
            raise ValueError(f"params must be (a, b, c, d), got {params!r}")
        theta, r2 = jnp.asarray(params), float("nan")
    return _set_edges(net, l, [(o, i)], [idx], theta[None]), r2


def auto_symbolic(
    net: KANNet,
    x: jax.Array,
    lib: Library = None,
    *,
    weight_simple: float = 0.8,
    merge_chains: bool = True,
    verbose: bool = False,
    **fit_kwargs: Any,
) -> tuple[KANNet, list[dict[str, Any]]]:
    """Snap every alive numeric edge to its best library function (pykan's ``auto_symbolic``).

    Layer by layer (inputs recomputed after snapping the earlier layers), every library
    function is fitted to all alive numeric edges of the layer at once (``vmap``), and each
    edge takes the function of lowest score (:func:`suggest_symbolic`). With ``merge_chains``
    the chain nodes are then reconsidered (:func:`merge_chain_nodes`).

    Args:
        net: The network.
        x: Data ``(B, n_0)``.
        lib: Library names or functions (default :data:`DEFAULT_LIB`).
        weight_simple: Weight of the complexity in the score.
        merge_chains: Whether to fit chain nodes as one composite edge when that scores better.
        verbose: Print every decision.
        **fit_kwargs: Passed to :func:`fit_affine`.

    Returns:
        The new network and one ``{"layer", "out", "in", "name", "r2", "params"}`` per snapped
        edge (merged chains' edges also carry ``"merged"``).
    """
    fns = get_library(lib)
    numeric = net
    report = []
    for lyr in range(len(net.params)):
        inputs, acts = _edge_data(net, x)
        s = net.state[lyr]
        todo = np.argwhere((np.asarray(s["mask"]) > 0) & (np.asarray(s["symbolic"]) == 0))
        if todo.size == 0:
            continue
        o, i = todo[:, 0], todo[:, 1]
        xe = jnp.asarray(inputs[lyr]).T[i]  # (E, B)
        ye = jnp.moveaxis(acts[lyr], 0, -1)[o, i]  # (E, B)
        thetas, r2s = _fit_library(xe, ye, fns, **fit_kwargs)
        comp = np.array([f.complexity for f in fns], float)[:, None]
        best = np.argmin(_selection_score(r2s, comp, weight_simple), axis=0)
        idxs, chosen = [], []
        for e, bf in enumerate(best):
            net, idx = _with_function(net, fns[bf])
            idxs.append(idx)
            chosen.append(thetas[bf][e])
            rec = {
                "layer": lyr, "out": int(o[e]), "in": int(i[e]), "name": fns[bf].name,
                "r2": float(r2s[bf, e]), "params": [float(t) for t in thetas[bf][e]],
            }
            report.append(rec)
            if verbose:
                print(f"fixing ({lyr},{int(i[e])},{int(o[e])}) with {rec['name']}, r2={rec['r2']:.10f}")
        net = _set_edges(net, lyr, list(zip(o.tolist(), i.tolist())), idxs, np.stack(chosen))
    if merge_chains:
        net, report = merge_chain_nodes(
            numeric, net, x, fns, report, weight_simple=weight_simple, verbose=verbose, **fit_kwargs
        )
    return net, report


def chain_nodes(net: KANNet) -> list[tuple[int, int, int, int]]:
    """The hidden nodes of ``net`` that are chains.

    Args:
        net: The network.

    Returns:
        ``(l, i, j, o)`` for every node ``j`` of layer ``l + 1`` whose only alive incoming
        edge is ``(l, j, i)`` (from input ``i`` of layer ``l``) and whose only alive outgoing
        edge is ``(l + 1, o, j)``, both numeric (not snapped).
    """
    out = []
    for lyr in range(len(net.params) - 1):
        m_in = np.asarray(net.state[lyr]["mask"]) > 0  # (n_{l+1}, n_l)
        m_out = np.asarray(net.state[lyr + 1]["mask"]) > 0  # (n_{l+2}, n_{l+1})
        s_in = np.asarray(net.state[lyr]["symbolic"]) > 0
        s_out = np.asarray(net.state[lyr + 1]["symbolic"]) > 0
        for j in range(m_in.shape[0]):
            ins, outs = np.flatnonzero(m_in[j]), np.flatnonzero(m_out[:, j])
            if len(ins) == 1 and len(outs) == 1 and not s_in[j, ins[0]] and not s_out[outs[0], j]:
                out.append((lyr, int(ins[0]), j, int(outs[0])))
    return out


def _complexity(fns: Sequence[SymbolicFunction], net: KANNet, name: str) -> int:
    for f in (*fns, *net.spec.functions):
        if f.name == name:
            return int(f.complexity)
    raise ValueError(f"unknown function {name!r}")


def _chain_curves(numeric: KANNet, snapped: KANNet, chains, x: jax.Array):
    """Per chain: its input on ``snapped``, the numeric composite there, the snapped composite."""
    _, inputs, acts = forward(snapped.params, snapped.state, jnp.asarray(x), snapped.spec)
    xs, ys, chain_vals = [], [], []
    for lyr, i, j, o in chains:
        xl = inputs[lyr]
        h = layer_edge_activations(numeric.params[lyr], numeric.state[lyr], xl, numeric.spec)[:, j, i]
        z = jnp.zeros((xl.shape[0], numeric.widths[lyr + 1]), xl.dtype).at[:, j].set(h)
        xs.append(xl[:, i])
        ys.append(layer_edge_activations(numeric.params[lyr + 1], numeric.state[lyr + 1], z, numeric.spec)[:, o, j])
        chain_vals.append(acts[lyr + 1][:, o, j])
    return jnp.stack(xs), jnp.stack(ys), jnp.stack(chain_vals)


def merge_chain_nodes(
    numeric: KANNet,
    snapped: KANNet,
    x: jax.Array,
    lib: Library,
    report: Sequence[dict[str, Any]],
    *,
    weight_simple: float = 0.8,
    verbose: bool = False,
    **fit_kwargs: Any,
) -> tuple[KANNet, list[dict[str, Any]]]:
    """Reconsider the chain nodes of ``numeric`` (:func:`chain_nodes`) in its snapped version.

    For a chain ``x_i -> h -> node j -> g -> node o`` the composite ``y = g(h(x_i))`` of the
    numeric edges is compared, on ``x``, with the two separate snaps ``f_2(f_1(x_i))`` of
    ``snapped`` (complexity ``c_1 + c_2``, R^2 of the composed snaps against ``y``) and with
    the best library fit ``c f(a x_i + b) + d`` of ``y`` itself, the outgoing edge the
    identity ``x`` (complexity ``c_f + 1``), by the score of :func:`suggest_symbolic`; the
    lower wins. The inputs ``x_i`` are those of ``snapped`` (earlier layers snapped). Chains
    whose edges ``report`` does not list, or that share an edge with a chain merged before
    them (consecutive chain nodes of a deeper network), are left as they are.

    Args:
        numeric: The network before snapping.
        snapped: Its snapped version.
        x: Data ``(B, n_0)``.
        lib: Library names or functions.
        report: :func:`auto_symbolic`'s list for ``snapped``.
        weight_simple: Weight of the complexity in the score.
        verbose: Print every comparison.
        **fit_kwargs: Passed to :func:`fit_affine`.

    Returns:
        The new network and the updated report: a merged chain's entries get
        ``"merged": True`` and the incoming one ``"chain_r2"`` (the separate snaps' R^2).
    """
    fns = get_library(lib)
    report = [dict(r) for r in report]
    chains = chain_nodes(numeric)
    if not chains:
        return snapped, report
    xe, ye, ce = _chain_curves(numeric, snapped, chains, x)
    sst = np.asarray(jnp.sum((ye - jnp.mean(ye, axis=1, keepdims=True)) ** 2, axis=1))
    sse = np.asarray(jnp.sum((ce - ye) ** 2, axis=1))
    chain_r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
    thetas, r2s = _fit_library(xe, ye, fns, **fit_kwargs)
    identity = next((f for f in fns if f.name == "x"), LIBRARY["x"])
    comp = np.array([f.complexity for f in fns], float)[:, None] + identity.complexity
    merged_scores = _selection_score(r2s, comp, weight_simple)
    best = np.argmin(merged_scores, axis=0)
    where = {(r["layer"], r["out"], r["in"]): k for k, r in enumerate(report)}
    touched: set[tuple[int, int, int]] = set()
    for e, (lyr, i, j, o) in enumerate(chains):
        edge_in, edge_out = (lyr, j, i), (lyr + 1, o, j)
        if edge_in not in where or edge_out not in where or touched & {edge_in, edge_out}:
            continue
        k_in, k_out = where[edge_in], where[edge_out]
        c_chain = _complexity(fns, snapped, report[k_in]["name"]) + _complexity(fns, snapped, report[k_out]["name"])
        chain_score = float(_selection_score(np.array(chain_r2[e]), np.array(c_chain), weight_simple))
        bf = int(best[e])
        if verbose:
            print(f"chain ({lyr},{i})->{j}->({lyr + 1},{o}): separate {report[k_in]['name']}, "
                  f"{report[k_out]['name']} r2={chain_r2[e]:.10f}; merged {fns[bf].name} r2={r2s[bf, e]:.10f}")
        if merged_scores[bf, e] >= chain_score:
            continue
        touched |= {edge_in, edge_out}
        snapped, idx = _with_function(snapped, fns[bf])
        snapped = _set_edges(snapped, lyr, [(j, i)], [idx], thetas[bf][e][None])
        snapped, idx_x = _with_function(snapped, identity)
        snapped = _set_edges(snapped, lyr + 1, [(o, j)], [idx_x], np.array([[1.0, 0.0, 1.0, 0.0]]))
        report[k_in] = {**report[k_in], "name": fns[bf].name, "r2": float(r2s[bf, e]),
                        "params": [float(t) for t in thetas[bf][e]], "merged": True, "chain_r2": float(chain_r2[e])}
        report[k_out] = {**report[k_out], "name": identity.name, "r2": float(r2s[bf, e]),
                         "params": [1.0, 0.0, 1.0, 0.0], "merged": True}
    return snapped, report
