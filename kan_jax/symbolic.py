"""Symbolic regression per KAN edge: a function library, ``c f(a x + b) + d`` fits and formulas.

Every edge of a :class:`kan_jax.interpret.KANNet` can be *snapped* to a named function ``f``
of a library: the edge then computes ``c f(a x + b) + d`` with trainable ``(a, b, c, d)``
(``params[l]["affine"][o, i]``), so training continues after snapping. Once every alive edge is
symbolic, :func:`symbolic_formula` composes the SymPy expression of the network.

The fit of one edge (samples ``x``, values ``y = phi(x)``) follows the KAN paper:

1. a grid search over ``(a, b)`` maximising the coefficient of determination of the linear
   regression of ``y`` on ``f(a x + b)``,

   .. math:: R^2(a, b) = \\frac{\\operatorname{cov}(f(a x + b), y)^2}{\\operatorname{var} f(a x + b)\\,
             \\operatorname{var} y},

   on a ``grid_points x grid_points`` grid of ``a_range x b_range``, zoomed ``zooms`` times
   around the best point;
2. ``(c, d)`` by least squares;
3. (ours) a few damped Gauss-Newton (Levenberg-Marquardt) steps on all four parameters, which
   recovers noiseless data to near machine precision.

Fits are pure and ``vmap``-ed over edges.

References
----------
Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import sympy

from kan_jax.interpret import KANNet, _forward_jit, layer_edge_activations

__all__ = [
    "SymbolicFunction",
    "LIBRARY",
    "DEFAULT_LIB",
    "make_function",
    "get_library",
    "fit_affine",
    "suggest_symbolic",
    "fix_symbolic",
    "auto_symbolic",
    "chain_nodes",
    "merge_chain_nodes",
    "with_library",
    "symbolic_formula",
    "round_floats",
]


@dataclasses.dataclass(frozen=True, eq=False)
class SymbolicFunction:
    """A named 1-D function as a JAX/SymPy pair.

    Attributes
    ----------
    name:
        Name used by :func:`fix_symbolic` and in reports.
    jax:
        ``jnp`` function of an array (safe everywhere: finite values and gradients, e.g. the log
        clipped below ``1e-8``), used for fitting and training.
    sympy:
        The same function of a SymPy expression, used by :func:`symbolic_formula`.
    complexity:
        Integer cost used to prefer simple functions (pykan's scale: ``x`` 1, ``x^2`` 2, ...).
    canonical:
        Optional map ``(a, b, c, d) -> (a, b, c, d)`` to an equivalent parameterisation (e.g.
        ``a = 1`` for ``x^n``), applied after fitting.
    """

    name: str
    jax: Callable[[jax.Array], jax.Array]
    sympy: Callable[[Any], Any]
    complexity: int = 2
    canonical: Optional[Callable[..., tuple]] = None

    def __repr__(self) -> str:
        return f"SymbolicFunction({self.name!r})"


_EPS = 1e-8


def _power_canonical(n: int) -> Callable[..., tuple]:
    # c (a x + b)^n + d = (c a^n) (x + b/a)^n + d
    def canon(a, b, c, d):
        ok = jnp.abs(a) > 1e-12
        sa = jnp.where(ok, a, 1.0)
        return (jnp.where(ok, 1.0, a), jnp.where(ok, b / sa, b), jnp.where(ok, c * sa**n, c), d)

    return canon


def _linear_canonical(a, b, c, d):
    return (jnp.ones_like(a), jnp.zeros_like(b), c * a, c * b + d)


def _periodic_canonical(even: bool) -> Callable[..., tuple]:
    # c f(a x + b) + d for f = sin (odd) or cos (even), 2 pi periodic with f(u + pi) = -f(u):
    # a > 0 and b in [-pi/2, pi/2] (the grid search and training may end at b + 2 pi k)
    def canon(a, b, c, d):
        neg = a < 0
        a, b = jnp.where(neg, -a, a), jnp.where(neg, -b, b)
        c = c if even else jnp.where(neg, -c, c)
        b = jnp.mod(b + jnp.pi, 2 * jnp.pi) - jnp.pi
        flip = jnp.abs(b) > jnp.pi / 2
        return (a, jnp.where(flip, b - jnp.sign(b) * jnp.pi, b), jnp.where(flip, -c, c), d)

    return canon


def _safe_recip(u):
    small = jnp.abs(u) < _EPS
    return 1.0 / jnp.where(small, jnp.where(u < 0, -_EPS, _EPS), u)


LIBRARY: dict[str, SymbolicFunction] = {
    f.name: f
    for f in (
        SymbolicFunction("x", lambda u: u, lambda u: u, 1, _linear_canonical),
        SymbolicFunction("x^2", lambda u: u**2, lambda u: u**2, 2, _power_canonical(2)),
        SymbolicFunction("x^3", lambda u: u**3, lambda u: u**3, 3, _power_canonical(3)),
        SymbolicFunction("x^4", lambda u: u**4, lambda u: u**4, 3, _power_canonical(4)),
        SymbolicFunction("1/x", _safe_recip, lambda u: 1 / u, 2, _power_canonical(-1)),
        SymbolicFunction("exp", jnp.exp, sympy.exp, 2),
        SymbolicFunction("log", lambda u: jnp.log(jnp.maximum(u, _EPS)), sympy.log, 2),
        SymbolicFunction("sqrt", lambda u: jnp.sqrt(jnp.maximum(u, _EPS)), sympy.sqrt, 2),
        SymbolicFunction("tanh", jnp.tanh, sympy.tanh, 3),
        SymbolicFunction("sin", jnp.sin, sympy.sin, 2, _periodic_canonical(even=False)),
        SymbolicFunction("cos", jnp.cos, sympy.cos, 2, _periodic_canonical(even=True)),
        SymbolicFunction("abs", jnp.abs, sympy.Abs, 3),
        SymbolicFunction("gaussian", lambda u: jnp.exp(-(u**2)), lambda u: sympy.exp(-(u**2)), 3),
    )
}

#: The library of pykan's tutorial.
DEFAULT_LIB: tuple[str, ...] = ("x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs")


def make_function(
    name: str,
    jax_fn: Callable[[jax.Array], jax.Array],
    sympy_fn: Callable[[Any], Any],
    complexity: int = 2,
) -> SymbolicFunction:
    """A user's own library entry from a JAX function and the matching SymPy function.

    Example: ``make_function("sinh", jnp.sinh, sympy.sinh, 3)``. The JAX function must be finite
    (with finite gradients) wherever the grid search may evaluate it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(jax_fn) or not callable(sympy_fn):
        raise ValueError(f"jax_fn and sympy_fn must be callables, got {type(jax_fn).__name__} and {type(sympy_fn).__name__}")
    return SymbolicFunction(name, jax_fn, sympy_fn, int(complexity))


def get_library(lib: Optional[Sequence[Union[str, SymbolicFunction]]] = None) -> tuple[SymbolicFunction, ...]:
    """Resolve names (keys of :data:`LIBRARY`) and :class:`SymbolicFunction` objects to a tuple."""
    lib = DEFAULT_LIB if lib is None else lib
    out = []
    for f in lib:
        if isinstance(f, SymbolicFunction):
            out.append(f)
        elif isinstance(f, str) and f in LIBRARY:
            out.append(LIBRARY[f])
        else:
            raise ValueError(f"unknown symbolic function {f!r}; expected one of {sorted(LIBRARY)} or a SymbolicFunction")
    if not out:
        raise ValueError("the symbolic library is empty")
    return tuple(out)


# ----------------------------------------------------------------------------- fitting


def _r2_linear(fx: jax.Array, y: jax.Array) -> jax.Array:
    """R^2 of the least-squares line of ``y (B,)`` on ``fx (..., B)``; -1 where undefined."""
    fc = fx - jnp.mean(fx, axis=-1, keepdims=True)
    yc = y - jnp.mean(y)
    sff = jnp.sum(fc * fc, axis=-1)
    syy = jnp.sum(yc * yc)
    sfy = jnp.sum(fc * yc, axis=-1)
    r2 = sfy**2 / jnp.where(sff * syy > 0, sff * syy, 1.0)
    return jnp.where(jnp.isfinite(r2) & (sff > 0) & jnp.isfinite(sff), r2, -1.0)


def _fit_one(x, y, fn, a_range, b_range, grid_points, zooms, lm_steps, subsample):
    n = x.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, subsample)).round().astype(int))
    xs, ys = x[idx], y[idx]
    a_lo, a_hi = a_range
    b_lo, b_hi = b_range
    a0 = b0 = None
    for _ in range(zooms + 1):
        av = jnp.linspace(a_lo, a_hi, grid_points)
        bv = jnp.linspace(b_lo, b_hi, grid_points)
        u = av[:, None, None] * xs[None, None, :] + bv[None, :, None]
        r2 = _r2_linear(fn(u), ys)
        best = jnp.argmax(r2.reshape(-1))
        ia, ib = best // grid_points, best % grid_points
        a0, b0 = av[ia], bv[ib]
        da = (a_hi - a_lo) / (grid_points - 1)
        db = (b_hi - b_lo) / (grid_points - 1)
        a_lo, a_hi = a0 - 2 * da, a0 + 2 * da
        b_lo, b_hi = b0 - 2 * db, b0 + 2 * db

    # (c, d) by least squares on all samples.
    fx = fn(a0 * x + b0)
    fc = fx - jnp.mean(fx)
    sff = jnp.sum(fc * fc)
    c0 = jnp.where(sff > 0, jnp.sum(fc * (y - jnp.mean(y))) / jnp.where(sff > 0, sff, 1.0), 0.0)
    d0 = jnp.mean(y) - c0 * jnp.mean(fx)
    theta = jnp.stack([a0, b0, c0, d0])

    def resid(t):
        return t[2] * fn(t[0] * x + t[1]) + t[3] - y

    def sse(t):
        r = resid(t)
        v = jnp.sum(r * r)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    def lm_step(_, carry):
        t, mu, cur = carry
        r = resid(t)
        J = jax.jacfwd(resid)(t)
        JtJ = J.T @ J
        g = J.T @ r
        A = JtJ + mu * (jnp.diag(jnp.diag(JtJ)) + 1e-12 * jnp.eye(4, dtype=t.dtype))
        step = jnp.linalg.solve(A, -g)
        t_new = t + jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)
        new = sse(t_new)
        ok = new < cur
        return (jnp.where(ok, t_new, t), jnp.where(ok, mu / 3.0, mu * 4.0), jnp.where(ok, new, cur))

    theta, _, final = jax.lax.fori_loop(0, lm_steps, lm_step, (theta, jnp.asarray(1e-3, x.dtype), sse(theta)))
    yc = y - jnp.mean(y)
    syy = jnp.sum(yc * yc)
    r2 = jnp.where(syy > 0, 1.0 - final / jnp.where(syy > 0, syy, 1.0), jnp.where(final == 0, 1.0, 0.0))
    return theta, r2


