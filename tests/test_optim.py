"""Tests of δ-GClip / GClip (`kan_jax.optim`).

The reference is an independent float64 NumPy implementation of the step of Tucat et al.
(TMLR 2025, arXiv 2404.08624), written here from the formula:

    n = ||concat(all raw grads)||_2
    c = min(1, max(delta, gamma / n)) if n != 0 else 0
    p <- p - lr * c * (g + wd * p)

conftest.py enables x64 for the session, so every array meant to be float32 is created
as float32 explicitly (which also catches accidental promotion to float64).
"""
from __future__ import annotations

import doctest
import importlib
import math
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kan_jax.optim import ScaleByDGClipState, dgclip, gclip, scale_by_dgclip

F32 = np.float32

# --------------------------------------------------------------------------------------
# Helpers: a nested pytree with several leaf shapes (dict, tuple, list; a scalar leaf).
# Leaf order (jax sorts dict keys): conv[0] (2,3,2), conv[1] (), dense.bias (4,),
# dense.kernel (3,4), scale[0] (5,).
# --------------------------------------------------------------------------------------


def make_tree(rng, scale=1.0, dtype=F32):
    def a(shape):
        return jnp.asarray(np.asarray(rng.normal(size=shape) * scale), dtype=dtype)

    return {
        "dense": {"kernel": a((3, 4)), "bias": a((4,))},
        "conv": (a((2, 3, 2)), a(())),
        "scale": [a((5,))],
    }


def leaves64(tree):
    return [np.asarray(x, dtype=np.float64) for x in jax.tree.leaves(tree)]


def global_norm64(leaves):
    return math.sqrt(sum(float(np.sum(x * x)) for x in leaves))


def draw_grads(rng, target_norm, dtype=F32):
    """Random direction rescaled (in float64) to `target_norm`, then cast to `dtype`."""
    direction = make_tree(rng, 1.0, dtype=np.float64)
    n = global_norm64(leaves64(direction))
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x) * (target_norm / n), dtype), direction)


def reference_step(p, g, lr, gamma, delta, wd, decay_mask):
    """One float64 step of the reference algorithm on lists of NumPy leaves."""
    n = global_norm64(g)
    c = min(1.0, max(delta, gamma / n)) if n != 0 else 0.0
    new_p = [pi - lr * c * (gi + (wd * pi if m else 0.0)) for pi, gi, m in zip(p, g, decay_mask)]
    return new_p, n, c


# Decay masks, each with the matching per-leaf booleans written out in leaf order (above).
MASKS = {
    "no_decay": (0.0, None, [False] * 5),
    "decay_all": (0.05, None, [True] * 5),
    "decay_tree_mask": (
        0.05,
        {"dense": {"kernel": False, "bias": True}, "conv": (True, True), "scale": [False]},
        [True, True, True, False, False],
    ),
    "decay_prefix_mask": (
        0.05,
        {"dense": True, "conv": False, "scale": [True]},
        [False, False, True, True, True],
    ),
    "decay_callable_mask": (
        0.05,
        lambda params: jax.tree.map(lambda x: x.ndim > 1, params),
        [True, False, False, True, False],
    ),
}

GAMMA, DELTA, LR = 0.5, 0.1, 0.3  # gamma / delta = 5


def regime_norm(rng, regime, gamma, delta):
    """A gradient norm in the requested regime of the factor."""
    if regime == "mixed":
        regime = rng.choice(["plain", "normalised", "floored"])
    if regime == "plain":  # n <= gamma: c = 1
        return gamma * rng.uniform(0.05, 0.95)
    if regime == "normalised":  # gamma < n <= gamma/delta: c = gamma / n
        return gamma * math.exp(rng.uniform(math.log(1.1), math.log(0.9 / delta)))
    if regime == "floored":  # n > gamma/delta: c = delta
        return gamma / delta * rng.uniform(1.2, 20.0)
    if regime == "at_gamma":
        return gamma
    if regime == "at_gamma_over_delta":
        return gamma / delta
    raise ValueError(regime)


def expected_factor(regime, n, gamma, delta):
    return {
        "plain": 1.0,
        "normalised": gamma / n,
        "floored": delta,
        "at_gamma": 1.0,
        "at_gamma_over_delta": delta,
    }.get(regime)


