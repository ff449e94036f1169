"""Tasseled-cap brightness, greenness and wetness for Sentinel-2.

Coefficients: Nedkov, R. (2017). *Orthogonal transformation of segmented images from the satellite Sentinel-2.*
Comptes rendus de l'Académie bulgare des Sciences, 70(5), 687-692. The table below is the published one, in the
paper's band order B1 ... B12, B8A (13 bands); the same values are used by GRASS GIS ``i.tasscap``
(``sensor=sentinel2``).

Two departures from the paper's setting, both documented where the layers are described:

* The companion's stack holds the ten 10/20 m bands. The 60 m atmospheric bands B1 (coastal aerosol), B9 (water
  vapour) and B10 (cirrus; not delivered in L2A products at all) are absent, so their terms are left out: the
  components are the published linear combinations restricted to the ten bands. The omitted weights are small
  (largest: B9 0.0949 in brightness, B1 0.0649 in wetness, B10 <= 0.0009), so the components keep their meaning
  but are not numerically identical to a 13-band transform. Pass B1/B9/B10 to :func:`tasseled_cap` if you have them.
* Nedkov derived the coefficients for Level-1C top-of-atmosphere reflectance; here they are applied to Level-2A
  surface reflectance, as is common practice (the transform is a fixed rotation; its axes stay interpretable).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import numpy as np

logger = logging.getLogger(__name__)

#: Band order of the published table.
NEDKOV_BANDS: Final[tuple[str, ...]] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B8A",
)  # fmt: skip

#: Nedkov (2017) coefficients, rows brightness, greenness, wetness; columns :data:`NEDKOV_BANDS`.
NEDKOV_2017: Final[dict[str, tuple[float, ...]]] = {
    "tc_brightness": (
        0.0356, 0.0822, 0.1360, 0.2611, 0.2964, 0.3338, 0.3877, 0.3895, 0.0949, 0.0009, 0.3882, 0.1366, 0.4750,
    ),
    "tc_greenness": (
        -0.0635, -0.1128, -0.1680, -0.3480, -0.3303, 0.0852, 0.3302, 0.3165, 0.0467, -0.0009, -0.4578, -0.4064,
        0.3625,
    ),
    "tc_wetness": (
        0.0649, 0.1363, 0.2802, 0.3072, 0.5288, 0.1379, -0.0001, -0.0807, -0.0302, 0.0003, -0.4064, -0.5602,
        -0.1389,
    ),
}  # fmt: skip

#: Output layer names, in stack order.
TC_LAYERS: Final[tuple[str, ...]] = tuple(NEDKOV_2017)
#: Units of each layer (the components are linear combinations of reflectance).
TC_UNITS: Final[dict[str, str]] = {name: "reflectance (linear combination)" for name in TC_LAYERS}

#: Bands whose weights are required; the others may be missing (see module docstring).
_REQUIRED: Final[tuple[str, ...]] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def coefficient_matrix(bands: tuple[str, ...]) -> np.ndarray:
    """The ``(3, len(bands))`` coefficient matrix restricted to ``bands`` (in that order)."""
    unknown = [b for b in bands if b not in NEDKOV_BANDS]
    if unknown:
        raise KeyError(f"bands {unknown} have no tasseled-cap coefficient; expected names from {NEDKOV_BANDS}")
    idx = [NEDKOV_BANDS.index(b) for b in bands]
    return np.array([[row[i] for i in idx] for row in NEDKOV_2017.values()], dtype=np.float64)


def tasseled_cap(bands: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Brightness, greenness and wetness from Sentinel-2 reflectance.

    Args:
        bands: Band name -> reflectance (0-1) arrays of one shape, NaN for nodata. Must contain the ten 10/20 m
            bands; B1, B9 and B10 are used when present and otherwise left out (see module docstring).

    Returns:
        ``{"tc_brightness", "tc_greenness", "tc_wetness"}`` -> float32 arrays; NaN wherever any used band is NaN.
    """
    missing = [b for b in _REQUIRED if b not in bands]
    if missing:
        raise KeyError(f"tasseled cap needs Sentinel-2 bands {missing}; got {sorted(bands)}")
    used = tuple(b for b in NEDKOV_BANDS if b in bands)
    omitted = [b for b in NEDKOV_BANDS if b not in bands]
    if omitted:
        logger.debug("tasseled cap: bands %s absent, their terms are left out", omitted)
    coeffs = coefficient_matrix(used)
    stack = np.stack([np.asarray(bands[b], dtype=np.float64) for b in used])  # (bands, ...)
    out = np.tensordot(coeffs, stack, axes=(1, 0))  # (3, ...); NaN propagates through the sum
    return {name: out[i].astype(np.float32) for i, name in enumerate(TC_LAYERS)}
