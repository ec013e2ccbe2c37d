"""Curvature of a loss: operators, algorithms on any symmetric operator, questions, landscapes.

``from kan_jax import curvature as cv`` gives one API in three layers, shaped like matfree:

* **Operators** (:mod:`~kan_jax.curvature.operators`, :mod:`~kan_jax.curvature.loss`): built
  from the code of a loss or model, returning ``matvec(v, params, *data)`` with parameters and
  data traced: :func:`hessian`, :func:`gauss_newton`, :func:`over_batches`, :func:`augmented`,
  :func:`linearized_hessian`, :func:`dense`, :func:`flat`; bound to a point:
  :func:`hessian_operator`, :func:`augmented_operator`.
* **Algorithms** (:mod:`~kan_jax.curvature.krylov`, :mod:`~kan_jax.curvature.stochastic`):
  built once from their sizes, then applied to any ``matvec(v, *args)`` with traced ``args``:
  ``cv.lanczos(num_steps)(matvec, v0, *args)``, :func:`extreme_eigenpairs`,
  :func:`hutchinson`, :func:`hutchinson_adaptive`, :func:`hutch_plus_plus`, :func:`slq`.
* **Questions** about a loss, each one compiled program (:mod:`~kan_jax.curvature.analysis`,
  :mod:`~kan_jax.curvature.oracle`): :func:`hvp`, :func:`dataset_hvp`,
  :func:`top_eigenpairs`, :func:`min_eigenpair`, :func:`augmented_min_eigenpair`,
  :func:`hessian_trace`, :func:`spectral_density`, and the dense oracles
  :func:`hessian_matrix`, :func:`exact_spectrum`.

Loss landscapes (:mod:`~kan_jax.curvature.landscape`): :func:`interpolate`, :func:`slice_2d`,
:func:`random_direction`, :func:`filter_normalize`. Plots
(:mod:`~kan_jax.curvature.plots`, matplotlib loaded on first call):
:func:`plot_spectral_density`, :func:`save_spectral_density_pages`.

Names: an operator is named by its matrix (``cv.hessian(loss)`` is the Hessian's matvec), an
algorithm by its method (``cv.lanczos``, ``cv.slq``), a question by its answer
(``cv.hessian_matrix``, ``cv.hessian_trace``, ``cv.top_eigenpairs``).
"""
from kan_jax.curvature.analysis import (
    AugmentedEigenpair,
    Eigenpair,
    augmented_min_eigenpair,
    dataset_hvp,
    hessian_trace,
    hvp,
    min_eigenpair,
    spectral_density,
    top_eigenpairs,
)
from kan_jax.curvature.krylov import (
    DEFAULT_BLOCK_SIZE,
    Eigenpairs,
    LanczosResult,
    extreme_eigenpairs,
    lanczos,
    tridiagonal_eigh,
)
from kan_jax.curvature.landscape import (
    filter_axis,
    filter_normalize,
    interpolate,
    interpolate_params,
    random_direction,
    slice_2d,
)
from kan_jax.curvature.loss import augmented_operator, hessian_operator, num_params, total_loss
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
from kan_jax.curvature.oracle import DEFAULT_MAX_PARAMS, exact_spectrum, hessian_matrix
from kan_jax.curvature.plots import plot_spectral_density, save_spectral_density_pages
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
    "DEFAULT_BLOCK_SIZE", "DEFAULT_MAX_PARAMS", "AugmentedEigenpair", "Eigenpair", "Eigenpairs", "LanczosResult",
    "SpectralDensity", "TraceEstimate",
    # operators
    "augmented", "augmented_operator", "batch_weights", "dense", "flat", "gauss_newton", "hessian", "hessian_operator",
    "linearized_hessian", "num_params", "over_batches", "stack_batches", "total_loss", "tree_dot",
    # algorithms
    "extreme_eigenpairs", "gaussian_density", "hutch_plus_plus", "hutchinson", "hutchinson_adaptive", "lanczos", "slq",
    "tridiagonal_eigh",
    # questions
    "augmented_min_eigenpair", "dataset_hvp", "exact_spectrum", "hessian_matrix", "hessian_trace", "hvp",
    "min_eigenpair", "spectral_density", "top_eigenpairs",
    # landscapes and plots
    "filter_axis", "filter_normalize", "interpolate", "interpolate_params", "plot_spectral_density", "random_direction",
    "save_spectral_density_pages", "slice_2d",
]
