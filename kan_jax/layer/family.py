r"""Basis families evaluated as a whole: the shared machinery of Chebyshev, Legendre, Fourier and RBF layers.

A layer of such a family keeps the B-spline layer's parameters, ``base_weight`` ``(out, in)``,
``spline_weight`` ``(in, n, out)`` (the coefficients of the ``n`` bases of every edge) and
optionally ``spline_scaler`` ``(in, out)``, and computes

.. math::
    y_o = \sum_i s_{io} \sum_j \phi_j(x_i)\, W_{s,ijo}

as one product of the ``(B, in·n)`` matrix of basis values with the ``(in·n, out)`` scaled
weights: every basis is in general non-zero everywhere, so there is no local formulation (the
``spline_strategy`` is ignored). The grid variable ``(in, M)`` holds what the family's bases
depend on besides ``x``: the centres of a radial basis, nothing (``M = 0``) for the
polynomial and Fourier families.

:class:`DenseFamily` describes a family by its bases and sizes and provides the interface
every family offers (:mod:`kan_jax.layer`): :meth:`~DenseFamily.layer_spline_order`,
:meth:`~DenseFamily.spline_branch`, :meth:`~DenseFamily.edge_outputs`,
:meth:`~DenseFamily.refit_spline_weight`, plus the sizes the fronts need. Its coefficients are
initialised by :func:`kan_jax.layer.init.basis_normal` with the family's
:attr:`~DenseFamily.mean_square`.

Grid extension: a *nested* family (each basis keeps its meaning when the resolution grows: the
polynomials, the Fourier frequencies) is refined exactly, the new coefficients being zero;
otherwise, and when the resolution shrinks, the coefficients are the least-squares fit of the
old edge outputs on the samples (:func:`kan_jax.splines.fit_coefficients`), as for B-splines.

References:
  SynodicMonth, *ChebyKAN* (Chebyshev KAN layers, PyTorch).
  Z. Li, "Kolmogorov-Arnold Networks are Radial Basis Function Networks", arXiv:2405.06721 (2024).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import splines
from kan_jax.layer.bspline import scaled_spline_weight
from kan_jax.layer.config import SPLINE_STRATEGIES, KANLayerConfig, StrategyThresholds

__all__ = ["DenseFamily", "host_grid", "no_grid", "keep_no_grid", "unscaled_fit"]

Params = Mapping[str, jax.Array]
Dtype = Any


def no_grid(grid_size: int, grid_range: tuple[float, float], in_features: int, dtype: Dtype = jnp.float32) -> jax.Array:
    """The grid of a family whose bases depend on ``x`` alone: ``(in, 0)`` (the arguments but
    ``in_features`` and ``dtype`` are those of :attr:`DenseFamily.make_grid`, unused)."""
    return jnp.zeros((int(in_features), 0), dtype)


def keep_no_grid(x: jax.Array, grid: jax.Array, grid_size: int, grid_eps: float, margin: float) -> jax.Array:
    """The grid update of a family without a grid: the ``(in, 0)`` grid in the dtype of ``x``."""
    return jnp.zeros((grid.shape[0], 0), x.dtype)


def unscaled_fit(fitted: jax.Array, params: Params) -> jax.Array:
    """A fitted *scaled* weight ``(in, n, out)`` divided by ``spline_scaler`` (0 where it is 0)."""
    scaler = params.get("spline_scaler")
    if scaler is None:
        return fitted
    s = scaler[:, None, :]
    return jnp.where(s == 0, 0.0, fitted / jnp.where(s == 0, 1.0, s))


@dataclasses.dataclass(frozen=True)
class DenseFamily:
    r"""A basis family given by its bases, their number and the grid they need.

    Instances are immutable and hashable (static under ``jit``); the families of this library
    are ``kan_jax.layer.polynomial.CHEBYSHEV``, ``LEGENDRE``, ``kan_jax.layer.fourier.FOURIER`` and
    ``kan_jax.layer.rbf.RBF``.

    Attributes:
      name: The ``basis`` name of :class:`kan_jax.layer.KANLayerConfig`.
      evaluate: ``evaluate(x, grid, n) -> (..., in, n)``, the bases at ``x`` ``(..., in)``.
      bases_of_size: Resolution ``G`` to bases per input ``n``.
      size_of_bases: ``n`` to ``G`` (``None`` where no resolution has ``n`` bases).
      mean_square: ``n`` to :math:`S = E \sum_j \phi_j(x)^2` on the family's reference input
        distribution, the variance rule of the initialisation.
      nested: Whether raising the resolution keeps every basis (refinement exact, optimizer
        moments carried).
      make_grid: ``make_grid(grid_size, grid_range, in_features, dtype)``, the initial grid.
      adapt_grid: ``adapt_grid(x, grid, grid_size, grid_eps, margin)``, the grid after a grid
        update on the samples ``x`` ``(B, in)``.
      grid_width: ``G`` to the grid's columns ``M``.
      min_grid_size: Smallest resolution.
    """

    name: str
    evaluate: Callable[[jax.Array, jax.Array, int], jax.Array]
    bases_of_size: Callable[[int], int]
    size_of_bases: Callable[[int], Optional[int]]
    mean_square: Callable[[int], float]
    nested: bool
    make_grid: Callable[..., jax.Array]
    adapt_grid: Callable[..., jax.Array]
    grid_width: Callable[[int], int]
    min_grid_size: int = 1

    def num_bases(self, grid_size: int, spline_order: int = 0) -> int:
        """Bases per input ``n`` at resolution ``grid_size`` (``spline_order`` is ignored)."""
        return self.bases_of_size(self.check_grid_size(grid_size))

    def check_grid_size(self, grid_size: int) -> int:
        """``grid_size`` as an ``int``; ``ValueError`` below :attr:`min_grid_size`."""
        if isinstance(grid_size, bool) or int(grid_size) != grid_size or grid_size < self.min_grid_size:
            raise ValueError(f"basis {self.name!r} needs an integer grid_size >= {self.min_grid_size}, got {grid_size!r}")
        return int(grid_size)

    def initial_grid(self, config: KANLayerConfig, in_features: int) -> jax.Array:
        """The grid of a fresh layer, ``(in, M)`` in ``config.param_dtype``."""
        return self.make_grid(config.grid_size, config.grid_range, int(in_features), jnp.dtype(config.param_dtype))

    def layer_spline_order(self, params: Params, grid: jax.Array) -> int:
        """Check a layer's shapes; ``0`` (the family has no spline order).

        Raises:
          ValueError: If ``spline_weight`` is not ``(in, n, out)`` for the other parameters, ``n``
            is no resolution's number of bases, or the grid is not ``(in, M)`` for it.
        """
        self.layer_grid_size(params, grid)
        return 0

    def layer_grid_size(self, params: Params, grid: jax.Array) -> int:
        """The resolution ``G`` of a layer, read from its shapes (which are checked)."""
        w = params["spline_weight"]
        base = params.get("base_weight")
        if w.ndim != 3 or (base is not None and tuple(base.shape) != (w.shape[2], w.shape[0])):
            want = "(in, n, out)" if base is None else f"(in={base.shape[1]}, n, out={base.shape[0]})"
            raise ValueError(f"spline_weight must have shape {want}, got {tuple(w.shape)}")
        scaler = params.get("spline_scaler")
        if scaler is not None and tuple(scaler.shape) != (w.shape[0], w.shape[2]):
            raise ValueError(f"spline_scaler must have shape (in={w.shape[0]}, out={w.shape[2]}), got {tuple(scaler.shape)}")
        grid_size = self.size_of_bases(w.shape[1])
        if grid_size is None or grid_size < self.min_grid_size:
            raise ValueError(f"spline_weight with {w.shape[1]} bases per input is not a {self.name!r} layer")
        want = (w.shape[0], self.grid_width(grid_size))
        if tuple(grid.shape) != want:
            raise ValueError(
                f"grid must have shape {want} for a {self.name!r} layer with spline_weight {tuple(w.shape)}, "
                f"got {tuple(grid.shape)}"
            )
        return grid_size

    def spline_branch(
        self,
        params: Params,
        grid: jax.Array,
        x: jax.Array,
        strategy: str = "auto",
        thresholds: Optional[StrategyThresholds] = None,
    ) -> jax.Array:
        r"""The branch :math:`\sum_i s_{io} \sum_j \phi_j(x_i) W_{s,ijo}`, ``(B, out)``, for ``x`` ``(B, in)``.

        ``strategy`` and ``thresholds`` are accepted for the common interface and ignored (one
        formulation: the product of the basis matrix with the scaled weights).
        """
        if strategy not in SPLINE_STRATEGIES:
            raise ValueError(f"strategy must be one of {SPLINE_STRATEGIES}, got {strategy!r}")
        self.layer_spline_order(params, grid)
        return _branch(self, params, grid, x)

    def edge_outputs(self, params: Params, grid: jax.Array, x: jax.Array) -> jax.Array:
        r"""Every edge's output :math:`s_{io} \sum_j \phi_j(x_{bi}) W_{s,ijo}`, ``(B, in, out)``, dtype of ``x``."""
        self.layer_spline_order(params, grid)
        return _edges(self, params, grid, x)

    def refit_spline_weight(
        self,
        params: Params,
        grid: jax.Array,
        x: jax.Array,
        grid_size: int,
        grid_eps: float,
        margin: float,
    ) -> tuple[jax.Array, jax.Array]:
        """The grid and coefficients at resolution ``grid_size`` that keep the edges' outputs on ``x``.

        Args:
          params: The layer, in the fit dtype.
          grid: Its grid.
          x: Samples, ``(B, in)``.
          grid_size: The new resolution.
          grid_eps: Uniform share of an adapted grid.
          margin: Padding of an adapted grid beyond the sample range.

        Returns:
          ``(spline_weight, grid)``. A nested family's coefficients are kept exactly (new ones
          zero) when the resolution does not shrink; otherwise the fit of the old edge outputs.
        """
        old_size = self.layer_grid_size(params, grid)
        grid_size = self.check_grid_size(grid_size)
        w = params["spline_weight"]
        new_grid = self.adapt_grid(x, grid, grid_size, grid_eps, margin)
        if self.nested and grid_size >= old_size:
            extra = self.bases_of_size(grid_size) - w.shape[1]
            return jnp.pad(w, ((0, 0), (0, extra), (0, 0))), new_grid
        y = _edges(self, params, grid, x)
        bases = self.evaluate(x, new_grid, self.bases_of_size(grid_size))
        return unscaled_fit(splines.fit_coefficients(bases, y), params), new_grid


