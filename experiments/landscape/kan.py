"""Part 1 of the landscape study: a KAN [2, H, 1] on the toy regression, trained and analysed."""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._cli import option
from experiments._records import Timer, num, nums
from experiments.landscape.common import (
    DENSITY_FIGSIZE,
    DPI,
    INTERPOLATION_FIGSIZE,
    TOP_K,
    flag,
    negative_fraction,
    negative_mass,
    relative_error,
)
from experiments.models import regression_kan, squared_loss, toy_dataset
from kan_jax import curvature as cv
from kan_jax import regularization_loss
from kan_jax.io import save_figure
from kan_jax.training import loops
from kan_jax.training.checkpoint import save_params


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
                name_flag = "kan-hidden" if name == "hidden" else flag(name)
                raise ValueError(f"--{name_flag} must be >= 1, got {getattr(self, name)}")
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
        """The KAN's layer widths."""
        return (2, self.hidden, 1)


def kan_model(cfg: KANConfig):
    """The configured KAN."""
    return regression_kan(cfg.hidden, cfg.grid_size, cfg.spline_order, cfg.dtype)


def kan_dataset(cfg: KANConfig, seed: int, dtype: Any = None) -> dict[str, jax.Array]:
    """The toy dataset drawn with ``seed`` as arrays of ``dtype`` (default the KAN's)."""
    return toy_dataset(cfg.train_num, seed, jnp.dtype(cfg.dtype) if dtype is None else dtype)