# --------------------------------------------------------------------------------------
# Parity with the float64 reference.
# --------------------------------------------------------------------------------------

REGIMES = ["plain", "normalised", "floored", "at_gamma", "at_gamma_over_delta", "mixed"]


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("regime", REGIMES)
def test_parity_with_float64_reference(regime, mask_name):
    """20 consecutive float32 steps track the float64 reference step.

    Tolerance: each float32 step carries O(1e-7) relative rounding in the norm, the
    factor and the update; over 20 steps on O(1) parameters the drift stays far below
    rtol = 2e-5, atol = 2e-6 (an error in any regime or in the decay mask is O(1e-2)).
    At the two boundaries the float32 norm may land on either side of the kink; the
    factor is continuous there, so the same tolerance applies.
    """
    wd, mask, mask_leaves = MASKS[mask_name]
    rng = np.random.default_rng(zlib.crc32(f"{regime}/{mask_name}".encode()))
    params = make_tree(rng)
    ref = leaves64(params)
    opt = dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=wd, mask=mask)
    state = opt.init(params)
    for _ in range(20):
        grads = draw_grads(rng, regime_norm(rng, regime, GAMMA, DELTA))
        ref, n_ref, c_ref = reference_step(
            ref, leaves64(grads), LR, GAMMA, DELTA, wd, mask_leaves)
        # The reference itself is in the intended regime.
        c_expected = expected_factor(regime, n_ref, GAMMA, DELTA)
        if c_expected is not None:
            np.testing.assert_allclose(c_ref, c_expected, rtol=1e-6)

        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)

        assert all(x.dtype == F32 for x in jax.tree.leaves((params, updates)))
        np.testing.assert_allclose(optax.tree.get(state, "grad_norm"), n_ref, rtol=2e-6)
        np.testing.assert_allclose(optax.tree.get(state, "factor"), c_ref, rtol=2e-6)
        for got, want in zip(leaves64(params), ref):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("regime", ["plain", "normalised", "at_gamma", "huge"])
def test_gclip_parity_with_float64_reference(regime):
    """GClip (delta = 0) against the reference; large norms are clipped without floor."""
    rng = np.random.default_rng(zlib.crc32(f"gclip/{regime}".encode()))
    wd, mask, mask_leaves = MASKS["decay_prefix_mask"]
    params = make_tree(rng)
    ref = leaves64(params)
    opt = gclip(LR, gamma=GAMMA, weight_decay=wd, mask=mask)
    state = opt.init(params)
    for _ in range(20):
        if regime == "huge":
            n = 10.0 ** rng.uniform(2, 4)
        else:
            n = regime_norm(rng, regime, GAMMA, 0.01)
        grads = draw_grads(rng, n)
        ref, n_ref, c_ref = reference_step(ref, leaves64(grads), LR, GAMMA, 0.0, wd, mask_leaves)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(optax.tree.get(state, "factor"), c_ref, rtol=2e-6)
        for got, want in zip(leaves64(params), ref):  # tolerance as in the test above
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_state_layout_and_dtypes():
    params = make_tree(np.random.default_rng(0))
    state = scale_by_dgclip(GAMMA, DELTA).init(params)
    assert isinstance(state, ScaleByDGClipState)
    assert state.grad_norm.dtype == F32 and state.grad_norm.shape == ()
    assert state.factor.dtype == F32 and state.factor.shape == ()
    assert float(state.grad_norm) == 0.0 and float(state.factor) == 0.0
    assert isinstance(dgclip(LR), optax.GradientTransformationExtraArgs)
    assert isinstance(gclip(LR), optax.GradientTransformationExtraArgs)
    assert isinstance(scale_by_dgclip(GAMMA, DELTA), optax.GradientTransformationExtraArgs)


