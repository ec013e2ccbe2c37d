"""Flax Linen fronts for KAN layers: :class:`KANLinear`, :class:`KAN`, grid update and refinement.

Variables of a KAN layer live in two collections::

    {"params": {"base_weight": (out, in), "spline_weight": (in, G + k, out),
                "spline_scaler": (in, out)},
     "grid":   {"grid": (in, G + 2k + 1)}}

The grid is state, not a parameter: an optimizer over ``variables["params"]`` never sees it,
and a compiled step that takes ``variables["grid"]`` as an argument always uses the current
grid (an updated grid of the same size reuses the compiled program; nothing is baked in).

Grid updates work on any Linen model that contains :class:`KANLinear` layers, however deep:
:func:`update_grid` runs the model once in *grid-update mode*, in which every KAN layer adapts
its grid to the activations that reach it, refits its splines so its function is kept, and
passes on the output of the updated layer (efficient-kan's ``forward(x, update_grid=True)``).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from kan_jax import functional as F
from kan_jax import splines

__all__ = [
    "KANLinear",
    "KAN",
    "update_grid",
    "refine",
    "refine_opt_state",
    "regularization_loss",
    "from_efficient_kan",
    "to_efficient_kan",
]

Array = jax.Array
Dtype = Any
Variables = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class _GridUpdateMode:
    grid_size: Optional[int]
    margin: float


_GRID_UPDATE: contextvars.ContextVar[Optional[_GridUpdateMode]] = contextvars.ContextVar(
    "kan_jax_grid_update", default=None
)


@contextlib.contextmanager
def _grid_update_mode(grid_size: Optional[int], margin: float) -> Iterator[None]:
    token = _GRID_UPDATE.set(_GridUpdateMode(grid_size, margin))
    try:
        yield
    finally:
        _GRID_UPDATE.reset(token)


def _linen_config_fields(cls_name: str) -> type[nn.Module]:
    """A Linen base module whose dataclass fields are those of :class:`KANLayerConfig`.

    The fields are declared once, in the configuration; this base turns them into keyword-only
    module attributes with the same defaults, so ``KANLinear(8, grid_size=10)`` and
    ``KAN([2, 5, 1], spline_order=2)`` read as before, and ``module.config`` rebuilds (and
    validates) the configuration from them.
    """
    annotations: dict[str, Any] = {"_config_fields": dataclasses.KW_ONLY}
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": cls_name}
    for field in dataclasses.fields(F.KANLayerConfig):
        annotations[field.name] = field.type
        namespace[field.name] = field.default
    namespace["__annotations__"] = annotations
    return type(cls_name, (nn.Module,), namespace)


_KANLayerFields = _linen_config_fields("_KANLayerFields")


def _config_of(module: Any) -> F.KANLayerConfig:
    return F.KANLayerConfig(**{name: getattr(module, name) for name in F.KANLayerConfig.field_names()})


class KANLinear(_KANLayerFields):
    """A Kolmogorov-Arnold layer: SiLU base branch plus learnable B-spline edges.

    ``y = base_activation(x) @ base_weight.T + B(x) @ (spline_weight * spline_scaler[:, None])``,
    with ``B(x)`` the ``(B, in·n)`` order-``k`` B-spline bases of every input on its knot grid,
    ``spline_weight`` of shape ``(in, n, out)`` read as ``(in·n, out)``
    (:mod:`kan_jax.functional` gives the maths and :mod:`kan_jax.splines` the bases).
    Initialisation follows efficient-kan: ``base_weight`` and ``spline_scaler`` are
    Kaiming-uniform with ``a = sqrt(5) * scale``, ``spline_weight`` a least-squares fit of
    uniform noise of size ``scale_noise / G``.

    Attributes
    ----------
    features:
        Number of outputs (positional).
    grid_size, spline_order, scale_noise, scale_base, scale_spline,
    enable_standalone_scale_spline, base_activation, grid_eps, grid_range, spline_strategy,
    dtype, param_dtype:
        Keyword-only; the fields of :class:`kan_jax.functional.KANLayerConfig` (defaults,
        meaning and validation are defined there once), available together as
        ``self.config``. After :func:`refine` the grid size is read from the variables, so the
        same module applies.

    Examples
    --------
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
        if isinstance(self.features, bool) or int(self.features) != self.features or self.features < 1:
            raise ValueError(f"features must be an integer >= 1, got {self.features!r}")
        _config_of(self)  # validates every configuration field
        super().__post_init__()

    @property
    def config(self) -> F.KANLayerConfig:
        """The layer's :class:`kan_jax.functional.KANLayerConfig`."""
        return _config_of(self)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Apply the layer to ``x`` of shape ``(..., in)``; returns ``(..., features)``."""
        if x.ndim < 1:
            raise ValueError("KANLinear expects inputs of shape (..., in_features), got a scalar")
        in_features = x.shape[-1]
        config = self.config
        if not self.is_initializing() and not self.has_variable("grid", "grid"):
            raise ValueError(
                "KANLinear needs its 'grid' collection: apply with {'params': ..., 'grid': ...} "
                "as returned by init, e.g. model.apply({'params': params, 'grid': variables['grid']}, x)"
            )
        names = ["base_weight", "spline_weight"] + (["spline_scaler"] if config.enable_standalone_scale_spline else [])
        if self.is_initializing():  # one initialisation for both fronts
            fresh, fresh_grid, fresh_output = F.init_layer_with_output(self.make_rng("params"), x, self.features, config)
        else:
            fresh, fresh_grid, fresh_output = {}, None, None
        grid_var = self.variable("grid", "grid", lambda: fresh_grid)
        grid = grid_var.value
        if grid.shape[0] != in_features:
            raise ValueError(
                f"KANLinear expects inputs with last dimension in_features={grid.shape[0]}, "
                f"got an input of shape {tuple(x.shape)}"
            )

        def existing_or_fresh(_key: Array, name: str) -> Array:
            # Flax calls the initialiser (under eval_shape) also to check an existing
            # parameter's shape; only init uses the fresh values.
            if name in fresh:
                return fresh[name]
            existing = self.get_variable("params", name)
            if existing is None:
                raise ValueError(f"KANLinear {self.name!r} lacks its parameter {name!r} (expected {names})")
            return jnp.zeros_like(existing)

        params = {name: self.param(name, existing_or_fresh, name) for name in names}
        spline_shape = tuple(params["spline_weight"].shape)
        if len(spline_shape) != 3 or (spline_shape[0], spline_shape[2]) != (in_features, self.features):
            raise ValueError(
                f"KANLinear {self.name!r}: spline_weight must have shape (in={in_features}, n, "
                f"out={self.features}), got {spline_shape} (efficient-kan's (out, in, n) layout "
                "converts with jnp.transpose(w, (1, 2, 0)), or use from_efficient_kan)"
            )
        expected_knots = spline_shape[1] + self.spline_order + 1
        if grid.shape[-1] != expected_knots:
            raise ValueError(
                f"grid with {grid.shape[-1]} knots per input does not match spline_weight with "
                f"{spline_shape[1]} bases of order {self.spline_order} "
                f"(expected {expected_knots} knots)"
            )

        mode = _GRID_UPDATE.get()
        if mode is not None and not self.is_initializing():
            if not (self.is_mutable_collection("params") and self.is_mutable_collection("grid")):
                raise ValueError("grid update needs the 'params' and 'grid' collections mutable")
            params, grid = F.layer_update_grid(
                params, grid, x, grid_size=mode.grid_size, grid_eps=self.grid_eps, margin=mode.margin
            )
            grid_var.value = grid
            self.put_variable("params", "spline_weight", params["spline_weight"])

        if self.is_initializing():  # the output of the fresh parameters, computed with them
            return fresh_output
        return F.layer_apply(params, grid, x, config)

    @nn.nowrap
    def update_grid(self, variables: Variables, x: Array, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`update_grid` ``(self, variables, x, margin=margin)``."""
        return update_grid(self, variables, x, margin=margin)

    @nn.nowrap
    def refine(self, variables: Variables, x: Array, grid_size: int, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`refine` ``(self, variables, x, grid_size=grid_size, margin=margin)``."""
        return refine(self, variables, x, grid_size=grid_size, margin=margin)


class KAN(_KANLayerFields):
    """A stack of :class:`KANLinear` layers, efficient-kan's ``KAN(layers_hidden)``.

    Sub-modules are named ``layers_0``, ``layers_1``, ... (efficient-kan's ``layers.0``, ...).
    Every other attribute is passed to each layer; see :class:`KANLinear`.

    Examples
    --------
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
        _config_of(self)  # validates every configuration field
        super().__post_init__()

    @property
    def config(self) -> F.KANLayerConfig:
        """The :class:`kan_jax.functional.KANLayerConfig` shared by every layer."""
        return _config_of(self)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Apply the network to ``x`` of shape ``(..., layers_hidden[0])``."""
        if x.ndim < 1 or x.shape[-1] != self.layers_hidden[0]:
            raise ValueError(
                f"KAN expects inputs with last dimension {self.layers_hidden[0]} (layers_hidden[0]), "
                f"got an input of shape {tuple(x.shape)}"
            )
        layer_config = {name: getattr(self, name) for name in F.KANLayerConfig.field_names()}
        for i, features in enumerate(self.layers_hidden[1:]):
            x = KANLinear(features, name=f"layers_{i}", **layer_config)(x)
        return x

    @nn.nowrap
    def update_grid(self, variables: Variables, x: Array, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`update_grid` ``(self, variables, x, margin=margin)``."""
        return update_grid(self, variables, x, margin=margin)

    @nn.nowrap
    def refine(self, variables: Variables, x: Array, grid_size: int, margin: float = 0.01) -> dict[str, Any]:
        """Same as :func:`refine` ``(self, variables, x, grid_size=grid_size, margin=margin)``."""
        return refine(self, variables, x, grid_size=grid_size, margin=margin)

    @nn.nowrap
    def regularization_loss(
        self, params: Mapping[str, Any], regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> Array:
        """Same as :func:`regularization_loss`."""
        return regularization_loss(params, regularize_activation, regularize_entropy)

    @classmethod
    def from_efficient_kan(cls, state_dict: Mapping[str, Any], **kwargs: Any) -> tuple["KAN", dict[str, Any]]:
        """Build a :class:`KAN` and its variables from an efficient-kan ``state_dict``.

        Widths, grid size, spline order, whether a ``spline_scaler`` exists and the grid range
        are read from the tensors; other attributes (``base_activation``, ``grid_eps``, ...)
        can be given as keyword arguments.
        """
        variables = from_efficient_kan(state_dict)
        params = variables["params"]
        first = params["layers_0"]
        n_bases = first["spline_weight"].shape[1]
        grid0 = np.asarray(variables["grid"]["layers_0"]["grid"])
        k = splines.spline_order_of(grid0, n_bases)
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


def _merge(variables: Variables, updated: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(variables)
    merged.update(updated)
    return merged


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
    (same grid size, its ``grid_eps``, this ``margin``) and refits ``spline_weight`` by least
    squares so that the layer's outputs on these samples are kept (see
    :func:`kan_jax.functional.layer_update_grid`); the next layer sees the updated layer's
    output. Pure and jit-able: ``jax.jit(functools.partial(update_grid, model))``.

    The parameter shapes do not change, so an optax state for the old params remains valid
    for the new ones and training continues with it unchanged.

    Parameters
    ----------
    model:
        Any Linen module containing KAN layers.
    variables:
        Its variables (with ``"params"`` and ``"grid"``); other collections are passed through.
    *args, **kwargs:
        Inputs of ``model.apply`` (e.g. a batch of samples ``x``; several thousand samples
        give a good grid).
    margin:
        Padding of the new grids beyond each input's sample range.
    method:
        Passed to ``model.apply``.

    Returns
    -------
    dict
        New variables; only ``grid`` and the ``spline_weight`` params differ.
    """
    with _grid_update_mode(None, margin):
        _, updated = model.apply(variables, *args, mutable=["params", "grid"], method=method, **kwargs)
    return _merge(variables, updated)


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

    As :func:`update_grid`, but the new grids have ``grid_size`` intervals and ``spline_weight``
    changes shape to ``(in, grid_size + k, out)``; the function is kept on the samples up to
    the least-squares residual (exactly when refining a uniform grid by an integer factor with
    ``grid_eps=1``). The same ``model`` applies to the new variables (layers read their grid
    size from the variables). Since a parameter changes shape, continue training with
    :func:`refine_opt_state` (keeps the state of unchanged parameters, restarts the spline
    weights') or simply ``tx.init(new_params)``.
    """
    splines.validate_grid_args(grid_size, 0)
    with _grid_update_mode(int(grid_size), margin):
        _, updated = model.apply(variables, *args, mutable=["params", "grid"], method=method, **kwargs)
    return _merge(variables, updated)


def refine_opt_state(opt_state: Any, tx: optax.GradientTransformation, new_params: Any) -> Any:
    """Carry an optax state across :func:`refine`.

    A fresh ``tx.init(new_params)`` supplies the structure; every leaf whose shape is
    unchanged (moments of ``base_weight`` and ``spline_scaler``, step counts, ...) is taken
    from ``opt_state``, while leaves of resized parameters (``spline_weight``) start afresh.
    """
    fresh = tx.init(new_params)

    def pick(old: Any, new: Any) -> Any:
        same = getattr(old, "shape", None) == getattr(new, "shape", None) and getattr(old, "dtype", None) == getattr(
            new, "dtype", None
        )
        return old if same else new

    return jax.tree.map(pick, opt_state, fresh)


def regularization_loss(
    params: Mapping[str, Any], regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> Array:
    """Sum of :func:`kan_jax.functional.layer_regularization_loss` over every KAN layer in ``params``.

    Any sub-dict holding a ``spline_weight`` counts as a layer, so this works on the params of
    a :class:`KAN` as well as of a user model with KAN layers inside.
    """
    losses = []

    def visit(tree: Any) -> None:
        if isinstance(tree, Mapping):
            if "spline_weight" in tree:
                losses.append(F.layer_regularization_loss(tree, regularize_activation, regularize_entropy))
            else:
                for value in tree.values():
                    visit(value)

    visit(params)
    if not losses:
        raise ValueError("no KAN layer (a dict with 'spline_weight') found in params")
    return sum(losses[1:], losses[0])


_EK_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(base_weight|spline_weight|spline_scaler|grid)$")


def from_efficient_kan(state_dict: Mapping[str, Any], dtype: Dtype = jnp.float32) -> dict[str, Any]:
    """Linen variables of :class:`KAN` from a PyTorch efficient-kan ``KAN.state_dict()``.

    Parameters
    ----------
    state_dict:
        Mapping of names such as ``layers.0.base_weight``, ``layers.0.spline_weight``,
        ``layers.0.spline_scaler``, ``layers.0.grid`` (an optional prefix such as ``module.``
        is allowed) to NumPy arrays or tensors.
    dtype:
        Dtype of the returned arrays.

    Returns
    -------
    dict
        ``{"params": {"layers_i": {...}}, "grid": {"layers_i": {"grid": ...}}}``; outputs of
        ``KAN(...).apply`` equal efficient-kan's (same formula, including the scaler).
        ``spline_weight`` is transposed from efficient-kan's ``(out, in, n)`` to this
        library's ``(in, n, out)`` and ``spline_scaler`` from ``(out, in)`` to ``(in, out)``;
        ``base_weight`` keeps its layout.
    """
    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, value in state_dict.items():
        match = _EK_KEY.search(name)
        if match is None:
            continue
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = np.asarray(value)
    if not layers:
        raise ValueError("no efficient-kan layer found: expected keys like 'layers.0.base_weight'")
    if sorted(layers) != list(range(len(layers))):
        raise ValueError(f"efficient-kan layers must be numbered 0..L-1, got {sorted(layers)}")
    params, grids = {}, {}
    prev_out = None
    for i in range(len(layers)):
        layer = layers[i]
        missing = {"base_weight", "spline_weight", "grid"} - set(layer)
        if missing:
            raise ValueError(f"efficient-kan layer {i} lacks {sorted(missing)}")
        out_f, in_f = layer["base_weight"].shape
        if layer["spline_weight"].ndim != 3 or layer["spline_weight"].shape[:2] != (out_f, in_f):
            raise ValueError(
                f"layers.{i}.spline_weight: expected shape ({out_f}, {in_f}, n), got {layer['spline_weight'].shape}"
            )
        if layer["grid"].ndim != 2 or layer["grid"].shape[0] != in_f:
            raise ValueError(f"layers.{i}.grid: expected shape ({in_f}, M), got {layer['grid'].shape}")
        if "spline_scaler" in layer and layer["spline_scaler"].shape != (out_f, in_f):
            raise ValueError(
                f"layers.{i}.spline_scaler: expected shape ({out_f}, {in_f}), got {layer['spline_scaler'].shape}"
            )
        if prev_out is not None and prev_out != in_f:
            raise ValueError(f"layer {i} takes {in_f} inputs but layer {i - 1} gives {prev_out} outputs")
        prev_out = out_f
        name = f"layers_{i}"
        params[name] = {
            key: jnp.asarray(layer[key], dtype) for key in ("base_weight", "spline_weight", "spline_scaler") if key in layer
        }
        params[name]["spline_weight"] = jnp.transpose(params[name]["spline_weight"], (1, 2, 0))  # (in, n, out)
        if "spline_scaler" in params[name]:
            params[name]["spline_scaler"] = params[name]["spline_scaler"].T  # (in, out)
        grids[name] = {"grid": jnp.asarray(layer["grid"], dtype)}
    return {"params": params, "grid": grids}


def to_efficient_kan(variables: Variables) -> dict[str, np.ndarray]:
    """An efficient-kan ``state_dict`` (NumPy arrays) from :class:`KAN` variables.

    ``spline_weight`` and ``spline_scaler`` are transposed back to efficient-kan's ``(out, in, n)``
    and ``(out, in)``.

    Load it in PyTorch with ``model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    params, grids = variables["params"], variables["grid"]
    state: dict[str, np.ndarray] = {}
    for name in sorted(params, key=lambda n: int(n.split("_")[-1])):
        i = int(name.split("_")[-1])
        for key, value in params[name].items():
            value = np.asarray(value)
            if key == "spline_weight":
                value = value.transpose(2, 0, 1)
            elif key == "spline_scaler":
                value = value.T
            state[f"layers.{i}.{key}"] = np.ascontiguousarray(value)
        state[f"layers.{i}.grid"] = np.asarray(grids[name]["grid"])
    return state
