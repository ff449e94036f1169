"""Spectral indices of Sentinel-2 reflectance: snow, water, vegetation, glacier and band ratios.

All inputs are reflectance (0-1) arrays of one shape with NaN for nodata. Every index is computed in float64 and
returned as float32.

Safe division (the choice made for the whole stack):

* A **normalised difference** ``(a - b) / (a + b)`` is defined as 0 where ``a + b == 0`` (both reflectances zero:
  no contrast between the bands, so the neutral value of the index).
* A **band ratio** ``a / b`` is computed as ``a / (b + RATIO_EPS)`` with ``RATIO_EPS = 1e-3`` reflectance, so a
  zero or tiny denominator gives a large but finite value (at most ``a / 1e-3``, i.e. <= 1000 for reflectance <= 1)
  instead of ``inf``. Negative reflectance (possible after the L2A offset) could still bring ``b + eps`` to zero;
  those denominators are clipped to ``RATIO_EPS``.
* Nodata is never hidden: a NaN in any input band gives NaN in every index that uses that band.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import numpy as np

logger = logging.getLogger(__name__)

#: Additive constant (reflectance units) in the denominator of band ratios; see the module docstring.
RATIO_EPS: Final[float] = 1e-3

#: Index name -> (numerator band, denominator band, kind), in stack order. ``nd``: ``(a - b) / (a + b)``;
#: ``ratio``: ``a / b``.
INDEX_DEFINITIONS: Final[dict[str, tuple[str, str, str]]] = {
    "ndsi": ("B3", "B11", "nd"),
    "ndwi": ("B3", "B8", "nd"),
    "ndvi": ("B8", "B4", "nd"),
    "ndgi": ("B3", "B4", "nd"),
    "ratio_red_swir": ("B4", "B11", "ratio"),
    "ratio_nir_swir": ("B8", "B11", "ratio"),
}

#: Index layer names, in stack order.
INDEX_LAYERS: Final[tuple[str, ...]] = tuple(INDEX_DEFINITIONS)

#: Units of each index layer.
INDEX_UNITS: Final[dict[str, str]] = {
    name: ("unitless (-1..1)" if kind == "nd" else "unitless ratio (>= 0)")
    for name, (_, _, kind) in INDEX_DEFINITIONS.items()
}

#: Short provenance of each index (used in the stack's layer table).
INDEX_SOURCES: Final[dict[str, str]] = {
    "ndsi": "(B3-B11)/(B3+B11); Hall et al. 1995, Remote Sens. Environ. 54:127-140",
    "ndwi": "(B3-B8)/(B3+B8); McFeeters 1996, Int. J. Remote Sens. 17(7):1425-1432",
    "ndvi": "(B8-B4)/(B8+B4); Rouse et al. 1974, NASA SP-351:309-317",
    "ndgi": "(B3-B4)/(B3+B4); Keshri, Shukla & Gupta 2009, Int. J. Remote Sens. 30(2):519-524",
    "ratio_red_swir": f"B4/(B11+{RATIO_EPS}); Paul et al. 2016, Remote Sens. 8(7):575 (red/SWIR glacier ratio)",
    "ratio_nir_swir": f"B8/(B11+{RATIO_EPS}); Paul et al. 2002, Ann. Glaciol. 34:355-361 (TM4/TM5 ratio)",
}


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` with 0 where ``a + b == 0`` and NaN where either input is NaN.

    Args:
        a: First band, reflectance, any shape.
        b: Second band, reflectance, same shape as ``a``.

    Returns:
        float64 array of the shape of ``a``, values in [-1, 1] for non-negative reflectance.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = a - b
    den = a + b
    zero = den == 0  # NaN compares False, so nodata stays NaN below
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / np.where(zero, 1.0, den)
    out[zero] = 0.0
    return out


def band_ratio(a: np.ndarray, b: np.ndarray, eps: float = RATIO_EPS) -> np.ndarray:
    """``a / (b + eps)``: finite for a zero denominator, NaN where either input is NaN.

    Args:
        a: Numerator band, reflectance.
        b: Denominator band, reflectance, same shape.
        eps: Additive constant in reflectance units; denominators below ``eps`` are clipped to ``eps``.

    Returns:
        float64 array of the shape of ``a``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = b + eps
    # np.maximum propagates NaN (nodata stays nodata); it only lifts denominators that went <= eps.
    den = np.maximum(den, eps)
    return a / den


def ndsi(green: np.ndarray, swir1: np.ndarray) -> np.ndarray:
    """Normalised difference snow index, ``(B3 - B11) / (B3 + B11)`` (Hall, Riggs & Salomonson 1995)."""
    return normalized_difference(green, swir1)


def ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Normalised difference water index after McFeeters (1996), ``(B3 - B8) / (B3 + B8)``."""
    return normalized_difference(green, nir)


def ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Normalised difference vegetation index, ``(B8 - B4) / (B8 + B4)`` (Rouse et al. 1974)."""
    return normalized_difference(nir, red)


def ndgi(green: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Normalised difference glacier index, ``(B3 - B4) / (B3 + B4)`` (Keshri, Shukla & Gupta 2009)."""
    return normalized_difference(green, red)


def spectral_indices(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The six indices of the ``indices`` layer group.

    Formulas (Sentinel-2 band names; reflectance 0-1):

    * ``ndsi = (B3 - B11) / (B3 + B11)`` — Hall et al. (1995), snow and ice are high (> 0.4).
    * ``ndwi = (B3 - B8) / (B3 + B8)`` — McFeeters (1996), open water is positive.
    * ``ndvi = (B8 - B4) / (B8 + B4)`` — Rouse et al. (1974), vegetation is high.
    * ``ndgi = (B3 - B4) / (B3 + B4)`` — Keshri et al. (2009), separates ice from debris and rock.
    * ``ratio_red_swir = B4 / (B11 + eps)`` — red/SWIR band ratio (Paul et al. 2002): clean ice >> rock, debris.
    * ``ratio_nir_swir = B8 / (B11 + eps)`` — NIR/SWIR ratio, the Sentinel-2 analogue of Landsat TM4/TM5.

    See the module docstring for the zero-denominator rules.

    Args:
        bands: Band name -> reflectance array; needs B3, B4, B8 and B11 (all of one shape, NaN for nodata).

    Returns:
        Layer name (:data:`INDEX_LAYERS` order) -> float32 array of the input shape.

    Raises:
        KeyError: a required band is missing (the message lists what was given).
    """
    needed = sorted({b for a, c, _ in INDEX_DEFINITIONS.values() for b in (a, c)})
    missing = [b for b in needed if b not in bands]
    if missing:
        raise KeyError(f"spectral indices need Sentinel-2 bands {missing}; got {sorted(bands)}")
    out: dict[str, np.ndarray] = {}
    for name, (a, b, kind) in INDEX_DEFINITIONS.items():
        fn = normalized_difference if kind == "nd" else band_ratio
        out[name] = fn(bands[a], bands[b]).astype(np.float32)
    return out
