"""The landscape study's configuration, command line, run and summary."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import jax
import numpy as np

from experiments._cli import option, parse
from experiments._env import device_description
from experiments.landscape.kan import KANConfig, run_kan_part
from experiments.landscape.mlp import MLPConfig, run_mlp_part
from kan_jax.data import DataError, load_mnist
from kan_jax.io import atomic_write, write_json


def _kan_lines(kan: dict[str, Any]) -> list[str]:
    t, s = kan["training"], kan["at_thetaN"]
    lines = [
        f"KAN [2, {kan['config']['hidden']}, 1], G={kan['config']['grid_size']}, k={kan['config']['spline_order']}, "
        f"{kan['num_params']} parameters, {kan['dtype']}; L-BFGS {t['steps']} steps, lamb={t['lamb']:g}: "
        f"train MSE {t['initial_loss']:.4g} -> {t['final_loss']:.4g} (test {t['initial_test_loss']:.4g} -> "
        f"{t['final_test_loss']:.4g}); |grad MSE| at thetaN {t['final_grad_norm_loss']:.2e}",
        "",
        "| Hessian at thetaN | Lanczos / Hutchinson | exact (jax.hessian + eigh) | relative error | residual |",
        "|---|---|---|---|---|",
    ]
    top = s["top5"]
    for i, (a, e, r, res) in enumerate(zip(top["lanczos"], top["exact"], top["rel_error"], top["residual_norms"])):
        lines.append(f"| lambda_{i + 1} | {a:.10g} | {e:.10g} | {r:.1e} | {res:.1e} |")
    m, tr = s["min"], s["trace"]
    lines.append(f"| lambda_min | {m['lanczos']:.10g} | {m['exact']:.10g} | {m['rel_error']:.1e} | {m['residual_norm']:.1e} |")
    z = f", z = {tr['z_score']:+.2f}" if tr["z_score"] is not None else ""
    lines.append(f"| trace | {tr['hutchinson']:.6g} ± {tr['stderr']:.2g} ({tr['num_probes']} probes{z}) | "
                 f"{tr['exact']:.10g} | {tr['rel_error']:.1e} | |")
    neg = [r["exact_negative_fraction"] for r in kan["densities"]]
    lines += [
        "",
        f"Exact fraction of negative eigenvalues along the line: {min(neg):.2f}..{max(neg):.2f} "
        f"(at thetaN {s['exact_negative_fraction']:.2f}); interpolation: mean loss over "
        f"{len(kan['interpolation']['datasets'])} fresh datasets at alpha=0 / 1: "
        f"{_at(kan, 0.0):.4g} / {_at(kan, 1.0):.4g}",
    ]
    return lines


def _mlp_lines(mlp: dict[str, Any]) -> list[str]:
    tm, a, top, tr, d, secs = (mlp["training"], mlp["augmented"], mlp["top_eigenvalue"], mlp["trace"], mlp["density"],
                               mlp["timings_s"])
    return [
        f"MLP [784, {mlp['config']['hidden']}, 10], {mlp['num_params']:,} parameters, float32; Adam {tm['steps']} steps: "
        f"test accuracy {tm['initial_test_accuracy']:.4f} -> {tm['test_accuracy']:.4f}; "
        f"Hessian on {mlp['analysis_batch']['size']} images:",
        "",
        "| quantity | value | residual norm | time (s) |",
        "|---|---|---|---|",
        f"| top eigenvalue ({top['lanczos_steps']} Lanczos steps) | {top['value']:.7g} | {top['residual_norm']:.1e} | "
        f"{secs['mlp_top1']:.1f} |",
        f"| trace (Hutchinson, {tr['num_probes']} probes) | {tr['hutchinson']:.5g} ± {tr['stderr']:.2g} | | "
        f"{secs['mlp_trace']:.1f} |",
        f"| SLQ density ({d['num_runs']} × {d['num_steps']}): extreme nodes | {d['min_node']:.4g} .. {d['max_node']:.5g} | | "
        f"{secs['mlp_density']:.1f} |",
        f"| augmented min eigenvalue (delta={a['delta']:g}), last component {a['scalar']:.3g} | {a['eigenvalue']:.7g} | "
        f"{a['residual_norm']:.1e} | {secs['mlp_augmented']:.1f} |",
    ]


def results_markdown(kan: dict[str, Any], mlp: Optional[dict[str, Any]]) -> str:
    """The study's tables: the KAN's Hessian at ``thetaN`` and, with ``mlp``, the MLP's."""
    lines = _kan_lines(kan)
    if mlp is not None:
        lines += [""] + _mlp_lines(mlp)
    return "\n".join(lines) + "\n"


def summary_text(kan: dict[str, Any], mlp: Optional[dict[str, Any]], device: str, total: float) -> str:
    """``summary.md``: a heading naming the machine, :func:`results_markdown` and the timings."""
    times = {**kan["timings_s"], **(mlp["timings_s"] if mlp else {})}
    return (f"## Loss-landscape study ({device})\n\n" + results_markdown(kan, mlp) + "\nTimings (s, compilation included): "
            + ", ".join(f"{k} {v:.1f}" for k, v in times.items()) + f"; total {total:.1f}\n")


def published_markdown(out_dir: Path) -> str:
    """The tables the documentation includes, from a finished run's JSON records in ``out_dir``."""
    kan = json.loads((out_dir / "kan_spectrum.json").read_text())
    mlp_path = out_dir / "mlp_spectrum.json"
    mlp = json.loads(mlp_path.read_text()) if mlp_path.exists() else None
    return results_markdown(kan, mlp) + f"\nMachine: {kan['device']}.\n"


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
    """``python -m experiments.landscape``: returns the exit status (2: MNIST missing)."""
    cfg = parse_args(argv)
    mlp_cfg = None if cfg.skip_mlp else dataclasses.replace(cfg.mlp, seed=cfg.kan.seed)
    jax.config.update("jax_enable_x64", True)  # float64 KAN and exact references; the MLP stays float32
    try:
        run_study(cfg.kan, mlp_cfg, cfg.out_dir, data_dir=cfg.data_dir, verbose=not cfg.quiet)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