# --------------------------------------------------------------------------------------
# Zero and non-finite gradients.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True])
def test_zero_gradient_gives_exactly_zero_update(jit):
    """n == 0: factor 0, update exactly 0 (no weight decay), no NaN, state norm 0."""
    params = make_tree(np.random.default_rng(1))
    grads = jax.tree.map(jnp.zeros_like, params)
    opt = dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=0.1)
    update = jax.jit(opt.update) if jit else opt.update
    updates, state = update(grads, opt.init(params), params)
    for u in jax.tree.leaves(updates):
        assert u.dtype == F32
        assert np.all(np.asarray(u) == 0.0)
    assert float(optax.tree.get(state, "grad_norm")) == 0.0
    assert float(optax.tree.get(state, "factor")) == 0.0
    # The gradient of the update with respect to the gradient is finite at zero, too.
    def sq_norm_of_update(g):
        u = opt.update(g, opt.init(params), params)[0]
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(u))

    jac = jax.jit(jax.grad(sq_norm_of_update))(grads)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(jac))


def test_nan_gradient_is_skipped_by_apply_if_finite():
    """A NaN gradient makes the bare update non-finite; apply_if_finite skips that step."""
    rng = np.random.default_rng(2)
    params = make_tree(rng)
    bad = draw_grads(rng, 1.0)
    bad["dense"]["kernel"] = bad["dense"]["kernel"].at[0, 0].set(jnp.nan)
    good = draw_grads(rng, 3.0)

    bare = dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=0.01)
    bare_updates, _ = bare.update(bad, bare.init(params), params)
    assert not all(np.all(np.isfinite(np.asarray(u))) for u in jax.tree.leaves(bare_updates))

    opt = optax.apply_if_finite(bare, max_consecutive_errors=3)
    state = opt.init(params)
    update = jax.jit(opt.update)
    updates, state = update(bad, state, params)
    new_params = optax.apply_updates(params, updates)
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert int(state.notfinite_count) == 1 and not bool(state.last_finite)

    # The next finite gradient gives the ordinary update.
    updates, state = update(good, state, new_params)
    want, _ = bare.update(good, bare.init(params), new_params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert int(state.notfinite_count) == 0
    np.testing.assert_allclose(optax.tree.get(state.inner_state, "grad_norm"), 3.0, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Identities with existing optax optimizers.
# --------------------------------------------------------------------------------------


def _run(opt, params, grad_seq):
    state = opt.init(params)
    out = []
    for g in grad_seq:
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return out


def _assert_updates_close(got, want, rtol=1e-6, atol=1e-8):
    for u_got, u_want in zip(got, want):
        for a, b in zip(jax.tree.leaves(u_got), jax.tree.leaves(u_want)):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_delta_zero_without_decay_is_clip_by_global_norm_then_sgd():
    rng = np.random.default_rng(3)
    params = make_tree(rng)
    grads = [draw_grads(rng, n) for n in (0.1, 0.49, 0.51, 2.0, 50.0, 1e4, 0.3)]
    want = _run(optax.chain(optax.clip_by_global_norm(GAMMA), optax.sgd(LR)), params, grads)
    _assert_updates_close(_run(dgclip(LR, gamma=GAMMA, delta=0.0), params, grads), want)
    _assert_updates_close(_run(gclip(LR, gamma=GAMMA), params, grads), want)


@pytest.mark.parametrize("mask_name", ["decay_all", "decay_tree_mask", "decay_callable_mask"])
def test_delta_one_is_sgd_with_l2_added_to_the_gradient(mask_name):
    """delta = 1 forces c = 1 (for any non-zero gradient): SGD on g + wd * p."""
    wd, mask, _ = MASKS[mask_name]
    rng = np.random.default_rng(4)
    params = make_tree(rng)
    grads = [draw_grads(rng, n) for n in (0.01, 0.5, 3.0, 300.0, 1e5)]
    want = _run(optax.chain(optax.add_decayed_weights(wd, mask), optax.sgd(LR)), params, grads)
    got = _run(dgclip(LR, gamma=GAMMA, delta=1.0, weight_decay=wd, mask=mask), params, grads)
    _assert_updates_close(got, want)


def test_core_in_a_chain_and_with_multisteps():
    """chain(scale_by_dgclip, scale(-lr)) == dgclip; MultiSteps(k=2) == dgclip on the mean."""
    rng = np.random.default_rng(5)
    params = make_tree(rng)
    g1, g2 = draw_grads(rng, 0.2), draw_grads(rng, 30.0)
    kw = dict(gamma=GAMMA, delta=DELTA, weight_decay=0.05)

    chained = optax.chain(scale_by_dgclip(**kw), optax.scale(-LR))
    _assert_updates_close(_run(chained, params, [g1, g2]), _run(dgclip(LR, **kw), params, [g1, g2]))

    multi = optax.MultiSteps(dgclip(LR, **kw), every_k_schedule=2)
    state = multi.init(params)
    update = jax.jit(multi.update)
    u1, state = update(g1, state, params)
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(u1))
    u2, state = update(g2, state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    want, _ = dgclip(LR, **kw).update(mean, dgclip(LR, **kw).init(params), params)
    _assert_updates_close([u2], [want])


# --------------------------------------------------------------------------------------
# Schedules, inject_hyperparams, jit and vmap.
# --------------------------------------------------------------------------------------


def test_schedule_matches_constant_learning_rate_per_step():
    rng = np.random.default_rng(6)
    params = make_tree(rng)
    schedule = optax.exponential_decay(0.8, transition_steps=2, decay_rate=0.5)
    opt = dgclip(schedule, gamma=GAMMA, delta=DELTA, weight_decay=0.05)
    state = opt.init(params)
    for step in range(6):
        grads = draw_grads(rng, float(rng.choice([0.1, 2.0, 40.0])))
        updates, state = opt.update(grads, state, params)
        const = dgclip(float(schedule(step)), gamma=GAMMA, delta=DELTA, weight_decay=0.05)
        want, _ = const.update(grads, const.init(params), params)
        _assert_updates_close([updates], [want])
        params = optax.apply_updates(params, updates)


def test_inject_hyperparams_matches_plain_transform_under_jit():
    rng = np.random.default_rng(8)
    params = make_tree(rng)
    grads = [draw_grads(rng, n) for n in (0.1, 1.0, 20.0, 0.0, 3.0)]
    kw = dict(learning_rate=LR, gamma=GAMMA, delta=DELTA, weight_decay=0.05)
    injected = optax.inject_hyperparams(dgclip)(**kw)
    state = injected.init(params)
    traces = []

    @jax.jit
    def update(g, s, p):
        traces.append(1)  # runs only when jax (re)traces
        return injected.update(g, s, p)

    p_inj, p_ref = params, params
    ref_opt = dgclip(**kw)
    ref_state = ref_opt.init(params)
    for i, g in enumerate(grads):
        if i == 3:  # change gamma and delta mid-run: same compiled update, new values
            state.hyperparams["gamma"] = jnp.asarray(2.0, F32)
            state.hyperparams["delta"] = jnp.asarray(0.5, F32)
            ref_opt = dgclip(**{**kw, "gamma": 2.0, "delta": 0.5})
        u_inj, state = update(g, state, p_inj)
        u_ref, ref_state = ref_opt.update(g, ref_state, p_ref)
        _assert_updates_close([u_inj], [u_ref])
        np.testing.assert_allclose(
            optax.tree.get(state, "factor"), optax.tree.get(ref_state, "factor"), rtol=1e-6)
        p_inj, p_ref = optax.apply_updates(p_inj, u_inj), optax.apply_updates(p_ref, u_ref)
    assert len(traces) == 1  # new hyperparameter values reuse the compiled update


def _quadratic_grad(params, scale):
    """Gradient of 0.5 * scale * sum(p**2 + p): depends on params, norm set by scale."""
    return jax.tree.map(lambda p: scale * (p + 0.5), params)


def test_vmap_over_gamma_delta_matches_separate_runs():
    params = make_tree(np.random.default_rng(9))
    gammas = np.array([0.05, 0.5, 5.0, 0.5], F32)
    deltas = np.array([0.0, 0.1, 0.01, 1.0], F32)
    scales = (0.01, 0.3, 10.0, 300.0, 1.0)

    def run(factory, gamma, delta):
        opt = factory(learning_rate=0.1, gamma=gamma, delta=delta, weight_decay=0.05)
        p, state = params, opt.init(params)
        for s in scales:
            updates, state = opt.update(_quadratic_grad(p, s), state, p)
            p = optax.apply_updates(p, updates)
        return p, optax.tree.get(state, "factor")

    for factory in (optax.inject_hyperparams(dgclip), dgclip):
        batched_p, batched_c = jax.jit(jax.vmap(lambda g, d: run(factory, g, d)))(gammas, deltas)
        for i in range(len(gammas)):
            p_i, c_i = run(dgclip, float(gammas[i]), float(deltas[i]))
            np.testing.assert_allclose(batched_c[i], c_i, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(batched_p), jax.tree.leaves(p_i)):
                assert a.dtype == F32
                np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# dtypes.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes_are_preserved(dtype):
    """bf16/fp16 params and grads give bf16/fp16 updates; the norm is a float32 scalar."""
    rng = np.random.default_rng(10)
    params = make_tree(rng, dtype=dtype)
    grads = draw_grads(rng, 4.0, dtype=dtype)
    for opt in (
        dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=0.05),
        dgclip(optax.linear_schedule(LR, 0.1, 10), gamma=GAMMA, delta=DELTA),
        optax.inject_hyperparams(dgclip)(learning_rate=LR, gamma=GAMMA, delta=DELTA),
    ):
        state = opt.init(params)
        updates, state = jax.jit(opt.update)(grads, state, params)
        assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
        assert optax.tree.get(state, "grad_norm").dtype == F32
        assert all(p.dtype == dtype for p in jax.tree.leaves(optax.apply_updates(params, updates)))
    # Values: against the float64 reference on the same (rounded) inputs; tolerance is a
    # few ulps of the low-precision format (bf16 has 8 significant bits).
    opt = dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=0.05)
    updates, state = opt.update(grads, opt.init(params), params)
    ref, n_ref, _ = reference_step(leaves64(params), leaves64(grads), LR, GAMMA, DELTA, 0.05, [True] * 5)
    np.testing.assert_allclose(state[0].grad_norm, n_ref, rtol=1e-6)
    for u, p, want in zip(jax.tree.leaves(updates), leaves64(params), ref):
        np.testing.assert_allclose(np.asarray(u, np.float64), want - p, rtol=2e-2, atol=1e-3)


