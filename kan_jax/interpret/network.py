r"""A KAN as data to read: every edge function on a batch, conversions from and to the models.

A KAN layer computes :math:`y_o = \sum_i \phi_{o,i}(x_i)`. A network being read is a
:class:`KANNet` ``(params, state, spec)``:

* ``params`` (trainable, one dict per layer): the layer parameters of :mod:`kan_jax.layer`,
  ``base_weight (out, in)``, ``spline_weight (in, G + k, out)``, optional
  ``spline_scaler (in, out)``, plus ``affine (out, in, 4)``, the constants ``(a, b, c, d)``
  of the symbolic form ``c f(a x + b) + d`` of every edge (used only by snapped edges, which
  therefore stay trainable).
* ``state`` (not trainable, one dict per layer): ``grid (in, G + 2k + 1)``, ``mask (out, in)``
  (1 = edge alive, 0 = pruned), ``symbolic (out, in)`` (1 = the edge is its symbolic function)
  and ``fn (out, in)`` (int32, the index of that function in ``spec.functions``).
* ``spec`` (static, hashable): :class:`KANSpec`.

The edge function is

.. math::
    \phi_{o,i}(x) = m_{oi}\Big[(1 - s_{oi})\big(w^b_{oi}\, b(x) + \sum_j B_j(x)\,
    \tilde w_{ijo}\big) + s_{oi}\big(c_{oi} f_{oi}(a_{oi} x + b_{oi}) + d_{oi}\big)\Big],

``b`` the base activation (SiLU), :math:`\tilde w` the scaled spline weight (:math:`B_j` the
bases of the layers' family, :attr:`KANSpec.basis`). With ``m = 1``
and ``s = 0`` everywhere, :func:`apply` equals the Linen/NNX model's forward pass.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from kan_jax import layer

__all__ = [
    "KANSpec",
    "KANNet",
    "LayerParams",
    "LayerState",
    "from_params",
    "from_linen",
    "from_nnx",
    "pykan_init",
    "to_linen",
    "layer_edge_activations",
    "forward",
    "apply",
]

LayerParams = dict[str, jax.Array]
LayerState = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class KANSpec:
    """Static description of a network being read (hashable: a ``jit`` static argument).

    Attributes:
        spline_order: Order ``k`` of the splines of every layer (0 for the other families).
        base_activation: Activation of the residual branch (SiLU in efficient-kan).
        functions: The symbolic functions the ``fn`` indices of the state refer to (objects
            with a ``jax`` attribute, e.g. :class:`kan_jax.interpret.symbolic.SymbolicFunction`).
        basis: The basis family of every layer (:func:`kan_jax.layer.basis_family`).
    """

    spline_order: int
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu
    functions: tuple[Any, ...] = ()
    basis: str = "bspline"


class KANNet(NamedTuple):
    """A network being read: trainable ``params``, non-trainable ``state``, static ``spec``."""

    params: list[LayerParams]
    state: list[LayerState]
    spec: KANSpec

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths ``(n_0, n_1, ..., n_L)``."""
        return (int(self.params[0]["base_weight"].shape[1]),) + tuple(
            int(p["base_weight"].shape[0]) for p in self.params
        )


def _layer(idx: int, p: Any, g: Any, previous_out: int | None, basis: str) -> tuple[LayerParams, LayerState, int]:
    """One layer's params, state and spline order, with its shapes checked."""
    missing = [k for k in ("base_weight", "spline_weight") if k not in p]
    if missing:
        raise ValueError(f"layer {idx} params lack {missing}; got keys {sorted(p)}")
    bw, sw, g = jnp.asarray(p["base_weight"]), jnp.asarray(p["spline_weight"]), jnp.asarray(g)
    out_f, in_f = bw.shape
    if sw.ndim != 3 or (sw.shape[0], sw.shape[2]) != (in_f, out_f) or g.ndim != 2 or g.shape[0] != in_f:
        raise ValueError(
            f"layer {idx}: expected spline_weight (in={in_f}, n, out={out_f}) and grid (in={in_f}, M), "
            f"got {tuple(sw.shape)} and {tuple(g.shape)}"
        )
    if previous_out is not None and in_f != previous_out:
        raise ValueError(f"layer {idx} expects {in_f} inputs but layer {idx - 1} has {previous_out} outputs")
    lp = {"base_weight": bw, "spline_weight": sw}
    if p.get("spline_scaler") is not None:
        lp["spline_scaler"] = jnp.asarray(p["spline_scaler"])
        if lp["spline_scaler"].shape != (in_f, out_f):
            raise ValueError(
                f"layer {idx}: expected spline_scaler (in={in_f}, out={out_f}), got {tuple(lp['spline_scaler'].shape)}"
            )
    lp["affine"] = jnp.zeros((out_f, in_f, 4), bw.dtype).at[..., 0].set(1.0).at[..., 2].set(1.0)
    ls = {
        "grid": g,
        "mask": jnp.ones((out_f, in_f), bw.dtype),
        "symbolic": jnp.zeros((out_f, in_f), bw.dtype),
        "fn": jnp.zeros((out_f, in_f), jnp.int32),
    }
    return lp, ls, layer.basis_family(basis).layer_spline_order(lp, g)


