"""GLCM (grey-level co-occurrence matrix) texture features over a sliding window.

Every output pixel holds the Haralick-type features of the window centred on it, defined *exactly* as
scikit-image defines them: for the ``window × window`` patch of the quantised image,

.. code-block:: python

    P = skimage.feature.graycomatrix(patch, distances, np.deg2rad(angles), levels, symmetric=True, normed=True)
    value = skimage.feature.graycoprops(P, prop).mean()      # averaged over the (distance, angle) axes

so only pixel pairs lying entirely inside the window are counted, the matrix is symmetric and normalised, the
entropy uses the natural logarithm, ``mean``/``variance`` are those of the GLCM's row marginal, and the correlation of
a window whose marginal variance is zero (a constant patch) is 1, as scikit-image returns. The pair offset of
``(distance, angle)`` is the one scikit-image's ``graycomatrix`` uses (angle 0 pairs a pixel with its right-hand
neighbour; the row offset is ``round(sin(angle) * distance)`` with rows counted downwards); it is read off
scikit-image itself (:func:`pair_offsets`), so the two cannot disagree on how a half-way value rounds.

Why a hand-written kernel: scikit-image computes one GLCM per call; looping it over every pixel costs
``O(levels²)`` per pixel plus Python calls per window (minutes for a 512² image). Here a numba kernel slides the
window along each row: when it moves one column, the pairs of the leaving column are removed and those of the
entering column added, both in the symmetric co-occurrence counts and in running sums from which every feature
follows in closed form (``Σ|i-j|``, ``Σ1/(1+(i-j)²)``, ``Σ(i+j)``, ``Σ(i²+j²)``, ``Σij``, and ``ΣC²`` and
``ΣC·ln C`` over the count matrix). The cost per pixel is ``O(window × offsets)``, independent of ``levels``. All
running sums are integers (the two non-integer ones, ``1/(1+δ²)`` and ``c·ln c``, in fixed point with a resolution of
2⁻⁴⁰, coarser only for windows over ~300 pixels), so there is no floating-point drift along a row, and a pixel's value
does not depend on where a tile or a row started: the numpy, dask and file versions agree bit for bit.

Missing data: a window that contains a nodata pixel (NaN in a float input, or ``True`` in ``nodata_mask``), and a
window that extends past the image edge, yields NaN. The first and last ``window // 2`` rows and columns are NaN.

Quantisation (:func:`quantize`) is explicit and global: an integer raster whose valid values all lie in
``[0, levels)`` is used as is; anything else is scaled linearly,
``q = clip(floor((x - vmin) / (vmax - vmin) * levels), 0, levels - 1)``, with ``vmin``/``vmax`` defaulting to the 2nd
and 98th percentiles of the valid pixels. Tiled callers (:func:`glcm_features_dask`, :func:`texture_file`) fix
``vmin``/``vmax`` once for the whole raster before tiling, so that a tile boundary never changes a value.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numba
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    import rasterio.io

logger = logging.getLogger(__name__)

#: Feature names, in output band order; the names are scikit-image's ``graycoprops`` property names.
ALL_FEATURES: Final[tuple[str, ...]] = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "ASM",
    "energy",
    "entropy",
    "correlation",
    "mean",
    "variance",
)
#: Default sliding-window edge length, pixels (odd).
DEFAULT_WINDOW: Final[int] = 7
#: Default number of grey levels.
DEFAULT_LEVELS: Final[int] = 32
#: Default pair distances, pixels.
DEFAULT_DISTANCES: Final[tuple[int, ...]] = (1,)
#: Default pair angles, degrees (scikit-image's convention: 0 = right-hand neighbour).
DEFAULT_ANGLES: Final[tuple[float, ...]] = (0.0, 45.0, 90.0, 135.0)
#: Percentiles of the valid pixels that become ``vmin``/``vmax`` when none are given.
DEFAULT_PERCENTILES: Final[tuple[float, float]] = (2.0, 98.0)
#: At most this many pixels are used to estimate percentile limits of a large raster (a regular decimation).
PERCENTILE_SAMPLE: int = 4_000_000

_FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(ALL_FEATURES)}
_MAX_LEVELS: Final[int] = 65536


# ------------------------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------------------------
def _check_window(window: int) -> int:
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number of pixels (3, 5, 7, ...), got {window!r}")
    return int(window)


def _check_levels(levels: int) -> int:
    if int(levels) != levels or not 2 <= levels <= _MAX_LEVELS:
        raise ValueError(f"levels must be an integer in [2, {_MAX_LEVELS}], got {levels!r}")
    return int(levels)


def _check_distances(distances: Sequence[int] | int) -> tuple[int, ...]:
    ds = (distances,) if isinstance(distances, int | np.integer) else tuple(distances)
    if not ds or any(int(d) != d or d < 1 for d in ds):
        raise ValueError(f"distances must be a non-empty sequence of positive integers (pixels), got {distances!r}")
    return tuple(int(d) for d in ds)


def _check_angles(angles: Sequence[float] | float) -> tuple[float, ...]:
    an = (angles,) if isinstance(angles, int | float | np.number) else tuple(angles)
    if not an or not all(np.isfinite(a) for a in an):
        raise ValueError(f"angles must be a non-empty sequence of finite angles in degrees, got {angles!r}")
    return tuple(float(a) for a in an)


def _check_features(features: Sequence[str] | str) -> tuple[str, ...]:
    fs = (features,) if isinstance(features, str) else tuple(features)
    unknown = [f for f in fs if f not in _FEATURE_INDEX]
    if not fs or unknown:
        raise ValueError(f"unknown GLCM feature(s) {unknown or fs!r}; choose from {', '.join(ALL_FEATURES)}")
    return fs


def halo(window: int, distances: Sequence[int] | int = DEFAULT_DISTANCES) -> int:
    """The margin, in pixels, that a caller computing features tile by tile must add around each tile.

    A feature depends only on the pixels of its window (pairs must lie entirely inside the window, as in
    scikit-image's GLCM of the window patch), so the margin is ``window // 2`` whatever the pair distances;
    ``distances`` is validated so that a caller passes the same parameters as to :func:`glcm_features`.

    Args:
        window: Odd window edge length, pixels.
        distances: Pair distances, pixels.

    Returns:
        The halo width in pixels.
    """
    _check_distances(distances)
    return _check_window(window) // 2


@functools.lru_cache(maxsize=256)
def _skimage_offset(distance: int, angle_deg: float) -> tuple[int, int]:
    """The ``(row, col)`` pair offset that scikit-image's ``graycomatrix`` uses for one (distance, angle).

    Read off scikit-image itself, so that the rounding of half-way values (``round`` in its Cython loop, which is
    neither Python's nor numpy's banker's rounding) is reproduced exactly: in a probe image whose value is the row
    index, every counted pair ``(i, j)`` has ``j - i`` equal to the row offset; likewise for columns.
    """
    from skimage.feature import graycomatrix

    n = 2 * distance + 1
    index = np.repeat(np.arange(n, dtype=np.uint16)[:, np.newaxis], n, axis=1)
    offset = []
    for probe in (index, np.ascontiguousarray(index.T)):
        P = graycomatrix(probe, [distance], [math.radians(angle_deg)], levels=n)[:, :, 0, 0]
        i, j = np.nonzero(P)
        if i.size == 0 or np.any(j - i != j[0] - i[0]):  # pragma: no cover - cannot happen for distance >= 1
            raise RuntimeError(f"could not read scikit-image's pair offset for distance {distance}, angle {angle_deg}")
        offset.append(int(j[0]) - int(i[0]))
    return offset[0], offset[1]


def pair_offsets(
    distances: Sequence[int] | int = DEFAULT_DISTANCES, angles: Sequence[float] | float = DEFAULT_ANGLES
) -> list[tuple[int, int]]:
    """The ``(row, col)`` pixel offsets of every (distance, angle) combination, distance-major, as scikit-image.

    Args:
        distances: Pair distances, pixels.
        angles: Pair angles, degrees; 0 is the right-hand neighbour ``(0, +d)``, 90 the pixel ``d`` rows *below*
            (scikit-image's ``graycomatrix`` adds ``round(sin(angle) * d)`` to the row index).

    Returns:
        One ``(drow, dcol)`` per (distance, angle), in the order ``[(d0, a0), (d0, a1), ..., (d1, a0), ...]``.
    """
    return [_skimage_offset(d, a) for d in _check_distances(distances) for a in _check_angles(angles)]


def _canonical_offsets(offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct offsets up to sign (a symmetric GLCM of ``o`` equals that of ``-o``) and their multiplicities."""
    counts: dict[tuple[int, int], int] = {}
    for dr, dc in offsets:
        if dr < 0 or (dr == 0 and dc < 0):
            dr, dc = -dr, -dc
        counts[(dr, dc)] = counts.get((dr, dc), 0) + 1
    keys = list(counts)
    return np.array(keys, dtype=np.int64).reshape(-1, 2), np.array([counts[k] for k in keys], dtype=np.float64)


# ------------------------------------------------------------------------------------------------------------------
# Quantisation
# ------------------------------------------------------------------------------------------------------------------
def _valid_mask(image: np.ndarray, nodata_mask: np.ndarray | None) -> np.ndarray:
    valid = np.isfinite(image) if np.issubdtype(image.dtype, np.floating) else np.ones(image.shape, dtype=bool)
    if nodata_mask is not None:
        mask = np.asarray(nodata_mask, dtype=bool)
        if mask.shape != image.shape:
            raise ValueError(f"nodata_mask has shape {mask.shape}, expected the image's shape {image.shape}")
        valid &= ~mask
    return valid


def _integer_in_range(image: np.ndarray, valid: np.ndarray, levels: int) -> bool:
    if not np.issubdtype(image.dtype, np.integer):
        return False
    vals = image[valid]
    return vals.size == 0 or (int(vals.min()) >= 0 and int(vals.max()) < levels)


def quantization_limits(
    image: np.ndarray,
    levels: int = DEFAULT_LEVELS,
    *,
    nodata_mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> tuple[float, float] | None:
    """The ``(vmin, vmax)`` that :func:`quantize` uses by default, or None where the image is used as is.

    Args:
        image: ``(rows, cols)`` raster (or a decimated sample of one); NaN marks missing data in float input.
        levels: Number of grey levels.
        nodata_mask: ``(rows, cols)`` boolean, True where data are missing.
        percentiles: The percentiles of the valid pixels that become ``vmin`` and ``vmax``.

    Returns:
        None for an integer raster whose valid values all lie in ``[0, levels)``; otherwise the percentiles of the
        valid pixels (``(0.0, 0.0)`` when there is no valid pixel).
    """
    image = np.asarray(image)
    levels = _check_levels(levels)
    valid = _valid_mask(image, nodata_mask)
    if _integer_in_range(image, valid, levels):
        return None
    return _percentile_limits(image, valid, percentiles)


def _percentile_limits(
    image: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float]:
    vals = image[valid]
    if vals.size == 0:
        return (0.0, 0.0)
    lo, hi = np.percentile(vals.astype(np.float64, copy=False), percentiles)
    return float(lo), float(hi)


def quantize(
    image: np.ndarray,
    levels: int = DEFAULT_LEVELS,
    vmin: float | None = None,
    vmax: float | None = None,
    *,
    nodata_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Quantise a raster to the integer grey levels ``0 .. levels-1`` that the GLCM counts.

    * An integer raster whose valid values all lie in ``[0, levels)`` is used as is (when neither ``vmin`` nor
      ``vmax`` is given).
    * Otherwise ``q = clip(floor((x - vmin) / (vmax - vmin) * levels), 0, levels - 1)``, computed in float64: the
      range ``[vmin, vmax]`` is cut into ``levels`` equal bins, ``x == vmax`` falls in the top bin, and values
      outside the range go to the first or last level. A missing limit is the 2nd (``vmin``) or 98th (``vmax``)
      percentile of the valid pixels. Where ``vmax == vmin``, pixels ``<= vmin`` get level 0 and the others
      ``levels - 1``.
    * Missing pixels (NaN, or True in ``nodata_mask``) get level 0; :func:`glcm_features` masks their windows.

    Args:
        image: ``(rows, cols)`` raster, any real dtype.
        levels: Number of grey levels, 2..65536.
        vmin: Value mapped to the bottom of level 0 (in the image's units).
        vmax: Value mapped to the top of level ``levels - 1``.
        nodata_mask: ``(rows, cols)`` boolean, True where data are missing.

    Returns:
        ``(rows, cols)`` uint8 array (uint16 when ``levels > 256``).

    Raises:
        ValueError: ``vmax < vmin``, or an invalid ``levels``.
    """
    image = np.asarray(image)
    levels = _check_levels(levels)
    if image.ndim != 2:
        raise ValueError(f"expected a (rows, cols) raster, got an array of shape {image.shape}")
    out_dtype = np.uint8 if levels <= 256 else np.uint16
    valid = _valid_mask(image, nodata_mask)
    if vmin is None and vmax is None and _integer_in_range(image, valid, levels):
        return np.where(valid, image, 0).astype(out_dtype)
    if vmin is None or vmax is None:
        limits = _percentile_limits(image, valid)
        vmin = limits[0] if vmin is None else vmin
        vmax = limits[1] if vmax is None else vmax
    vmin, vmax = float(vmin), float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f"quantisation limits must be finite with vmin <= vmax, got vmin={vmin}, vmax={vmax}")
    x = np.array(image, dtype=np.float64)  # a copy, worked on in place (same operations, same order as documented)
    x[~valid] = vmin
    if vmax > vmin:
        np.subtract(x, vmin, out=x)
        np.divide(x, vmax - vmin, out=x)
        np.multiply(x, levels, out=x)
        np.floor(x, out=x)
    else:
        x = np.where(x <= vmin, 0.0, levels - 1.0)
    np.clip(x, 0, levels - 1, out=x)
    x[~valid] = 0
    return x.astype(out_dtype)


# ------------------------------------------------------------------------------------------------------------------
# The numba kernel
# ------------------------------------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _pair_delta(Ck, i, j, sgn, ent_tab):  # noqa: ANN001, ANN202
    """Add (``sgn=+1``) or remove (``-1``) the unordered pair ``(i, j)`` in the count matrix ``Ck``.

    ``Ck[min(i,j), max(i,j)]`` counts unordered pairs ``D``; the symmetric GLCM of scikit-image (``symmetric=True``)
    is then ``C[i, j] = C[j, i] = D`` off the diagonal and ``C[i, i] = 2D`` on it. Returns the changes of ``ΣC²``
    (exact) and of ``ΣC·ln C`` (fixed point, ``ent_tab[diagonal, D]`` is the change for ``D -> D + 1``), without
    branches on the pixel values.
    """
    diag = np.int64(i == j)
    lo = min(i, j)
    hi = max(i, j)
    d = np.int64(Ck[lo, hi])
    if sgn > 0:
        Ck[lo, hi] = d + 1
        return (2 * d + 1) * (2 + 2 * diag), ent_tab[diag, d]
    Ck[lo, hi] = d - 1
    return (1 - 2 * d) * (2 + 2 * diag), -ent_tab[diag, d - 1]


@numba.njit(cache=True, inline="always")
def _column_add(csb, i, j, sgn, hom_tab):  # noqa: ANN001, ANN202
    """Add (``sgn=+1``) or remove (``-1``) pair ``(i, j)`` to one anchor column's sums ``csb`` (see _glcm_rows)."""
    ad = i - j if i >= j else j - i
    csb[0] += sgn * ad
    csb[1] += sgn * hom_tab[ad]
    csb[2] += sgn * (i + j)
    csb[3] += sgn * (i * i + j * j)
    csb[4] += sgn * (i * j)


@numba.njit(cache=True, inline="always")
def _total_weight(weights):  # noqa: ANN001, ANN202
    """Sum of the offset weights, added in offset order."""
    total_w = 0.0
    for k in range(weights.shape[0]):
        total_w += weights[k]
    return total_w


@numba.njit(cache=True, inline="always")
def _column_sums(q, csk, fresh, a0, a1, dr, dc, hom_tab):  # noqa: ANN001, ANN202
    """Linear sums of offset ``(dr, dc)`` per anchor column over the window's anchor rows ``a0 .. a1 - 1``.

    From scratch at the start of a strip (``fresh``); otherwise the window moved down one row: the anchor row that
    left is removed and the one that entered is added.
    """
    cols = q.shape[1]
    cl = max(0, -dc)
    ch = max(0, dc)
    if fresh:
        csk[:, :] = 0
        for a in range(a0, a1):
            for b in range(cl, cols - ch):
                _column_add(csk[b], np.int64(q[a, b]), np.int64(q[a + dr, b + dc]), 1, hom_tab)
    else:
        for b in range(cl, cols - ch):
            csb = csk[b]
            _column_add(csb, np.int64(q[a0 - 1, b]), np.int64(q[a0 - 1 + dr, b + dc]), -1, hom_tab)
            _column_add(csb, np.int64(q[a1 - 1, b]), np.int64(q[a1 - 1 + dr, b + dc]), 1, hom_tab)


@numba.njit(cache=True, inline="always")
def _add_features(acc, x, w, sd, sh, s1, s2, s12, sq, se, n2, log_n2, inv_n, inv_n2, inv_n2sq, matrix, inv_scale):  # noqa: ANN001, ANN202
    """Add ``w`` times one offset's GLCM features at column ``x``, in closed form from the running sums (P = C / 2n).

    The sums are ``Σ|i-j|, Σhom, Σ(i+j), Σ(i²+j²), Σij, ΣC², ΣC·ln C``; ``n2 = 2n`` for the ``n`` pairs of a full
    window, with ``ln 2n``, ``1/n``, ``1/2n`` and ``1/(2n)²``; ``matrix``: whether ASM, energy and entropy are wanted.
    """
    acc[0, x] += w * ((s2 - 2 * s12) * inv_n)
    acc[1, x] += w * (sd * inv_n)
    acc[2, x] += w * (sh * inv_scale * inv_n)
    if matrix:
        asm = sq * inv_n2sq
        acc[3, x] += w * asm
        acc[4, x] += w * math.sqrt(asm)
        acc[5, x] += w * max(0.0, log_n2 - se * inv_scale * inv_n2)  # >= 0: no -1e-15 from rounding
    var_num = s2 * n2 - s1 * s1  # exact integers: zero only for a constant marginal
    if var_num == 0:
        acc[6, x] += w  # scikit-image's convention for zero variance
    else:
        acc[6, x] += w * ((2 * s12 * n2 - s1 * s1) / var_num)
    acc[7, x] += w * (s1 * inv_n2)
    acc[8, x] += w * (var_num * inv_n2sq)


@numba.njit(cache=True, inline="always")
def _clear_matrix(q, Ck, x, r, a0, a1, dr, dc, ent_tab):  # noqa: ANN001, ANN202
    """Empty the count matrix by removing the pairs of the window at column ``x`` (cheaper than zeroing levels²)."""
    cl = max(0, -dc)
    ch = max(0, dc)
    for a in range(a0, a1):
        for b in range(x - r + cl, x + r - ch + 1):
            _pair_delta(Ck, np.int64(q[a, b]), np.int64(q[a + dr, b + dc]), -1, ent_tab)


@numba.njit(cache=True, inline="always")
def _offset_row(q, y, fresh, dr, dc, w, window, csk, Ck, acc, need_matrix, hom_tab, ent_tab, inv_scale):  # noqa: ANN001, ANN202
    """Add ``w`` times the features of offset ``(dr, dc)`` at every window centre of row ``y`` to ``acc``.

    ``csk`` holds the offset's per-column sums (rebuilt when ``fresh``, the first row of a strip), ``Ck`` its count
    matrix (empty on entry and on return).
    """
    r = window // 2
    x0, x1 = r, q.shape[1] - r
    n = max(window - dr, 0) * max(window - abs(dc), 0)  # pairs per full window
    if n == 0:  # no pair fits: scikit-image's empty GLCM gives 0 everywhere, correlation 1
        for x in range(x0, x1):
            acc[6, x] += w
        return
    n2 = 2 * n
    log_n2 = math.log(n2)
    inv_n = 1.0 / n
    inv_n2 = 1.0 / n2
    inv_n2sq = 1.0 / (n2 * n2)
    cl = max(0, -dc)
    ch = max(0, dc)
    a0 = y - r  # anchor rows of the window: a0 .. a1 - 1
    a1 = y + r + 1 - dr
    _column_sums(q, csk, fresh, a0, a1, dr, dc, hom_tab)
    # The sliding loop below stays in this function: its seven running sums live in local scalars. Moving the
    # window start and the slide into inline helpers that return the sums as a tuple made the kernel about 10 %
    # slower without ASM/energy/entropy (numba 0.68, 256² and 1024² images), so only the feature arithmetic, which
    # takes scalars, is a helper.
    sd = 0
    sh = 0
    s1 = 0
    s2 = 0
    s12 = 0
    sq = 0
    se = 0
    for x in range(x0, x1):
        if x == x0:  # a fresh window at the start of each row
            for b in range(x - r + cl, x + r - ch + 1):
                sd += csk[b, 0]
                sh += csk[b, 1]
                s1 += csk[b, 2]
                s2 += csk[b, 3]
                s12 += csk[b, 4]
                if need_matrix:
                    for a in range(a0, a1):
                        dq, de = _pair_delta(Ck, np.int64(q[a, b]), np.int64(q[a + dr, b + dc]), 1, ent_tab)
                        sq += dq
                        se += de
        else:  # slide one column: drop the leaving anchor column, add the entering one
            bo = x - 1 - r + cl
            bn = x + r - ch
            sd += csk[bn, 0] - csk[bo, 0]
            sh += csk[bn, 1] - csk[bo, 1]
            s1 += csk[bn, 2] - csk[bo, 2]
            s2 += csk[bn, 3] - csk[bo, 3]
            s12 += csk[bn, 4] - csk[bo, 4]
            if need_matrix:
                for a in range(a0, a1):
                    dq, de = _pair_delta(Ck, np.int64(q[a, bo]), np.int64(q[a + dr, bo + dc]), -1, ent_tab)
                    sq += dq
                    se += de
                    dq, de = _pair_delta(Ck, np.int64(q[a, bn]), np.int64(q[a + dr, bn + dc]), 1, ent_tab)
                    sq += dq
                    se += de
        _add_features(
            acc, x, w, sd, sh, s1, s2, s12, sq, se, n2, log_n2, inv_n, inv_n2, inv_n2sq, need_matrix, inv_scale
        )
    if need_matrix:
        _clear_matrix(q, Ck, x1 - 1, r, a0, a1, dr, dc, ent_tab)


def _glcm_rows(  # noqa: D103
    q: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    window: int,
    levels: int,
    sel: np.ndarray,
    need_matrix: bool,
    hom_tab: np.ndarray,
    ent_tab: np.ndarray,
    inv_scale: float,
    n_strips: int,
    out: np.ndarray,
) -> None:
    # Rows of window centres are split into ``n_strips`` strips, run in parallel by the parallel build (prange).
    # For each pair offset k, with "anchor" pixel (a, b) paired with (a + dr, b + dc):
    # * Linear sums over the window's pairs -- Σ|i-j|, Σ hom(|i-j|) (fixed point), Σ(i+j), Σ(i²+j²), Σij -- are kept
    #   per anchor column over the window's anchor rows (cs[k, b, :]), updated by one row in and one row out as the
    #   window moves down, and summed along the row by adding the entering and dropping the leaving column: O(1).
    # * ΣC² and ΣC·ln C (fixed point) over the symmetric count matrix C[k] need the counts themselves: the pairs of
    #   the entering anchor column are added to C and those of the leaving one removed: O(window) per pixel.
    # Each offset's features are added, weighted, to a row buffer; divided by the total weight it is the output.
    # The helpers are numba inline="always" functions: inlined into both builds, they cost no measurable time.
    rows, cols = q.shape
    r = window // 2
    n_off = offsets.shape[0]
    y0, y1 = r, rows - r
    x0, x1 = r, cols - r
    if y1 <= y0 or x1 <= x0:
        return
    nrows = y1 - y0
    inv_total_w = 1.0 / _total_weight(weights)
    msize = levels if need_matrix else 1
    n_sel = sel.shape[0]
    for s in numba.prange(n_strips):
        ya = y0 + (s * nrows) // n_strips
        yb = y0 + ((s + 1) * nrows) // n_strips
        C = np.zeros((n_off, msize, msize), np.int32)
        cs = np.zeros((n_off, cols, 5), np.int64)
        acc = np.zeros((9, cols), np.float64)
        for y in range(ya, yb):
            acc[:, :] = 0.0
            for k in range(n_off):
                _offset_row(
                    q, y, y == ya, offsets[k, 0], offsets[k, 1], weights[k], window, cs[k], C[k], acc, need_matrix,
                    hom_tab, ent_tab, inv_scale,
                )  # fmt: skip
            for f in range(n_sel):
                for x in range(x0, x1):
                    out[f, y, x] = acc[sel[f], x] * inv_total_w


def _renamed(func: types.FunctionType, name: str) -> types.FunctionType:
    """A copy of ``func`` under another name.

    Numba's on-disk cache is keyed by the function's qualified name and not by ``parallel=``, so the serial and the
    parallel compilation of one body must not share a name.
    """
    copy = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
    copy.__qualname__ = name
    copy.__module__ = func.__module__
    return copy


# Whole arrays: parallel over row strips. Inside dask tasks (one per core already): a serial build, because calling
# a parallel kernel from several threads at once is not allowed with numba's fallback "workqueue" threading layer.
_glcm_parallel = numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)(_glcm_rows)
_glcm_serial = numba.njit(parallel=False, cache=True, fastmath=False, nogil=True)(
    _renamed(_glcm_rows, "_glcm_rows_serial")
)


@functools.lru_cache(maxsize=32)
def _tables(window: int, levels: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Fixed-point tables for homogeneity and entropy, and the scale that keeps every sum inside int64.

    ``hom[δ] = 1/(1+δ²)``; ``ent[0, D]`` is the change of ``ΣC·ln C`` when an off-diagonal pair count goes from
    ``D`` to ``D + 1`` (two cells of the symmetric matrix), ``ent[1, D]`` when a diagonal one does (one cell, by 2).
    Fixed point instead of float64 running sums: integer additions and subtractions are exact, so removing a pair
    restores the sum bit for bit (no drift along a row), and results do not depend on where a row or tile started.
    """
    n_max = window * window  # pairs in a window, at most
    n2max = 2 * n_max
    bound = max(n2max * math.log(n2max), float(n2max))  # bounds Σ C ln C and Σ hom (<= n)
    shift = min(40, int(math.floor(math.log2(2.0**60 / bound))))
    scale = float(2**shift)
    hom = np.round(scale / (1.0 + np.arange(levels, dtype=np.float64) ** 2)).astype(np.int64)

    def xlogx(c: np.ndarray) -> np.ndarray:
        return c * np.log(np.maximum(c, 1.0))  # 0 ln 0 = 0

    d = np.arange(n_max + 1, dtype=np.float64)
    ent = np.stack([2.0 * (xlogx(d + 1) - xlogx(d)), xlogx(2 * d + 2) - xlogx(2 * d)])
    return hom, np.round(ent * scale).astype(np.int64), 1.0 / scale


def _run_kernel(
    q: np.ndarray,
    window: int,
    levels: int,
    offsets: Sequence[tuple[int, int]],
    features: tuple[str, ...],
    *,
    parallel: bool,
) -> np.ndarray:
    """Features of every full window of the quantised image ``q``; NaN where the window leaves the image."""
    rows, cols = q.shape
    canon, weights = _canonical_offsets(offsets)
    sel = np.array([_FEATURE_INDEX[f] for f in features], dtype=np.int64)
    need_matrix = any(f in ("ASM", "energy", "entropy") for f in features)
    max_n2 = 2 * window * window
    if max_n2 * max_n2 * float(levels - 1) ** 2 >= 2.0**62:
        raise ValueError(f"window {window} with {levels} levels would overflow the integer sums; use fewer levels")
    if need_matrix:
        matrix_bytes = len(canon) * levels * levels * 4 * (numba.get_num_threads() if parallel else 1)
        if matrix_bytes > 2**31:
            raise ValueError(
                f"{levels} grey levels need {matrix_bytes / 2**30:.1f} GiB of co-occurrence counts for ASM, energy "
                "and entropy; use fewer levels (32 or 64 is usual) or only the other features"
            )
    hom, ent, inv_scale = _tables(window, levels)
    out = np.full((len(features), rows, cols), np.nan, dtype=np.float32)
    n_centres = max(rows - 2 * (window // 2), 0)
    n_strips = max(1, min(n_centres, 8 * numba.get_num_threads())) if parallel else 1
    kernel = _glcm_parallel if parallel else _glcm_serial
    kernel(
        np.ascontiguousarray(q), canon, weights, window, levels, sel, need_matrix, hom, ent, inv_scale, n_strips, out
    )
    return out


def _mask_nodata_windows(out: np.ndarray, invalid: np.ndarray, window: int) -> None:
    """Set to NaN every pixel whose ``window × window`` neighbourhood contains an invalid pixel."""
    if not invalid.any():
        return
    from scipy.ndimage import maximum_filter

    touched = maximum_filter(invalid.view(np.uint8), size=window, mode="constant", cval=0).astype(bool)
    out[:, touched] = np.nan


def _features_of_block(
    image: np.ndarray,
    nodata_mask: np.ndarray | None,
    window: int,
    levels: int,
    offsets: Sequence[tuple[int, int]],
    features: tuple[str, ...],
    vmin: float | None,
    vmax: float | None,
    parallel: bool,
) -> np.ndarray:
    valid = _valid_mask(image, nodata_mask)
    q = quantize(image, levels, vmin, vmax, nodata_mask=~valid)
    out = _run_kernel(q, window, levels, offsets, features, parallel=parallel)
    _mask_nodata_windows(out, ~valid, window)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------------------------
def glcm_features(
    image: np.ndarray,
    *,
    window: int = DEFAULT_WINDOW,
    levels: int = DEFAULT_LEVELS,
    distances: Sequence[int] | int = DEFAULT_DISTANCES,
    angles: Sequence[float] | float = DEFAULT_ANGLES,
    features: Sequence[str] | str = ALL_FEATURES,
    vmin: float | None = None,
    vmax: float | None = None,
    nodata_mask: np.ndarray | None = None,
) -> np.ndarray:
    """GLCM texture features of every pixel's ``window × window`` neighbourhood.

    Each value equals scikit-image's ``graycoprops(graycomatrix(patch, distances, radians(angles), levels,
    symmetric=True, normed=True), feature)`` of the quantised window patch, averaged over all (distance, angle)
    combinations (see the module docstring). Runs in parallel over row strips on numba's threads
    (``numba.set_num_threads`` limits them).

    Args:
        image: ``(rows, cols)`` raster; NaN marks missing data in float input.
        window: Odd window edge length, pixels.
        levels: Number of grey levels the image is quantised to (see :func:`quantize`).
        distances: Pair distances, pixels.
        angles: Pair angles, degrees (0 = right-hand neighbour, 45, 90 = pixel below, 135 as scikit-image).
        features: Names from :data:`ALL_FEATURES`, in the output order wanted.
        vmin: Lower quantisation limit (default: 2nd percentile of valid pixels, unless the image is an integer
            raster already in ``[0, levels)``).
        vmax: Upper quantisation limit (default: 98th percentile).
        nodata_mask: ``(rows, cols)`` boolean, True where data are missing.

    Returns:
        ``(len(features), rows, cols)`` float32; NaN where the window extends past the image edge or contains a
        missing pixel. Units: contrast in (grey levels)², dissimilarity and mean in grey levels, variance in
        (grey levels)², the others dimensionless (entropy in nats).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a (rows, cols) raster, got an array of shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"expected a numeric raster (integer or float), got dtype {image.dtype}")
    window = _check_window(window)
    levels = _check_levels(levels)
    feats = _check_features(features)
    offsets = pair_offsets(distances, angles)
    return _features_of_block(image, nodata_mask, window, levels, offsets, feats, vmin, vmax, parallel=True)


def _sample_step(shape: tuple[int, int]) -> int:
    """Regular decimation step so that a ``shape`` raster read every ``step`` pixels has <= PERCENTILE_SAMPLE."""
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / PERCENTILE_SAMPLE)))


