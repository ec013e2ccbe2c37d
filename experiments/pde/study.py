r"""One physics-informed training run: phases, checkpoints, the result record and its figure.

The phases of a KAN run: Adam on grid 3, grid extension to 8, Adam, extension to 14, Adam
(the optimiser state carried by :func:`kan_jax.pde.transition_opt_state` at each extension),
then the end game, BFGS (or L-BFGS) on the loss with the attention weights frozen, in ``endgame_dtype``.
The Hessian spectrum of that loss (top eigenvalues and λmin by Lanczos, the density by
stochastic Lanczos quadrature) is taken when the end game starts and when it ends. An MLP run
has the same phases without the extensions.

The final parameters and grid are written to ``params.msgpack`` before ``result.json``.

The state is checkpointed every ``checkpoint_every`` Adam steps, every L-BFGS chunk and at
each phase boundary (``ckpt_<phase>.msgpack``); a rerun with the same configuration resumes
from the newest one, or returns the finished ``result.json``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._records import num, nums
from experiments.pde.problems import PROBLEMS, Problem, Reference, reference_solution
from experiments.pde.training import Data, adam_chunk, evaluate, make_adam_step, make_loss, make_net, redraw, spectrum
from kan_jax import refine, refine_opt_state
from kan_jax.io import write_json
from kan_jax.optim import bfgs
from kan_jax.pde import sobol_points, transition_opt_state
from kan_jax.training import loops
from kan_jax.training.checkpoint import load_checkpoint, save_checkpoint, save_params

__all__ = ["RESULT", "Run", "phases_of", "run"]

RESULT = "result.json"


def phases_of(cfg: Any) -> list[dict[str, Any]]:
    """The phases of a run: ``{"name", "grid_size", "steps"}`` each, Adam stages then L-BFGS."""
    sizes = cfg.grid_sizes if cfg.model == "kan" else (None,) * len(cfg.adam_steps)
    phases = [{"name": "adam", "grid_size": g, "steps": n} for g, n in zip(sizes, cfg.adam_steps)]
    if cfg.endgame_steps:
        phases.append({"name": cfg.endgame, "grid_size": sizes[-1], "steps": cfg.endgame_steps})
    return phases


def _boundary(problem: Problem, num_points: int, seed: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(S, M, 2)`` Sobol points on each segment and their targets ``(S, M)``."""
    points, targets = [], []
    for i, seg in enumerate(problem.segments):
        free = 1 - seg.axis
        p = np.zeros((num_points, 2))
        p[:, free] = sobol_points(num_points, [problem.bounds[free]], seed=seed + 7 + i, dtype=np.float64)[:, 0]
        p[:, seg.axis] = seg.value
        points.append(p)
        targets.append(seg.target(p))
    return np.stack(points).astype(dtype), np.stack(targets).astype(dtype)


