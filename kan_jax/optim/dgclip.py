r"""δ-GClip and GClip as optax gradient transformations.

δ-regularized gradient clipping rescales the whole update by one factor computed from the
global norm of the raw gradient: never above one (clipping) and never below ``delta`` (the
floor that makes the method provably train wide networks). GClip is ``delta = 0``. The factor
comes from the gradient before weight decay but multiplies the decayed gradient, so the method
is one transformation, :func:`scale_by_dgclip`; :func:`dgclip` and :func:`gclip` add the
learning rate.

References:
    Tucat, Mukherjee, Sen, Sun and Rivasplata, `Regularized Gradient Clipping Provably Trains
    Wide and Deep Neural Networks <https://arxiv.org/abs/2404.08624>`_, TMLR 2025.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from kan_jax.numerics import safe_divide

__all__ = ["ScaleByDGClipState", "scale_by_dgclip", "dgclip", "gclip"]

MaskOrFn = Optional[Union[Any, Callable[[optax.Params], Any]]]

try:  # optax's message for a transformation that needs ``params`` but got none
    from optax._src.base import NO_PARAMS_MSG
except ImportError:  # pragma: no cover
    NO_PARAMS_MSG = (
        "You are using a transformation that requires the current value of "
        "parameters, but you are not passing `params` when calling `update`.")


class ScaleByDGClipState(NamedTuple):
    """State of :func:`scale_by_dgclip`: the last global ``grad_norm`` and ``factor`` (float32, 0 at init)."""

    grad_norm: jax.Array
    factor: jax.Array


def _is_number(x: Any) -> bool:
    """True for Python / NumPy real scalars (not bools, arrays or tracers)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_hyperparameters(*, learning_rate: Any = None, gamma: Any = None, delta: Any = None,
                           weight_decay: Any = None) -> None:
    """Validates hyperparameters given as Python numbers (arrays and tracers pass; NaN fails)."""
    if learning_rate is not None and _is_number(learning_rate) and not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive (learning_rate > 0), got learning_rate={learning_rate!r}.")
    if _is_number(gamma) and not gamma > 0:
        raise ValueError(f"gamma (the clipping threshold) must be positive (gamma > 0), got gamma={gamma!r}.")
    if _is_number(delta) and not 0 <= delta <= 1:
        raise ValueError(f"delta (the floor of the clipping factor) must lie in [0, 1], got delta={delta!r}.")
    if _is_number(weight_decay) and not weight_decay >= 0:
        raise ValueError(f"weight_decay must be non-negative (weight_decay >= 0), got weight_decay={weight_decay!r}.")


def _accumulation_dtype(dtype: Any) -> Any:
    return jnp.promote_types(dtype, jnp.float32)


def _global_norm(tree: Any) -> jax.Array:
    """Global L2 norm in (at least) float32, with a finite derivative at 0."""
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree.leaves(tree):
        x = jnp.asarray(leaf)
        x = x.astype(_accumulation_dtype(x.dtype))
        total = total + jnp.sum(jnp.square(x.real) + jnp.square(x.imag) if jnp.iscomplexobj(x) else jnp.square(x))
    positive = total > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, total, 1.0)), 0.0)


def _full_mask(mask: Any, params: Any) -> Any:
    """One bool per leaf from a mask tree, a prefix of it or a callable."""
    mask_tree = mask(params) if callable(mask) else mask
    return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask_tree, params)


