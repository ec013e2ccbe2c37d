r"""Optimisation loops over a scalar function: L-BFGS, Adam, any optax transformation.

Each loop minimises ``fun(params, *args) -> scalar`` in one compiled ``lax.while_loop``
whose step count is a traced argument: one compilation serves every step count and every
value of ``args`` of the same shapes. Line-search methods (:func:`optax.lbfgs`, HSODM) are
driven the way optax documents them: the value and gradient the line search stored in the
state are reused through :func:`optax.value_and_grad_from_state`, and the objective goes to
``update`` as ``value_fn``.

Per step the loop can record a :class:`StepRecord` (the objective and gradient norm before
the step, the evaluations it cost, whether it was skipped, and an optional ``monitor`` of the
new parameters) into a buffer of ``history_size`` rows; rows past the last step hold NaN.

Example:
    >>> import jax.numpy as jnp
    >>> from kan_jax.training import loops
    >>> def fun(x, c):
    ...     return jnp.sum((x - c) ** 2)
    >>> out = loops.lbfgs(fun, jnp.zeros(3), jnp.arange(3.0), num_steps=5)
    >>> [round(float(v), 4) for v in out.params]
    [0.0, 1.0, 2.0]

References:
    J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer, 2006
    (L-BFGS: Algorithm 7.5; zoom line search: Algorithms 3.5 and 3.6).
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["StepRecord", "LoopResult", "minimize", "lbfgs", "adam"]


class StepRecord(NamedTuple):
    """What one step of a loop records (one row of :attr:`LoopResult.history`).

    Attributes:
        value: the objective at the parameters the step started from.
        grad_norm: the global norm of the gradient there.
        num_evals: evaluations of the objective and its gradient the step made (one for a
            first-order step; the line-search evaluations, plus one where the step had no
            stored value to reuse, for a line-search method).
        skipped: the step's update was not finite and was dropped (``skip_nonfinite``).
        monitor: ``monitor(new_params, *args)``, or ``None`` without a monitor.
    """

    value: jax.Array
    grad_norm: jax.Array
    num_evals: jax.Array
    skipped: jax.Array
    monitor: Any


class LoopResult(NamedTuple):
    """What a loop returns.

    Attributes:
        params: the parameters after the last step.
        opt_state: the optimiser state after the last step (pass it back as ``opt_state`` to
            continue the run exactly where it stopped).
        value: the objective at ``params``.
        grad_norm: the global norm of its gradient at ``params``.
        history: a :class:`StepRecord` whose leaves have a leading axis of ``history_size``
            (the first ``history_size`` steps; rows past the last step are NaN, zero or
            ``False``), or ``None`` when ``history_size`` is 0.
    """

    params: Any
    opt_state: Any
    value: jax.Array
    grad_norm: jax.Array
    history: Optional[StepRecord]


def _stores_value(state: Any) -> bool:
    """Whether ``state`` carries a line search's stored objective value."""
    return optax.tree.get(state, "value") is not None


def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _padding(shape: jax.ShapeDtypeStruct, size: int) -> jax.Array:
    fill = jnp.nan if jnp.issubdtype(shape.dtype, jnp.inexact) else 0
    return jnp.full((size, *shape.shape), fill, shape.dtype)


def _fit(rows: jax.Array, size: int) -> jax.Array:
    """``rows`` cut or padded (as :func:`_padding`) to ``size`` rows."""
    if rows.shape[0] >= size:
        return rows[:size]
    pad = _padding(jax.ShapeDtypeStruct(rows.shape[1:], rows.dtype), size - rows.shape[0])
    return jnp.concatenate([rows, pad])


