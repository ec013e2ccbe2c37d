"""Time the MNIST study: one epoch per configuration, and the whole study, on this machine.

Measures, side by side in one process on the same data:

* one training epoch of the [784, 64, 10] KAN (938 steps of batch 64 plus evaluation on the
  10,000 test images), for one seed alone and for 5 seeds in one vmapped program
  (per-seed cost), after compilation;
* the full study (``experiments.mnist`` defaults: 5 algorithms x 5 seeds x 10 epochs), wall
  time including data loading and compilation, with the final accuracies;

and writes the figures, with the machine named, into ``benchmarks/RESULTS.md`` (between
markers, so other benchmarks' sections are kept).

Usage::

    python -m benchmarks.mnist_study --data-dir ../shared/data/mnist            # everything
    python -m benchmarks.mnist_study --data-dir ../shared/data/mnist --skip-study
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import mnist as study
from experiments._env import device_description
from experiments.mnist_protocol import make_optimizer
from kan_jax import KAN, load_mnist, preprocess_mnist
from kan_jax.io import atomic_write
from kan_jax.training import init_train_state, make_epoch_fn, num_batches

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_name() -> str:
    """CPU model, core count and JAX device, e.g. for the results table."""
    return device_description()


def time_epoch(algo: str, n_seeds: int, data, repeats: int = 2) -> tuple[float, float]:
    """(compile+first epoch, best steady epoch) seconds for ``n_seeds`` seeds in one program."""
    x_train, y_train, x_test, y_test = data
    steps = num_batches(x_train.shape[0], 64)
    tx, _ = make_optimizer(algo, steps)
    model = KAN([784, 64, 10])
    init = lambda k: init_train_state(model, tx, k, x_train[:1])  # noqa: E731
    keys = jax.random.split(jax.random.key(1), n_seeds)
    if n_seeds == 1:  # unbatched, as experiments.mnist runs a single seed
        state, keys = jax.jit(init)(jax.random.key(0)), keys[0]
    else:
        state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), n_seeds))
    epoch = make_epoch_fn(model, tx, 64, vmap_seeds=n_seeds > 1)
    t0 = time.perf_counter()
    state, metrics = epoch(state, keys, x_train, y_train, x_test, y_test)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = epoch(state, keys, x_train, y_train, x_test, y_test)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - t0)
    return first, best


def replace_section(name: str, body: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write(RESULTS, text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out-dir", type=Path, default=Path("runs/bench_mnist"))
    p.add_argument("--skip-study", action="store_true")
    p.add_argument("--algos", nargs="+", default=["adamw", "dgclip"], help="algorithms for the epoch timings")
    args = p.parse_args()

    machine = machine_name()
    print(machine)
    m = load_mnist(args.data_dir)
    data = (
        jnp.asarray(preprocess_mnist(m.x_train)),
        jnp.asarray(m.y_train.astype(np.int32)),
        jnp.asarray(preprocess_mnist(m.x_test)),
        jnp.asarray(m.y_test.astype(np.int32)),
    )
    rows = ["| optimizer | seeds in one program | compile + first epoch (s) | epoch (s) | per seed-epoch (s) | per step per seed (ms) |",
            "|---|---|---|---|---|---|"]
    for algo in args.algos:
        for n in (1, 5):
            first, best = time_epoch(algo, n, data)
            row = f"| {algo} | {n} | {first:.2f} | {best:.2f} | {best / n:.2f} | {best / n / 938 * 1000:.2f} |"
            print(row)
            rows.append(row)
    platform_name = jax.devices()[0].platform
    body = ["## MNIST study: one epoch ([784, 64, 10] KAN, G=5, k=3, batch 64, 938 steps + evaluation of 10,000)",
            "", f"Machine: {machine}. Measured by `python -m benchmarks.mnist_study` (best of 2 epochs after compilation).", ""]
    body += rows
    replace_section(f"mnist_epoch {platform_name}", "\n".join(body))
    if not args.skip_study:
        t0 = time.perf_counter()
        summary = study.run_study(study.DEFAULT_ALGOS, study.DEFAULT_SEEDS, study.StudyConfig(), {}, args.out_dir,
                                  data_dir=args.data_dir, force=True, progress=False)
        total = time.perf_counter() - t0
        body = ["## MNIST study: the full published protocol (5 algorithms x 5 seeds x 10 epochs)", "",
                 f"Machine: {machine}. `python -m experiments.mnist` defaults, wall time including data loading and "
                 f"compilation: **{total:.0f} s ({total / 60:.1f} min)**.", ""]
        body += (args.out_dir / "summary.md").read_text().splitlines()
        atomic_write(args.out_dir / "bench.json", json.dumps({"machine": machine, "total_seconds": total, "rows": summary}, indent=1))
        replace_section(f"mnist_study {platform_name}", "\n".join(body))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
