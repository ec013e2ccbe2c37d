r"""The "Is a KAN convex?" loss-landscape study (issue 6): interpolation, Hessian spectra, an MLP.

Part 1, a KAN on a toy regression (pykan's tutorial set-up):

* data: ``create_dataset(f, n_var=2)`` with ``f(x, y) = exp(sin(pi x) + y^2)``, inputs uniform on
  ``[-1, 1]^2`` (1,000 training and 1,000 test points, seed ``--seed``);
* model: ``KAN([2, 5, 1])``, ``G = 5``, ``k = 3`` (efficient-kan layout, 150 parameters), in
  float64 by default (``--kan-dtype``); the knot grid is the initial uniform grid on
  ``[-1, 1]`` and is never updated, so ``theta0`` and ``thetaN`` describe functions on the
  same grid and the straight line between them is meaningful;
* training: full-batch L-BFGS (``optax.lbfgs``, memory 10, zoom line search) for
  ``--lbfgs-steps`` iterations in one compiled ``lax.scan`` on the objective
  ``MSE + lamb * R``, with ``R`` efficient-kan's sparsity regulariser
  (:func:`kan_jax.regularization_loss`, L1 + entropy of the spline weights). The default
  ``--lamb 1e-3`` keeps the seed study's regularised training while leaving the fit to the
  data term (about 2e-4 MSE against 1e-4 without it); ``--lamb 0`` trains on the squared
  loss alone, so that ``thetaN`` is a stationary point of the analysed loss. The default 400
  iterations are about what pykan's ``fit(opt="LBFGS", steps=20)`` does (each of its steps
  runs up to 20 L-BFGS iterations);
* analysis: every Hessian, interpolation and density is of the **squared loss** (the data
  term, as PyHessian's ``criterion`` in the seed study), not of the regularised objective;
* ``loss((1 - a) theta0 + a thetaN)`` for ``--num-alphas`` values of ``a`` on
  ``[--alpha-min, --alpha-max]`` (50 on [-1.5, 2]) on ``--num-datasets`` freshly seeded
  datasets (seeds ``seed + 1 ...``, their training splits) → ``interpolation.png``;
* the SLQ spectral density of the training-set Hessian at every ``a`` → ``densities.pdf``
  (one page per ``a``), with the exact spectrum's extremes, trace and fraction of negative
  eigenvalues at each ``a`` in the JSON;
* at ``thetaN``: the top-5 eigenvalues (Lanczos), the minimum eigenvalue (Lanczos), the trace
  (Hutchinson) next to the exact values from ``jax.hessian`` + ``eigh`` (computed in
  float64), with relative errors and residual norms → ``kan_spectrum.json``, and the density
  at ``thetaN`` with the exact spectrum smoothed by the same kernel → ``kan_density.png``.

Part 2, a ReLU MLP ``[784, 512, 10]`` on MNIST (float32): ``--mlp-steps`` Adam steps on
cross-entropy (minibatches of ``--mlp-train-batch`` from a seeded shuffle of the 60,000
training images), then on the first ``--mlp-batch`` training images: the top eigenvalue
(Lanczos), the Hutchinson trace, the SLQ density (``mlp_density.png``) and the minimum
eigenpair of the augmented matrix ``[[H, g], [g^T, -delta]]``, with residual norms and
timings → ``mlp_spectrum.json``.

All analyses run under ``jax.default_matmul_precision("highest")``; float64 is enabled in the
process (the MLP stays float32). Timings are wall-clock seconds of each phase *including* jit
compilation (one call each).

Outputs in ``--out-dir`` (default ``runs/landscape``), each written atomically (a temporary
file in the same folder, then a rename): ``theta0.msgpack`` and ``thetaN.msgpack``
(:func:`kan_jax.training.checkpoint.save_params`; rebuild the grid with ``KAN(...).init``),
``interpolation.png``, ``densities.pdf``, ``kan_density.png``, ``kan_spectrum.json``,
``mlp_spectrum.json``, ``mlp_density.png`` and ``summary.md`` (the printed summary).

Usage::

    python -m experiments.landscape --data-dir ../shared/data/mnist           # the full study
    python -m experiments.landscape --quick --data-dir ../shared/data/mnist   # smoke run (~1 min)
    python -m experiments.landscape --skip-mlp --lamb 0                        # KAN part only
"""
from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from experiments._cli import option, parse
from experiments._env import device_description
from kan_jax import KAN, regularization_loss
from kan_jax import hessian as hs
from kan_jax.training.checkpoint import save_params
from kan_jax.data import DataError, create_dataset, load_mnist, preprocess_mnist
from kan_jax.io import atomic_write, save_figure, write_json
from kan_jax.landscape import interpolate, interpolate_params

#: Figure sizes (inches) and resolution of the PNGs written by the study.
INTERPOLATION_FIGSIZE = (7.0, 4.5)
DENSITY_FIGSIZE = (6.0, 4.0)
DPI = 150

#: Number of top eigenvalues compared with the exact spectrum.
TOP_K = 5


