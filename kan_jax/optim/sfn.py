r"""SFN: HSODM's direction from a minibatch gradient and a sub-sampled Hessian, with a set step.

At step ``k`` with the gradient ``g_k`` of a minibatch ``B_k`` and the Hessian ``H_k`` of an
independent, larger batch ``S_k`` (for instance ``|S_k| = sqrt(n)`` of ``n`` training samples),
SFN takes the leftmost eigenpair ``(theta_k, (v_k, t_k))`` of the aggregated matrix

.. math::
    F_k = \begin{pmatrix} H_k & g_k \\ g_k^\top & -\delta \end{pmatrix}, \qquad
    \frac{v_k}{t_k} = -(H_k - \theta_k I)^{-1} g_k, \qquad \theta_k \le \min(\lambda_{\min}(H_k), -\delta),

and steps ``x_{k+1} = x_k + eta_k d_k`` with HSODM's direction ``d_k = v_k / t_k`` when
``|t_k| >= nu`` and ``d_k = v_k`` (a direction of negative curvature) otherwise, turned so that
``g_k^T d_k <= 0`` and optionally capped at ``||d_k|| <= radius``. Since ``theta_k <= -delta``,
``delta`` damps the Newton step as a Levenberg-Marquardt term would: along directions where
the curvature is small against ``|theta_k|`` the step is close to ``-g_k / |theta_k|``, along
directions of large curvature it is a Newton step. The step size ``eta_k`` is a constant or an
optax schedule of the step count; there is no line search, which would need the loss of the
same batch at trial points.

The eigenpair comes from Lanczos on the matrix-free operator ``(v, t) -> (H v + t g, g^T v -
delta t)``, one Hessian-vector product per Lanczos step, warm-started from the previous
eigenvector. With few steps it is a Ritz approximation, not the converged pair: its residual
estimate is kept in the state. The operator, the Lanczos run and the direction are those of
:func:`kan_jax.optim.hsodm`; SFN differs in taking the Hessian-vector product as an argument
(``hvp_fn``, on whatever batch the caller chose) and in its step.

References:
  Zhang, Ge, He, Jiang, Jiang, Xue and Ye, `A homogeneous second-order descent method for
  nonconvex optimization <https://arxiv.org/abs/2211.08212>`_, 2022. Roosta-Khorasani and
  Mahoney, "Sub-sampled Newton methods", Math. Program. 174 (2019) 293-326.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from kan_jax.curvature.krylov import lanczos
from kan_jax.optim._augmented import AugmentedState, check_arguments, initial_fields, leftmost_direction

__all__ = ["ScaleBySFNState", "scale_by_sfn", "sfn"]


class ScaleBySFNState(AugmentedState):
    """State of :func:`scale_by_sfn` and :func:`sfn`.

    Attributes:
        count: Number of updates so far (int32); the step of the learning-rate schedule.
        vector: Parameter part ``v`` of the last leftmost eigenvector; with ``scalar`` the warm
            start of the next Lanczos run.
        scalar: Last component ``t`` of that eigenvector.
        eigenvalue: ``theta = lambda_min(F)`` of the last update (Ritz value).
        residual: Ritz residual estimate ``beta_m |s_{m-1}|`` of that eigenpair.
        used_newton: Whether the last direction was ``v / t`` (``|t| >= nu``) rather than ``v``.
        num_matvecs: Total Hessian-vector products (calls of ``hvp_fn``) so far (int32).
    """


def scale_by_sfn(
    delta: float = 1.0,
    num_lanczos_steps: int = 2,
    nu: float = 1e-2,
    radius: Optional[float] = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Replace a minibatch gradient by SFN's direction from a separate Hessian-vector product.

    .. math::
        F \begin{pmatrix} v \\ t \end{pmatrix} = \theta \begin{pmatrix} v \\ t \end{pmatrix}, \quad
        d = \begin{cases} v / t & |t| \ge \nu \\ v & \text{otherwise} \end{cases}, \quad
        d \leftarrow -\operatorname{sign}(g^\top d)\, d, \quad
        d \leftarrow d \min\!\Big(1, \frac{\Delta}{\|d\|}\Big).

    The first Lanczos run starts from ``(0, 1)``, whose Krylov space contains ``(g, -delta)``;
    later runs start from the previous eigenvector.

    The defaults of ``delta`` and ``num_lanczos_steps`` are those that ``python -m
    experiments.sfn`` trains the MNIST MLP with.

    Args:
        delta: ``delta >= 0`` of ``F``, a damping: ``|theta| >= delta``.
        num_lanczos_steps: Lanczos steps (calls of ``hvp_fn``) per update, an int ``>= 2``.
        nu: Threshold on ``|t|`` in ``(0, 1/2)``.
        radius: Optional cap ``Delta > 0`` on ``||d||``.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` whose ``update(grads, state, params, *,
        hvp_fn)`` takes the minibatch gradient as ``grads`` and ``hvp_fn(v)``, a params-shaped
        ``v`` to the Hessian-vector product at ``params``, and returns the direction ``d``.

    Raises:
        ValueError: If an argument is out of its range (the message names it and its value).
    """
    check_arguments(delta, nu, radius, num_lanczos_steps)
    run_lanczos = lanczos(num_lanczos_steps)

    def init_fn(params: optax.Params) -> ScaleBySFNState:
        return ScaleBySFNState(**initial_fields(params))

    def update_fn(updates, state, params=None, *, hvp_fn: Optional[Callable[[Any], Any]] = None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_sfn needs params (the point at which the Hessian is taken)")
        if hvp_fn is None:
            raise ValueError("scale_by_sfn needs hvp_fn=, a function of a params-shaped v returning H v")
        x0, unravel = ravel_pytree(params)

        def flat_hvp(v: jax.Array) -> jax.Array:
            return ravel_pytree(hvp_fn(unravel(v)))[0].astype(x0.dtype)

        d, fields = leftmost_direction(flat_hvp, updates, params, state, delta=delta, nu=nu, radius=radius,
                                       run_lanczos=run_lanczos)
        return d, ScaleBySFNState(**fields)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_learning_rate(learning_rate: Any) -> None:
    if callable(learning_rate) or not isinstance(learning_rate, (int, float)):
        return  # a schedule, or an array (possibly traced): not checked
    if not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a finite number > 0 or an optax schedule, got {learning_rate!r}")


def sfn(
    learning_rate: optax.ScalarOrSchedule,
    delta: float = 1.0,
    num_lanczos_steps: int = 2,
    nu: float = 1e-2,
    radius: Optional[float] = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SFN: :func:`scale_by_sfn`'s direction times a fixed or scheduled step size.

    .. math:: x_{k+1} = x_k + \eta_k d_k, \qquad \eta_k = \texttt{learning\_rate}(k).

    Args:
        learning_rate: The step ``eta``: a number ``> 0`` or an optax schedule of the update
            count (``state.count`` before the update, so the first update takes ``schedule(0)``).
        delta: ``delta >= 0`` of ``[[H, g], [g^T, -delta]]``.
        num_lanczos_steps: Hessian-vector products per update for the eigenpair.
        nu: Threshold on ``|t|``: ``d = v / t`` if ``|t| >= nu``, else ``d = v``.
        radius: Optional cap on ``||d||`` before the step size is applied.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` with state :class:`ScaleBySFNState`,
        updated with ``tx.update(grads, state, params, hvp_fn=hvp)``.

    Raises:
        ValueError: If an argument is out of its range (the message names it and its value).

    Example:
        A realisable least-squares fit, the gradient from 32 samples and the Hessian from 64
        others at each step:

        >>> import jax, optax, jax.numpy as jnp
        >>> data = jax.random.normal(jax.random.key(0), (512, 3))
        >>> target = data @ jnp.array([1.0, -2.0, 0.5])
        >>> loss = lambda w, idx: 0.5 * jnp.mean((data[idx] @ w - target[idx]) ** 2)
        >>> tx = sfn(learning_rate=1.0, num_lanczos_steps=4)
        >>> @jax.jit
        ... def step(w, state, key):
        ...     kg, kh = jax.random.split(key)
        ...     grad = jax.grad(loss)(w, jax.random.randint(kg, (32,), 0, 512))
        ...     hess_idx = jax.random.randint(kh, (64,), 0, 512)
        ...     hvp = lambda v: jax.jvp(jax.grad(lambda u: loss(u, hess_idx)), (w,), (v,))[1]
        ...     updates, state = tx.update(grad, state, w, hvp_fn=hvp)
        ...     return optax.apply_updates(w, updates), state
        >>> w = jnp.zeros(3); state = tx.init(w)
        >>> for key in jax.random.split(jax.random.key(1), 30):
        ...     w, state = step(w, state, key)
        >>> bool(jnp.allclose(w, jnp.array([1.0, -2.0, 0.5]), atol=1e-4)), int(state.num_matvecs)
        (True, 120)
    """
    _check_learning_rate(learning_rate)
    direction = scale_by_sfn(delta, num_lanczos_steps, nu, radius)

    def update_fn(updates, state, params=None, *, hvp_fn: Optional[Callable[[Any], Any]] = None, **extra_args):
        d, new_state = direction.update(updates, state, params, hvp_fn=hvp_fn, **extra_args)
        eta = learning_rate(state.count) if callable(learning_rate) else learning_rate
        return jax.tree.map(lambda x: jnp.asarray(eta, x.dtype) * x, d), new_state

    return optax.GradientTransformationExtraArgs(direction.init, update_fn)