def _run(
    fun: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    params: Any,
    args: tuple,
    num_steps: jax.Array,
    opt_state: Any,
    history_size: int,
    monitor: Optional[Callable[..., Any]],
    skip_nonfinite: bool,
) -> LoopResult:
    def objective(p):
        return fun(p, *args)

    state = optimizer.init(params) if opt_state is None else opt_state
    line_search = _stores_value(state)
    value_and_grad = optax.value_and_grad_from_state(objective) if line_search else jax.value_and_grad(objective)

    def step(p, s):
        if line_search:
            fresh = ~jnp.isfinite(optax.tree.get(s, "value"))
            value, grad = value_and_grad(p, state=s)
            updates, new_s = optimizer.update(grad, s, p, value=value, grad=grad, value_fn=objective)
            num_evals = optax.tree.get(new_s, "num_linesearch_steps", 0) + fresh
        else:
            value, grad = value_and_grad(p)
            updates, new_s = optimizer.update(grad, s, p)
            num_evals = 1
        new_p = optax.apply_updates(p, updates)
        skipped = jnp.asarray(False)
        if skip_nonfinite:
            skipped = ~_all_finite(updates)
            new_p, new_s = jax.tree.map(lambda a, b: jnp.where(skipped, b, a), (new_p, new_s), (p, s))
        watched = None if monitor is None else monitor(new_p, *args)
        record = StepRecord(value, optax.tree.norm(grad), jnp.asarray(num_evals, jnp.int32), skipped, watched)
        return new_p, new_s, record

    if isinstance(num_steps, int):
        def scan_body(carry, _):
            p, s, record = step(*carry)
            return (p, s), (record if history_size else None)

        (params, state), records = jax.lax.scan(scan_body, (params, state), None, length=num_steps)
        history = None if not history_size else jax.tree.map(lambda r: _fit(r, history_size), records)
    else:
        history = None
        if history_size:
            shapes = jax.eval_shape(step, params, state)[2]
            history = jax.tree.map(lambda s: _padding(s, history_size), shapes)

        def body(i, carry):
            p, s, hist = carry
            p, s, record = step(p, s)
            if hist is not None:
                hist = jax.tree.map(lambda buf, r: buf.at[i].set(r, mode="drop"), hist, record)
            return p, s, hist

        params, state, history = jax.lax.fori_loop(0, num_steps, body, (params, state, history))
    value, grad = jax.value_and_grad(objective)(params)
    return LoopResult(params, state, value, optax.tree.norm(grad), history)


_STATIC = ("history_size", "monitor", "skip_nonfinite")


def _compiled(impl: Callable[..., LoopResult], static: tuple[str, ...]) -> Callable[..., LoopResult]:
    """``impl`` jitted twice: with ``num_steps`` traced (a while loop) and static (a scan)."""
    traced = jax.jit(impl, static_argnums=0, static_argnames=static)
    fixed = jax.jit(impl, static_argnums=0, static_argnames=(*static, "num_steps"))

    def call(fun, params, *args, num_steps, **kwargs):
        if isinstance(num_steps, (int, np.integer)) and not isinstance(num_steps, bool):
            return fixed(fun, params, *args, num_steps=int(num_steps), **kwargs)
        return traced(fun, params, *args, num_steps=jnp.asarray(num_steps), **kwargs)

    return call


def _minimize(fun, params, *args, optimizer, num_steps, opt_state, history_size, monitor, skip_nonfinite):
    return _run(fun, optimizer, params, args, num_steps, opt_state, history_size, monitor, skip_nonfinite)


def _lbfgs(fun, params, *args, memory_size, num_steps, opt_state, history_size, monitor, skip_nonfinite):
    optimizer = optax.lbfgs(memory_size=memory_size)
    return _run(fun, optimizer, params, args, num_steps, opt_state, history_size, monitor, skip_nonfinite)


def _adam(fun, params, *args, learning_rate, num_steps, opt_state, history_size, monitor, skip_nonfinite):
    optimizer = optax.adam(learning_rate)
    return _run(fun, optimizer, params, args, num_steps, opt_state, history_size, monitor, skip_nonfinite)


_minimize_jit = _compiled(_minimize, ("optimizer", *_STATIC))
_lbfgs_jit = _compiled(_lbfgs, ("memory_size", *_STATIC))
_adam_jit = _compiled(_adam, _STATIC)

