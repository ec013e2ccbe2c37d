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
    """``cos(j x), sin(j x)`` for ``j = 1 .. G``, interleaved.

    Args:
      x: Inputs, any shape.
      frequencies: ``G >= 1`` (static).

    Returns:
      ``(*x.shape, 2 G)``: ``[..., 2 (j - 1)]`` is ``cos(j x)``, ``[..., 2 j - 1]`` is ``sin(j x)``.
    """
    jx = x[..., None] * jnp.arange(1, int(frequencies) + 1, dtype=x.dtype)
    return jnp.stack([jnp.cos(jx), jnp.sin(jx)], axis=-1).reshape(*x.shape, 2 * int(frequencies))


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
