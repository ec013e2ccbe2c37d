"""Multi-device checks, run in a subprocess on forced host CPU devices (see tests/test_sharding.py).

JAX fixes its device count when its backend starts, and the pytest session has started it with one
CPU device, so these checks run in a fresh interpreter:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/multidevice_checks.py CHECK...

Each check raises on failure; the script prints ``ok <check>`` per passed check and exits 0.
References are the one-device programs (float32; tolerances state the rounding allowed by a
different reduction order over devices).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.mnist_protocol import make_optimizer  # noqa: E402
from kan_jax import KAN  # noqa: E402
from kan_jax.training import sharding as sh  # noqa: E402
from kan_jax.training import TrainState, init_train_state, make_epoch_fn  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6  # float32, 13 optimiser steps, sums reordered over 4 devices


def _close(a, b, what, rtol=RTOL, atol=ATOL):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise AssertionError(f"{what}{jax.tree_util.keystr(path)}: shape {x.shape} != {y.shape}")
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f"{what}{jax.tree_util.keystr(path)}")


def _toy_problem(n=200, d=12, classes=4, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, d), jnp.float32)
    w = jax.random.normal(kw, (d, classes), jnp.float32)
    y = jnp.argmax(jnp.tanh(x @ w) + 0.3 * x[:, :classes] ** 2, -1).astype(jnp.int32)
    return np.asarray(x[:160]), np.asarray(y[:160]), np.asarray(x[160:]), np.asarray(y[160:])


def _one_device(tree):
    return jax.device_put(tree, jax.devices()[0])


def _init(model, tx, x, keys):
    """Initial train state(s) on the host (jitted: one compile instead of many eager ops)."""
    one = lambda k: init_train_state(model, tx, k, jnp.asarray(x[:1]))  # noqa: E731
    return jax.device_get(jax.jit(jax.vmap(one) if keys.ndim else one)(keys))


def check_data_parallel_epoch(model_sharded: bool = False, basis: str = "bspline"):
    """4-way data parallel epoch == one-device epoch (Adam, δ-GClip).

    ``model_sharded``: instead, δ-GClip on data=2 x model=2 with the spline weights split over
    ``"model"``. ``basis``: the KAN's basis family."""
    assert len(jax.devices()) == 4, jax.devices()
    x, y, xv, yv = _toy_problem()
    model = KAN([12, 8, 4], grid_size=4, spline_order=1, basis=basis)
    batch = 16
    x, y = x[:150], y[:150]  # 10 steps, the last with 6 samples (padded and masked)
    variables = jax.device_get(jax.jit(model.init)(jax.random.key(1), jnp.asarray(x[:1])))
    for algo in ("dgclip",) if model_sharded else ("adam", "dgclip"):
        tx, _ = make_optimizer(algo, 10, **({"gamma": 0.05} if algo == "dgclip" else {}))
        state0 = jax.device_get(TrainState(variables["params"], variables["grid"], tx.init(variables["params"])))
        key = jax.random.key(7)
        ref_state, ref_m = make_epoch_fn(model, tx, batch, 8, vmap_seeds=False)(
            _one_device(state0), key, *map(jnp.asarray, (x, y, xv, yv))
        )
        ref_state, ref_m = jax.device_get((ref_state, ref_m))
        for layout in [dict(model=2)] if model_sharded else [dict()]:
            mesh = sh.make_mesh(4, **layout)
            shard_model = bool(layout)
            shardings = sh.state_shardings(mesh, tx, state0, shard_model=shard_model)
            state = sh.place(state0, shardings)
            if shard_model:  # the spline weights really are split over "model"
                sw = state.params["layers_0"]["spline_weight"]
                assert sw.sharding.spec[-1] == sh.MODEL_AXIS, sw.sharding  # (in, n, out): the output axis
                assert sw.addressable_shards[0].data.shape[-1] == sw.shape[-1] // 2
            data = sh.place((x, y, xv, yv), sh.replicated(mesh))
            k = sh.place(key, sh.replicated(mesh))
            compiled = make_epoch_fn(model, tx, batch, 8, vmap_seeds=False, mesh=mesh).lower(state, k, *data).compile()
            if not layout:  # the compiler put the gradient all-reduce in
                assert "all-reduce" in compiled.as_text()
            new_state, m = jax.device_get(compiled(state, k, *data))
            _close(new_state.params, ref_state.params, f"{algo} {layout} params")
            _close(new_state.opt_state, ref_state.opt_state, f"{algo} {layout} opt_state")
            _close(m, ref_m, f"{algo} {layout} metrics")
            if algo == "dgclip":  # clipping really acted, so the global norm matters
                assert ref_m["clip_factor"] < 1, ref_m


