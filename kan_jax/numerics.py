"""Small numerical helpers shared by the library's modules (jit, vmap and grad safe)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["safe_divide"]


def safe_divide(numerator: Any, denominator: Any, fill: Any = 0.0) -> jax.Array:
    """``numerator / denominator`` where ``denominator != 0``, else ``fill``; no NaN, also in gradients.

    The denominator is replaced by 1 where it is 0 before dividing (the "double ``where``"), so
    neither the value nor the gradient of the masked branch is ever ``inf``/``NaN``.

    Args:
      numerator: Array broadcastable with ``denominator``.
      denominator: Array broadcastable with ``numerator``.
      fill: The result where ``denominator == 0``.

    Returns:
      The broadcast shape, in the division's dtype.
    """
    denominator = jnp.asarray(denominator)
    nonzero = denominator != 0
    quotient = numerator / jnp.where(nonzero, denominator, jnp.ones_like(denominator))
    return jnp.where(nonzero, quotient, fill)