def from_params(
    layer_params: Sequence[Any],
    grids: Sequence[jax.Array],
    *,
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu,
    basis: str = "bspline",
) -> KANNet:
    """Build a :class:`KANNet` (all edges alive and numeric) from layer params and grids.

    Args:
        layer_params: One parameter dict per layer, as in :mod:`kan_jax.layer`
            (``base_weight (out, in)``, ``spline_weight (in, G + k, out)``, optional
            ``spline_scaler (in, out)``).
        grids: One knot grid ``(in, G + 2k + 1)`` per layer (the family's grid for another
            ``basis``).
        base_activation: Activation of the residual branch.
        basis: The layers' basis family.

    Returns:
        The network, every ``affine`` set to ``(1, 0, 1, 0)``.

    Raises:
        ValueError: If the counts, shapes or spline orders of the layers do not fit together.
    """
    if len(layer_params) != len(grids) or not layer_params:
        raise ValueError(
            f"expected one grid per layer and at least one layer, got {len(layer_params)} layer(s) "
            f"and {len(grids)} grid(s)"
        )
    params, state, order = [], [], None
    for idx, (p, g) in enumerate(zip(layer_params, grids)):
        previous_out = int(params[-1]["base_weight"].shape[0]) if params else None
        lp, ls, k = _layer(idx, p, g, previous_out, basis)
        if order is None:
            order = k
        elif k != order:
            raise ValueError(f"every layer must have the same spline order; layer 0 has {order}, layer {idx} has {k}")
        params.append(lp)
        state.append(ls)
    return KANNet(params, state, KANSpec(int(order), base_activation, basis=basis))


def pykan_init(net: KANNet, scale_base: float = 1.0, scale_spline: float = 1.0) -> KANNet:
    """``net`` with pykan's initial scales: ``base_weight = scale_base``, ``spline_scaler = scale_spline``.

    efficient-kan draws both uniformly around zero with random signs; pykan starts every edge
    as ``silu(x) + small spline``, a symmetric start from which the sparsity regulariser
    reliably selects few nodes. The splines keep their small random coefficients.

    Args:
        net: The network.
        scale_base: Value of every base weight.
        scale_spline: Value of every spline scaler (without scalers: the factor applied to the
            spline weights).

    Returns:
        The rescaled network (same state and spec).
    """
    params = []
    for p in net.params:
        q = dict(p)
        q["base_weight"] = jnp.full_like(p["base_weight"], scale_base)
        if "spline_scaler" in p:
            q["spline_scaler"] = jnp.full_like(p["spline_scaler"], scale_spline)
        else:
            q["spline_weight"] = p["spline_weight"] * scale_spline
        params.append(q)
    return KANNet(params, list(net.state), net.spec)


def from_linen(model: Any, variables: Any) -> KANNet:
    """Convert a Linen :class:`kan_jax.KAN` and its variables to a :class:`KANNet`.

    Args:
        model: The Linen model (its ``base_activation`` is kept).
        variables: Its variables, with ``params`` and ``grid`` collections.

    Returns:
        The network.
    """
    if "params" not in variables or "grid" not in variables:
        raise ValueError(f"expected Linen KAN variables with 'params' and 'grid' collections, got {list(variables)}")
    names = [f"layers_{i}" for i in range(len(variables["params"]))]
    for name in names:
        if name not in variables["params"]:
            raise ValueError(f"expected sub-modules layers_0..{names[-1]}, got {sorted(variables['params'])}")
    return from_params(
        [variables["params"][nm] for nm in names],
        [variables["grid"][nm]["grid"] for nm in names],
        base_activation=getattr(model, "base_activation", jax.nn.silu),
        basis=getattr(model, "basis", "bspline"),
    )


def _value(v: Any) -> Any:
    """The array held by an NNX variable (or the array itself; ``None`` stays ``None``)."""
    if v is None:
        return None
    try:
        return jnp.asarray(v[...])
    except Exception:  # plain arrays or None-like data
        return None if getattr(v, "value", v) is None else jnp.asarray(getattr(v, "value", v))


def from_nnx(model: Any) -> KANNet:
    """Convert an NNX :class:`kan_jax.nnx.KAN` (attribute ``layers``) to a :class:`KANNet`.

    Args:
        model: The NNX model.

    Returns:
        The network.
    """
    layers = list(getattr(model, "layers", []))
    if not layers:
        raise ValueError(f"expected an NNX KAN with a non-empty 'layers' list, got {type(model).__name__}")
    params = [
        {
            "base_weight": _value(lyr.base_weight),
            "spline_weight": _value(lyr.spline_weight),
            "spline_scaler": _value(getattr(lyr, "spline_scaler", None)),
        }
        for lyr in layers
    ]
    grids = [_value(lyr.grid) for lyr in layers]
    config = getattr(layers[0], "config", None)
    return from_params(
        params, grids, base_activation=getattr(layers[0], "base_activation", jax.nn.silu),
        basis=getattr(config, "basis", "bspline"),
    )


