"""Cost of a physics-informed training step's derivatives: nested forward mode against per-point Hessians.

The Burgers residual ``u_t + u u_x − (0.01/π) u_xx`` of a [2, 8, 8, 1] KAN at 4,096 collocation
points plus 192 boundary points, float32, the loss's value and parameter gradient in one
``jax.jit``: with :func:`kan_jax.pde.input_derivatives` (nested ``jax.jvp``), with
``vmap(jax.hessian)`` point by point, and the plain forward and backward pass of the same
network and points (the reference the ratios are taken against). Compile time and best step
time of each, per spline strategy and grid size; prints a Markdown table for
``benchmarks/RESULTS.md``.

Usage::

    python -m benchmarks.pde_derivatives --grid-sizes 3 14
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.mnist_study import machine_name
from benchmarks.spline_scaling import best_of
from kan_jax import KAN
from kan_jax.pde import input_derivatives, kan_input_derivatives

NU = 0.01 / np.pi


def losses(model: KAN, grid, x: jax.Array, xb: jax.Array) -> dict[str, Callable]:
    """The three losses of ``params``: plain, nested forward mode, per-point Hessians."""
    def u(p, z):
        return model.apply({"params": p, "grid": grid}, z)

    def boundary(p):
        return jnp.mean(u(p, xb) ** 2)

    def forward_mode(p):
        d = input_derivatives(lambda z: u(p, z), x, first=(0, 1), second=(1,))
        r = d.first[:, 0, 0] + d.value[:, 0] * d.first[:, 0, 1] - NU * d.second[:, 0, 0]
        return jnp.mean(r ** 2) + boundary(p)

    def kan_pass(p):
        d = kan_input_derivatives(model, {"params": p, "grid": grid}, x, first=(0, 1), second=(1,))
        r = d.first[:, 0, 0] + d.value[:, 0] * d.first[:, 0, 1] - NU * d.second[:, 0, 0]
        return jnp.mean(r ** 2) + boundary(p)

    def hessians(p):
        point = lambda z: u(p, z[None])[0, 0]
        g, h = jax.vmap(jax.grad(point))(x), jax.vmap(jax.hessian(point))(x)
        r = g[:, 0] + u(p, x)[:, 0] * g[:, 1] - NU * h[:, 1, 1]
        return jnp.mean(r ** 2) + boundary(p)

    return {"plain": lambda p: jnp.mean(u(p, x) ** 2) + boundary(p), "forward": forward_mode, "kan": kan_pass,
            "hessian": hessians}


def timing(loss: Callable, params, repeats: int) -> tuple[float, float]:
    """(compile seconds, best step seconds) of ``jit(value_and_grad(loss))``."""
    fn = jax.jit(jax.value_and_grad(loss))
    t = time.perf_counter()
    compiled = fn.lower(params).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(params))
    return compile_s, best_of(lambda: jax.block_until_ready(compiled(params)), repeats)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-sizes", type=int, nargs="+", default=[3, 14])
    parser.add_argument("--strategies", nargs="+", default=["unrolled", "dense", "local"])
    parser.add_argument("--methods", nargs="+", default=["plain", "kan", "forward", "hessian"])
    parser.add_argument("--points", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (args.points, 2)).astype(np.float32))
    xb = jnp.asarray(rng.uniform(-1, 1, (192, 2)).astype(np.float32))
    print(f"Machine: {machine_name()}. [2, 8, 8, 1] KAN, k = 3, Burgers residual at {args.points} points "
          "+ 192 boundary points, float32, value and parameter gradient.\n")
    print("| G | strategy | " + " | ".join(f"{m} step (ms) | {m} compile (s)" for m in args.methods)
          + " | kan / plain |")
    print("|---|---|" + "---|---|" * len(args.methods) + "---|")
    for g in args.grid_sizes:
        for strategy in args.strategies:
            model = KAN([2, 8, 8, 1], grid_size=g, spline_strategy=strategy)
            variables = model.init(jax.random.key(0), x)
            fns = losses(model, variables["grid"], x, xb)
            res = {m: timing(fns[m], variables["params"], args.repeats) for m in args.methods}
            ratio = (f"{res['kan'][1] / res['plain'][1]:.1f}×" if {"kan", "plain"} <= res.keys() else "—")
            cells = " | ".join(f"{res[m][1] * 1e3:.2f} | {res[m][0]:.2f}" for m in args.methods)
            print(f"| {g} | {strategy} | {cells} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
