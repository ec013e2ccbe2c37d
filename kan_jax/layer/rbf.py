r"""The Gaussian radial basis family (FastKAN): :math:`\exp(-((x - c_j)/h)^2)` on a grid of centres.

``grid_size`` is the number of centres ``G >= 2``; the grid variable holds them, ``(in, G)``,
uniform over ``grid_range`` at initialisation, and the width is their mean spacing
:math:`h = (c_G - c_1)/(G - 1)` (FastKAN's ``(grid_max - grid_min)/(num_grids - 1)``). A grid
update places the centres as the B-spline knots are placed (the sample quantiles mixed with a
uniform grid over the sample range, :func:`kan_jax.splines.adaptive_grid`) and refits the
coefficients by least squares on the samples. FastKAN's layer normalisation of the inputs is
left to the model. Initialisation variance (:func:`kan_jax.layer.init.basis_normal`):
:math:`S = \sum_j E\,\phi_j(x)^2 \approx \int e^{-2u^2} du = \sqrt{\pi/2}` for ``x`` inside
the centres' range.

References:
  Z. Li, "Kolmogorov-Arnold Networks are Radial Basis Function Networks", arXiv:2405.06721 (2024).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import splines
from kan_jax.layer.family import DenseFamily, host_grid

__all__ = ["gaussian_bases", "RBF"]


def gaussian_bases(x: jax.Array, centres: jax.Array) -> jax.Array:
    r"""Gaussians :math:`\exp(-((x_i - c_{ij})/h_i)^2)`, :math:`h_i` the mean spacing of row ``i``.

    Args:
      x: Inputs, ``(..., in)``.
      centres: ``(in, G)``, ``G >= 2``, increasing along each row.

    Returns:
      ``(..., in, G)``, in the dtype of ``x``.
    """
    centres = centres.astype(x.dtype)
    inverse_width = (centres.shape[-1] - 1) / (centres[:, -1:] - centres[:, :1])  # (in, 1)
    return jnp.exp(-jnp.square((x[..., None] - centres) * inverse_width))


def _uniform_centres(grid_size: int, grid_range: tuple[float, float], in_features: int, dtype: Any) -> jax.Array:
    return host_grid(np.linspace(grid_range[0], grid_range[1], grid_size), in_features, dtype)


def _adapted_centres(x: jax.Array, grid: jax.Array, grid_size: int, grid_eps: float, margin: float) -> jax.Array:
    return splines.adaptive_grid(x, grid_size - 1, 0, grid_eps, margin)  # G points, (in, G)


RBF = DenseFamily(
    name="rbf",
    evaluate=lambda x, grid, n: gaussian_bases(x, grid),
    bases_of_size=lambda centres: centres,
    size_of_bases=lambda n: n,
    mean_square=lambda n: math.sqrt(math.pi / 2.0),
    nested=False,
    make_grid=_uniform_centres,
    adapt_grid=_adapted_centres,
    grid_width=lambda centres: centres,
    min_grid_size=2,
)
