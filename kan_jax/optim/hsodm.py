r"""HSODM, the homogeneous second-order descent method, as an optax transformation.

At a point with gradient ``g`` and Hessian ``H``, HSODM takes the leftmost eigenvector
``(v, t)`` of the aggregated matrix

.. math::
    F = \begin{pmatrix} H & g \\ g^\top & -\delta \end{pmatrix}, \qquad
    \theta = \lambda_{\min}(F) \le \min(\lambda_{\min}(H), -\delta),

so that ``v / t = -(H + |\theta| I)^{-1} g`` is a regularised Newton step, defined and descending
even where ``H`` is indefinite. When ``|t| < nu`` the direction is ``v`` itself, a direction of
negative curvature. The eigenpair comes from Lanczos on the matrix-free operator
(:func:`kan_jax.curvature.augmented`, one Hessian-vector product per step with the primal pass
shared by :func:`jax.linearize`), warm-started from the previous eigenvector; an optax line
search chooses the step size. The paper's theory takes ``delta = sqrt(epsilon)`` for an
``epsilon``-approximate second-order point in ``O(epsilon^{-3/2})`` iterations and
``nu in (0, 1/2)``.

References:
  Zhang, Ge, He, Jiang, Jiang, Xue and Ye, `A homogeneous second-order descent method for
  nonconvex optimization <https://arxiv.org/abs/2211.08212>`_, 2022.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

import jax
import optax
from jax.flatten_util import ravel_pytree

from kan_jax.curvature.krylov import lanczos
from kan_jax.optim._augmented import AugmentedState, check_arguments, initial_fields, leftmost_direction

__all__ = ["ScaleByHSODMState", "scale_by_hsodm", "hsodm"]


class ScaleByHSODMState(AugmentedState):
    """State of :func:`scale_by_hsodm`.

    Attributes:
        count: Number of updates so far (int32).
        vector: Parameter part ``v`` of the last leftmost eigenvector; with ``scalar`` the warm
            start of the next Lanczos run.
        scalar: Last component ``t`` of that eigenvector.
        eigenvalue: ``lambda_min(F)`` of the last step (Ritz value).
        residual: Ritz residual estimate ``beta_m |s_{m-1}|`` of that eigenpair.
        used_newton: Whether the last direction was ``v / t`` (``|t| >= nu``) rather than ``v``.
        num_matvecs: Total Hessian-vector products used (int32).
    """


def _accepted_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` that ``fn`` takes by name (as optax's line searches pass them)."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def scale_by_hsodm(
    delta: float = 1e-4,
    nu: float = 1e-2,
    radius: Optional[float] = None,
    num_lanczos_steps: int = 20,
) -> optax.GradientTransformationExtraArgs:
    r"""Replace the gradient by HSODM's direction from the leftmost eigenvector of ``F``.

    .. math::
        F \begin{pmatrix} v \\ t \end{pmatrix} = \theta \begin{pmatrix} v \\ t \end{pmatrix}, \qquad
        d = \begin{cases} v / t & |t| \ge \nu \\ v & \text{otherwise} \end{cases}, \qquad
        d \leftarrow -\operatorname{sign}(g^\top d)\, d .

    The first Lanczos run starts from ``(0, 1)``, whose Krylov space contains ``(g, -delta)``.

    Args:
        delta: ``delta >= 0`` of ``F`` (the paper's ``sqrt(epsilon)``; DRSOM.jl's default).
        nu: Threshold on ``|t|`` in ``(0, 1/2)``.
        radius: Optional cap ``Delta`` on ``||d||`` (the paper's fixed-radius variant).
        num_lanczos_steps: Lanczos steps (Hessian-vector products) per update.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` whose ``update(grads, state, params, *,
        value_fn, **extra_args)`` calls ``value_fn(params, **kwargs)`` with the ``extra_args`` it
        accepts by name.
    """
    check_arguments(delta, nu, radius, num_lanczos_steps)
    run_lanczos = lanczos(num_lanczos_steps)

    def init_fn(params: optax.Params) -> ScaleByHSODMState:
        return ScaleByHSODMState(**initial_fields(params))

    def update_fn(updates, state, params=None, *, value_fn: Callable[..., jax.Array], **extra_args):
        if params is None:
            raise ValueError("scale_by_hsodm needs params (the point at which the Hessian is taken)")
        kwargs = _accepted_kwargs(value_fn, extra_args)
        x0, unravel = ravel_pytree(params)
        dtype = x0.dtype
        grad = jax.grad(lambda p: value_fn(p, **kwargs))
        _, hvp = jax.linearize(lambda x: ravel_pytree(grad(unravel(x)))[0].astype(dtype), x0)
        d, fields = leftmost_direction(hvp, updates, params, state, delta=delta, nu=nu, radius=radius,
                                       run_lanczos=run_lanczos)
        return d, ScaleByHSODMState(**fields)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hsodm(
    delta: float = 1e-4,
    nu: float = 1e-2,
    radius: Optional[float] = None,
    num_lanczos_steps: int = 20,
    linesearch: Optional[Union[optax.GradientTransformationExtraArgs, optax.GradientTransformation]] = None,
) -> optax.GradientTransformationExtraArgs:
    r"""HSODM: :func:`scale_by_hsodm` followed by a line search, used like ``optax.lbfgs``.

    Args:
        delta: ``delta`` of the aggregated matrix ``[[H, g], [g^T, -delta]]``.
        nu: Threshold on ``|t|``: ``d = v / t`` if ``|t| >= nu``, else ``d = v``.
        radius: Optional cap on ``||d||`` before the line search.
        num_lanczos_steps: Hessian-vector products per step for the eigenpair.
        linesearch: An optax line search; default optax's zoom line search (20 steps, unit
            initial guess, as in ``optax.lbfgs``).

    Returns:
        ``optax.chain(scale_by_hsodm(...), linesearch)``, updated with ``tx.update(grads, state,
        params, value=value, grad=grads, value_fn=f)``.

    Example:
        >>> import jax, optax, jax.numpy as jnp
        >>> f = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2   # Rosenbrock
        >>> tx = hsodm(num_lanczos_steps=3)
        >>> @jax.jit
        ... def step(x, state):
        ...     value, grad = optax.value_and_grad_from_state(f)(x, state=state)
        ...     updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     return optax.apply_updates(x, updates), state
        >>> x = jnp.array([-1.2, 1.0]); state = tx.init(x)
        >>> for _ in range(30):
        ...     x, state = step(x, state)
        >>> bool(jnp.allclose(x, 1.0, atol=1e-6))
        True
    """
    if linesearch is None:
        linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
    return optax.chain(scale_by_hsodm(delta, nu, radius, num_lanczos_steps), linesearch)