def negative_threshold(values: Any, dtype: Any) -> float:
    """``sqrt(eps) * max|values|`` for ``dtype``: eigenvalues (or SLQ nodes) below minus this count
    as negative. Flat directions come out at rounding level, e.g. the null space of an MLP Hessian as
    one SLQ node near -4e-8 ||H|| in float32, and their sign means nothing."""
    return float(np.sqrt(np.finfo(dtype).eps) * np.max(np.abs(np.asarray(values, np.float64))))


def target_function(x: np.ndarray) -> np.ndarray:
    """``f(x, y) = exp(sin(pi x) + y^2)`` on inputs of shape ``(N, 2)``; returns ``(N, 1)``."""
    return np.exp(np.sin(np.pi * x[:, [0]]) + x[:, [1]] ** 2)


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KANConfig:
    """Part 1: the KAN, its training and its analysis."""

    hidden: int = option(5, flag="--kan-hidden", help="hidden width of the [2, H, 1] KAN")
    grid_size: int = option(5, help="spline grid intervals G")
    spline_order: int = option(3, help="spline order k")
    dtype: str = option("float64", flag="--kan-dtype", choices=("float64", "float32"), help="KAN parameter/data dtype")
    train_num: int = option(1000, help="training (and test) points of each toy dataset")
    seed: int = option(0, help="seed of the KAN init, its training data, the MLP init and shuffle")
    lbfgs_steps: int = option(400, help="L-BFGS iterations")
    lamb: float = option(1e-3, help="weight of the sparsity regulariser in the training objective")
    num_datasets: int = option(10, help="freshly seeded datasets for the interpolation")
    num_alphas: int = option(50, help="interpolation coefficients")
    alpha_min: float = option(-1.5, help="first alpha")
    alpha_max: float = option(2.0, help="last alpha")
    lanczos_steps: int = option(100, help="KAN Lanczos steps (top-5, min, SLQ; capped at #params)")
    slq_runs: int = option(10, help="KAN SLQ start vectors per density")
    trace_probes: int = option(200, help="KAN Hutchinson probe cap (stops at 1%% standard error)")

    def __post_init__(self) -> None:
        for name in ("hidden", "grid_size", "train_num", "lbfgs_steps", "num_datasets", "slq_runs", "trace_probes"):
            if getattr(self, name) < 1:
                flag = "kan-hidden" if name == "hidden" else _flag(name)
                raise ValueError(f"--{flag} must be >= 1, got {getattr(self, name)}")
        if self.spline_order < 0:
            raise ValueError(f"--spline-order must be >= 0, got {self.spline_order}")
        if self.num_alphas < 2:
            raise ValueError(f"--num-alphas must be >= 2, got {self.num_alphas}")
        if not self.alpha_min < self.alpha_max:
            raise ValueError(f"--alpha-min ({self.alpha_min}) must be below --alpha-max ({self.alpha_max})")
        if self.lanczos_steps < TOP_K:
            raise ValueError(f"--lanczos-steps must be >= {TOP_K} (top-{TOP_K} eigenvalues), got {self.lanczos_steps}")
        if not (self.lamb >= 0 and math.isfinite(self.lamb)):
            raise ValueError(f"--lamb must be a finite number >= 0, got {self.lamb}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"--kan-dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def widths(self) -> tuple[int, int, int]:
        return (2, self.hidden, 1)


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
                raise ValueError(f"--mlp-{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.lanczos_steps < 2:
            raise ValueError(f"--mlp-lanczos-steps must be >= 2, got {self.lanczos_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--mlp-lr must be > 0, got {self.lr}")
        if not math.isfinite(self.delta):
            raise ValueError(f"--delta must be finite, got {self.delta}")
        if self.batch > 60_000 or self.train_batch > 60_000:
            raise ValueError("--mlp-batch and --mlp-train-batch must be <= 60000 (the MNIST training set)")


def _flag(name: str) -> str:
    return name.replace("_", "-")


# ------------------------------------------------------------------------------------------
# Small utilities: atomic files, JSON numbers, timing
# ------------------------------------------------------------------------------------------
def _num(x: Any) -> Optional[float]:
    """A JSON-safe float (``None`` for NaN/inf)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _nums(xs: Any) -> list:
    return [_num(x) for x in np.asarray(xs).reshape(-1)]


def negative_fraction(eigenvalues: Any, dtype: Any) -> float:
    """Fraction of ``eigenvalues`` below ``-negative_threshold``."""
    ev = np.asarray(eigenvalues, np.float64)
    return float(np.mean(ev < -negative_threshold(ev, dtype)))


def negative_mass(nodes: Any, weights: Any, dtype: Any) -> float:
    """SLQ estimate of the fraction of negative eigenvalues: the weight on nodes below
    ``-negative_threshold``, averaged over runs."""
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    return float(np.mean(np.sum(weights * (nodes < -negative_threshold(nodes, dtype)), axis=1)))


def _rel(approx: Any, exact: Any) -> Any:
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return np.abs(approx - exact) / np.maximum(np.abs(exact), np.finfo(np.float64).tiny)


class _Timer:
    """Wall-clock seconds of named phases (results are blocked on before the clock stops)."""

    def __init__(self, log: Callable[[str], None]):
        self.seconds: dict[str, float] = {}
        self._log = log

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        self.seconds[name] = time.perf_counter() - t
        self._log(f"{name}: {self.seconds[name]:.2f} s")
        return out


# ------------------------------------------------------------------------------------------
# Part 1: the KAN
# ------------------------------------------------------------------------------------------
def kan_model(cfg: KANConfig) -> KAN:
    return KAN(cfg.widths, grid_size=cfg.grid_size, spline_order=cfg.spline_order, param_dtype=jnp.dtype(cfg.dtype))


def kan_dataset(cfg: KANConfig, seed: int, dtype: Any = None) -> dict[str, jax.Array]:
    """``create_dataset(f, n_var=2, seed=seed)`` as arrays of ``dtype`` (default the KAN's)."""
    ds = create_dataset(target_function, n_var=2, train_num=cfg.train_num, test_num=cfg.train_num, seed=seed)
    dtype = jnp.dtype(cfg.dtype) if dtype is None else dtype
    return {k: jnp.asarray(v, dtype) for k, v in ds.items()}


def make_squared_loss(model: nn.Module, grid: Any) -> Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array]:
    """``loss(params, (x, y)) = mean((model(x) - y)^2)`` with the knot grid fixed."""

    def loss(params, batch):
        x, y = batch
        return jnp.mean((model.apply({"params": params, "grid": grid}, x) - y) ** 2)

    return loss


def make_lbfgs_trainer(loss: Callable, lamb: float, steps: int) -> Callable:
    """A compiled ``train(params, batch) -> (params, (objectives, losses, skipped))``.

    ``steps`` iterations of ``optax.lbfgs`` in one ``lax.scan`` on ``loss + lamb * R``. An
    iteration whose update is not finite is skipped (parameters and state kept). Returned per
    iteration: the objective before the step, the squared loss after it, and whether the step
    was skipped.
    """
    opt = optax.lbfgs()

    @jax.jit
    def train(params, batch):
        def objective(p):
            value = loss(p, batch)
            return value + lamb * regularization_loss(p) if lamb else value

        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, new_state = opt.update(grad, state, p, value=value, grad=grad, value_fn=objective)
            ok = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates)]))
            new_p = optax.apply_updates(p, updates)
            p, state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_p, new_state), (p, state))
            return (p, state), (value, loss(p, batch), ~ok)

        (params, _), history = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params, history

    return train


