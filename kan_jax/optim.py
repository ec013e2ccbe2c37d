"""δ-GClip and GClip as optax gradient transformations.

δ-regularized gradient clipping (δ-GClip) rescales the whole update by one
factor computed from the global norm of the raw gradient. The factor is never
larger than one (like clipping) and never smaller than ``delta`` (the
regularization that makes the method provably train wide networks). GClip is
the special case ``delta = 0``, i.e. plain clipping by global norm.

The factor is computed from the gradient *before* weight decay but multiplies
the decayed gradient, so the method cannot be written as a chain of existing
optax transformations; :func:`scale_by_dgclip` is the single transformation
that does it, and :func:`dgclip` / :func:`gclip` add the learning rate.

Reference:
    Tucat, Mukherjee, Sen, Sun and Rivasplata, `Regularized Gradient Clipping
    Provably Trains Wide and Deep Neural Networks
    <https://arxiv.org/abs/2404.08624>`_, TMLR 2025.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from kan_jax.numerics import safe_divide

__all__ = [
    "ScaleByDGClipState",
    "scale_by_dgclip",
    "dgclip",
    "gclip",
]

MaskOrFn = Optional[Union[Any, Callable[[optax.Params], Any]]]

# optax's message for a transformation that needs ``params`` but got none
# (not exported publicly; fall back to the same wording if it moves).
try:
    from optax._src.base import NO_PARAMS_MSG as _NO_PARAMS_MSG
except ImportError:  # pragma: no cover
    _NO_PARAMS_MSG = (
        "You are using a transformation that requires the current value of "
        "parameters, but you are not passing `params` when calling `update`.")


class ScaleByDGClipState(NamedTuple):
    """State of :func:`scale_by_dgclip`, kept for logging.

    Attributes:
        grad_norm: Global L2 norm ``n`` of the raw gradient seen by the last
            update (float32 scalar; 0 before the first update).
        factor: Scaling factor ``c`` applied by the last update (float32 scalar;
            0 before the first update).
    """

    grad_norm: jax.Array
    factor: jax.Array


def _is_concrete_number(x: Any) -> bool:
    """True for Python / NumPy real scalars (not bools, arrays or tracers)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_hyperparameters(
    *,
    learning_rate: Any = None,
    gamma: Any = None,
    delta: Any = None,
    weight_decay: Any = None,
) -> None:
    """Validates hyperparameters that are concrete Python numbers.

    Arrays and tracers are not checked, so that the transformations can be
    built inside :func:`optax.inject_hyperparams`, ``jit`` and ``vmap``. The
    comparisons are written so that NaN fails them too.
    """
    if (learning_rate is not None and not callable(learning_rate)
            and _is_concrete_number(learning_rate) and not learning_rate > 0):
        raise ValueError(
            "learning_rate must be positive (learning_rate > 0), got "
            f"learning_rate={learning_rate!r}.")
    if _is_concrete_number(gamma) and not gamma > 0:
        raise ValueError(
            "gamma (the clipping threshold) must be positive (gamma > 0), got "
            f"gamma={gamma!r}.")
    if _is_concrete_number(delta) and not 0 <= delta <= 1:
        raise ValueError(
            "delta (the floor of the clipping factor) must lie in [0, 1], got "
            f"delta={delta!r}.")
    if _is_concrete_number(weight_decay) and not weight_decay >= 0:
        raise ValueError(
            "weight_decay must be non-negative (weight_decay >= 0), got "
            f"weight_decay={weight_decay!r}.")