def check_model_sharded_epoch():
    """Data x model parallel epoch (spline weights split over devices) == one-device epoch."""
    check_data_parallel_epoch(model_sharded=True)


def check_model_sharded_epoch_bases():
    """The model-sharded epoch of :func:`check_model_sharded_epoch` with Chebyshev and RBF layers."""
    for basis in ("chebyshev", "rbf"):
        check_data_parallel_epoch(model_sharded=True, basis=basis)


def check_seed_axis_sharded():
    """4 seeds vmapped and split over 4 devices == the vmapped one-device program.

    (The default run checks seeds split over devices through ``check_study_devices``: 2 seeds on
    4 devices is a seeds=2 x data=2 mesh, compared with the vmapped one-device program.)"""
    x, y, xv, yv = _toy_problem(seed=3)
    model = KAN([12, 6, 4], grid_size=3)
    tx, _ = make_optimizer("dgclip", 10, gamma=0.05)
    keys = jax.random.split(jax.random.key(11), 4)
    state0 = _init(model, tx, x, keys)
    shuffle = jax.random.split(jax.random.key(5), 4)
    ref_state, ref_m = jax.device_get(
        make_epoch_fn(model, tx, 16, 8)(_one_device(state0), shuffle, *map(jnp.asarray, (x, y, xv, yv)))
    )
    for seeds in (4, 1):  # one seed per device; or all 4 seeds on each device, batches split 4 ways
        mesh = sh.make_mesh(4, seeds=seeds)
        state = sh.place(state0, sh.state_shardings(mesh, tx, state0, seed_axis=True))
        assert state.params["layers_0"]["spline_weight"].addressable_shards[0].data.shape[0] == 4 // seeds
        k = sh.place(shuffle, sh.seed_sharding(mesh))
        data = sh.place((x, y, xv, yv), sh.replicated(mesh))
        new_state, m = jax.device_get(make_epoch_fn(model, tx, 16, 8, mesh=mesh)(state, k, *data))
        _close(new_state.params, ref_state.params, f"seeds={seeds} params")
        _close(m, ref_m, f"seeds={seeds} metrics")
    try:
        make_epoch_fn(model, tx, 6, 8, mesh=sh.make_mesh(4, seeds=1))
    except ValueError as err:
        assert "batch_size 6 is not divisible by the mesh's 4 data-parallel devices" in str(err), err
    else:
        raise AssertionError("indivisible batch accepted")