def test_norm_is_accumulated_in_float32():
    """fp16 gradients whose squares overflow fp16 (max 65504) still give the right norm."""
    grads = {"w": jnp.full((1000,), 300.0, jnp.float16), "b": jnp.full((3,), 0.5, jnp.float16)}
    params = jax.tree.map(jnp.ones_like, grads)
    opt = dgclip(LR, gamma=GAMMA, delta=DELTA)
    updates, state = opt.update(grads, opt.init(params), params)
    n_ref = math.sqrt(1000 * 300.0**2 + 3 * 0.25)
    np.testing.assert_allclose(state[0].grad_norm, n_ref, rtol=1e-6)
    np.testing.assert_allclose(state[0].factor, DELTA, rtol=1e-6)  # n > gamma / delta
    assert all(u.dtype == jnp.float16 and np.all(np.isfinite(np.asarray(u)))
               for u in jax.tree.leaves(updates))


def test_mixed_dtype_tree_keeps_each_leaf_dtype():
    dtypes = {"a": jnp.bfloat16, "b": F32, "c": jnp.float64}
    params = {k: jnp.ones((3,), d) for k, d in dtypes.items()}
    grads = {k: jnp.full((3,), 2.0, d) for k, d in dtypes.items()}
    opt = dgclip(LR, gamma=GAMMA, delta=DELTA, weight_decay=0.05)
    updates, _ = opt.update(grads, opt.init(params), params)
    assert {k: v.dtype for k, v in updates.items()} == {k: v.dtype for k, v in grads.items()}