def _accumulation_dtype(dtype: Any) -> Any:
    """At least float32: low-precision leaves are accumulated in float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _global_norm(tree: Any) -> jax.Array:
    """Global L2 norm over all leaves, accumulated in (at least) float32.

    The square root is guarded so that the norm has a finite derivative at 0.
    """
    total = jnp.zeros((), jnp.float32)
    for leaf in jax.tree.leaves(tree):
        x = jnp.asarray(leaf)
        x = x.astype(_accumulation_dtype(x.dtype))
        if jnp.iscomplexobj(x):
            sq = jnp.square(x.real) + jnp.square(x.imag)
        else:
            sq = jnp.square(x)
        total = total + jnp.sum(sq)
    positive = total > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, total, 1.0)), 0.0)


def _full_mask(mask: Any, params: Any) -> Any:
    """Resolves ``mask`` (tree, tree prefix or callable) to one bool per leaf."""
    mask_tree = mask(params) if callable(mask) else mask
    # ``mask_tree`` may be a prefix of ``params``: broadcast each of its leaves
    # over the matching subtree.
    return jax.tree.map(
        lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask_tree, params)


def scale_by_dgclip(
    gamma: jax.typing.ArrayLike,
    delta: jax.typing.ArrayLike,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales the (weight-decayed) gradient by the δ-GClip factor.

    With :math:`g` the incoming gradient, :math:`p` the parameters and
    :math:`n = \|g\|_2` the global L2 norm over *all* leaves of :math:`g`
    (taken before weight decay), the update is

    .. math::

        c = \begin{cases}
            \min\left(1, \max\left(\delta, \frac{\gamma}{n}\right)\right)
                & \text{if } n > 0, \\
            0 & \text{if } n = 0,
        \end{cases}
        \qquad
        u = c \, (g + \lambda \, p),

    where :math:`\lambda` is ``weight_decay`` (applied only to the leaves
    selected by ``mask``). This transformation does not apply the learning rate
    or flip the sign; see :func:`dgclip` for the full optimizer.

    The factor has three regimes:

    * :math:`n \le \gamma`: :math:`c = 1`, the gradient is used unchanged;
    * :math:`\gamma < n \le \gamma / \delta`: :math:`c = \gamma / n`, the
        gradient part of the update has norm exactly :math:`\gamma`;
    * :math:`n > \gamma / \delta`: :math:`c = \delta`, the scaling is floored
        so that large gradients are not shrunk to arbitrarily small steps.

    The norm is accumulated in (at least) float32 whatever the dtype of the
    gradients; each update leaf has the dtype of its gradient leaf. When the
    gradient is exactly zero the factor is 0: the update is exactly zero (no
    NaN) and no weight decay is applied at that step. A non-finite gradient
    gives a non-finite update; wrap the optimizer in
    :func:`optax.apply_if_finite` to skip such steps.

    Args:
        gamma: Clipping threshold :math:`\gamma > 0` on the gradient norm.
        delta: Floor :math:`\delta \in [0, 1]` of the scaling factor. ``0`` gives
            plain clipping by global norm (GClip); ``1`` disables clipping.
        weight_decay: Coefficient :math:`\lambda \ge 0` of the L2 term added to
            the gradient before scaling (it does not enter the norm :math:`n`).
            When it is anything but a Python zero, ``params`` must be passed to
            ``update``.
        mask: A tree with the same structure as (or a prefix of) the params
            pytree, or a callable that returns such a tree given the params. Leaves
            are booleans: ``True`` where weight decay is applied, ``False`` where it
            is skipped. The norm :math:`n` always covers all leaves. As with
            :func:`optax.add_decayed_weights`, the mask must be static. Under
            :func:`optax.inject_hyperparams`, pass a callable mask through
            ``static_args=('mask',)`` so that it is not taken for a schedule.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` whose state is a
        :class:`ScaleByDGClipState` holding the last norm and factor.

    Raises:
        ValueError: If a hyperparameter given as a Python number is out of range
            (arrays and tracers are not checked), or, at update time, if
            ``params`` is needed but missing.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from kan_jax.optim import scale_by_dgclip
        >>> tx = scale_by_dgclip(gamma=1.0, delta=0.1)
        >>> params = {'w': jnp.zeros(2, jnp.float32)}
        >>> state = tx.init(params)
        >>> grads = {'w': jnp.array([3.0, 4.0], jnp.float32)}  # norm 5
        >>> updates, state = tx.update(grads, state, params)
        >>> print(f"{float(state.grad_norm):.1f} {float(state.factor):.2f}")
        5.0 0.20
        >>> print([round(float(u), 3) for u in updates['w']])
        [0.6, 0.8]

    References:
        Tucat, Mukherjee, Sen, Sun and Rivasplata, `Regularized Gradient Clipping
        Provably Trains Wide and Deep Neural Networks
        <https://arxiv.org/abs/2404.08624>`_, TMLR 2025.
    """
    _check_hyperparameters(gamma=gamma, delta=delta, weight_decay=weight_decay)
    # Only a literal Python zero lets us skip the decay (and the need for
    # params); anything else, including arrays holding 0, takes the generic path
    # so that no Python branch depends on a traced value.
    static_no_decay = _is_concrete_number(weight_decay) and weight_decay == 0

    def init_fn(params):
        del params
        return ScaleByDGClipState(
            grad_norm=jnp.zeros((), jnp.float32),
            factor=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del state, extra_args
        if params is None and not static_no_decay:
            raise ValueError(_NO_PARAMS_MSG)

        norm = _global_norm(updates)
        positive = norm > 0
        ratio = safe_divide(jnp.asarray(gamma), norm)
        factor = jnp.where(
            positive, jnp.minimum(1.0, jnp.maximum(delta, ratio)), 0.0)
        factor = factor.astype(norm.dtype)

        def scale_leaf(g, p=None, decay=False):
            cdtype = _accumulation_dtype(g.dtype)
            u = g.astype(cdtype)
            if decay:
                wd = jnp.asarray(weight_decay).astype(cdtype)
                u = u + wd * p.astype(cdtype)
            return (factor.astype(cdtype) * u).astype(g.dtype)

        if static_no_decay:
            new_updates = jax.tree.map(scale_leaf, updates)
        else:
            if mask is None:
                decay_mask = jax.tree.map(lambda _: True, params)
            else:
                decay_mask = _full_mask(mask, params)
            new_updates = jax.tree.map(scale_leaf, updates, params, decay_mask)

        new_state = ScaleByDGClipState(
            grad_norm=norm.astype(jnp.float32),
            factor=factor.astype(jnp.float32))
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def dgclip(
    learning_rate: optax.ScalarOrSchedule,
    gamma: jax.typing.ArrayLike = 0.1,
    delta: jax.typing.ArrayLike = 0.001,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""δ-regularized gradient clipping (δ-GClip).

    Gradient descent whose step is rescaled by a factor computed from the global
    norm :math:`n = \|g_t\|_2` of the raw gradient (all leaves, before weight
    decay):

    .. math::

        c_t = \min\left(1, \max\left(\delta, \frac{\gamma}{n}\right)\right)
        \ (c_t = 0 \text{ if } n = 0),
        \qquad
        p_{t+1} = p_t - \eta_t \, c_t \, (g_t + \lambda \, p_t),

    with :math:`\eta_t` the learning rate and :math:`\lambda` the weight decay.
    Ignoring weight decay, the step follows one of three regimes:

    * :math:`n \le \gamma`: a plain gradient step :math:`-\eta_t g_t`;
    * :math:`\gamma < n \le \gamma / \delta`: a normalised step of length
        :math:`\eta_t \gamma` along :math:`-g_t`;
    * :math:`n > \gamma / \delta`: the factor is floored at :math:`\delta`, so
        the step is :math:`-\eta_t \delta g_t`, of length at least
        :math:`\eta_t \gamma`.

    The floor :math:`\delta > 0` is what distinguishes δ-GClip from standard
    gradient clipping (:func:`gclip`); with it, Tucat et al. prove that
    gradient descent converges to a global minimum of the training loss for
    deep networks that are wide enough. That guarantee covers the squared loss
    on sufficiently wide networks; with other losses (e.g. cross-entropy) or
    architectures (e.g. KANs) it is used without that guarantee.

    Args:
        learning_rate: A fixed global scaling factor :math:`\eta > 0`, or an
            :class:`optax.Schedule` giving it per step (see
            :func:`optax.scale_by_learning_rate`).
        gamma: Clipping threshold :math:`\gamma > 0` on the gradient norm.
        delta: Floor :math:`\delta \in [0, 1]` of the scaling factor; ``0`` gives
            GClip, ``1`` gives plain SGD with L2 decay added to the gradient.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient
            before it is scaled (the factor itself comes from the raw gradient).
        mask: Where to apply weight decay: a tree of booleans with the structure
            of (or a prefix of) the params, or a callable returning one, as in
            :func:`optax.add_decayed_weights`. The norm always covers all leaves.

    Returns:
        The corresponding :class:`optax.GradientTransformationExtraArgs`. Its
        state is ``(ScaleByDGClipState, <learning-rate state>)``; the last norm
        and factor can be read with ``optax.tree.get(state, 'grad_norm')`` and
        ``optax.tree.get(state, 'factor')``.

    Raises:
        ValueError: If a hyperparameter given as a Python number is out of range
            (``learning_rate <= 0``, ``gamma <= 0``, ``delta`` outside ``[0, 1]``
            or ``weight_decay < 0``), or, at update time, if ``weight_decay`` is
            not a Python zero and ``params`` is not passed.

    Every float hyperparameter may be driven through
    :func:`optax.inject_hyperparams` (also under ``jit`` and ``vmap``), e.g.
    ``optax.inject_hyperparams(dgclip)(learning_rate=1.0, gamma=0.5,
    delta=0.5)``. Weight decay is then applied to every leaf where ``mask``
    allows it, and ``params`` must be passed to ``update``.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from kan_jax.optim import dgclip
        >>> def f(x): return jnp.sum(x ** 2)  # simple quadratic function
        >>> solver = dgclip(learning_rate=0.1, gamma=1.0, delta=0.1)
        >>> params = jnp.array([1., 2., 3.], jnp.float32)
        >>> print('Objective function: {:.2f}'.format(f(params)))
        Objective function: 14.00
        >>> opt_state = solver.init(params)
        >>> for _ in range(3):
        ...   grad = jax.grad(f)(params)
        ...   updates, opt_state = solver.update(grad, opt_state, params)
        ...   params = optax.apply_updates(params, updates)
        ...   print('Objective function: {:.2f}'.format(f(params)))
        Objective function: 13.26
        Objective function: 12.54
        Objective function: 11.85
        >>> print('last gradient norm: {:.2f}'.format(
        ...     optax.tree.get(opt_state, 'grad_norm')))
        last gradient norm: 7.08

    References:
        Tucat, Mukherjee, Sen, Sun and Rivasplata, `Regularized Gradient Clipping
        Provably Trains Wide and Deep Neural Networks
        <https://arxiv.org/abs/2404.08624>`_, TMLR 2025.
    """
    _check_hyperparameters(
        learning_rate=learning_rate, gamma=gamma, delta=delta,
        weight_decay=weight_decay)
    return optax.chain(
        scale_by_dgclip(gamma=gamma, delta=delta, weight_decay=weight_decay,
                        mask=mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def gclip(
    learning_rate: optax.ScalarOrSchedule,
    gamma: jax.typing.ArrayLike = 0.1,
    weight_decay: jax.typing.ArrayLike = 0.0,
    mask: MaskOrFn = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent with gradient clipping by global norm (GClip).

    :func:`dgclip` with :math:`\delta = 0`:

    .. math::

        c_t = \min\left(1, \frac{\gamma}{\|g_t\|_2}\right)
        \ (c_t = 0 \text{ if } g_t = 0),
        \qquad
        p_{t+1} = p_t - \eta_t \, c_t \, (g_t + \lambda \, p_t).

    A plain gradient step while :math:`\|g_t\|_2 \le \gamma`, and a step of
    length :math:`\eta_t \gamma` along :math:`-g_t` (plus the scaled decay)
    beyond. Unlike :func:`dgclip`, very large gradients give arbitrarily small
    relative steps; the convergence guarantee of Tucat et al. needs
    :math:`\delta > 0`. Without weight decay this equals
    ``optax.chain(optax.clip_by_global_norm(gamma), optax.sgd(learning_rate))``.

    Args:
        learning_rate: A fixed global scaling factor :math:`\eta > 0`, or an
            :class:`optax.Schedule`.
        gamma: Clipping threshold :math:`\gamma > 0` on the gradient norm.
        weight_decay: L2 coefficient :math:`\lambda \ge 0`, added to the gradient
            before it is scaled by the factor computed from the raw gradient.
        mask: Where to apply weight decay (see :func:`dgclip`).

    Returns:
        The corresponding :class:`optax.GradientTransformationExtraArgs`, with
        the same state layout as :func:`dgclip`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from kan_jax.optim import gclip
        >>> solver = gclip(learning_rate=1.0, gamma=0.5, weight_decay=1e-4)
        >>> params = {'w': jnp.ones(3, jnp.float32)}
        >>> opt_state = solver.init(params)
        >>> grads = {'w': jnp.array([0., 30., 40.], jnp.float32)}
        >>> updates, opt_state = solver.update(grads, opt_state, params)
        >>> print('factor: {:.3f}'.format(optax.tree.get(opt_state, 'factor')))
        factor: 0.010

    References:
        Tucat, Mukherjee, Sen, Sun and Rivasplata, `Regularized Gradient Clipping
        Provably Trains Wide and Deep Neural Networks
        <https://arxiv.org/abs/2404.08624>`_, TMLR 2025.
    """
    return dgclip(learning_rate=learning_rate, gamma=gamma, delta=0.0,
                  weight_decay=weight_decay, mask=mask)
