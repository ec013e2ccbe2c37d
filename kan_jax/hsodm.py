r"""HSODM, the homogeneous second-order descent method, as an optax transformation.

At a point with gradient ``g`` and Hessian ``H``, HSODM (Zhang, Ge, He, Jiang, Jiang, Xue, Ye
2022) takes the leftmost eigenvector ``(v, t)`` of the aggregated ("homogenised") matrix

.. math::
    F = \begin{pmatrix} H & g \\ g^\top & -\delta \end{pmatrix},

whose eigen-equation ``(H - \theta I) v = -t g``, ``g^\top v = (\theta + \delta) t`` with
``\theta = \lambda_{\min}(F) \le \min(\lambda_{\min}(H), -\delta)`` makes ``v / t`` a Newton step
regularised by ``|\theta|`` (``-(H + |\theta| I)^{-1} g``), which is well defined and a descent
direction even where ``H`` is indefinite. This module computes that eigenpair by Lanczos on the
matrix-free operator :func:`kan_jax.curvature.augmented` (one Hessian-vector product per step,
the primal pass shared through :func:`jax.linearize`), warm-started from the previous step's
eigenvector, and lets an optax line search choose the step size.

Choices (and where they come from):

* ``delta``: the paper's theory takes ``delta = sqrt(epsilon)`` for an ``epsilon``-approximate
  second-order stationary point (``||g|| <= epsilon``, ``lambda_min(H) >= -sqrt(epsilon)``) in
  ``O(epsilon^{-3/2})`` iterations; default ``1e-4`` (``epsilon = 1e-8``), also the default of
  the authors' public Julia code (DRSOM.jl). Near a minimum with ``H`` positive definite,
  ``theta -> -delta`` and the step tends to the damped Newton step ``-(H + delta I)^{-1} g``.
* small ``|t|``: as in the paper, if ``|t| >= nu`` the direction is ``d = v / t``, otherwise
  ``d = v`` (then ``g`` is nearly orthogonal to the eigenvector and ``v`` is a direction of
  negative curvature ``<= -delta``); the paper requires ``nu in (0, 1/2)``, default ``1e-2``.
  ``d`` is flipped if ``g^T d > 0``.
* radius: the paper's fixed-radius variant steps ``min(1, Delta / ||d||) d`` with
  ``Delta = 2 sqrt(epsilon) / M`` (``M`` the Hessian's Lipschitz constant, rarely known); its
  line-search variant, the default here, hands ``d`` to a line search (optax's zoom line
  search from a unit step, as ``optax.lbfgs`` does). ``radius=Delta`` caps ``||d||`` first.

Cost per step: ``num_lanczos_steps`` Hessian-vector products of the linearised gradient plus
one primal gradient pass, plus the line search's function and gradient evaluations.

References
----------
.. [Zhang2022] C. Zhang, D. Ge, C. He, B. Jiang, Y. Jiang, C. Xue, Y. Ye, "A homogeneous
   second-order descent method for nonconvex optimization", arXiv:2211.08212 (2022).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from kan_jax.curvature.lanczos import lanczos_flat, tridiagonal_eigh

__all__ = ["ScaleByHSODMState", "scale_by_hsodm", "hsodm"]

try:  # optax's helper that picks the keyword arguments value_fn accepts
    from optax._src.linesearch import _extract_fns_kwargs
except ImportError:  # pragma: no cover
    def _extract_fns_kwargs(fns, kwargs):
        return tuple({} for _ in fns), kwargs


class ScaleByHSODMState(NamedTuple):
    """State of :func:`scale_by_hsodm`.

    Attributes:
        count: Number of updates so far (int32).
        vector: Parameter part ``v`` of the last leftmost eigenvector (params-shaped); with
            ``scalar`` the warm start of the next Lanczos run.
        scalar: Last component ``t`` of that eigenvector.
        eigenvalue: ``lambda_min(F)`` of the last step (Ritz value).
        residual: Ritz residual estimate ``beta_m |s_{m-1}|`` of that eigenpair.
        used_newton: Whether the last direction was ``v / t`` (``|t| >= nu``) rather than ``v``.
        num_matvecs: Total Hessian-vector products used (int32).
    """

    count: jax.Array
    vector: optax.Params
    scalar: jax.Array
    eigenvalue: jax.Array
    residual: jax.Array
    used_newton: jax.Array
    num_matvecs: jax.Array


def _check(delta, nu, radius, num_lanczos_steps):
    if isinstance(delta, (int, float)) and not delta >= 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    if isinstance(nu, (int, float)) and not 0 < nu < 0.5:
        raise ValueError(f"nu must be in (0, 1/2) as in the paper, got {nu}")
    if radius is not None and isinstance(radius, (int, float)) and not radius > 0:
        raise ValueError(f"radius must be > 0 or None, got {radius}")
    if not isinstance(num_lanczos_steps, int) or num_lanczos_steps < 2:
        raise ValueError(f"num_lanczos_steps must be an int >= 2, got {num_lanczos_steps!r}")


def scale_by_hsodm(
    delta: float = 1e-4,
    nu: float = 1e-2,
    radius: Optional[float] = None,
    num_lanczos_steps: int = 20,
) -> optax.GradientTransformationExtraArgs:
    r"""Replace the gradient by HSODM's direction from the leftmost eigenvector of ``F``.

    .. math::
        F = \begin{pmatrix} H & g \\ g^\top & -\delta \end{pmatrix}, \quad
        F \begin{pmatrix} v \\ t \end{pmatrix} = \theta \begin{pmatrix} v \\ t \end{pmatrix},
        \ \theta = \lambda_{\min}(F), \qquad
        d = \begin{cases} v / t & |t| \ge \nu \\ v & \text{otherwise} \end{cases},
        \quad d \leftarrow -\operatorname{sign}(g^\top d)\, d .

    The output is the descent direction ``d`` (a step of size one is the regularised Newton
    step); chain a line search (see :func:`hsodm`). The eigenpair comes from
    ``num_lanczos_steps`` Lanczos steps (fully reorthogonalised) warm-started from the previous
    eigenvector (the first step starts from ``(0, 1)``, whose Krylov space contains ``(g, -delta)``).

    Args:
        delta: ``delta >= 0`` of ``F`` (paper: ``sqrt(epsilon)``).
        nu: Threshold on ``|t|`` in ``(0, 1/2)``.
        radius: Optional cap ``Delta`` on ``||d||`` (fixed-radius variant); ``None``: no cap.
        num_lanczos_steps: Lanczos steps (= Hessian-vector products) per update, capped at the
            dimension plus one.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs` whose ``update(updates, state,
        params, *, value_fn, **extra_args)`` takes the gradient as ``updates`` and the objective
        ``value_fn(params, **kwargs)`` (keyword arguments it accepts are taken from
        ``extra_args``).

    References:
        Zhang et al., `A homogeneous second-order descent method for nonconvex optimization
        <https://arxiv.org/abs/2211.08212>`_, 2022.
    """
    _check(delta, nu, radius, num_lanczos_steps)

    def init_fn(params: optax.Params) -> ScaleByHSODMState:
        x0, unravel = ravel_pytree(params)
        dtype = x0.dtype
        return ScaleByHSODMState(
            count=jnp.zeros([], jnp.int32),
            vector=unravel(jnp.zeros_like(x0)),
            scalar=jnp.ones([], dtype),
            eigenvalue=jnp.zeros([], dtype),
            residual=jnp.zeros([], dtype),
            used_newton=jnp.zeros([], bool),
            num_matvecs=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value_fn: Callable[..., jax.Array], **extra_args):
        if params is None:
            raise ValueError("scale_by_hsodm needs params (the point at which the Hessian is taken)")
        (fn_kwargs,), _ = _extract_fns_kwargs((value_fn,), extra_args)
        x0, unravel = ravel_pytree(params)
        dtype = x0.dtype
        n = x0.shape[0]
        g = ravel_pytree(updates)[0].astype(dtype)
        _, lin = jax.linearize(lambda x: ravel_pytree(jax.grad(lambda p: value_fn(p, **fn_kwargs))(unravel(x)))[0].astype(dtype), x0)
        dlt = jnp.asarray(delta, dtype)

        def amv(z):
            v, t = z[:n], z[n]
            return jnp.concatenate([lin(v) + t * g, (jnp.vdot(g, v) - dlt * t)[None]])

        z0 = jnp.concatenate([ravel_pytree(state.vector)[0].astype(dtype), state.scalar.astype(dtype)[None]])
        res = lanczos_flat(amv, z0, num_lanczos_steps)
        theta, s = tridiagonal_eigh(res.alphas, res.betas)
        z = s[:, 0] @ res.basis
        z = z / jnp.linalg.norm(z)
        v, t = z[:n], z[n]
        big_t = jnp.abs(t) >= nu
        d = jnp.where(big_t, v / jnp.where(big_t, t, 1), v)
        d = jnp.where(jnp.vdot(g, d) > 0, -d, d)
        if radius is not None:
            dn = jnp.linalg.norm(d)
            d = d * jnp.minimum(1, jnp.asarray(radius, dtype) / jnp.where(dn > 0, dn, 1))
        new_state = ScaleByHSODMState(
            count=optax.safe_increment(state.count),
            vector=unravel(v),
            scalar=t,
            eigenvalue=theta[0],
            residual=jnp.abs(res.residual_norm * s[-1, 0]),
            used_newton=big_t,
            num_matvecs=state.num_matvecs + res.alphas.shape[0],
        )
        return unravel(d), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hsodm(
    delta: float = 1e-4,
    nu: float = 1e-2,
    radius: Optional[float] = None,
    num_lanczos_steps: int = 20,
    linesearch: Optional[Union[optax.GradientTransformationExtraArgs, optax.GradientTransformation]] = None,
) -> optax.GradientTransformationExtraArgs:
    r"""HSODM: homogeneous second-order descent with a line search.

    ``optax.chain(scale_by_hsodm(delta, nu, radius, num_lanczos_steps), linesearch)``, with
    optax's zoom line search (20 steps, unit initial guess, as in ``optax.lbfgs``) by default.
    Called like ``optax.lbfgs``: ``tx.update(grads, state, params, value=value, grad=grads,
    value_fn=loss)``. See :mod:`kan_jax.hsodm` for the method and the choice of ``delta``,
    ``nu`` and the radius.

    Args:
        delta: ``delta`` of the aggregated matrix ``[[H, g], [g^T, -delta]]``.
        nu: Threshold on ``|t|``: ``d = v / t`` if ``|t| >= nu``, else ``d = v``.
        radius: Optional cap on ``||d||`` before the line search.
        num_lanczos_steps: Hessian-vector products per step for the eigenpair.
        linesearch: An optax line search (e.g.
            ``optax.scale_by_backtracking_linesearch(max_backtracking_steps=30)``); default
            ``optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``.

    Returns:
        A :class:`optax.GradientTransformationExtraArgs`.

    Examples:
        >>> import optax, jax.numpy as jnp
        >>> f = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2   # Rosenbrock
        >>> tx = hsodm(num_lanczos_steps=3)
        >>> x = jnp.array([-1.2, 1.0]); state = tx.init(x)
        >>> for _ in range(30):
        ...     value, grad = optax.value_and_grad_from_state(f)(x, state=state)
        ...     updates, state = tx.update(grad, state, x, value=value, grad=grad, value_fn=f)
        ...     x = optax.apply_updates(x, updates)

    References:
        Zhang et al., `A homogeneous second-order descent method for nonconvex optimization
        <https://arxiv.org/abs/2211.08212>`_, 2022.
    """
    if linesearch is None:
        linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
    return optax.chain(scale_by_hsodm(delta, nu, radius, num_lanczos_steps), linesearch)
