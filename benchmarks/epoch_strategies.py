"""One MNIST-sized training epoch of the [784, 64, 10] KAN per spline strategy, as the study runs it.

``kan_jax.training.train_epoch`` (batch 64, Adam, 60,000 random inputs gathered batch by batch
inside one ``lax.scan``, as in ``python -m experiments.mnist``) with ``spline_strategy`` set to
each of ``--strategies`` at each G of ``--grid-sizes``: the compile time of the epoch and its best
wall time of three. This is the measurement behind ``StrategyThresholds.unrolled_max_bases``
(:mod:`kan_jax.layer.config`); prints a Markdown table (record it in ``benchmarks/RESULTS.md``).

Usage::

    python -m benchmarks.epoch_strategies --grid-sizes 5 10 20 30 45
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.mnist_study import machine_name
from benchmarks.spline_scaling import best_of
from kan_jax import KAN
from kan_jax.layer import StrategyThresholds
from kan_jax.training import init_train_state, train_epoch


def epoch_timing(
    grid_size: int,
    strategy: str,
    x: jax.Array,
    y: jax.Array,
    repeats: int = 3,
    thresholds: Optional[StrategyThresholds] = None,
) -> tuple[float, float]:
    """(compile seconds, best epoch seconds) of one training epoch; ``thresholds``: the layers' ``strategy_thresholds``."""
    model = KAN([x.shape[1], 64, 10], grid_size=grid_size, spline_strategy=strategy, strategy_thresholds=thresholds)
    tx = optax.adam(1e-3)
    state = init_train_state(model, tx, jax.random.key(0), x[:1])
    run = jax.jit(lambda st, k, xs, ys: train_epoch(model, tx, st, k, xs, ys, 64))
    t = time.perf_counter()
    compiled = run.lower(state, jax.random.key(1), x, y).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(state, jax.random.key(1), x, y))
    return compile_s, best_of(lambda: jax.block_until_ready(compiled(state, jax.random.key(1), x, y)), repeats)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-sizes", type=int, nargs="+", default=[5, 10, 20, 30, 45])
    parser.add_argument("--strategies", nargs="+", default=["unrolled", "dense"])
    parser.add_argument("--samples", type=int, default=60000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (args.samples, 784)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.samples).astype(np.int32))
    print(f"Machine: {machine_name()}. [784, 64, 10] KAN, k = 3, batch 64, Adam, one epoch of {args.samples} samples.\n")
    print("| G | " + " | ".join(f"{s} epoch (s) | {s} compile (s)" for s in args.strategies) + " |")
    print("|---|" + "---|---|" * len(args.strategies))
    for g in args.grid_sizes:
        cells = []
        for s in args.strategies:
            compile_s, epoch_s = epoch_timing(g, s, x, y)
            cells += [f"{epoch_s:.2f}", f"{compile_s:.2f}"]
        print(f"| {g} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
