r"""Uniform draws bit for bit equal to ``jax.random.uniform``, with the Threefry hash unrolled.

JAX lowers the Threefry-2x32 hash on the CPU as a *rolled* loop of five iterations over the
whole array, so XLA:CPU stores both 32-bit state arrays and reads them back in every
iteration. Written out as its 20 rounds, the hash is one elementwise fusion that is
vectorised and never stored; this matters for the large draws of a KAN's initialisation
(efficient-kan's spline noise has ``(G + 1) · in · out`` values).

:func:`uniform` computes exactly what ``jax.random.uniform`` computes for the default
``threefry2x32`` keys in JAX's partitionable mode (``jax_threefry_partitionable``, the default
since JAX 0.5): the counter of element ``m`` (row-major) is the 64-bit ``m`` split into two
32-bit words, the 32-bit draw is the XOR of the two hash outputs (a 64-bit draw their
concatenation), and the float is built from the high mantissa bits as JAX does. Any other
case (another key implementation, the legacy non-partitionable mode, a batch of keys, more
than :math:`2^{32}` values) is handed to ``jax.random.uniform`` itself, so the values never
depend on which path ran.

References:
  J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel random numbers: as easy as
  1, 2, 3", SC 2011 (Threefry-2x32, 20 rounds, rotations 13 15 26 6 / 17 29 16 24).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["threefry2x32", "uniform", "uses_unrolled_hash"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # the key schedule's constant


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
    return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash of the counter pairs ``(x0, x1)`` under the key ``(k0, k1)``, unrolled.

    Args:
      k0: ``uint32`` scalar, the first key word.
      k1: ``uint32`` scalar, the second key word.
      x0: ``uint32`` array, the first counter words.
      x1: ``uint32`` array of the same shape, the second counter words.

    Returns:
      ``(y0, y1)``, ``uint32`` arrays of that shape: 20 rounds with a key injection after
      every 4.
    """
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for block in range(5):
        for rotation in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = x0 ^ _rotate_left(x1, rotation)
        x0 = x0 + schedule[(block + 1) % 3]
        x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def uses_unrolled_hash(key: jax.Array, size: int) -> bool:
    """Whether :func:`uniform` computes ``size`` values from ``key`` itself (else JAX does).

    True for one ``threefry2x32`` key (typed, or a raw ``uint32[2]`` under that default
    implementation) in JAX's partitionable Threefry mode and fewer than :math:`2^{32}` values.
    """
    if not jax.config.jax_threefry_partitionable or size >= 2**32:
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.shape == () and str(jax.random.key_impl(key)) == "threefry2x32"
    return key.dtype == jnp.uint32 and key.shape == (2,) and jax.config.jax_default_prng_impl == "threefry2x32"


def _random_bits(key: jax.Array, bit_width: int, size: int) -> jax.Array:
    # JAX's partitionable Threefry bits of a flat (size,) array.
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    low = lax.iota(jnp.uint32, size)  # element m's counter: the 64-bit m as (high, low) words,
    y0, y1 = threefry2x32(words[0], words[1], jnp.zeros_like(low), low)  # m < 2^32 here
    if bit_width == 64:
        return lax.shift_left(y0.astype(jnp.uint64), np.uint64(32)) | y1.astype(jnp.uint64)
    bits = y0 ^ y1
    return bits if bit_width == 32 else bits.astype({8: jnp.uint8, 16: jnp.uint16}[bit_width])


def uniform(
    key: jax.Array,
    shape: tuple[int, ...] = (),
    dtype: Any = float,
    minval: Any = 0.0,
    maxval: Any = 1.0,
) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, the same bits, the hash unrolled.

    Args:
      key: PRNG key.
      shape: Shape of the result.
      dtype: Floating dtype (16, 32 or 64 bits), canonicalised as JAX does: ``float`` is
        float32, or float64 under ``jax_enable_x64``.
      minval: Lower bound, a scalar or broadcastable array (may be traced).
      maxval: Upper bound, likewise.

    Returns:
      Uniform values in ``[minval, maxval)`` of ``shape`` and ``dtype``.

    Example:
      >>> import jax
      >>> from kan_jax import threefry
      >>> key = jax.random.key(0)
      >>> bool((threefry.uniform(key, (3,)) == jax.random.uniform(key, (3,))).all())
      True
    """
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    canonical = jax.dtypes.canonicalize_dtype(dtype)
    if not jnp.issubdtype(canonical, jnp.floating) or canonical.itemsize not in (2, 4, 8) or not uses_unrolled_hash(key, size):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    return _uniform(key, minval, maxval, shape, canonical)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _uniform(key: jax.Array, minval: Any, maxval: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    # Compiled like JAX's own uniform, so that its product and sum contract alike (into a
    # fused multiply-add where XLA does) also when called eagerly.
    size = math.prod(shape)
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    rng_bits = 8 if nmant < 8 else nbits  # as JAX: at least 8 random bits per value
    uint = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[nbits]
    bits = _random_bits(key, rng_bits, size).astype(uint)
    # Random mantissa under the exponent of 1.0: a float in [1, 2), shifted to [0, 1).
    one_bits = np.array(1.0, dtype).view(uint)
    float_bits = lax.shift_right_logical(bits, np.array(rng_bits - nmant, uint)) | one_bits
    floats = (lax.bitcast_convert_type(float_bits, dtype) - np.array(1.0, dtype)).reshape(shape)
    minval = lax.convert_element_type(minval, dtype)
    maxval = lax.convert_element_type(maxval, dtype)
    return lax.max(minval, floats * (maxval - minval) + minval)
