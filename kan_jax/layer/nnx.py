"""Flax NNX fronts for KAN layers: :class:`KANLinear`, :class:`KAN` and the :class:`Grid` variable.

Thin stateful modules over the pure functions of :mod:`kan_jax.layer` (same maths,
initialisation and configuration as the Linen fronts in :mod:`kan_jax.layer.linen`). A layer
holds::

    base_weight    nnx.Param  (out, in)
    spline_weight  nnx.Param  (in, G + k, out)   # efficient-kan's (out, in, G + k) transposed
    spline_scaler  nnx.Param  (in, out)          # only with enable_standalone_scale_spline
    grid           Grid       (in, G + 2k + 1)   # state, not a parameter

:class:`Grid` is an ``nnx.Variable`` subclass that is *not* an ``nnx.Param``, so
``nnx.state(model, nnx.Param)``, ``nnx.grad`` (which differentiates ``nnx.Param`` by default)
and ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never touch it. Being a Variable, the grid is
part of the module's state: ``nnx.jit`` passes it into the compiled program as a traced input,
so after :meth:`KANLinear.update_grid` (same grid size) an already compiled step uses the new
grid without retracing.

``update_grid`` keeps the parameter shapes, so an existing ``nnx.Optimizer`` stays valid.
``refine`` changes the shape of ``spline_weight``: rebuild the optimizer afterwards, e.g.
``optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)``.

References:
  Flax NNX, https://flax.readthedocs.io/en/latest/nnx_basics.html.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
from flax import nnx

from kan_jax.layer.apply import layer_apply, layer_regularization_loss
from kan_jax.layer.bases import basis_family
from kan_jax.layer.config import KANLayerConfig
from kan_jax.layer.grid import layer_update_grid
from kan_jax.layer.init import init_layer

__all__ = ["Grid", "KANLinear", "KAN"]

Array = jax.Array
Dtype = Any


class Grid(nnx.Variable):
    """Knot grid of a KAN layer, shape ``(in, G + 2k + 1)``.

    A plain (non-``Param``) ``nnx.Variable``: part of the module state (so it is traced by
    ``nnx.jit`` and saved with the model) but excluded from ``nnx.Param`` filters, hence never
    differentiated or updated by an optimizer built with ``wrt=nnx.Param``. Select it with
    ``nnx.state(model, Grid)``.
    """


def _check_width(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _make_config(config: Optional[KANLayerConfig], options: dict[str, Any]) -> KANLayerConfig:
    """``config`` (default ``KANLayerConfig()``) with the keyword ``options`` applied and validated."""
    unknown = sorted(set(options) - set(KANLayerConfig.field_names()))
    if unknown:
        raise TypeError(
            f"unknown KAN layer option(s) {unknown}; expected fields of KANLayerConfig: "
            f"{list(KANLayerConfig.field_names())}"
        )
    base = KANLayerConfig() if config is None else config
    return base.replace(**options) if options else base


class KANLinear(nnx.Module):
    """A Kolmogorov-Arnold layer (efficient-kan formulation) as a Flax NNX module.

    ``y = base_activation(x) @ base_weight.T + B(x) @ (spline_weight * spline_scaler[:, None])``
    with ``B(x)`` the ``(B, in·n)`` order-``k`` B-spline bases of the inputs on their knot grid
    (:mod:`kan_jax.layer.apply`), initialised as efficient-kan (:mod:`kan_jax.layer.init`,
    the values of :func:`kan_jax.layer.init_layer` for the key ``rngs.params()``).

    Args:
      in_features: Layer inputs.
      out_features: Layer outputs.
      config: A :class:`kan_jax.layer.KANLayerConfig` (default: its defaults).
      rngs: Random streams; one ``rngs.params()`` key initialises the layer.
      **options: Fields of :class:`kan_jax.layer.KANLayerConfig` overriding ``config``
        (``grid_size``, ``spline_order``, ``scale_noise``, ...); defaults, meaning and
        validation are defined there once.

    Attributes:
      base_weight: ``nnx.Param`` ``(out, in)``.
      spline_weight: ``nnx.Param`` ``(in, G + k, out)``.
      spline_scaler: ``nnx.Param`` ``(in, out)``, ``None`` without
        ``enable_standalone_scale_spline``.
      grid: :class:`Grid` ``(in, G + 2k + 1)``, not a parameter.

    Raises:
      ValueError: On a width ``< 1`` or an invalid configuration; when called on an input whose
        last dimension is not ``in_features`` (the message names both sizes).

    Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from kan_jax.nnx import KANLinear
    >>> class Net(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.stem = nnx.Linear(5, 16, rngs=rngs)      # any NNX stem
    ...         self.head = KANLinear(16, 3, rngs=rngs)       # KAN head
    ...     def __call__(self, x):
    ...         return self.head(jnp.tanh(self.stem(x)))
    >>> model = Net(nnx.Rngs(0))
    >>> x = jnp.ones((8, 5), jnp.float32)
    >>> model(x).shape
    (8, 3)
    >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)  # grid excluded
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        config: Optional[KANLayerConfig] = None,
        rngs: nnx.Rngs,
        **options: Any,
    ) -> None:
        in_features = _check_width("in_features", in_features)
        out_features = _check_width("out_features", out_features)
        self.config = _make_config(config, options)
        self.in_features = in_features
        self.out_features = out_features
        params, grid = init_layer(rngs.params(), in_features, out_features, self.config)
        self.base_weight = nnx.Param(params["base_weight"])
        self.spline_weight = nnx.Param(params["spline_weight"])
        self.spline_scaler: nnx.Param | None
        if self.config.enable_standalone_scale_spline:
            self.spline_scaler = nnx.Param(params["spline_scaler"])
        else:
            self.spline_scaler = nnx.data(None)
        self.grid = Grid(grid)

    @property
    def grid_size(self) -> int:
        """Current resolution ``G`` (grid intervals, degree, ...; changes with :meth:`refine`)."""
        return basis_family(self.config.basis).layer_grid_size(self._params(), self.grid[...])

    @property
    def spline_order(self) -> int:
        """Order ``k`` of the splines."""
        return self.config.spline_order

    @property
    def base_activation(self) -> Callable[[Array], Array]:
        """Activation of the residual branch."""
        return self.config.base_activation

    @property
    def grid_eps(self) -> float:
        """Uniform share of the grid in :meth:`update_grid`."""
        return self.config.grid_eps

    def _params(self) -> dict[str, Array]:
        params = {"base_weight": self.base_weight[...], "spline_weight": self.spline_weight[...]}
        if self.spline_scaler is not None:
            params["spline_scaler"] = self.spline_scaler[...]
        return params

    def __call__(self, x: Array) -> Array:
        """Apply the layer.

        Args:
          x: Inputs, ``(..., in_features)``.

        Returns:
          The outputs, ``(..., out_features)``.
        """
        return layer_apply(self._params(), self.grid[...], x, self.config)

    def _regrid(self, x: Array, grid_size: Optional[int], margin: float) -> None:
        params, grid = layer_update_grid(
            self._params(), self.grid[...], x, grid_size=grid_size, grid_eps=self.grid_eps, margin=margin,
            basis=self.config.basis,
        )
        # set_value without an index replaces the value outright (a new shape is allowed).
        self.spline_weight.set_value(params["spline_weight"])
        self.grid.set_value(grid)

    def update_grid(self, x: Array, margin: float = 0.01) -> None:
        """Adapt the grid to the samples ``x`` in place, keeping the layer's function.

        The new grid mixes the per-input sample quantiles with a uniform grid over
        ``[min - margin, max + margin]`` (weight ``grid_eps`` on the uniform part), same size
        ``G``; ``spline_weight`` is refitted by least squares so that the outputs on ``x`` are
        kept (:func:`kan_jax.layer.layer_update_grid`; unlike efficient-kan the scaler is not
        applied twice). Shapes do not change, so an ``nnx.Optimizer`` built before stays valid,
        and steps compiled with ``nnx.jit`` use the new grid (a traced :class:`Grid` variable)
        without recompiling. Can itself run under ``nnx.jit``.

        Args:
          x: Samples, ``(..., in_features)``; several hundred or more give a good grid.
          margin: Padding of the new grid beyond the sample range.
        """
        self._regrid(x, None, margin)

    def refine(self, x: Array, grid_size: int, margin: float = 0.01) -> None:
        """Grid extension (pykan's ``refine``): switch to ``grid_size`` intervals in place.

        As :meth:`update_grid` but with a new grid size; ``spline_weight`` becomes
        ``(in, grid_size + k, out)`` and the function is kept on ``x`` up to the
        least-squares residual (exactly for a uniform grid refined by an integer factor with
        ``grid_eps=1``). Because a parameter changes shape, **rebuild the optimizer**
        afterwards, e.g. ``optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)`` (its state
        restarts), and expect compiled steps to retrace once. Run it eagerly (not under
        ``nnx.jit``).

        Args:
          x: Samples, ``(..., in_features)``.
          grid_size: New number of intervals, ``>= 1``.
          margin: Padding of the new grid beyond the sample range.
        """
        self._regrid(x, basis_family(self.config.basis).check_grid_size(grid_size), margin)

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Array:
        """efficient-kan's L1 + entropy regulariser of the spline weights (a scalar).

        Args:
          regularize_activation: Weight of the L1 term.
          regularize_entropy: Weight of the entropy term.

        Returns:
          :func:`kan_jax.layer.layer_regularization_loss` of the layer.
        """
        return layer_regularization_loss(self._params(), regularize_activation, regularize_entropy)


