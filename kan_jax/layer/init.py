r"""Initialisation of a KAN layer with efficient-kan's distributions, as named initialisers.

Every initialiser has the signature of Flax's (``init(key, shape, dtype) -> array``), so the
Linen layer declares its parameters with ``self.param(name, initialiser, shape, dtype)``;
:func:`init_layer` runs the same initialisers as one compiled program (the NNX layer's
initialisation). With the layer's key split by :func:`layer_keys` both give the same values:

* ``base_weight`` ``(out, in)``: :func:`kaiming_uniform` with ``a = sqrt(5) · scale_base``;
* ``spline_weight`` ``(in, n, out)``: :func:`spline_noise`, the minimum-norm least-squares
  fit of uniform noise of size ``scale_noise / G`` at the ``G + 1`` interior knots
  (:func:`init_spline_weight`);
* ``spline_scaler`` ``(in, out)``: :func:`kaiming_uniform` with ``a = sqrt(5) · scale_spline``,
  drawn in efficient-kan's ``(out, in)`` order and transposed.

The coefficients of the other basis families (``basis``) are Gaussian, :func:`basis_normal`,
with the variance that gives the spline branch outputs of standard deviation ``scale_noise``
at initialisation (:func:`coefficient_initializer` picks the family's initialiser).

The fit of a concrete knot row is factored once on the host in float64 NumPy and cached: with
distinct interior knots as :math:`A^\top (L L^\top)^{-1}`, :math:`L` the banded Cholesky factor
of :math:`A A^\top` (:math:`A` the ``(G + 1, G + k)`` collocation matrix), so the work is linear
in ``G``; otherwise as the dense pseudo-inverse. Only integers, shapes and dtypes are static:
the scales are traced, so new values never recompile.

References:
  Blealtan, *efficient-kan* (PyTorch), ``KANLinear.reset_parameters``.
  K. He et al., "Delving deep into rectifiers", ICCV 2015 (Kaiming initialisation).
  I. J. Schoenberg, A. Whitney, "On Pólya frequency functions III", Trans. AMS 74 (1953).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from kan_jax import splines, threefry
from kan_jax.layer.bases import basis_family
from kan_jax.layer.config import KANLayerConfig

__all__ = [
    "Initializer",
    "kaiming_uniform",
    "spline_noise",
    "init_spline_weight",
    "basis_normal",
    "coefficient_initializer",
    "layer_keys",
    "efficient_kan_slope",
    "init_layer",
]

Dtype = Any
#: ``init(key, shape, dtype) -> array``, as Flax's initialisers.
Initializer = Callable[..., jax.Array]

_SQRT5 = math.sqrt(5.0)


def efficient_kan_slope(scale: float) -> jax.Array:
    """efficient-kan's Kaiming ``a = sqrt(5) · scale``, in float32 (the layer's init arithmetic)."""
    return jnp.float32(_SQRT5) * jnp.float32(scale)


def layer_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The keys of ``base_weight``, ``spline_weight`` and ``spline_scaler`` from a layer's key."""
    k_base, k_spline, k_scaler = jax.random.split(key, 3)
    return k_base, k_spline, k_scaler


def kaiming_uniform(a: Any, in_axis: int = -1) -> Initializer:
    r"""PyTorch's ``kaiming_uniform_(w, a)``: uniform on :math:`\pm\sqrt{6 / ((1 + a^2)\, \mathrm{in})}`.

    For :math:`a = \sqrt 5` this is ``nn.Linear``'s default :math:`\pm 1/\sqrt{\mathrm{in}}`.

    Args:
      a: Negative slope; a Python float or a (traced) scalar.
      in_axis: Axis of ``shape`` that indexes the inputs (the fan-in): ``-1`` for an
        ``(out, in)`` weight; ``0`` for an ``(in, out)`` weight, whose values are drawn in
        ``(out, in)`` order and transposed (the bits efficient-kan's ``(out, in)`` layout gets).

    Returns:
      An initialiser ``init(key, shape, dtype=float32)`` of a two-dimensional weight.
    """
    if in_axis not in (-1, 0, 1):
        raise ValueError(f"in_axis must be -1, 0 or 1 of a two-dimensional weight, got {in_axis!r}")

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        if len(shape) != 2:
            raise ValueError(f"kaiming_uniform initialises two-dimensional weights, got shape {tuple(shape)}")
        transpose = in_axis == 0
        drawn = tuple(shape)[::-1] if transpose else tuple(shape)
        return _kaiming(key, jnp.asarray(a), shape=drawn, dtype=jnp.dtype(dtype), transpose=transpose)

    return init


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "transpose"))
def _kaiming(key: jax.Array, a: jax.Array, *, shape: tuple[int, int], dtype: Dtype, transpose: bool) -> jax.Array:
    bound = jnp.sqrt(6.0 / ((1.0 + a * a) * shape[-1])).astype(dtype)
    w = _uniform(key, shape, dtype, -bound, bound)
    return w.T if transpose else w


