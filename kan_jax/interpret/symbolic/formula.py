r"""The SymPy formula of a fully snapped KAN, and rounding of its constants.

Node ``o`` of layer ``l + 1`` is :math:`\sum_i c_{oi} f_{oi}(a_{oi} z_i + b_{oi}) + d_{oi}`
over the alive edges of layer ``l``. SymPy (the ``interpret`` extra) is imported when a
formula is built.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1;
    A. Meurer et al., "SymPy: symbolic computing in Python", PeerJ Computer Science 3 (2017) e103.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from kan_jax._optional import require
from kan_jax.interpret.network import KANNet

__all__ = ["symbolic_formula", "round_floats"]


def round_floats(expr: Any, digits: int) -> Any:
    """Round every floating-point number of a SymPy expression to ``digits`` decimals.

    Numbers that round to integers become SymPy integers (so ``1.0*x`` prints as ``x``).

    Args:
        expr: A SymPy expression.
        digits: Decimals kept.

    Returns:
        The rounded expression.

    Examples:
        >>> import sympy
        >>> from kan_jax.interpret.symbolic import round_floats
        >>> x = sympy.Symbol("x")
        >>> round_floats(sympy.Float(1.00009999, 15) * x + sympy.Float(2.0000000001, 15), 4)
        1.0001*x + 2
    """
    sympy = require("sympy", "interpret")
    for _ in range(5):  # products of rounded numbers are evaluated again: round to a fixed point
        new = _round_once(sympy, expr, digits)
        if new == expr:
            break
        expr = new
    return expr


def _round_once(sympy: Any, expr: Any, digits: int) -> Any:
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

    Pruned edges contribute nothing. The constants are first put in their function's
    canonical form (``SymbolicFunction.canonical``, e.g. ``a = 1`` for ``x^n``): training
    moves them along directions that leave the edge unchanged (``c (a x)^2`` only depends on
    ``c a^2``), and rounding ``c`` and ``a`` separately would then print ``1.0001*x2**2`` for
    ``1.000081*(0.999959*x2)**2``.

    Args:
        net: The network.
        var_names: Names (or SymPy symbols) of the inputs; default ``x1, x2, ...``.
        digits: If given, every constant is rounded to this many decimals
            (:func:`round_floats`).

    Returns:
        One SymPy expression per output.

    Raises:
        ValueError: If an alive edge is still numeric (snap it with ``fix_symbolic`` or prune
            it).
        ImportError: If SymPy is not installed (``pip install "kan-jax[interpret]"``).
    """
    sympy = require("sympy", "interpret")
    n_in = net.widths[0]
    if var_names is None:
        var_names = [f"x{j + 1}" for j in range(n_in)]
    if len(var_names) != n_in:
        raise ValueError(f"expected {n_in} variable names, got {len(var_names)}")
    z = [sympy.Symbol(v) if isinstance(v, str) else v for v in var_names]
    for lyr, (p, s) in enumerate(zip(net.params, net.state)):
        mask = np.asarray(s["mask"]) > 0
        numeric = np.argwhere(mask & ~(np.asarray(s["symbolic"]) > 0))
        if numeric.size:
            raise ValueError(
                f"layer {lyr} has alive numeric edges (out, in) {[tuple(e) for e in numeric.tolist()]}; "
                "snap them (fix_symbolic / auto_symbolic) or prune them first"
            )
        aff = np.asarray(p["affine"], dtype=np.float64)
        fn = np.asarray(s["fn"])
        new = []
        for o in range(mask.shape[0]):
            node = sympy.Integer(0)
            for i in np.flatnonzero(mask[o]):
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