def _as_dtype(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


@dataclasses.dataclass(frozen=True)
class KANSetup:
    """What every phase of the KAN part shares: the model, its fixed grid, data and losses."""

    cfg: KANConfig
    out_dir: Path
    timer: "_Timer"
    log: Callable[[str], None]
    dtype: Any
    grid: Any
    theta0: Any
    num_params: int
    loss: Callable  # squared loss(params, (x, y)) in the KAN's dtype
    loss_jit: Callable
    train_batch: tuple[jax.Array, jax.Array]
    test_batch: tuple[jax.Array, jax.Array]
    loss64: Callable  # the same loss in float64 (exact references)
    batches64: tuple[jax.Array, jax.Array]

    @property
    def batches(self) -> tuple[jax.Array, jax.Array]:
        """The training set as one stacked batch (the analyses' ``batches=``)."""
        return jax.tree.map(lambda a: a[None], self.train_batch)


def setup_kan(cfg: KANConfig, out_dir: Path, log: Callable[[str], None]) -> KANSetup:
    """Build the KAN, its training data and losses; writes ``theta0.msgpack``."""
    model = kan_model(cfg)
    data = kan_dataset(cfg, cfg.seed)
    train_batch = (data["train_input"], data["train_label"])
    variables = jax.jit(model.init)(jax.random.key(cfg.seed), train_batch[0][:1])
    grid, theta0 = variables["grid"], variables["params"]
    loss = make_squared_loss(model, grid)
    # The exact reference is always float64 (same parameters and data, cast).
    data64 = kan_dataset(cfg, cfg.seed, jnp.float64)
    loss64 = make_squared_loss(kan_model(dataclasses.replace(cfg, dtype="float64")), _as_dtype(grid, jnp.float64))
    save_params(out_dir / "theta0.msgpack", theta0)
    return KANSetup(
        cfg=cfg, out_dir=out_dir, timer=_Timer(log), log=log, dtype=jnp.dtype(cfg.dtype), grid=grid, theta0=theta0,
        num_params=sum(int(np.size(a)) for a in jax.tree.leaves(theta0)), loss=loss, loss_jit=jax.jit(loss),
        train_batch=train_batch, test_batch=(data["test_input"], data["test_label"]),
        loss64=loss64, batches64=(data64["train_input"][None], data64["train_label"][None]),
    )


def train_kan(k: KANSetup) -> tuple[Any, dict[str, Any]]:
    """L-BFGS from ``theta0``; writes ``thetaN.msgpack``; returns ``(thetaN, training record)``."""
    cfg, theta0 = k.cfg, k.theta0
    trainer = make_lbfgs_trainer(k.loss, cfg.lamb, cfg.lbfgs_steps)
    thetaN, (objectives, losses, skipped) = k.timer("kan_lbfgs", lambda: trainer(theta0, k.train_batch))
    save_params(k.out_dir / "thetaN.msgpack", thetaN)
    reg = jax.jit(regularization_loss)
    grad_norm = jax.jit(lambda p, b: optax.global_norm(jax.grad(k.loss)(p, b)))
    loss_jit, train_batch, test_batch = k.loss_jit, k.train_batch, k.test_batch
    training = {
        "optimizer": "optax.lbfgs (memory 10, zoom line search), full batch",
        "steps": cfg.lbfgs_steps,
        "lamb": cfg.lamb,
        "regularizer": "kan_jax.regularization_loss (efficient-kan: L1 + entropy of the spline weights)",
        "initial_loss": _num(loss_jit(theta0, train_batch)),
        "final_loss": _num(loss_jit(thetaN, train_batch)),
        "initial_test_loss": _num(loss_jit(theta0, test_batch)),
        "final_test_loss": _num(loss_jit(thetaN, test_batch)),
        "initial_objective": _num(objectives[0]),
        "final_objective": _num(loss_jit(thetaN, train_batch) + cfg.lamb * reg(thetaN)),
        "final_regularizer": _num(reg(thetaN)),
        "final_grad_norm_loss": _num(grad_norm(thetaN, train_batch)),
        "loss_history": _nums(losses),
        "skipped_steps": int(np.sum(np.asarray(skipped))),
    }
    k.log(f"L-BFGS: train MSE {training['initial_loss']:.4g} -> {training['final_loss']:.4g} in {cfg.lbfgs_steps} steps")
    return thetaN, training


def alpha_grid(cfg: KANConfig) -> np.ndarray:
    """``num_alphas`` values on ``[alpha_min, alpha_max]``, exactly 0 and 1 where the grid hits them."""
    alphas = np.linspace(cfg.alpha_min, cfg.alpha_max, cfg.num_alphas)
    alphas[np.abs(alphas) < 1e-12] = 0.0
    alphas[np.abs(alphas - 1) < 1e-12] = 1.0
    return alphas


def interpolation_on_fresh_data(k: KANSetup, thetaN: Any, alphas: np.ndarray) -> dict[str, Any]:
    """Loss along the line on ``num_datasets`` freshly seeded datasets; writes ``interpolation.png``."""
    cfg = k.cfg
    alphas_j = jnp.asarray(alphas, k.dtype)
    seeds = [cfg.seed + 1 + i for i in range(cfg.num_datasets)]

    def interpolate_all():
        curves = []
        for s in seeds:
            fresh = kan_dataset(cfg, s)
            curves.append(interpolate(k.loss, k.theta0, thetaN, alphas_j, data=(fresh["train_input"], fresh["train_label"])))
        return jnp.stack(curves), interpolate(k.loss, k.theta0, thetaN, alphas_j, data=k.train_batch)

    curves, train_curve = k.timer("kan_interpolation", interpolate_all)
    curves, train_curve = np.asarray(curves), np.asarray(train_curve)
    save_figure(plot_interpolation(alphas, curves, seeds, cfg), k.out_dir / "interpolation.png", dpi=DPI)
    return {
        "alphas": _nums(alphas),
        "datasets": [{"seed": s, "losses": _nums(c)} for s, c in zip(seeds, curves)],
        "mean": _nums(curves.mean(axis=0)),
        "train_losses": _nums(train_curve),
        "data": "training split of create_dataset(f, n_var=2, seed=s) for each seed s",
    }


def spectrum_at(k: KANSetup, thetaN: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Lanczos top-k and minimum, Hutchinson trace at ``thetaN`` against the exact float64 spectrum."""
    cfg, n, kw = k.cfg, k.num_params, dict(batches=k.batches)
    top = k.timer("kan_top5", lambda: hs.top_eigenpairs(k.loss, thetaN, TOP_K, num_steps=cfg.lanczos_steps, **kw))
    low = k.timer("kan_min", lambda: hs.min_eigenpair(k.loss, thetaN, num_steps=cfg.lanczos_steps, **kw))
    trace = k.timer("kan_trace", lambda: hs.hessian_trace(k.loss, thetaN, max_probes=cfg.trace_probes, **kw))
    exact = np.asarray(k.timer("kan_exact_eigh", lambda: hs.exact_spectrum(
        k.loss64, _as_dtype(thetaN, jnp.float64), batches=k.batches64)))
    exact_top = exact[::-1][:TOP_K]
    lam_max = float(np.max(np.abs(exact)))
    spectrum = {
        "lanczos_steps": min(cfg.lanczos_steps, n),
        "top5": {
            "lanczos": _nums(top.eigenvalues),
            "exact": _nums(exact_top),
            "rel_error": _nums(_rel(top.eigenvalues, exact_top)),
            "residual_norms": _nums(top.residual_norms),
        },
        "min": {
            "lanczos": _num(low.eigenvalue),
            "exact": _num(exact[0]),
            "abs_error": _num(abs(float(low.eigenvalue) - exact[0])),
            "rel_error": _num(_rel(low.eigenvalue, exact[0])),
            "error_over_norm": _num(abs(float(low.eigenvalue) - exact[0]) / lam_max),
            "residual_norm": _num(low.residual_norm),
        },
        "trace": {
            "hutchinson": _num(trace.mean),
            "stderr": _num(trace.stderr),
            "num_probes": int(trace.num_probes),
            "exact": _num(np.sum(exact)),
            "rel_error": _num(_rel(trace.mean, np.sum(exact))),
            "z_score": _num((float(trace.mean) - np.sum(exact)) / float(trace.stderr)) if float(trace.stderr) > 0 else None,
        },
        "exact_negative_fraction": _num(negative_fraction(exact, np.float64)),
        "exact_eigenvalues": _nums(exact),
    }
    k.log(f"top-{TOP_K}: max rel. error {max(spectrum['top5']['rel_error']):.1e}; "
          f"min eigenvalue {spectrum['min']['lanczos']:.6g} (exact {spectrum['min']['exact']:.6g})")
    return spectrum, exact


def _slq(k: KANSetup) -> Callable[[Any], Any]:
    return functools.partial(hs.spectral_density, k.loss, num_runs=k.cfg.slq_runs, num_steps=k.cfg.lanczos_steps,
                             batches=k.batches)


def densities_along_line(k: KANSetup, thetaN: Any, alphas: np.ndarray) -> list[dict[str, Any]]:
    """SLQ and exact spectra at every alpha; writes ``densities.pdf`` (one page per alpha)."""
    from kan_jax.plotting import save_spectral_density_pages

    cfg, n, slq = k.cfg, k.num_params, _slq(k)
    exact_at = functools.partial(hs.exact_spectrum, k.loss64, batches=k.batches64)
    points = [interpolate_params(k.theta0, thetaN, a) for a in alphas]
    densities = k.timer("kan_densities_slq", lambda: [slq(p) for p in points])
    spectra = k.timer("kan_densities_exact", lambda: [exact_at(_as_dtype(p, jnp.float64)) for p in points])
    rows = []
    for a, p, sd, ev in zip(alphas, points, densities, spectra):
        ev = np.asarray(ev)
        nodes, weights = np.asarray(sd.nodes, np.float64), np.asarray(sd.weights, np.float64)
        rows.append({
            "alpha": float(a),
            "train_loss": _num(k.loss_jit(p, k.train_batch)),
            "slq_min_node": _num(nodes.min()),
            "slq_max_node": _num(nodes.max()),
            "slq_trace": _num(n * np.mean(np.sum(weights * nodes, axis=1))),
            "slq_negative_mass": _num(negative_mass(nodes, weights, k.dtype)),
            "exact_min": _num(ev[0]),
            "exact_max": _num(ev[-1]),
            "exact_trace": _num(ev.sum()),
            "exact_negative_fraction": _num(negative_fraction(ev, np.float64)),
        })
    titles = [f"KAN [2, {cfg.hidden}, 1], α = {r['alpha']:+.3f}, train MSE {r['train_loss']:.3g} "
              f"(SLQ {cfg.slq_runs}×{min(cfg.lanczos_steps, n)})" for r in rows]
    k.timer("kan_densities_pdf", lambda: save_spectral_density_pages(
        k.out_dir / "densities.pdf", densities, titles=titles, figsize=DENSITY_FIGSIZE))
    return rows


def plot_density_at(k: KANSetup, thetaN: Any, exact: np.ndarray) -> None:
    """``kan_density.png``: the SLQ density at ``thetaN`` and the exact spectrum smoothed by the same kernel."""
    from matplotlib.figure import Figure

    from kan_jax.plotting import plot_spectral_density

    cfg, n = k.cfg, k.num_params
    sd_N = _slq(k)(thetaN)
    g_exact, d_exact, _ = hs.gaussian_density(exact[None], np.full((1, n), 1.0 / n), sigma=float(sd_N.sigma))
    fig = Figure(figsize=DENSITY_FIGSIZE, layout="tight")
    ax = fig.add_subplot()
    plot_spectral_density(sd_N, ax=ax, label=f"SLQ ({cfg.slq_runs} runs × {min(cfg.lanczos_steps, n)} steps)")
    plot_spectral_density((g_exact, d_exact), ax=ax, label="exact (eigh of jax.hessian)", linestyle="--",
                          title=f"KAN [2, {cfg.hidden}, 1] Hessian at θN ({n} parameters)")
    save_figure(fig, k.out_dir / "kan_density.png", dpi=DPI)


def run_kan_part(cfg: KANConfig, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train the KAN, interpolate, analyse; writes the KAN outputs and returns the JSON record."""
    k = setup_kan(cfg, out_dir, log)
    thetaN, training = train_kan(k)
    alphas = alpha_grid(cfg)
    interpolation = interpolation_on_fresh_data(k, thetaN, alphas)
    spectrum, exact = spectrum_at(k, thetaN)
    rows = densities_along_line(k, thetaN, alphas)
    plot_density_at(k, thetaN, exact)
    return {
        "config": dataclasses.asdict(cfg),
        "target": "exp(sin(pi x) + y^2) on [-1, 1]^2",
        "num_params": k.num_params,
        "dtype": cfg.dtype,
        "analysed_loss": "mean squared error on the training set (the regulariser is not analysed)",
        "theta0": "theta0.msgpack",
        "thetaN": "thetaN.msgpack",
        "training": training,
        "at_thetaN": spectrum,
        "interpolation": interpolation,
        "densities": rows,
        "timings_s": k.timer.seconds,
    }


def plot_interpolation(alphas: np.ndarray, curves: np.ndarray, seeds: Sequence[int], cfg: KANConfig) -> Any:
    """Loss along ``(1 - a) theta0 + a thetaN``: one curve per dataset, their mean dashed black."""
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=INTERPOLATION_FIGSIZE, layout="tight")
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.9, len(seeds)))
    for s, c, color in zip(seeds, curves, colors):
        ax.semilogy(alphas, c, lw=1.0, color=color, label=f"dataset seed {s}" if len(seeds) <= 5 else None)
    ax.semilogy(alphas, curves.mean(axis=0), lw=1.6, ls="--", color="black",
                label=f"mean of {len(seeds)} fresh datasets" if len(seeds) > 5 else "mean")
    for a, name in ((0.0, "θ0"), (1.0, "θN")):
        ax.axvline(a, color="gray", lw=0.8, ls=":")
        ax.text(a, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("α")
    ax.set_ylabel("MSE (log scale)")
    ax.set_title(f"KAN [2, {cfg.hidden}, 1]: loss along (1 − α) θ0 + α θN", pad=14)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


# ------------------------------------------------------------------------------------------
# Part 2: the MNIST MLP
# ------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """``[784, hidden, 10]`` with ReLU."""

    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))  # Dense_0 (built first, so named first)
        return nn.Dense(10)(x)  # Dense_1