def minimize(
    fun: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    optimizer: optax.GradientTransformation,
    num_steps: int | jax.Array,
    opt_state: Any = None,
    history_size: int = 0,
    monitor: Optional[Callable[..., Any]] = None,
    skip_nonfinite: bool = False,
) -> LoopResult:
    r"""``num_steps`` steps of ``optimizer`` on ``fun(params, *args)`` in one compiled loop.

    A transformation whose state stores the objective value (a line search, as in
    :func:`optax.lbfgs`) gets ``value``, ``grad`` and ``value_fn`` in ``update``; any other
    gets the gradient alone. A step count given as an array is traced (a ``lax.while_loop``:
    one compilation serves every count); a Python ``int`` compiles a ``lax.scan`` of that
    length. The two give the same iterates up to rounding.

    Args:
        fun: the objective, ``fun(params, *args) -> scalar``. It is a static argument: pass
            the same function object to reuse the compilation.
        params: the initial parameters (any pytree of arrays).
        *args: further arguments of ``fun`` (traced: new data does not recompile).
        optimizer: an optax transformation (static: reuse the same object).
        num_steps: the number of steps (an array: traced; an ``int``: static).
        opt_state: the state to continue from (a previous :attr:`LoopResult.opt_state`);
            ``None`` starts afresh with ``optimizer.init(params)``.
        history_size: rows of the per-step :class:`StepRecord` buffer (0: no history).
        monitor: ``monitor(params, *args) -> pytree`` recorded after every step.
        skip_nonfinite: drop a step whose update has a non-finite entry (parameters and state
            kept, the step marked ``skipped``).

    Returns:
        A :class:`LoopResult`.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from kan_jax.training import loops
        >>> def fun(x):
        ...     return jnp.sum(x ** 2)
        >>> out = loops.minimize(fun, jnp.ones(2), optimizer=optax.sgd(0.25), num_steps=3, history_size=3)
        >>> out.history.value.tolist()
        [2.0, 0.5, 0.125]
    """
    return _minimize_jit(fun, params, *args, optimizer=optimizer, num_steps=num_steps, opt_state=opt_state,
                         history_size=history_size, monitor=monitor, skip_nonfinite=skip_nonfinite)


def lbfgs(
    fun: Callable[..., jax.Array], params: Any, *args: Any, memory_size: int = 10, **options: Any
) -> LoopResult:
    r"""Iterations of L-BFGS (:func:`optax.lbfgs`, zoom line search) on ``fun``.

    Args:
        fun: the objective, ``fun(params, *args) -> scalar`` (static).
        params: the initial parameters.
        *args: further arguments of ``fun`` (traced).
        memory_size: the number of curvature pairs kept.
        **options: ``num_steps`` (required), ``opt_state``, ``history_size``, ``monitor``,
            ``skip_nonfinite``, as in :func:`minimize`.

    Returns:
        A :class:`LoopResult`.

    Example:
        >>> import jax.numpy as jnp
        >>> from kan_jax.training import loops
        >>> def rosenbrock(x):
        ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        >>> out = loops.lbfgs(rosenbrock, jnp.zeros(2), num_steps=jnp.asarray(50))
        >>> [round(float(v), 3) for v in out.params]
        [1.0, 1.0]
    """
    return _lbfgs_jit(fun, params, *args, memory_size=memory_size, **_with_defaults(options))


def adam(
    fun: Callable[..., jax.Array], params: Any, *args: Any, learning_rate: float | jax.Array = 1e-3, **options: Any
) -> LoopResult:
    r"""Full-batch Adam steps (:func:`optax.adam`) on ``fun``.

    Args:
        fun: the objective, ``fun(params, *args) -> scalar`` (static).
        params: the initial parameters.
        *args: further arguments of ``fun`` (traced).
        learning_rate: Adam's step size (traced: a new rate does not recompile).
        **options: ``num_steps`` (required), ``opt_state``, ``history_size``, ``monitor``,
            ``skip_nonfinite``, as in :func:`minimize`.

    Returns:
        A :class:`LoopResult`.
    """
    return _adam_jit(fun, params, *args, learning_rate=learning_rate, **_with_defaults(options))


def _with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :func:`minimize`'s keywords, with its defaults filled in."""
    defaults = {"opt_state": None, "history_size": 0, "monitor": None, "skip_nonfinite": False}
    unknown = sorted(set(options) - set(defaults) - {"num_steps"})
    if unknown or "num_steps" not in options:
        raise TypeError(f"expected num_steps and some of {sorted(defaults)}; got {sorted(options)}")
    return {**defaults, **options}
