r"""Polynomial basis families: Chebyshev and Legendre polynomials of ``tanh(x)``.

Both map every input into ``(-1, 1)`` by :math:`t = \tanh x` (ChebyKAN's and jaxKAN's bounded
map) and use the polynomials of degree ``0 .. D`` in ``t``, ``D`` = ``grid_size``, so
``n = D + 1`` bases per input, from their three-term recurrences (finite everywhere, also at
:math:`t = \pm 1`, where ChebyKAN's :math:`\cos(j \arccos t)` has an infinite derivative):

.. math::
    T_0 = 1,\ T_1 = t,\ T_{j+1} = 2t\,T_j - T_{j-1};\qquad
    P_0 = 1,\ P_1 = t,\ (j + 1) P_{j+1} = (2j + 1)\, t P_j - j P_{j-1}.

The degree-0 basis is the edge's constant (jaxKAN's separate bias). The layer has no grid
(``(in, 0)``); grid extension raises the degree exactly (the old coefficients are kept, the new
ones are 0) and lowering it is a least-squares fit on the samples. Initialisation variance
(:func:`kan_jax.layer.init.basis_normal`): :math:`S = \sum_j E\,\phi_j(t)^2` is
:math:`1 + D/2` for Chebyshev polynomials under their weight (:math:`t = \cos\theta`,
:math:`\theta` uniform) and :math:`\sum_{j \le D} 1/(2j + 1)` for Legendre polynomials
(:math:`t` uniform on ``[-1, 1]``).

References:
  SynodicMonth, *ChebyKAN* (Chebyshev KAN layers, PyTorch).
  S. S. Sidharth, "Chebyshev Polynomial-Based Kolmogorov-Arnold Networks", arXiv:2405.07200 (2024).
  M. Abramowitz, I. A. Stegun, *Handbook of Mathematical Functions* (1964), 22.7.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from kan_jax.layer.family import DenseFamily, keep_no_grid, no_grid

__all__ = ["chebyshev_bases", "legendre_bases", "CHEBYSHEV", "LEGENDRE"]

# step(j) = (a, b): p_{j+1} = a t p_j - b p_{j-1}
Step = Callable[[int], tuple[float, float]]


def _recurrence(x: jax.Array, degree: int, step: Step) -> jax.Array:
    t = jnp.tanh(x)
    values = [jnp.ones_like(t), t]
    for j in range(1, degree):
        a, b = step(j)
        values.append(a * t * values[j] - b * values[j - 1])
    return jnp.stack(values[: degree + 1], axis=-1)


def chebyshev_bases(x: jax.Array, degree: int) -> jax.Array:
    """Chebyshev polynomials of the first kind ``T_0 .. T_D`` of ``tanh(x)``.

    Args:
      x: Inputs, any shape.
      degree: ``D >= 0`` (static).

    Returns:
      ``(*x.shape, D + 1)``, in the dtype of ``x``.
    """
    return _recurrence(x, int(degree), lambda j: (2.0, 1.0))


def legendre_bases(x: jax.Array, degree: int) -> jax.Array:
    """Legendre polynomials ``P_0 .. P_D`` of ``tanh(x)``.

    Args:
      x: Inputs, any shape.
      degree: ``D >= 0`` (static).

    Returns:
      ``(*x.shape, D + 1)``, in the dtype of ``x``.
    """
    return _recurrence(x, int(degree), lambda j: ((2 * j + 1) / (j + 1), j / (j + 1)))


def _degree(n: int) -> Optional[int]:
    return n - 1


CHEBYSHEV = DenseFamily(
    name="chebyshev",
    evaluate=lambda x, grid, n: chebyshev_bases(x, n - 1),
    bases_of_size=lambda degree: degree + 1,
    size_of_bases=_degree,
    mean_square=lambda n: 1.0 + (n - 1) / 2.0,
    nested=True,
    make_grid=no_grid,
    adapt_grid=keep_no_grid,
    grid_width=lambda degree: 0,
)

LEGENDRE = DenseFamily(
    name="legendre",
    evaluate=lambda x, grid, n: legendre_bases(x, n - 1),
    bases_of_size=lambda degree: degree + 1,
    size_of_bases=_degree,
    mean_square=lambda n: sum(1.0 / (2 * j + 1) for j in range(n)),
    nested=True,
    make_grid=no_grid,
    adapt_grid=keep_no_grid,
    grid_width=lambda degree: 0,
)
