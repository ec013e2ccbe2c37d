"""kan_jax.threefry: the unrolled hash against the published test vectors, the draws against
``jax.random.uniform`` bit for bit (conftest enables x64, so float64 is covered too)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kan_jax import threefry


@pytest.mark.parametrize(
    "key, counter, expected",
    [  # Random123's known-answer tests for Threefry-2x32, 20 rounds (Salmon et al. 2011)
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_hash_matches_random123_vectors(key, counter, expected):
    k0, k1 = (jnp.uint32(v) for v in key)
    x0, x1 = (jnp.asarray([v], jnp.uint32) for v in counter)
    y0, y1 = jax.jit(threefry.threefry2x32)(k0, k1, x0, x1)
    assert (int(y0[0]), int(y1[0])) == expected


def _bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(np.atleast_1d(np.asarray(a)).view(np.uint8), np.atleast_1d(np.asarray(b)).view(np.uint8))


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 4), (101, 64, 10)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
def test_uniform_equals_jax_bit_for_bit(shape, dtype):
    for key in (jax.random.key(3), jax.random.PRNGKey(5), jax.random.fold_in(jax.random.key(0), 2**31 + 7)):
        assert threefry.uses_unrolled_hash(key, int(np.prod(shape)))  # the unrolled path runs
        expected = jax.random.uniform(key, shape, dtype, -0.3, 2.0)
        assert _bits_equal(threefry.uniform(key, shape, dtype, -0.3, 2.0), expected)  # eagerly
        traced = jax.jit(lambda k, lo: threefry.uniform(k, shape, dtype, lo, 2.0))(key, jnp.asarray(-0.3, dtype))
        assert _bits_equal(traced, expected)  # under jit, with a traced bound


def test_uniform_defaults_and_array_bounds():
    key = jax.random.key(11)
    assert _bits_equal(threefry.uniform(key, (4, 6)), jax.random.uniform(key, (4, 6)))
    lo, hi = jnp.asarray([[-1.0], [0.0], [2.0]], jnp.float32), jnp.asarray([3.0, 4.0, 5.0, 6.0], jnp.float32)
    got = threefry.uniform(key, (3, 4), jnp.float32, lo, hi)
    assert _bits_equal(got, jax.random.uniform(key, (3, 4), jnp.float32, lo, hi))
    assert bool(jnp.all((got >= lo) & (got < hi)))


def test_other_keys_are_handed_to_jax():
    rbg = jax.random.key(4, impl="rbg")
    batch = jax.random.split(jax.random.key(4), 3)
    assert not threefry.uses_unrolled_hash(rbg, 10)
    assert not threefry.uses_unrolled_hash(batch, 10)
    assert not threefry.uses_unrolled_hash(jax.random.key(4), 2**32)
    assert _bits_equal(threefry.uniform(rbg, (10,)), jax.random.uniform(rbg, (10,)))
    with pytest.raises(Exception):  # as jax.random.uniform: one key, not a batch
        jax.random.uniform(batch, (10,))
    with pytest.raises(Exception):
        threefry.uniform(batch, (10,))


def test_legacy_mode_is_handed_to_jax():
    key = jax.random.key(9)
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        assert not threefry.uses_unrolled_hash(key, 10)
        assert _bits_equal(threefry.uniform(key, (5, 2)), jax.random.uniform(key, (5, 2)))
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
