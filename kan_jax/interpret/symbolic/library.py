"""The symbolic function library: named 1-D functions as JAX/SymPy pairs.

An edge snapped to a library function ``f`` computes ``c f(a x + b) + d``. Each entry holds
a JAX function safe everywhere the fits evaluate it (finite values and gradients), the SymPy
function used in formulas (SymPy, the ``interpret`` extra, is imported only when a formula is
built), a complexity used to prefer simple functions, and optionally a canonical form of the
constants ``(a, b, c, d)`` (equivalent constants that print well, e.g. ``a = 1`` for ``x^n``).

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1;
    the library of pykan's tutorial, https://github.com/KindXiaoming/pykan.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from kan_jax._optional import require

__all__ = ["SymbolicFunction", "LIBRARY", "DEFAULT_LIB", "make_function", "get_library"]


@dataclasses.dataclass(frozen=True, eq=False)
class SymbolicFunction:
    """A named 1-D function as a JAX/SymPy pair.

    Attributes:
        name: Name used by :func:`kan_jax.interpret.symbolic.fix_symbolic` and in reports.
        jax: ``jnp`` function of an array, safe everywhere (finite values and gradients, e.g.
            the log clipped below ``1e-8``), used for fitting and training.
        sympy: The same function of a SymPy expression, used in formulas.
        complexity: Integer cost used to prefer simple functions (pykan's scale: ``x`` 1,
            ``x^2`` 2, ...).
        canonical: Optional map ``(a, b, c, d) -> (a, b, c, d)`` to an equivalent
            parameterisation (e.g. ``a = 1`` for ``x^n``), applied after fitting.
    """

    name: str
    jax: Callable[[jax.Array], jax.Array]
    sympy: Callable[[Any], Any]
    complexity: int = 2
    canonical: Optional[Callable[..., tuple]] = None

    def __repr__(self) -> str:
        return f"SymbolicFunction({self.name!r})"


_EPS = 1e-8


def _sympy(name: str) -> Callable[[Any], Any]:
    """``sympy.<name>``, resolved when first called (SymPy stays unimported until then)."""

    def fn(u: Any) -> Any:
        return getattr(require("sympy", "interpret"), name)(u)

    fn.__name__ = f"sympy_{name}"
    return fn


def _gaussian_sympy(u: Any) -> Any:
    return _sympy("exp")(-(u**2))


def _power_canonical(n: int) -> Callable[..., tuple]:
    """``c (a x + b)^n + d = (c a^n) (x + b/a)^n + d``: the form with ``a = 1``."""

    def canon(a, b, c, d):
        ok = jnp.abs(a) > 1e-12
        sa = jnp.where(ok, a, 1.0)
        return (jnp.where(ok, 1.0, a), jnp.where(ok, b / sa, b), jnp.where(ok, c * sa**n, c), d)

    return canon


def _linear_canonical(a, b, c, d):
    """``c (a x + b) + d = (c a) x + (c b + d)``."""
    return (jnp.ones_like(a), jnp.zeros_like(b), c * a, c * b + d)


def _periodic_canonical(even: bool) -> Callable[..., tuple]:
    """For sin (odd) or cos (even), with ``f(u + pi) = -f(u)``: ``a > 0`` and ``|b| <= pi/2``."""

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
        SymbolicFunction("exp", jnp.exp, _sympy("exp"), 2),
        SymbolicFunction("log", lambda u: jnp.log(jnp.maximum(u, _EPS)), _sympy("log"), 2),
        SymbolicFunction("sqrt", lambda u: jnp.sqrt(jnp.maximum(u, _EPS)), _sympy("sqrt"), 2),
        SymbolicFunction("tanh", jnp.tanh, _sympy("tanh"), 3),
        SymbolicFunction("sin", jnp.sin, _sympy("sin"), 2, _periodic_canonical(even=False)),
        SymbolicFunction("cos", jnp.cos, _sympy("cos"), 2, _periodic_canonical(even=True)),
        SymbolicFunction("abs", jnp.abs, _sympy("Abs"), 3),
        SymbolicFunction("gaussian", lambda u: jnp.exp(-(u**2)), _gaussian_sympy, 3),
    )
}
"""The built-in functions by name."""

DEFAULT_LIB: tuple[str, ...] = ("x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs")
"""The library of pykan's tutorial."""


def make_function(
    name: str,
    jax_fn: Callable[[jax.Array], jax.Array],
    sympy_fn: Callable[[Any], Any],
    complexity: int = 2,
) -> SymbolicFunction:
    """A user's own library entry from a JAX function and the matching SymPy function.

    The JAX function must be finite (with finite gradients) wherever the grid search may
    evaluate it.

    Args:
        name: The function's name.
        jax_fn: Its ``jnp`` implementation.
        sympy_fn: Its SymPy implementation.
        complexity: Its cost in the selection (see :class:`SymbolicFunction`).

    Returns:
        The library entry.

    Examples:
        >>> import jax.numpy as jnp, sympy
        >>> from kan_jax.interpret.symbolic import make_function
        >>> make_function("sinh", jnp.sinh, sympy.sinh, 3)
        SymbolicFunction('sinh')
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(jax_fn) or not callable(sympy_fn):
        raise ValueError(
            f"jax_fn and sympy_fn must be callables, got {type(jax_fn).__name__} and {type(sympy_fn).__name__}"
        )
    return SymbolicFunction(name, jax_fn, sympy_fn, int(complexity))


def get_library(lib: Optional[Sequence[Union[str, SymbolicFunction]]] = None) -> tuple[SymbolicFunction, ...]:
    """Resolve names (keys of :data:`LIBRARY`) and :class:`SymbolicFunction` objects to a tuple.

    Args:
        lib: Names and functions; ``None`` for :data:`DEFAULT_LIB`.

    Returns:
        The functions, in order.

    Raises:
        ValueError: If a name is unknown or the library is empty.
    """
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