def _identity_canonical(a, b, c, d):
    return (a, b, c, d)


@functools.partial(
    jax.jit,
    static_argnames=("library", "a_range", "b_range", "grid_points", "zooms", "lm_steps", "subsample"),
)
def _fit_batched(x, y, fidx, library, a_range, b_range, grid_points, zooms, lm_steps, subsample):
    # One compiled program per library (the function is a traced index into it), so fitting
    # every library function to a layer's edges compiles once.
    branches = [f.jax for f in library]

    def fn(u):
        return jax.lax.switch(fidx, branches, u)

    fit = functools.partial(
        _fit_one,
        fn=fn,
        a_range=a_range,
        b_range=b_range,
        grid_points=grid_points,
        zooms=zooms,
        lm_steps=lm_steps,
        subsample=subsample,
    )
    theta, r2 = jax.vmap(fit)(x, y)
    canon = [f.canonical or _identity_canonical for f in library]
    theta = jax.lax.switch(fidx, [lambda t, c=c: jnp.stack(c(*(t[:, j] for j in range(4))), axis=-1) for c in canon], theta)
    return theta, r2


def fit_affine(
    x: jax.Array,
    y: jax.Array,
    function: Union[str, SymbolicFunction],
    *,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid_points: int = 41,
    zooms: int = 2,
    lm_steps: int = 60,
    subsample: int = 200,
    library: Optional[Sequence[SymbolicFunction]] = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Fit ``y ~ c f(a x + b) + d`` for one or many edges.

    Parameters
    ----------
    x, y:
        Samples, shape ``(B,)`` or ``(E, B)`` (``E`` edges fitted at once, ``vmap``).
    function:
        A library name or a :class:`SymbolicFunction`.
    a_range, b_range:
        Ranges of the grid search over ``(a, b)``.
    grid_points:
        Points per axis of the grid (``grid_points**2`` candidates per zoom).
    zooms:
        Refinements of the grid around the best point (each shrinks it to ``+- 2`` cells).
    lm_steps:
        Levenberg-Marquardt steps on ``(a, b, c, d)`` after the grid search (0 for none).
    subsample:
        At most this many evenly spaced samples are used in the grid search (all in the
        least-squares and Levenberg-Marquardt steps).
    library:
        Optional tuple of :class:`SymbolicFunction` containing ``function``: fits of any of its
        functions share one compiled program (the function is a traced index).

    Returns
    -------
    (theta, r2)
        ``theta (..., 4)`` = ``(a, b, c, d)`` (canonicalised, e.g. ``a = 1`` for powers) and
        the coefficient of determination :math:`1 - SSE / SST` of the fit, ``(...)``.
    """
    (function,) = get_library([function])
    library = tuple(library) if library is not None else (function,)
    if function not in library:
        raise ValueError(f"function {function.name!r} is not in the given library {[f.name for f in library]}")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape or x.ndim not in (1, 2) or x.shape[-1] < 2:
        raise ValueError(f"x and y must have the same shape (B,) or (E, B) with B >= 2, got {x.shape} and {y.shape}")
    dtype = jnp.promote_types(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    single = x.ndim == 1
    if single:
        x, y = x[None], y[None]
    n_edges = x.shape[0]
    bucket = max(4, 1 << (n_edges - 1).bit_length())  # pad the edge count: fewer recompilations
    if bucket > n_edges:
        x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (bucket - n_edges, x.shape[1]))])
        y = jnp.concatenate([y, jnp.broadcast_to(y[:1], (bucket - n_edges, y.shape[1]))])
    theta, r2 = _fit_batched(
        x,
        y,
        jnp.asarray(library.index(function), jnp.int32),
        library,
        tuple(float(v) for v in a_range),
        tuple(float(v) for v in b_range),
        int(grid_points),
        int(zooms),
        int(lm_steps),
        int(subsample),
    )
    theta, r2 = theta[:n_edges], r2[:n_edges]
    return (theta[0], r2[0]) if single else (theta, r2)


def _selection_score(r2: np.ndarray, complexity: np.ndarray, weight_simple: float) -> np.ndarray:
    # pykan's preference: weight_simple * complexity + (1 - weight_simple) * log2(1 - R^2 + 1e-5)
    # (lower is better); fits better than 1 - R^2 = 1e-5 differ only by complexity.
    loss = np.log2(np.clip(1.0 - r2, 0.0, None) + 1e-5)
    return weight_simple * complexity + (1.0 - weight_simple) * loss


def _edge_data(net: KANNet, x: jax.Array):
    _, inputs, acts = _forward_jit(net.params, net.state, jnp.asarray(x), net.spec)
    return inputs, acts


def _check_edge(net: KANNet, l: int, o: int, i: int) -> None:
    if not 0 <= l < len(net.params):
        raise ValueError(f"layer must be in [0, {len(net.params)}), got {l}")
    out_f, in_f = net.params[l]["base_weight"].shape
    if not (0 <= o < out_f and 0 <= i < in_f):
        raise ValueError(f"edge (o={o}, i={i}) out of range for layer {l} of shape (out={out_f}, in={in_f})")


def suggest_symbolic(
    net: KANNet,
    x: jax.Array,
    l: int,
    o: int,
    i: int,
    lib: Optional[Sequence[Union[str, SymbolicFunction]]] = None,
    *,
    weight_simple: float = 0.8,
    **fit_kwargs: Any,
) -> list[dict[str, Any]]:
    """Rank the library's functions for edge ``(l, o, i)`` (output ``o``, input ``i`` of layer ``l``).

    Returns a list of ``{"name", "r2", "complexity", "params": (a, b, c, d), "score"}``, best
    first by pykan's preference (``weight_simple * complexity + (1 - weight_simple) *
    log2(1 - R^2 + 1e-5)``, lower is better).
    """
    _check_edge(net, l, o, i)
    inputs, acts = _edge_data(net, x)
    xe, ye = inputs[l][:, i], acts[l][:, o, i]
    rows = []
    fns = get_library(lib)
    for f in fns:
        theta, r2 = fit_affine(xe, ye, f, library=fns, **fit_kwargs)
        rows.append({"name": f.name, "r2": float(r2), "complexity": f.complexity, "params": tuple(float(t) for t in theta)})
    scores = _selection_score(np.array([r["r2"] for r in rows]), np.array([r["complexity"] for r in rows]), weight_simple)
    for r, s in zip(rows, scores):
        r["score"] = float(s)
    return sorted(rows, key=lambda r: r["score"])


def _with_function(net: KANNet, f: SymbolicFunction) -> tuple[KANNet, int]:
    names = [g.name for g in net.spec.functions]
    if f.name in names:
        idx = names.index(f.name)
        if net.spec.functions[idx] is not f and f is not LIBRARY.get(f.name):
            raise ValueError(f"a different function named {f.name!r} is already used by this network")
        return net, idx
    spec = dataclasses.replace(net.spec, functions=net.spec.functions + (f,))
    return KANNet(net.params, net.state, spec), len(names)


def with_library(net: KANNet, lib: Optional[Sequence[Union[str, SymbolicFunction]]] = None) -> KANNet:
    """``net`` with the library's functions registered in its spec (edges unchanged).

    Snapping edges to registered functions later keeps the spec, so compiled training and
    forward functions are reused (a new function in the spec means a new compilation).
    """
    for f in get_library(lib):
        net, _ = _with_function(net, f)
    return net


def _set_edges(net: KANNet, l: int, edges: Sequence[tuple[int, int]], idxs, thetas) -> KANNet:
    params = [dict(p) for p in net.params]
    state = [dict(s) for s in net.state]
    if edges:
        o = np.array([e[0] for e in edges])
        i = np.array([e[1] for e in edges])
        aff = params[l]["affine"]
        params[l]["affine"] = aff.at[o, i].set(jnp.asarray(thetas, aff.dtype))
        state[l]["symbolic"] = state[l]["symbolic"].at[o, i].set(1.0)
        state[l]["fn"] = state[l]["fn"].at[o, i].set(jnp.asarray(idxs, jnp.int32))
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

    With ``params=None`` the constants are fitted (:func:`fit_affine`) to the edge's current
    function on ``x``; otherwise ``params = (a, b, c, d)`` are set as given (``x`` unused, R^2
    reported as ``nan``). Returns the new network and the R^2.
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


def _fit_library(
    xe: jax.Array, ye: jax.Array, fns: Sequence[SymbolicFunction], **fit_kwargs: Any
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`fit_affine` of every library function to the ``E`` curves ``ye`` over ``xe`` (both
    ``(E, B)``): the per-function ``(E, 4)`` constants and the R^2 as ``(F, E)``."""
    thetas, r2s = [], []
    for f in fns:
        th, r2 = fit_affine(xe, ye, f, library=fns, **fit_kwargs)
        thetas.append(np.asarray(th))
        r2s.append(np.asarray(r2))
    return thetas, np.stack(r2s)


