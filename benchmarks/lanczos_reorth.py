"""Cost of Lanczos reorthogonalisation: blocked + selective (default) against two full passes.

Usage::

    python -m benchmarks.lanczos_reorth                       # n = 407,050 (the MLP's size)
    python -m benchmarks.lanczos_reorth --mlp --data-dir ../shared/data/mnist

Two measurements, float32, medians over ``--repeats`` compiled calls:

* a diagonal operator of dimension ``--n`` (eigenvalues ``1/(i+1)`` plus a few isolated large
  ones), whose matvec costs nothing next to the reorthogonalisation, so the time *is* the
  reorthogonalisation: ``reorthogonalize="dense"`` (two classical Gram-Schmidt passes over the
  whole preallocated ``m x n`` basis every step) against ``True`` (one pass over the filled rows
  in blocks of ``--block-size`` rows, a second only when the DGKS test asks for it), for
  ``m`` in ``--steps``; with the loss of orthogonality ``max |Q Q^T - I|`` and the top-5 Ritz
  values' largest difference between the two;
* with ``--mlp``: the Hessian of the ReLU MLP [784, 512, 10] (cross-entropy on 1,024 MNIST
  training images, random initialisation), the whole Lanczos run per method.

Prints a markdown table. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from kan_jax import curvature as cv


def _median_time(fn, *args, repeats: int) -> tuple[float, object]:
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def _row(name, m, mv, v0, args, repeats, block_size):
    res = {}
    for mode in ("dense", True):
        run = jax.jit(lambda v0, *a, mode=mode: cv.lanczos(m, reorthogonalize=mode, block_size=block_size)(mv, v0, *a))
        t, out = _median_time(run, v0, *args, repeats=repeats)
        q = np.asarray(out.basis, np.float64)
        ortho = float(np.abs(q @ q.T - np.eye(m)).max())
        top = np.sort(np.asarray(cv.tridiagonal_eigh(out.alphas, out.betas)[0], np.float64))[-5:]
        res[mode] = (t, ortho, top)
    (td, od, topd), (tb, ob, topb) = res["dense"], res[True]
    diff = float(np.max(np.abs(topd - topb) / np.abs(topd)))
    return f"| {name} | {m} | {td:.3f} s | {tb:.3f} s | {td / tb:.1f}x | {od:.1e} | {ob:.1e} | {diff:.1e} |"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=407_050)
    ap.add_argument("--steps", default="30,60,100")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=cv.DEFAULT_BLOCK_SIZE, help="rows per block of the blocked pass")
    ap.add_argument("--mlp", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    rows = ["| operator | m | two full passes | blocked + selective | speed-up | max abs(QQᵀ − I), two passes | same, blocked | top-5 Ritz values, max rel. difference |",
            "|---|---|---|---|---|---|---|---|"]
    n = args.n
    d = 1.0 / (1.0 + jnp.arange(n, dtype=jnp.float32))
    d = d.at[:5].set(jnp.array([50.0, 40.0, 30.0, 20.0, 10.0]))
    v0 = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    for m in steps:
        rows.append(_row(f"diagonal, n = {n:,}", m, lambda v, d: d * v, v0, (d,), args.repeats, args.block_size))
        print(rows[-1], flush=True)
    if args.mlp:
        import optax
        from flax import linen as nn

        from kan_jax.data import load_mnist, preprocess_mnist

        mnist = load_mnist(args.data_dir, source="idx")
        x = jnp.asarray(preprocess_mnist(mnist.x_train[:1024]))
        y = jnp.asarray(mnist.y_train[:1024].astype(np.int32))

        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                return nn.Dense(10)(nn.relu(nn.Dense(512)(x)))

        model = MLP()
        params = model.init(jax.random.key(0), x[:1])["params"]
        loss = lambda p, xb, yb: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()  # noqa: E731
        fmv, x0, _ = cv.flat(cv.hessian(loss), params)
        with jax.default_matmul_precision("highest"):
            for m in steps:
                rows.append(_row(f"MLP [784, 512, 10] Hessian, n = {x0.size:,}", m, fmv, v0[: x0.size] if x0.size <= n else
                                 jax.random.normal(jax.random.key(0), x0.shape, x0.dtype), (params, x, y), args.repeats, args.block_size))
                print(rows[-1], flush=True)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores" if jax.devices()[0].platform == "cpu" else jax.devices()[0].device_kind
    print(f"\nmachine: {machine}, jax {jax.__version__}, float32, block size {args.block_size}, "
          f"median of {args.repeats} compiled calls\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
