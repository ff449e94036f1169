"""Sentinel-2 L2A surface reflectance of the synthetic scene: spectra, topographic illumination, sensor noise.

* Every surface type has a reflectance spectrum for the ten bands (:data:`cryonet.constants.S2_BANDS`), with values
  in the range of laboratory and field spectra (USGS / ASTER spectral libraries; glacier-surface field spectra):
  snow and firn very bright in the visible and dark in the SWIR, bare ice darker and very dark in the SWIR, rock
  flat and moderately bright with a rise into the SWIR, vegetation with a red edge, turbid glacial water
  greenish-turquoise and dark beyond the red, proglacial streams (more sediment-laden than lakes) a little brighter.
* The scene is a late-summer acquisition: snow on the accumulation areas and seasonal snow off the glaciers at the
  same elevations are one metamorphosed snowpack with one spectrum. In real imagery the glacier outline is not
  visible in the reflectance where snow crosses it (Paul et al. 2013, Ann. Glaciol. 54(63), 171-182); a twin that
  gave off-glacier snow a fresh-snow spectrum would let a per-pixel classifier find that outline.
* Debris on the glacier, moraine/scree and bedrock share one family of rock spectra. They differ only slightly
  (debris is a little darker and moister, with a small ice fraction near ice cliffs), and spatially varying
  lithology, iron staining and moisture spread each of them into a broad distribution: spectrally they overlap, as
  they do in real imagery.
* L2A reflectance is not terrain-corrected: the topographic effect (direct irradiance on slope, cast shadows, diffuse
  sky light from the visible sky, light reflected by the surrounding terrain) multiplies every band.
* Sensor noise (signal-dependent, per band) is added at each band's native resolution.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
from scipy import ndimage

from cryonet.constants import S2_BANDS
from cryonet.synthetic.glaciers import GlacierField, Surface
from cryonet.synthetic.terrain import PIXEL_M, fractal_noise, slope_aspect

logger = logging.getLogger(__name__)

#: Reflectance spectra (0-1) per surface type, in the order of :data:`cryonet.constants.S2_BANDS`
#: (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12).
SPECTRA: dict[Surface, tuple[float, ...]] = {
    Surface.FIRN: (0.78, 0.76, 0.73, 0.70, 0.67, 0.63, 0.58, 0.54, 0.05, 0.035),
    Surface.ICE: (0.52, 0.48, 0.40, 0.36, 0.31, 0.27, 0.22, 0.20, 0.02, 0.015),
    Surface.BEDROCK: (0.12, 0.15, 0.18, 0.20, 0.22, 0.235, 0.245, 0.255, 0.29, 0.23),
    Surface.SEDIMENT: (0.13, 0.16, 0.19, 0.21, 0.225, 0.24, 0.25, 0.26, 0.285, 0.225),
    Surface.DEBRIS: (0.11, 0.133, 0.156, 0.174, 0.188, 0.202, 0.211, 0.22, 0.25, 0.197),
    Surface.VEGETATION: (0.035, 0.07, 0.045, 0.12, 0.26, 0.31, 0.34, 0.35, 0.19, 0.09),
    Surface.LAKE: (0.07, 0.11, 0.085, 0.05, 0.03, 0.025, 0.02, 0.018, 0.005, 0.003),
    Surface.POND: (0.10, 0.13, 0.12, 0.09, 0.06, 0.05, 0.045, 0.04, 0.01, 0.006),
}
#: Late-summer snow off the glaciers: the same snowpack as on the accumulation areas (see the module docstring).
SPECTRA[Surface.SNOW] = SPECTRA[Surface.FIRN]
#: Proglacial meltwater stream: suspended sediment makes it brighter than a lake in the visible and red edge.
SPECTRA[Surface.RIVER] = (0.10, 0.14, 0.13, 0.10, 0.07, 0.055, 0.05, 0.045, 0.012, 0.008)
#: Exposed ice in ice cliffs: dirty ice, a mixture of bare ice and debris.
SPECTRA[Surface.ICE_CLIFF] = tuple(
    0.55 * i + 0.45 * d for i, d in zip(SPECTRA[Surface.ICE], SPECTRA[Surface.DEBRIS], strict=True)
)

#: Share of diffuse sky irradiance in the total irradiance per band (higher in the blue: Rayleigh scattering).
DIFFUSE_FRACTION: tuple[float, ...] = (0.20, 0.16, 0.12, 0.10, 0.09, 0.08, 0.08, 0.07, 0.04, 0.03)


@numba.njit(parallel=True, cache=True)
def _cast_shadow(  # pragma: no cover
    z: np.ndarray, dx: float, dy: float, rise_per_step: float, zmax: float
) -> np.ndarray:
    rows, cols = z.shape
    out = np.zeros((rows, cols), dtype=np.bool_)
    for r in numba.prange(rows):
        for c in range(cols):
            h = z[r, c]
            x = c + 0.5
            y = r + 0.5
            while True:
                x += dx
                y += dy
                h += rise_per_step
                if h > zmax:
                    break
                ci = int(x)
                ri = int(y)
                if x < 0 or y < 0 or ci >= cols or ri >= rows:
                    break
                if z[ri, ci] > h:
                    out[r, c] = True
                    break
    return out


def cast_shadow(
    z: np.ndarray, sun_azimuth_deg: float, sun_elevation_deg: float, pixel_m: float = PIXEL_M
) -> np.ndarray:
    """Cells in the shadow cast by the terrain (a ray marched towards the sun from every cell).

    Hand-written in numba because the march is a per-cell loop with early exit; numpy would need one full-array
    shift per step (hundreds of steps on a Himalayan DEM).

    Args:
        z: ``(rows, cols)`` elevation, metres, north up.
        sun_azimuth_deg: Sun azimuth, degrees clockwise from north.
        sun_elevation_deg: Sun elevation, degrees.
        pixel_m: Cell size, metres.

    Returns:
        ``(rows, cols)`` boolean, True in cast shadow.
    """
    az = np.radians(sun_azimuth_deg)
    dx, dy = float(np.sin(az)), float(-np.cos(az))  # one cell towards the sun (columns east, rows south)
    rise = float(np.tan(np.radians(sun_elevation_deg)) * pixel_m)
    zz = np.ascontiguousarray(z, dtype=np.float64)
    return _cast_shadow(zz, dx, dy, rise, float(zz.max()))


def illumination(z: np.ndarray, sun_azimuth_deg: float, sun_elevation_deg: float) -> np.ndarray:
    """Relative irradiance of every cell and band compared with flat, unobstructed ground.

    ``E = (1 - f_d) * cos(i) / cos(z_sun) * (not in shadow) + f_d * V + 0.1 * (1 - V)``, with the local incidence
    angle ``i`` from slope and aspect, the diffuse fraction ``f_d`` per band, the sky-view factor
    ``V = (1 + cos(slope)) / 2`` and a small term for light reflected from the surrounding terrain.

    Args:
        z: ``(rows, cols)`` elevation, metres.
        sun_azimuth_deg: Sun azimuth, degrees clockwise from north.
        sun_elevation_deg: Sun elevation, degrees.

    Returns:
        ``(bands, rows, cols)`` float32 factor, bands in :data:`cryonet.constants.S2_BANDS` order.
    """
    slope, aspect = slope_aspect(z)
    zen = np.radians(90.0 - sun_elevation_deg)
    az = np.radians(sun_azimuth_deg)
    cos_i = np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(az - aspect)
    shadow = cast_shadow(z, sun_azimuth_deg, sun_elevation_deg)
    direct = (np.clip(cos_i, 0, None) * ~shadow / np.cos(zen)).astype(np.float32)
    svf = ((1 + np.cos(slope)) / 2).astype(np.float32)
    out = np.empty((len(DIFFUSE_FRACTION), *z.shape), dtype=np.float32)
    for b, fd in enumerate(DIFFUSE_FRACTION):  # band by band in float32: a tenth of the memory traffic
        out[b] = (1 - fd) * direct + fd * svf + 0.1 * (1 - svf)
    return out


def intrinsic_reflectance(glaciers: GlacierField, rng: np.random.Generator) -> np.ndarray:
    """Surface reflectance of every cell on flat ground, before illumination.

    Spatial variability: lithology (brightness, +-18 %), iron staining (visible slope), moisture (darkens, most in
    the SWIR) and grain-scale speckle for the rock surfaces; dust and grain size for snow and ice; turbidity for water;
    cover fraction for vegetation (mixed with soil).

    Returns:
        ``(bands, rows, cols)`` float32 reflectance 0-1.
    """
    surface = glaciers.surface
    shape = surface.shape
    n_bands = len(S2_BANDS)
    table = np.zeros((len(Surface), n_bands), dtype=np.float32)
    for s, spec in SPECTRA.items():
        table[int(s)] = spec
    wavelengths = (492, 560, 665, 704, 740, 783, 833, 865, 1614, 2202)  # nm, S2_BANDS order

    rock = np.isin(surface, [Surface.BEDROCK, Surface.SEDIMENT, Surface.DEBRIS, Surface.ICE_CLIFF, Surface.VEGETATION])
    lith = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=8)
    iron = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=12)
    moist = fractal_noise(shape, rng, beta=2.5, min_wavelength_px=4)
    grain = fractal_noise(shape, rng, beta=1.0, min_wavelength_px=2)
    # Debris is moister on average (melt water, fine matrix) - a small shift inside a broad distribution.
    wet = np.clip(0.5 + 0.25 * moist + 0.08 * (surface == Surface.DEBRIS), 0, 1).astype(np.float32)
    base = ((1 + 0.18 * lith) * (1 + 0.06 * grain)).astype(np.float32)
    veg = glaciers.veg_fraction
    vegetated = veg > 0
    veg_surface = surface == Surface.VEGETATION
    cryo = np.isin(surface, [Surface.SNOW, Surface.FIRN, Surface.ICE])
    dust = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=6)
    water = np.isin(surface, [Surface.LAKE, Surface.POND, Surface.RIVER])
    turbidity = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=4)

    refl = np.empty((n_bands, *shape), dtype=np.float32)
    for b, wl in enumerate(wavelengths):  # band by band, float32: 2-D temporaries only
        r = table[:, b][surface]
        # Rock: lithology, iron staining (visible slope), moisture (darkens, most in the SWIR), grain speckle.
        factor = base * (1 + 0.06 * float(np.clip((wl - 800) / 800, -0.5, 1.0)) * iron)
        factor *= 1 - 0.15 * (1.6 if wl > 1500 else 1.0) * wet
        r = np.where(rock, r * factor, r)
        # Vegetation: linear mixture of plants and soil.
        soil = SPECTRA[Surface.SEDIMENT][b] * factor
        plants = SPECTRA[Surface.VEGETATION][b] * (1 + 0.12 * iron)
        r = np.where(vegetated, veg * plants + (1 - veg) * np.where(veg_surface, soil, r), r)
        # Snow, firn, ice: dust darkens the visible, grain size the NIR/SWIR.
        cryo_f = (1 + 0.05 * (-1.0 if wl < 700 else 0.3) * dust) * (1 + 0.08 * (1.0 if wl > 700 else 0.3) * lith)
        r = np.where(cryo, r * cryo_f, r)
        # Water: suspended sediment raises green/red reflectance.
        r = np.where(water, r * (1 + 0.2 * (1.0 if wl < 900 else 0.3) * turbidity), r)
        refl[b] = np.clip(r, 0.001, 1.2)
    return refl


def add_sensor_noise(refl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add radiometric noise: Gaussian with sd ``0.002 + 0.008 * reflectance`` (SNR of roughly 100-200).

    Args:
        refl: ``(rows, cols)`` reflectance of one band at its native resolution.
        rng: Random generator (consumed).

    Returns:
        Noisy reflectance, same shape, float32.
    """
    return (refl + rng.standard_normal(refl.shape).astype(np.float32) * (0.002 + 0.008 * refl)).astype(np.float32)


def boa_reflectance(
    glaciers: GlacierField, sun_azimuth_deg: float, sun_elevation_deg: float, rng: np.random.Generator
) -> np.ndarray:
    """Bottom-of-atmosphere reflectance as an L2A product reports it over rugged terrain (noise-free, 10 m).

    Args:
        glaciers: Surfaces and surface elevation on the master grid.
        sun_azimuth_deg: Sun azimuth, degrees clockwise from north.
        sun_elevation_deg: Sun elevation, degrees.
        rng: Random generator (consumed).

    Returns:
        ``(bands, rows, cols)`` float32 reflectance on the master grid, before sensor noise.
    """
    out = intrinsic_reflectance(glaciers, rng)
    out *= illumination(glaciers.z, sun_azimuth_deg, sun_elevation_deg)
    # A slight point-spread blur (MTF of the instrument), ~0.4 pixel.
    for b in range(out.shape[0]):
        out[b] = ndimage.gaussian_filter(out[b], 0.4)
    return out