@functools.partial(jax.jit, static_argnums=0)
def _edges(family: DenseFamily, params: Params, grid: jax.Array, x: jax.Array) -> jax.Array:
    w = params["spline_weight"].astype(x.dtype)
    bases = family.evaluate(x, grid.astype(x.dtype), w.shape[1])  # (B, in, n)
    y = jnp.einsum("bij,ijo->bio", bases, w)
    scaler = params.get("spline_scaler")
    return y if scaler is None else y * scaler.astype(x.dtype)


@functools.partial(jax.jit, static_argnums=0)
def _branch(family: DenseFamily, params: Params, grid: jax.Array, x: jax.Array) -> jax.Array:
    w = scaled_spline_weight({k: v.astype(x.dtype) for k, v in params.items()})
    in_features, n, out_features = w.shape
    bases = family.evaluate(x, grid.astype(x.dtype), n).reshape(x.shape[0], in_features * n)
    return jnp.dot(bases, w.reshape(in_features * n, out_features))  # (B, in · n) @ (in · n, out)


def host_grid(row: np.ndarray, in_features: int, dtype: Dtype) -> jax.Array:
    """``row`` ``(M,)`` repeated for every input, ``(in, M)`` of ``dtype``, built on the host."""
    row = np.asarray(row, np.float64).astype(jnp.dtype(dtype))
    return jnp.asarray(np.broadcast_to(row, (int(in_features), row.shape[0])))