# --------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (dgclip, dict(learning_rate=0.0),
         r"learning_rate must be positive \(learning_rate > 0\), got learning_rate=0\.0"),
        (dgclip, dict(learning_rate=-1e-3), r"learning_rate.*> 0.*learning_rate=-0\.001"),
        (dgclip, dict(learning_rate=float("nan")), r"learning_rate.*learning_rate=nan"),
        (dgclip, dict(learning_rate=1.0, gamma=0.0),
         r"gamma .*must be positive \(gamma > 0\), got gamma=0\.0"),
        (dgclip, dict(learning_rate=1.0, gamma=-2), r"gamma.*gamma=-2\b"),
        (dgclip, dict(learning_rate=1.0, delta=-0.1), r"delta .*must lie in \[0, 1\], got delta=-0\.1"),
        (dgclip, dict(learning_rate=1.0, delta=1.5), r"delta .*\[0, 1\], got delta=1\.5"),
        (dgclip, dict(learning_rate=1.0, weight_decay=-1e-4),
         r"weight_decay must be non-negative \(weight_decay >= 0\), got weight_decay=-0\.0001"),
        (gclip, dict(learning_rate=-1.0), r"learning_rate=-1\.0"),
        (gclip, dict(learning_rate=1.0, gamma=-0.5), r"gamma=-0\.5"),
        (gclip, dict(learning_rate=1.0, weight_decay=-1.0), r"weight_decay=-1\.0"),
        (scale_by_dgclip, dict(gamma=0.0, delta=0.5), r"gamma=0\.0"),
        (scale_by_dgclip, dict(gamma=1.0, delta=2.0), r"delta=2\.0"),
        (scale_by_dgclip, dict(gamma=1.0, delta=0.5, weight_decay=-0.5), r"weight_decay=-0\.5"),
    ],
)
def test_invalid_hyperparameters_raise(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_valid_edge_values_and_non_numbers_are_accepted():
    dgclip(1.0, gamma=1e-12, delta=0.0)
    dgclip(1.0, delta=1.0, weight_decay=0.0)
    dgclip(optax.constant_schedule(0.1))  # a schedule is not checked
    # Arrays (and tracers, see the vmap test) are not checked at construction.
    dgclip(jnp.asarray(0.1), gamma=jnp.asarray(0.5), delta=jnp.asarray(0.1))


def test_missing_params_raise_optax_error():
    params = make_tree(np.random.default_rng(11))
    grads = draw_grads(np.random.default_rng(12), 1.0)
    opt = dgclip(LR, weight_decay=1e-4)
    with pytest.raises(ValueError, match=re.escape(optax._src.base.NO_PARAMS_MSG)):
        opt.update(grads, opt.init(params))
    # Without weight decay params are not needed.
    plain = dgclip(LR)
    without, _ = plain.update(grads, plain.init(params))
    with_, _ = plain.update(grads, plain.init(params), params)
    _assert_updates_close([without], [with_], rtol=0, atol=0)


@pytest.mark.parametrize("module", ["kan_jax.optim.dgclip", "kan_jax.optim.hsodm"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------
# Training a KAN.
# --------------------------------------------------------------------------------------


def test_dgclip_trains_a_small_kan_on_squared_loss():
    """δ-GClip fits f(x1, x2) = sin(pi x1) + x2^2 with a [2, 5, 1] KAN (full batch, MSE).

    300 jitted steps (one lax.scan) with lr 1, gamma 0.1, delta 0.5, wd 1e-4: the start is
    in the floored regime (n > gamma / delta = 0.2), the end in the plain one, so all three
    regimes are visited. Asserted: final loss < 0.05 x initial loss (seeds 0-7 all reach
    0.005-0.008 x initial when this test was written).
    """
    from kan_jax import KAN

    kx, kinit = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (256, 2), F32, -1.0, 1.0)
    y = jnp.sin(jnp.pi * x[:, :1]) + x[:, 1:] ** 2
    model = KAN(layers_hidden=(2, 5, 1))
    variables = jax.jit(model.init)(kinit, x)  # one compilation instead of one per op
    grid = variables["grid"]  # state, not a parameter: never seen by the optimizer

    def loss_fn(params):
        return jnp.mean((model.apply({"params": params, "grid": grid}, x) - y) ** 2)

    delta = 0.5
    tx = dgclip(1.0, gamma=0.1, delta=delta, weight_decay=1e-4)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), (loss, optax.tree.get(state, "factor"))

        (params, _), (losses, factors) = jax.lax.scan(step, (params, tx.init(params)), None, length=300)
        return params, losses, factors

    params, losses, factors = train(variables["params"])
    initial, final = float(losses[0]), float(jax.jit(loss_fn)(params))
    assert all(p.dtype == F32 for p in jax.tree.leaves(params))
    assert np.isfinite(final)
    assert final < 0.05 * initial, (initial, final)
    factors = np.asarray(factors)
    assert np.any(np.isclose(factors, delta, rtol=1e-6))  # floored
    assert np.any((factors > delta * (1 + 1e-6)) & (factors < 1 - 1e-6))  # normalised
    assert np.any(factors == 1.0)  # plain
