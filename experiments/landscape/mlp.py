"""Part 2 of the landscape study: a ReLU MLP [784, H, 10] on MNIST, trained briefly and analysed."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._cli import option
from experiments._records import Timer, num, nums
from experiments.landscape.common import DENSITY_FIGSIZE, DPI, flag, negative_mass
from experiments.models import MLP, cross_entropy_loss, mnist_arrays
from kan_jax import curvature as cv
from kan_jax.io import save_figure


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Part 2: the MNIST MLP, its short training and its analysis."""

    hidden: int = option(512, help="hidden width of the [784, H, 10] MLP")
    steps: int = option(300, help="Adam steps")
    lr: float = option(1e-3, help="Adam learning rate")
    train_batch: int = option(128, help="Adam minibatch size")
    batch: int = option(1024, help="images in the analysed batch")
    delta: float = option(0.01, flag="--delta", help="delta of the augmented matrix [[H, g], [g^T, -delta]]")
    lanczos_steps: int = option(100, help="MLP Lanczos steps (top-1, SLQ, augmented)")
    slq_runs: int = option(3, help="MLP SLQ start vectors")
    trace_probes: int = option(100, help="MLP Hutchinson probe cap")
    seed: int = option(0, cli=False)  # the KAN's --seed

    def __post_init__(self) -> None:
        for name in ("hidden", "steps", "train_batch", "batch", "slq_runs", "trace_probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--mlp-{flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.lanczos_steps < 2:
            raise ValueError(f"--mlp-lanczos-steps must be >= 2, got {self.lanczos_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--mlp-lr must be > 0, got {self.lr}")
        if not math.isfinite(self.delta):
            raise ValueError(f"--delta must be finite, got {self.delta}")
        if self.batch > 60_000 or self.train_batch > 60_000:
            raise ValueError("--mlp-batch and --mlp-train-batch must be <= 60000 (the MNIST training set)")


def minibatch_indices(cfg: MLPConfig, n: int) -> jax.Array:
    """``(steps, train_batch)`` indices: consecutive slices of seeded permutations of ``range(n)``."""
    rng = np.random.default_rng(cfg.seed)
    total = cfg.steps * cfg.train_batch
    perm = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
    return jnp.asarray(perm.reshape(cfg.steps, cfg.train_batch).astype(np.int32))


def run_mlp_part(cfg: MLPConfig, mnist: Any, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train the MLP briefly and analyse its Hessian on one batch; writes ``mlp_density.png``."""
    timer = Timer(log)
    x_train, y_train = mnist_arrays(mnist.x_train, mnist.y_train)
    x_test, y_test = mnist_arrays(mnist.x_test, mnist.y_test)
    model = MLP(cfg.hidden)
    params = jax.jit(model.init)(jax.random.key(cfg.seed), x_train[:1])["params"]
    n = sum(int(np.size(a)) for a in jax.tree.leaves(params))
    loss = cross_entropy_loss(model)

    @jax.jit
    def evaluate(p, xb, yb):
        logits = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), jnp.mean(jnp.argmax(logits, -1) == yb)

    tx = optax.adam(cfg.lr)

    @jax.jit
    def train(p, idx):
        def step(carry, i):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p, (x_train[i], y_train[i]))
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), values = jax.lax.scan(step, (p, tx.init(p)), idx)
        return p, values

    idx = minibatch_indices(cfg, x_train.shape[0])
    init_loss, init_acc = evaluate(params, x_test, y_test)
    params, values = timer("mlp_adam", lambda: train(params, idx))
    test_loss, test_acc = evaluate(params, x_test, y_test)
    training = {
        "optimizer": f"optax.adam({cfg.lr:g})",
        "steps": cfg.steps,
        "train_batch": cfg.train_batch,
        "initial_minibatch_loss": num(values[0]),
        "final_minibatch_loss": num(values[-1]),
        "initial_test_loss": num(init_loss),
        "initial_test_accuracy": num(init_acc),
        "test_loss": num(test_loss),
        "test_accuracy": num(test_acc),
    }
    log(f"Adam: test accuracy {training['initial_test_accuracy']:.3f} -> {training['test_accuracy']:.3f} in {cfg.steps} steps")

    batch = (x_train[: cfg.batch], y_train[: cfg.batch])
    batches = jax.tree.map(lambda a: a[None], batch)
    batch_loss, batch_acc = evaluate(params, *batch)
    grad_norm = optax.tree.norm(jax.jit(jax.grad(loss))(params, batch))
    kw = dict(batches=batches)
    top = timer("mlp_top1", lambda: cv.top_eigenpairs(loss, params, 1, num_steps=cfg.lanczos_steps, **kw))
    trace = timer("mlp_trace", lambda: cv.hessian_trace(loss, params, max_probes=cfg.trace_probes, **kw))
    sd = timer("mlp_density", lambda: cv.spectral_density(loss, params, num_runs=cfg.slq_runs, num_steps=cfg.lanczos_steps, **kw))
    aug = timer("mlp_augmented", lambda: cv.augmented_min_eigenpair(loss, params, cfg.delta, num_steps=cfg.lanczos_steps, **kw))
    fig = cv.plot_spectral_density(sd, figsize=DENSITY_FIGSIZE,
                                   title=f"MLP [784, {cfg.hidden}, 10] Hessian, {cfg.batch} MNIST images "
                                         f"(SLQ {cfg.slq_runs}×{cfg.lanczos_steps})")
    save_figure(fig, out_dir / "mlp_density.png", dpi=DPI)
    nodes, weights = np.asarray(sd.nodes, np.float64), np.asarray(sd.weights, np.float64)
    lam = float(aug.eigenvalue)
    return {
        "config": dataclasses.asdict(cfg),
        "model": f"ReLU MLP [784, {cfg.hidden}, 10] (flax.linen.Dense), float32",
        "num_params": n,
        "training": training,
        "analysis_batch": {"images": "first N MNIST training images", "size": cfg.batch,
                           "loss": num(batch_loss), "accuracy": num(batch_acc), "grad_norm": num(grad_norm)},
        "top_eigenvalue": {"value": num(top.eigenvalues[0]), "residual_norm": num(top.residual_norms[0]),
                           "lanczos_steps": cfg.lanczos_steps, "hvps": cfg.lanczos_steps + 1},
        "trace": {"hutchinson": num(trace.mean), "stderr": num(trace.stderr), "num_probes": int(trace.num_probes)},
        "density": {"num_runs": cfg.slq_runs, "num_steps": cfg.lanczos_steps, "sigma": num(sd.sigma),
                    "min_node": num(nodes.min()), "max_node": num(nodes.max()),
                    "negative_mass": num(negative_mass(nodes, weights, np.float32)),
                    "nodes": [nums(r) for r in nodes], "weights": [nums(r) for r in weights],
                    "trace_estimate": num(n * np.mean(np.sum(weights * nodes, axis=1)))},
        "augmented": {
            "delta": cfg.delta,
            "eigenvalue": num(lam),
            "residual_norm": num(aug.residual_norm),
            "scalar": num(aug.scalar),
            "vector_norm": num(optax.tree.norm(aug.vector)),
            "lanczos_steps": cfg.lanczos_steps,
            "below_minus_delta": bool(lam <= -cfg.delta + 1e-6 * max(1.0, abs(cfg.delta))),
        },
        "timings_s": timer.seconds,
    }