def scale_by_dgclip(
    gamma: jax.typing.ArrayLike,
    delta: jax.typing.ArrayLike,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale the (weight-decayed) gradient by the δ-GClip factor.

    With :math:`n = \|g\|_2` the global norm of the raw gradient over all leaves,

    .. math::
        c = \min\left(1, \max\left(\delta, \frac{\gamma}{n}\right)\right) \ (c = 0 \text{ if } n = 0),
        \qquad u = c \, (g + \lambda \, p),

    with :math:`\lambda` the weight decay on the leaves selected by ``mask``. The norm is
    accumulated in (at least) float32; each update keeps its gradient's dtype.

    Args:
        gamma: Clipping threshold :math:`\gamma > 0`.
        delta: Floor :math:`\delta \in [0, 1]` of the factor (``0``: GClip, ``1``: no clipping).
        weight_decay: :math:`\lambda \ge 0`, added before scaling; anything but a Python zero
            needs ``params`` in ``update``.
        mask: Where to decay: a tree of bools (or a prefix of the params tree), or a callable
            returning one, as in :func:`optax.add_decayed_weights`.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleByDGClipState`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = scale_by_dgclip(gamma=1.0, delta=0.1)
        >>> params = {'w': jnp.zeros(2, jnp.float32)}
        >>> updates, state = tx.update({'w': jnp.array([3.0, 4.0], jnp.float32)}, tx.init(params), params)
        >>> print(f"{float(state.grad_norm):.1f} {float(state.factor):.2f}", [round(float(u), 3) for u in updates['w']])
        5.0 0.20 [0.6, 0.8]
    """
    _check_hyperparameters(gamma=gamma, delta=delta, weight_decay=weight_decay)
    # Only a literal Python zero skips the decay: no Python branch depends on a traced value.
    static_no_decay = _is_number(weight_decay) and weight_decay == 0

    def init_fn(params):
        del params
        return ScaleByDGClipState(grad_norm=jnp.zeros((), jnp.float32), factor=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del state, extra_args
        if params is None and not static_no_decay:
            raise ValueError(NO_PARAMS_MSG)
        norm = _global_norm(updates)
        ratio = safe_divide(jnp.asarray(gamma), norm)
        factor = jnp.where(norm > 0, jnp.minimum(1.0, jnp.maximum(delta, ratio)), 0.0).astype(norm.dtype)

        def scale_leaf(g, p=None, decay=False):
            dtype = _accumulation_dtype(g.dtype)
            u = g.astype(dtype)
            if decay:
                u = u + jnp.asarray(weight_decay).astype(dtype) * p.astype(dtype)
            return (factor.astype(dtype) * u).astype(g.dtype)

        if static_no_decay:
            new_updates = jax.tree.map(scale_leaf, updates)
        else:
            decay_mask = jax.tree.map(lambda _: True, params) if mask is None else _full_mask(mask, params)
            new_updates = jax.tree.map(scale_leaf, updates, params, decay_mask)
        return new_updates, ScaleByDGClipState(grad_norm=norm.astype(jnp.float32), factor=factor.astype(jnp.float32))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def dgclip(
    learning_rate: optax.ScalarOrSchedule,
    gamma: jax.typing.ArrayLike = 0.1,
    delta: jax.typing.ArrayLike = 0.001,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""δ-regularized gradient clipping (δ-GClip).

    .. math::
        c_t = \min\left(1, \max\left(\delta, \frac{\gamma}{\|g_t\|_2}\right)\right), \qquad
        p_{t+1} = p_t - \eta_t \, c_t \, (g_t + \lambda \, p_t).

    A plain step while :math:`\|g_t\| \le \gamma`, a step of length :math:`\eta_t \gamma` up
    to :math:`\|g_t\| = \gamma / \delta`, and :math:`-\eta_t \delta g_t` beyond. Every float
    hyperparameter can be driven by :func:`optax.inject_hyperparams`.

    Args:
        learning_rate: :math:`\eta > 0` or an :class:`optax.Schedule`.
        gamma: Clipping threshold :math:`\gamma > 0`.
        delta: Floor :math:`\delta \in [0, 1]` (``0``: GClip, ``1``: SGD with L2 decay).
        weight_decay: :math:`\lambda \ge 0`, added to the gradient before scaling.
        mask: Where to decay (see :func:`scale_by_dgclip`).

    Returns:
        A :class:`optax.GradientTransformationExtraArgs`; ``optax.tree.get(state, 'grad_norm')``
        and ``optax.tree.get(state, 'factor')`` read the last norm and factor.

    Example:
        >>> import jax, optax, jax.numpy as jnp
        >>> f = lambda x: jnp.sum(x ** 2)
        >>> solver = dgclip(learning_rate=0.1, gamma=1.0, delta=0.1)
        >>> params = jnp.array([1., 2., 3.], jnp.float32)
        >>> opt_state = solver.init(params)
        >>> for _ in range(3):
        ...   updates, opt_state = solver.update(jax.grad(f)(params), opt_state, params)
        ...   params = optax.apply_updates(params, updates)
        ...   print('Objective function: {:.2f}'.format(f(params)))
        Objective function: 13.26
        Objective function: 12.54
        Objective function: 11.85
    """
    _check_hyperparameters(learning_rate=learning_rate, gamma=gamma, delta=delta, weight_decay=weight_decay)
    return optax.chain(
        scale_by_dgclip(gamma=gamma, delta=delta, weight_decay=weight_decay, mask=mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def gclip(
    learning_rate: optax.ScalarOrSchedule,
    gamma: jax.typing.ArrayLike = 0.1,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent clipped by global norm (GClip): :func:`dgclip` with :math:`\delta = 0`.

    .. math::
        p_{t+1} = p_t - \eta_t \min\left(1, \frac{\gamma}{\|g_t\|_2}\right) (g_t + \lambda \, p_t).

    Without weight decay this is ``optax.chain(optax.clip_by_global_norm(gamma), optax.sgd(lr))``.

    Args:
        learning_rate: :math:`\eta > 0` or an :class:`optax.Schedule`.
        gamma: Clipping threshold :math:`\gamma > 0`.
        weight_decay: :math:`\lambda \ge 0`.
        mask: Where to decay (see :func:`scale_by_dgclip`).

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` with the state layout of :func:`dgclip`.

    Example:
        >>> import optax, jax.numpy as jnp
        >>> solver = gclip(learning_rate=1.0, gamma=0.5)
        >>> params = {'w': jnp.ones(3, jnp.float32)}
        >>> _, state = solver.update({'w': jnp.array([0., 30., 40.], jnp.float32)}, solver.init(params), params)
        >>> print('factor: {:.3f}'.format(optax.tree.get(state, 'factor')))
        factor: 0.010
    """
    return dgclip(learning_rate=learning_rate, gamma=gamma, delta=0.0, weight_decay=weight_decay, mask=mask)
