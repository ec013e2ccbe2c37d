"""Curvature toolkit: operators on parameter pytrees and algorithms on any symmetric operator.

* :mod:`~kan_jax.curvature.operators`: Hessian, generalised Gauss-Newton, the HSODM augmented
  matrix, sequences of stacked batches, the dense oracle. Each returns ``matvec(v, params,
  *data)`` with parameters and data traced.
* :mod:`~kan_jax.curvature.lanczos`: Lanczos with blocked, selective full reorthogonalisation
  and breakdown restarts; extreme eigenpairs with residuals.
* :mod:`~kan_jax.curvature.stochastic`: Hutchinson and Hutch++ traces, SLQ densities.

:mod:`kan_jax.hessian` composes these for a loss function.
"""
from kan_jax.curvature.lanczos import (
    DEFAULT_BLOCK_SIZE,
    Eigenpairs,
    LanczosResult,
    eigenpairs,
    lanczos_flat,
    lanczos_tree,
    tridiagonal_eigh,
)
from kan_jax.curvature.operators import (
    augmented,
    batch_weights,
    dense,
    flat,
    gauss_newton,
    hessian,
    linearized_hessian,
    over_batches,
    stack_batches,
    tree_dot,
)
from kan_jax.curvature.stochastic import (
    SpectralDensity,
    TraceEstimate,
    gaussian_density,
    hutch_plus_plus,
    hutchinson,
    hutchinson_adaptive,
    slq,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Eigenpairs",
    "LanczosResult",
    "SpectralDensity",
    "TraceEstimate",
    "augmented",
    "batch_weights",
    "dense",
    "eigenpairs",
    "flat",
    "gauss_newton",
    "gaussian_density",
    "hessian",
    "hutch_plus_plus",
    "hutchinson",
    "hutchinson_adaptive",
    "lanczos_flat",
    "lanczos_tree",
    "linearized_hessian",
    "over_batches",
    "slq",
    "stack_batches",
    "tree_dot",
]
