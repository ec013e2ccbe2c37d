r"""Derivatives of a network's outputs with respect to its input coordinates.

For a pointwise network ``u: (B, in) -> (B, out)`` (row ``b`` of the output depends on row
``b`` of the input only, as for any KAN or MLP without batch statistics) and a coordinate
``c``, the directional derivatives along the one-hot tangent ``e_c`` in every row are the
partials at every point at once:

.. math::
    \partial_c u = \frac{d}{ds} u(x + s e_c)\Big|_{s=0}, \qquad
    \partial_c^2 u = \frac{d^2}{ds^2} u(x + s e_c)\Big|_{s=0}.

Both come from forward mode, a Jacobian-vector product nested in another (``jax.jvp`` of
``jax.jvp``), vmapped over the coordinates; the primal pass is shared by all of them. No
per-point Jacobian or Hessian is formed, so the cost grows with the number of coordinates, not
with the batch's Hessians, and a parameter gradient of a loss on the result is one reverse
pass over the whole program. For B-spline layers the result is exact on every spline
strategy: the bases are piecewise polynomials whose interval index does not move under an
infinitesimal shift, so automatic differentiation of their recursion gives the analytic
derivative (a lower-order spline), at knots the one-sided derivative from the right.

References:
  M. Raissi, P. Perdikaris, G. E. Karniadakis, "Physics-informed neural networks",
  J. Comput. Phys. 378 (2019).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

__all__ = ["InputDerivatives", "input_derivatives"]

Array = jax.Array


class InputDerivatives(NamedTuple):
    """Value and partial derivatives of a network's outputs at a batch of points.

    Attributes:
      value: ``u``, ``(B, out)``.
      first: ``∂u/∂x_c`` for ``c`` in ``first``, ``(B, out, len(first))``.
      second: ``∂²u/∂x_c²`` for ``c`` in ``second``, ``(B, out, len(second))``.
    """

    value: Array
    first: Array
    second: Array


def _coords(name: str, coords: Sequence[int], num_inputs: int) -> tuple[int, ...]:
    coords = tuple(coords)
    if any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_inputs for c in coords):
        raise ValueError(f"{name} must list input coordinates in [0, {num_inputs}), got {coords!r}")
    if len(set(coords)) != len(coords):
        raise ValueError(f"{name} lists a coordinate twice: {coords!r}")
    return coords


def input_derivatives(
    fn: Callable[[Array], Array],
    x: Array,
    first: Sequence[int] = (),
    second: Sequence[int] = (),
) -> InputDerivatives:
    r"""Outputs of ``fn`` at ``x`` and their first and pure second partials in chosen coordinates.

    Args:
      fn: A pointwise network ``(B, in) -> (B, out)`` (or ``(B,)``, read as one output), e.g.
        ``lambda z: model.apply(variables, z)``; it is traced, so it may close over
        parameters that a gradient is taken with respect to.
      x: Points, ``(B, in)``, a floating dtype.
      first: Coordinates ``c`` whose ``∂u/∂x_c`` is wanted.
      second: Coordinates ``c`` whose ``∂²u/∂x_c²`` is wanted (their first partials come with
        them at no extra cost).

    Returns:
      :class:`InputDerivatives` with ``first[..., i]`` the partial in ``first[i]`` and
      ``second[..., i]`` the second partial in ``second[i]``.

    Raises:
      ValueError: If ``x`` is not ``(B, in)`` of a floating dtype, or a coordinate is out of
        range or repeated.

    Example:
      >>> import jax.numpy as jnp
      >>> from kan_jax.pde import input_derivatives
      >>> u = lambda z: jnp.exp(z[:, :1]) * z[:, 1:] ** 2        # u(t, x) = exp(t) x²
      >>> d = input_derivatives(u, jnp.array([[0.0, 3.0]]), first=(0, 1), second=(1,))
      >>> d.first[0, 0].tolist(), d.second[0, 0].tolist()        # (u_t, u_x), u_xx
      ([9.0, 6.0], [2.0])
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be points of shape (B, in) and a floating dtype, got {x.shape} {x.dtype}")
    first = _coords("first", first, x.shape[1])
    second = _coords("second", second, x.shape[1])
    only_first = tuple(c for c in first if c not in second)

    def f(z: Array) -> Array:
        y = fn(z)
        return y[:, None] if y.ndim == 1 else y

    def tangents(coords: tuple[int, ...]) -> Array:  # (D, B, in), one-hot in every row
        return jnp.broadcast_to(jax.nn.one_hot(jnp.array(coords), x.shape[1], dtype=x.dtype)[:, None, :],
                                (len(coords), *x.shape))

    def along(e: Array) -> tuple[Array, Array]:
        return jax.jvp(f, (x,), (e,))

    def twice_along(e: Array) -> tuple[Array, Array]:
        (_, d1), (_, d2) = jax.jvp(lambda z: jax.jvp(f, (z,), (e,)), (x,), (e,))
        return d1, d2

    value = f(x)
    out = value.shape[1]
    empty = jnp.zeros((x.shape[0], out, 0), value.dtype)
    d1_second, d2 = (jax.vmap(twice_along)(tangents(second)) if second
                     else (jnp.zeros((0, *value.shape), value.dtype),) * 2)
    d1_only = jax.vmap(lambda e: along(e)[1])(tangents(only_first)) if only_first else None
    columns = {c: d1_second[i] for i, c in enumerate(second)}
    columns.update({c: d1_only[i] for i, c in enumerate(only_first)})
    first_out = jnp.stack([columns[c] for c in first], axis=-1) if first else empty
    second_out = jnp.moveaxis(d2, 0, -1) if second else empty
    return InputDerivatives(value, first_out, second_out)
