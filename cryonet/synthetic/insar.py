"""A simulated 12-day Sentinel-1 interferometric pair: coherence and wrapped phase.

The pair is simulated as two complex single-look images on the 10 m master grid whose correlation is the true
coherence of each cell, then multilooked (4 x 4 looks) onto a 40 m grid. Coherence is estimated from the looks
(with its real small-sample bias: low coherence reads high) and the phase is the argument of the multilooked
interferogram, so its noise follows the coherence-dependent phase distribution by construction.

True coherence = temporal (surface type: stable rock high, vegetation and snow lower, water ~0, glacier ice
decorrelated by flow and melt, slow debris-covered tongues in between) x geometric (layover and radar shadow on
slopes facing towards / away from the sensor). Phase = topographic phase (residual of the baseline) + line-of-sight
glacier motion + an atmospheric screen (turbulent + stratified).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryonet.synthetic.glaciers import GlacierField, Surface
from cryonet.synthetic.terrain import fractal_noise, slope_aspect

logger = logging.getLogger(__name__)

#: Sentinel-1 C-band wavelength, metres.
WAVELENGTH_M: float = 0.05547
#: Incidence angle at the scene centre (interferometric wide swath, mid-range), degrees.
INCIDENCE_DEG: float = 39.0
#: Slant range to the scene centre, metres.
SLANT_RANGE_M: float = 880_000.0
#: Revisit interval of the pair, days.
TEMPORAL_BASELINE_DAYS: int = 12
#: Looks per side when multilooking from the 10 m grid (4 x 4 -> 40 m).
LOOKS: int = 4

#: 12-day temporal coherence of each surface type (before motion and geometry).
TEMPORAL_COHERENCE: dict[Surface, float] = {
    Surface.BEDROCK: 0.85,
    Surface.SEDIMENT: 0.78,
    Surface.VEGETATION: 0.35,
    Surface.SNOW: 0.35,
    Surface.FIRN: 0.25,
    Surface.ICE: 0.35,  # melt and flow; multiplied by the motion term
    Surface.DEBRIS: 0.50,  # surface lowering, ice-cliff backwasting; multiplied by the motion term
    Surface.ICE_CLIFF: 0.10,
    Surface.LAKE: 0.04,
    Surface.POND: 0.04,
    Surface.RIVER: 0.04,
}
#: Speed (m per year) at which flow decorrelates the pair to 1/e (strain and rotation within a resolution cell).
MOTION_DECORRELATION_M_PER_YR: float = 30.0


@dataclass
class Interferogram:
    """Multilooked interferometric products on the 40 m grid of the master extent.

    Attributes:
        coherence: ``(rows, cols)`` float32 estimated coherence, 0-1.
        phase: ``(rows, cols)`` float32 wrapped phase, radians in [-pi, pi).
        perpendicular_baseline_m: Perpendicular baseline of the pair, metres.
        height_of_ambiguity_m: Elevation difference giving one fringe, metres.
        look_azimuth_deg: Horizontal look direction of the radar (ground towards sensor reversed), degrees from north.
    """

    coherence: np.ndarray
    phase: np.ndarray
    perpendicular_baseline_m: float
    height_of_ambiguity_m: float
    look_azimuth_deg: float


def true_coherence(glaciers: GlacierField, look_azimuth_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Expected coherence of every 10 m cell (temporal x motion x geometric).

    Args:
        glaciers: Surface types, velocity and surface elevation on the master grid.
        look_azimuth_deg: Direction in which the radar looks (from the sensor to the ground), degrees from north.
        rng: Random generator (consumed).

    Returns:
        ``(rows, cols)`` float32 coherence 0-1.
    """
    surface = glaciers.surface
    table = np.zeros(len(Surface), dtype=np.float32)
    for s, g in TEMPORAL_COHERENCE.items():
        table[int(s)] = g
    gamma = table[surface]
    # Partly vegetated ground: mixture of soil and plants.
    veg = glaciers.veg_fraction
    gamma = np.where(veg > 0, (1 - veg) * TEMPORAL_COHERENCE[Surface.SEDIMENT] + veg * 0.25, gamma)
    # Flow: decorrelation grows with speed.
    gamma = gamma * np.exp(-glaciers.velocity / MOTION_DECORRELATION_M_PER_YR)
    # Spatial variability of the scatterers (soil moisture, wind crust, small changes).
    gamma = gamma * (1 + 0.10 * fractal_noise(surface.shape, rng, beta=2.5, min_wavelength_px=3))

    # Geometry: local incidence from the surface normal and the direction to the sensor.
    slope, aspect = slope_aspect(glaciers.z)
    theta = np.radians(INCIDENCE_DEG)
    look = np.radians(look_azimuth_deg)
    # Unit vector from the ground to the sensor (east, north, up): opposite to the look direction, and up.
    sx, sy, sz = -np.sin(theta) * np.sin(look), -np.sin(theta) * np.cos(look), np.cos(theta)
    nx, ny, nz = np.sin(slope) * np.sin(aspect), np.sin(slope) * np.cos(aspect), np.cos(slope)
    cos_loc = nx * sx + ny * sy + nz * sz
    local_inc = np.degrees(np.arccos(np.clip(cos_loc, -1, 1)))
    geom = np.ones_like(gamma)
    geom = np.where(local_inc < 15, 0.3 + 0.7 * np.clip(local_inc / 15, 0, 1), geom)  # foreshortening / layover
    # Layover: slopes facing the sensor steeper than the incidence angle (local incidence "negative").
    facing = np.cos(aspect - (look + np.pi))
    layover = (np.degrees(slope) > INCIDENCE_DEG) & (facing > 0.5)
    geom = np.where(layover, 0.25, geom)
    shadow = local_inc > 88
    geom = np.where(shadow, 0.08, geom)
    return np.clip(gamma * geom, 0.0, 0.98).astype(np.float32)


