r"""The physics-informed loss of a problem and the steps that minimise it.

A network maps the box of a :class:`~experiments.pde.problems.Problem` affinely onto
``[−1, 1]²`` (the KAN's grid range) and then ``z -> u``; the chain rule scales its input
derivatives back to the problem's coordinates. The loss is the residual-based-attention
weighted mean square of the PDE residual plus one such term per initial/boundary segment,

.. math::
    L = \operatorname{mean}_i (\lambda_i r_i)^2 + \sum_s \operatorname{mean}_{i \in s}
        (\lambda_i (u_i − g_i))^2 ,

the weights updated after every Adam step (:func:`kan_jax.pde.rba_update`, per term) and held
fixed by the second-order end game. Collocation points are an active subset of a Sobol pool,
redrawn from time to time with probability growing with the weighted residual.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from experiments.pde.problems import Problem
from kan_jax import KAN
from kan_jax import curvature as cv
from kan_jax.pde import input_derivatives, kan_input_derivatives, rba_update, rba_weighted_mse, resampling_probabilities

__all__ = ["Net", "Data", "TanhMLP", "make_net", "make_loss", "make_adam_step", "adam_chunk", "redraw",
           "evaluate", "spectrum"]


class TanhMLP(nn.Module):
    """``[2, hidden..., 1]`` with tanh, the usual physics-informed MLP."""

    hidden: tuple[int, ...] = (24, 24)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        for width in self.hidden:
            z = jnp.tanh(nn.Dense(width, param_dtype=self.param_dtype)(z))
        return nn.Dense(1, param_dtype=self.param_dtype)(z)


@dataclasses.dataclass(frozen=True)
class Net:
    """A network of a problem: ``module`` on inputs mapped by ``z = scale x + shift``.

    Attributes:
      kind: ``"kan"`` or ``"mlp"``.
      module: The Flax module.
      scale: ``(2,)``.
      shift: ``(2,)``.
    """

    kind: str
    module: nn.Module
    scale: tuple[float, float]
    shift: tuple[float, float]

    def variables(self, params: Any, grid: Any) -> dict[str, Any]:
        return {"params": params, "grid": grid} if self.kind == "kan" else {"params": params}

    def normalise(self, x: jax.Array) -> jax.Array:
        return x * jnp.asarray(self.scale, x.dtype) + jnp.asarray(self.shift, x.dtype)

    def __call__(self, params: Any, grid: Any, x: jax.Array) -> jax.Array:
        """``u`` at the points ``x`` of the problem's box, ``(N,)``."""
        return self.module.apply(self.variables(params, grid), self.normalise(x))[:, 0]

    def derivatives(self, params: Any, grid: Any, x: jax.Array, problem: Problem) -> dict[str, jax.Array]:
        """``{"u", "<c>", "<c><c>"}`` at ``x`` for the partials ``problem`` reads."""
        z = self.normalise(x)
        if self.kind == "kan":
            d = kan_input_derivatives(self.module, self.variables(params, grid), z, problem.first, problem.second)
        else:
            d = input_derivatives(lambda v: self.module.apply({"params": params}, v), z, problem.first, problem.second)
        out = {"u": d.value[:, 0]}
        for i, c in enumerate(problem.first):
            out[problem.coords[c]] = d.first[:, 0, i] * self.scale[c]
        for i, c in enumerate(problem.second):
            out[problem.coords[c] * 2] = d.second[:, 0, i] * self.scale[c] ** 2
        return out


def make_net(kind: str, problem: Problem, *, widths: tuple[int, ...], grid_size: int, dtype: Any) -> Net:
    """The KAN ``widths`` (``grid_size`` intervals on ``[−1, 1]``) or the tanh MLP of hidden ``widths[1:-1]``."""
    (a0, b0), (a1, b1) = problem.bounds
    scale = (2.0 / (b0 - a0), 2.0 / (b1 - a1))
    shift = (-(b0 + a0) / (b0 - a0), -(b1 + a1) / (b1 - a1))
    if kind == "kan":
        module = KAN(tuple(widths), grid_size=grid_size, param_dtype=jnp.dtype(dtype))
    else:
        module = TanhMLP(tuple(widths[1:-1]), param_dtype=jnp.dtype(dtype))
    return Net(kind, module, scale, shift)


class Data(NamedTuple):
    """The points of one loss: interior ``points`` ``(N, 2)``, ``boundary`` ``(S, M, 2)`` and
    its ``target`` ``(S, M)``."""

    points: jax.Array
    boundary: jax.Array
    target: jax.Array


