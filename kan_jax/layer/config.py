"""Configuration of a KAN layer and the cost rule that picks its spline formulation.

:class:`KANLayerConfig` holds every option of a layer (shared by the Linen and NNX fronts);
:func:`choose_spline_strategy` resolves ``spline_strategy="auto"`` from the number of bases,
the spline order and a :class:`StrategyThresholds`, by default the backend's entry of
:data:`DEFAULT_STRATEGY_THRESHOLDS`.

References:
  Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from kan_jax import splines

__all__ = [
    "BASES",
    "KANLayerConfig",
    "PARAM_OUTPUT_AXIS",
    "SPLINE_STRATEGIES",
    "StrategyThresholds",
    "DEFAULT_STRATEGY_THRESHOLDS",
    "default_thresholds",
    "choose_spline_strategy",
]

Dtype = Any

#: Basis families of a layer's edge functions (:func:`kan_jax.layer.basis_family`).
BASES = ("bspline", "chebyshev", "legendre", "fourier", "rbf")

#: Formulations of the spline branch; ``"auto"`` chooses by :func:`choose_spline_strategy`.
SPLINE_STRATEGIES = ("auto", "unrolled", "dense", "local")

#: The axis of each layer parameter that indexes the layer's outputs: efficient-kan's
#: ``(out, in)`` for ``base_weight``, the last axis of ``spline_weight`` ``(in, n, out)`` and of
#: ``spline_scaler`` ``(in, out)``. Model sharding, filter normalisation and pruning read it.
PARAM_OUTPUT_AXIS: Mapping[str, int] = types.MappingProxyType(
    {"base_weight": 0, "spline_weight": -1, "spline_scaler": -1}
)


@dataclasses.dataclass(frozen=True)
class StrategyThresholds:
    """The cost rule of ``spline_strategy="auto"`` (immutable, hashable: static under ``jit``).

    With ``n = G + k`` bases per input and order ``k``, ``"auto"`` picks ``"unrolled"`` while
    ``n <= unrolled_max_bases``, else ``"dense"`` while ``n <= dense_max_bases_per_window ·
    (k + 1)``, else ``"local"``.

    Attributes:
      dense_max_bases_per_window: Largest ratio of all bases to the ``k + 1`` non-zero ones per
        input for which the dense product is used.
      unrolled_max_bases: Largest ``n`` for which the bases come from
        :func:`kan_jax.splines.unrolled_bases` (``0``: never).
      local_block_bytes: Largest block of gathered coefficient windows of ``"local"``,
        ``B · c · (k + 1) · out`` elements for ``c`` inputs, in bytes: a layer whose windows
        take more than four such blocks is summed over blocks of inputs, which bounds the
        step's memory.
    """

    # The CPU rule, set by `python -m benchmarks.crossover`.
    dense_max_bases_per_window: float = 42.0
    unrolled_max_bases: int = 16
    # Set by `python -m benchmarks.step_memory` (memory) and `benchmarks.spline_scaling` (time).
    local_block_bytes: int = 16 * 2**20

    def replace(self, **changes: Any) -> "StrategyThresholds":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


#: Per-backend thresholds, set by ``python -m benchmarks.crossover`` run on each backend (the GPU
#: and TPU entries are estimates until it is: gathers are cheap there). Other backends use the
#: CPU entry.
DEFAULT_STRATEGY_THRESHOLDS: Mapping[str, StrategyThresholds] = types.MappingProxyType(
    {
        "cpu": StrategyThresholds(),
        "gpu": StrategyThresholds(dense_max_bases_per_window=16.0, unrolled_max_bases=0),
        "tpu": StrategyThresholds(dense_max_bases_per_window=16.0, unrolled_max_bases=0),
    }
)


def default_thresholds(backend: Optional[str] = None) -> StrategyThresholds:
    """The entry of :data:`DEFAULT_STRATEGY_THRESHOLDS` for ``backend`` (default: JAX's)."""
    backend = jax.default_backend() if backend is None else backend
    return DEFAULT_STRATEGY_THRESHOLDS.get(backend, DEFAULT_STRATEGY_THRESHOLDS["cpu"])


def choose_spline_strategy(
    n_bases: int,
    spline_order: int,
    backend: Optional[str] = None,
    thresholds: Optional[StrategyThresholds] = None,
) -> str:
    """The cheaper exact formulation of the spline branch: ``"unrolled"``, ``"dense"`` or ``"local"``.

    Args:
      n_bases: Bases per input, ``n = G + k``.
      spline_order: Order ``k``.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; by default ``jax.default_backend()``. Ignored
        when ``thresholds`` is given.
      thresholds: The cost rule; by default :func:`default_thresholds` of ``backend``.

    Returns:
      The strategy name.

    Example:
      >>> from kan_jax.layer import StrategyThresholds, choose_spline_strategy
      >>> choose_spline_strategy(8, 3, "cpu")
      'unrolled'
      >>> choose_spline_strategy(8, 3, thresholds=StrategyThresholds(unrolled_max_bases=0))
      'dense'
    """
    rule = default_thresholds(backend) if thresholds is None else thresholds
    if n_bases <= rule.unrolled_max_bases:
        return "unrolled"
    return "dense" if n_bases <= rule.dense_max_bases_per_window * (spline_order + 1) else "local"


@dataclasses.dataclass(frozen=True)
class KANLayerConfig:
    """Configuration of a KAN layer, validated on construction (shared by the Linen and NNX fronts).

    Attributes:
      grid_size: The basis family's resolution ``G >= 1``: intervals of the initial uniform
        B-spline grid over ``grid_range``, the polynomial degree (``"chebyshev"``,
        ``"legendre"``), the number of frequencies (``"fourier"``) or of centres (``"rbf"``,
        ``>= 2``); after a grid refinement the actual size is read from the variables.
      spline_order: Order ``k >= 0`` of the splines (``"bspline"`` only).
      scale_noise: Size of the initial spline noise, ``>= 0`` (efficient-kan's ``scale_noise``);
        for the other basis families the standard deviation of the spline branch's outputs at
        initialisation (:func:`kan_jax.layer.init.basis_normal`).
      scale_base: Kaiming-uniform gain of ``base_weight``, ``>= 0``.
      scale_spline: Kaiming-uniform gain of ``spline_scaler``, ``>= 0``.
      enable_standalone_scale_spline: Whether to learn a per-edge ``spline_scaler``
        (efficient-kan's default).
      base_activation: Activation of the residual branch (SiLU).
      grid_eps: Uniform share of the grid in grid updates, in ``[0, 1]`` (``0``: sample
        quantiles).
      grid_range: ``(lo, hi)`` of the initial grid (B-spline knots, RBF centres), ``hi > lo``.
      spline_strategy: ``"auto"`` (by :func:`choose_spline_strategy`), ``"unrolled"`` (small
        grids only), ``"dense"`` or ``"local"`` (B-splines; the other families have one
        formulation).
      strategy_thresholds: Cost rule of ``"auto"`` (``None``: the backend's
        :func:`default_thresholds`).
      dtype: Computation dtype (``None``: promotion of the input and parameter dtypes).
      param_dtype: Dtype of the parameters and the grid.
      basis: The basis family of the edge functions, one of :data:`BASES` (B-splines by
        default; see :func:`kan_jax.layer.basis_family`).

    Example:
      >>> from kan_jax.layer import KANLayerConfig
      >>> KANLayerConfig(grid_size=10).spline_order
      3
      >>> KANLayerConfig(grid_size=0)
      Traceback (most recent call last):
      ...
      ValueError: grid_size must be an integer >= 1, got 0
    """

    grid_size: int = 5
    spline_order: int = 3
    scale_noise: float = 0.1
    scale_base: float = 1.0
    scale_spline: float = 1.0
    enable_standalone_scale_spline: bool = True
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu
    grid_eps: float = 0.02
    grid_range: tuple[float, float] = (-1.0, 1.0)
    spline_strategy: str = "auto"
    strategy_thresholds: Optional[StrategyThresholds] = None
    dtype: Optional[Dtype] = None
    param_dtype: Dtype = jnp.float32
    basis: str = "bspline"

    def __post_init__(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {self.basis!r}")
        splines.validate_grid_args(self.grid_size, self.spline_order, self.grid_range)
        if self.basis == "rbf" and self.grid_size < 2:
            raise ValueError(f"basis 'rbf' needs grid_size >= 2 centres (their spacing is the width), got {self.grid_size}")
        for name in ("scale_noise", "scale_base", "scale_spline"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 <= self.grid_eps <= 1.0:
            raise ValueError(f"grid_eps must be in [0, 1], got {self.grid_eps!r}")
        if self.spline_strategy not in SPLINE_STRATEGIES:
            raise ValueError(f"spline_strategy must be one of {SPLINE_STRATEGIES}, got {self.spline_strategy!r}")
        if self.strategy_thresholds is not None and not isinstance(self.strategy_thresholds, StrategyThresholds):
            raise ValueError(f"strategy_thresholds must be a StrategyThresholds or None, got {self.strategy_thresholds!r}")
        if not callable(self.base_activation):
            raise ValueError(f"base_activation must be callable, got {self.base_activation!r}")
        # Canonical, hashable values (the configuration is static data under jit).
        object.__setattr__(self, "grid_size", int(self.grid_size))
        object.__setattr__(self, "spline_order", int(self.spline_order))
        object.__setattr__(self, "grid_range", (float(self.grid_range[0]), float(self.grid_range[1])))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the configuration fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "KANLayerConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)
