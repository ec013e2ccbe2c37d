"""The loss-landscape study (`python -m experiments.landscape`) end to end.

A reduced run (``--quick``: 30 L-BFGS steps, 3 datasets, 8 alphas, MLP [784, 32, 10] on 256
images) runs once per module through the real CLI in a subprocess; its outputs are then checked
against references the test computes itself from the saved checkpoints: the exact Hessian
spectrum by ``jax.hessian`` + ``numpy.linalg.eigh`` on ``thetaN`` (float64), and the losses at
``theta0`` / ``thetaN`` on freshly drawn datasets. The full-size study is in
``test_landscape_full_study.py`` (slow; its own file so that a second test worker can run it).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import landscape as study
from experiments import publish
from kan_jax import KAN, create_dataset, load_params

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("theta0.msgpack", "thetaN.msgpack", "interpolation.png", "densities.pdf", "kan_spectrum.json",
           "mlp_spectrum.json", "mlp_density.png", "kan_density.png", "summary.md")


def _f(x):
    # the study's target, written out again: exp(sin(pi x) + y^2)
    return np.exp(np.sin(np.pi * x[:, 0:1]) + x[:, 1:2] ** 2)


def _run_cli(out_dir: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "experiments.landscape", "--out-dir", str(out_dir), *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("landscape_quick")
    proc = _run_cli(out, "--quick", "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


class Reference:
    """The test's own model, data and loss for a study output folder (independent of the script)."""

    def __init__(self, out: Path):
        self.record = json.loads((out / "kan_spectrum.json").read_text())
        cfg = self.record["config"]
        assert self.record["dtype"] == "float64"
        self.cfg = cfg
        self.model = KAN((2, cfg["hidden"], 1), grid_size=cfg["grid_size"], spline_order=cfg["spline_order"],
                         param_dtype=jnp.float64)
        train = self.data(cfg["seed"])
        variables = jax.jit(self.model.init)(jax.random.key(cfg["seed"]), train[0][:1])
        self.init_params, self.grid = variables["params"], variables["grid"]
        self.theta0 = load_params(out / "theta0.msgpack", target=self.init_params)
        self.thetaN = load_params(out / "thetaN.msgpack", target=self.init_params)
        self.train = train

    def data(self, seed):
        ds = create_dataset(_f, n_var=2, train_num=self.cfg["train_num"], test_num=self.cfg["train_num"], seed=seed)
        return jnp.asarray(ds["train_input"], jnp.float64), jnp.asarray(ds["train_label"], jnp.float64)

    def loss(self, params, data):
        return float(self._loss(params, data))

    @functools.cached_property
    def _loss(self):
        @jax.jit
        def mse(params, data):
            x, y = data
            return jnp.mean((self.model.apply({"params": params, "grid": self.grid}, x) - y) ** 2)

        return mse

    def exact_eigenvalues(self, params):
        flat, unravel = ravel_pytree(params)
        x, y = self.train

        def flat_loss(v):
            return jnp.mean((self.model.apply({"params": unravel(v), "grid": self.grid}, x) - y) ** 2)

        with jax.default_matmul_precision("highest"):
            h = np.asarray(jax.jit(jax.hessian(flat_loss))(flat), np.float64)
        return np.linalg.eigvalsh(0.5 * (h + h.T))


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", raw[16:24])


def _pdf_pages(path: Path) -> int:
    raw = path.read_bytes()
    assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF")
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", raw))


