"""InSAR layers: interferometric coherence and wrapped phase, and the sample-coherence estimator.

The model sees three layers (:data:`INSAR_LAYERS`):

* ``coherence``: magnitude of the complex correlation between two SAR acquisitions, clipped to [0, 1] (values
  slightly outside from resampling or from a processor's rounding are clipped, NaN stays NaN).
* ``phase_sin`` / ``phase_cos``: the wrapped interferometric phase (radians) encoded as sine and cosine, so that
  -π and +π, the same phase, get the same features; ``atan2(phase_sin, phase_cos)`` gives the wrapped phase back.

:func:`estimate_coherence` computes coherence and phase from two co-registered single-look complex (SLC) images with
the standard boxcar (sample) estimator

    γ̂ = |Σ s1 s2*| / sqrt(Σ |s1|² · Σ |s2|²),   φ̂ = arg Σ s1 s2*,

summed over a moving window. γ̂ is biased upwards for low coherence and few looks (for N independent looks and
γ = 0, E[γ̂] ≈ sqrt(π / 4N)); the bias shrinks as the window grows (Touzi et al. 1999, IEEE TGRS 37(1)).
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np
from scipy.ndimage import uniform_filter

logger = logging.getLogger(__name__)

#: Layers of the InSAR family, in stack order.
INSAR_LAYERS: Final[tuple[str, ...]] = ("coherence", "phase_sin", "phase_cos")
#: Unit of each layer.
INSAR_UNITS: Final[dict[str, str]] = {"coherence": "1 (0-1)", "phase_sin": "1", "phase_cos": "1"}


def insar_layers(coherence: np.ndarray, phase: np.ndarray) -> dict[str, np.ndarray]:
    """The InSAR model layers from a coherence raster and a wrapped-phase raster on the same grid.

    Args:
        coherence: Interferometric coherence, ``(rows, cols)``, nominally 0–1; values outside are clipped to
            [0, 1]. NaN marks nodata.
        phase: Interferometric phase, radians, ``(rows, cols)``; wrapped or not (sin/cos do not care). NaN marks
            nodata.

    Returns:
        ``{"coherence", "phase_sin", "phase_cos"}`` -> float32 ``(rows, cols)`` arrays; NaN wherever the input is
        NaN (coherence NaN only where ``coherence`` is; the phase layers where ``phase`` is).

    Raises:
        ValueError: the two arrays differ in shape, or are not real-valued.
    """
    coh = np.asarray(coherence)
    ph = np.asarray(phase)
    if coh.shape != ph.shape:
        raise ValueError(
            f"coherence shape {coh.shape} and phase shape {ph.shape} differ; align them onto one grid "
            "first (`cryonet align`)"
        )
    for name, arr in (("coherence", coh), ("phase", ph)):
        if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    coh64 = coh.astype(np.float64)
    ph64 = ph.astype(np.float64)
    return {
        "coherence": np.clip(coh64, 0.0, 1.0).astype(np.float32),  # np.clip keeps NaN
        "phase_sin": np.sin(ph64).astype(np.float32),
        "phase_cos": np.cos(ph64).astype(np.float32),
    }


def _window_shape(window: int | tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of an odd, centred moving window."""
    size = (window, window) if np.isscalar(window) else tuple(window)  # type: ignore[arg-type]
    if len(size) != 2 or any(int(w) != w or w < 1 or w % 2 == 0 for w in size):
        raise ValueError(
            f"window must be an odd positive size (int or (rows, cols)) so that it is centred, got {window}"
        )
    return int(size[0]), int(size[1])


def estimate_coherence(
    slc1: np.ndarray, slc2: np.ndarray, window: int | tuple[int, int] = (5, 5)
) -> tuple[np.ndarray, np.ndarray]:
    """Boxcar (sample) coherence and interferometric phase of two co-registered complex SAR images.

    The window sums are moving averages (``scipy.ndimage.uniform_filter`` on the real and imaginary parts of
    ``s1·conj(s2)`` and on the powers ``|s1|²``, ``|s2|²``); the averaging factor cancels in the ratio.

    Args:
        slc1: First complex image, ``(rows, cols)``. NaN (in either part) marks nodata.
        slc2: Second complex image, same shape.
        window: Odd window size in pixels, ``int`` or ``(rows, cols)``.

    Returns:
        ``(coherence, phase)``, float32 ``(rows, cols)`` arrays: coherence in [0, 1] and phase
        ``arg Σ s1·conj(s2)`` in radians, (-π, π]. NaN where the window is incomplete (within half a window of the
        raster edge), contains nodata, or has zero power.

    Raises:
        ValueError: the images differ in shape, are not 2-D, are not complex, or ``window`` is not odd.
    """
    s1 = np.asarray(slc1)
    s2 = np.asarray(slc2)
    for name, arr in (("slc1", s1), ("slc2", s2)):
        if not np.iscomplexobj(arr):
            raise ValueError(
                f"{name} must be a complex array (single-look complex SAR data), got dtype {arr.dtype}; for "
                "amplitude and phase rasters build it as amplitude * np.exp(1j * phase)"
            )
    if s1.shape != s2.shape:
        raise ValueError(f"slc1 shape {s1.shape} and slc2 shape {s2.shape} differ; co-register the images first")
    if s1.ndim != 2:
        raise ValueError(f"expected (rows, cols) images, got shape {s1.shape}")
    size = _window_shape(window)
    s1 = s1.astype(np.complex128)
    s2 = s2.astype(np.complex128)
    invalid = ~(np.isfinite(s1) & np.isfinite(s2))
    # uniform_filter keeps running sums along each axis, so one NaN would spoil the rest of its line: zero the
    # invalid cells and track them separately.
    s1[invalid] = 0.0
    s2[invalid] = 0.0
    cross = s1 * np.conj(s2)

    def mean(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=size, mode="constant", cval=0.0)

    num = mean(cross.real) + 1j * mean(cross.imag)
    p1 = mean(np.abs(s1) ** 2)
    p2 = mean(np.abs(s2) ** 2)
    # Count of invalid cells in the window (the mean of a 0/1 image times the window size; running sums of small
    # integers are exact in float64).
    n_bad = mean(invalid.astype(np.float64)) * (size[0] * size[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        coh = np.abs(num) / np.sqrt(p1 * p2)
    phase = np.angle(num)
    bad = (n_bad > 0.5) | ~np.isfinite(coh) | (p1 <= 0) | (p2 <= 0)
    hr, hc = size[0] // 2, size[1] // 2
    edge = np.ones(s1.shape, dtype=bool)
    edge[hr : s1.shape[0] - hr, hc : s1.shape[1] - hc] = False
    bad |= edge
    coh = np.clip(coh, 0.0, 1.0)  # Cauchy-Schwarz bounds it by 1; clip rounding excess
    coh[bad] = np.nan
    phase[bad] = np.nan
    return coh.astype(np.float32), phase.astype(np.float32)