def _as_dtype(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


@dataclasses.dataclass(frozen=True)
class KANSetup:
    """What every phase of the KAN part shares: the model, its fixed grid, data and losses."""

    cfg: KANConfig
    out_dir: Path
    timer: Timer
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
    loss = squared_loss(model, grid)
    # The exact reference is always float64 (same parameters and data, cast).
    data64 = kan_dataset(cfg, cfg.seed, jnp.float64)
    loss64 = squared_loss(kan_model(dataclasses.replace(cfg, dtype="float64")), _as_dtype(grid, jnp.float64))
    save_params(out_dir / "theta0.msgpack", theta0)
    return KANSetup(
        cfg=cfg, out_dir=out_dir, timer=Timer(log), log=log, dtype=jnp.dtype(cfg.dtype), grid=grid, theta0=theta0,
        num_params=sum(int(np.size(a)) for a in jax.tree.leaves(theta0)), loss=loss, loss_jit=jax.jit(loss),
        train_batch=train_batch, test_batch=(data["test_input"], data["test_label"]),
        loss64=loss64, batches64=(data64["train_input"][None], data64["train_label"][None]),
    )


def training_objective(loss: Callable, lamb: float) -> Callable:
    """``loss(params, batch) + lamb * R(params)``, ``R`` efficient-kan's sparsity regulariser."""

    def objective(params, batch):
        value = loss(params, batch)
        return value + lamb * regularization_loss(params) if lamb else value

    return objective


def train_kan(k: KANSetup) -> tuple[Any, dict[str, Any]]:
    """L-BFGS from ``theta0``; writes ``thetaN.msgpack``; returns ``(thetaN, training record)``."""
    cfg, theta0 = k.cfg, k.theta0
    objective = training_objective(k.loss, cfg.lamb)
    run = k.timer("kan_lbfgs", lambda: loops.lbfgs(
        objective, theta0, k.train_batch, num_steps=cfg.lbfgs_steps, history_size=cfg.lbfgs_steps,
        monitor=k.loss, skip_nonfinite=True))
    thetaN, history = run.params, run.history
    save_params(k.out_dir / "thetaN.msgpack", thetaN)
    reg = jax.jit(regularization_loss)
    grad_norm = jax.jit(lambda p, b: optax.tree.norm(jax.grad(k.loss)(p, b)))
    loss_jit, train_batch, test_batch = k.loss_jit, k.train_batch, k.test_batch
    training = {
        "optimizer": "optax.lbfgs (memory 10, zoom line search), full batch",
        "steps": cfg.lbfgs_steps,
        "lamb": cfg.lamb,
        "regularizer": "kan_jax.regularization_loss (efficient-kan: L1 + entropy of the spline weights)",
        "initial_loss": num(loss_jit(theta0, train_batch)),
        "final_loss": num(loss_jit(thetaN, train_batch)),
        "initial_test_loss": num(loss_jit(theta0, test_batch)),
        "final_test_loss": num(loss_jit(thetaN, test_batch)),
        "initial_objective": num(history.value[0]),
        "final_objective": num(loss_jit(thetaN, train_batch) + cfg.lamb * reg(thetaN)),
        "final_regularizer": num(reg(thetaN)),
        "final_grad_norm_loss": num(grad_norm(thetaN, train_batch)),
        "loss_history": nums(history.monitor),
        "skipped_steps": int(np.sum(np.asarray(history.skipped))),
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
            curves.append(cv.interpolate(k.loss, k.theta0, thetaN, alphas_j, data=(fresh["train_input"], fresh["train_label"])))
        return jnp.stack(curves), cv.interpolate(k.loss, k.theta0, thetaN, alphas_j, data=k.train_batch)

    curves, train_curve = k.timer("kan_interpolation", interpolate_all)
    curves, train_curve = np.asarray(curves), np.asarray(train_curve)
    save_figure(plot_interpolation(alphas, curves, seeds, cfg), k.out_dir / "interpolation.png", dpi=DPI)
    return {
        "alphas": nums(alphas),
        "datasets": [{"seed": s, "losses": nums(c)} for s, c in zip(seeds, curves)],
        "mean": nums(curves.mean(axis=0)),
        "train_losses": nums(train_curve),
        "data": "training split of create_dataset(f, n_var=2, seed=s) for each seed s",
    }


def spectrum_at(k: KANSetup, thetaN: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Lanczos top-k and minimum, Hutchinson trace at ``thetaN`` against the exact float64 spectrum."""
    cfg, n, kw = k.cfg, k.num_params, dict(batches=k.batches)
    top = k.timer("kan_top5", lambda: cv.top_eigenpairs(k.loss, thetaN, TOP_K, num_steps=cfg.lanczos_steps, **kw))
    low = k.timer("kan_min", lambda: cv.min_eigenpair(k.loss, thetaN, num_steps=cfg.lanczos_steps, **kw))
    trace = k.timer("kan_trace", lambda: cv.hessian_trace(k.loss, thetaN, max_probes=cfg.trace_probes, **kw))
    exact = np.asarray(k.timer("kan_exact_eigh", lambda: cv.exact_spectrum(
        k.loss64, _as_dtype(thetaN, jnp.float64), batches=k.batches64)))
    exact_top = exact[::-1][:TOP_K]
    lam_max = float(np.max(np.abs(exact)))
    spectrum = {
        "lanczos_steps": min(cfg.lanczos_steps, n),
        "top5": {
            "lanczos": nums(top.eigenvalues),
            "exact": nums(exact_top),
            "rel_error": nums(relative_error(top.eigenvalues, exact_top)),
            "residual_norms": nums(top.residual_norms),
        },
        "min": {
            "lanczos": num(low.eigenvalue),
            "exact": num(exact[0]),
            "abs_error": num(abs(float(low.eigenvalue) - exact[0])),
            "rel_error": num(relative_error(low.eigenvalue, exact[0])),
            "error_over_norm": num(abs(float(low.eigenvalue) - exact[0]) / lam_max),
            "residual_norm": num(low.residual_norm),
        },
        "trace": {
            "hutchinson": num(trace.mean),
            "stderr": num(trace.stderr),
            "num_probes": int(trace.num_probes),
            "exact": num(np.sum(exact)),
            "rel_error": num(relative_error(trace.mean, np.sum(exact))),
            "z_score": num((float(trace.mean) - np.sum(exact)) / float(trace.stderr)) if float(trace.stderr) > 0 else None,
        },
        "exact_negative_fraction": num(negative_fraction(exact, np.float64)),
        "exact_eigenvalues": nums(exact),
    }
    k.log(f"top-{TOP_K}: max rel. error {max(spectrum['top5']['rel_error']):.1e}; "
          f"min eigenvalue {spectrum['min']['lanczos']:.6g} (exact {spectrum['min']['exact']:.6g})")
    return spectrum, exact


def _slq(k: KANSetup) -> Callable[[Any], Any]:
    return functools.partial(cv.spectral_density, k.loss, num_runs=k.cfg.slq_runs, num_steps=k.cfg.lanczos_steps,
                             batches=k.batches)


def densities_along_line(k: KANSetup, thetaN: Any, alphas: np.ndarray) -> list[dict[str, Any]]:
    """SLQ and exact spectra at every alpha; writes ``densities.pdf`` (one page per alpha)."""
    cfg, n, slq = k.cfg, k.num_params, _slq(k)
    exact_at = functools.partial(cv.exact_spectrum, k.loss64, batches=k.batches64)
    points = [cv.interpolate_params(k.theta0, thetaN, a) for a in alphas]
    densities = k.timer("kan_densities_slq", lambda: [slq(p) for p in points])
    spectra = k.timer("kan_densities_exact", lambda: [exact_at(_as_dtype(p, jnp.float64)) for p in points])
    rows = []
    for a, p, sd, ev in zip(alphas, points, densities, spectra):
        ev = np.asarray(ev)
        nodes, weights = np.asarray(sd.nodes, np.float64), np.asarray(sd.weights, np.float64)
        rows.append({
            "alpha": float(a),
            "train_loss": num(k.loss_jit(p, k.train_batch)),
            "slq_min_node": num(nodes.min()),
            "slq_max_node": num(nodes.max()),
            "slq_trace": num(n * np.mean(np.sum(weights * nodes, axis=1))),
            "slq_negative_mass": num(negative_mass(nodes, weights, k.dtype)),
            "exact_min": num(ev[0]),
            "exact_max": num(ev[-1]),
            "exact_trace": num(ev.sum()),
            "exact_negative_fraction": num(negative_fraction(ev, np.float64)),
        })
    titles = [f"KAN [2, {cfg.hidden}, 1], α = {r['alpha']:+.3f}, train MSE {r['train_loss']:.3g} "
              f"(SLQ {cfg.slq_runs}×{min(cfg.lanczos_steps, n)})" for r in rows]
    k.timer("kan_densities_pdf", lambda: cv.save_spectral_density_pages(
        k.out_dir / "densities.pdf", densities, titles=titles, figsize=DENSITY_FIGSIZE))
    return rows


def plot_density_at(k: KANSetup, thetaN: Any, exact: np.ndarray) -> None:
    """``kan_density.png``: the SLQ density at ``thetaN`` and the exact spectrum smoothed by the same kernel."""
    from matplotlib.figure import Figure

    cfg, n = k.cfg, k.num_params
    sd_N = _slq(k)(thetaN)
    g_exact, d_exact, _ = cv.gaussian_density(exact[None], np.full((1, n), 1.0 / n), sigma=float(sd_N.sigma))
    fig = Figure(figsize=DENSITY_FIGSIZE, layout="tight")
    ax = fig.add_subplot()
    cv.plot_spectral_density(sd_N, ax=ax, label=f"SLQ ({cfg.slq_runs} runs × {min(cfg.lanczos_steps, n)} steps)")
    cv.plot_spectral_density((g_exact, d_exact), ax=ax, label="exact (eigh of jax.hessian)", linestyle="--",
                             title=f"KAN [2, {cfg.hidden}, 1] Hessian at θN ({n} parameters)")
    save_figure(fig, k.out_dir / "kan_density.png", dpi=DPI)


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