def _uniform(key: jax.Array, shape: tuple[int, ...], dtype: Dtype, minval: Any = 0.0, maxval: Any = 1.0) -> jax.Array:
    # jax.random.uniform's values (kan_jax.threefry), drawn flat and reshaped.
    return threefry.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def spline_noise(
    spline_order: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    scale_noise: float = 0.1,
    scale: float = 1.0,
) -> Initializer:
    """efficient-kan's initialiser of ``spline_weight`` ``(in, n, out)`` on a uniform grid.

    Args:
      spline_order: Order ``k``; the grid has ``G = n - k`` intervals over ``grid_range``.
      grid_range: ``(lo, hi)`` of the uniform grid.
      scale_noise: Noise size (:func:`init_spline_weight`).
      scale: Factor of the fit (``scale_spline`` for a layer without ``spline_scaler``).

    Returns:
      An initialiser ``init(key, shape, dtype=float32)`` of a ``(in, n, out)`` weight.
    """
    k = int(spline_order)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        if len(shape) != 3:
            raise ValueError(f"spline_noise initialises (in, n, out) weights, got shape {tuple(shape)}")
        in_features, n, out_features = shape
        row = splines.uniform_knots_host(n - k, k, grid_range, dtype)
        return init_spline_weight(
            key, row, in_features, out_features, k, jnp.float32(scale_noise), jnp.float32(scale), dtype
        )

    return init


def basis_normal(mean_square: float, scale: float = 0.1, scaled: bool = True) -> Initializer:
    r"""Gaussian coefficients ``(in, n, out)`` of a basis family, sized by the spline branch's output.

    With the bases' mean square sum :math:`S = E \sum_j \phi_j(x)^2` (the family's, for its
    reference input distribution) and i.i.d. effective coefficients :math:`c = W s` of variance
    :math:`\mathrm{scale}^2 / (\mathrm{in}\, S)`, every output of the spline branch has the
    standard deviation ``scale`` at initialisation, whatever ``in`` and ``n`` (the rule of
    ChebyKAN's and jaxKAN's :math:`1/\sqrt{\mathrm{in}\,(D + 1)}`, scaled down: the layer starts
    close to its base branch, as a B-spline layer from its small spline noise). Without a
    scaler :math:`W` has the standard deviation :math:`\mathrm{scale} / \sqrt{\mathrm{in}\, S}`;
    with the efficient-kan scaler (uniform, variance :math:`1 / (3\, \mathrm{in})` at gain 1)
    :math:`W` has :math:`\mathrm{scale}\,\sqrt{3 / S}`, so :math:`W s` has the same variance
    and follows the scaler's gain.

    Args:
      mean_square: :math:`S > 0`.
      scale: The outputs' standard deviation (``scale_noise``; times ``scale_spline`` for a
        layer without a scaler).
      scaled: Whether the layer has a ``spline_scaler``.

    Returns:
      An initialiser ``init(key, shape, dtype=float32)`` of an ``(in, n, out)`` weight.
    """
    if not mean_square > 0:
        raise ValueError(f"mean_square must be > 0, got {mean_square!r}")

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        if len(shape) != 3:
            raise ValueError(f"basis_normal initialises (in, n, out) weights, got shape {tuple(shape)}")
        std = scale * math.sqrt(3.0 / mean_square) if scaled else scale / math.sqrt(shape[0] * mean_square)
        return (jnp.float32(std) * jax.random.normal(key, tuple(shape), jnp.float32)).astype(dtype)

    return init


def coefficient_initializer(config: KANLayerConfig) -> Initializer:
    """The initialiser of ``spline_weight`` ``(in, n, out)`` for a layer of ``config``.

    :func:`spline_noise` for B-splines (efficient-kan's), :func:`basis_normal` with the
    family's mean square for the other families.
    """
    scaled = bool(config.enable_standalone_scale_spline)
    if config.basis == "bspline":
        return spline_noise(config.spline_order, config.grid_range, config.scale_noise, 1.0 if scaled else config.scale_spline)
    family = basis_family(config.basis)

    scale = config.scale_noise * (1.0 if scaled else config.scale_spline)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
        return basis_normal(family.mean_square(shape[1]), scale, scaled)(key, shape, dtype)

    return init


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

    Noise ``(U(0, 1) - 1/2) · scale_noise / G`` is drawn at the ``G + 1`` interior knots of
    every edge and fitted, in the minimum-norm least-squares sense (the system is
    under-determined for ``k > 1``), by splines on the knot row ``grid_row`` that every input
    shares; the result is multiplied by ``scale``. One operator :math:`A^+` serves all
    ``in · out`` edges: for a concrete row it is factored on the host (module docstring); a
    traced row is fitted inside the program with ``jnp.linalg.pinv``.

    Args:
      key: PRNG key.
      grid_row: Knots shared by every input, ``(G + 2k + 1,)``.
      in_features: Layer inputs.
      out_features: Layer outputs.
      spline_order: Order ``k``.
      scale_noise: Noise size (traced: new values do not recompile).
      scale: Final factor (traced).
      dtype: Dtype of the result (the fit runs in at least float32).

    Returns:
      The coefficients, ``(in, G + k, out)`` (the layout of ``spline_weight``).
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
    # scale · A^+ noise as (in, G + k, out); fit from _fit_operator.
    fit_dtype = jax.tree.leaves(fit)[0].dtype
    points = fit["pinv"].shape[1] if "pinv" in fit else fit["a_band"].shape[0]
    noise = _uniform(key, (points, in_features, out_features), fit_dtype)
    noise = (noise - 0.5) * scale_noise / (points - 1)
    coeff = _apply_fit(fit, noise.reshape(points, -1))
    coeff = coeff.reshape(coeff.shape[0], in_features, out_features)
    return (scale * jnp.swapaxes(coeff, 0, 1)).astype(dtype)