def glcm_features_dask(
    darr: da.Array,
    *,
    window: int = DEFAULT_WINDOW,
    levels: int = DEFAULT_LEVELS,
    distances: Sequence[int] | int = DEFAULT_DISTANCES,
    angles: Sequence[float] | float = DEFAULT_ANGLES,
    features: Sequence[str] | str = ALL_FEATURES,
    vmin: float | None = None,
    vmax: float | None = None,
    nodata_mask: da.Array | np.ndarray | None = None,
) -> da.Array:
    """Lazy, chunked :func:`glcm_features` of a dask array (``dask.array.map_overlap``).

    Quantisation limits are fixed for the whole array *before* tiling: pass ``vmin``/``vmax``, or they are computed
    once here (this computes part of the graph): for an integer array whose valid values all lie in
    ``[0, levels)`` (checked with a global min/max) the values are used as is, otherwise the 2nd/98th percentiles
    are taken from a regular decimation of the array (every ``s``-th row and column, ``s`` chosen so that at most
    :data:`PERCENTILE_SAMPLE` pixels are read; ``s = 1``, i.e. identical to :func:`glcm_features`, for arrays up to
    that size). Each chunk is extended by :func:`halo` pixels from its neighbours; outside the array the overlap
    is marked missing, so edge windows are NaN exactly as in the numpy version, and every value equals
    :func:`glcm_features` bit for bit. Each task runs the kernel single-threaded (dask supplies the parallelism).

    Args:
        darr: ``(rows, cols)`` dask array (a numpy array is wrapped with one chunk).
        window: See :func:`glcm_features`.
        levels: See :func:`glcm_features`.
        distances: See :func:`glcm_features`.
        angles: See :func:`glcm_features`.
        features: See :func:`glcm_features`.
        vmin: See :func:`glcm_features`.
        vmax: See :func:`glcm_features`.
        nodata_mask: ``(rows, cols)`` boolean (dask or numpy), True where data are missing.

    Returns:
        ``(len(features), rows, cols)`` float32 dask array chunked like ``darr`` along rows and columns (a chunk
        narrower than the halo is merged into its neighbour, as ``map_overlap`` needs).
    """
    import dask.array as da

    darr = da.asarray(darr)
    if darr.ndim != 2:
        raise ValueError(f"expected a (rows, cols) array, got shape {darr.shape}")
    window = _check_window(window)
    levels = _check_levels(levels)
    feats = _check_features(features)
    offsets = pair_offsets(distances, angles)
    depth = halo(window, distances)

    invalid = ~da.isfinite(darr) if np.issubdtype(darr.dtype, np.floating) else da.zeros_like(darr, dtype=bool)
    if nodata_mask is not None:
        mask = da.asarray(nodata_mask).astype(bool)
        if mask.shape != darr.shape:
            raise ValueError(f"nodata_mask has shape {mask.shape}, expected the array's shape {darr.shape}")
        invalid = invalid | mask.rechunk(darr.chunks)

    if vmin is None or vmax is None:
        as_is = False
        if np.issubdtype(darr.dtype, np.integer) and vmin is None and vmax is None:
            filled_lo = da.where(invalid, 0, darr)
            lo, hi = da.compute(filled_lo.min(), da.where(invalid, -1, darr).max())
            as_is = int(lo) >= 0 and int(hi) < levels
        if not as_is:
            step = _sample_step(darr.shape)
            sample = np.asarray(darr[::step, ::step].compute(), dtype=np.float64)
            smask = np.asarray(invalid[::step, ::step].compute())
            limits = _percentile_limits(sample, _valid_mask(sample, smask))
            vmin = limits[0] if vmin is None else vmin
            vmax = limits[1] if vmax is None else vmax
            logger.debug("quantisation limits from every %d-th pixel: vmin=%s, vmax=%s", step, vmin, vmax)

    def block(x: np.ndarray, bad: np.ndarray) -> np.ndarray:
        out = _features_of_block(x, bad, window, levels, offsets, feats, vmin, vmax, parallel=False)
        return out[:, depth:-depth, depth:-depth] if depth else out

    if min(darr.shape) <= 2 * depth:  # no full window anywhere
        return da.full((len(feats), *darr.shape), np.nan, dtype=np.float32, chunks=(len(feats), *darr.chunks))
    chunks = tuple(_chunks_at_least(c, depth) for c in darr.chunks)
    darr = darr.rechunk(chunks)
    invalid = invalid.rechunk(chunks)
    fill = np.nan if np.issubdtype(darr.dtype, np.floating) else 0
    return da.map_overlap(
        block,
        darr,
        invalid,
        depth=[depth, depth],
        boundary=[fill, True],  # outside the array: missing, so edge windows are NaN as in glcm_features
        trim=False,  # the block function trims its own halo (the output has a new leading feature axis)
        allow_rechunk=False,
        new_axis=0,
        chunks=((len(feats),), *chunks),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )


def _chunks_at_least(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Merge chunks smaller than ``size`` into a neighbour (map_overlap needs every chunk >= its depth)."""
    out: list[int] = []
    for c in chunks:
        if out and (c < size or out[-1] < size):
            out[-1] += c
        else:
            out.append(c)
    return tuple(out)


def _band_within(src: rasterio.io.DatasetReader, band: int, levels: int, block: int) -> bool:
    """Whether every valid pixel of an integer band lies in ``[0, levels)``: one exact pass over row blocks.

    Hand-written rather than GDAL statistics, which would write an ``.aux.xml`` side-car next to the input.
    """
    from rasterio.windows import Window

    for r0 in range(0, src.height, block):
        data = src.read(band, window=Window(0, r0, src.width, min(block, src.height - r0)), masked=True)
        if data.count() and (data.min() < 0 or data.max() >= levels):
            return False
    return True


def _file_limits(
    src: rasterio.io.DatasetReader,
    band: int,
    levels: int,
    block: int,
    vmin: float | None,
    vmax: float | None,
    in_path: Path,
) -> tuple[float | None, float | None]:
    """Quantisation limits fixed once for the whole band of a raster file.

    An integer band whose valid values all lie in ``[0, levels)`` is used as is (both limits stay None); otherwise
    a missing limit is the 2nd or 98th percentile of the valid pixels of a decimated read.

    Args:
        src: The input raster, open.
        band: 1-based band index.
        levels: Number of grey levels.
        block: Rows per read of the exact integer-range check.
        vmin: Lower limit given by the caller, or None.
        vmax: Upper limit given by the caller, or None.
        in_path: The input's path (for the log).

    Returns:
        ``(vmin, vmax)``.
    """
    from rasterio.enums import Resampling

    if vmin is not None and vmax is not None:
        return vmin, vmax
    is_int = np.issubdtype(np.dtype(src.dtypes[band - 1]), np.integer)
    if is_int and vmin is None and vmax is None and _band_within(src, band, levels, block):
        return vmin, vmax
    rows, cols = src.height, src.width
    step = _sample_step((rows, cols))
    shape = (math.ceil(rows / step), math.ceil(cols / step))
    sample = src.read(band, out_shape=shape, resampling=Resampling.nearest, masked=True)
    smask = np.ma.getmaskarray(sample)
    values = np.asarray(sample.data, dtype=np.float64)
    limits = _percentile_limits(values, _valid_mask(values, smask))
    vmin = limits[0] if vmin is None else vmin
    vmax = limits[1] if vmax is None else vmax
    logger.info("%s: quantisation limits vmin=%s, vmax=%s (decimation %d)", in_path, vmin, vmax, step)
    return vmin, vmax


def _texture_profile(src: rasterio.io.DatasetReader) -> dict[str, object]:
    """Creation options of the GLCM GeoTIFF: one float32 band per feature on the input's grid, NaN nodata.

    Args:
        src: The input raster, open.

    Returns:
        rasterio creation options.
    """
    rows, cols = src.height, src.width
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": len(ALL_FEATURES),
        "dtype": "float32",
        "crs": src.crs,
        "transform": src.transform,
        "nodata": float("nan"),
        "compress": "deflate",
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
    }
    if min(rows, cols) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _tile_features(
    src: rasterio.io.DatasetReader,
    band: int,
    tile: tuple[int, int],
    block: int,
    h: int,
    features_of: functools.partial[np.ndarray],
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """GLCM features of one tile, read with a halo of ``h`` neighbouring pixels (fewer at the raster's edges).

    Args:
        src: The input raster, open.
        band: 1-based band index.
        tile: ``(row, col)`` of the tile's upper-left pixel.
        block: Tile edge, pixels.
        h: Halo width, pixels.
        features_of: ``(image, nodata_mask) -> (features, rows, cols)`` for the tile read with its halo.

    Returns:
        ``(core, window)``: the tile's features without the halo, and the tile's window as ``(col, row, width,
        height)``.
    """
    from rasterio.windows import Window

    r0, c0 = tile
    rows, cols = src.height, src.width
    nr, nc = min(block, rows - r0), min(block, cols - c0)
    ra, ca = max(r0 - h, 0), max(c0 - h, 0)
    rb, cb = min(r0 + nr + h, rows), min(c0 + nc + h, cols)
    data = src.read(band, window=Window(ca, ra, cb - ca, rb - ra), masked=True)
    feats = features_of(np.asarray(data.data), np.ma.getmaskarray(data))
    core = feats[:, r0 - ra : r0 - ra + nr, c0 - ca : c0 - ca + nc]
    return core, (c0, r0, nc, nr)


def texture_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    band: int = 1,
    window: int = DEFAULT_WINDOW,
    levels: int = DEFAULT_LEVELS,
    distance: int = 1,
    angles: Sequence[float] = DEFAULT_ANGLES,
    vmin: float | None = None,
    vmax: float | None = None,
    block: int = 1024,
    progress: bool = True,
) -> Path:
    """Write the GLCM features of one band of a raster as a float32 GeoTIFF on the same grid, block by block.

    The band is processed in ``block × block`` tiles, each read with a :func:`halo` of neighbouring pixels, so peak
    memory is about ``(block + 2·halo)² × (features + 3) × 4`` bytes whatever the raster size. Quantisation limits
    are fixed once for the whole band: an integer band whose valid values all lie in ``[0, levels)`` (exact GDAL
    statistics) is used as is; otherwise missing limits are the 2nd/98th percentiles of the valid pixels of a
    decimated read (every ``s``-th row and column, nearest neighbour, at most :data:`PERCENTILE_SAMPLE` pixels; the
    whole band when it is smaller). Pixels equal to the band's nodata value (or masked by GDAL) are missing.

    Args:
        in_path: Input raster.
        out_path: Output GeoTIFF: one float32 band per feature of :data:`ALL_FEATURES`, descriptions
            ``glcm_<feature>``, NaN nodata, the input's grid.
        band: 1-based band index.
        window: Odd window edge length, pixels.
        levels: Number of grey levels.
        distance: Pair distance, pixels.
        angles: Pair angles, degrees.
        vmin: Lower quantisation limit, in the band's units.
        vmax: Upper quantisation limit.
        block: Tile edge length, pixels.
        progress: Show a progress bar over tiles.

    Returns:
        ``out_path``.

    Raises:
        cryonet.raster.RasterError: the input is missing or unreadable, or has no band ``band``.
    """
    import rasterio
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    from cryonet.raster import RasterError, atomic_path, open_raster

    window = _check_window(window)
    levels = _check_levels(levels)
    offsets = pair_offsets((distance,), angles)
    if block < 1:
        raise ValueError(f"block must be a positive number of pixels, got {block}")
    in_path, out_path = Path(in_path), Path(out_path)
    h = halo(window, (distance,))
    with open_raster(in_path) as src:
        if not 1 <= band <= src.count:
            raise RasterError(
                f"{in_path}: has {src.count} band(s), band {band} was requested; pass --band 1..{src.count}"
            )
        vmin, vmax = _file_limits(src, band, levels, block, vmin, vmax, in_path)
        features_of = functools.partial(
            _features_of_block,
            window=window,
            levels=levels,
            offsets=offsets,
            features=ALL_FEATURES,
            vmin=vmin,
            vmax=vmax,
            parallel=True,
        )
        tiles = [(r0, c0) for r0 in range(0, src.height, block) for c0 in range(0, src.width, block)]
        with atomic_path(out_path) as tmp, rasterio.open(tmp, "w", **_texture_profile(src)) as dst:
            for i, name in enumerate(ALL_FEATURES, start=1):
                dst.set_band_description(i, f"glcm_{name}")
            for tile in tqdm(tiles, desc=f"GLCM {in_path.name}", unit="tile", disable=not progress):
                core, win = _tile_features(src, band, tile, block, h, features_of)
                dst.write(core, window=Window(*win))
    logger.info("wrote GLCM features of %s band %d to %s", in_path, band, out_path)
    return out_path