def to_linen(net: KANNet, **kan_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A Linen :class:`kan_jax.KAN` and variables computing ``net`` (pruned edges zeroed).

    Args:
        net: A network without alive symbolic edges.
        **kan_kwargs: Overrides of the Linen model's fields.

    Returns:
        ``(model, variables)``.

    Raises:
        ValueError: If an alive edge is symbolic (a Linen KAN has numeric edges only).
    """
    from kan_jax import KAN

    for i, s in enumerate(net.state):
        if bool(jnp.any((s["symbolic"] * s["mask"]) > 0)):
            raise ValueError(f"layer {i} has symbolic edges; a Linen KAN can only hold numeric edges")
    p_out, g_out = {}, {}
    for i, (p, s) in enumerate(zip(net.params, net.state)):
        m = s["mask"]
        lp = {"base_weight": p["base_weight"] * m, "spline_weight": p["spline_weight"] * m.T[:, None, :]}
        if "spline_scaler" in p:
            lp["spline_scaler"] = p["spline_scaler"]
        p_out[f"layers_{i}"] = lp
        g_out[f"layers_{i}"] = {"grid": s["grid"]}
    k = net.spec.spline_order
    family = layer.basis_family(net.spec.basis)
    kwargs = dict(
        grid_size=family.layer_grid_size(net.params[0], net.state[0]["grid"]),
        spline_order=k,
        basis=net.spec.basis,
        base_activation=net.spec.base_activation,
        enable_standalone_scale_spline="spline_scaler" in net.params[0],
        param_dtype=net.params[0]["base_weight"].dtype,
    )
    kwargs.update(kan_kwargs)
    return KAN(net.widths, **kwargs), {"params": p_out, "grid": g_out}


def layer_edge_activations(lp: LayerParams, ls: LayerState, x: jax.Array, spec: KANSpec) -> jax.Array:
    """Every edge function of one layer on a batch: ``phi[b, o, i] = phi_{o,i}(x[b, i])``.

    Args:
        lp: The layer's params (see the module docstring).
        ls: The layer's state.
        x: Inputs, shape ``(B, in)``.
        spec: The network's :class:`KANSpec`.

    Returns:
        Shape ``(B, out, in)``; the sum over the last axis is the layer output.
    """
    if x.ndim != 2 or x.shape[1] != ls["grid"].shape[0]:
        raise ValueError(f"expected layer inputs of shape (B, {ls['grid'].shape[0]}), got {tuple(x.shape)}")
    core = {k: v.astype(x.dtype) for k, v in lp.items() if k != "affine"}
    spline = jnp.swapaxes(layer.edge_outputs(core, ls["grid"].astype(x.dtype), x, spec.basis), 1, 2)
    acts = spec.base_activation(x)[:, None, :] * core["base_weight"][None] + spline
    if spec.functions:
        aff = lp["affine"].astype(x.dtype)
        a, b, c, d = (aff[..., j] for j in range(4))
        u = a[None] * x[:, None, :] + b[None]
        sym = jnp.zeros_like(u)
        for idx, f in enumerate(spec.functions):
            sym = jnp.where(ls["fn"][None] == idx, f.jax(u), sym)
        sym = c[None] * sym + d[None]
        acts = jnp.where(ls["symbolic"][None] > 0, sym, acts)
    return acts * ls["mask"].astype(x.dtype)[None]


@functools.partial(jax.jit, static_argnames=("spec",))
def forward(
    params: Sequence[LayerParams], state: Sequence[LayerState], x: jax.Array, spec: KANSpec
) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
    """The network on ``x (B, n_0)`` with every layer's inputs and edge activations (jitted).

    Args:
        params: Layer params.
        state: Layer states.
        x: Inputs ``(B, n_0)``.
        spec: The network's spec (static).

    Returns:
        ``(y, inputs, acts)``: ``y (B, n_L)``; ``inputs[l] (B, n_l)`` the inputs of layer
        ``l``; ``acts[l] (B, n_{l+1}, n_l)`` its edge activations
        (:func:`layer_edge_activations`).
    """
    if x.ndim != 2 or x.shape[1] != params[0]["base_weight"].shape[1]:
        raise ValueError(
            f"expected inputs of shape (B, {params[0]['base_weight'].shape[1]}), got {tuple(x.shape)}"
        )
    inputs, acts = [], []
    h = x
    for lp, ls in zip(params, state):
        inputs.append(h)
        a = layer_edge_activations(lp, ls, h, spec)
        acts.append(a)
        h = jnp.sum(a, axis=-1)
    return h, inputs, acts


@functools.partial(jax.jit, static_argnames=("spec",))
def apply(params: Sequence[LayerParams], state: Sequence[LayerState], x: jax.Array, spec: KANSpec) -> jax.Array:
    """The network's output ``(B, n_L)`` on ``x (B, n_0)`` (pure, jitted; ``spec`` static).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from kan_jax import KAN, interpret as I
        >>> model = KAN([2, 3, 1])
        >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
        >>> net = I.from_linen(model, variables)
        >>> I.apply(net.params, net.state, jnp.ones((4, 2)), net.spec).shape
        (4, 1)
    """
    return forward(params, state, x, spec)[0]
