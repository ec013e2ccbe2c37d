"""Physics-informed training pieces, for any network and any equation.

* :mod:`~kan_jax.pde.derivatives`: :func:`input_derivatives`, first and second partials of a
  network's outputs in chosen input coordinates at a batch of points (nested forward mode).
* :mod:`~kan_jax.pde.collocation`: :func:`sobol_points`, :func:`grid_points`,
  :func:`resample` (residual-based resampling), :func:`resampling_probabilities`.
* :mod:`~kan_jax.pde.attention`: :func:`rba_update`, :func:`rba_weighted_mse`
  (residual-based attention weights).
* :mod:`~kan_jax.pde.transition`: :func:`transition_opt_state` (the optimiser state carried
  across a grid extension, moments resampled onto the finer grid), :func:`resample_moments`,
  :func:`interpolation_matrix`.

The library knows no particular equation: a residual is written by the user from
:func:`input_derivatives`, and grid extension during training is
:func:`kan_jax.layer.refine` with :func:`transition_opt_state`.

References:
  G. E. Karniadakis et al., "Physics-informed machine learning", Nat. Rev. Phys. 3 (2021).
"""
from kan_jax.pde.attention import rba_update, rba_weighted_mse
from kan_jax.pde.collocation import grid_points, resample, resampling_probabilities, sobol_points
from kan_jax.pde.derivatives import InputDerivatives, input_derivatives, kan_input_derivatives
from kan_jax.pde.transition import interpolation_matrix, resample_moments, transition_opt_state

__all__ = [
    "InputDerivatives",
    "grid_points",
    "input_derivatives",
    "interpolation_matrix",
    "kan_input_derivatives",
    "rba_update",
    "rba_weighted_mse",
    "resample",
    "resample_moments",
    "resampling_probabilities",
    "sobol_points",
    "transition_opt_state",
]