def _residuals(net: Net, problem: Problem, params: Any, grid: Any, data: Data) -> tuple[jax.Array, jax.Array]:
    r = problem.residual(net.derivatives(params, grid, data.points, problem), data.points)
    s, m = data.target.shape
    rb = net(params, grid, data.boundary.reshape(s * m, 2)).reshape(s, m) - data.target
    return r, rb


def make_loss(net: Net, problem: Problem) -> Callable[..., tuple[jax.Array, tuple[jax.Array, jax.Array]]]:
    """``loss(params, grid, data, w, wb) -> (L, (r, rb))``: the weighted loss and the residuals."""

    def loss(params, grid, data, w, wb):
        r, rb = _residuals(net, problem, params, grid, data)
        total = rba_weighted_mse(w, r) + jnp.sum(jax.vmap(rba_weighted_mse)(wb, rb))
        return total, (r, rb)

    return loss


def make_adam_step(net: Net, problem: Problem, tx: optax.GradientTransformation, decay: float, eta: float) -> Callable:
    """One Adam step and attention update: ``step(state, grid, data) -> (state, loss)``.

    ``state`` is ``(params, opt_state, w, wb)``; the loss is the one before the step.
    """
    loss = make_loss(net, problem)

    def step(state, grid, data):
        params, opt_state, w, wb = state
        (value, (r, rb)), g = jax.value_and_grad(loss, has_aux=True)(params, grid, data, w, wb)
        updates, opt_state = tx.update(g, opt_state, params)
        w = rba_update(w, r, decay, eta)
        wb = jax.vmap(lambda a, b: rba_update(a, b, decay, eta))(wb, rb)
        return (optax.apply_updates(params, updates), opt_state, w, wb), value

    return step


def adam_chunk(step: Callable, length: int) -> Callable:
    """``length`` steps in one compiled scan: ``chunk(state, grid, data) -> (state, losses)``."""

    def chunk(state, grid, data):
        return jax.lax.scan(lambda s, _: step(s, grid, data), state, None, length=length)

    return jax.jit(chunk, donate_argnums=0)


def redraw(net: Net, problem: Problem, num: int, exponent: float, offset: float) -> Callable:
    """``redraw(key, params, grid, pool, pool_w) -> indices``: ``num`` pool points drawn with
    :func:`kan_jax.pde.resampling_probabilities` of the weighted residual."""

    def fn(key, params, grid, pool, pool_w):
        r = problem.residual(net.derivatives(params, grid, pool, problem), pool)
        p = resampling_probabilities(pool_w * r, exponent, offset)
        return jnp.sort(jax.random.choice(key, pool.shape[0], (num,), replace=False, p=p))

    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _jitted(net: Net) -> Callable:
    return jax.jit(net.__call__)


def evaluate(net: Net, params: Any, grid: Any, points: np.ndarray, values: np.ndarray) -> tuple[float, np.ndarray]:
    """(relative L2 error, prediction) on the reference points."""
    leaf = jax.tree.leaves(params)[0]
    u = np.asarray(_jitted(net)(params, grid, jnp.asarray(points, leaf.dtype)), np.float64)
    ref = np.asarray(values, np.float64).reshape(-1)
    return float(np.linalg.norm(u - ref) / np.linalg.norm(ref)), u


def spectrum(loss_fn: Callable, params: Any, batch: Any, *, top: int, num_steps: int, num_runs: int,
             points: int = 200) -> dict[str, Any]:
    """Hessian spectrum of ``loss_fn(params, batch)`` from one stochastic Lanczos quadrature.

    ``num_runs`` Lanczos runs of ``num_steps`` steps (:func:`kan_jax.curvature.spectral_density`,
    one compiled program): the ``top`` largest Ritz values of the first run, the smallest over
    the runs (the extreme ones converge first) and the smoothed density.
    """
    batches = jax.tree.map(lambda a: a[None], batch)
    dens = cv.spectral_density(loss_fn, params, num_runs=num_runs, num_steps=num_steps, num_points=points,
                               batches=batches)
    nodes = np.asarray(dens.nodes, np.float64)
    first = np.sort(nodes[0])[::-1]
    lam_min, lam_max = float(nodes.min()), float(nodes.max())
    return {
        "top": first[:top].tolist(),
        "lambda_min": lam_min,
        "condition_ratio": lam_max / abs(lam_min) if lam_min != 0 else None,
        "trace_per_param": float(np.mean(np.sum(np.asarray(dens.nodes) * np.asarray(dens.weights), axis=1))),
        "density_grid": np.asarray(dens.grid, np.float64).tolist(),
        "density": np.asarray(dens.density, np.float64).tolist(),
    }