def auto_symbolic(
    net: KANNet,
    x: jax.Array,
    lib: Optional[Sequence[Union[str, SymbolicFunction]]] = None,
    *,
    weight_simple: float = 0.8,
    merge_chains: bool = True,
    verbose: bool = False,
    **fit_kwargs: Any,
) -> tuple[KANNet, list[dict[str, Any]]]:
    """Snap every alive numeric edge to its best library function (pykan's ``auto_symbolic``).

    Layer by layer (inputs recomputed after snapping the earlier layers), every library function
    is fitted to all alive numeric edges of the layer at once (``vmap``), and each edge takes
    the function of lowest :func:`suggest_symbolic` score.

    With ``merge_chains`` (ours), hidden nodes that are a *chain* -- exactly one alive incoming
    and one alive outgoing edge, both numeric -- are then reconsidered (:func:`merge_chain_nodes`):
    such a node computes ``g(h(x_i))``, a function of one variable whose split into ``h`` and
    ``g`` the data do not determine (any invertible reparametrisation of the node gives the
    same network), so training may leave both nonlinear with ``g o h`` a library function and
    neither ``h`` nor ``g`` one. The composite is fitted as one edge (outgoing edge ``x``) when
    that scores better than the two separate snaps.

    Returns the new network and one ``{"layer", "out", "in", "name", "r2", "params"}`` per
    snapped edge (merged chains' edges also carry ``"merged"``; see :func:`merge_chain_nodes`).
    """
    fns = get_library(lib)
    numeric = net
    report = []
    for l in range(len(net.params)):
        inputs, acts = _edge_data(net, x)
        s = net.state[l]
        todo = np.argwhere((np.asarray(s["mask"]) > 0) & (np.asarray(s["symbolic"]) == 0))
        if todo.size == 0:
            continue
        o, i = todo[:, 0], todo[:, 1]
        xe = jnp.asarray(inputs[l]).T[i]  # (E, B)
        ye = jnp.moveaxis(acts[l], 0, -1)[o, i]  # (E, B)
        thetas, r2s = _fit_library(xe, ye, fns, **fit_kwargs)
        comp = np.array([f.complexity for f in fns], float)[:, None]
        best = np.argmin(_selection_score(r2s, comp, weight_simple), axis=0)
        idxs, chosen = [], []
        for e, bf in enumerate(best):
            net, idx = _with_function(net, fns[bf])
            idxs.append(idx)
            chosen.append(thetas[bf][e])
            rec = {"layer": l, "out": int(o[e]), "in": int(i[e]), "name": fns[bf].name, "r2": float(r2s[bf, e]), "params": [float(t) for t in thetas[bf][e]]}
            report.append(rec)
            if verbose:
                print(f"fixing ({l},{int(i[e])},{int(o[e])}) with {rec['name']}, r2={rec['r2']:.10f}")
        net = _set_edges(net, l, list(zip(o.tolist(), i.tolist())), idxs, np.stack(chosen))
    if merge_chains:
        net, report = merge_chain_nodes(numeric, net, x, fns, report, weight_simple=weight_simple, verbose=verbose, **fit_kwargs)
    return net, report


