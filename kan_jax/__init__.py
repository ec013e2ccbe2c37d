"""kan-jax: Kolmogorov-Arnold Networks in JAX/Flax, delta-GClip, Hessian and loss-landscape tools."""

from kan_jax import (
    checkpoint,
    curvature,
    data,
    functional,
    hessian,
    interpret,
    io,
    landscape,
    numerics,
    sharding,
    splines,
    symbolic,
    train,
)
from kan_jax.checkpoint import CheckpointError, load_params, save_params
from kan_jax.data import DataError, create_dataset, load_mnist, preprocess_mnist
from kan_jax.functional import KANLayerConfig
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
from kan_jax.hessian import (
    augmented_min_eigenpair,
    exact_spectrum,
    hessian_matrix,
    hessian_trace,
    hvp,
    lanczos,
    min_eigenpair,
    spectral_density,
    top_eigenpairs,
)
from kan_jax.landscape import filter_normalize, interpolate, random_direction, slice_2d
from kan_jax.optim import ScaleByDGClipState, dgclip, gclip, scale_by_dgclip

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "augmented_min_eigenpair",
    "checkpoint",
    "exact_spectrum",
    "filter_normalize",
    "hessian",
    "hessian_matrix",
    "hessian_trace",
    "hvp",
    "interpolate",
    "curvature",
    "interpret",
    "io",
    "lanczos",
    "landscape",
    "load_params",
    "min_eigenpair",
    "numerics",
    "sharding",
    "random_direction",
    "save_params",
    "slice_2d",
    "spectral_density",
    "top_eigenpairs",
    "DataError",
    "KAN",
    "KANLinear",
    "KANLayerConfig",
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
    "symbolic",
    "to_efficient_kan",
    "train",
    "update_grid",
]
