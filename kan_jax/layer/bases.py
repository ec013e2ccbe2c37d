"""The basis families of a KAN layer by name, and the per-edge outputs of a layer of any family.

:func:`basis_family` maps a ``basis`` name of :class:`kan_jax.layer.KANLayerConfig` to the
object through which the rest of the layer package uses the family::

    name, nested                                   # nested: raising G keeps every basis
    num_bases(grid_size, spline_order) -> n        # bases per input
    initial_grid(config, in_features) -> (in, M)
    layer_spline_order(params, grid) -> int        # shape check; the spline order (0: none)
    layer_grid_size(params, grid) -> G             # the resolution, from the shapes
    check_grid_size(grid_size) -> int              # ValueError for a resolution the family lacks
    spline_branch(params, grid, x, strategy, thresholds) -> (B, out)
    edge_outputs(params, grid, x) -> (B, in, out)
    refit_spline_weight(params, grid, x, grid_size, grid_eps, margin) -> (weight, grid)

=============  ===========================================  ======================  =========
``basis``      bases of an input                            ``grid_size``           grid
=============  ===========================================  ======================  =========
``bspline``    order-``k`` B-splines (:mod:`~.bspline`)      intervals ``G``         knots
``chebyshev``  ``T_j(tanh x)``, ``j <= G`` (:mod:`~.polynomial`)  degree             none
``legendre``   ``P_j(tanh x)``, ``j <= G`` (:mod:`~.polynomial`)  degree             none
``fourier``    ``cos jx, sin jx``, ``j <= G`` (:mod:`~.fourier`)  frequencies        none
``rbf``        ``exp(-((x - c_j)/h)^2)`` (:mod:`~.rbf`)      centres ``G >= 2``      centres
=============  ===========================================  ======================  =========

Every family has the same parameters (``base_weight``, ``spline_weight`` ``(in, n, out)``,
optional ``spline_scaler``) and the SiLU base branch; only ``n`` and the grid differ.
"""
from __future__ import annotations

import types
from typing import Any, Mapping, Union

import jax

from kan_jax import splines
from kan_jax.layer import bspline
from kan_jax.layer.config import BASES, KANLayerConfig
from kan_jax.layer.family import DenseFamily
from kan_jax.layer.fourier import FOURIER
from kan_jax.layer.polynomial import CHEBYSHEV, LEGENDRE
from kan_jax.layer.rbf import RBF

__all__ = ["BSPLINE", "basis_family", "edge_outputs"]


def _bspline_grid_size(params: Mapping[str, jax.Array], grid: jax.Array) -> int:
    return params["spline_weight"].shape[1] - bspline.layer_spline_order(params, grid)


def _bspline_initial_grid(config: KANLayerConfig, in_features: int) -> jax.Array:
    return splines.uniform_grid(config.grid_size, config.spline_order, config.grid_range, int(in_features), config.param_dtype)


def _bspline_check_grid_size(grid_size: int) -> int:
    splines.validate_grid_args(grid_size, 0)
    return int(grid_size)


#: The B-spline family (:mod:`kan_jax.layer.bspline`) under the interface of :func:`basis_family`.
BSPLINE = types.SimpleNamespace(
    name="bspline",
    nested=False,
    num_bases=lambda grid_size, spline_order: int(grid_size) + int(spline_order),
    initial_grid=_bspline_initial_grid,
    layer_spline_order=bspline.layer_spline_order,
    layer_grid_size=_bspline_grid_size,
    check_grid_size=_bspline_check_grid_size,
    spline_branch=bspline.spline_branch,
    edge_outputs=bspline.edge_outputs,
    refit_spline_weight=bspline.refit_spline_weight,
)

_FAMILIES: dict[str, Any] = {"bspline": BSPLINE, "chebyshev": CHEBYSHEV, "legendre": LEGENDRE, "fourier": FOURIER, "rbf": RBF}


def basis_family(basis: str) -> Union[DenseFamily, types.SimpleNamespace]:
    """The family named ``basis`` (module docstring), one of :data:`kan_jax.layer.BASES`.

    Example:
      >>> from kan_jax.layer import basis_family
      >>> basis_family("chebyshev").num_bases(5, 3)   # degree 5: T_0 .. T_5
      6

    Raises:
      ValueError: For an unknown name (the message lists the known ones).
    """
    family = _FAMILIES.get(basis) if isinstance(basis, str) else None
    if family is None:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    return family


def edge_outputs(params: Mapping[str, jax.Array], grid: jax.Array, x: jax.Array, basis: str = "bspline") -> jax.Array:
    r"""Output of every edge's basis expansion, :math:`y_{bio} = s_{io} \sum_j \phi_j(x_{bi})\, W_{s,ijo}`.

    Args:
      params: The layer (``spline_weight`` and optionally ``spline_scaler``).
      grid: Its grid, ``(in, M)``.
      x: Inputs, ``(B, in)``; the result has their dtype.
      basis: The layer's basis family.

    Returns:
      The per-edge outputs, ``(B, in, out)``; their sum over ``in`` is the layer's spline branch.
    """
    return basis_family(basis).edge_outputs(params, grid, x)