def chain_nodes(net: KANNet) -> list[tuple[int, int, int, int]]:
    """The hidden nodes of ``net`` that are chains: ``(l, i, j, o)`` for node ``j`` of layer
    ``l + 1`` whose only alive incoming edge is ``(l, j, i)`` (from input ``i`` of layer ``l``)
    and whose only alive outgoing edge is ``(l + 1, o, j)``, both numeric (not snapped)."""
    out = []
    for l in range(len(net.params) - 1):
        m_in = np.asarray(net.state[l]["mask"]) > 0  # (n_{l+1}, n_l)
        m_out = np.asarray(net.state[l + 1]["mask"]) > 0  # (n_{l+2}, n_{l+1})
        s_in = np.asarray(net.state[l]["symbolic"]) > 0
        s_out = np.asarray(net.state[l + 1]["symbolic"]) > 0
        for j in range(m_in.shape[0]):
            ins, outs = np.flatnonzero(m_in[j]), np.flatnonzero(m_out[:, j])
            if len(ins) == 1 and len(outs) == 1 and not s_in[j, ins[0]] and not s_out[outs[0], j]:
                out.append((l, int(ins[0]), j, int(outs[0])))
    return out


def merge_chain_nodes(
    numeric: KANNet,
    snapped: KANNet,
    x: jax.Array,
    lib: Optional[Sequence[Union[str, SymbolicFunction]]],
    report: Sequence[dict[str, Any]],
    *,
    weight_simple: float = 0.8,
    verbose: bool = False,
    **fit_kwargs: Any,
) -> tuple[KANNet, list[dict[str, Any]]]:
    """Reconsider the chain nodes of ``numeric`` (:func:`chain_nodes`) in its snapped version.

    For a chain ``x_i -> h -> node j -> g -> node o`` the composite ``y = g(h(x_i))`` of the
    numeric edges is compared, on ``x``, with

    * the two separate snaps ``f_2(f_1(x_i))`` of ``snapped`` (complexity ``c_1 + c_2``, R^2 of
      the composed snaps against ``y``), and
    * the best library fit ``c f(a x_i + b) + d`` of ``y`` itself, with the outgoing edge the
      identity ``x`` (complexity ``c_f + 1``),

    by pykan's score (:func:`suggest_symbolic`); the lower wins. A merged chain's report entries
    get ``"merged": True`` and the incoming one ``"chain_r2"`` (the separate snaps' R^2, to
    compare with its ``"r2"``). The inputs ``x_i`` are those of ``snapped`` (earlier layers
    snapped), as in :func:`auto_symbolic`. ``report`` is :func:`auto_symbolic`'s list for
    ``snapped``; chains whose edges it does not list, or that share an edge with a chain merged
    before them (consecutive chain nodes of a deeper network), are left as they are.

    Returns the new network and the updated report.
    """
    fns = get_library(lib)
    report = [dict(r) for r in report]
    chains = chain_nodes(numeric)
    if not chains:
        return snapped, report
    _, inputs, acts = _forward_jit(snapped.params, snapped.state, jnp.asarray(x), snapped.spec)
    xs, ys, chain_vals = [], [], []
    for l, i, j, o in chains:
        xl = inputs[l]
        h = layer_edge_activations(numeric.params[l], numeric.state[l], xl, numeric.spec)[:, j, i]
        z = jnp.zeros((xl.shape[0], numeric.widths[l + 1]), xl.dtype).at[:, j].set(h)
        xs.append(xl[:, i])
        ys.append(layer_edge_activations(numeric.params[l + 1], numeric.state[l + 1], z, numeric.spec)[:, o, j])
        chain_vals.append(acts[l + 1][:, o, j])
    xe, ye, ce = jnp.stack(xs), jnp.stack(ys), jnp.stack(chain_vals)
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
    for e, (l, i, j, o) in enumerate(chains):
        edge_in, edge_out = (l, j, i), (l + 1, o, j)
        if edge_in not in where or edge_out not in where or touched & {edge_in, edge_out}:
            continue
        k_in, k_out = where[edge_in], where[edge_out]
        c_chain = _complexity(fns, snapped, report[k_in]["name"]) + _complexity(fns, snapped, report[k_out]["name"])
        chain_score = float(_selection_score(np.array(chain_r2[e]), np.array(c_chain), weight_simple))
        bf = int(best[e])
        if verbose:
            print(f"chain ({l},{i})->{j}->({l + 1},{o}): separate {report[k_in]['name']}, {report[k_out]['name']} "
                  f"r2={chain_r2[e]:.10f}; merged {fns[bf].name} r2={r2s[bf, e]:.10f}")
        if merged_scores[bf, e] >= chain_score:
            continue
        touched |= {edge_in, edge_out}
        snapped, idx = _with_function(snapped, fns[bf])
        snapped = _set_edges(snapped, l, [(j, i)], [idx], thetas[bf][e][None])
        snapped, idx_x = _with_function(snapped, identity)
        snapped = _set_edges(snapped, l + 1, [(o, j)], [idx_x], np.array([[1.0, 0.0, 1.0, 0.0]]))
        report[k_in] = {**report[k_in], "name": fns[bf].name, "r2": float(r2s[bf, e]),
                        "params": [float(t) for t in thetas[bf][e]], "merged": True, "chain_r2": float(chain_r2[e])}
        report[k_out] = {**report[k_out], "name": identity.name, "r2": float(r2s[bf, e]),
                         "params": [1.0, 0.0, 1.0, 0.0], "merged": True}
    return snapped, report


