r"""Derivatives of a network's outputs with respect to its input coordinates.

For a pointwise network ``u: (B, in) -> (B, out)`` (row ``b`` of the output depends on row
``b`` of the input only, as for any KAN or MLP without batch statistics) and a coordinate
``c``, the directional derivatives along the one-hot tangent ``e_c`` in every row are the
partials at every point at once:

.. math::
    \partial_c u = \frac{d}{ds} u(x + s e_c)\Big|_{s=0}, \qquad
    \partial_c^2 u = \frac{d^2}{ds^2} u(x + s e_c)\Big|_{s=0}.

:func:`input_derivatives` takes any network and gets both from forward mode, a Jacobian-vector product nested in another (``jax.jvp`` of
``jax.jvp``), vmapped over the coordinates; the primal pass is shared by all of them. No
per-point Jacobian or Hessian is formed, so the cost grows with the number of coordinates, not
with the batch's Hessians, and a parameter gradient of a loss on the result is one reverse
pass over the whole program. For B-spline layers the result is exact on every spline
strategy: the bases are piecewise polynomials whose interval index does not move under an
infinitesimal shift, so automatic differentiation of their recursion gives the analytic
derivative (a lower-order spline), at knots the one-sided derivative from the right.

:func:`kan_input_derivatives` does the same for a :class:`kan_jax.KAN` in one pass that
carries value, tangents and second-order tangents through the layers together: a layer
``y_o = sum_i φ_io(z_i)`` maps them by

.. math::
    \dot y = \sum_i φ'_{io}(z_i)\, \dot z_i, \qquad
    \ddot y = \sum_i φ''_{io}(z_i)\, \dot z_i^2 + φ'_{io}(z_i)\, \ddot z_i ,

with the spline derivatives from the lower-order bases,
``B'_{j,p} = p (B_{j,p-1} / (t_{j+p} − t_j) − B_{j+1,p-1} / (t_{j+p+1} − t_{j+1}))``, and all
rows (value, every tangent) through one matrix product per branch.

References:
  M. Raissi, P. Perdikaris, G. E. Karniadakis, "Physics-informed neural networks",
  J. Comput. Phys. 378 (2019).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from kan_jax import splines
from kan_jax.layer import scaled_spline_weight
from kan_jax.layer.bspline import layer_spline_order
from kan_jax.numerics import safe_divide

__all__ = ["InputDerivatives", "input_derivatives", "kan_input_derivatives"]

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
    x = _check_points(x)
    first, second, directions = _requests(first, second, x.shape[1])

    def f(z: Array) -> Array:
        y = fn(z)
        return y[:, None] if y.ndim == 1 else y

    def along(e: Array) -> Array:
        return jax.jvp(f, (x,), (e,))[1]

    def twice_along(e: Array) -> tuple[Array, Array]:
        (_, d1), (_, d2) = jax.jvp(lambda z: jax.jvp(f, (z,), (e,)), (x,), (e,))
        return d1, d2

    value = f(x)
    e = _tangents(directions, x, x.dtype)
    d1, d2 = (jax.vmap(twice_along)(e[:len(second)]) if second
              else (jnp.zeros((0, *value.shape), value.dtype),) * 2)
    if len(directions) > len(second):
        d1 = jnp.concatenate([d1, jax.vmap(along)(e[len(second):])])
    return _collect(value, d1, d2, first, directions)


def _requests(first: Sequence[int], second: Sequence[int], num_inputs: int) -> tuple[tuple[int, ...], ...]:
    """Checked ``first`` and ``second``, and the tangent directions: ``second``, then the rest of ``first``."""
    first = _coords("first", first, num_inputs)
    second = _coords("second", second, num_inputs)
    return first, second, second + tuple(c for c in first if c not in second)


def _tangents(directions: tuple[int, ...], x: Array, dtype: Any) -> Array:
    """One-hot tangents in every row, ``(len(directions), B, in)``."""
    one_hot = jax.nn.one_hot(jnp.array(directions, jnp.int32), x.shape[1], dtype=dtype)
    return jnp.broadcast_to(one_hot[:, None, :], (len(directions), *x.shape))


def _collect(value: Array, d1: Array, d2: Array, first: tuple[int, ...], directions: tuple[int, ...]) -> InputDerivatives:
    """:class:`InputDerivatives` from ``d1`` ``(len(directions), B, out)`` and ``d2`` ``(len(second), B, out)``."""
    column = {c: d1[i] for i, c in enumerate(directions)}
    first_out = (jnp.stack([column[c] for c in first], axis=-1) if first
                 else jnp.zeros((*value.shape, 0), value.dtype))
    return InputDerivatives(value, first_out, jnp.moveaxis(d2, 0, -1))


def _check_points(x: Array) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be points of shape (B, in) and a floating dtype, got {x.shape} {x.dtype}")
    return x


def _differentiate(lower: Array, grid: Array, order: int) -> Array:
    """Derivatives of the order-``order`` bases from values ``(..., in, m + 1)`` of order - 1."""
    m = lower.shape[-1] - 1
    left = safe_divide(1.0, grid[:, order:order + m] - grid[:, :m])
    right = safe_divide(1.0, grid[:, order + 1:order + 1 + m] - grid[:, 1:1 + m])
    return order * (lower[..., :-1] * left - lower[..., 1:] * right)


def _bases_and_derivatives(x: Array, grid: Array, k: int) -> tuple[Array, Array, Array]:
    """B-spline bases of order ``k`` and their first and second derivatives, each ``(B, in, n)``.

    Cox-de Boor vectorised over the bases, keeping the orders ``k - 2`` and ``k - 1`` on the way.
    """
    x = jnp.clip(x, grid[:, 0] - 1, grid[:, -1] + 1)[..., None]  # no 0 · inf far outside the grid
    levels = [((x >= grid[:, :-1]) & (x < grid[:, 1:])).astype(x.dtype)]
    for p in range(1, k + 1):
        b, m = levels[-1], levels[-1].shape[-1] - 1
        left = (x - grid[:, :m]) * safe_divide(1.0, grid[:, p:p + m] - grid[:, :m])
        right = (grid[:, p + 1:p + 1 + m] - x) * safe_divide(1.0, grid[:, p + 1:p + 1 + m] - grid[:, 1:1 + m])
        levels.append(left * b[..., :-1] + right * b[..., 1:])
    b0 = levels[k]
    b1 = _differentiate(levels[k - 1], grid, k) if k >= 1 else jnp.zeros_like(b0)
    b2 = (_differentiate(_differentiate(levels[k - 2], grid, k - 1), grid, k) if k >= 2
          else jnp.zeros_like(b0))
    return b0, b1, b2


def kan_input_derivatives(
    model: Any,
    variables: Mapping[str, Any],
    x: Array,
    first: Sequence[int] = (),
    second: Sequence[int] = (),
) -> InputDerivatives:
    r""":func:`input_derivatives` of a :class:`kan_jax.KAN`, value and tangents in one pass.

    Args:
      model: A :class:`kan_jax.KAN` (its layers ``layers_0, layers_1, ...`` are read from
        ``variables``; its ``base_activation`` is differentiated by forward mode).
      variables: ``{"params": ..., "grid": ...}`` of ``model``.
      x: Points, ``(B, in)``, a floating dtype.
      first: Coordinates ``c`` whose ``∂u/∂x_c`` is wanted.
      second: Coordinates ``c`` whose ``∂²u/∂x_c²`` is wanted.

    Returns:
      :class:`InputDerivatives`, equal to ``input_derivatives(lambda z: model.apply(variables,
      z), x, first, second)`` up to rounding.

    Raises:
      ValueError: As :func:`input_derivatives`, or if ``model`` is not a KAN.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kan_jax import KAN
      >>> from kan_jax.pde import kan_input_derivatives
      >>> model = KAN([2, 3, 1])
      >>> x = jnp.zeros((5, 2))
      >>> d = kan_input_derivatives(model, model.init(jax.random.key(0), x), x, first=(0,), second=(1,))
      >>> d.first.shape, d.second.shape
      ((5, 1, 1), (5, 1, 1))
    """
    widths = getattr(model, "layers_hidden", None)
    if widths is None:
        raise ValueError(f"model must be a kan_jax.KAN (with layers_hidden), got {type(model).__name__}")
    x = _check_points(x)
    if x.shape[1] != widths[0]:
        raise ValueError(f"x must have {widths[0]} coordinates (layers_hidden[0]), got shape {x.shape}")
    first, second, directions = _requests(first, second, x.shape[1])
    config = model.config
    act = config.base_activation
    dtype = config.dtype if config.dtype is not None else jnp.result_type(x, variables["params"]["layers_0"]["base_weight"])
    z0 = x.astype(dtype)
    z1 = _tangents(directions, x, dtype)
    z2 = jnp.zeros((len(second), *x.shape), dtype)
    d2 = len(second)
    for i in range(len(widths) - 1):
        p = variables["params"][f"layers_{i}"]
        grid = variables["grid"][f"layers_{i}"]["grid"].astype(dtype)
        k = layer_spline_order(p, grid)
        ones = jnp.ones_like(z0)
        a0, a1 = jax.jvp(act, (z0,), (ones,))
        a2 = jax.jvp(lambda z: jax.jvp(act, (z,), (jnp.ones_like(z),))[1], (z0,), (ones,))[1]
        b0, b1, b2 = _bases_and_derivatives(z0, grid, k)
        sq = z1[:d2] ** 2
        base_rows = jnp.concatenate([a0[None], a1 * z1, a2 * sq + a1 * z2])            # (R, B, in)
        spline_rows = jnp.concatenate([b0[None], b1 * z1[..., None],
                                       b2 * sq[..., None] + b1 * z2[..., None]])     # (R, B, in, n)
        w_s = scaled_spline_weight(p).astype(dtype)
        rows, batch, width, n = spline_rows.shape
        y = (jnp.dot(base_rows.reshape(rows * batch, width), p["base_weight"].astype(dtype).T)
             + jnp.dot(spline_rows.reshape(rows * batch, width * n), w_s.reshape(width * n, -1)))
        y = y.reshape(rows, batch, -1)
        z0, z1, z2 = y[0], y[1:1 + len(directions)], y[1 + len(directions):]
    return _collect(z0, z1, z2, first, directions)