class Run:
    """Everything of one run that does not change between phases."""

    def __init__(self, cfg: Any, ref: Reference, out_dir: Path, log: Callable[[str], None]):
        self.cfg, self.ref, self.out_dir, self.log = cfg, ref, out_dir, log
        self.problem = PROBLEMS[cfg.problem]
        self.dtype = jnp.dtype(cfg.dtype)
        self.end_dtype = jnp.dtype(cfg.endgame_dtype)
        self.phases = phases_of(cfg)
        self.pool = sobol_points(cfg.pool_factor * cfg.points, self.problem.bounds, seed=cfg.seed, dtype=np.float64)
        self.boundary, self.target = _boundary(self.problem, cfg.boundary_points, cfg.seed, np.float64)
        self.tx = optax.adam(optax.exponential_decay(cfg.lr, sum(cfg.adam_steps), cfg.lr_end / cfg.lr))
        self._nets: dict[Any, Any] = {}
        self.endgame = bfgs() if cfg.endgame == "bfgs" else optax.lbfgs(memory_size=cfg.lbfgs_memory)

    def net(self, grid_size: Optional[int]):
        if grid_size not in self._nets:
            widths = self.cfg.widths if self.cfg.model == "kan" else (2, *self.cfg.mlp_hidden, 1)
            self._nets[grid_size] = make_net(self.cfg.model, self.problem, widths=widths, grid_size=grid_size or 3,
                                             dtype=self.dtype)
        return self._nets[grid_size]

    def data(self, idx: np.ndarray, dtype: Any) -> Data:
        return Data(jnp.asarray(self.pool[np.asarray(idx)], dtype), jnp.asarray(self.boundary, dtype),
                    jnp.asarray(self.target, dtype))

    def initial_state(self, phase: int) -> dict[str, Any]:
        """A state of the shapes and dtypes of ``phase`` (the start of a run, or a checkpoint's target)."""
        spec = self.phases[phase]
        net = self.net(spec["grid_size"])
        variables = net.module.init(jax.random.key(self.cfg.seed), jnp.zeros((1, 2), self.dtype))
        params, grid = variables["params"], variables.get("grid", {})
        s, m = self.target.shape
        state = {"params": params, "grid": grid, "pool_w": jnp.ones(self.pool.shape[0], self.dtype),
                 "wb": jnp.ones((s, m), self.dtype), "idx": jnp.arange(self.cfg.points, dtype=jnp.int32)}
        if spec["name"] != "adam":
            state = jax.tree.map(lambda a: a.astype(self.end_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                 state)
            state["opt_state"] = self.endgame.init(state["params"])
        else:
            state["opt_state"] = self.tx.init(params)
        return state

    def checkpoint(self, phase: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        save_checkpoint(self.out_dir / f"ckpt_{phase}.msgpack", state, {**meta, "phase": phase})
        for old in self.out_dir.glob("ckpt_*.msgpack"):
            if old.stem != f"ckpt_{phase}":
                old.unlink()

    def resume(self, key: dict[str, Any]) -> Optional[tuple[int, dict[str, Any], dict[str, Any]]]:
        found = sorted(self.out_dir.glob("ckpt_*.msgpack"), key=lambda p: int(p.stem.split("_")[1]))
        if not found:
            return None
        phase = int(found[-1].stem.split("_")[1])
        if phase >= len(self.phases):
            return None
        state, meta = load_checkpoint(found[-1], self.initial_state(phase))
        if meta.get("config") != key:
            self.log(f"{found[-1]} is of another configuration: starting afresh")
            return None
        self.log(f"resuming from {found[-1]} (phase {phase}, {meta['done']} steps done)")
        return phase, jax.tree.map(jnp.asarray, state), meta


def _finite_or_raise(values: np.ndarray, where: str, iteration: int, out_dir: Path) -> None:
    if not np.all(np.isfinite(values)):
        bad = iteration + int(np.argmin(np.isfinite(values)))
        raise FloatingPointError(f"non-finite loss in phase {where} at iteration {bad}; the run stops here, "
                                 f"its last checkpoint and every finished result in {out_dir} are kept")


def run(cfg: Any, data_dir: Path, out_dir: Path, log: Callable[[str], None] = print,
        plot: Optional[Callable[[dict[str, Any], np.ndarray, Reference, Path], None]] = None) -> dict[str, Any]:
    """Run (or resume, or return) the configuration ``cfg``; returns the result record.

    Raises:
      FileNotFoundError: The problem's reference file is missing in ``data_dir``.
      FloatingPointError: The loss became non-finite (checkpoints and results are kept).
    """
    problem = PROBLEMS[cfg.problem]
    ref = reference_solution(problem, data_dir)
    out_dir = Path(out_dir)
    key = json.loads(json.dumps(dataclasses.asdict(cfg)))  # as stored: tuples become lists
    done_path = out_dir / RESULT
    if done_path.is_file():
        record = json.loads(done_path.read_text())
        if record.get("config") == key:
            log(f"{done_path} is complete for this configuration")
            return record
    out_dir.mkdir(parents=True, exist_ok=True)
    r = Run(cfg, ref, out_dir, log)
    resumed = r.resume(key)
    if resumed is None:
        phase, state = 0, r.initial_state(0)
        meta = {"config": key, "done": 0, "history": [], "phase_records": [], "wall_s": 0.0, "spectra": {},
                "redraws": 0}
    else:
        phase, state, meta = resumed
    start = time.perf_counter() - meta["wall_s"]
    while phase < len(r.phases):
        spec = r.phases[phase]
        if spec["name"] == "adam":
            state, meta = _adam_phase(r, phase, state, meta, start)
        else:
            state, meta = _endgame_phase(r, phase, state, meta, start)
        phase += 1
        if phase < len(r.phases):
            state = _transition(r, phase, state, meta)
            meta = {**meta, "done": 0, "wall_s": time.perf_counter() - start}
            r.checkpoint(phase, state, meta)
    net = r.net(r.phases[-1]["grid_size"])
    rel_l2, prediction = evaluate(net, state["params"], state["grid"], ref.points, ref.values)
    if "after" not in meta["spectra"] and cfg.spectrum and r.phases[-1]["name"] != "adam":
        meta["spectra"]["after"] = _spectrum(r, state)
    wall = time.perf_counter() - start
    record = {"problem": cfg.problem, "model": cfg.model, "rel_l2": rel_l2,
              "iterations": int(sum(p["steps"] for p in r.phases)), "wall_s": wall,
              "phases": meta["phase_records"], "loss_history": meta["history"], "spectrum": meta["spectra"],
              "num_params": int(sum(a.size for a in jax.tree.leaves(state["params"]))),
              "device": jax.devices()[0].device_kind, "config": key}
    if plot is not None:
        plot(record, prediction, ref, out_dir / "pde.png")
    save_params(out_dir / "params.msgpack", {"params": state["params"], "grid": state["grid"]})
    write_json(done_path, record)
    for old in out_dir.glob("ckpt_*.msgpack"):
        old.unlink()
    log(f"{cfg.problem} {cfg.model}: relative L2 {rel_l2:.3e} after {record['iterations']} iterations, {wall:.0f} s")
    return record


def _spectrum_loss(r: Run) -> Callable:
    if not hasattr(r, "_spectrum_fn"):
        loss = make_loss(r.net(r.phases[-1]["grid_size"]), r.problem)
        r._spectrum_fn = lambda params, batch: loss(params, *batch)[0]
    return r._spectrum_fn


def _spectrum(r: Run, state: dict[str, Any]) -> dict[str, Any]:
    cfg = r.cfg
    t = time.perf_counter()
    n = min(cfg.spectrum_points, cfg.points)
    data = r.data(state["idx"][:n], r.end_dtype)
    w = state["pool_w"][state["idx"][:n]]
    out = spectrum(_spectrum_loss(r), state["params"], (state["grid"], data, w, state["wb"]), top=cfg.spectrum_top,
                   num_steps=cfg.spectrum_steps, num_runs=cfg.density_runs)
    out["points"], out["wall_s"] = n, time.perf_counter() - t
    r.log(f"spectrum: top {out['top'][0]:.3e}, lambda_min {out['lambda_min']:.3e} ({out['wall_s']:.0f} s)")
    return out


def _record_phase(r: Run, phase: int, state: dict[str, Any], meta: dict[str, Any], t0: float, steps: int,
                  extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    spec = r.phases[phase]
    rel_l2, _ = evaluate(r.net(spec["grid_size"]), state["params"], state["grid"], r.ref.points, r.ref.values)
    rec = {**spec, "steps": steps, "end_iteration": len(meta["history"]), "loss": num(meta["history"][-1]),
           "rel_l2": rel_l2, "wall_s": time.perf_counter() - t0, **(extra or {})}
    r.log(f"phase {phase} {spec['name']} G={spec['grid_size']}: loss {rec['loss']:.3e}, relative L2 {rel_l2:.3e}, "
          f"{rec['wall_s']:.0f} s")
    return {**meta, "phase_records": meta["phase_records"] + [rec]}


def _adam_phase(r: Run, phase: int, state: dict[str, Any], meta: dict[str, Any], start: float):
    cfg, spec = r.cfg, r.phases[phase]
    net = r.net(spec["grid_size"])
    step = make_adam_step(net, r.problem, r.tx, cfg.rba_decay, cfg.rba_eta)
    chunk = adam_chunk(step, cfg.chunk)
    draw = redraw(net, r.problem, cfg.points, cfg.rad_exponent, cfg.rad_offset)
    pool = jnp.asarray(r.pool, r.dtype)
    t0 = time.perf_counter() - meta.get("phase_wall_s", 0.0)
    done = meta["done"]
    while done < spec["steps"]:
        idx = state["idx"]
        s = (state["params"], state["opt_state"], state["pool_w"][idx], state["wb"])
        s, losses = chunk(s, state["grid"], r.data(idx, r.dtype))
        losses = np.asarray(losses)
        _finite_or_raise(losses, f"{phase} (adam, grid {spec['grid_size']})", len(meta["history"]), r.out_dir)
        params, opt_state, w, wb = s
        pool_w = state["pool_w"].at[idx].set(w)
        done += cfg.chunk
        meta = {**meta, "history": meta["history"] + nums(losses)}
        if cfg.resample_every and done % cfg.resample_every == 0 and done < spec["steps"]:
            meta["redraws"] += 1
            key = jax.random.fold_in(jax.random.key(cfg.seed + 1), meta["redraws"])
            idx = draw(key, params, state["grid"], pool, pool_w).astype(jnp.int32)
        state = {**state, "params": params, "opt_state": opt_state, "pool_w": pool_w, "wb": wb, "idx": idx}
        if done % cfg.checkpoint_every == 0 and done < spec["steps"]:
            r.log(f"adam {done}/{spec['steps']}: loss {float(losses[-1]):.3e} ({time.perf_counter() - t0:.0f} s)")
            r.checkpoint(phase, state, {**meta, "done": done, "wall_s": time.perf_counter() - start,
                                        "phase_wall_s": time.perf_counter() - t0})
    meta = _record_phase(r, phase, state, meta, t0, spec["steps"])
    return state, {**meta, "phase_wall_s": 0.0}


def _transition(r: Run, phase: int, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The state at the start of ``phase``: the grid extended, or the end game's dtype and state."""
    spec, prev = r.phases[phase], r.phases[phase - 1]
    if spec["name"] == "adam":
        if spec["grid_size"] == prev["grid_size"]:
            return state
        net, new = r.net(prev["grid_size"]), r.net(spec["grid_size"])
        samples = net.normalise(jnp.asarray(np.concatenate([r.pool, r.boundary.reshape(-1, 2)]), r.dtype))
        variables = refine(new.module, net.variables(state["params"], state["grid"]), samples,
                           grid_size=spec["grid_size"])
        carry = transition_opt_state if r.cfg.transition == "interpolate" else refine_opt_state
        opt_state = carry(state["opt_state"], r.tx, variables["params"])
        r.log(f"grid {prev['grid_size']} -> {spec['grid_size']} ({r.cfg.transition} state transition)")
        return {**state, "params": variables["params"], "grid": variables["grid"], "opt_state": opt_state}
    cast = jax.tree.map(lambda a: a.astype(r.end_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        {k: v for k, v in state.items() if k != "opt_state"})
    cast["opt_state"] = r.endgame.init(cast["params"])
    if r.cfg.spectrum:
        meta["spectra"]["before"] = _spectrum(r, cast)
    return cast


def _endgame_phase(r: Run, phase: int, state: dict[str, Any], meta: dict[str, Any], start: float):
    cfg, spec = r.cfg, r.phases[phase]
    loss = make_loss(r.net(spec["grid_size"]), r.problem)
    if not hasattr(r, "_objective"):
        r._objective = lambda params, grid, data, w, wb: loss(params, grid, data, w, wb)[0]
    t0 = time.perf_counter() - meta.get("phase_wall_s", 0.0)
    done = meta["done"]
    data = r.data(state["idx"], r.end_dtype)
    w = state["pool_w"][state["idx"]]
    evals = meta.get("endgame_evals", 0)
    while done < spec["steps"]:
        n = min(cfg.endgame_chunk, spec["steps"] - done)
        out = loops.minimize(r._objective, state["params"], state["grid"], data, w, state["wb"], optimizer=r.endgame,
                             num_steps=jnp.asarray(n), opt_state=state["opt_state"], history_size=cfg.endgame_chunk)
        values = np.asarray(out.history.value)[:n]
        _finite_or_raise(np.append(values, float(out.value)), f"{phase} ({spec['name']})", len(meta["history"]), r.out_dir)
        evals += int(np.asarray(out.history.num_evals)[:n].sum())
        done += n
        state = {**state, "params": out.params, "opt_state": out.opt_state}
        err, _ = evaluate(r.net(spec["grid_size"]), out.params, state["grid"], r.ref.points, r.ref.values)
        meta = {**meta, "history": meta["history"] + nums(values), "endgame_evals": evals,
                "endgame_rel_l2": meta.get("endgame_rel_l2", []) + [[done, err]]}
        r.log(f"{spec['name']} {done}/{spec['steps']}: loss {float(out.value):.3e}, relative L2 {err:.3e} "
              f"({time.perf_counter() - t0:.0f} s)")
        if done < spec["steps"]:
            r.checkpoint(phase, state, {**meta, "done": done, "wall_s": time.perf_counter() - start,
                                        "phase_wall_s": time.perf_counter() - t0})
    meta = _record_phase(r, phase, state, meta, t0, spec["steps"],
                         {"evaluations": evals, "rel_l2_by_iteration": meta.get("endgame_rel_l2", []), "loss": num(r._objective(state["params"], state["grid"], data, w,
                                                                         state["wb"]))})
    return state, {**meta, "phase_wall_s": 0.0}
