"""Symbolic regression per KAN edge: a function library, ``c f(a x + b) + d`` fits, formulas.

Every edge of a :class:`kan_jax.interpret.KANNet` can be *snapped* to a named function ``f``
of a library (:mod:`~kan_jax.interpret.symbolic.library`): the edge then computes
``c f(a x + b) + d`` with trainable ``(a, b, c, d)``, fitted by
:func:`~kan_jax.interpret.symbolic.fit.fit_affine`
(:mod:`~kan_jax.interpret.symbolic.snapping` ranks and snaps edges). Once every alive edge is
symbolic, :func:`symbolic_formula` composes the SymPy expression of the network (SymPy, the
``interpret`` extra, is imported only then).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from kan_jax import KAN, interpret as I
    >>> from kan_jax.interpret import symbolic as S
    >>> model = KAN([1, 1])
    >>> net = I.from_linen(model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1))))
    >>> net, _ = S.fix_symbolic(net, None, 0, 0, 0, "x^2", params=(1.0, 0.0, 2.0, 0.5))
    >>> S.symbolic_formula(net, digits=3)
    [2*x1**2 + 0.5]

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1.
"""
from kan_jax.interpret.symbolic.fit import fit_affine
from kan_jax.interpret.symbolic.formula import round_floats, symbolic_formula
from kan_jax.interpret.symbolic.library import DEFAULT_LIB, LIBRARY, SymbolicFunction, get_library, make_function
from kan_jax.interpret.symbolic.snapping import (
    auto_symbolic,
    chain_nodes,
    fix_symbolic,
    merge_chain_nodes,
    suggest_symbolic,
    with_library,
)

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
