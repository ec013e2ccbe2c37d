r"""Training a KAN being read: the regularised loss, full-batch L-BFGS and Adam, grid updates.

The loss is the KAN paper's :math:`\ell = \operatorname{mse} + \lambda R` with ``R`` the
sample-based regulariser (:func:`kan_jax.interpret.activation_regularizer`). The optimisers are
the shared loops of :mod:`kan_jax.training.loops` (one compiled loop, the step count traced, so
any number of steps reuses the compilation); :func:`train` interleaves them with grid updates
as pykan's ``fit`` does.

References:
    Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), section 2.5.1.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import layer
from kan_jax.interpret.network import KANNet, KANSpec, LayerParams, LayerState, forward, layer_edge_activations
from kan_jax.interpret.scores import activation_regularizer, input_extents
from kan_jax.training import loops

__all__ = ["mse_loss", "update_grids", "train_lbfgs", "train_adam", "train"]


def mse_loss(
    params: Sequence[LayerParams],
    state: Sequence[LayerState],
    x: jax.Array,
    y: jax.Array,
    spec: KANSpec,
    reg: Optional[dict[str, float]] = None,
) -> jax.Array:
    """Mean squared error plus ``reg["lamb"] *`` the activation regulariser (pure).

    Args:
        params: Layer params (differentiated).
        state: Layer states.
        x: Inputs ``(B, n_0)``.
        y: Targets ``(B, n_L)``.
        spec: The network's spec.
        reg: ``lamb``, the regulariser's weights (``lamb_l1``, ``lamb_entropy``, ``lamb_coef``,
            ``lamb_coefdiff``) and ``normalize`` (> 0: divide the edge norms by
            :func:`kan_jax.interpret.input_extents`, as pykan does); ``None`` for the plain MSE.

    Returns:
        The scalar loss.
    """
    pred, _, acts = forward(params, state, x, spec)
    loss = jnp.mean((pred - y) ** 2)
    if reg:
        reg = dict(reg)
        lamb = reg.pop("lamb", 0.0)
        normalize = reg.pop("normalize", 0.0)
        scales = [jnp.where(normalize > 0, e, 1.0) for e in input_extents(state, spec.spline_order)]
        loss = loss + lamb * activation_regularizer(acts, params, input_scales=scales, **reg)
    return loss


def update_grids(net: KANNet, x: jax.Array, grid_eps: float = 0.02, margin: float = 0.01) -> KANNet:
    """Adapt every layer's grid to the inputs it sees on ``x`` and refit its splines.

    Layer by layer (inputs recomputed with the updated earlier layers), with
    :func:`kan_jax.layer.layer_update_grid`: the numeric edges keep their function on the
    samples up to the least-squares residual; the base branch, the symbolic constants and the
    masks are untouched.

    Args:
        net: The network.
        x: Data ``(B, n_0)``.
        grid_eps: Blend between the quantile grid (0) and the uniform grid (1).
        margin: Extension of the grid beyond the data range.

    Returns:
        The network with new grids and spline weights.
    """
    params, state = list(net.params), [dict(s) for s in net.state]
    h = jnp.asarray(x)
    for i in range(len(params)):
        core = {k: v for k, v in params[i].items() if k != "affine"}
        new, grid = layer.layer_update_grid(
            core, state[i]["grid"], h, grid_eps=grid_eps, margin=margin, basis=net.spec.basis
        )
        params[i] = {**params[i], "spline_weight": new["spline_weight"]}
        state[i]["grid"] = grid
        h = jnp.sum(layer_edge_activations(params[i], state[i], h, net.spec), axis=-1)
    return KANNet(params, state, net.spec)


@functools.lru_cache(maxsize=None)
def _objective(spec: KANSpec):
    """``mse_loss`` with ``spec`` bound, one function object per spec (the loops' static ``fun``)."""

    def objective(params, state, x, y, reg):
        return mse_loss(params, state, x, y, spec, reg)

    return objective


def _run(loop, net: KANNet, x, y, steps: int, reg: dict[str, float], **options: Any) -> tuple[KANNet, np.ndarray]:
    """``steps`` (traced) steps of a :mod:`kan_jax.training.loops` loop on the loss of ``net``.

    Returns the trained network and the loss before the first step and after the last one.
    """
    args = (list(net.state), jnp.asarray(x), jnp.asarray(y), _reg_dict(**reg))
    out = loop(_objective(net.spec), list(net.params), *args, num_steps=jnp.asarray(int(steps)), history_size=1, **options)
    first = out.history.value[0]  # NaN when no step ran
    losses = np.asarray(jnp.stack([jnp.where(jnp.isnan(first), out.value, first), out.value]))
    return KANNet(list(out.params), list(net.state), net.spec), losses


_REG_DEFAULTS = dict(lamb=0.0, lamb_l1=1.0, lamb_entropy=2.0, lamb_coef=0.0, lamb_coefdiff=0.0, normalize=False)


def _reg_dict(**kw: float) -> dict[str, float]:
    """Always a dict of floats (traced): training with and without the regulariser compiles once."""
    bad = sorted(set(kw) - set(_REG_DEFAULTS))
    if bad:
        raise TypeError(f"unknown regulariser arguments {bad}; expected some of {sorted(_REG_DEFAULTS)}")
    return {k: float(v) for k, v in {**_REG_DEFAULTS, **kw}.items()}


def train_lbfgs(
    net: KANNet, x: jax.Array, y: jax.Array, steps: int, *, memory_size: int = 10, **reg: float
) -> tuple[KANNet, np.ndarray]:
    """``steps`` L-BFGS iterations (optax's, zoom line search) on ``mse + lamb * R``.

    One of pykan's L-BFGS "steps" is up to 20 iterations of PyTorch's L-BFGS.

    Args:
        net: The network.
        x: Inputs ``(B, n_0)``.
        y: Targets ``(B, n_L)``.
        steps: Iterations (any count reuses the compiled loop).
        memory_size: L-BFGS history length.
        **reg: ``lamb``, ``lamb_l1``, ``lamb_entropy``, ``lamb_coef``, ``lamb_coefdiff``,
            ``normalize`` (see :func:`mse_loss`).

    Returns:
        The trained network and the loss ``[before, after]``.
    """
    return _run(loops.lbfgs, net, x, y, steps, reg, memory_size=memory_size)


def train_adam(
    net: KANNet, x: jax.Array, y: jax.Array, steps: int, *, lr: float = 1e-2, **reg: float
) -> tuple[KANNet, np.ndarray]:
    """``steps`` full-batch Adam steps on ``mse + lamb * R``.

    The arguments and the result are those of :func:`train_lbfgs`, with the learning rate
    ``lr`` in place of ``memory_size``.
    """
    return _run(loops.adam, net, x, y, steps, reg, learning_rate=lr)


def train(
    net: KANNet,
    x: jax.Array,
    y: jax.Array,
    steps: int,
    *,
    opt: str = "lbfgs",
    update_grid: bool = True,
    grid_update_every: int = 5,
    stop_grid_update_step: int = 50,
    grid_eps: float = 0.02,
    **kwargs: Any,
) -> tuple[KANNet, np.ndarray]:
    """pykan-style training: ``opt`` ('lbfgs' or 'adam') with grid updates every few steps.

    Before the steps ``0, grid_update_every, 2 grid_update_every, ... < stop_grid_update_step``
    the grids are adapted to the data (:func:`update_grids`) and the optimiser restarts.

    Args:
        net: The network.
        x: Inputs ``(B, n_0)``.
        y: Targets ``(B, n_L)``.
        steps: Total optimiser steps.
        opt: ``"lbfgs"`` (:func:`train_lbfgs`) or ``"adam"`` (:func:`train_adam`).
        update_grid: Whether to update the grids at all.
        grid_update_every: Steps between grid updates.
        stop_grid_update_step: No grid update from this step on.
        grid_eps: See :func:`update_grids`.
        **kwargs: Passed to the optimiser's function (``lr``, ``memory_size``, the
            regulariser's weights).

    Returns:
        The trained network and the losses ``[before, after]`` of every run, concatenated.
    """
    if opt not in ("lbfgs", "adam"):
        raise ValueError(f"opt must be 'lbfgs' or 'adam', got {opt!r}")
    run = train_lbfgs if opt == "lbfgs" else train_adam
    hist = []
    done = 0
    while done < steps:
        if update_grid and done < stop_grid_update_step and done % grid_update_every == 0:
            net = update_grids(net, x, grid_eps)
            n = min(grid_update_every, steps - done)
        else:
            n = steps - done
        net, h = run(net, x, y, n, **kwargs)
        hist.append(h)
        done += n
    return net, (np.concatenate(hist) if hist else np.zeros(0))
