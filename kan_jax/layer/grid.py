r"""Grid update and refinement of one KAN layer, keeping the layer's function on samples.

The new grid is :func:`kan_jax.splines.adaptive_grid` of the samples (``grid_size``
intervals, by default the current ``G``: a grid *update*; another value refines or coarsens
the grid, pykan's ``refine``), and the spline coefficients on it are the least-squares fit of
the old per-edge outputs on the samples (:func:`kan_jax.layer.bspline.refit_spline_weight`).
Unlike efficient-kan, which stores the fitted *scaled* weight as the raw weight (so the
scaler is applied twice afterwards), the raw weight is the fit divided by ``spline_scaler``.
The base branch is unchanged. The outputs on the samples are kept up to the least-squares
residual, which is zero when the old spline lies in the new spline space (the same grid, or a
nested finer one).

The other basis families (``basis``, :func:`kan_jax.layer.basis_family`) mean the same by
``grid_size``, their resolution: a Chebyshev layer refined to ``grid_size`` gets that degree, a
Fourier layer that many frequencies (exactly the same function: the new coefficients are 0),
an RBF layer that many centres adapted to the samples (the coefficients fitted by least
squares); an update at the same resolution leaves a family without a grid unchanged.

References:
  Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), grid extension.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import jax
import jax.numpy as jnp

from kan_jax.layer.apply import check_input
from kan_jax.layer.bases import basis_family

__all__ = ["layer_update_grid"]


@functools.partial(jax.jit, static_argnames=("grid_size", "spline_order", "basis"))
def layer_update_grid(
    params: Mapping[str, jax.Array],
    grid: jax.Array,
    x: jax.Array,
    *,
    spline_order: Optional[int] = None,
    grid_size: Optional[int] = None,
    grid_eps: float = 0.02,
    margin: float = 0.01,
    basis: str = "bspline",
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Adapt the grid to samples and refit the splines so the layer's function is kept.

    Args:
      params: The layer (:mod:`kan_jax.layer.apply`); the spline order is read from the shapes.
      grid: Knots, ``(in, M)``.
      x: Samples, ``(..., in)``.
      spline_order: Optional check: the order the caller expects (an error if the shapes say
        otherwise).
      grid_size: Intervals of the new grid, the family's resolution (static); ``None`` keeps
        the current size.
      grid_eps: Uniform share of the new grid (:func:`kan_jax.splines.adaptive_grid`).
      margin: Padding of the new grid beyond the sample range.
      basis: The layer's basis family (static).

    Returns:
      ``(params, grid)``: only ``spline_weight`` changes (and changes shape iff ``grid_size``
      does); the new B-spline grid is ``(in, grid_size + 2k + 1)``. The fit runs in at least
      float32 and is stored in the parameters' dtypes.

    Raises:
      ValueError: If the shapes disagree or ``spline_order`` is not the layer's.
    """
    check_input(grid, x)
    family = basis_family(basis)
    k = family.layer_spline_order(params, grid)
    if spline_order is not None and spline_order != k:
        raise ValueError(f"spline_order={spline_order} does not match the layer's shapes (order {k})")
    w = params["spline_weight"]
    if grid_size is None:
        grid_size = family.layer_grid_size(params, grid)
    family.check_grid_size(grid_size)
    fit_dtype = jnp.promote_types(w.dtype, jnp.float32)  # LAPACK has no half-precision lstsq
    fit_params = {name: value.astype(fit_dtype) for name, value in params.items()}
    x2 = x.reshape(-1, x.shape[-1]).astype(fit_dtype)
    fitted, new_grid = family.refit_spline_weight(fit_params, grid.astype(fit_dtype), x2, grid_size, grid_eps, margin)
    return {**params, "spline_weight": fitted.astype(w.dtype)}, new_grid.astype(grid.dtype)
