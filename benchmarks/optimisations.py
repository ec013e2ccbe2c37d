"""Each CPU-specific optimisation of the KAN layer against its absence, measured in one run.

Every variant is passed explicitly (a layer field, a key, a program built here); nothing in
the library is mutated. Runs are interleaved (with, without, with, ...) and the best of
``--repeats`` is kept, so that a busy machine slows both sides alike. Rows:

* ``unrolled`` strategy: one training epoch of the MNIST study ([784, 64, 10], G = 5, batch
  64, Adam, ``--samples`` inputs gathered batch by batch inside the scan, as
  ``python -m experiments.mnist`` runs it), ``spline_strategy="auto"`` (unrolled on the CPU)
  against ``"dense"``;
* fused init: ``model.init`` of the [784, 64, 10] KAN at G = 5 and G = 1000 (a first call,
  caches cleared): the Linen layer (one initialiser per parameter, then the forward pass)
  against one compiled program per layer computing :func:`kan_jax.layer.init_layer` and
  :func:`kan_jax.layer.layer_apply` together, and ``jax.jit(model.init)`` (which drops the
  unused forward pass);
* dense forward in init: ``model.init`` at G = 5, where ``"auto"`` picks the unrolled bases and
  init's forward pass takes the dense product instead, against ``spline_strategy="unrolled"``;
* ``threefry``: ``model.init`` at G = 1000 with a ``threefry2x32`` key (draws by
  :func:`kan_jax.threefry.uniform`) against a key of the same generator registered under
  another name, for which :func:`kan_jax.threefry.uniform` hands the draws to
  ``jax.random.uniform`` (the same values; the hash as JAX lowers it).

Usage::

    python -m benchmarks.optimisations                 # prints a Markdown table
    python -m benchmarks.optimisations --samples 20000 --repeats 3
"""
from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.mnist_study import machine_name
from benchmarks.spline_scaling import first_init_s
from kan_jax import KAN
from kan_jax.layer import choose_spline_strategy, default_thresholds, init_layer, layer_apply
from kan_jax.training import init_train_state, train_epoch

WIDTHS = [784, 64, 10]


