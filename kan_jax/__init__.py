"""kan-jax: Kolmogorov-Arnold Networks in JAX/Flax, delta-GClip, Hessian and loss-landscape tools."""

from kan_jax import functional, splines
from kan_jax.layers import (
    KAN,
    KANLinear,
    from_efficient_kan,
    refine,
    refine_opt_state,
    regularization_loss,
    to_efficient_kan,
    update_grid,
)

__version__ = "0.1.0"

__all__ = [
    "KAN",
    "KANLinear",
    "from_efficient_kan",
    "functional",
    "refine",
    "refine_opt_state",
    "regularization_loss",
    "splines",
    "to_efficient_kan",
    "update_grid",
]
