"""Time per Adam iteration of a physics-informed KAN: kan_jax against jaxKAN, side by side.

The Burgers problem of ``python -m experiments.pde`` (the same Sobol collocation points: 4,096
interior points and 64 on each of the three initial/boundary segments), a [2, 8, 8, 1]
B-spline KAN (k = 3) at each grid size, float32, one Adam step with the residual-based
attention update of both loss terms:

* ``kan_jax``: :func:`experiments.pde.training.make_adam_step` (one-pass input derivatives,
  :func:`kan_jax.pde.kan_input_derivatives`), jitted alone and as the study runs it (a
  compiled scan of ``--chunk`` steps, the time divided by the steps);
* ``jaxkan``: jaxKAN 0.3.7 written as its users write it: ``KAN(layer_dims, "spline", {"k": 3,
  "G": G})``, its ``get_burgers_res`` residual (nested ``jax.grad`` under ``vmap``), its
  ``update_rba_weights`` / ``apply_rba_weights``, ``nnx.Optimizer`` and an ``nnx.jit`` step.

Both step functions are compiled ahead and run ``--repeats`` times ``--steps`` steps; the
best time per step is reported with the first call (compilation). XLA:CPU's YNN fusions are off
as in ``python -m experiments.pde`` unless ``--ynn-fusions`` keeps them (one setting per
process: run both to compare). Needs the ``bench`` extra
(``pip install "kan-jax[bench]"``: jaxkan==0.3.7). Prints a Markdown table for
``benchmarks/RESULTS.md``.

Usage::

    python -m benchmarks.pikan_jaxkan --grid-sizes 3 14
    python -m benchmarks.pikan_jaxkan --grid-sizes 3 14 --ynn-fusions
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.mnist_study import machine_name
from experiments._env import without_ynn_fusions
from experiments.pde.cli import PRESETS
from experiments.pde.study import Run
from experiments.pde.training import Data, adam_chunk, make_adam_step

RBA = (0.999, 0.01)


def kan_jax_steps(run: Run, grid_size: int, chunk: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one jitted step, one scan of ``chunk`` steps) of experiments.pde on ``run``'s points."""
    net = run.net(grid_size)
    step = make_adam_step(net, run.problem, run.tx, *RBA)
    variables = net.module.init(jax.random.key(0), jnp.zeros((1, 2)))
    data = run.data(np.arange(run.cfg.points), jnp.float32)
    state = [(variables["params"], run.tx.init(variables["params"]), jnp.ones(run.cfg.points),
              jnp.ones(data.target.shape))]
    grid = variables["grid"]
    one = jax.jit(step, donate_argnums=0)
    many = adam_chunk(step, chunk)

    def run_one():
        state[0], loss = one(state[0], grid, data)
        jax.block_until_ready(loss)

    def run_many():
        state[0], losses = many(state[0], grid, data)
        jax.block_until_ready(losses)

    return run_one, run_many


def jaxkan_step(data: Data, grid_size: int) -> Callable[[], None]:
    """One jitted Adam step of jaxKAN 0.3.7 on the same points, as its users write it."""
    from flax import nnx
    from jaxkan.models.KAN import KAN
    from jaxkan.pikan.adaptive import apply_rba_weights, update_rba_weights
    from jaxkan.pikan.pde import get_burgers_res

    model = KAN(layer_dims=[2, 8, 8, 1], layer_type="spline", required_parameters={"k": 3, "G": grid_size}, seed=42)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    residual = get_burgers_res()
    collocs = data.points
    bc_collocs = data.boundary.reshape(-1, 2)
    bc_data = data.target.reshape(-1, 1)

    @nnx.jit
    def train_step(model, optimizer, w, wb):
        def loss_fn(model):
            res = residual(model, collocs)
            bc_res = model(bc_collocs) - bc_data
            loss = jnp.mean(apply_rba_weights(res, w) ** 2) + jnp.mean(apply_rba_weights(bc_res, wb) ** 2)
            return loss, (res, bc_res)

        (loss, (res, bc_res)), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, update_rba_weights(res, w, *RBA), update_rba_weights(bc_res, wb, *RBA)

    weights = [jnp.ones((collocs.shape[0], 1)), jnp.ones((bc_collocs.shape[0], 1))]

    def run_one():
        loss, weights[0], weights[1] = train_step(model, optimizer, *weights)
        jax.block_until_ready(loss)

    return run_one


def per_step(fn: Callable[[], None], steps: int, repeats: int, per_call: int = 1) -> tuple[float, float]:
    """(first call seconds, best seconds per step over ``repeats`` runs of ``steps`` calls)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t) / (steps * per_call))
    return first, best


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-sizes", type=int, nargs="+", default=[3, 14])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=20, help="steps of the kan_jax scan")
    parser.add_argument("--ynn-fusions", action="store_true", help="keep XLA:CPU's YNN fusions (default: off)")
    args = parser.parse_args(argv)
    if not args.ynn_fusions:
        without_ynn_fusions()
    run = Run(PRESETS["full"], None, None, lambda msg: None)
    data = run.data(np.arange(run.cfg.points), jnp.float32)
    print(f"Machine: {machine_name()}, YNN fusions {'on' if args.ynn_fusions else 'off'}. Burgers, [2, 8, 8, 1] KAN, k = 3, {run.cfg.points} + "
          f"{data.boundary.shape[0] * data.boundary.shape[1]} points, float32, one Adam step with RBA updates.\n")
    print("| G | kan_jax step (ms) | kan_jax scan (ms/step) | jaxKAN step (ms) | jaxKAN / kan_jax | "
          "kan_jax first call (s) | jaxKAN first call (s) |")
    print("|---|---|---|---|---|---|---|")
    for g in args.grid_sizes:
        one, many = kan_jax_steps(run, g, args.chunk)
        ours_first, ours = per_step(one, args.steps, args.repeats)
        _, ours_scan = per_step(many, max(1, args.steps // args.chunk), args.repeats, per_call=args.chunk)
        theirs_first, theirs = per_step(jaxkan_step(data, g), args.steps, args.repeats)
        print(f"| {g} | {ours * 1e3:.1f} | {ours_scan * 1e3:.1f} | {theirs * 1e3:.1f} | {theirs / ours:.2f}× | "
              f"{ours_first:.1f} | {theirs_first:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
