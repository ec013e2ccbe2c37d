"""kan-jax: Kolmogorov-Arnold Networks in JAX/Flax, delta-GClip, Hessian and loss-landscape tools."""

from kan_jax import data, functional, splines, train
from kan_jax.data import DataError, create_dataset, load_mnist, preprocess_mnist
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
from kan_jax.optim import ScaleByDGClipState, dgclip, gclip, scale_by_dgclip

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "KAN",
    "KANLinear",
    "ScaleByDGClipState",
    "create_dataset",
    "data",
    "dgclip",
    "from_efficient_kan",
    "functional",
    "gclip",
    "load_mnist",
    "preprocess_mnist",
    "refine",
    "refine_opt_state",
    "regularization_loss",
    "scale_by_dgclip",
    "splines",
    "to_efficient_kan",
    "train",
    "update_grid",
]
