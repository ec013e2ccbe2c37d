r"""The Fourier basis family: :math:`\cos(jx)` and :math:`\sin(jx)`, ``j = 1 .. G`` (FourierKAN).

``grid_size`` is the number of frequencies ``G``; the ``n = 2G`` bases of an input are stored
interleaved, ``cos(x), sin(x), cos(2x), sin(2x), ...``, so raising ``G`` appends bases and grid
extension is exact (the old coefficients kept, the new ones 0; lowering ``G`` is a
least-squares fit on the samples). The inputs are not rescaled: the edge functions are
:math:`2\pi`-periodic, as FourierKAN's; a constant term is left to the other edges and the
base branch. The layer has no grid (``(in, 0)``). Initialisation variance
(:func:`kan_jax.layer.init.basis_normal`): :math:`S = \sum_j E\,\phi_j(x)^2 = G` for ``x``
uniform over a period.

References:
  GistNoesis, *FourierKAN* (Fourier KAN layers, PyTorch).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from kan_jax.layer.family import DenseFamily, keep_no_grid, no_grid

__all__ = ["fourier_bases", "FOURIER"]


def fourier_bases(x: jax.Array, frequencies: int) -> jax.Array:
    r"""``cos(j x), sin(j x)`` for ``j = 1 .. G``, interleaved.

    Args:
      x: Inputs, any shape.
      frequencies: ``G >= 1`` (static).

    Returns:
      ``(*x.shape, 2 G)``: ``[..., 2 (j - 1)]`` is ``cos(j x)``, ``[..., 2 j - 1]`` is ``sin(j x)``,
      from ``cos x`` and ``sin x`` by the Chebyshev recurrences :math:`\cos jx = T_j(\cos x)`,
      :math:`\sin jx = \sin x\, U_{j-1}(\cos x)` (two transcendental functions per input; the
      rounding error grows about linearly with ``j``).
    """
    g = int(frequencies)
    c, s = jnp.cos(x), jnp.sin(x)
    cos_j, u = [c, 2 * c * c - 1], [jnp.ones_like(c), 2 * c]  # T_j(c) = cos(j x), U_j(c) sin x = sin((j + 1) x)
    for _ in range(2, g):
        cos_j.append(2 * c * cos_j[-1] - cos_j[-2])
        u.append(2 * c * u[-1] - u[-2])
    pairs = jnp.stack([jnp.stack(cos_j[:g], axis=-1), s[..., None] * jnp.stack(u[:g], axis=-1)], axis=-1)
    return pairs.reshape(*x.shape, 2 * g)


FOURIER = DenseFamily(
    name="fourier",
    evaluate=lambda x, grid, n: fourier_bases(x, n // 2),
    bases_of_size=lambda frequencies: 2 * frequencies,
    size_of_bases=lambda n: n // 2 if n % 2 == 0 else None,
    mean_square=lambda n: n / 2.0,
    nested=True,
    make_grid=no_grid,
    adapt_grid=keep_no_grid,
    grid_width=lambda frequencies: 0,
)
