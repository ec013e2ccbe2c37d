"""``python -m experiments.pde``: the configuration, its presets, the figure and the entry point."""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from experiments._cli import option, parse
from experiments.pde.problems import PROBLEMS, Reference

__all__ = ["Config", "PRESETS", "PDEArgs", "PUBLISHED", "main", "plot", "published_markdown"]

MODELS = ("kan", "mlp")
#: Relative L2 errors of the adaptive [2, 8, 8, 1] PIKAN after 100,000 Adam steps (Rigas et al.).
PUBLISHED = {"diffusion": 2.10e-4, "helmholtz": 1.02e-3, "burgers": 2.43e-2, "allen_cahn": 1.41e-2}
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
    """What determines the numbers of a run: the resume key of its checkpoints and result."""

    problem: str = option("burgers", choices=tuple(PROBLEMS), help="the forward problem")
    model: str = option("kan", choices=MODELS,
                        help="kan: the KAN of --widths; mlp: a tanh MLP of --mlp-hidden (697 parameters at 24,24, "
                             "as the [2, 8, 8, 1] KAN at G=3: 704)")
    seed: int = option(0, help="seed of the initialisation and the Sobol points")
    widths: tuple[int, ...] = option((2, 8, 8, 1), separator=",", help="KAN widths")
    mlp_hidden: tuple[int, ...] = option((24, 24), separator=",", help="hidden widths of the MLP")
    grid_sizes: tuple[int, ...] = option((3, 8, 14), separator=",", help="KAN grid of each Adam stage (extensions)")
    adam_steps: tuple[int, ...] = option((1000, 1000, 2000), separator=",", help="Adam steps of each stage")
    lr: float = option(5e-3, help="Adam's initial step size")
    lr_end: float = option(5e-4, help="Adam's step size at the last Adam step (exponential decay)")
    transition: str = option("interpolate", choices=("interpolate", "fresh"),
                             help="Adam state at an extension: moments resampled, or fresh moments for the new "
                                  "coefficients")
    rba_decay: float = option(0.999, help="attention weights' decay")
    rba_eta: float = option(0.01, help="attention weights' step")
    points: int = option(4096, help="interior collocation points")
    boundary_points: int = option(64, help="points on each initial/boundary segment")
    pool_factor: int = option(4, help="Sobol pool = pool_factor x points, the candidates of resampling")
    resample_every: int = option(500, help="Adam steps between residual-based redraws (0: never)")
    rad_exponent: float = 1.0
    rad_offset: float = 1.0
    chunk: int = option(250, help="Adam steps per compiled chunk")
    checkpoint_every: int = option(500, help="Adam steps between checkpoints")
    endgame: str = option("lbfgs", choices=("lbfgs", "bfgs"),
                          help="the second-order end game: dense BFGS or L-BFGS, zoom line search")
    endgame_steps: int = option(4000, help="iterations of the end game (0: none)")
    lbfgs_memory: int = 50
    endgame_chunk: int = option(500, help="end-game iterations per compiled chunk (and checkpoint)")
    dtype: str = option("float32", choices=DTYPES, help="dtype of the Adam stages")
    endgame_dtype: str = option("float64", choices=DTYPES, help="dtype of the L-BFGS end game")
    spectrum: bool = option(True, flag="--no-spectrum", help="skip the Hessian spectra")
    spectrum_points: int = option(1024, help="collocation points of the loss whose Hessian is analysed")
    spectrum_top: int = 3
    spectrum_steps: int = option(60, help="Lanczos steps of each run of the spectrum")
    density_runs: int = 2

    def __post_init__(self) -> None:
        positive = ("points", "boundary_points", "pool_factor", "chunk", "checkpoint_every", "lbfgs_memory",
                    "endgame_chunk", "spectrum_points", "spectrum_top", "spectrum_steps", "density_runs")
        for name in positive:
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(self, name)!r}")
        if self.problem not in PROBLEMS:
            raise ValueError(f"--problem must be one of {', '.join(PROBLEMS)}, got {self.problem!r}")
        if not self.adam_steps or any(n < 1 or n % self.chunk for n in self.adam_steps):
            raise ValueError(f"--adam-steps must be positive multiples of --chunk ({self.chunk}), got {self.adam_steps}")
        if self.model == "kan" and len(self.grid_sizes) != len(self.adam_steps):
            raise ValueError(f"--grid-sizes and --adam-steps need one entry per stage, got {self.grid_sizes} "
                             f"and {self.adam_steps}")
        if any(g < 1 for g in self.grid_sizes):
            raise ValueError(f"--grid-sizes must be >= 1, got {self.grid_sizes}")
        for name in ("resample_every", "checkpoint_every"):
            if getattr(self, name) % self.chunk:
                raise ValueError(f"--{name.replace('_', '-')} must be a multiple of --chunk ({self.chunk})")
        if self.endgame_steps < 0:
            raise ValueError(f"--endgame-steps must be >= 0, got {self.endgame_steps}")
        for name in ("lr", "lr_end"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(self, name)!r}")


