"""Flax Linen fronts for KAN layers: :class:`KANLinear`, :class:`KAN`, grid update and refinement.

Variables of a KAN layer live in two collections::

    {"params": {"base_weight": (out, in), "spline_weight": (in, G + k, out),
                "spline_scaler": (in, out)},
     "grid":   {"grid": (in, G + 2k + 1)}}

The grid is state, not a parameter: an optimizer over ``variables["params"]`` never sees it,
and a compiled step that takes ``variables["grid"]`` as an argument always uses the current
grid (an updated grid of the same size reuses the compiled program).

Grid updates work on any Linen model that contains :class:`KANLinear` layers, however deep:
:func:`update_grid` runs the model once in *grid-update mode*, in which every KAN layer adapts
its grid to the activations that reach it, refits its splines so its function is kept, and
passes on the output of the updated layer (efficient-kan's ``forward(x, update_grid=True)``).

References:
  Blealtan, *efficient-kan* (PyTorch implementation of the same layer).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from kan_jax.layer import init
from kan_jax.layer.apply import layer_apply, layer_regularization_loss
from kan_jax.layer.bases import basis_family
from kan_jax.layer.bspline import layer_spline_order
from kan_jax.layer.config import KANLayerConfig, StrategyThresholds, choose_spline_strategy
from kan_jax.layer.efficient_kan import from_efficient_kan
from kan_jax.layer.grid import layer_update_grid

__all__ = ["KANLinear", "KAN", "update_grid", "refine", "refine_opt_state", "regularization_loss"]

Array = jax.Array
Dtype = Any
Variables = Mapping[str, Any]
_DEFAULTS = KANLayerConfig()  # the fields' defaults are the configuration's

# Grid-update mode: (grid_size or None, margin) while update_grid / refine runs the model.
_GRID_UPDATE: contextvars.ContextVar[Optional[tuple[Optional[int], float]]] = contextvars.ContextVar(
    "kan_jax_grid_update", default=None
)


@contextlib.contextmanager
def _grid_update_mode(grid_size: Optional[int], margin: float) -> Iterator[None]:
    token = _GRID_UPDATE.set((grid_size, margin))
    try:
        yield
    finally:
        _GRID_UPDATE.reset(token)


def _check_width(name: str, value: Any) -> None:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _init_forward(config: KANLayerConfig, n_bases: int) -> KANLayerConfig:
    # init's forward pass takes the dense product where "auto" would unroll the bases: the same
    # values to rounding, a program that compiles faster (benchmarks/optimisations.py).
    auto = config.spline_strategy == "auto"
    if auto and choose_spline_strategy(n_bases, config.spline_order, thresholds=config.strategy_thresholds) == "unrolled":
        return config.replace(spline_strategy="dense")
    return config


class KANLayerFields(nn.Module):
    """The fields of :class:`kan_jax.layer.KANLayerConfig` as keyword-only Linen module fields.

    Shared by :class:`KANLinear` and :class:`KAN`; ``module.config`` gathers (and validates)
    them. Meaning and defaults: see :class:`kan_jax.layer.KANLayerConfig`.
    """

    _: dataclasses.KW_ONLY
    grid_size: int = _DEFAULTS.grid_size
    spline_order: int = _DEFAULTS.spline_order
    scale_noise: float = _DEFAULTS.scale_noise
    scale_base: float = _DEFAULTS.scale_base
    scale_spline: float = _DEFAULTS.scale_spline
    enable_standalone_scale_spline: bool = _DEFAULTS.enable_standalone_scale_spline
    base_activation: Callable[[Array], Array] = _DEFAULTS.base_activation
    grid_eps: float = _DEFAULTS.grid_eps
    grid_range: tuple[float, float] = _DEFAULTS.grid_range
    spline_strategy: str = _DEFAULTS.spline_strategy
    strategy_thresholds: Optional[StrategyThresholds] = _DEFAULTS.strategy_thresholds
    dtype: Optional[Dtype] = _DEFAULTS.dtype
    param_dtype: Dtype = _DEFAULTS.param_dtype
    basis: str = _DEFAULTS.basis

    @property
    def config(self) -> KANLayerConfig:
        """The layer configuration held by the fields."""
        return KANLayerConfig(**{name: getattr(self, name) for name in KANLayerConfig.field_names()})

    def __post_init__(self) -> None:
        _ = self.config  # validates every configuration field
        super().__post_init__()

    @nn.nowrap
    def update_grid(self, variables: Variables, x: Array, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`update_grid` ``(self, variables, x, margin=margin)``."""
        return update_grid(self, variables, x, margin=margin)

    @nn.nowrap
    def refine(self, variables: Variables, x: Array, grid_size: int, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`refine` ``(self, variables, x, grid_size=grid_size, margin=margin)``."""
        return refine(self, variables, x, grid_size=grid_size, margin=margin)


class KANLinear(KANLayerFields):
    """A Kolmogorov-Arnold layer: SiLU base branch plus learnable B-spline edges (or another ``basis``).

    ``y = base_activation(x) @ base_weight.T + B(x) @ (spline_weight * spline_scaler[:, None])``
    with ``B(x)`` the ``(B, in·n)`` order-``k`` B-spline bases of the inputs on their knot grid
    (:mod:`kan_jax.layer.apply`). Initialised as efficient-kan (:mod:`kan_jax.layer.init`).

    Attributes:
      features: Number of outputs (positional).
      grid_size: Intervals of the initial grid; after :func:`refine` the size is read from the
        variables, so the same module applies.
      spline_order: Order ``k``.
      scale_noise: Size of the initial spline noise.
      scale_base: Kaiming gain of ``base_weight``.
      scale_spline: Kaiming gain of ``spline_scaler``.
      enable_standalone_scale_spline: Whether to learn ``spline_scaler``.
      base_activation: Activation of the residual branch.
      grid_eps: Uniform share of grids in grid updates.
      grid_range: ``(lo, hi)`` of the initial grid.
      spline_strategy: ``"auto"``, ``"unrolled"``, ``"dense"`` or ``"local"``.
      strategy_thresholds: Cost rule of ``"auto"`` (``None``: the backend's default).
      dtype: Computation dtype (``None``: promoted from the input and parameters).
      param_dtype: Dtype of the parameters and the grid.
      basis: Basis family of the edges (``"bspline"``, ``"chebyshev"``, ``"legendre"``,
        ``"fourier"``, ``"rbf"``; :func:`kan_jax.layer.basis_family`): the same parameters
        with the family's ``n`` bases per input, and the family's grid.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from kan_jax import KANLinear
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         x = nn.tanh(nn.Dense(16)(x))     # any Flax stem
      ...         return KANLinear(3)(x)             # KAN head
      >>> x = jnp.ones((8, 5))
      >>> variables = Net().init(jax.random.key(0), x)
      >>> sorted(variables)
      ['grid', 'params']
      >>> Net().apply(variables, x).shape
      (8, 3)
    """

    features: int

    def __post_init__(self) -> None:
        _check_width("features", self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Apply the layer to ``x`` of shape ``(..., in)``; returns ``(..., features)``."""
        if x.ndim < 1:
            raise ValueError("KANLinear expects inputs of shape (..., in_features), got a scalar")
        initializing = self.is_initializing()
        if not initializing and not self.has_variable("grid", "grid"):
            raise ValueError(
                "KANLinear needs its 'grid' collection: apply with {'params': ..., 'grid': ...} "
                "as returned by init, e.g. model.apply({'params': params, 'grid': variables['grid']}, x)"
            )
        config, out = self.config, self.features
        family = basis_family(config.basis)
        grid = self.variable("grid", "grid", family.initial_grid, config, x.shape[-1])
        in_features = grid.value.shape[0]
        if initializing:
            n = family.num_bases(self.grid_size, self.spline_order)
        else:
            n = self._check_variables(grid.value, x)  # before self.param compares shapes
        keys = init.layer_keys(self.make_rng("params")) if initializing else (None, None, None)
        base_init = init.kaiming_uniform(init.efficient_kan_slope(self.scale_base))
        spline_init = init.coefficient_initializer(config)
        params = {
            "base_weight": self._param("base_weight", base_init, (out, in_features), keys[0]),
            "spline_weight": self._param("spline_weight", spline_init, (in_features, n, out), keys[1]),
        }
        if self.enable_standalone_scale_spline:
            scaler_init = init.kaiming_uniform(init.efficient_kan_slope(self.scale_spline), in_axis=0)
            params["spline_scaler"] = self._param("spline_scaler", scaler_init, (in_features, out), keys[2])
        if _GRID_UPDATE.get() is not None and not initializing:
            params = self._update_grid(params, grid, x)
        return layer_apply(params, grid.value, x, _init_forward(config, n) if initializing else config)

    def _param(self, name: str, init_fn: init.Initializer, shape: tuple[int, ...], key: Optional[Array]) -> Array:
        # self.param drawing from `key`, this layer's split of its one key (init.layer_keys), so
        # that the values are those of init.init_layer; Flax's own key serves the shape check.
        return self.param(name, lambda rng, *args: init_fn(rng if key is None else key, *args), shape, self.param_dtype)

    def _check_variables(self, grid: Array, x: Array) -> int:
        # Shapes of existing variables, with messages naming the expected layouts; returns n.
        if grid.shape[0] != x.shape[-1]:
            raise ValueError(
                f"KANLinear expects inputs with last dimension in_features={grid.shape[0]}, "
                f"got an input of shape {tuple(x.shape)}"
            )
        names = ["base_weight", "spline_weight"] + (["spline_scaler"] if self.enable_standalone_scale_spline else [])
        params = {name: self.get_variable("params", name) for name in names}
        missing = [name for name, value in params.items() if value is None]
        if missing:
            raise ValueError(f"KANLinear {self.name!r} lacks its parameter(s) {missing} (expected {names})")
        n = params["spline_weight"].shape[1]
        if self.basis != "bspline":
            basis_family(self.basis).layer_spline_order(params, grid)
        elif layer_spline_order(params, grid) != self.spline_order:
            raise ValueError(
                f"grid with {grid.shape[-1]} knots per input does not match spline_weight with {n} "
                f"bases of order {self.spline_order} (expected {n + self.spline_order + 1} knots)"
            )
        return n

    def _update_grid(self, params: dict[str, Array], grid: Any, x: Array) -> dict[str, Array]:
        # Grid-update mode: adapt the grid to x, refit the splines, store both.
        if not (self.is_mutable_collection("params") and self.is_mutable_collection("grid")):
            raise ValueError("grid update needs the 'params' and 'grid' collections mutable")
        grid_size, margin = _GRID_UPDATE.get()
        params, grid.value = layer_update_grid(
            params, grid.value, x, grid_size=grid_size, grid_eps=self.grid_eps, margin=margin, basis=self.basis
        )
        self.put_variable("params", "spline_weight", params["spline_weight"])
        return params


class KAN(KANLayerFields):
    """A stack of :class:`KANLinear` layers, efficient-kan's ``KAN(layers_hidden)``.

    Sub-modules are named ``layers_0``, ``layers_1``, ... (efficient-kan's ``layers.0``, ...);
    every configuration field is passed to each layer (see :class:`KANLinear`).

    Attributes:
      layers_hidden: Widths ``[in, hidden..., out]``, at least two, each ``>= 1`` (positional).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kan_jax import KAN
      >>> model = KAN([2, 5, 1])
      >>> x = jax.random.uniform(jax.random.key(1), (256, 2), minval=-1, maxval=1)
      >>> variables = model.init(jax.random.key(0), x)
      >>> variables = model.update_grid(variables, x)   # grid adapted to the data, function kept
      >>> model.apply(variables, x).shape
      (256, 1)
    """

    layers_hidden: Sequence[int]

    def __post_init__(self) -> None:
        widths = tuple(self.layers_hidden)
        if len(widths) < 2 or any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths):
            raise ValueError(f"layers_hidden must list at least two widths >= 1, got {widths!r}")
        object.__setattr__(self, "layers_hidden", widths)  # a tuple keeps the module hashable (jit-static)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Apply the network to ``x`` of shape ``(..., layers_hidden[0])``."""
        if x.ndim < 1 or x.shape[-1] != self.layers_hidden[0]:
            raise ValueError(
                f"KAN expects inputs with last dimension {self.layers_hidden[0]} (layers_hidden[0]), "
                f"got an input of shape {tuple(x.shape)}"
            )
        fields = {name: getattr(self, name) for name in KANLayerConfig.field_names()}
        for i, features in enumerate(self.layers_hidden[1:]):
            x = KANLinear(features, name=f"layers_{i}", **fields)(x)
        return x

    @nn.nowrap
    def regularization_loss(
        self, params: Mapping[str, Any], regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> Array:
        """Same as :func:`regularization_loss`."""
        return regularization_loss(params, regularize_activation, regularize_entropy)

    @classmethod
    def from_efficient_kan(cls, state_dict: Mapping[str, Any], **kwargs: Any) -> tuple["KAN", dict[str, Any]]:
        """A :class:`KAN` and its variables from an efficient-kan ``state_dict``.

        Args:
          state_dict: efficient-kan's ``KAN.state_dict()`` (see
            :func:`kan_jax.layer.from_efficient_kan`).
          **kwargs: Further fields (``base_activation``, ``grid_eps``, ...); widths, grid size,
            spline order, the scaler and the grid range are read from the tensors.

        Returns:
          ``(model, variables)``.
        """
        if kwargs.get("basis", "bspline") != "bspline":
            raise ValueError(f"efficient-kan layers are B-spline layers; basis={kwargs['basis']!r} cannot hold them")
        variables = from_efficient_kan(state_dict)
        params = variables["params"]
        first = params["layers_0"]
        grid0 = np.asarray(variables["grid"]["layers_0"]["grid"])
        k = layer_spline_order(first, grid0)
        n_bases = first["spline_weight"].shape[1]
        widths = [first["base_weight"].shape[1]] + [params[f"layers_{i}"]["base_weight"].shape[0] for i in range(len(params))]
        config = dict(
            layers_hidden=tuple(widths),
            grid_size=n_bases - k,
            spline_order=k,
            enable_standalone_scale_spline="spline_scaler" in first,
            grid_range=(float(grid0[0, k]), float(grid0[0, -k - 1])),
            param_dtype=first["base_weight"].dtype,
        )
        config.update(kwargs)
        return cls(**config), variables


def update_grid(
    model: nn.Module,
    variables: Variables,
    *args: Any,
    margin: float = 0.01,
    method: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Adapt the grid of every :class:`KANLinear` in ``model`` to its activations on the samples.

    Runs ``model.apply(variables, *args, **kwargs)`` once in grid-update mode: each KAN layer,
    in call order, replaces its grid by :func:`kan_jax.splines.adaptive_grid` of its input
    (same grid size, its ``grid_eps``, this ``margin``) and refits ``spline_weight`` so that
    its outputs on these samples are kept (:func:`kan_jax.layer.layer_update_grid`); the next
    layer sees the updated layer's output. Pure and jit-able:
    ``jax.jit(functools.partial(update_grid, model))``. The parameter shapes do not change, so
    an optax state stays valid.

    Args:
      model: Any Linen module containing KAN layers.
      variables: Its variables (with ``"params"`` and ``"grid"``); other collections are
        passed through.
      *args: Inputs of ``model.apply`` (e.g. a few thousand samples ``x``).
      margin: Padding of the new grids beyond each input's sample range.
      method: Passed to ``model.apply``.
      **kwargs: Passed to ``model.apply``.

    Returns:
      The new variables; only ``grid`` and the ``spline_weight`` params differ.
    """
    with _grid_update_mode(None, margin):
        _, updated = model.apply(variables, *args, mutable=["params", "grid"], method=method, **kwargs)
    return {**variables, **updated}


def refine(
    model: nn.Module,
    variables: Variables,
    *args: Any,
    grid_size: int,
    margin: float = 0.01,
    method: Any = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Grid extension (pykan's ``refine``): every KAN layer gets a ``grid_size``-interval grid.

    As :func:`update_grid`, but ``spline_weight`` becomes ``(in, grid_size + k, out)``; the
    function is kept on the samples up to the least-squares residual (exactly when a uniform
    grid is refined by an integer factor with ``grid_eps=1``). For the other basis families
    ``grid_size`` is the new resolution (a Chebyshev layer's degree, exactly the same function
    when it grows; see :func:`kan_jax.layer.layer_update_grid`). The same ``model`` applies to
    the new variables. Continue training with :func:`refine_opt_state` or ``tx.init``.

    Args:
      model: Any Linen module containing KAN layers.
      variables: Its variables.
      *args: Inputs of ``model.apply``.
      grid_size: Intervals of the new grids, ``>= 1``.
      margin: Padding of the new grids beyond each input's sample range.
      method: Passed to ``model.apply``.
      **kwargs: Passed to ``model.apply``.

    Returns:
      The new variables.
    """
    grid_size = basis_family(getattr(model, "basis", "bspline")).check_grid_size(grid_size)
    with _grid_update_mode(grid_size, margin):
        _, updated = model.apply(variables, *args, mutable=["params", "grid"], method=method, **kwargs)
    return {**variables, **updated}


def refine_opt_state(opt_state: Any, tx: optax.GradientTransformation, new_params: Any, basis: str = "bspline") -> Any:
    """Carry an optax state across :func:`refine`.

    Args:
      opt_state: The state for the parameters before :func:`refine`.
      tx: The transformation.
      new_params: The parameters after :func:`refine`.
      basis: The layers' basis family. For a nested family (polynomials, Fourier: raising the
        resolution keeps every coefficient) the state of the kept coefficients is carried too.

    Returns:
      ``tx.init(new_params)`` with every leaf whose shape and dtype are unchanged (moments of
      ``base_weight`` and ``spline_scaler``, step counts) taken from ``opt_state``; for a
      nested family also the leading rows ``[:, :n_old]`` of the grown ``(in, n, out)``
      leaves (the moments of ``spline_weight``).
    """
    nested = basis_family(basis).nested

    def pick(old: Any, new: Any) -> Any:
        if getattr(old, "dtype", None) != getattr(new, "dtype", None):
            return new
        old_shape, new_shape = getattr(old, "shape", None), getattr(new, "shape", None)
        if old_shape == new_shape:
            return old
        grown = (
            nested and len(old_shape) == 3 and len(new_shape) == 3 and old_shape[::2] == new_shape[::2]
            and old_shape[1] < new_shape[1]
        )
        return new.at[:, : old_shape[1]].set(old) if grown else new

    return jax.tree.map(pick, opt_state, tx.init(new_params))


def regularization_loss(
    params: Mapping[str, Any], regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> Array:
    """Sum of :func:`kan_jax.layer.layer_regularization_loss` over every KAN layer in ``params``.

    Args:
      params: Parameters of any model; every sub-dict holding a ``spline_weight`` is a layer.
      regularize_activation: Weight of the L1 term.
      regularize_entropy: Weight of the entropy term.

    Returns:
      The scalar sum.

    Raises:
      ValueError: If ``params`` holds no KAN layer.
    """
    losses = []

    def visit(tree: Any) -> None:
        if isinstance(tree, Mapping):
            if "spline_weight" in tree:
                losses.append(layer_regularization_loss(tree, regularize_activation, regularize_entropy))
            else:
                for value in tree.values():
                    visit(value)

    visit(params)
    if not losses:
        raise ValueError("no KAN layer (a dict with 'spline_weight') found in params")
    return sum(losses[1:], losses[0])