def interleaved_best(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best wall time (s) of each blocking zero-argument run, the runs taken in turn."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def compiled_epoch(x: jax.Array, y: jax.Array, **fields: Any) -> Callable[[], Any]:
    """A blocking run of one study epoch (batch 64, Adam) of the [784, 64, 10] KAN at G = 5."""
    model = KAN(WIDTHS, grid_size=5, **fields)
    tx = optax.adam(1e-3)
    state = init_train_state(model, tx, jax.random.key(0), x[:1])
    key = jax.random.key(1)
    compiled = jax.jit(lambda st, k, xs, ys: train_epoch(model, tx, st, k, xs, ys, 64)).lower(state, key, x, y).compile()
    run = lambda: jax.block_until_ready(compiled(state, key, x, y))  # noqa: E731
    run()
    return run


def fused_init(model: KAN, key: jax.Array, x: jax.Array) -> dict[str, Any]:
    """The variables of ``model`` by one compiled program per layer (initialisation and forward
    pass, the dense product where the layer would unroll its bases)."""
    config = model.config
    strategy = config.spline_strategy
    if strategy == "auto":
        strategy = choose_spline_strategy(config.grid_size + config.spline_order, config.spline_order)
    forward_config = config.replace(spline_strategy="dense" if strategy == "unrolled" else strategy)
    params, grids = {}, {}
    for i, (n_in, n_out) in enumerate(zip(model.layers_hidden[:-1], model.layers_hidden[1:])):

        @functools.partial(jax.jit, static_argnums=(0, 1))
        def layer(n_in: int, n_out: int, key: jax.Array, x: jax.Array) -> tuple[Any, Any, jax.Array]:
            p, g = init_layer(key, n_in, n_out, config)
            return p, g, layer_apply(p, g, x, forward_config)

        params[f"layers_{i}"], grid, x = layer(n_in, n_out, jax.random.fold_in(key, i), x)
        grids[f"layers_{i}"] = {"grid": grid}
    return {"params": params, "grid": grids}


def init_runs(grid_size: int) -> dict[str, Callable[[], float]]:
    """First-call ``model.init`` variants at ``grid_size``; each run returns its own wall time."""
    x = jnp.zeros((64, WIDTHS[0]), jnp.float32)
    key = jax.random.key(0)
    threefry = jex_random.threefry_prng_impl
    plain = jex_random.define_prng_impl(
        key_shape=threefry.key_shape, seed=threefry.seed, split=threefry.split,
        random_bits=threefry.random_bits, fold_in=threefry.fold_in, name="threefry2x32 via jax.random", tag="tfj",
    )
    model = KAN(WIDTHS, grid_size=grid_size)
    runs = {
        f"G={grid_size} Linen init": lambda: first_init_s(model.init, key, x),
        f"G={grid_size} fused init": lambda: first_init_s(functools.partial(fused_init, model), key, x),
        f"G={grid_size} jax.jit(model.init)": lambda: first_init_s(jax.jit(model.init), key, x),
    }
    if grid_size <= 16:
        unrolled = KAN(WIDTHS, grid_size=grid_size, spline_strategy="unrolled")
        runs[f"G={grid_size} Linen init, unrolled forward"] = lambda: first_init_s(unrolled.init, key, x)
    else:
        plain_key = jax.random.key(0, impl=plain)
        runs[f"G={grid_size} Linen init, jax.random draws"] = lambda: first_init_s(model.init, plain_key, x)
    return runs


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000, help="training inputs of the study epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-epoch", action="store_true", help="only the model.init rows")
    args = parser.parse_args(argv)
    cpu = default_thresholds("cpu")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (args.samples, WIDTHS[0])).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.samples).astype(np.int32))
    load = os.getloadavg()[0]

    timed: dict[str, float] = {}
    if not args.skip_epoch:
        epochs = {
            "G=5 epoch, unrolled (auto)": compiled_epoch(x, y, strategy_thresholds=cpu),
            "G=5 epoch, dense": compiled_epoch(x, y, spline_strategy="dense", strategy_thresholds=cpu),
        }
        timed.update(interleaved_best(epochs, args.repeats))
    for g in (5, 1000):
        runs = init_runs(g)
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                best[name] = min(best[name], run())
        timed.update(best)

    def row(what: str, figure: str, kept: str, dropped: str) -> str:
        if kept not in timed:
            return f"| {what} | {figure} | — | — | — |"
        a, b = timed[kept], timed[dropped]
        return f"| {what} | {figure} | {a:.3f} s | {b:.3f} s | {(b - a) / b:+.0%} |"

    lines = [
        f"Machine: {machine_name()}, {os.cpu_count()} cores; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other processes shared the CPU). Best of {args.repeats}, "
        f"runs interleaved; the study epoch has {args.samples} inputs.\n",
        "| optimisation | figure | with | without | gain |",
        "|---|---|---|---|---|",
        row("unrolled strategy", "study epoch, G = 5", "G=5 epoch, unrolled (auto)", "G=5 epoch, dense"),
        row("fused init (one program per layer)", "model.init, G = 5", "G=5 fused init", "G=5 Linen init"),
        row("fused init (one program per layer)", "model.init, G = 1000", "G=1000 fused init", "G=1000 Linen init"),
        row("dense forward in init", "model.init, G = 5", "G=5 Linen init", "G=5 Linen init, unrolled forward"),
        row("threefry.uniform", "model.init, G = 1000", "G=1000 Linen init", "G=1000 Linen init, jax.random draws"),
    ]
    lines += ["", "| run | best (s) |", "|---|---|"] + [f"| {name} | {t:.4f} |" for name, t in timed.items()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
