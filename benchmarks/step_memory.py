"""Temporary memory of one compiled training step: KAN spline strategies against dense MLPs.

Usage::

    python -m benchmarks.step_memory                     # the table of benchmarks/RESULTS.md
    python -m benchmarks.step_memory --rows kan-1000     # one row

For each configuration, one jitted Adam step (cross-entropy for a classifier, squared error for
one output; parameters and optimiser state donated) is lowered and compiled ahead of time, and
``compiled.memory_analysis().temp_size_in_bytes`` (XLA's buffer assignment: what the step
allocates beyond its arguments and outputs) is reported with the step time (best of
``--repeats`` runs of ``--steps`` steps). An MLP row is the dense network of about the same
parameter count. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._env import device_description
from kan_jax import KAN

#: name -> (widths, batch, grid size or None for an MLP of those widths)
ROWS = {
    "kan-784-g200": ([784, 64, 10], 4096, 200),
    "kan-784-g5": ([784, 64, 10], 4096, 5),
    "mlp-784-512": ([784, 512, 10], 4096, None),
    "kan-1000": ([1000, 1000, 1], 100, 5),
    "mlp-1000-10000": ([1000, 10000, 1], 100, None),
}


class MLP(nn.Module):
    widths: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for w in self.widths[1:-1]:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.widths[-1])(x)


def compiled_step(model: Any, widths: Sequence[int], batch: int) -> tuple[Any, tuple]:
    """The compiled donated Adam step of ``model`` and its arguments."""
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (batch, widths[0])).astype(np.float32))
    y = jnp.asarray(np.random.default_rng(1).integers(0, widths[-1], batch))
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(1e-3)

    def loss(p):
        out = model.apply({"params": p, **rest}, x)
        if widths[-1] == 1:
            return jnp.mean((out[:, 0] - y) ** 2)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    args = (params, tx.init(params))
    return jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile(), args


def measure(name: str, strategy: str, steps: int, repeats: int) -> dict[str, Any]:
    widths, batch, grid = ROWS[name]
    model = MLP(tuple(widths)) if grid is None else KAN(widths, grid_size=grid, spline_strategy=strategy)
    step, (p, s) = compiled_step(model, widths, batch)
    temp = step.memory_analysis().temp_size_in_bytes
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            p, s = step(p, s)
        jax.block_until_ready(p)
        best = min(best, (time.perf_counter() - t) / steps)
    params = sum(a.size for a in jax.tree.leaves(p))
    return {"row": name, "strategy": "-" if grid is None else strategy, "params": params, "temp_mb": temp / 2**20,
            "step_ms": best * 1e3}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    parser.add_argument("--strategies", nargs="+", default=["auto", "dense", "local"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"Machine: {device_description()}.\n")
    print("| configuration | batch | strategy | parameters | temp memory (MB) | step (ms) |\n|---|---|---|---|---|---|")
    for name in args.rows:
        widths, batch, grid = ROWS[name]
        label = f"{'MLP' if grid is None else 'KAN'} {widths}" + ("" if grid is None else f", G = {grid}")
        for strategy in (["-"] if grid is None else args.strategies):
            r = measure(name, strategy, args.steps, args.repeats)
            print(f"| {label} | {batch} | {r['strategy']} | {r['params']:,} | {r['temp_mb']:.1f} | {r['step_ms']:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
