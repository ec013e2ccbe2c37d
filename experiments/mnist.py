"""The δ-GClip KAN study on MNIST: AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN.

Defaults are the published protocol (Tucat et al., TMLR 2025, arXiv 2404.08624): G=5, k=3,
images ``(x/255 - 0.5)/0.5`` flattened, batch 64 reshuffled every epoch with the last partial
batch kept, the test set as validation, 10 epochs, seeds 100-500, cross-entropy; optimisers as
in :data:`experiments.mnist_protocol.ALGORITHMS`. All seeds of an algorithm train in one
compiled program (``vmap``), every epoch being one ``lax.scan``
(:mod:`experiments.mnist_train`).

Configuration: :class:`MnistConfig` (a frozen dataclass; :data:`PRESETS` ``full``, the
published protocol, and ``quick``), turned into flags by :mod:`experiments._cli`: ``--algos``,
``--seeds``, ``--epochs``, ``--hidden``, ... and one flag per hyperparameter
(``--dgclip-gamma 0.3``, ``--adamw-lr 3e-3``); ``--quick`` starts from the smoke preset.

Outputs in ``--out-dir``: ``<algo>_seed<seed>.json`` per run, ``summary.json``, ``summary.md``
and the 2x2 figure ``mnist_study.png``, all written atomically. Resume: after every epoch the
training state of the running algorithm (params, grid, optimiser state, PRNG keys, history) is
checkpointed atomically to ``checkpoints/<algo>_seeds<...>.msgpack``; a rerun of the same
command skips the finished runs and continues an interrupted one from its last epoch, with
the same numbers as an uninterrupted run.

Usage::

    python -m experiments.mnist --data-dir ../shared/data/mnist        # the full study
    python -m experiments.mnist --quick --data-dir ../shared/data/mnist  # a smoke run

More devices (``docs/devices.md``): ``--devices N`` (default: all devices) spreads each
algorithm's vmapped seeds over devices and splits every batch over the rest
(:func:`kan_jax.training.sharding.plan_mesh`); ``--coordinator-address``, ``--num-processes``
and ``--process-id`` (or ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``)
start the same study on several processes or hosts, each writing only its own runs (seed ``j``
of the list goes to process ``j mod P``) and process 0 writing the summary of all of them.
Epoch checkpoints hold the state gathered to the host and are written by process 0 alone (in
its ``--out-dir``); on resume process 0 reads them and sends them to the other processes, and
the state is laid out on the mesh again, so a multi-process run resumes from process 0's
``--out-dir`` (a shared folder is not needed for the checkpoints, but finished runs written by
other processes are only seen as finished if process 0 sees them: use a shared ``--out-dir``
to avoid recomputing them).

:func:`published_markdown` gives the table the documentation includes
(``python -m experiments.publish``).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from experiments._cli import build_parser, option, parse
from experiments._env import device_description
from experiments.mnist_protocol import ALGORITHMS, HYPERPARAMETERS, hyperparameters, make_optimizer
from experiments.mnist_train import StudyConfig, checkpoint_path, train_algorithm
from experiments.models import mnist_arrays
from kan_jax.data import DataError, load_mnist
from kan_jax.io import atomic_write, write_json
from kan_jax.training import sharding

__all__ = ["MnistConfig", "PRESETS", "StudyConfig", "checkpoint_path", "main", "parse_args", "published_markdown",
           "run_study", "summarize", "summary_markdown", "train_algorithm"]

DEFAULT_ALGOS = ("adamw", "adam", "dgclip", "gclip", "gd")
DEFAULT_SEEDS = (100, 200, 300, 400, 500)


def run_path(out_dir: Path, algo: str, seed: int) -> Path:
    return out_dir / f"{algo}_seed{seed}.json"


def load_finished(path: Path, config: StudyConfig, hp: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The stored run at ``path`` if it exists, is complete and was made with this configuration."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"warning: {path} is unreadable ({err}); running it again", file=sys.stderr)
        return None
    if record.get("config") != config.key() or record.get("hyperparameters") != hp:
        raise SystemExit(
            f"error: {path} was made with another configuration:\n  stored {record.get('config')} "
            f"{record.get('hyperparameters')}\n  asked  {config.key()} {hp}\n"
            "use another --out-dir, or --force to overwrite"
        )
    if len(record.get("epochs", [])) != config.epochs:
        return None
    return record


def summarize(records: dict[str, list[dict[str, Any]]], seconds: dict[str, float]) -> list[dict[str, Any]]:
    """Per algorithm: final validation accuracy (published metric and exact) mean and std over seeds."""
    rows = []
    for algo, runs in records.items():
        acc_b = np.array([r["final"]["val_acc_batchmean"] for r in runs]) * 100
        acc = np.array([r["final"]["val_acc"] for r in runs]) * 100
        loss = np.array([r["final"]["val_loss_batchmean"] for r in runs])
        rows.append(
            {
                "algo": algo,
                "seeds": [r["seed"] for r in runs],
                "val_acc_batchmean_mean": float(acc_b.mean()),
                "val_acc_batchmean_std": float(acc_b.std(ddof=1)) if len(runs) > 1 else 0.0,
                "val_acc_mean": float(acc.mean()),
                "val_acc_std": float(acc.std(ddof=1)) if len(runs) > 1 else 0.0,
                "val_loss_batchmean_mean": float(loss.mean()),
                "epoch1_val_acc_batchmean_mean": float(np.mean([r["epochs"][0]["val_acc_batchmean"] for r in runs]) * 100),
                "seconds": seconds.get(algo),
            }
        )
    return rows


def machine_text(device: str, devices: Sequence[str], processes: int) -> str:
    """The machine of a run in words: the device, or the devices and processes of a mesh."""
    if len(devices) == 1:
        return device
    return f"{len(devices)} devices ({devices[0]} ...) in {processes} process(es); {device}"


def summary_markdown(rows: list[dict[str, Any]], total_seconds: float, device: str) -> str:
    """The summary table: final validation accuracies (mean ± std over seeds) per algorithm."""
    lines = [
        "| algorithm | final val acc % (mean of batch means) | exact val acc % | val acc % after epoch 1 | final val loss | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        secs = "resumed" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['algo']} | {r['val_acc_batchmean_mean']:.2f} ± {r['val_acc_batchmean_std']:.2f} "
            f"| {r['val_acc_mean']:.2f} ± {r['val_acc_std']:.2f} | {r['epoch1_val_acc_batchmean_mean']:.2f} "
            f"| {r['val_loss_batchmean_mean']:.4f} | {secs} |"
        )
    lines.append("")
    lines.append(f"Seeds {rows[0]['seeds'] if rows else []}; mean ± sample std over seeds; "
                 f"wall time {total_seconds:.1f} s on {device} (this invocation, compilation included).")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# Configuration and command line
# ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScheduledHP:
    """Hyperparameters of AdamW, Adam and SGD (ExponentialLR per epoch)."""

    lr: float = option(help="learning rate")
    weight_decay: float = option(help="weight decay")
    decay: float = option(help="per-epoch learning-rate decay (1 = off)")


@dataclasses.dataclass(frozen=True)
class ClipHP:
    """Hyperparameters of δ-GClip and GClip (constant learning rate)."""

    lr: float = option(help="learning rate")
    weight_decay: float = option(help="weight decay")
    gamma: float = option(help="γ (clipping threshold)")
    delta: float = option(help="δ (floor of the clipping factor)")


def _published(cls: type, algo: str) -> Any:
    return cls(**{f.name: ALGORITHMS[algo][f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """Everything ``python -m experiments.mnist`` takes; :data:`PRESETS` names two."""

    algos: tuple[str, ...] = option(DEFAULT_ALGOS, choices=sorted(ALGORITHMS), help="algorithms to run")
    seeds: tuple[int, ...] = option(DEFAULT_SEEDS, help="seeds")
    study: StudyConfig = option(default_factory=StudyConfig, prefix="")
    adamw: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "adamw"), help="AdamW")
    adam: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "adam"), help="Adam (L2 added to the gradient)")
    dgclip: ClipHP = option(default_factory=lambda: _published(ClipHP, "dgclip"), help="δ-GClip")
    gclip: ClipHP = option(default_factory=lambda: _published(ClipHP, "gclip"), help="GClip")
    gd: ScheduledHP = option(default_factory=lambda: _published(ScheduledHP, "gd"), help="SGD (L2 added to the gradient)")
    data_dir: Optional[Path] = option(
        None, help="folder with the four MNIST IDX .gz files (else $KAN_JAX_MNIST_DIR, else tensorflow-datasets)")
    out_dir: Path = option(Path("runs/mnist"), help="output folder")
    vmap: Optional[bool] = option(
        None,
        help="train the seeds of an algorithm batched in one program (--vmap) or one after the other "
        "(--no-vmap); default: batched on accelerators, one after the other on a CPU (faster there)",
    )
    plot: bool = option(True, flag="--no-plot", help="do not draw the figure")
    progress: bool = option(True, flag="--no-progress", help="no progress bars")
    force: bool = option(False, help="recompute runs already in --out-dir")
    # more devices: not part of the resume key (same numbers up to rounding)
    devices: Optional[int] = option(
        None, help="devices to run on (default: all; seeds are spread over them, then batches)")
    coordinator_address: Optional[str] = option(
        None, help="host:port of process 0 for a multi-process run (else $JAX_COORDINATOR_ADDRESS)")
    num_processes: Optional[int] = option(None, help="processes in a multi-process run (else $JAX_NUM_PROCESSES)")
    process_id: Optional[int] = option(None, help="this process's id, 0 ... P-1 (else $JAX_PROCESS_ID)")

    def __post_init__(self) -> None:
        if self.devices is not None and self.devices < 1:
            raise ValueError(f"--devices: the number of devices must be >= 1, got {self.devices}")
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(f"--num-processes must be >= 1, got {self.num_processes}")
        if not self.algos:
            raise ValueError("--algos needs at least one algorithm")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct, got {list(self.seeds)}")
        overrides = self.overrides
        for algo in self.algos:
            make_optimizer(algo, 1, **{k: v for k, v in hyperparameters(algo, overrides).items() if k in HYPERPARAMETERS})

    @property
    def overrides(self) -> dict[str, dict[str, Any]]:
        """``{algo: {name: value}}`` for :func:`~experiments.mnist_protocol.hyperparameters`."""
        return {algo: dataclasses.asdict(getattr(self, algo)) for algo in ALGORITHMS}


#: ``full``: the published protocol; ``quick``: a smoke run (2 seeds, 1 epoch, 2,048 / 1,024 images).
PRESETS = {
    "full": MnistConfig(),
    "quick": MnistConfig(seeds=(100, 200), study=StudyConfig(epochs=1, train_subset=2048, test_subset=1024)),
}


_PARSER_KWARGS = dict(prog="python -m experiments.mnist",
                      description="AdamW, Adam, δ-GClip, GClip and SGD on a [784, 64, 10] KAN "
                                  "(published protocol by default).")


def parse_args(argv: Optional[Sequence[str]] = None) -> MnistConfig:
    """The configuration from a command line (usage errors exit with status 2)."""
    return parse(MnistConfig, PRESETS, argv, **_PARSER_KWARGS)


def _usage_error(message: str) -> None:
    """Exit with the usage line, ``message`` and status 2 (as a flag error would)."""
    build_parser(MnistConfig, PRESETS, **_PARSER_KWARGS).error(message)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of this study's writers left by a killed process (never complete)."""
    for pattern in (".*_seed*.tmp.json", "checkpoints/.*_seeds*.tmp.msgpack", ".summary.*.tmp.*", ".mnist_study.*.tmp.png"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


def run_study(
    algos: Sequence[str],
    seeds: Sequence[int],
    config: StudyConfig,
    overrides: dict[str, dict[str, Any]],
    out_dir: Path,
    *,
    data_dir: Optional[Path] = None,
    vmap_seeds: bool = True,
    force: bool = False,
    progress: bool = True,
    plot: bool = True,
    trainer: Callable[..., list[dict[str, Any]]] = train_algorithm,
    devices: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the study; returns the summary rows and writes everything to ``out_dir``.

    ``devices``: passed to ``trainer`` (a mesh of that many devices; ``None``: one device). With
    several processes (:func:`kan_jax.training.sharding.initialize_distributed`) every process runs the same
    program, writes only its own runs (seed ``j`` of ``seeds`` goes to process ``j mod P``) and
    process 0 writes the summary, the figure and the epoch checkpoints; which runs are already
    done is process 0's view of ``out_dir`` (use a shared folder, or other processes' runs are
    recomputed).
    """
    rank, nproc = jax.process_index(), jax.process_count()
    owner = {s: j % nproc for j, s in enumerate(seeds)}
    extra = {} if devices is None else {"devices": devices}
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(data_dir)
    data = (*mnist_arrays(mnist.x_train, mnist.y_train, config.train_subset),
            *mnist_arrays(mnist.x_test, mnist.y_test, config.test_subset))
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    ckpt_dir = out_dir / "checkpoints"
    if rank == 0:
        _remove_stale_temporaries(out_dir)
    for algo in algos:
        hp = hyperparameters(algo, overrides)
        done = {} if force else {s: load_finished(run_path(out_dir, algo, s), config, hp) for s in seeds}
        if nproc > 1:  # every process must train the same seeds: process 0 decides
            from jax.experimental import multihost_utils

            mask = np.array([done.get(s) is not None for s in seeds], np.int32)
            mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
            done = {s: done.get(s) if m else None for s, m in zip(seeds, mask)}
        todo = [s for s in seeds if done.get(s) is None]
        if todo:
            t0 = time.perf_counter()
            if force and rank == 0:
                for old in ckpt_dir.glob(f"{algo}_seeds*.msgpack"):
                    old.unlink()
            for record in trainer(algo, todo, config, hp, data, vmap_seeds=vmap_seeds, progress=progress,
                                  checkpoint_dir=ckpt_dir, **extra):
                if owner[record["seed"]] == rank:
                    write_json(run_path(out_dir, algo, record["seed"]), record)
                done[record["seed"]] = record
            if rank == 0:
                for finished in ckpt_dir.glob(f"{algo}_seeds*.msgpack"):  # the JSON files hold it all now
                    finished.unlink()
            seconds[algo] = time.perf_counter() - t0
        elif rank == 0:
            print(f"{algo:>6}: all {len(seeds)} seeds already in {out_dir}, skipped")
        records[algo] = [done[s] for s in seeds]
    if rank == 0 and ckpt_dir.is_dir() and not any(ckpt_dir.iterdir()):
        ckpt_dir.rmdir()
    total = time.perf_counter() - start
    rows = summarize(records, seconds)
    if rank != 0:  # process 0 writes the summary of everyone's runs
        return rows
    device = device_description()
    used = [str(d) for d in jax.devices()[: devices or 1]]
    table = summary_markdown(rows, total, machine_text(device, used, nproc))
    atomic_write(out_dir / "summary.md", table)
    write_json(out_dir / "summary.json",
               {"rows": rows, "total_seconds": total, "device": device, "devices": used, "processes": nproc})
    print(table)
    if plot:
        from experiments.mnist_protocol import plot_training_curves

        fig_path = out_dir / "mnist_study.png"
        plot_training_curves(records, fig_path, model=f"KAN [784, {config.hidden}, 10]")
        print(f"figure: {fig_path}")
    return rows


def published_markdown(out_dir: Path) -> str:
    """The table the documentation includes, from ``summary.json`` in ``out_dir``."""
    summary = json.loads((out_dir / "summary.json").read_text())
    where = machine_text(summary["device"], summary["devices"], summary["processes"])
    return summary_markdown(summary["rows"], summary["total_seconds"], where)


def default_vmap_seeds(backend: Optional[str] = None, devices: Optional[int] = None) -> bool:
    """Whether to batch seeds with ``vmap`` by default: on accelerators yes, on a CPU no.

    On a CPU one seed at a time costs less per seed than vmapped seeds (batched matrix
    products are slower there; ``python -m benchmarks.mnist_study`` measures both); on a GPU or
    TPU one program for all seeds fills the device. On a mesh of several ``devices`` yes on
    every backend: the vmapped seed axis is what :func:`kan_jax.training.sharding.plan_mesh`
    spreads over them.

    Args:
        backend: the JAX backend (default the current one).
        devices: the number of devices the study runs on.

    Returns:
        Whether to vmap the seeds.
    """
    if devices is not None and devices > 1:
        return True
    return (jax.default_backend() if backend is None else backend) != "cpu"


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    # Join a multi-process run first (before any computation), then
    # check --devices (a usage error naming how many devices there are).
    try:
        sharding.initialize_distributed(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
        devices = jax.device_count() if cfg.devices is None else cfg.devices
        sharding.make_mesh(devices)
    except ValueError as err:
        _usage_error(str(err))
    # One device in one process: the plain single-device program (no mesh).
    devices = None if devices == 1 and jax.process_count() == 1 else devices
    try:
        run_study(
            cfg.algos,
            cfg.seeds,
            cfg.study,
            cfg.overrides,
            cfg.out_dir,
            data_dir=cfg.data_dir,
            vmap_seeds=default_vmap_seeds(devices=devices) if cfg.vmap is None else cfg.vmap,
            force=cfg.force,
            progress=cfg.progress,
            plot=cfg.plot,
            devices=devices,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = cfg.out_dir if jax.process_count() == 1 else f"process 0's --out-dir ({cfg.out_dir} in process 0)"
        print(f"\ninterrupted: finished epochs are saved in {where}; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
