"""Pure functions of one KAN layer (efficient-kan formulation), shared by the Linen and NNX fronts.

A layer is a parameter dict and a knot grid::

    params = {"base_weight":   (out, in),
              "spline_weight": (in, n, out),      # n = G + k
              "spline_scaler": (in, out)}         # optional
    grid = (in, G + 2k + 1)

``base_weight`` is laid out as in efficient-kan (PyTorch's ``(out, in)``). The two tensors of
the spline branch are stored in the order of its product, inputs first and outputs last:
``spline_weight`` ``(in, n, out)`` and ``spline_scaler`` ``(in, out)``, efficient-kan's
``(out, in, n)`` and ``(out, in)`` transposed. The product, the gather of coefficient rows and
their gradients (the scatter-add) then all work on contiguous ``(in·n, out)`` rows, and an
optimizer's elementwise update reads the gradient in the order it was written (on XLA:CPU the
transposed layouts made Adam's update of a G = 500 layer 3× slower).
:func:`kan_jax.layers.from_efficient_kan` and :func:`kan_jax.layers.to_efficient_kan` convert.

and computes, for ``x`` of shape ``(..., in)``,

.. math::
    y_o = \\sum_i \\operatorname{silu}(x_i)\\, W_{b,oi}
        + \\sum_i s_{io} \\sum_j B_j(x_i)\\, W_{s,ijo},

``B`` being the order-``k`` B-spline bases on input ``i``'s knot row
(:mod:`kan_jax.splines`). Only ``k + 1`` of the ``n`` bases are non-zero at any point, so the
spline branch has two exact formulations (:func:`spline_branch`):

* ``"dense"``: the full ``(B, in·n)`` basis matrix times the ``(in·n, out)`` scaled weights,
  one matrix product (efficient-kan's formulation; its cost grows with ``n``);
* ``"local"``: for every ``(sample, input)`` the ``k + 1`` coefficient columns of the interval
  the input falls in are gathered and combined with the ``k + 1`` local basis values (work
  proportional to ``k + 1``, not to ``n``; the gradient is the matching scatter-add, which sums
  over all samples that fall into the same interval).

:func:`choose_spline_strategy` picks one by a cost rule measured per backend; the layer
configuration's ``spline_strategy`` overrides it. The grid is state, not a parameter: it is an
argument of every function here and never differentiated. Internals are compiled with only
integers, shapes, dtypes and strategy names static (floats are traced, callables such as the
base activation are applied outside), so they cost one compilation per layer shape when
called eagerly and inline into the caller's program under ``jit``; the size of every program
is independent of the grid size.

References
----------
Z. Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024).
Blealtan, *efficient-kan* (PyTorch implementation of the same layer).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kan_jax import splines, threefry

__all__ = [
    "KANLayerConfig",
    "PARAM_OUTPUT_AXIS",
    "SPLINE_STRATEGIES",
    "DENSE_MAX_BASES_PER_WINDOW",
    "UNROLLED_MAX_BASES_AUTO",
    "DENSE_TRANSPOSED_MAX_OUT",
    "choose_spline_strategy",
    "kaiming_uniform",
    "init_spline_weight",
    "init_layer",
    "init_layer_with_output",
    "spline_order_of",
    "scaled_spline_weight",
    "spline_branch",
    "layer_apply",
    "layer_update_grid",
    "layer_regularization_loss",
]

Params = Mapping[str, jax.Array]
Dtype = Any

#: Formulations of the spline branch; ``"auto"`` chooses by :func:`choose_spline_strategy`.
SPLINE_STRATEGIES = ("auto", "unrolled", "dense", "local")

#: The axis of each layer parameter that indexes the layer's outputs (the layouts above):
#: efficient-kan's ``(out, in)`` for ``base_weight``, the last axis of ``spline_weight``
#: ``(in, n, out)`` and ``spline_scaler`` ``(in, out)``. Model sharding, filter normalisation
#: and pruning read it.
PARAM_OUTPUT_AXIS: dict[str, int] = {"base_weight": 0, "spline_weight": -1, "spline_scaler": -1}

#: Cost rule of ``"auto"``: the dense product is used while ``n = G + k`` is at most this
#: many times the ``k + 1`` non-zero bases per input (backend name -> factor). The CPU value
#: is the crossover measured on a 2-core CPU, k = 3, one Adam step inside a scan
#: (``benchmarks/RESULTS.md``): for the [784, 64, 10] KAN at batch 64 the dense step is faster
#: up to G = 160 (29 against 40 ms) and slower from G = 170 (47 against 42 ms; XLA:CPU's dot
#: slows down by half past there); for FlashKAN's [784, 10] at batch 200 the gather already
#: wins from about G = 60 (17 against 21 ms at G = 100). 42 (dense up to G = 165) favours the
#: study's shape; a layer's ``spline_strategy`` overrides it. The GPU/TPU values are not
#: measured yet (gathers are cheap there, so the crossover is expected lower); other backends
#: use the CPU value.
DENSE_MAX_BASES_PER_WINDOW: dict[str, float] = {"cpu": 42.0, "gpu": 16.0, "tpu": 16.0}

#: Layout of the dense product for narrow layers (backend name -> outputs; other backends: 0,
#: never): with fewer outputs than this, ``"dense"`` and ``"unrolled"`` multiply the bases by
#: the weight turned to ``(out, in·n)`` (efficient-kan's orientation) instead of reading it as
#: ``(in·n, out)``, so that XLA:CPU's product and weight gradient work on ``out`` long rows
#: rather than ``in·n`` rows of a few elements. Measured on a 2-core CPU, one Adam step inside
#: a scan: FlashKAN's [784, 10] at batch 200 takes 1.52–1.62 ms instead of 1.93–1.98 at G = 10
#: (unrolled) and 16.2–16.7 ms instead of 18.8–19.3 at G = 100 (dense); for the study's
#: [784, 64, 10] at batch 64 the 64-output layer is 50% slower that way at G = 100 (26 against
#: 17 ms), so it keeps the ``(in·n, out)`` product, and the step is unchanged.
DENSE_TRANSPOSED_MAX_OUT: dict[str, int] = {"cpu": 32}

#: Cost rule of ``"auto"`` for small grids: the dense product on bases computed by the recursion
#: unrolled over the bases (:func:`kan_jax.splines.unrolled_bases`) while ``n = G + k`` is at
#: most this (backend name -> bases; 0: never). The CPU value is from
#: ``benchmarks/epoch_strategies.py`` on a 2-core CPU ([784, 64, 10], batch 64, k = 3): a
#: training epoch 1.64× faster than dense at G = 5 and 1.6× at G = 10, 1.3× at G = 20 but
#: compiling in 4.4 s there (6 s at G = 30, slower than dense from G = 45), so the cap keeps
#: compilation near 2.5 s; the GPU/TPU values are not measured yet.
UNROLLED_MAX_BASES_AUTO: dict[str, int] = {"cpu": 16, "gpu": 0, "tpu": 0}


@dataclasses.dataclass(frozen=True)
class KANLayerConfig:
    """Configuration of a KAN layer, validated on construction (shared by the Linen and NNX fronts).

    Attributes
    ----------
    grid_size:
        Intervals ``G >= 1`` of the initial uniform grid over ``grid_range``. (After a grid
        refinement the actual size is read from the variables.)
    spline_order:
        Order ``k >= 0`` of the splines.
    scale_noise:
        Size of the initial spline noise, ``>= 0`` (efficient-kan's ``scale_noise``).
    scale_base, scale_spline:
        Kaiming-uniform gains of ``base_weight`` and ``spline_scaler``, ``>= 0``.
    enable_standalone_scale_spline:
        Whether to learn a per-edge ``spline_scaler`` (efficient-kan's default).
    base_activation:
        Activation of the residual branch (SiLU).
    grid_eps:
        Uniform share of the grid in grid updates, in ``[0, 1]`` (``0``: sample quantiles).
    grid_range:
        ``(lo, hi)`` of the initial grid, ``hi > lo``.
    spline_strategy:
        ``"auto"`` (by :func:`choose_spline_strategy`), ``"unrolled"`` (small grids only),
        ``"dense"`` or ``"local"``.
    dtype:
        Computation dtype (``None``: promotion of the input and parameter dtypes).
    param_dtype:
        Dtype of the parameters and the grid.

    Examples
    --------
    >>> from kan_jax.functional import KANLayerConfig
    >>> KANLayerConfig(grid_size=10).spline_order
    3
    >>> KANLayerConfig(grid_size=0)
    Traceback (most recent call last):
    ...
    ValueError: grid_size must be an integer >= 1, got 0
    """

    grid_size: int = 5
    spline_order: int = 3
    scale_noise: float = 0.1
    scale_base: float = 1.0
    scale_spline: float = 1.0
    enable_standalone_scale_spline: bool = True
    base_activation: Callable[[jax.Array], jax.Array] = jax.nn.silu
    grid_eps: float = 0.02
    grid_range: tuple[float, float] = (-1.0, 1.0)
    spline_strategy: str = "auto"
    dtype: Optional[Dtype] = None
    param_dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        splines.validate_grid_args(self.grid_size, self.spline_order, self.grid_range)
        for name in ("scale_noise", "scale_base", "scale_spline"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 <= self.grid_eps <= 1.0:
            raise ValueError(f"grid_eps must be in [0, 1], got {self.grid_eps!r}")
        if self.spline_strategy not in SPLINE_STRATEGIES:
            raise ValueError(f"spline_strategy must be one of {SPLINE_STRATEGIES}, got {self.spline_strategy!r}")
        if not callable(self.base_activation):
            raise ValueError(f"base_activation must be callable, got {self.base_activation!r}")
        # Canonical, hashable values (the configuration is static data under jit).
        object.__setattr__(self, "grid_size", int(self.grid_size))
        object.__setattr__(self, "spline_order", int(self.spline_order))
        object.__setattr__(self, "grid_range", (float(self.grid_range[0]), float(self.grid_range[1])))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the configuration fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "KANLayerConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


def choose_spline_strategy(n_bases: int, spline_order: int, backend: Optional[str] = None) -> str:
    """The cheaper exact formulation of the spline branch: ``"unrolled"``, ``"dense"`` or ``"local"``.

    ``"dense"`` multiplies all ``n`` bases per input, ``"local"`` gathers the ``k + 1`` that are
    non-zero; the dense product wins while ``n <= c · (k + 1)``, with ``c`` the backend's
    entry of :data:`DENSE_MAX_BASES_PER_WINDOW` (the measured crossover). For small grids,
    ``n <=`` the backend's entry of :data:`UNROLLED_MAX_BASES_AUTO`, the dense product takes
    its bases from :func:`kan_jax.splines.unrolled_bases` (``"unrolled"``), whose program grows
    with ``n`` but stays small there.

    Parameters
    ----------
    n_bases:
        Bases per input, ``n = G + k``.
    spline_order:
        Order ``k``.
    backend:
        ``"cpu"``, ``"gpu"``, ``"tpu"``; by default ``jax.default_backend()``.
    """
    backend = jax.default_backend() if backend is None else backend
    if n_bases <= UNROLLED_MAX_BASES_AUTO.get(backend, UNROLLED_MAX_BASES_AUTO["cpu"]):
        return "unrolled"
    factor = DENSE_MAX_BASES_PER_WINDOW.get(backend, DENSE_MAX_BASES_PER_WINDOW["cpu"])
    return "dense" if n_bases <= factor * (spline_order + 1) else "local"


def kaiming_uniform(a: float) -> Callable[..., jax.Array]:
    r"""PyTorch's ``kaiming_uniform_(w, a)`` for a weight of shape ``(out, in)``.

    Uniform on :math:`\pm\sqrt{6 / ((1 + a^2)\, \mathrm{in})}`, i.e. ``nn.Linear``'s default
    :math:`\pm 1/\sqrt{\mathrm{in}}` for :math:`a = \sqrt 5`. ``a`` may be a traced scalar.
    """

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        bound = jnp.sqrt(6.0 / ((1.0 + a * a) * shape[-1])).astype(dtype)
        return _uniform(key, shape, dtype, -bound, bound)

    return init


def _uniform(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, minval: Any = 0.0, maxval: Any = 1.0) -> jax.Array:
    # jax.random.uniform(key, shape, ...), bit for bit, with the Threefry hash unrolled (four
    # times faster on the CPU, see kan_jax.threefry); drawn flat and reshaped, which XLA:CPU
    # compiles several times faster for some shapes (0.86 s against 0.13 s for (8, 64, 10)).
    return threefry.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def init_spline_weight(
    key: jax.Array,
    grid_row: jax.Array,
    in_features: int,
    out_features: int,
    spline_order: int,
    scale_noise: float = 0.1,
    scale: float = 1.0,
    dtype: Dtype = jnp.float32,
) -> jax.Array:
    r"""efficient-kan's spline initialisation: a least-squares fit of small uniform noise.

    Noise ``(U(0, 1) - 1/2) * scale_noise / G`` is drawn at the ``G + 1`` interior knots of
    every edge and fitted, in the minimum-norm least-squares sense (the system being
    under-determined for ``k > 1``), by splines on the knot row ``grid_row`` that every input
    shares at initialisation; the result is multiplied by ``scale``. Because the row is
    shared, one operator :math:`A^+` (the pseudo-inverse of the ``(G + 1, G + k)`` collocation
    matrix :math:`A_{rj} = B_j(t_{k+r})`) serves all ``in · out`` edges. For a concrete row
    (the usual case, also under an outer ``jit``: the row comes from the static
    configuration) it is factored once on the host in float64 NumPy and cached, so nothing
    grid-dependent is compiled: with distinct interior knots as
    :math:`A^\top (L L^\top)^{-1}`, :math:`L` the banded Cholesky factor of :math:`A A^\top`
    (two banded triangular solves, work linear in ``G``), otherwise as the dense :math:`A^+`.
    A traced row is fitted inside the program with ``jnp.linalg.pinv``.

    Parameters
    ----------
    key:
        PRNG key.
    grid_row:
        Knots shared by every input, shape ``(G + 2k + 1,)``.
    in_features, out_features:
        Layer widths.
    spline_order:
        Order ``k``.
    scale_noise, scale:
        Noise size and final factor (traced: new values do not recompile).
    dtype:
        Dtype of the result (the fit runs in at least float32).

    Returns
    -------
    jax.Array
        Shape ``(in, G + k, out)``, the layout of ``spline_weight``.
    """
    k = int(spline_order)
    grid_size = grid_row.shape[-1] - 2 * k - 1
    if grid_row.ndim != 1 or grid_size < 1:
        raise ValueError(f"grid_row must be one knot row of G + 2k + 1 >= 2k + 2 knots (k={k}), got shape {grid_row.shape}")
    fit_dtype = jnp.promote_types(dtype, jnp.float32)  # half precision fits in float32
    fit = _fit_operator(grid_row, k, fit_dtype)
    return _fit_noise(
        key, fit, jnp.asarray(scale_noise, fit_dtype), jnp.asarray(scale, fit_dtype),
        in_features=int(in_features), out_features=int(out_features), dtype=jnp.dtype(dtype),
    )


def _fit_operator(grid_row: jax.Array, k: int, dtype: Dtype) -> dict[str, jax.Array]:
    """The minimum-norm least-squares fit at the interior knots of ``grid_row``, as arrays.

    Either ``{"pinv": (G + k, G + 1)}``, the pseudo-inverse :math:`A^+` of the collocation
    matrix (traced rows, rank-deficient rows), or the bands of the factors of
    :math:`A^+ = A^\\top (A A^\\top)^{-1}` (a concrete row of distinct interior knots, the case
    of every initialisation): see :func:`_host_banded_fit`.
    """
    if isinstance(grid_row, jax.core.Tracer):
        row = grid_row.astype(dtype)
        a = splines.b_spline_bases(row[k : row.shape[0] - k, None], row, k)[:, 0, :]  # (G + 1, G + k)
        return {"pinv": jnp.linalg.pinv(a)}
    knots = tuple(np.asarray(grid_row, np.float64).tolist())
    banded = _host_banded_fit(knots, k)
    if banded is None:
        return {"pinv": jnp.asarray(_host_pseudo_inverse(knots, k), dtype)}
    return {name: jnp.asarray(value, dtype) for name, value in banded.items()}


def _host_collocation(knots: tuple[float, ...], k: int) -> np.ndarray:
    """Float64 collocation matrix ``A_rj = B_j(t_{k+r})``, ``(G + 1, G + k)``, at the interior knots."""
    t = np.asarray(knots)
    x = t[k : t.size - k, None]  # (G + 1, 1): the interior knots
    bases = ((x >= t[:-1]) & (x < t[1:])).astype(np.float64)  # order 0, (G + 1, M - 1)
    for p in range(1, k + 1):  # Cox-de Boor, a knot span of zero contributing nothing
        left_span, right_span = t[p:-1] - t[: -p - 1], t[p + 1 :] - t[1:-p]
        left = np.divide(x - t[: -p - 1], left_span, out=np.zeros_like(bases[:, 1:]), where=left_span > 0)
        right = np.divide(t[p + 1 :] - x, right_span, out=np.zeros_like(bases[:, 1:]), where=right_span > 0)
        bases = left * bases[:, :-1] + right * bases[:, 1:]
    return bases


@functools.lru_cache(maxsize=32)
def _host_pseudo_inverse(knots: tuple[float, ...], k: int) -> np.ndarray:
    """Float64 pseudo-inverse ``(G + k, G + 1)`` of the collocation matrix at the interior knots."""
    return np.linalg.pinv(_host_collocation(knots, k))


@functools.lru_cache(maxsize=32)
def _host_banded_fit(knots: tuple[float, ...], k: int) -> Optional[dict[str, np.ndarray]]:
    r"""Bands of the factors of the minimum-norm fit, or ``None`` where they do not apply.

    Row ``r`` of the collocation matrix :math:`A` ``(G + 1, n)`` is non-zero only in columns
    ``r .. r + k`` (the bases whose support holds :math:`t_{k+r}`), so :math:`A A^\top` has
    bandwidth ``k`` and so has its Cholesky factor :math:`L`. With distinct interior knots
    :math:`A` has full row rank (Schoenberg-Whitney), and the minimum-norm solution of
    :math:`A c = y` is :math:`c = A^\top w` with :math:`L L^\top w = y`: two banded triangular
    solves and a banded product, :math:`O(G k)` per fitted column instead of the
    :math:`O(G^2)` of the dense :math:`A^+` (at G = 1000 and 50,176 columns, 0.6 G instead
    of 50 G multiply-adds).

    Returns the float64 bands ``a_band[r, e] = A[r, r + e]``, ``l_band[r, d] = L[r, r - d]``
    and ``l_up[r, d] = L[r + d, r]``, each ``(G + 1, k + 1)`` and zero outside the matrices;
    or ``None`` if :math:`A` has entries outside the band, or :math:`A A^\top` is singular
    (repeated interior knots) or too ill-conditioned for the factors to interpolate probe
    columns to 1e-9 in float64: the dense pseudo-inverse is used then.
    """
    a = _host_collocation(knots, k)
    rows, n = a.shape
    r_idx, c_idx = np.nonzero(a)
    if np.any(c_idx < r_idx) or np.any(c_idx > r_idx + k):
        return None
    try:
        chol = np.linalg.cholesky(a @ a.T)
    except np.linalg.LinAlgError:
        return None
    # Certify the factorisation on probe columns: the fit must interpolate them (full row rank),
    # which an ill-conditioned A A^T (nearly coincident knots) would spoil.
    probe = np.random.default_rng(0).standard_normal((rows, 4))
    fitted = a @ (a.T @ np.linalg.solve(chol.T, np.linalg.solve(chol, probe)))
    if not np.all(np.isfinite(fitted)) or np.abs(fitted - probe).max() > 1e-9 * np.abs(probe).max():
        return None
    r = np.arange(rows)
    a_band, l_band, l_up = (np.zeros((rows, k + 1)) for _ in range(3))
    for d in range(k + 1):
        ok = r + d < n
        a_band[r[ok], d] = a[r[ok], r[ok] + d]
        ok = r >= d
        l_band[r[ok], d] = chol[r[ok], r[ok] - d]
        ok = r + d < rows
        l_up[r[ok], d] = chol[r[ok] + d, r[ok]]
    return {"a_band": a_band, "l_band": l_band, "l_up": l_up}


def _apply_fit(fit: dict[str, jax.Array], y: jax.Array) -> jax.Array:
    """The minimum-norm fit ``A^+ y`` of the columns of ``y`` ``(G + 1, N)``: shape ``(G + k, N)``."""
    if "pinv" in fit:
        return fit["pinv"] @ y
    a_band, l_band, l_up = fit["a_band"], fit["l_band"], fit["l_up"]
    rows, width = a_band.shape  # G + 1, k + 1

    def substitute(previous, row):  # one row of a banded triangular solve
        rhs, l_row = row  # previous[d - 1]: the solution d rows back (forward) or ahead (backward)
        value = (rhs - l_row[1:] @ previous) / l_row[0]
        return jnp.concatenate([value[None], previous[:-1]]), value

    start = jnp.zeros((width - 1, y.shape[1]), y.dtype)
    _, z = lax.scan(substitute, start, (y, l_band))  # L z = y
    _, w = lax.scan(substitute, start, (z, l_up), reverse=True)  # L^T w = z
    c = jnp.zeros((rows + width - 1, y.shape[1]), y.dtype)
    for e in range(width):  # c_j = sum_e A[j - e, j] w_{j-e}
        c = c.at[e : e + rows].add(a_band[:, e : e + 1] * w)
    return c[: rows + width - 2]  # the n = G + k coefficients


@functools.partial(jax.jit, static_argnames=("in_features", "out_features", "dtype"))
def _fit_noise(
    key: jax.Array,
    fit: dict[str, jax.Array],
    scale_noise: jax.Array,
    scale: jax.Array,
    *,
    in_features: int,
    out_features: int,
    dtype: Dtype,
) -> jax.Array:
    # fit: from _fit_operator; returns scale * A^+ noise as (in, G + k, out).
    fit_dtype = jax.tree.leaves(fit)[0].dtype
    points = fit["pinv"].shape[1] if "pinv" in fit else fit["a_band"].shape[0]
    noise = _uniform(key, (points, in_features, out_features), fit_dtype)
    noise = (noise - 0.5) * scale_noise / (points - 1)
    coeff = _apply_fit(fit, noise.reshape(points, -1))
    coeff = coeff.reshape(coeff.shape[0], in_features, out_features)
    return (scale * jnp.swapaxes(coeff, 0, 1)).astype(dtype)


@functools.partial(jax.jit, static_argnames=("in_features", "out_features", "own_scaler", "dtype"))
def _init_params(
    key: jax.Array,
    fit: dict[str, jax.Array],
    scale_noise: jax.Array,
    scale_base: jax.Array,
    scale_spline: jax.Array,
    *,
    in_features: int,
    out_features: int,
    own_scaler: bool,
    dtype: Dtype,
) -> dict[str, jax.Array]:
    # One small compiled program per layer shape: random draws and the spline fit ``fit`` of
    # the noise (its factors computed on the host); the scales are traced.
    fit_dtype = jax.tree.leaves(fit)[0].dtype
    k_base, k_spline, k_scaler = jax.random.split(key, 3)
    sqrt5 = math.sqrt(5.0)
    scale = jnp.float32(1.0) if own_scaler else scale_spline
    params = {
        "base_weight": kaiming_uniform(sqrt5 * scale_base)(k_base, (out_features, in_features), dtype),
        "spline_weight": _fit_noise(
            k_spline, fit, scale_noise.astype(fit_dtype), scale.astype(fit_dtype),
            in_features=in_features, out_features=out_features, dtype=dtype,
        ),
    }
    if own_scaler:
        # Drawn as (out, in) (fan-in and bits as efficient-kan's layout), stored as (in, out).
        params["spline_scaler"] = kaiming_uniform(sqrt5 * scale_spline)(k_scaler, (out_features, in_features), dtype).T
    return params


def init_layer(
    key: jax.Array,
    in_features: int,
    out_features: int,
    config: Optional[KANLayerConfig] = None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Parameters and grid of a fresh layer, with efficient-kan's distributions.

    The one initialisation both fronts use: ``base_weight`` and ``spline_scaler``
    Kaiming-uniform with ``a = sqrt(5) * scale``; ``spline_weight`` by
    :func:`init_spline_weight` (times ``scale_spline`` when there is no separate scaler).
    Compiled once per layer shape; the configuration's floats are traced.

    Parameters
    ----------
    key:
        PRNG key (split into one key per parameter).
    in_features, out_features:
        Layer widths, ``>= 1``.
    config:
        Layer configuration (default ``KANLayerConfig()``).

    Returns
    -------
    (params, grid)
        ``params`` as in the module docstring, ``grid`` of shape ``(in, G + 2k + 1)``.
    """
    config = KANLayerConfig() if config is None else config
    grid, args, static = _init_arguments(in_features, out_features, config)
    return _init_params(key, *args, **static), grid


def init_layer_with_output(
    key: jax.Array,
    x: jax.Array,
    out_features: int,
    config: Optional[KANLayerConfig] = None,
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """:func:`init_layer` for ``in = x.shape[-1]`` and :func:`layer_apply` on ``x``, one program.

    What Linen's ``init`` runs: compiling the initialisation and the forward pass as one
    program is faster than compiling them one after the other. The output is computed with
    the layer's strategy, except that the dense product replaces the unrolled bases (the
    same values to rounding; it compiles 0.45 s faster at G = 10).

    Returns
    -------
    (params, grid, y)
        As :func:`init_layer`, and the layer's output of shape ``(..., out)``.
    """
    config = KANLayerConfig() if config is None else config
    if x.ndim < 1:
        raise ValueError("a KAN layer expects inputs of shape (..., in_features), got a scalar")
    grid, args, static = _init_arguments(x.shape[-1], out_features, config)
    dtype = config.dtype if config.dtype is not None else jnp.result_type(x, static["dtype"])
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    strategy = config.spline_strategy
    n_bases = config.grid_size + config.spline_order
    if strategy == "unrolled" or (strategy == "auto" and choose_spline_strategy(n_bases, config.spline_order) == "unrolled"):
        strategy = "dense"
    params, y = _init_params_and_output(
        key, *args, jnp.asarray(grid), x2, config.base_activation(x2), strategy=strategy, **static
    )
    return params, grid, y.reshape(*x.shape[:-1], static["out_features"])


def _init_arguments(
    in_features: int, out_features: int, config: KANLayerConfig
) -> tuple[np.ndarray, tuple[jax.Array, ...], dict[str, Any]]:
    # The grid, the traced arguments and the static ones of _init_params.
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    dtype = jnp.dtype(config.param_dtype)
    grid = splines.uniform_grid(config.grid_size, config.spline_order, config.grid_range, int(in_features), dtype)
    # The fit's knot row stays on the host: reading a device array back would wait for the
    # computations already dispatched (the previous layer's initialisation, under Linen's init).
    row = splines.uniform_knots_host(config.grid_size, config.spline_order, config.grid_range, dtype)
    args = (
        _fit_operator(row, config.spline_order, jnp.promote_types(dtype, jnp.float32)),
        jnp.float32(config.scale_noise),
        jnp.float32(config.scale_base),
        jnp.float32(config.scale_spline),
    )
    static = dict(
        in_features=int(in_features),
        out_features=int(out_features),
        own_scaler=bool(config.enable_standalone_scale_spline),
        dtype=dtype,
    )
    return grid, args, static


@functools.partial(jax.jit, static_argnames=("in_features", "out_features", "own_scaler", "dtype", "strategy"))
def _init_params_and_output(
    key: jax.Array,
    fit: dict[str, jax.Array],
    scale_noise: jax.Array,
    scale_base: jax.Array,
    scale_spline: jax.Array,
    grid: jax.Array,
    x: jax.Array,
    activated: jax.Array,
    *,
    in_features: int,
    out_features: int,
    own_scaler: bool,
    dtype: Dtype,
    strategy: str,
) -> tuple[dict[str, jax.Array], jax.Array]:
    params = _init_params(
        key, fit, scale_noise, scale_base, scale_spline,
        in_features=in_features, out_features=out_features, own_scaler=own_scaler, dtype=dtype,
    )
    return params, _layer_sum(params, grid, x, activated, strategy)


def spline_order_of(params: Params, grid: jax.Array) -> int:
    """Spline order ``k = M - n - 1`` of a layer from its ``M`` knots and ``n`` bases per input."""
    w = params["spline_weight"]
    if w.ndim != 3:
        raise ValueError(f"spline_weight must have shape (in, n, out), got {tuple(w.shape)}")
    base = params.get("base_weight")
    if base is not None and tuple(base.shape) != (w.shape[2], w.shape[0]):
        raise ValueError(
            f"spline_weight of shape {tuple(w.shape)} does not match base_weight of shape (out, in) = "
            f"{tuple(base.shape)}: expected spline_weight (in={base.shape[1]}, n, out={base.shape[0]}) "
            "(efficient-kan's (out, in, n) converts with jnp.transpose(w, (1, 2, 0)))"
        )
    scaler = params.get("spline_scaler")
    if scaler is not None and tuple(scaler.shape) != (w.shape[0], w.shape[2]):
        raise ValueError(
            f"spline_scaler must have shape (in={w.shape[0]}, out={w.shape[2]}), got {tuple(scaler.shape)} "
            "(efficient-kan's (out, in) converts with its transpose)"
        )
    if grid.ndim != 2 or grid.shape[0] != w.shape[0]:
        raise ValueError(
            f"grid must have shape (in={w.shape[0]}, M) for spline_weight of shape (in, n, out) = "
            f"{tuple(w.shape)}, got {tuple(grid.shape)}"
        )
    k = grid.shape[-1] - w.shape[1] - 1
    if k < 0:
        raise ValueError(
            f"grid with {grid.shape[-1]} knots per input cannot carry {w.shape[1]} bases "
            f"(need at least {w.shape[1] + 1} knots)"
        )
    return k


def scaled_spline_weight(params: Params) -> jax.Array:
    """``W_s,ijo · s_io`` of shape ``(in, n, out)`` (``spline_weight`` itself without a scaler)."""
    w = params["spline_weight"]
    scaler = params.get("spline_scaler")
    return w if scaler is None else w * scaler[:, None, :]


def _gather_windows(w: jax.Array, start: jax.Array, width: int) -> jax.Array:
    """``w[i, start[b, i] + q, :]`` for every ``(b, i)`` and ``q < width``: shape ``(B, in, width, out)``.

    The ``(in, n, out)`` weight is viewed as an ``(in · n, out)`` table, so each window is one
    contiguous ``(width, out)`` block; the transpose of this gather (its gradient) is a
    scatter-add of the same blocks in the parameter's own layout, which sums the contributions
    of all samples in the same interval.
    """
    in_features, n, out_features = w.shape
    table = w.reshape(in_features * n, out_features)
    first_row = (jnp.arange(in_features, dtype=start.dtype) * n + start)[..., None]  # (B, in, 1)
    dims = lax.GatherDimensionNumbers(offset_dims=(2, 3), collapsed_slice_dims=(), start_index_map=(0,))
    # start is clipped into [0, n - width]: every window lies inside its input's rows.
    return lax.gather(
        table, first_row, dims, slice_sizes=(width, out_features), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
    )


@functools.partial(jax.jit, static_argnames=("strategy",))
def spline_branch(params: Params, grid: jax.Array, x: jax.Array, strategy: str = "auto") -> jax.Array:
    r"""The spline branch :math:`\sum_i s_{io} \sum_j B_j(x_i) W_{s,ijo}` of a layer.

    Parameters
    ----------
    params, grid:
        The layer, as in the module docstring.
    x:
        Inputs, shape ``(B, in)``, in the computation dtype.
    strategy:
        ``"unrolled"``, ``"dense"``, ``"local"`` or ``"auto"`` (:func:`choose_spline_strategy`);
        all give the same values and gradients up to rounding.

    Returns
    -------
    jax.Array
        Shape ``(B, out)``.
    """
    k = spline_order_of(params, grid)
    w = params["spline_weight"].astype(x.dtype)
    in_features, n, out_features = w.shape
    if strategy == "auto":
        strategy = choose_spline_strategy(n, k)
    if strategy in ("dense", "unrolled"):
        if strategy == "dense":
            bases = splines.basis_matrix(x, grid.astype(x.dtype), k)
        else:
            bases = splines.unrolled_bases(x, grid.astype(x.dtype), k).reshape(x.shape[0], -1)
        w_scaled = scaled_spline_weight({**params, "spline_weight": w}).astype(x.dtype)
        if out_features < DENSE_TRANSPOSED_MAX_OUT.get(jax.default_backend(), 0):
            # Narrow layers: the product against the weight turned to (out, in * n), so that
            # the weight gradient comes out as out long rows.
            w_t = jnp.transpose(w_scaled, (2, 0, 1)).reshape(out_features, -1)
            return lax.dot_general(bases, w_t, (((1,), (1,)), ((), ())))
        # (B, in * n) @ (in * n, out), the weight in its own layout: no transposes.
        return jnp.dot(bases, w_scaled.reshape(-1, out_features))
    if strategy != "local":
        raise ValueError(f"strategy must be one of {SPLINE_STRATEGIES}, got {strategy!r}")
    return jnp.sum(_spline_outputs_per_edge({**params, "spline_weight": w}, grid.astype(x.dtype), x), axis=1)


def _check_input(grid: jax.Array, x: jax.Array) -> None:
    if x.ndim < 1 or x.shape[-1] != grid.shape[0]:
        raise ValueError(
            f"KAN layer expects inputs with last dimension in_features={grid.shape[0]}, "
            f"got an input of shape {tuple(x.shape)}"
        )


def layer_apply(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    config: Optional[KANLayerConfig] = None,
) -> jax.Array:
    """Forward pass of one layer.

    Parameters
    ----------
    params, grid:
        As in the module docstring; the spline order is read from their shapes.
    x:
        Inputs, shape ``(..., in)``; leading dimensions are flattened and restored.
    config:
        Uses ``base_activation``, ``dtype`` and ``spline_strategy`` (default
        ``KANLayerConfig()``: SiLU, promoted dtype, automatic strategy).

    Returns
    -------
    jax.Array
        Shape ``(..., out)``.
    """
    config = KANLayerConfig() if config is None else config
    _check_input(grid, x)
    w_base = params["base_weight"]
    dtype = config.dtype if config.dtype is not None else jnp.result_type(x, w_base)
    x2 = x.reshape(-1, x.shape[-1]).astype(dtype)
    y = _layer_sum(params, grid, x2, config.base_activation(x2), config.spline_strategy)
    return y.reshape(*x.shape[:-1], w_base.shape[0])


@functools.partial(jax.jit, static_argnames=("strategy",))
def _layer_sum(params: Params, grid: jax.Array, x: jax.Array, activated: jax.Array, strategy: str) -> jax.Array:
    # Base branch (on the activated inputs) plus spline branch, one program when called eagerly.
    return jnp.dot(activated, params["base_weight"].astype(x.dtype).T) + spline_branch(params, grid, x, strategy)


def _spline_outputs_per_edge(params: Params, grid: jax.Array, x: jax.Array) -> jax.Array:
    """``y[b, i, o] = s_io · sum_j B_j(x_bi) W_ijo`` from the local bases: shape ``(B, in, out)``."""
    k = spline_order_of(params, grid)
    start, values = splines.local_bases(x, grid, k)
    windows = _gather_windows(params["spline_weight"].astype(x.dtype), start, k + 1)
    y = jnp.einsum("biq,biqo->bio", values, windows)
    scaler = params.get("spline_scaler")
    return y if scaler is None else y * scaler.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("grid_size", "spline_order"))
def layer_update_grid(
    params: Params,
    grid: jax.Array,
    x: jax.Array,
    *,
    spline_order: Optional[int] = None,
    grid_size: Optional[int] = None,
    grid_eps: float = 0.02,
    margin: float = 0.01,
) -> tuple[dict[str, jax.Array], jax.Array]:
    r"""Adapt the grid to samples and refit the splines so the layer's function is kept.

    The per-edge spline outputs :math:`y_{b,i,o} = s_{io} \sum_j B_j(x_{b,i})\, W_{s,ijo}`
    on the samples are computed on the old grid (from the local bases); the new grid is
    :func:`kan_jax.splines.adaptive_grid` of the samples (``grid_size`` intervals, by default
    the current ``G``: a grid *update*; another value refines or coarsens the grid, pykan's
    ``refine``); the scaled coefficients on it are the least-squares fit of ``y``. Unlike
    efficient-kan, which stores the fitted *scaled* weight as the raw weight (so the scaler is
    applied twice afterwards), the raw weight is the fit divided by ``spline_scaler`` (0 where
    the scaler is 0), so ``scaled_spline_weight`` equals the fit. The base branch is unchanged.
    The layer's outputs on the samples are kept up to the least-squares residual, which is zero
    when the old spline lies in the new spline space (e.g. the same grid, or a nested finer one).

    Parameters
    ----------
    params, grid:
        The layer, as in the module docstring (the spline order is read from the shapes).
    x:
        Samples, shape ``(..., in)``.
    spline_order:
        Optional check: the order the caller expects (an error if the shapes say otherwise).
    grid_size:
        Intervals of the new grid (static); ``None`` keeps the current size.
    grid_eps, margin:
        See :func:`kan_jax.splines.adaptive_grid`.

    Returns
    -------
    (params, grid)
        New parameters (only ``spline_weight`` changes, and changes shape iff ``grid_size``
        does) and the new grid ``(in, grid_size + 2k + 1)``.
    """
    _check_input(grid, x)
    k = spline_order_of(params, grid)
    if spline_order is not None and spline_order != k:
        raise ValueError(f"spline_order={spline_order} does not match the layer's shapes (order {k})")
    w = params["spline_weight"]
    if grid_size is None:
        grid_size = w.shape[1] - k
    splines.validate_grid_args(grid_size, k)
    fit_dtype = jnp.promote_types(w.dtype, jnp.float32)  # LAPACK has no half-precision lstsq
    x2 = x.reshape(-1, x.shape[-1]).astype(fit_dtype)
    fit_params = {name: value.astype(fit_dtype) for name, value in params.items()}
    y = _spline_outputs_per_edge(fit_params, grid.astype(fit_dtype), x2)
    new_grid = splines.adaptive_grid(x2, grid_size, k, grid_eps, margin)
    fitted = splines.fit_spline_coefficients(x2, y, new_grid, k)
    new_grid = new_grid.astype(grid.dtype)
    scaler = params.get("spline_scaler")
    if scaler is not None:
        s = scaler[:, None, :].astype(fit_dtype)
        fitted = jnp.where(s == 0, 0.0, fitted / jnp.where(s == 0, 1.0, s))
    new_params = dict(params)
    new_params["spline_weight"] = fitted.astype(w.dtype)
    return new_params, new_grid


def layer_regularization_loss(
    params: Params, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
) -> jax.Array:
    r"""efficient-kan's weight-based sparsity regulariser of one layer.

    .. math::
        \ell_{oi} = \operatorname{mean}_j |W_{s,ijo}|, \quad A = \sum_{oi} \ell_{oi}, \quad
        p = \ell / A, \quad R = a A + e \Big(-\sum_{oi} p_{oi} \log p_{oi}\Big),

    with :math:`0 \log 0 = 0`. (pykan's original regulariser uses activation magnitudes on
    data; this cheaper stand-in uses the unscaled spline weights and needs no bases.)
    """
    l1 = jnp.mean(jnp.abs(params["spline_weight"]), axis=1)  # (in, out)
    act = jnp.sum(l1)
    p = l1 / jnp.where(act == 0, 1.0, act)
    entropy = -jnp.sum(jax.scipy.special.xlogy(p, p))
    return regularize_activation * act + regularize_entropy * entropy