def _complexity(fns: Sequence[SymbolicFunction], net: KANNet, name: str) -> int:
    for f in (*fns, *net.spec.functions):
        if f.name == name:
            return int(f.complexity)
    raise ValueError(f"unknown function {name!r}")


# ----------------------------------------------------------------------------- formulas


def round_floats(expr: Any, digits: int) -> Any:
    """Round every floating-point number of a SymPy expression to ``digits`` decimals.

    Numbers that round to integers become SymPy integers (so ``1.0*x`` prints as ``x``).
    """
    for _ in range(5):  # products of rounded numbers are evaluated again: round to a fixed point
        new = _round_once(expr, digits)
        if new == expr:
            break
        expr = new
    return expr


def _round_once(expr: Any, digits: int) -> Any:
    reps = {}
    for f in expr.atoms(sympy.Float):
        r = round(float(f), digits)
        if r == int(r):
            reps[f] = sympy.Integer(int(r))
            continue
        text = f"{r:.{digits}f}".rstrip("0").rstrip(".")
        significant = len(text.replace("-", "").replace(".", "").lstrip("0"))
        reps[f] = sympy.Float(text, max(significant, 1))
    return expr.xreplace(reps)


def symbolic_formula(
    net: KANNet,
    var_names: Optional[Sequence[Union[str, Any]]] = None,
    digits: Optional[int] = None,
) -> list[Any]:
    """The SymPy expression of every output of a network whose alive edges are all symbolic.

    Node ``o`` of layer ``l + 1`` is :math:`\\sum_i c_{oi} f_{oi}(a_{oi} z_i + b_{oi}) + d_{oi}`
    over the alive edges (``mask = 1``) of layer ``l``; pruned edges contribute nothing. The
    constants are first put in their function's canonical form (``SymbolicFunction.canonical``,
    e.g. ``a = 1`` for ``x^n``): training moves them along directions that leave the edge
    unchanged (``c (a x)^2`` only depends on ``c a^2``), and rounding ``c`` and ``a`` separately
    would then print ``1.0001*x2**2`` for ``1.000081*(0.999959*x2)**2``.

    Parameters
    ----------
    net:
        The network.
    var_names:
        Names (or SymPy symbols) of the inputs; default ``x1, x2, ...``.
    digits:
        If given, every constant is rounded to this many decimals (:func:`round_floats`).

    Returns
    -------
    list
        One SymPy expression per output.

    Raises
    ------
    ValueError
        If an alive edge is still numeric (snap it with :func:`fix_symbolic` or prune it).
    """
    n_in = net.widths[0]
    if var_names is None:
        var_names = [f"x{j + 1}" for j in range(n_in)]
    if len(var_names) != n_in:
        raise ValueError(f"expected {n_in} variable names, got {len(var_names)}")
    z = [sympy.Symbol(v) if isinstance(v, str) else v for v in var_names]
    for l, (p, s) in enumerate(zip(net.params, net.state)):
        mask = np.asarray(s["mask"]) > 0
        sym = np.asarray(s["symbolic"]) > 0
        numeric = np.argwhere(mask & ~sym)
        if numeric.size:
            raise ValueError(
                f"layer {l} has alive numeric edges (out, in) {[tuple(e) for e in numeric.tolist()]}; "
                "snap them (fix_symbolic / auto_symbolic) or prune them first"
            )
        aff = np.asarray(p["affine"], dtype=np.float64)
        fn = np.asarray(s["fn"])
        out_f, in_f = mask.shape
        new = []
        for o in range(out_f):
            node = sympy.Integer(0)
            for i in range(in_f):
                if not mask[o, i]:
                    continue
                f = net.spec.functions[fn[o, i]]
                theta = aff[o, i]
                if getattr(f, "canonical", None) is not None:  # training drifts along the redundant directions
                    theta = [float(v) for v in f.canonical(*(jnp.asarray(v, p["affine"].dtype) for v in theta))]
                a, b, c, d = (sympy.Float(float(v), 17) for v in theta)
                node = node + c * f.sympy(a * z[i] + b) + d
            new.append(node)
        z = new
    if digits is not None:
        z = [round_floats(e, digits) for e in z]
    return z
