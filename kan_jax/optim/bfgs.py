r"""BFGS: the dense quasi-Newton method, as an optax transformation with a line search.

The direction is ``−H_k g_k`` with ``H_k`` the inverse-Hessian approximation, updated after
every step from ``s = x_k − x_{k−1}`` and ``y = g_k − g_{k−1}``,

.. math::
    H_{k} = (I − ρ s y^\top) H_{k−1} (I − ρ y s^\top) + ρ s s^\top, \qquad ρ = 1 / y^\top s ,

skipped when the curvature ``yᵀs`` is not positive. ``H_0`` is the identity scaled so that the
first step has norm at most one; before the first update it becomes ``(yᵀs / yᵀy) I``. The
matrix is dense, ``n × n`` for ``n`` parameters: for small networks (physics-informed KANs
of a few thousand parameters), where it keeps all the curvature L-BFGS forgets.

References:
  J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer, 2006 (Algorithm
  6.1, equations 6.17 and 6.20).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

__all__ = ["ScaleByBFGSState", "bfgs", "scale_by_bfgs"]


class ScaleByBFGSState(NamedTuple):
    """State of :func:`scale_by_bfgs`.

    Attributes:
      count: Steps taken.
      last_params: The flat parameters of the last step, ``(n,)``.
      last_grad: The flat gradient there, ``(n,)``.
      inv_hessian: ``H``, ``(n, n)``.
    """

    count: jax.Array
    last_params: jax.Array
    last_grad: jax.Array
    inv_hessian: jax.Array


def scale_by_bfgs() -> optax.GradientTransformation:
    """The BFGS direction ``H_k g_k`` (chain with a negative scale and a line search).

    Returns:
      An :class:`optax.GradientTransformation`; its ``update`` needs ``params``.
    """

    def init_fn(params: Any) -> ScaleByBFGSState:
        flat, _ = ravel_pytree(params)
        n = flat.shape[0]
        return ScaleByBFGSState(jnp.zeros([], jnp.int32), jnp.zeros_like(flat), jnp.zeros_like(flat),
                                jnp.eye(n, dtype=flat.dtype))

    def update_fn(updates: Any, state: ScaleByBFGSState, params: Any = None) -> tuple[Any, ScaleByBFGSState]:
        if params is None:
            raise ValueError("scale_by_bfgs needs params in update (the secant pair is built from them)")
        g, unravel = ravel_pytree(updates)
        x, _ = ravel_pytree(params)
        s, y = x - state.last_params, g - state.last_grad
        ys = jnp.vdot(y, s)
        usable = (state.count > 0) & (ys > 1e-12 * jnp.linalg.norm(y) * jnp.linalg.norm(s))
        h = state.inv_hessian
        first = state.count == 0
        h = jnp.where(first, h * jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.linalg.norm(g), 1e-30)), h)
        h = jnp.where((state.count == 1) & usable, jnp.eye(h.shape[0], dtype=h.dtype) * ys / jnp.vdot(y, y), h)
        rho = jnp.where(usable, 1.0 / jnp.where(usable, ys, 1.0), 0.0)
        hy = h @ y
        updated = h - rho * (jnp.outer(s, hy) + jnp.outer(hy, s)) + (rho ** 2 * jnp.vdot(y, hy) + rho) * jnp.outer(s, s)
        h = jnp.where(usable, updated, h)
        return unravel(h @ g), ScaleByBFGSState(state.count + 1, x, g, h)

    return optax.GradientTransformation(init_fn, update_fn)


def bfgs(
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
    linesearch: Optional[optax.GradientTransformationExtraArgs] = None,
) -> optax.GradientTransformationExtraArgs:
    """BFGS with the zoom line search, used as :func:`optax.lbfgs` is.

    Args:
      learning_rate: A fixed step (``None``: the line search's).
      linesearch: The line search (default
        ``optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``,
        :func:`optax.lbfgs`'s).

    Returns:
      An optax transformation; ``update`` takes ``value``, ``grad`` and ``value_fn`` as
      :func:`optax.lbfgs`'s (:func:`kan_jax.training.loops.minimize` passes them).

    Example:
      >>> import jax.numpy as jnp
      >>> from kan_jax.optim import bfgs
      >>> from kan_jax.training import loops
      >>> def rosenbrock(x):
      ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> out = loops.minimize(rosenbrock, jnp.zeros(2), optimizer=bfgs(), num_steps=jnp.asarray(40))
      >>> [round(float(v), 4) for v in out.params]
      [1.0, 1.0]
    """
    scaling = optax.scale(-1.0) if learning_rate is None else optax.scale_by_learning_rate(learning_rate)
    if linesearch is None:
        linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
    return optax.chain(scale_by_bfgs(), scaling, linesearch)
