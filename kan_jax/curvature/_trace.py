"""Compile a function once per *code*, not per closure object.

``jax.jit`` keys its cache on static arguments by hash and equality. A user's loss or matvec
is a Python callable, and a fresh ``lambda`` or :func:`functools.partial` over the same code
is a different object, so treating the callable as a static argument recompiles every time.
:func:`split` takes a callable (or any nested structure holding callables) apart into

* a hashable *static* description: code objects, pytree structures, hashable constants and,
  for everything else, the object's identity, and
* the *dynamic* leaves: every array found in ``functools.partial`` arguments, closure cells,
  default values and pytrees,

and :func:`rebuild` puts it back together from (possibly traced) leaves. :func:`jit_call`
runs ``impl(*args, **kwargs)`` under one cached :func:`jax.jit` with the arrays traced: new
data, new parameters or a new closure over the same code reuse the compiled program.
Python scalars stay static (they usually set sizes); pass a JAX array to trace a number.
"""
from __future__ import annotations

import functools
import types
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["split", "rebuild", "jit_call"]

_MAX_DEPTH = 16


class _Identity:
    """Hashable stand-in comparing its object by identity (unhashable or opaque constants)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


class _Leaf:
    """Marker for one array leaf taken out into the dynamic list."""

    __slots__ = ()

    def __hash__(self) -> int:
        return 0x5EAF

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Leaf)


_LEAF = _Leaf()
_EMPTY_CELL = ("<empty cell>",)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _constant(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        return _Identity(x)
    return ("const", type(x), x)


def split(x: Any, _depth: int = 0) -> tuple[Any, list]:
    """``(static, leaves)`` of any value; ``rebuild(static, iter(leaves))`` returns an equivalent value."""
    if _is_array(x):
        return _LEAF, [x]
    if _depth > _MAX_DEPTH:
        return _constant(x), []
    d = _depth + 1
    if isinstance(x, functools.partial):
        fs, fl = split(x.func, d)
        a_s, al = split(tuple(x.args), d)
        ks, kl = split(dict(x.keywords), d)
        return ("partial", fs, a_s, ks), fl + al + kl
    if isinstance(x, types.FunctionType):
        cells = []
        for c in x.__closure__ or ():
            try:
                cells.append(c.cell_contents)
            except ValueError:
                cells.append(_EMPTY_CELL)
        cs, cl = split(tuple(cells), d)
        ds, dl = split(x.__defaults__, d)
        ks, kl = split(x.__kwdefaults__, d)
        static = ("fn", x.__code__, _Identity(x.__globals__), x.__name__, x.__qualname__, cs, ds, ks)
        return static, cl + dl + kl
    if isinstance(x, types.MethodType):
        ss, sl = split(x.__self__, d)
        fs, fl = split(x.__func__, d)
        return ("method", fs, ss), fl + sl
    leaves, treedef = jax.tree_util.tree_flatten(x)
    if treedef.num_leaves == 1 and treedef.num_nodes == 1:  # x is a leaf of its own
        return _constant(x), []
    statics, dynamic = [], []
    for leaf in leaves:
        s, l = split(leaf, d)
        statics.append(s)
        dynamic += l
    return ("tree", treedef, tuple(statics)), dynamic


def rebuild(static: Any, leaves) -> Any:
    """Inverse of :func:`split`: ``leaves`` is an iterator over the (possibly traced) leaves."""
    if isinstance(static, _Leaf):
        return next(leaves)
    if isinstance(static, _Identity):
        return static.obj
    kind = static[0]
    if kind == "const":
        return static[2]
    if kind == "partial":
        func = rebuild(static[1], leaves)
        args = rebuild(static[2], leaves)
        kw = rebuild(static[3], leaves)
        return functools.partial(func, *args, **kw)
    if kind == "fn":
        _, code, glob, name, qualname, cs, ds, ks = static
        cells = rebuild(cs, leaves)
        defaults = rebuild(ds, leaves)
        kwdefaults = rebuild(ks, leaves)
        closure = tuple(types.CellType() if c is _EMPTY_CELL else types.CellType(c) for c in cells) or None
        fn = types.FunctionType(code, glob.obj, name, defaults, closure)
        fn.__kwdefaults__ = kwdefaults
        fn.__qualname__ = qualname
        return fn
    if kind == "method":
        func = rebuild(static[1], leaves)
        return types.MethodType(func, rebuild(static[2], leaves))
    if kind == "tree":
        return jax.tree_util.tree_unflatten(static[1], [rebuild(s, leaves) for s in static[2]])
    raise AssertionError(f"unknown static node {kind!r}")


@functools.partial(jax.jit, static_argnames=("impl", "static"))
def _jitted(impl: Callable, static: Any, leaves: list):
    args, kwargs = rebuild(static, iter(leaves))
    return impl(*args, **kwargs)


def jit_call(impl: Callable, *args: Any, **kwargs: Any) -> Any:
    """``jax.jit(impl)(*args, **kwargs)`` with every array (also inside callables) traced.

    ``impl`` itself must be one long-lived function (it is the cache key); the callables among
    the arguments are keyed by their code and constants, see the module docstring.
    """
    static, leaves = split((args, kwargs))
    return _jitted(impl, static, leaves)
