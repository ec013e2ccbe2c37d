"""More devices: data parallelism, seeds over devices, sharded Hessian tools, several processes.

JAX fixes its device count when its backend starts and this pytest session already runs on one
CPU device, so the multi-device checks (tests/multidevice_checks.py) run in a fresh interpreter
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``: one subprocess runs several checks
to share the start-up. References are the one-device programs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import mnist as study
from kan_jax.training import sharding

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "tests" / "multidevice_checks.py"


def _env(mnist_dir: Path, devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["KAN_JAX_MNIST_DIR"] = str(mnist_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_ENABLE_X64"):
        env.pop(name, None)
    return env


def _run_checks(mnist_dir: Path, names: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(CHECKS), *names], env=_env(mnist_dir, 4), cwd=REPO,
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, f"multi-device checks failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    for name in names:
        assert f"ok {name}" in proc.stdout, proc.stdout


@pytest.mark.slow
def test_on_four_cpu_devices(mnist_dir):
    """On 4 forced CPU devices: mesh planning and its errors; a data-parallel epoch == the
    one-device epoch (Adam and δ-GClip, params, optimizer state and metrics, all-reduce in the
    compiled program); the dataset HVP on batches split over devices == unsharded; the study with
    ``--devices 4`` (2 seeds: the vmapped seed axis split over 2 devices, each batch over 2)
    writes the same numbers as the vmapped one-device program, records its devices, defaults to
    all devices, and ``--devices 5`` is a usage error naming the 4 there are."""
    _run_checks(mnist_dir, ["plan_mesh", "data_parallel_epoch", "sharded_hessian", "study_devices"])


@pytest.mark.slow
def test_on_four_cpu_devices_more(mnist_dir):
    """4 vmapped seeds split over 4 devices == the vmapped program; spline weights split over a
    "model" axis (data=2 x model=2) == one device; Lanczos eigenvalues, Hutchinson trace and SLQ
    density on sharded batches == unsharded; the compiled dataset HVP all-reduces; a sharded
    study interrupted after an epoch resumes from its checkpoint with the same numbers."""
    _run_checks(mnist_dir, ["seed_axis_sharded", "model_sharded_epoch", "sharded_hessian_more", "study_resume_sharded"])


def test_too_many_devices_is_a_usage_error(capsys, mnist_dir):
    n = len(__import__("jax").devices())
    with pytest.raises(SystemExit) as exit_:
        study.main(["--devices", str(n + 1), "--data-dir", str(mnist_dir), "--no-plot"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"asked for {n + 1} devices but only {n} {'is' if n == 1 else 'are'} available" in err, err
    with pytest.raises(SystemExit):
        study.main(["--devices", "0", "--data-dir", str(mnist_dir)])
    assert "the number of devices must be >= 1, got 0" in capsys.readouterr().err


def test_initialize_distributed_reads_flags_and_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.initialize_distributed() is False  # nothing asked: one plain process
    assert sharding.initialize_distributed(num_processes=1) is False
    with pytest.raises(ValueError, match=r"process id must be in \[0, 2\), got 2"):
        sharding.initialize_distributed("localhost:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match=r"\$JAX_NUM_PROCESSES must be an integer, got 'two'"):
        sharding.initialize_distributed()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "-1")
    with pytest.raises(ValueError, match=r"process id must be in \[0, 2\), got -1"):
        sharding.initialize_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


STUDY = ["--algos", "dgclip", "--seeds", "100", "200", "--epochs", "1", "--hidden", "4", "--train-subset", "200",
         "--test-subset", "64", "--batch-size", "32", "--eval-batch-size", "32", "--no-plot", "--no-progress"]


@pytest.mark.slow
def test_two_processes_on_localhost(tmp_path, mnist_dir):
    """Two processes x 2 CPU devices (mesh seeds=2 x data=2 across processes, Gloo collectives):
    each process writes only its own run, process 0 writes the summary of both, and the numbers
    equal a plain one-process, one-device run."""
    port = _free_port()
    outs = [tmp_path / "p0", tmp_path / "p1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.mnist", *STUDY, "--data-dir", str(mnist_dir), "--out-dir", str(outs[i]),
             "--devices", "4", "--coordinator-address", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
            env=_env(mnist_dir, 2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(logs)
    single = tmp_path / "single"
    ref = subprocess.run(
        [sys.executable, "-m", "experiments.mnist", *STUDY, "--data-dir", str(mnist_dir), "--out-dir", str(single),
         "--devices", "1"], env=_env(mnist_dir, 1), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-4000:]
    # Each process wrote only its own run (seed j -> process j mod 2); process 0 the summary.
    assert sorted(p.name for p in outs[0].iterdir()) == ["dgclip_seed100.json", "summary.json", "summary.md"]
    assert sorted(p.name for p in outs[1].iterdir()) == ["dgclip_seed200.json"]
    record = json.loads((outs[1] / "dgclip_seed200.json").read_text())
    assert record["timing"]["processes"] == 2 and len(record["timing"]["devices"]) == 4
    assert record["timing"]["mesh"] == {"seeds": 2, "data": 2, "model": 1}
    # The gathered summary equals the single-process one.
    got, want = (json.loads((d / "summary.json").read_text()) for d in (outs[0], single))
    assert got["processes"] == 2 and len(got["devices"]) == 4
    for a, b in zip(got["rows"], want["rows"], strict=True):
        assert a["algo"] == b["algo"] and a["seeds"] == b["seeds"]
        for k in ("val_acc_batchmean_mean", "val_acc_batchmean_std", "val_acc_mean", "val_acc_std", "val_loss_batchmean_mean"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for d, seed in ((outs[0], 100), (outs[1], 200)):
        a = json.loads((d / f"dgclip_seed{seed}.json").read_text())["epochs"]
        b = json.loads((single / f"dgclip_seed{seed}.json").read_text())["epochs"]
        for ea, eb in zip(a, b, strict=True):
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "clip_factor"):
                np.testing.assert_allclose(ea[k], eb[k], rtol=1e-5, atol=1e-6, err_msg=f"seed {seed} {k}")