def check_sharded_hessian(more: bool = False):
    """The dataset HVP on batches split over devices == unsharded.

    ``more``: Lanczos top eigenpairs, Hutchinson trace, SLQ density and the all-reduce in the
    compiled HVP instead."""
    from kan_jax import curvature as cv

    x, y, _, _ = _toy_problem(n=200, seed=4)
    model = KAN([12, 5, 4], grid_size=3, spline_order=1)
    params = jax.device_get(jax.jit(model.init)(jax.random.key(2), jnp.asarray(x[:1])))
    grid = params["grid"]

    def loss_fn(p, batch):
        xb, yb = batch
        logits = model.apply({"params": p, "grid": grid}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    stacked = (x.reshape(5, 32, 12), y.reshape(5, 32))
    p = params["params"]
    v = jax.tree.map(lambda a: np.asarray(jax.random.normal(jax.random.key(9), a.shape, a.dtype)), p)
    mesh = sh.make_mesh(4)
    sharded = sh.place(stacked, sh.batch_sharding(mesh, ndim=2, axis=1))  # x leaf: (5, 32, 12) -> spec (None, data)
    assert sharded[0].sharding.spec == jax.sharding.PartitionSpec(None, sh.DATA_AXIS), sharded[0].sharding
    assert sharded[0].addressable_shards[0].data.shape == (5, 8, 12)
    p_rep, v_rep = sh.place((p, v), sh.replicated(mesh))
    ref_batches = _one_device(stacked)
    ref_p, ref_v = _one_device((p, v))

    key = jax.random.key(0)
    if not more:
        _close(cv.dataset_hvp(loss_fn, p_rep, v_rep, sharded), cv.dataset_hvp(loss_fn, ref_p, ref_v, ref_batches), "hvp", 1e-4, 1e-6)
        return
    top = cv.top_eigenpairs(loss_fn, p_rep, k=2, batches=sharded, key=key)
    top_ref = cv.top_eigenpairs(loss_fn, ref_p, k=2, batches=ref_batches, key=key)
    np.testing.assert_allclose(np.asarray(top.eigenvalues), np.asarray(top_ref.eigenvalues), rtol=1e-4)
    assert top.eigenvalues.shape == (2,)
    # The sharded HVP reduces over devices inside the compiled program.
    hvp_fn = jax.jit(lambda p, v, b: cv.dataset_hvp(loss_fn, p, v, b))  # the public function, compiled whole
    hlo = hvp_fn.lower(p_rep, v_rep, sharded).compile().as_text()
    assert "all-reduce" in hlo
    tr = cv.hessian_trace(loss_fn, p_rep, batches=sharded, key=key, max_probes=8, min_probes=8)
    tr_ref = cv.hessian_trace(loss_fn, ref_p, batches=ref_batches, key=key, max_probes=8, min_probes=8)
    np.testing.assert_allclose(float(tr.mean), float(tr_ref.mean), rtol=1e-4)
    dens = cv.spectral_density(loss_fn, p_rep, batches=sharded, key=key, num_runs=2, num_steps=10)
    dens_ref = cv.spectral_density(loss_fn, ref_p, batches=ref_batches, key=key, num_runs=2, num_steps=10)
    np.testing.assert_allclose(np.asarray(dens.nodes), np.asarray(dens_ref.nodes), rtol=1e-3, atol=1e-5)


def check_sharded_hessian_more():
    """Lanczos eigenpairs, Hutchinson trace and SLQ density on sharded batches == unsharded; the HVP all-reduces."""
    check_sharded_hessian(more=True)


def check_plan_mesh():
    """Seeds get as many devices as divide them; the rest split batches; errors name the numbers."""
    for n, seeds, batches, want in [(4, 2, (32,), (2, 2, 1)), (4, 5, (64,), (1, 4, 1)), (4, 4, (3,), (4, 1, 1)),
                                    (2, 3, (64, 10), (1, 2, 1)), (1, 7, (5,), (1, 1, 1))]:
        mesh = sh.plan_mesh(n, seeds, batches)
        assert tuple(mesh.shape.values()) == want, (n, seeds, batches, dict(mesh.shape))
    try:
        sh.plan_mesh(4, 3, (30,))
    except ValueError as err:
        assert "cannot spread 3 seed(s) and batches of [30] over 4 devices" in str(err), err
    else:
        raise AssertionError("impossible plan accepted")
    try:
        sh.make_mesh(6)
    except ValueError as err:
        assert "asked for 6 devices but only 4 are available" in str(err), err
        assert "xla_force_host_platform_device_count=6" in str(err), err
    else:
        raise AssertionError("6 of 4 devices accepted")


def _study_argv(out, devices, data_dir):
    return [
        "--algos", "dgclip", "--seeds", "100", "200", "--epochs", "1", "--hidden", "4", "--spline-order", "1",
        "--train-subset", "200", "--test-subset", "64", "--batch-size", "32", "--eval-batch-size", "32",
        "--data-dir", str(data_dir), "--out-dir", str(out), "--no-plot", "--no-progress", "--devices", str(devices),
    ]


NUMBERS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_loss_batchmean", "val_acc_batchmean", "grad_norm", "clip_factor")


def compare_study_runs(a: Path, b: Path) -> None:
    """The per-run JSONs of two study output folders hold the same numbers (float32 tolerance)."""
    names = sorted(p.name for p in a.glob("*_seed*.json"))
    assert names and names == sorted(p.name for p in b.glob("*_seed*.json")), (names, list(b.iterdir()))
    for name in names:
        ra, rb = json.loads((a / name).read_text()), json.loads((b / name).read_text())
        assert ra["config"] == rb["config"] and ra["hyperparameters"] == rb["hyperparameters"]
        for ea, eb in zip(ra["epochs"], rb["epochs"], strict=True):
            for k in NUMBERS:
                if ea[k] is None or eb[k] is None:
                    assert ea[k] is eb[k], (name, k)
                else:
                    np.testing.assert_allclose(ea[k], eb[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")


def check_study_devices():
    """``--devices 4`` writes the same numbers as ``--devices 1``; ``--devices 5`` names the 4 there are."""
    from experiments import mnist as study

    data_dir = Path(os.environ["KAN_JAX_MNIST_DIR"])
    with tempfile.TemporaryDirectory() as tmp:
        one, four = Path(tmp) / "one", Path(tmp) / "four"
        assert study.main(_study_argv(one, 1, data_dir)) == 0
        assert study.main(_study_argv(four, 4, data_dir)) == 0
        compare_study_runs(one, four)
        r1 = json.loads((one / "dgclip_seed100.json").read_text())
        r4 = json.loads((four / "dgclip_seed100.json").read_text())
        assert r4["timing"]["mesh"] == {"seeds": 2, "data": 2, "model": 1}, r4["timing"]
        assert r1["timing"]["devices"] == [str(jax.devices()[0])], r1["timing"]
        assert r4["timing"]["devices"] == [str(d) for d in jax.devices()], r4["timing"]
        s1, s4 = (json.loads((d / "summary.json").read_text()) for d in (one, four))
        for x, y in zip(s1["rows"], s4["rows"], strict=True):
            np.testing.assert_allclose(x["val_acc_mean"], y["val_acc_mean"], rtol=1e-5)
        assert s4["devices"] == r4["timing"]["devices"]
        # Default: all local devices (a resumed run: nothing to train, the summary names them).
        (four / "summary.json").unlink()
        argv = _study_argv(four, 4, data_dir)
        assert study.main(argv[: argv.index("--devices")]) == 0
        assert json.loads((four / "summary.json").read_text())["devices"] == [str(d) for d in jax.devices()]
        # Too many devices: a usage error naming how many exist.
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                study.main(_study_argv(Path(tmp) / "five", 5, data_dir))
            except SystemExit as exit_:
                assert exit_.code == 2, exit_.code
            else:
                raise AssertionError("--devices 5 accepted on 4 devices")
        assert "asked for 5 devices but only 4 are available" in err.getvalue(), err.getvalue()


def check_study_resume_sharded():
    """An epoch checkpoint of a sharded run (``--devices 4``, seeds=2 x data=2) is gathered to the
    host, and a resumed run lays it out on the mesh again: interrupted after epoch 1 and resumed,
    it writes the numbers of an uninterrupted one-device run, and removes the checkpoint."""
    from experiments import mnist as study
    from experiments import mnist_train

    data_dir = Path(os.environ["KAN_JAX_MNIST_DIR"])

    def argv(out, devices):
        a = _study_argv(out, devices, data_dir)
        a[a.index("--epochs") + 1] = "2"
        return a

    with tempfile.TemporaryDirectory() as tmp:
        one, four = Path(tmp) / "one", Path(tmp) / "four"
        assert study.main(argv(one, 1)) == 0
        real = mnist_train.save_checkpoint

        def save_then_interrupt(path, tree, meta):
            real(path, tree, meta)
            raise KeyboardInterrupt

        mnist_train.save_checkpoint = save_then_interrupt
        try:
            assert study.main(argv(four, 4)) == 130
        finally:
            mnist_train.save_checkpoint = real
        assert [p.name for p in (four / "checkpoints").iterdir()] == ["dgclip_seeds100-200.msgpack"]
        assert not list(four.glob("*_seed*.json"))
        assert study.main(argv(four, 4)) == 0
        compare_study_runs(one, four)
        record = json.loads((four / "dgclip_seed100.json").read_text())
        assert record["timing"]["mesh"] == {"seeds": 2, "data": 2, "model": 1}, record["timing"]
        assert len(record["epochs"]) == 2 and not (four / "checkpoints").exists()


CHECKS = {name[len("check_"):]: fn for name, fn in dict(globals()).items() if name.startswith("check_")}
#: The checks of the default test run (the others run under ``pytest -m slow``).
DEFAULT = ["plan_mesh", "data_parallel_epoch", "sharded_hessian", "study_devices"]


def main(argv: list[str]) -> int:
    names = argv or DEFAULT
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        CHECKS[name]()
        print(f"ok {name} ({time.perf_counter() - t0:.1f} s, {time.process_time() - c0:.1f} s CPU)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