def init_layer(
    key: jax.Array,
    in_features: int,
    out_features: int,
    config: Optional[KANLayerConfig] = None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """Parameters and grid of a fresh layer, with efficient-kan's distributions, one program.

    The initialisers of the module docstring with the keys :func:`layer_keys` ``(key)``;
    compiled once per layer shape (the configuration's floats are traced).

    Args:
      key: The layer's PRNG key.
      in_features: Layer inputs, ``>= 1``.
      out_features: Layer outputs, ``>= 1``.
      config: Layer configuration (default ``KANLayerConfig()``).

    Returns:
      ``(params, grid)``: ``base_weight`` ``(out, in)``, ``spline_weight`` ``(in, G + k, out)``,
      ``spline_scaler`` ``(in, out)`` if the configuration has one, and the grid
      ``(in, G + 2k + 1)``; for another ``config.basis``, ``spline_weight`` ``(in, n, out)``
      with the family's ``n`` and its grid (:func:`kan_jax.layer.basis_family`).

    Example:
      >>> import jax
      >>> from kan_jax.layer import KANLayerConfig, init_layer
      >>> params, grid = init_layer(jax.random.key(0), 4, 3, KANLayerConfig(grid_size=5))
      >>> params["spline_weight"].shape, grid.shape
      ((4, 8, 3), (4, 12))
    """
    config = KANLayerConfig() if config is None else config
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    dtype = jnp.dtype(config.param_dtype)
    if config.basis != "bspline":
        return _init_basis_layer(key, int(in_features), int(out_features), config), basis_family(
            config.basis
        ).initial_grid(config, in_features)
    k = config.spline_order
    grid = splines.uniform_grid(config.grid_size, k, config.grid_range, int(in_features), dtype)
    # The fit's knot row stays on the host: reading a device array back would wait for the
    # computations already dispatched.
    row = splines.uniform_knots_host(config.grid_size, k, config.grid_range, dtype)
    params = _init_params(
        key,
        _fit_operator(row, k, jnp.promote_types(dtype, jnp.float32)),
        *(jnp.float32(v) for v in (config.scale_noise, config.scale_base, config.scale_spline)),
        in_features=int(in_features),
        out_features=int(out_features),
        own_scaler=bool(config.enable_standalone_scale_spline),
        dtype=dtype,
    )
    return params, grid


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_basis_layer(key: jax.Array, in_features: int, out_features: int, config: KANLayerConfig) -> dict[str, jax.Array]:
    # The initialisers the Linen layer declares, with the same keys (so the same values).
    dtype = jnp.dtype(config.param_dtype)
    k_base, k_spline, k_scaler = layer_keys(key)
    n = basis_family(config.basis).num_bases(config.grid_size, config.spline_order)
    params = {
        "base_weight": kaiming_uniform(efficient_kan_slope(config.scale_base))(k_base, (out_features, in_features), dtype),
        "spline_weight": coefficient_initializer(config)(k_spline, (in_features, n, out_features), dtype),
    }
    if config.enable_standalone_scale_spline:
        slope = efficient_kan_slope(config.scale_spline)
        params["spline_scaler"] = kaiming_uniform(slope, in_axis=0)(k_scaler, (in_features, out_features), dtype)
    return params


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
    fit_dtype = jax.tree.leaves(fit)[0].dtype
    k_base, k_spline, k_scaler = layer_keys(key)
    scale = jnp.float32(1.0) if own_scaler else scale_spline
    shape = (out_features, in_features)
    params = {
        "base_weight": kaiming_uniform(_SQRT5 * scale_base)(k_base, shape, dtype),
        "spline_weight": _fit_noise(
            k_spline, fit, scale_noise.astype(fit_dtype), scale.astype(fit_dtype),
            in_features=in_features, out_features=out_features, dtype=dtype,
        ),
    }
    if own_scaler:
        params["spline_scaler"] = kaiming_uniform(_SQRT5 * scale_spline, in_axis=0)(k_scaler, shape[::-1], dtype)
    return params