def _check_study(out: Path, num_alphas: int, num_datasets: int, mlp: bool = True) -> None:
    """Every property of a finished study folder that the tests assert, quick or full."""
    # all outputs, no temporary files left behind
    for name in OUTPUTS if mlp else [o for o in OUTPUTS if not o.startswith("mlp_")]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    ref = Reference(out)
    rec = ref.record
    n = rec["num_params"]
    assert n == sum(np.size(a) for a in jax.tree.leaves(ref.init_params)) == 150

    # theta0 is the initialisation; L-BFGS reduced the loss, as recomputed here
    for a, b in zip(jax.tree.leaves(ref.theta0), jax.tree.leaves(ref.init_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t = rec["training"]
    loss0, lossN = ref.loss(ref.theta0, ref.train), ref.loss(ref.thetaN, ref.train)
    assert t["initial_loss"] == pytest.approx(loss0, rel=1e-10)
    assert t["final_loss"] == pytest.approx(lossN, rel=1e-10)
    assert lossN < 0.05 * loss0
    assert len(t["loss_history"]) == rec["config"]["lbfgs_steps"] and t["skipped_steps"] == 0

    # Lanczos top-5 / min / Hutchinson trace against this test's own jax.hessian + eigh (float64)
    exact = ref.exact_eigenvalues(ref.thetaN)
    s = rec["at_thetaN"]
    np.testing.assert_allclose(s["top5"]["lanczos"], exact[::-1][:5], rtol=1e-8)
    np.testing.assert_allclose(s["top5"]["exact"], exact[::-1][:5], rtol=1e-10)
    assert max(s["top5"]["rel_error"]) < 1e-8 and max(s["top5"]["residual_norms"]) < 1e-8 * exact[-1]
    # minimum eigenvalue: 1e-3 relative (the target at 80 steps), or 1e-8 of ||H|| if ~0
    assert abs(s["min"]["lanczos"] - exact[0]) <= max(1e-3 * abs(exact[0]), 1e-8 * exact[-1])
    assert s["min"]["exact"] == pytest.approx(exact[0], rel=1e-8, abs=1e-12 * exact[-1])
    tr = s["trace"]
    assert tr["exact"] == pytest.approx(exact.sum(), rel=1e-10)
    assert abs(tr["hutchinson"] - exact.sum()) <= 4 * tr["stderr"]  # Hutchinson: within 4 standard errors
    # negative: below -sqrt(eps) ||H|| (the sign of a rounding-level eigenvalue means nothing); one borderline allowed
    negative = np.mean(exact < -np.sqrt(np.finfo(np.float64).eps) * np.abs(exact).max())
    assert s["exact_negative_fraction"] == pytest.approx(negative, abs=1.01 / n)

    # interpolation: alpha grid, and alpha = 0 / 1 equal the losses at theta0 / thetaN on each fresh dataset
    interp = rec["interpolation"]
    alphas = np.asarray(interp["alphas"])
    c = rec["config"]
    np.testing.assert_allclose(alphas, np.linspace(c["alpha_min"], c["alpha_max"], num_alphas), atol=1e-12)
    i0, i1 = np.flatnonzero(alphas == 0.0), np.flatnonzero(alphas == 1.0)
    assert i0.size == 1 and i1.size == 1, "the alpha grid should contain 0 and 1"
    assert len(interp["datasets"]) == num_datasets
    seeds = [d["seed"] for d in interp["datasets"]]
    assert len(set(seeds)) == num_datasets and c["seed"] not in seeds  # fresh data, not the training set
    for d in interp["datasets"]:
        fresh = ref.data(d["seed"])
        assert d["losses"][i0[0]] == pytest.approx(ref.loss(ref.theta0, fresh), rel=1e-10)
        assert d["losses"][i1[0]] == pytest.approx(ref.loss(ref.thetaN, fresh), rel=1e-10)
        assert all(v is not None and v > 0 for v in d["losses"])
    np.testing.assert_allclose(interp["mean"], np.mean([d["losses"] for d in interp["datasets"]], axis=0), rtol=1e-12)
    assert interp["train_losses"][i1[0]] == pytest.approx(lossN, rel=1e-10)

    # one density per alpha: one PDF page each, exact extremes at each alpha recorded
    rows = rec["densities"]
    assert [r["alpha"] for r in rows] == pytest.approx(list(alphas))
    assert _pdf_pages(out / "densities.pdf") == num_alphas
    row1 = rows[i1[0]]
    assert row1["exact_max"] == pytest.approx(exact[-1], rel=1e-8)
    assert row1["exact_min"] == pytest.approx(exact[0], rel=1e-6, abs=1e-12 * exact[-1])
    for r in rows:  # SLQ's extreme nodes lie inside the exact spectrum (Ritz values interlace)
        scale = max(abs(r["exact_min"]), abs(r["exact_max"]))
        assert r["exact_min"] - 1e-8 * scale <= r["slq_min_node"] <= r["slq_max_node"] <= r["exact_max"] + 1e-8 * scale

    # PNGs open and have the study's pixel sizes
    w, h = study.INTERPOLATION_FIGSIZE
    assert _png_size(out / "interpolation.png") == (round(w * study.DPI), round(h * study.DPI))
    w, h = study.DENSITY_FIGSIZE
    assert _png_size(out / "kan_density.png") == (round(w * study.DPI), round(h * study.DPI))
    import matplotlib.image

    img = matplotlib.image.imread(out / "interpolation.png")
    assert img.shape[:2] == (round(study.INTERPOLATION_FIGSIZE[1] * study.DPI), round(study.INTERPOLATION_FIGSIZE[0] * study.DPI))
    assert float(np.std(img[..., :3])) > 0.01  # not blank

    if not mlp:
        return
    m = json.loads((out / "mlp_spectrum.json").read_text())
    assert _png_size(out / "mlp_density.png") == (round(w * study.DPI), round(h * study.DPI))
    assert m["training"]["test_accuracy"] > m["training"]["initial_test_accuracy"] + 0.3
    top = m["top_eigenvalue"]
    assert top["value"] > 0 and top["residual_norm"] < 1e-2 * top["value"]
    # the top Ritz value bounds every SLQ node from above (up to float32 rounding)
    assert m["density"]["max_node"] <= top["value"] * (1 + 1e-4)
    a = m["augmented"]
    # Cauchy interlacing: lambda_min of [[H, g], [g^T, -delta]] <= min(lambda_min(H), -delta)
    assert a["below_minus_delta"] and a["eigenvalue"] <= -a["delta"] + 1e-6
    # ... and lambda_min(H) <= the lowest SLQ node; consistency check, loose because Ritz values
    # of unconverged runs only bound the true extremes from inside
    assert a["eigenvalue"] <= m["density"]["min_node"] + 1e-3 * top["value"]
    assert a["residual_norm"] < 1e-2 * top["value"]
    assert a["vector_norm"] ** 2 + a["scalar"] ** 2 == pytest.approx(1.0, rel=1e-4)
    assert m["trace"]["hutchinson"] > 0 and m["trace"]["num_probes"] >= 1
    # the Hessian's null space (rank <= 9 x batch) is one SLQ node at ~0, not counted as negative
    assert m["density"]["negative_mass"] < 0.5
    assert len(m["density"]["nodes"]) == m["density"]["num_runs"]
    np.testing.assert_allclose(np.sum(m["density"]["weights"], axis=1), 1.0, rtol=1e-4)
    for key in ("mlp_adam", "mlp_top1", "mlp_trace", "mlp_density", "mlp_augmented"):
        assert m["timings_s"][key] > 0


@pytest.mark.slow
def test_quick_study_end_to_end(quick_run):
    out, stdout = quick_run
    _check_study(out, num_alphas=8, num_datasets=3)
    rec = json.loads((out / "kan_spectrum.json").read_text())
    assert rec["config"] == dataclasses.asdict(study.PRESETS["quick"].kan) and rec["config"]["lbfgs_steps"] == 30
    m = json.loads((out / "mlp_spectrum.json").read_text())
    assert m["config"]["hidden"] == 32 and m["config"]["batch"] == 256 and m["num_params"] == 784 * 32 + 32 + 32 * 10 + 10


@pytest.mark.slow
def test_quick_study_prints_and_writes_the_summary(quick_run):
    out, stdout = quick_run
    summary = (out / "summary.md").read_text()
    assert summary in stdout
    for needle in ("| lambda_1 |", "| lambda_min |", "| trace |", "top eigenvalue", "augmented min eigenvalue", "Timings"):
        assert needle in summary


def published_rows(text: str) -> dict[str, tuple[str, str]]:
    """``{"lambda_1": (lanczos, exact), ..., "lambda_min": ...}`` as printed in a published table."""
    return {name: (a, e) for name, a, e in re.findall(r"^\| (lambda_\w+) \| (\S+) \| (\S+) \|", text, re.M)}


@pytest.mark.slow
def test_quick_study_publishes_its_tables(quick_run, tmp_path):
    """``python -m experiments.publish`` writes the run's own numbers, as printed in its summary."""
    out, _ = quick_run
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "landscape").symlink_to(out)
    assert publish.main([str(runs), str(tmp_path / "docs"), "--studies", "landscape"]) == 0
    text = (tmp_path / "docs" / "landscape.md").read_text()
    assert text.startswith("<!-- Generated by `python -m experiments.publish`")
    rows, summary = published_rows(text), published_rows((out / "summary.md").read_text())
    s = json.loads((out / "kan_spectrum.json").read_text())["at_thetaN"]
    assert rows == summary and len(rows) == 6
    for i in range(5):
        assert rows[f"lambda_{i + 1}"] == (f"{s['top5']['lanczos'][i]:.10g}", f"{s['top5']['exact'][i]:.10g}")
    assert rows["lambda_min"] == (f"{s['min']['lanczos']:.10g}", f"{s['min']['exact']:.10g}")
    assert "| top eigenvalue" in text and "Machine: " in text


def test_missing_mnist_exits_2_before_any_work(tmp_path):
    out = tmp_path / "o"
    rc = study.main(["--quick", "--quiet", "--data-dir", str(tmp_path / "nothing"), "--out-dir", str(out)])
    assert rc == 2
    assert not (out / "thetaN.msgpack").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-alphas", "1"], "--num-alphas must be >= 2"),
        (["--alpha-min", "2", "--alpha-max", "1"], "must be below --alpha-max"),
        (["--lanczos-steps", "3"], "--lanczos-steps must be >= 5"),
        (["--lamb", "-1"], "--lamb must be a finite number >= 0"),
        (["--mlp-batch", "70000"], "must be <= 60000"),
        (["--kan-hidden", "0"], "--kan-hidden must be >= 1"),
        (["--kan-dtype", "float16"], "invalid choice: 'float16'"),
    ],
)
def test_bad_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        study.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_quick_fills_only_unset_flags():
    quick = study.PRESETS["quick"]
    cfg = study.parse_args(["--quick", "--num-alphas", "11"])
    assert cfg.kan.num_alphas == 11 and cfg.kan.num_datasets == quick.kan.num_datasets == 3
    assert cfg.kan.lbfgs_steps == 30 and cfg.mlp.hidden == 32 and cfg.mlp.lanczos_steps == 40
    cfg = study.parse_args([])
    assert cfg == study.PRESETS["full"] and cfg.kan == study.KANConfig() and cfg.mlp == study.MLPConfig()
    assert (cfg.kan.num_alphas, cfg.kan.num_datasets, cfg.kan.alpha_min, cfg.kan.alpha_max) == (50, 10, -1.5, 2.0)
    assert (cfg.mlp.hidden, cfg.mlp.batch) == (512, 1024)
    # flag names kept from before the configuration dataclasses
    cfg = study.parse_args(["--skip-mlp", "--delta", "0.5", "--kan-hidden", "7", "--kan-dtype", "float32",
                            "--mlp-batch", "64", "--seed", "3", "--out-dir", "x", "--quiet"])
    assert cfg.skip_mlp and cfg.mlp.delta == 0.5 and cfg.kan.hidden == 7 and cfg.kan.dtype == "float32"
    assert cfg.mlp.batch == 64 and cfg.kan.seed == 3 and str(cfg.out_dir) == "x" and cfg.quiet