#: ``full``: the study's set-up on the 2-core CPU; ``quick``: a smoke run of a few seconds' training.
PRESETS = {
    "full": Config(),
    "quick": Config(adam_steps=(100, 100, 100), chunk=50, checkpoint_every=100, resample_every=100, points=256,
                    endgame_steps=60, endgame_chunk=30, spectrum_points=128, spectrum_steps=8),
}


@dataclasses.dataclass(frozen=True)
class PDEArgs:
    """Everything ``python -m experiments.pde`` takes."""

    study: Config = option(default_factory=Config, prefix="")
    data_dir: Path = option(Path("../shared/data/pde"), help="folder of burgers.npz and allen_cahn.mat")
    out_dir: Optional[Path] = option(None, help="output folder (default runs/pde/<problem>-<model>)")
    plot: bool = option(True, flag="--no-plot", help="skip the figure")


def plot(record: dict[str, Any], prediction: np.ndarray, ref: Reference, path: Path) -> Path:
    """Reference, prediction, absolute error and the loss curve of a run, saved to ``path``."""
    from kan_jax._optional import require
    from kan_jax.io import save_figure

    figure = require("matplotlib.figure", "interpret")
    fig = figure.Figure(figsize=(13, 3.2), layout="constrained")
    axes = fig.subplots(1, 4)
    problem = PROBLEMS[record["problem"]]
    u = prediction.reshape(ref.values.shape)
    panels = (("reference", ref.values, "RdBu_r"), ("prediction", u, "RdBu_r"),
              ("|error|", np.abs(u - ref.values), "magma"))
    for ax, (title, values, cmap) in zip(axes, panels):
        mesh = ax.pcolormesh(ref.a, ref.b, values.T, cmap=cmap, shading="auto")
        ax.set(title=title, xlabel=problem.coords[0], ylabel=problem.coords[1])
        fig.colorbar(mesh, ax=ax)
    loss = np.array([np.nan if v is None else v for v in record["loss_history"]])
    axes[3].semilogy(loss, lw=0.8)
    for p in record["phases"][:-1]:
        axes[3].axvline(p["end_iteration"], color="grey", lw=0.6, ls="--")
    axes[3].set(title=f"loss (relative L2 {record['rel_l2']:.2e})", xlabel="iteration")
    return save_figure(fig, path, dpi=110)


def published_markdown(out_dir: Path) -> str:
    """The results table from the ``<problem>-<model>/result.json`` records under ``out_dir``."""
    import json

    rows = []
    for problem in PROBLEMS:
        recs = {m: json.loads(p.read_text()) for m in MODELS if (p := Path(out_dir) / f"{problem}-{m}" / "result.json").is_file()}
        if not recs:
            continue
        cells = []
        for m in MODELS:
            r = recs.get(m)
            cells.append("–" if r is None else f"{100 * r['rel_l2']:.3g} % ({r['iterations']:,} it., {r['wall_s']:.0f} s)")
        kan = recs.get("kan")
        spec = kan and kan["spectrum"].get("after")
        cond = "–" if not spec else f"{spec['top'][0]:.3g} / {spec['lambda_min']:.2g}"
        rows.append(f"| {problem} | {cells[0]} | {100 * PUBLISHED[problem]:.3g} % | {cells[1]} | {cond} |")
    if not rows:
        raise FileNotFoundError(f"no physics-informed records (<problem>-<model>/result.json) in {out_dir}")
    head = ("| problem | KAN, relative L2 (iterations, wall time) | published adaptive PIKAN (100,000 Adam steps) "
            "| MLP, relative L2 (iterations, wall time) | KAN Hessian after the end game: λmax / λmin |\n"
            "|---|---|---|---|---|\n")
    return head + "\n".join(rows) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one problem; exit status 0, or 1 with a message for a missing file or a non-finite loss."""
    args = parse(PDEArgs, {name: PDEArgs(study=c) for name, c in PRESETS.items()}, argv,
                 prog="python -m experiments.pde", description="Physics-informed KAN (or MLP) on one problem.")
    cfg = args.study
    if "float64" in (cfg.dtype, cfg.endgame_dtype):
        import jax

        jax.config.update("jax_enable_x64", True)
    from experiments.pde.study import run

    out_dir = args.out_dir or Path("runs/pde") / f"{cfg.problem}-{cfg.model}"
    try:
        run(cfg, args.data_dir, out_dir, plot=plot if args.plot else None)
    except (FileNotFoundError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
