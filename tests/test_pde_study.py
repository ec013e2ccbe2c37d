"""The physics-informed study: the optimiser state transition at a grid extension, the four
problems (against their exact solutions and reference files), the networks' input derivatives
(against float64 finite differences), the entry point's errors, and the quick preset end to end."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.pde.cli import PRESETS, Config, main
from experiments.pde.problems import PROBLEMS, reference_solution
from experiments.pde.study import run
from experiments.pde.training import make_net
from kan_jax import KAN, refine, refine_opt_state
from kan_jax.pde import interpolation_matrix, resample_moments, transition_opt_state

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pde"


def test_interpolation_matrix_equals_numpy_interp_between_relative_positions():
    rng = np.random.default_rng(0)
    for old, new in ((6, 11), (11, 17), (5, 3), (1, 4), (4, 1)):
        v = rng.normal(size=old)
        s_old = np.linspace(0, 1, old) if old > 1 else np.zeros(1)
        s_new = np.linspace(0, 1, new) if new > 1 else np.zeros(1)
        expected = np.interp(s_new, s_old, v) if old > 1 else np.full(new, v[0])
        np.testing.assert_allclose(interpolation_matrix(old, new) @ v, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="new_size must be an int >= 1"):
        interpolation_matrix(3, 0)


def test_resample_moments_acts_on_the_changed_axis_only():
    rng = np.random.default_rng(1)
    m = rng.uniform(size=(2, 6, 3))
    out = np.asarray(resample_moments(jnp.asarray(m), (2, 11, 3)))
    expected = np.apply_along_axis(lambda v: np.interp(np.linspace(0, 1, 11), np.linspace(0, 1, 6), v), 1, m)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        resample_moments(jnp.asarray(m), (2, 11))


@pytest.fixture(scope="module")
def tiny_fit():
    """A [1, 3, 1] KAN (G=3) after 200 Adam steps on sin(3x), refined to G=6; its state and step."""
    x = jnp.linspace(-1, 1, 16)[:, None]
    y = jnp.sin(3 * x)
    model = KAN([1, 3, 1], grid_size=3)
    params, grid = (lambda v: (v["params"], v["grid"]))(model.init(jax.random.key(0), x))
    tx = optax.adam(1e-2)

    def loss(params, grid):
        return jnp.mean((model.apply({"params": params, "grid": grid}, x) - y) ** 2)

    @jax.jit
    def step(params, state, grid):
        value, g = jax.value_and_grad(loss)(params, grid)
        updates, state = tx.update(g, state)
        return optax.apply_updates(params, updates), state, value

    state = tx.init(params)
    for _ in range(200):
        params, state, _ = step(params, state, grid)
    new = refine(model, {"params": params, "grid": grid}, x, grid_size=6)
    return new, state, tx, step, loss


def test_state_transition_carries_unchanged_leaves_exactly_and_interpolates_the_moments(tiny_fit):
    new, state, tx, _, _ = tiny_fit
    out = transition_opt_state(state, tx, new["params"])
    assert jax.tree.structure(out) == jax.tree.structure(tx.init(new["params"]))
    adam = state[0]
    for layer in ("layers_0", "layers_1"):
        for moment in ("mu", "nu"):
            old_m = np.asarray(getattr(adam, moment)[layer]["spline_weight"])    # (in, 6, out)
            new_m = np.asarray(getattr(out[0], moment)[layer]["spline_weight"])  # (in, 9, out)
            expected = np.apply_along_axis(lambda v: np.interp(np.linspace(0, 1, 9), np.linspace(0, 1, 6), v), 1, old_m)
            np.testing.assert_allclose(new_m, expected, rtol=1e-6, atol=1e-12)
            np.testing.assert_array_equal(getattr(out[0], moment)[layer]["base_weight"],
                                          getattr(adam, moment)[layer]["base_weight"])
    assert int(out[0].count) == 200
    with pytest.raises(ValueError, match="structure"):
        transition_opt_state(state, optax.sgd(0.1, momentum=0.9), new["params"])


def test_state_transition_avoids_the_loss_peak_of_fresh_moments(tiny_fit):
    """After an extension the loss of the next steps stays near its value at the extension (no
    peak) with the moments carried, while fresh moments for the new coefficients make it jump."""
    new, state, tx, step, loss = tiny_fit
    at_extension = float(loss(new["params"], new["grid"]))
    peaks = {}
    for name, carry in (("interpolate", transition_opt_state), ("fresh", refine_opt_state)):
        p, s = new["params"], carry(state, tx, new["params"])
        values = []
        for _ in range(10):
            p, s, value = step(p, s, new["grid"])
            values.append(float(value))
        peaks[name] = max(values[1:])
    assert peaks["interpolate"] <= 1.5 * at_extension, (peaks, at_extension)
    assert peaks["fresh"] > 10 * at_extension, (peaks, at_extension)


def test_exact_solutions_have_zero_residual_and_meet_the_boundary_targets():
    """Derivatives of the exact solutions by hand: diffusion ``u = e^{-t} sin(πx)`` has
    ``u_t = −u``, ``u_xx = −π² u``; Helmholtz ``u = sin(πx) sin(4πy)`` has ``u_xx = −π² u``,
    ``u_yy = −16π² u``."""
    rng = np.random.default_rng(2)
    pi = np.pi
    cases = {"diffusion": (lambda a, b: np.exp(-a) * np.sin(pi * b), lambda u: {"t": -u, "xx": -pi ** 2 * u}),
             "helmholtz": (lambda a, b: np.sin(pi * a) * np.sin(4 * pi * b),
                           lambda u: {"xx": -pi ** 2 * u, "yy": -16 * pi ** 2 * u})}
    for name, (exact, derivatives) in cases.items():
        problem = PROBLEMS[name]
        (a0, b0), (a1, b1) = problem.bounds
        p = np.stack([rng.uniform(a0, b0, 32), rng.uniform(a1, b1, 32)], 1)
        u = exact(p[:, 0], p[:, 1])
        np.testing.assert_allclose(problem.residual({"u": u, **derivatives(u)}, jnp.asarray(p)), 0, atol=1e-9)
        for seg in problem.segments:
            q = p.copy()
            q[:, seg.axis] = seg.value
            np.testing.assert_allclose(seg.target(q), exact(q[:, 0], q[:, 1]), atol=1e-12)


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="shared PDE data not present")
def test_reference_files_meet_the_initial_condition():
    for name in ("burgers", "allen_cahn"):
        problem = PROBLEMS[name]
        ref = reference_solution(problem, DATA_DIR)
        assert ref.a[0] == 0.0
        initial = problem.segments[0].target(np.stack([np.zeros_like(ref.b), ref.b], 1))
        np.testing.assert_allclose(ref.values[0], initial, atol=1e-10)


def test_network_derivatives_in_problem_coordinates_match_finite_differences():
    problem = PROBLEMS["burgers"]  # t in [0, 1], x in [-1, 1]: the chain rule's scales differ
    net = make_net("kan", problem, widths=(2, 3, 1), grid_size=4, dtype=jnp.float64)
    variables = net.module.init(jax.random.key(3), jnp.zeros((1, 2)))
    params, grid = variables["params"], variables.get("grid", {})
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(4), a.shape, a.dtype), params)
    x = jnp.asarray(np.random.default_rng(5).uniform([0.05, -0.9], [0.95, 0.9], (6, 2)))
    d = jax.jit(lambda z: net.derivatives(params, grid, z, problem))(x)
    h = 1e-4
    f = jax.jit(lambda z: net(params, grid, z))
    for c, name in enumerate(problem.coords):
        e = jnp.zeros(2).at[c].set(h)
        u = lambda z: np.asarray(f(z))
        np.testing.assert_allclose(d[name], (u(x + e) - u(x - e)) / (2 * h), atol=1e-5)
        if name * 2 in d:
            np.testing.assert_allclose(d[name * 2], (u(x + e) - 2 * u(x) + u(x - e)) / h ** 2, atol=1e-3)


def test_unknown_problem_and_bad_schedule_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as err:
        main(["--problem", "poisson"])
    assert err.value.code == 2 and "poisson" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--adam-steps", "100,130"])
    assert "multiples of --chunk" in capsys.readouterr().err


def test_missing_reference_file_is_named(tmp_path, capsys):
    assert main(["--problem", "allen_cahn", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err
    assert "allen_cahn.mat" in message and str(tmp_path) in message


def test_non_finite_loss_is_a_clear_error_and_keeps_finished_results(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    finished = out / "result.json"
    finished.write_text(json.dumps({"problem": "diffusion", "rel_l2": 1e-4, "config": {}}))
    cfg = dataclasses.replace(PRESETS["quick"], problem="diffusion", widths=(2, 2, 1), grid_sizes=(3,),
                              adam_steps=(10,), chunk=5, checkpoint_every=5, resample_every=0, points=16,
                              boundary_points=4, endgame_steps=0, lr=1e30, lr_end=1e30, spectrum=False)
    with pytest.raises(FloatingPointError, match="non-finite loss in phase 0"):
        run(cfg, DATA_DIR, out, log=lambda msg: None)
    assert json.loads(finished.read_text())["rel_l2"] == 1e-4


@pytest.mark.slow
def test_quick_preset_end_to_end_and_resume_after_a_kill(tmp_path):
    """The quick preset writes its record and figure; killed after the first extension and
    rerun, it resumes from the checkpoint and ends with the same error."""
    from experiments.pde.cli import plot

    cfg = dataclasses.replace(PRESETS["quick"], problem="diffusion", dtype="float64")
    whole = run(cfg, DATA_DIR, tmp_path / "whole", log=lambda msg: None, plot=plot)
    assert {"problem", "rel_l2", "iterations", "wall_s", "loss_history", "phases", "spectrum"} <= set(whole)
    assert whole["iterations"] == len(whole["loss_history"]) == 360
    assert 0 < whole["rel_l2"] < 0.5 and (tmp_path / "whole" / "pde.png").is_file()
    assert whole["spectrum"]["before"]["top"][0] >= whole["spectrum"]["before"]["lambda_min"]

    class Kill(Exception):
        pass

    def log(msg):
        if msg.startswith("phase 1"):
            raise Kill

    with pytest.raises(Kill):
        run(cfg, DATA_DIR, tmp_path / "killed", log=log)
    assert (tmp_path / "killed" / "ckpt_1.msgpack").is_file() and not (tmp_path / "killed" / "result.json").exists()
    lines = []
    resumed = run(cfg, DATA_DIR, tmp_path / "killed", log=lines.append)
    assert any("resuming" in line for line in lines)
    assert resumed["loss_history"][:100] == whole["loss_history"][:100]
    np.testing.assert_allclose(resumed["rel_l2"], whole["rel_l2"], rtol=1e-6)


@pytest.mark.slow
def test_burgers_and_allen_cahn_residuals_equal_jaxkans_on_the_same_network():
    """The benchmark's claim "the same problem": jaxKAN 0.3.7's residual functions (nested
    ``jax.grad`` under ``vmap``) and ours (from :func:`kan_jax.pde.input_derivatives`) agree on
    one jaxKAN network."""
    pytest.importorskip("jaxkan")
    from jaxkan.models.KAN import KAN as JaxKAN
    from jaxkan.pikan.pde import get_ac_res, get_burgers_res

    from kan_jax.pde import input_derivatives

    model = JaxKAN(layer_dims=[2, 3, 1], layer_type="spline", required_parameters={"k": 3, "G": 3}, seed=0)
    x = jnp.asarray(np.random.default_rng(6).uniform([0, -1], [1, 1], (8, 2)), jnp.float32)
    for name, theirs in (("burgers", get_burgers_res()), ("allen_cahn", get_ac_res(D=1e-3, c=5.0))):
        problem = PROBLEMS[name]
        d = input_derivatives(model, x, first=problem.first, second=problem.second)
        ours = {"u": d.value[:, 0], **{problem.coords[c]: d.first[:, 0, i] for i, c in enumerate(problem.first)},
                **{problem.coords[c] * 2: d.second[:, 0, i] for i, c in enumerate(problem.second)}}
        np.testing.assert_allclose(problem.residual(ours, x), np.asarray(theirs(model, x))[:, 0], rtol=1e-4, atol=1e-5)