def run_mlp_part(cfg: MLPConfig, mnist: Any, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Train the MLP briefly and analyse its Hessian on one batch; writes ``mlp_density.png``."""
    from kan_jax.plotting import plot_spectral_density

    timer = _Timer(log)
    x_train = jnp.asarray(preprocess_mnist(mnist.x_train))
    y_train = jnp.asarray(mnist.y_train.astype(np.int32))
    x_test = jnp.asarray(preprocess_mnist(mnist.x_test))
    y_test = jnp.asarray(mnist.y_test.astype(np.int32))
    model = MLP(cfg.hidden)
    params = jax.jit(model.init)(jax.random.key(cfg.seed), x_train[:1])["params"]
    n = sum(int(np.size(a)) for a in jax.tree.leaves(params))

    def loss(p, batch):
        xb, yb = batch
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, xb), yb).mean()

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

    # minibatches: consecutive slices of seeded permutations of the training set
    rng = np.random.default_rng(cfg.seed)
    total = cfg.steps * cfg.train_batch
    perm = np.concatenate([rng.permutation(x_train.shape[0]) for _ in range(-(-total // x_train.shape[0]))])[:total]
    idx = jnp.asarray(perm.reshape(cfg.steps, cfg.train_batch).astype(np.int32))
    init_loss, init_acc = evaluate(params, x_test, y_test)
    params, values = timer("mlp_adam", lambda: train(params, idx))
    test_loss, test_acc = evaluate(params, x_test, y_test)
    training = {
        "optimizer": f"optax.adam({cfg.lr:g})",
        "steps": cfg.steps,
        "train_batch": cfg.train_batch,
        "initial_minibatch_loss": _num(values[0]),
        "final_minibatch_loss": _num(values[-1]),
        "initial_test_loss": _num(init_loss),
        "initial_test_accuracy": _num(init_acc),
        "test_loss": _num(test_loss),
        "test_accuracy": _num(test_acc),
    }
    log(f"Adam: test accuracy {training['initial_test_accuracy']:.3f} -> {training['test_accuracy']:.3f} in {cfg.steps} steps")

    batch = (x_train[: cfg.batch], y_train[: cfg.batch])
    batches = jax.tree.map(lambda a: a[None], batch)
    batch_loss, batch_acc = evaluate(params, *batch)
    grad_norm = optax.global_norm(jax.jit(jax.grad(loss))(params, batch))
    kw = dict(batches=batches)
    top = timer("mlp_top1", lambda: hs.top_eigenpairs(loss, params, 1, num_steps=cfg.lanczos_steps, **kw))
    trace = timer("mlp_trace", lambda: hs.hessian_trace(loss, params, max_probes=cfg.trace_probes, **kw))
    sd = timer("mlp_density", lambda: hs.spectral_density(loss, params, num_runs=cfg.slq_runs, num_steps=cfg.lanczos_steps, **kw))
    aug = timer("mlp_augmented", lambda: hs.augmented_min_eigenpair(loss, params, cfg.delta, num_steps=cfg.lanczos_steps, **kw))
    fig = plot_spectral_density(sd, figsize=DENSITY_FIGSIZE,
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
                           "loss": _num(batch_loss), "accuracy": _num(batch_acc), "grad_norm": _num(grad_norm)},
        "top_eigenvalue": {"value": _num(top.eigenvalues[0]), "residual_norm": _num(top.residual_norms[0]),
                           "lanczos_steps": cfg.lanczos_steps, "hvps": cfg.lanczos_steps + 1},
        "trace": {"hutchinson": _num(trace.mean), "stderr": _num(trace.stderr), "num_probes": int(trace.num_probes)},
        "density": {"num_runs": cfg.slq_runs, "num_steps": cfg.lanczos_steps, "sigma": _num(sd.sigma),
                    "min_node": _num(nodes.min()), "max_node": _num(nodes.max()),
                    "negative_mass": _num(negative_mass(nodes, weights, np.float32)),
                    "nodes": [_nums(r) for r in nodes], "weights": [_nums(r) for r in weights],
                    "trace_estimate": _num(n * np.mean(np.sum(weights * nodes, axis=1)))},
        "augmented": {
            "delta": cfg.delta,
            "eigenvalue": _num(lam),
            "residual_norm": _num(aug.residual_norm),
            "scalar": _num(aug.scalar),
            "vector_norm": _num(optax.global_norm(aug.vector)),
            "lanczos_steps": cfg.lanczos_steps,
            "below_minus_delta": bool(lam <= -cfg.delta + 1e-6 * max(1.0, abs(cfg.delta))),
        },
        "timings_s": timer.seconds,
    }


# ------------------------------------------------------------------------------------------
# Summary, CLI
# ------------------------------------------------------------------------------------------
def summary_text(kan: dict[str, Any], mlp: Optional[dict[str, Any]], device: str, total: float) -> str:
    t, s = kan["training"], kan["at_thetaN"]
    lines = [
        f"## Loss-landscape study ({device})",
        "",
        f"KAN [2, {kan['config']['hidden']}, 1], G={kan['config']['grid_size']}, k={kan['config']['spline_order']}, "
        f"{kan['num_params']} parameters, {kan['dtype']}; L-BFGS {t['steps']} steps, lamb={t['lamb']:g}: "
        f"train MSE {t['initial_loss']:.4g} -> {t['final_loss']:.4g} (test {t['initial_test_loss']:.4g} -> "
        f"{t['final_test_loss']:.4g}); |grad MSE| at thetaN {t['final_grad_norm_loss']:.2e}",
        "",
        "| Hessian at thetaN | Lanczos / Hutchinson | exact (jax.hessian + eigh) | relative error | residual |",
        "|---|---|---|---|---|",
    ]
    for i, (a, e, r, res) in enumerate(zip(s["top5"]["lanczos"], s["top5"]["exact"], s["top5"]["rel_error"], s["top5"]["residual_norms"])):
        lines.append(f"| lambda_{i + 1} | {a:.10g} | {e:.10g} | {r:.1e} | {res:.1e} |")
    m, tr = s["min"], s["trace"]
    lines.append(f"| lambda_min | {m['lanczos']:.10g} | {m['exact']:.10g} | {m['rel_error']:.1e} | {m['residual_norm']:.1e} |")
    z = f", z = {tr['z_score']:+.2f}" if tr["z_score"] is not None else ""
    lines.append(f"| trace | {tr['hutchinson']:.6g} ± {tr['stderr']:.2g} ({tr['num_probes']} probes{z}) | {tr['exact']:.10g} | {tr['rel_error']:.1e} | |")
    rows = kan["densities"]
    neg = [r["exact_negative_fraction"] for r in rows]
    lines += [
        "",
        f"Exact fraction of negative eigenvalues along the line: {min(neg):.2f}..{max(neg):.2f} "
        f"(at thetaN {s['exact_negative_fraction']:.2f}); interpolation: mean loss over "
        f"{len(kan['interpolation']['datasets'])} fresh datasets at alpha=0 / 1: "
        f"{_at(kan, 0.0):.4g} / {_at(kan, 1.0):.4g}",
    ]
    if mlp is not None:
        tm, a = mlp["training"], mlp["augmented"]
        lines += [
            "",
            f"MLP [784, {mlp['config']['hidden']}, 10], {mlp['num_params']:,} parameters, float32; Adam {tm['steps']} steps: "
            f"test accuracy {tm['initial_test_accuracy']:.4f} -> {tm['test_accuracy']:.4f}; Hessian on {mlp['analysis_batch']['size']} images:",
            "",
            "| quantity | value | residual norm | time (s) |",
            "|---|---|---|---|",
            f"| top eigenvalue ({mlp['top_eigenvalue']['lanczos_steps']} Lanczos steps) | {mlp['top_eigenvalue']['value']:.7g} | "
            f"{mlp['top_eigenvalue']['residual_norm']:.1e} | {mlp['timings_s']['mlp_top1']:.1f} |",
            f"| trace (Hutchinson, {mlp['trace']['num_probes']} probes) | {mlp['trace']['hutchinson']:.5g} ± {mlp['trace']['stderr']:.2g} | | "
            f"{mlp['timings_s']['mlp_trace']:.1f} |",
            f"| SLQ density ({mlp['density']['num_runs']} × {mlp['density']['num_steps']}): extreme nodes | "
            f"{mlp['density']['min_node']:.4g} .. {mlp['density']['max_node']:.5g} | | {mlp['timings_s']['mlp_density']:.1f} |",
            f"| augmented min eigenvalue (delta={a['delta']:g}), last component {a['scalar']:.3g} | {a['eigenvalue']:.7g} | "
            f"{a['residual_norm']:.1e} | {mlp['timings_s']['mlp_augmented']:.1f} |",
        ]
    times = {**kan["timings_s"], **(mlp["timings_s"] if mlp else {})}
    lines += ["", "Timings (s, compilation included): " + ", ".join(f"{k} {v:.1f}" for k, v in times.items())
              + f"; total {total:.1f}"]
    return "\n".join(lines) + "\n"


def _at(kan: dict[str, Any], a: float) -> float:
    alphas = np.asarray(kan["interpolation"]["alphas"])
    i = int(np.argmin(np.abs(alphas - a)))
    return float(kan["interpolation"]["mean"][i]) if abs(alphas[i] - a) < 1e-9 else float("nan")


def run_study(kan_cfg: KANConfig, mlp_cfg: Optional[MLPConfig], out_dir: Path, *, data_dir: Optional[Path] = None,
              verbose: bool = True) -> dict[str, Any]:
    """Run the study (MLP part unless ``mlp_cfg`` is None); returns both records."""
    log = (lambda msg: print(f"[landscape] {msg}", flush=True)) if verbose else (lambda msg: None)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(data_dir) if mlp_cfg is not None else None  # fail early on missing data
    device = device_description()
    with jax.default_matmul_precision("highest"):
        kan = run_kan_part(kan_cfg, out_dir, log)
        kan["device"] = device
        write_json(out_dir / "kan_spectrum.json", kan)
        mlp = None
        if mlp_cfg is not None:
            mlp = run_mlp_part(mlp_cfg, mnist, out_dir, log)
            mlp["device"] = device
            write_json(out_dir / "mlp_spectrum.json", mlp)
    total = time.perf_counter() - start
    text = summary_text(kan, mlp, device, total)
    atomic_write(out_dir / "summary.md", text)
    if verbose:
        print(text)
        print(f"outputs in {out_dir}")
    return {"kan": kan, "mlp": mlp, "total_seconds": total}


@dataclasses.dataclass(frozen=True)
class LandscapeConfig:
    """Everything ``python -m experiments.landscape`` takes; :data:`PRESETS` names two."""

    kan: KANConfig = option(default_factory=KANConfig, prefix="", help="KAN part")
    mlp: MLPConfig = option(default_factory=MLPConfig, prefix="mlp-", help="MLP part")
    skip_mlp: bool = option(False, help="run the KAN part only (no MNIST needed)")
    data_dir: Optional[Path] = option(
        None, help="folder with the four MNIST IDX .gz files (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    out_dir: Path = option(Path("runs/landscape"), help="output folder")
    quiet: bool = option(False, help="print nothing")


#: ``full``: the published set-up; ``quick``: a smoke run (30 L-BFGS steps, 3 datasets, 8 alphas,
#: MLP [784, 32, 10] on 256 images).
PRESETS = {
    "full": LandscapeConfig(),
    "quick": LandscapeConfig(
        kan=KANConfig(lbfgs_steps=30, num_datasets=3, num_alphas=8, slq_runs=2, trace_probes=50),
        mlp=MLPConfig(hidden=32, steps=50, batch=256, lanczos_steps=40, slq_runs=2, trace_probes=20),
    ),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> LandscapeConfig:
    """The configuration from a command line (usage errors exit with status 2)."""
    return parse(LandscapeConfig, PRESETS, argv, prog="python -m experiments.landscape",
                 description="Is a KAN convex? Loss interpolation and Hessian spectra of a KAN [2, 5, 1] trained with "
                             "L-BFGS on exp(sin(pi x) + y^2), and of a ReLU MLP [784, 512, 10] on MNIST.")


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    mlp_cfg = None if cfg.skip_mlp else dataclasses.replace(cfg.mlp, seed=cfg.kan.seed)
    jax.config.update("jax_enable_x64", True)  # float64 KAN and exact references; the MLP stays float32
    try:
        run_study(cfg.kan, mlp_cfg, cfg.out_dir, data_dir=cfg.data_dir, verbose=not cfg.quiet)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