def simulate_pair(glaciers: GlacierField, *, look_azimuth_deg: float, rng: np.random.Generator) -> Interferogram:
    """Simulate the pair on the master grid and multilook it to 40 m.

    Args:
        glaciers: Surfaces, surface elevation (metres) and velocity (m/yr) on the 10 m master grid; its shape must
            be divisible by :data:`LOOKS`.
        look_azimuth_deg: Horizontal look direction of the radar, degrees from north (ascending right-looking
            Sentinel-1: about 78 deg).
        rng: Random generator (consumed).

    Returns:
        The :class:`Interferogram` on the ``(rows / 4, cols / 4)`` grid.
    """
    rows, cols = glaciers.z.shape
    if rows % LOOKS or cols % LOOKS:
        raise ValueError(f"master grid {rows}x{cols} is not divisible by the {LOOKS} looks")
    gamma = true_coherence(glaciers, look_azimuth_deg, rng)

    b_perp = float(rng.uniform(25.0, 70.0))
    theta = np.radians(INCIDENCE_DEG)
    hoa = WAVELENGTH_M * SLANT_RANGE_M * np.sin(theta) / (2 * b_perp)
    phi_topo = 2 * np.pi * glaciers.z / hoa
    # Glacier motion: surface-parallel flow downslope of the smoothed surface, projected on the line of sight.
    slope, aspect = slope_aspect(ndimage.gaussian_filter(glaciers.z, 5.0))
    disp = glaciers.velocity * TEMPORAL_BASELINE_DAYS / 365.25  # metres in 12 days
    look = np.radians(look_azimuth_deg)
    sx, sy, sz = -np.sin(theta) * np.sin(look), -np.sin(theta) * np.cos(look), np.cos(theta)
    dx = disp * np.cos(slope) * np.sin(aspect)
    dy = disp * np.cos(slope) * np.cos(aspect)
    dz = -disp * np.sin(slope)
    towards_sensor = dx * sx + dy * sy + dz * sz
    phi_defo = 4 * np.pi / WAVELENGTH_M * towards_sensor
    # Atmosphere: turbulent screen (~0.6 rad) and a stratified delay difference (~0.8 rad per km).
    phi_atmo = 0.6 * fractal_noise(glaciers.z.shape, rng, beta=3.5, min_wavelength_px=30)
    phi_atmo = phi_atmo + 0.8e-3 * (glaciers.z - float(glaciers.z.mean()))
    phi = (phi_topo + phi_defo + phi_atmo).astype(np.float64)

    shape = (rows, cols)
    s1 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    n2 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    g = gamma.astype(np.float64)
    s2 = (g * s1 + np.sqrt(1 - g**2) * n2) * np.exp(-1j * phi)
    ifg = s1 * np.conj(s2)

    def looks(a: np.ndarray) -> np.ndarray:
        return a.reshape(rows // LOOKS, LOOKS, cols // LOOKS, LOOKS).sum(axis=(1, 3))

    num = looks(ifg)
    den = np.sqrt(looks(np.abs(s1) ** 2) * looks(np.abs(s2) ** 2))
    coherence = np.clip(np.abs(num) / den, 0, 1).astype(np.float32)
    phase = np.angle(num).astype(np.float32)
    phase[phase >= np.pi] = -np.pi  # [-pi, pi)
    return Interferogram(
        coherence=coherence,
        phase=phase,
        perpendicular_baseline_m=b_perp,
        height_of_ambiguity_m=float(hoa),
        look_azimuth_deg=float(look_azimuth_deg),
    )
