"""PyHessian vs kan_jax.curvature: top eigenvalue (time and error) and trace of an MNIST MLP's Hessian.

Usage (needs ``torch`` and ``pyhessian``, which are *not* dependencies of kan-jax)::

    pip install torch==2.13.0 pyhessian      # CPU wheel
    python -m benchmarks.pyhessian_compare --data-dir ../shared/data/mnist
    python -m benchmarks.pyhessian_compare --hidden 64 --num 2048

Set-up: a ReLU MLP ``[784, H, 10]`` (default H = 512) is trained in JAX/Flax for
``--train-steps`` Adam steps (as in ``experiments.landscape``), then its weights are copied to an
equivalent ``torch.nn.Sequential`` (``Linear`` weight = Flax ``kernel.T``); the loss is the mean
softmax cross-entropy on the first ``--num`` MNIST training images (scaled to [-1, 1]); the two
models' losses and gradients are checked to agree.

Measured (float32 unless said):

* reference: the top eigenvalue from ``kan_jax.curvature.top_eigenpairs`` in **float64** with
  ``--ref-steps`` Lanczos steps, its residual ``||H v - lambda v||``, and a second float64 run from
  another start vector (their difference shows the reference is converged);
* kan_jax float32 Lanczos (full reorthogonalisation) with several step counts: HVPs, seconds
  (first call with compilation, then warm) and relative error against the reference;
* PyHessian ``hessian(...).eigenvalues(top_n=1)`` (power iteration) with its defaults
  (``maxIter=100, tol=1e-3``) and with ``tol=1e-6, maxIter=1000``: HVPs (counted by wrapping
  ``pyhessian.hessian.hessian_vector_product``), seconds, relative error; over ``--repeats``
  torch seeds;
* the trace: PyHessian's ``trace()`` (Hutchinson, stops when the running mean changes by less
  than 1e-3 relative) vs ``kan_jax.curvature.hessian_trace`` (stops at a 1% standard error), both
  against a long kan_jax Hutchinson run of ``--trace-ref-probes`` probes;
* PyHessian's ``density()``, which calls ``torch.eig`` (removed from PyTorch): the error is shown.

Prints a markdown table. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)  # the float64 reference; everything else is cast to float32

from experiments._env import default_mnist_dir, device_description  # noqa: E402
from experiments.models import MLP  # noqa: E402
from kan_jax import curvature as cv  # noqa: E402
from kan_jax.data import load_mnist, preprocess_mnist  # noqa: E402


def _timed(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--num", type=int, default=1024, help="MNIST training images in the analysed batch")
    ap.add_argument("--train-steps", type=int, default=300, help="Adam steps before the analysis (0: random init)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref-steps", type=int, default=100, help="float64 Lanczos steps of the reference")
    ap.add_argument("--lanczos-steps", default="10,20,30,60", help="float32 Lanczos step counts to time")
    ap.add_argument("--repeats", type=int, default=3, help="PyHessian runs (torch seeds 0..R-1)")
    ap.add_argument("--trace-ref-probes", type=int, default=1000)
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    import importlib

    import warnings

    import torch
    import pyhessian

    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class as `hessian`)

    torch.set_num_threads(os.cpu_count() or 1)
    data_dir = args.data_dir or default_mnist_dir()
    mnist = load_mnist(data_dir)
    x_all = jnp.asarray(preprocess_mnist(mnist.x_train))
    y_all = jnp.asarray(mnist.y_train.astype(np.int32))
    model = MLP(args.hidden)
    params = jax.jit(model.init)(jax.random.key(args.seed), x_all[:1])["params"]

    def loss(p, batch):
        xb, yb = batch
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

    with jax.default_matmul_precision("highest"):
        if args.train_steps:
            tx = optax.adam(args.lr)
            rng = np.random.default_rng(args.seed)
            total = args.train_steps * 128
            perm = np.concatenate([rng.permutation(60000) for _ in range(-(-total // 60000))])[:total]

            @jax.jit
            def train(p, idx):
                def step(c, i):
                    p, s = c
                    g = jax.grad(loss)(p, (x_all[i], y_all[i]))
                    u, s = tx.update(g, s, p)
                    return (optax.apply_updates(p, u), s), None

                return jax.lax.scan(step, (p, tx.init(p)), idx)[0][0]

            params = train(params, jnp.asarray(perm.reshape(args.train_steps, 128)))
        n = sum(int(np.size(a)) for a in jax.tree.leaves(params))
        batch = (x_all[: args.num], y_all[: args.num])
        batches = jax.tree.map(lambda a: a[None], batch)
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        b64 = (batches[0].astype(jnp.float64), batches[1])

        # ---- reference (float64) --------------------------------------------------------------
        ref, t_ref = _timed(lambda: cv.top_eigenpairs(loss, p64, 1, num_steps=args.ref_steps, batches=b64))
        ref2 = cv.top_eigenpairs(loss, p64, 1, num_steps=args.ref_steps, batches=b64, key=jax.random.key(1))
        lam = float(ref.eigenvalues[0])
        rows = [
            ("machine", f"{device_description()}; torch {torch.__version__}, "
                        f"pyhessian {getattr(pyhessian, '__version__', '0.1')}"),
            ("model / data", f"ReLU MLP [784, {args.hidden}, 10], {n:,} parameters, after {args.train_steps} Adam steps; "
                             f"mean cross-entropy on {args.num} MNIST training images"),
            ("reference top eigenvalue (float64 Lanczos, %d steps)" % args.ref_steps,
             f"{lam:.10g}, residual {float(ref.residual_norms[0]):.1e}; second start vector differs by "
             f"{abs(float(ref2.eigenvalues[0]) - lam) / lam:.1e} relative ({t_ref:.1f} s)"),
        ]

        # ---- kan_jax float32 Lanczos ------------------------------------------------------------
        for m in [int(s) for s in args.lanczos_steps.split(",")]:
            r, t_first = _timed(lambda: cv.top_eigenpairs(loss, params, 1, num_steps=m, batches=batches))
            r, t_warm = _timed(lambda: cv.top_eigenpairs(loss, params, 1, num_steps=m, batches=batches))
            err = abs(float(r.eigenvalues[0]) - lam) / lam
            rows.append((f"kan_jax Lanczos float32, {m} steps ({m + 1} HVPs)",
                         f"{t_warm:.2f} s warm ({t_first:.2f} s with compilation), rel. error {err:.1e}, "
                         f"residual {float(r.residual_norms[0]):.1e}"))
        jtr, t_jtr = _timed(lambda: cv.hessian_trace(loss, params, batches=batches, max_probes=100))
        jtr, t_jtr_warm = _timed(lambda: cv.hessian_trace(loss, params, batches=batches, max_probes=100))
        tref = cv.hessian_trace(loss, params, batches=batches, max_probes=args.trace_ref_probes, min_probes=args.trace_ref_probes,
                                rel_stderr_tol=None, key=jax.random.key(123))

    # ---- PyHessian -------------------------------------------------------------------------------
    net = torch.nn.Sequential(torch.nn.Linear(784, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 10))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(np.asarray(params["Dense_0"]["kernel"]).T.copy()))
        net[0].bias.copy_(torch.from_numpy(np.array(params["Dense_0"]["bias"])))
        net[2].weight.copy_(torch.from_numpy(np.asarray(params["Dense_1"]["kernel"]).T.copy()))
        net[2].bias.copy_(torch.from_numpy(np.array(params["Dense_1"]["bias"])))
    xt = torch.from_numpy(np.array(batch[0]))
    yt = torch.from_numpy(np.asarray(batch[1]).astype(np.int64))
    criterion = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        torch_loss = float(criterion(net(xt), yt))
    jax_loss = float(loss(params, batch))
    rows.append(("torch model check", f"loss {torch_loss:.7f} (torch) vs {jax_loss:.7f} (JAX)"))

    count = {"hvp": 0}
    original = ph.hessian_vector_product

    def counting(*a, **k):
        count["hvp"] += 1
        return original(*a, **k)

    ph.hessian_vector_product = counting
    ph.hessian(net, criterion, data=(xt, yt), cuda=False).eigenvalues(maxIter=3, tol=0.0)  # warm-up, untimed
    t_setup = []
    for tol, max_iter in ((1e-3, 100), (1e-6, 1000)):
        errs, times, hvps = [], [], []
        for seed in range(args.repeats):
            torch.manual_seed(seed)
            t = time.perf_counter()
            h = ph.hessian(net, criterion, data=(xt, yt), cuda=False)  # forward + backward(create_graph=True)
            t_setup.append(time.perf_counter() - t)
            count["hvp"] = 0
            t = time.perf_counter()
            ev, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
            times.append(time.perf_counter() - t)
            hvps.append(count["hvp"])
            errs.append(abs(ev[0] - lam) / lam)
        rows.append((f"PyHessian power iteration, tol={tol:g}, maxIter={max_iter} ({args.repeats} seeds)",
                     f"HVPs {min(hvps)}..{max(hvps)}, {np.median(times):.2f} s (median; + {np.median(t_setup):.2f} s "
                     f"set-up), rel. error {min(errs):.1e}..{max(errs):.1e}"))
    torch.manual_seed(0)
    h = ph.hessian(net, criterion, data=(xt, yt), cuda=False)
    t = time.perf_counter()
    samples = h.trace(maxIter=100, tol=1e-3)
    t_ptr = time.perf_counter() - t
    tr_ref, tr_ref_se = float(tref.mean), float(tref.stderr)
    p_mean = float(np.mean(samples))
    rows.append((f"trace reference (kan_jax Hutchinson, {int(tref.num_probes)} probes)", f"{tr_ref:.6g} ± {tr_ref_se:.2g}"))
    rows.append(("PyHessian trace (tol 1e-3 on the running mean)",
                 f"{p_mean:.6g} after {len(samples)} probes, {t_ptr:.2f} s; differs from the reference by "
                 f"{abs(p_mean - tr_ref) / tr_ref:.1e} relative ({abs(p_mean - tr_ref) / tr_ref_se:.1f} reference s.e.)"))
    rows.append(("kan_jax hessian_trace (1% standard error)",
                 f"{float(jtr.mean):.6g} ± {float(jtr.stderr):.2g} after {int(jtr.num_probes)} probes, {t_jtr_warm:.2f} s warm "
                 f"({t_jtr:.2f} s with compilation); differs from the reference by {abs(float(jtr.mean) - tr_ref) / tr_ref:.1e}"))
    try:
        h.density(iter=5, n_v=1)
        rows.append(("PyHessian density()", "ran"))
    except Exception as err:  # torch.eig was removed from PyTorch
        rows.append(("PyHessian density()", f"fails: {type(err).__name__}: {str(err).splitlines()[0][:120]}"))

    print("| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
