"""Hessian benchmark: one gradient vs one HVP, and how many HVPs the top eigenvalue needs.

Usage::

    python -m benchmarks.hessian_bench                      # KAN [784, 64, 10] if available
    python -m benchmarks.hessian_bench --model mlp --num 2048 --steps 60
    python -m benchmarks.hessian_bench --x64                 # everything in float64

Model: ``kan_jax.KAN`` (efficient-kan layout, G=5, k=3) when it exists, else a Flax ReLU
MLP, with the widths of ``--widths`` (default ``784,64,10``), at its random initialisation, with
the mean softmax cross-entropy on ``--num`` inputs: the first MNIST training images (from
``$KAN_JAX_MNIST_DIR`` or ``../shared/data/mnist``, scaled to [-1, 1]) or, without them, Gaussian
inputs with random labels. All products run under ``jax.default_matmul_precision("highest")``.

Measured:

* one gradient, one HVP as ``jvp(grad)`` (what :func:`kan_jax.curvature.hvp` does), and the marginal
  cost of one more product of the linearised gradient (what the Lanczos loops in
  :mod:`kan_jax.curvature` do: the primal pass is shared), all as medians over ``--repeats`` calls;
* one Lanczos run of ``--steps`` steps with full reorthogonalisation: the top Ritz value after
  each step (leading principal submatrices of ``T``) against the final one, whose residual
  ``||H v - theta v||`` is measured; the number of HVPs after which the relative error stays
  below ``--rtol`` (1e-6);
* power iteration as PyHessian does it (stop when the Rayleigh quotient changes by less than
  1e-3 relative): HVPs used and its error, and the HVPs power iteration needs for ``--rtol``.

Prints a markdown table. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from kan_jax import curvature as cv


def _load_inputs(num: int, source: str, seed: int):
    """``(x (num, 784) float32 in [-1, 1], y (num,) int32, description)``."""
    if source in ("auto", "mnist"):
        try:
            from kan_jax.data import load_mnist, preprocess_mnist

            from experiments._env import default_mnist_dir

            mnist = load_mnist(default_mnist_dir(), source="idx")
            return preprocess_mnist(mnist.x_train[:num]), np.asarray(mnist.y_train[:num], np.int32), "MNIST training images"
        except Exception as err:  # no data module or no files: fall back unless MNIST was demanded
            if source == "mnist":
                raise
            print(f"(MNIST not available: {type(err).__name__}: {err}; using random inputs)")
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(size=(num, 784)), -1, 1).astype(np.float32)
    return x, rng.integers(0, 10, size=num).astype(np.int32), "random inputs"


class MLP(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for w in self.widths[1:-1]:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.widths[-1])(x)


def _build(model_kind: str, widths: tuple[int, ...], x, seed: int):
    """Returns ``(name, params, apply(params, x) -> logits)``."""
    kan_cls = None
    if model_kind in ("auto", "kan"):
        try:
            from kan_jax import KAN as kan_cls
        except ImportError:
            if model_kind == "kan":
                raise
    if kan_cls is not None:
        model = kan_cls(list(widths))
        variables = model.init(jax.random.key(seed), x[:2])
        params, grid = variables["params"], variables["grid"]

        def apply(p, xb):
            return model.apply({"params": p, "grid": grid}, xb)

        return f"KAN {list(widths)} (G=5, k=3)", params, apply
    model = MLP(tuple(widths))
    params = model.init(jax.random.key(seed), x[:2])["params"]
    return f"ReLU MLP {list(widths)}", params, lambda p, xb: model.apply({"params": p}, xb)


def _median_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["auto", "kan", "mlp"], default="auto")
    ap.add_argument("--widths", default="784,64,10")
    ap.add_argument("--num", type=int, default=2048)
    ap.add_argument("--data", choices=["auto", "mnist", "random"], default="auto")
    ap.add_argument("--steps", type=int, default=60, help="Lanczos steps of the reference run")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--max-power", type=int, default=300, help="power-iteration cap")
    ap.add_argument("--x64", action="store_true", help="run in float64")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32

    widths = tuple(int(w) for w in args.widths.split(","))
    x_np, y_np, data_desc = _load_inputs(args.num, args.data, args.seed)
    x, y = jnp.asarray(x_np, dtype), jnp.asarray(y_np)
    name, params, apply = _build(args.model, widths, x, args.seed)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    n = sum(int(np.size(a)) for a in jax.tree.leaves(params))

    def loss(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xb), yb).mean()

    grad_fn = jax.jit(jax.grad(loss))
    hvp_fn = jax.jit(lambda p, v, xb, yb: jax.jvp(lambda q: jax.grad(loss)(q, xb, yb), (p,), (v,))[1])

    @functools.partial(jax.jit, static_argnames=("count",))
    def linearized_products(p, v, xb, yb, count):
        _, lin = jax.linearize(lambda q: jax.grad(loss)(q, xb, yb), p)
        return jax.lax.fori_loop(0, count, lambda i, u: jax.tree.map(lambda a: a / 10.0, lin(u)), v)

    @functools.partial(jax.jit, static_argnames=("steps",))
    def lanczos_run(p, xb, yb, key, steps):
        _, matvec = cv.hessian_operator(lambda q: loss(q, xb, yb), p)
        x0, unravel = jax.flatten_util.ravel_pytree(p)
        v0 = unravel(jax.random.normal(key, x0.shape, x0.dtype))
        res = cv.lanczos(steps)(matvec, v0)
        theta, s = cv.tridiagonal_eigh(res.alphas, res.betas)
        top = jax.tree.map(lambda q: jnp.tensordot(s[:, -1], q, axes=1), res.basis)
        hv = matvec(top)
        resid = jnp.sqrt(sum(jnp.sum((a - theta[-1] * b) ** 2) for a, b in zip(jax.tree.leaves(hv), jax.tree.leaves(top))))
        return res.alphas, res.betas, resid

    @functools.partial(jax.jit, static_argnames=("max_iter",))
    def power_run(p, xb, yb, key, max_iter, ref, rtol):
        """Returns (HVPs at PyHessian's 1e-3 stop, its estimate, HVPs to rtol vs ref)."""
        _, matvec = cv.hessian_operator(lambda q: loss(q, xb, yb), p)
        x0, unravel = jax.flatten_util.ravel_pytree(p)
        flat_mv = lambda u: jax.flatten_util.ravel_pytree(matvec(unravel(u)))[0]
        v = jax.random.normal(key, x0.shape, x0.dtype)
        v = v / jnp.linalg.norm(v)

        def body(c):
            i, v, lam, stop_i, stop_lam, hit_i = c
            w = flat_mv(v)
            new = jnp.vdot(v, w)
            i = i + 1
            stopped = (stop_i < 0) & (i > 1) & (jnp.abs(new - lam) / (jnp.abs(lam) + 1e-6) < 1e-3)
            stop_lam = jnp.where(stopped, new, stop_lam)
            stop_i = jnp.where(stopped, i, stop_i)
            hit_i = jnp.where((hit_i < 0) & (jnp.abs(new - ref) <= rtol * jnp.abs(ref)), i, hit_i)
            return i, w / jnp.linalg.norm(w), new, stop_i, stop_lam, hit_i

        def cond(c):
            i, _, _, stop_i, _, hit_i = c
            return (i < max_iter) & ((stop_i < 0) | (hit_i < 0))

        z = jnp.zeros((), x0.dtype)
        out = jax.lax.while_loop(cond, body, (0, v, z, -1, z, -1))
        return out[3], out[4], out[5]

    with jax.default_matmul_precision("highest"):
        v = jax.tree.map(lambda a: jnp.ones_like(a) * 1e-2, params)
        t_grad = _median_time(grad_fn, params, x, y, repeats=args.repeats)
        t_hvp = _median_time(hvp_fn, params, v, x, y, repeats=args.repeats)
        k1, k2 = 2, 12
        t1 = _median_time(functools.partial(linearized_products, count=k1), params, v, x, y, repeats=args.repeats)
        t2 = _median_time(functools.partial(linearized_products, count=k2), params, v, x, y, repeats=args.repeats)
        t_lin = (t2 - t1) / (k2 - k1)

        key = jax.random.key(args.seed + 1)
        t = time.perf_counter()
        alphas, betas, resid = jax.block_until_ready(lanczos_run(params, x, y, key, args.steps))
        t_lanczos_first = time.perf_counter() - t
        t = time.perf_counter()
        jax.block_until_ready(lanczos_run(params, x, y, key, args.steps))
        t_lanczos = time.perf_counter() - t
        a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
        m = a.size
        tops = np.array([np.linalg.eigvalsh(np.diag(a[:j]) + np.diag(b[: j - 1], 1) + np.diag(b[: j - 1], -1))[-1] for j in range(1, m + 1)])
        ref = tops[-1]
        rel = np.abs(tops - ref) / abs(ref)
        bad = np.nonzero(rel > args.rtol)[0]
        lanczos_hvps = int(bad[-1] + 2) if bad.size else 1
        reached = lanczos_hvps < m

        stop_i, stop_lam, hit_i = jax.block_until_ready(power_run(params, x, y, key, args.max_power, jnp.asarray(ref, dtype), args.rtol))
        stop_i, hit_i = int(stop_i), int(hit_i)
        power_err = abs(float(stop_lam) - ref) / abs(ref) if stop_i > 0 else float("nan")

    from experiments._env import device_description

    rows = [
        ("machine", device_description()),
        ("model", f"{name}, {n:,} parameters, {jnp.dtype(dtype).name}, random init"),
        ("data", f"{args.num:,} {data_desc}, mean softmax cross-entropy"),
        ("one gradient", f"{t_grad * 1e3:.1f} ms"),
        ("one HVP, `jvp(grad)` (`hvp`)", f"{t_hvp * 1e3:.1f} ms = {t_hvp / t_grad:.2f} x gradient"),
        ("one more HVP of the linearised gradient (Lanczos loops)", f"{t_lin * 1e3:.1f} ms = {t_lin / t_grad:.2f} x gradient"),
        (f"Lanczos, {m} steps, full reorthogonalisation", f"{t_lanczos:.2f} s ({t_lanczos_first:.2f} s with compilation)"),
        ("top eigenvalue (converged Ritz value)", f"{ref:.8g}, residual ||Hv - θv|| = {float(resid):.2e}"),
        (f"Lanczos HVPs until top-1 stays within {args.rtol:g} relative", f"{lanczos_hvps}" if reached else f"> {m - 1} (not reached)"),
        ("Lanczos top-1 relative error after 10 / 20 / 30 HVPs", " / ".join(f"{rel[j - 1]:.1e}" if j <= m else "-" for j in (10, 20, 30))),
        ("power iteration, PyHessian stop (1e-3 relative change)", f"{stop_i} HVPs, relative error {power_err:.1e}" if stop_i > 0 else f"no stop in {args.max_power}"),
        (f"power iteration HVPs to {args.rtol:g} relative", f"{hit_i}" if hit_i > 0 else f"> {args.max_power} (not reached)"),
    ]
    print("| quantity | value |\n|---|---|")
    for k, val in rows:
        print(f"| {k} | {val} |")


if __name__ == "__main__":
    main()
