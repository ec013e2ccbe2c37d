"""Cost of an SFN training epoch against Adam's on MNIST, their epochs alternated.

Usage::

    python -m benchmarks.sfn_cost --data-dir ../shared/data/mnist          # MLP; 2, 3, 5, 10 Lanczos steps
    python -m benchmarks.sfn_cost --data-dir ../shared/data/mnist --models kan --lanczos-steps 2

For each model of :mod:`experiments.sfn` (its full configuration: all 60,000 training images,
batch 128, 469 steps, SFN's Hessian batch 245), one training epoch of Adam and one of SFN for
every ``--lanczos-steps`` are compiled ahead of time; then ``--repeats`` rounds each run one
epoch of every optimiser in turn, from the same initial state, so that other jobs on the
machine slow all of them alike. A third kind of row, "Adam + m HVPs", is Adam with SFN's
Hessian-batch linearisation and ``m`` chained Hessian-vector products added to each step and no
Lanczos: what the products alone cost. Prints a markdown table: the fastest and the median epoch
of each and the ratio of the fastest to Adam's. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path
from typing import Optional, Sequence

import jax
import numpy as np
import optax

from experiments import sfn as study
from experiments._env import default_mnist_dir, device_description
from experiments.models import mnist_arrays
from kan_jax.data import load_mnist
from kan_jax.training import TrainState, num_batches, train_epoch


def with_hvps(tx: optax.GradientTransformation, m: int) -> optax.GradientTransformationExtraArgs:
    """``tx`` after ``m`` chained products ``hvp_fn(hvp_fn(... g))`` whose result it uses (negligibly)."""

    def update(updates, state, params=None, *, hvp_fn, **extra_args):
        v = updates
        for _ in range(m):
            v = hvp_fn(v)
        return tx.update(jax.tree.map(lambda g, h: g + 1e-30 * h, updates, v), state, params)

    return optax.GradientTransformationExtraArgs(tx.init, update)


def compiled_epochs(model_name: str, cfg: study.Config, lanczos_steps: Sequence[int], x, y) -> dict[str, tuple]:
    """``{name: (compiled epoch, initial state)}``: Adam, SFN and Adam + HVPs for each number of Lanczos steps."""
    prep = study.prepare_model(model_name, cfg, x)
    steps = num_batches(x.shape[0], cfg.batch_size)
    hess = cfg.hessian_batch_size or round(np.sqrt(x.shape[0]))
    out = {}
    kinds = [("adam", None, "adam")] + [(f"{label}, {m} {unit}", m, kind) for m in lanczos_steps
                                        for label, unit, kind in (("sfn", "Lanczos steps", "sfn"), ("Adam +", "HVPs", "hvps"))]
    for name, m, kind in kinds:
        if kind == "sfn":
            tx = dataclasses.replace(cfg, sfn_lanczos_steps=m).optimizer("sfn", steps)
        else:
            tx = cfg.optimizer("adam", steps) if kind == "adam" else with_hvps(cfg.optimizer("adam", steps), m)
        extra = None if kind == "adam" else study.hessian_batch_args(prep["model"], hess)
        state = TrainState(prep["params"], prep["grid"], tx.init(prep["params"]))
        epoch = functools.partial(train_epoch, prep["model"], tx, batch_size=cfg.batch_size, extra_args=extra)
        out[name] = (jax.jit(epoch).lower(state, jax.random.key(0), x, y).compile(), state)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sfn_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_mnist_dir(), help="MNIST IDX folder")
    parser.add_argument("--models", nargs="+", choices=study.MODELS, default=["mlp"])
    parser.add_argument("--lanczos-steps", nargs="+", type=int, default=[2, 3, 5, 10])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of one epoch per optimiser")
    args = parser.parse_args(argv)
    cfg = study.PRESETS["full"]
    mnist = load_mnist(args.data_dir)
    x, y = mnist_arrays(mnist.x_train, mnist.y_train, cfg.train_subset)
    print(f"Machine: {device_description()}. One training epoch ({num_batches(x.shape[0], cfg.batch_size)} steps of "
          f"batch {cfg.batch_size}), {args.repeats} alternated rounds.\n")
    print("| model | optimiser | fastest epoch (s) | median epoch (s) | × Adam (fastest) |\n|---|---|---|---|---|")
    for model_name in args.models:
        runs = compiled_epochs(model_name, cfg, args.lanczos_steps, x, y)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.repeats):
            for name, (epoch, state) in runs.items():
                t = time.perf_counter()
                jax.block_until_ready(epoch(state, jax.random.key(r), x, y))
                times[name].append(time.perf_counter() - t)
        adam = min(times["adam"])
        for name, ts in times.items():
            print(f"| {model_name} | {name} | {min(ts):.2f} | {np.median(ts):.2f} | {min(ts) / adam:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
