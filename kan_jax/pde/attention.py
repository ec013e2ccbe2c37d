r"""Residual-based attention: per-point weights of a physics-informed loss, grown with the residual.

Each collocation point ``i`` carries a weight ``λ_i`` (start: 1 or 0) updated every step from
the current residuals,

.. math::
    \lambda_i \leftarrow \gamma\, \lambda_i + \eta\, \frac{|r_i|}{\max_j |r_j|},

and the loss is ``mean_i (λ_i r_i)²``; the weights are not trained, they are state (like an
optimiser's moments), bounded by ``η / (1 − γ)``. Points that stay badly resolved gain weight,
so the optimiser does not settle for a loss dominated by the easy part of the domain.

References:
  S. J. Anagnostopoulos, J. D. Toscano, N. Stergiopulos, G. E. Karniadakis, "Residual-based
  attention in physics-informed neural networks", Comput. Methods Appl. Mech. Eng. 421 (2024).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["rba_update", "rba_weighted_mse"]


def rba_update(weights: jax.Array, residuals: jax.Array, decay: float = 0.999, learning_rate: float = 0.01) -> jax.Array:
    """One update ``λ ← γ λ + η |r| / max |r|`` of the attention weights.

    Args:
      weights: ``λ``, ``(N,)``.
      residuals: ``r`` at the same points, ``(N,)``; not differentiated.
      decay: ``γ`` in ``[0, 1)``.
      learning_rate: ``η >= 0``.

    Returns:
      The new weights, ``(N,)``, in the dtype of ``weights``.

    Raises:
      ValueError: If the shapes differ or ``decay``/``learning_rate`` are out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> from kan_jax.pde import rba_update
      >>> rba_update(jnp.ones(3), jnp.array([0.0, -1.0, 2.0]), decay=0.5, learning_rate=1.0).tolist()
      [0.5, 1.0, 1.5]
    """
    if weights.shape != residuals.shape:
        raise ValueError(f"weights and residuals must have the same shape, got {weights.shape} and {residuals.shape}")
    if isinstance(decay, (int, float)) and not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if isinstance(learning_rate, (int, float)) and not learning_rate >= 0:
        raise ValueError(f"learning_rate must be >= 0, got {learning_rate}")
    r = jnp.abs(jax.lax.stop_gradient(residuals))
    top = jnp.max(r)
    scaled = r / jnp.where(top > 0, top, 1)
    return (decay * weights + learning_rate * scaled).astype(weights.dtype)


def rba_weighted_mse(weights: jax.Array, residuals: jax.Array) -> jax.Array:
    """``mean_i (λ_i r_i)²``, the weights held constant.

    Args:
      weights: ``λ``, ``(N,)``.
      residuals: ``r``, ``(N,)``.

    Returns:
      The scalar loss.
    """
    return jnp.mean((jax.lax.stop_gradient(weights) * residuals) ** 2)