class KAN(nnx.Module):
    """A stack of :class:`KANLinear` layers, efficient-kan's ``KAN(layers_hidden)``, in NNX.

    The layers are ``model.layers[0]``, ``model.layers[1]``, ... (an ``nnx.List``; state paths
    ``layers/0/base_weight`` etc. parallel efficient-kan's ``layers.0.base_weight``).

    Args:
      layers_hidden: Widths ``[in, hidden..., out]``, at least two, each ``>= 1``.
      config: The layer configuration given to every :class:`KANLinear`.
      rngs: Random streams.
      **options: Configuration fields overriding ``config`` (see :class:`KANLinear`).

    Raises:
      ValueError: On invalid widths or layer configuration, and when called on an input whose
        last dimension is not ``layers_hidden[0]``.

    Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from kan_jax.nnx import KAN
    >>> model = KAN([2, 5, 1], rngs=nnx.Rngs(0))
    >>> x = jax.random.uniform(jax.random.key(1), (256, 2), jnp.float32, -1, 1)
    >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    >>> @nnx.jit
    ... def step(model, optimizer, x, y):
    ...     loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    ...     optimizer.update(model, grads)
    ...     return loss
    >>> loss = step(model, optimizer, x, jnp.sin(x[:, :1]))
    >>> model.update_grid(x)          # in place; same shapes: optimizer and `step` stay valid
    >>> model.refine(x, grid_size=10) # spline_weight resized: rebuild the optimizer
    >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    >>> model(x).shape
    (256, 1)
    """

    def __init__(
        self,
        layers_hidden: Sequence[int],
        *,
        config: Optional[KANLayerConfig] = None,
        rngs: nnx.Rngs,
        **options: Any,
    ) -> None:
        widths = tuple(layers_hidden)
        if len(widths) < 2 or any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths):
            raise ValueError(f"layers_hidden must list at least two widths >= 1, got {widths!r}")
        self.config = _make_config(config, options)
        self.layers_hidden = tuple(int(w) for w in widths)
        self.layers = nnx.List(
            [
                KANLinear(n_in, n_out, config=self.config, rngs=rngs)
                for n_in, n_out in zip(self.layers_hidden[:-1], self.layers_hidden[1:])
            ]
        )

    def _check_input(self, x: Array) -> None:
        if x.ndim < 1 or x.shape[-1] != self.layers_hidden[0]:
            raise ValueError(
                f"KAN expects inputs with last dimension {self.layers_hidden[0]} (layers_hidden[0]), "
                f"got an input of shape {tuple(x.shape)}"
            )

    def __call__(self, x: Array) -> Array:
        """Apply the network to ``x`` of shape ``(..., layers_hidden[0])``; returns ``(..., layers_hidden[-1])``."""
        self._check_input(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def update_grid(self, x: Array, margin: float = 0.01) -> None:
        """Adapt every layer's grid in place, sequentially (efficient-kan's ``update_grid=True``).

        Layer ``i`` adapts to the activations that reach it, i.e. the outputs of the already
        updated layers ``< i`` on ``x``; each layer's function on those samples is kept (see
        :meth:`KANLinear.update_grid`). Shapes do not change: optimizer and compiled steps
        stay valid and use the new grids.

        Args:
          x: Samples, ``(..., layers_hidden[0])``.
          margin: Padding of the new grids beyond the sample ranges.
        """
        self._check_input(x)
        for layer in self.layers:
            layer.update_grid(x, margin=margin)
            x = layer(x)

    def refine(self, x: Array, grid_size: int, margin: float = 0.01) -> None:
        """Grid extension of every layer to ``grid_size`` intervals, in place, sequentially.

        Every ``spline_weight`` changes shape: rebuild the optimizer afterwards, e.g.
        ``optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)``. See :meth:`KANLinear.refine`.

        Args:
          x: Samples, ``(..., layers_hidden[0])``.
          grid_size: New number of intervals, ``>= 1``.
          margin: Padding of the new grids beyond the sample ranges.
        """
        self._check_input(x)
        grid_size = basis_family(self.config.basis).check_grid_size(grid_size)
        for layer in self.layers:
            layer.refine(x, grid_size, margin=margin)
            x = layer(x)

    @property
    def grid_size(self) -> int:
        """Current grid size ``G`` (of the first layer; all layers share it unless edited by hand)."""
        return self.layers[0].grid_size

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> Array:
        """Sum of :meth:`KANLinear.regularization_loss` over the layers."""
        losses = [layer.regularization_loss(regularize_activation, regularize_entropy) for layer in self.layers]
        return sum(losses[1:], losses[0])
