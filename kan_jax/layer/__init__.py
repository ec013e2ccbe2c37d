"""One KAN layer: configuration, basis family, initialisation, forward pass, grid update, fronts.

Modules, one concept each:

* :mod:`~kan_jax.layer.config`: :class:`KANLayerConfig`, the spline strategies and their
  cost rule (:class:`StrategyThresholds`, :func:`choose_spline_strategy`),
  :data:`PARAM_OUTPUT_AXIS`;
* :mod:`~kan_jax.layer.bspline`: the B-spline basis family (the spline branch and its
  formulations, per-edge outputs, the refit of a grid update);
* :mod:`~kan_jax.layer.family`, :mod:`~kan_jax.layer.polynomial`, :mod:`~kan_jax.layer.fourier`,
  :mod:`~kan_jax.layer.rbf`: the Chebyshev, Legendre, Fourier and Gaussian RBF families;
* :mod:`~kan_jax.layer.bases`: the families by name, :func:`basis_family`;
* :mod:`~kan_jax.layer.init`: named initialisers and :func:`init_layer`;
* :mod:`~kan_jax.layer.apply`: :func:`layer_apply`, :func:`layer_regularization_loss`;
* :mod:`~kan_jax.layer.grid`: :func:`layer_update_grid` (grid update and refinement);
* :mod:`~kan_jax.layer.linen` and :mod:`~kan_jax.layer.nnx`: the Flax Linen and NNX modules;
* :mod:`~kan_jax.layer.efficient_kan`: conversion to and from efficient-kan's ``state_dict``.

A layer is a parameter dict and a knot grid, ``base_weight`` ``(out, in)``, ``spline_weight``
``(in, n, out)``, optionally ``spline_scaler`` ``(in, out)``, and ``grid`` ``(in, M)``; the
pure functions take them as arguments and the fronts store them (the grid as a non-parameter
variable).

**Basis families.** ``KANLayerConfig(basis=...)`` picks the edges' bases: ``"bspline"`` (the
default, :mod:`~kan_jax.layer.bspline`, plus its coefficient initialiser
:func:`~kan_jax.layer.init.init_spline_weight`), ``"chebyshev"`` and ``"legendre"``
(:mod:`~kan_jax.layer.polynomial`), ``"fourier"`` (:mod:`~kan_jax.layer.fourier`) and ``"rbf"``
(:mod:`~kan_jax.layer.rbf`), the last four built on :mod:`~kan_jax.layer.family`.
:func:`basis_family` (:mod:`~kan_jax.layer.bases`) gives the object through which the rest of
the package uses a family::

    layer_spline_order(params, grid) -> int            # shape check, the family's order
    spline_branch(params, grid, x, strategy, thresholds) -> (B, out)
    edge_outputs(params, grid, x) -> (B, in, out)      # per edge; summed over in: the branch
    refit_spline_weight(params, grid, x, grid_size, grid_eps, margin) -> (weight, grid)

with ``x`` of shape ``(B, in)``, plus its sizes (``num_bases``, ``layer_grid_size``,
``initial_grid``, ``check_grid_size``, ``nested``); its coefficients are initialised by
:func:`~kan_jax.layer.init.coefficient_initializer`. Every family has the parameters above
(with ``n`` the family's bases per input) and the same base branch.

:func:`edge_outputs` ``(params, grid, x, basis="bspline") -> Array``:
``y[b, i, o] = s_io · sum_j B_j(x[b, i]) W_s[i, j, o]`` of shape ``(B, in, out)`` in the dtype
of ``x`` (``x`` of shape ``(B, in)``), the basis expansion of every edge; the network view of
:mod:`kan_jax.interpret` reads the edges through it.

References:
  Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
"""
from kan_jax.layer.apply import layer_apply, layer_regularization_loss
from kan_jax.layer.bases import basis_family, edge_outputs
from kan_jax.layer.bspline import layer_spline_order, refit_spline_weight, scaled_spline_weight, spline_branch
from kan_jax.layer.config import (
    BASES,
    DEFAULT_STRATEGY_THRESHOLDS,
    PARAM_OUTPUT_AXIS,
    SPLINE_STRATEGIES,
    KANLayerConfig,
    StrategyThresholds,
    choose_spline_strategy,
    default_thresholds,
)
from kan_jax.layer.efficient_kan import from_efficient_kan, to_efficient_kan
from kan_jax.layer.grid import layer_update_grid
from kan_jax.layer.init import (
    basis_normal,
    coefficient_initializer,
    init_layer,
    init_spline_weight,
    kaiming_uniform,
    spline_noise,
)
from kan_jax.layer.linen import KAN, KANLinear, refine, refine_opt_state, regularization_loss, update_grid

__all__ = [
    "BASES",
    "DEFAULT_STRATEGY_THRESHOLDS",
    "KAN",
    "KANLayerConfig",
    "KANLinear",
    "PARAM_OUTPUT_AXIS",
    "SPLINE_STRATEGIES",
    "StrategyThresholds",
    "basis_family",
    "basis_normal",
    "choose_spline_strategy",
    "coefficient_initializer",
    "default_thresholds",
    "edge_outputs",
    "from_efficient_kan",
    "init_layer",
    "init_spline_weight",
    "kaiming_uniform",
    "layer_apply",
    "layer_regularization_loss",
    "layer_spline_order",
    "layer_update_grid",
    "refine",
    "refine_opt_state",
    "refit_spline_weight",
    "regularization_loss",
    "scaled_spline_weight",
    "spline_branch",
    "spline_noise",
    "to_efficient_kan",
    "update_grid",
]
