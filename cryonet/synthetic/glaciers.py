"""Glaciers, debris cover and lakes on the synthetic terrain, from a mass budget along each valley.

Physical picture (deliberately simple, but every quantity has a meaning):

* Surface mass balance is piecewise linear in elevation, ``b(z) = beta * (z - ELA)`` (m w.e. per year), with a
  steeper gradient below the ELA than above it, and capped in the accumulation zone. Cells above the ELA that are
  not too steep for ice to stay (< 40 deg, smoothed) accumulate.
* Down each valley the balance flux ``Q`` (m^3 w.e. per year) is integrated from the head: accumulation cells feed
  the point of the valley axis they are nearest to, the tongue (the flat valley floor) adds its own balance. The
  terminus is where ``Q`` reaches zero. Tributary glaciers that reach their confluence pass their flux on.
* Debris: steep rock walls in a catchment supply rock to the ice; the debris melts out in the ablation zone and
  covers the tongue where a large enough share of the ice flux has melted (``r = melted / (melted + Q)``), sooner
  for catchments with more headwall. Debris cover reduces melt (Ostrem curve), which lengthens debris-covered
  tongues. Ice surfaces are smooth and gently sloping; debris surfaces are hummocky.
* Lakes: moraine-dammed proglacial lakes form at the termini of debris-covered tongues (region's lake propensity);
  supraglacial ponds with ice cliffs on their up-glacier side pit the debris.
* Meltwater streams leave every terminus (through the moraine dam where there is a lake) and run down the valley
  floor, joining the trunk valley's stream at confluences; they widen downstream and braid. They are water but not
  glacial lakes: background in the reference, as in glacial-lake inventories.
* Surface velocity from the balance flux through the tongue cross-section drives InSAR decorrelation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy import ndimage

from cryonet.constants import CLASS_IDS
from cryonet.regions import Region
from cryonet.synthetic.terrain import PIXEL_M, Terrain, fractal_noise, slope_aspect

logger = logging.getLogger(__name__)

#: Mass-balance gradient below the ELA, m w.e. per metre of elevation per year (Himalayan / Alpine tongues).
ABLATION_GRADIENT: float = 0.009
#: Mass-balance gradient above the ELA, m w.e. per metre per year (accumulation rises more slowly than melt falls).
ACCUMULATION_GRADIENT: float = 0.002
#: Maximum accumulation rate, m w.e. per year.
MAX_ACCUMULATION: float = 0.6
#: Ratio of melt under thick debris to melt of bare ice (Ostrem curve, debris thicker than ~10 cm).
DEBRIS_MELT_FACTOR: float = 0.35
#: Steepest slope that holds ice or perennial snow, degrees.
MAX_ICE_SLOPE_DEG: float = 40.0
#: Slope from which a wall counts as a debris-supplying headwall, degrees.
HEADWALL_SLOPE_DEG: float = 40.0
#: Smallest ice body kept as a glacier, km^2 (smaller ones are perennial snow patches, background).
MIN_GLACIER_KM2: float = 0.05


class Surface(IntEnum):
    """Surface types of the master grid; they set spectra (optics) and coherence (InSAR)."""

    BEDROCK = 0
    SEDIMENT = 1  # moraine, scree, outwash: bare loose rock (spectrally like debris)
    VEGETATION = 2
    SNOW = 3  # seasonal / perennial snow off the glaciers
    FIRN = 4  # glacier surface above the snow line
    ICE = 5  # bare glacier ice
    DEBRIS = 6  # debris-covered glacier ice
    ICE_CLIFF = 7  # exposed ice in the debris cover
    LAKE = 8  # proglacial, moraine-dammed lake
    POND = 9  # supraglacial pond
    RIVER = 10  # proglacial meltwater stream on the valley floor (background: not a glacial lake)


@dataclass
class GlacierField:
    """Glaciers and surface types on the master grid.

    Attributes:
        z: ``(rows, cols)`` float32 surface elevation (ice, debris, lake levels, moraines), metres.
        surface: ``(rows, cols)`` uint8 :class:`Surface` codes.
        classes: ``(rows, cols)`` uint8 label (0 background, 1 clean ice, 2 debris, 3 lake).
        glacier_id: ``(rows, cols)`` int32 glacier number (0 = no glacier); covers clean ice, debris and ponds.
        lake_id: ``(rows, cols)`` int32 lake number (0 = no lake).
        lake_types: Lake number -> ``"proglacial"`` or ``"supraglacial"``.
        velocity: ``(rows, cols)`` float32 surface speed, metres per year (0 off the glaciers).
        veg_fraction: ``(rows, cols)`` float32 vegetation cover 0-1 (off the glaciers).
        debris_supply: Valley id -> relative debris supply of its catchment (for the metadata).
    """

    z: np.ndarray
    surface: np.ndarray
    classes: np.ndarray
    glacier_id: np.ndarray
    lake_id: np.ndarray
    lake_types: dict[int, str]
    velocity: np.ndarray
    veg_fraction: np.ndarray
    debris_supply: dict[int, float] = field(default_factory=dict)


def _blob(
    rr: np.ndarray, cc: np.ndarray, r0: float, c0: float, radius_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of an irregular disk (radius modulated by a few random harmonics) over cells ``rr, cc``."""
    ang = np.arctan2(rr - r0, cc - c0)
    rad = radius_px * (
        1 + sum(rng.uniform(-0.18, 0.18) * np.cos(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    )
    return np.hypot(rr - r0, cc - c0) <= rad


def make_glaciers(region: Region, terrain: Terrain, rng: np.random.Generator) -> GlacierField:
    """Grow glaciers, debris, lakes and surface types on ``terrain``.

    Args:
        region: Region preset (ELA, treeline, debris and lake propensity).
        terrain: Bare terrain with its valley network.
        rng: Random generator (consumed).

    Returns:
        The :class:`GlacierField`.
    """
    z0 = terrain.z
    shape = z0.shape
    rows, cols = shape
    ela = region.ela_m
    cell_area = PIXEL_M * PIXEL_M
    slope, _ = slope_aspect(z0)
    slope_deg = np.degrees(slope)
    # An irregular snow line: the ELA varies by aspect/shading; +-40 m of smooth noise stands in for that.
    ela_field = ela + 40.0 * fractal_noise(shape, rng, beta=3.0, min_wavelength_px=15)
    dz = z0 - ela_field
    balance = np.clip(np.where(dz > 0, ACCUMULATION_GRADIENT, ABLATION_GRADIENT) * dz, -15.0, MAX_ACCUMULATION)

    nearest = terrain.nearest
    dist = terrain.dist_m
    n_pts = len(terrain.pt_line)
    n_lines = len(terrain.line_parent)
    half = terrain.pt_halfwidth[nearest]
    floor_cell = dist <= half
    slope_smooth = ndimage.gaussian_filter(slope_deg, 2.0)
    acc_cell = (z0 > ela_field) & (slope_smooth < MAX_ICE_SLOPE_DEG) & ~floor_cell
    acc_cell = ndimage.binary_opening(acc_cell, iterations=2)
    flat_near = nearest.ravel()
    acc_b = np.bincount(flat_near, weights=(balance * acc_cell).ravel() * cell_area, minlength=n_pts)
    tongue_b = np.bincount(flat_near, weights=(balance * floor_cell).ravel() * cell_area, minlength=n_pts)

    # Debris supply of each catchment: share of steep headwalls among its cells near and above the snow line.
    line_of_cell = terrain.pt_line[nearest]
    high = z0 > ela - 300.0
    steep_high = high & (slope_deg > HEADWALL_SLOPE_DEG)
    n_high = np.bincount(line_of_cell[high], minlength=n_lines)
    n_steep = np.bincount(line_of_cell[steep_high], minlength=n_lines)
    wall_frac = n_steep / np.maximum(n_high, 1)
    supply = region.debris_propensity * np.sqrt(wall_frac / 0.2)
    r_onset = np.clip(1.0 - 0.75 * supply, 0.1, 0.95)

    # March down every valley (tributaries first: their outflow feeds the trunk at the confluence).
    glaciated = np.zeros(n_pts, dtype=bool)
    debris_pt = np.zeros(n_pts, dtype=bool)
    flux = np.zeros(n_pts)
    melted_share = np.zeros(n_pts)
    inflow = np.zeros(n_pts)
    terminus = np.full(n_lines, -1, dtype=np.int64)
    order = sorted(range(n_lines), key=lambda li: terrain.line_parent[li] < 0)
    for li in order:
        idx = np.flatnonzero(terrain.pt_line == li)
        q, melted = 0.0, 0.0
        last = -1
        started = False
        for p in idx:
            q += acc_b[p] + inflow[p]
            b = tongue_b[p]
            share = melted / (melted + q) if q > 0 else 1.0
            is_debris = terrain.pt_floor[p] < ela and share >= r_onset[li]
            if b < 0 and is_debris:
                b *= DEBRIS_MELT_FACTOR
            q += b
            if b < 0:
                melted -= b
            if q <= 0.0:
                if started:  # the flux is spent: terminus
                    break
                q, melted = 0.0, 0.0  # no glacier yet (head below the snow line): nothing to carry downstream
                continue
            started = True
            glaciated[p], debris_pt[p], flux[p], melted_share[p] = True, is_debris, q, share
            last = p
        terminus[li] = last
        parent = terrain.line_parent[li]
        if parent >= 0 and last == idx[-1] and q > 0:
            inflow[terrain.line_junction[li]] += q

    # Tongue cells: the glacier narrows towards its terminus as the flux dwindles.
    q_max = np.zeros(n_lines)
    np.maximum.at(q_max, terrain.pt_line, flux)
    width_factor = np.clip((flux / np.maximum(q_max[terrain.pt_line], 1.0)) ** 0.3, 0.45, 1.0)
    tongue = glaciated[nearest] & (dist <= half * width_factor[nearest])
    # Where two valleys' nearest-point regions interleave (confluences) the margin is jagged: smooth it as ice would.
    disk = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3
    tongue = ndimage.binary_opening(ndimage.binary_closing(tongue, disk), disk)
    ice = tongue | acc_cell
    # Keep the ice bodies large enough to be glaciers; the rest is perennial snow.
    lab, n_lab = ndimage.label(ice, structure=np.ones((3, 3)))
    sizes = np.bincount(lab.ravel(), minlength=n_lab + 1) * cell_area / 1e6
    keep = sizes >= MIN_GLACIER_KM2
    keep[0] = False
    snow_patch = ice & ~keep[lab]
    ice &= keep[lab]

    # Debris-covered part of each tongue, plus lateral debris bands where the margins melt out earlier.
    rel_d = dist / np.maximum(half * width_factor[nearest], 1.0)
    below = terrain.pt_floor[nearest] < ela_field
    share_cell = melted_share[nearest]
    onset_cell = r_onset[terrain.pt_line[nearest]]
    debris = tongue & ice & below & (debris_pt[nearest] | ((rel_d > 0.7) & (share_cell >= 0.5 * onset_cell)))
    # Medial moraines and marginal irregularity: perturb the debris boundary with smooth noise.
    wobble = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=4, max_wavelength_px=40)
    debris_fuzzy = ndimage.binary_opening(debris, iterations=1) | (
        tongue & ice & below & (share_cell >= onset_cell * (1 + 0.25 * wobble)) & (rel_d > 0.2)
    )
    debris = ndimage.binary_opening(ndimage.binary_closing(debris_fuzzy, disk), disk) & ice & tongue

    # --- Surface elevation: smooth glacier surfaces, hummocky debris, moraines ------------------------------------
    z = z0.astype(np.float32).copy()
    sigma = max(3.0, float(np.median(terrain.pt_halfwidth)) / PIXEL_M / 4)
    z_smooth = ndimage.gaussian_filter(z0, sigma)
    # Tongues: a surface that follows the valley floor's long profile at the ice thickness, slightly convex across
    # (ice flattens the trough); accumulation basins: the smoothed terrain under a few tens of metres of firn.
    h_ice = np.clip(0.25 * half, 20, 150) * width_factor[nearest]
    z_tongue = terrain.pt_floor[nearest] + h_ice * (1 - 0.3 * np.clip(rel_d, 0, 1) ** 2)
    z_ice = np.where(tongue, z_tongue, z_smooth + 25.0).astype(np.float32)
    z_ice = ndimage.gaussian_filter(np.where(ice, z_ice, z), 5.0)
    w_ice = np.clip(ndimage.gaussian_filter(ice.astype(np.float32), 1.5) * 1.6, 0, 1)
    w_ice[ice] = 1.0
    z = z * (1 - w_ice) + z_ice * w_ice
    # Hummocky debris: band-passed noise of a few metres amplitude, 40-150 m wavelength.
    hummock = fractal_noise(shape, rng, beta=2.0, min_wavelength_px=6, max_wavelength_px=20)
    w_deb = ndimage.gaussian_filter(debris.astype(np.float32), 1.0)
    z += 3.0 * hummock * w_deb

    # Lateral and terminal moraines: ridges beside the tongues below the ELA, sediment on the valley floor below
    # the termini (outwash and dead-ice moraine, with smaller hummocks).
    d_ice = ndimage.distance_transform_edt(~ice) * PIXEL_M
    debris_near = ndimage.distance_transform_edt(~debris) * PIXEL_M < 400.0 if debris.any() else np.zeros(shape, bool)
    lateral = (~ice) & (d_ice > 0) & (d_ice <= 80.0) & below & (slope_deg < 42)
    ridge_h = np.where(debris_near, 30.0, 12.0) * np.sin(np.clip(d_ice / 80.0, 0, 1) * np.pi)
    z += (ridge_h * lateral).astype(np.float32)
    foreland = (~ice) & floor_cell & ~glaciated[nearest] & (z0 < ela)
    beyond_term = np.zeros(shape, dtype=bool)
    for li in range(n_lines):
        t = terminus[li]
        if t < 0:
            continue
        s_t = terrain.pt_s[t]
        s_cell = terrain.pt_s[nearest]
        on_line = (terrain.pt_line[nearest] == li) & (s_cell > s_t) & (s_cell < s_t + 1500)
        beyond_term |= on_line & floor_cell
    z += (2.0 * hummock * (foreland & beyond_term)).astype(np.float32)

    # --- Lakes --------------------------------------------------------------------------------------------------
    lake_id = np.zeros(shape, dtype=np.int32)
    lake_types: dict[int, str] = {}
    rr_all, cc_all = np.mgrid[0:rows, 0:cols]
    next_lake = 1
    # Proglacial lakes at debris-covered termini (at least one per scene where the region has lakes at all).
    cand = []
    for li in range(n_lines):
        t = terminus[li]
        if t < 0 or not debris_pt[t]:
            continue
        on = (terrain.pt_line[nearest] == li) & debris
        cand.append((int(on.sum()), li))
    cand.sort(reverse=True)
    for rank, (n_deb, li) in enumerate(cand):
        p_lake = min(1.0, region.lake_propensity * 0.8)
        if n_deb < 30 or (rank > 0 and rng.random() > p_lake) or (rank == 0 and region.lake_propensity <= 0):
            continue
        t = terminus[li]
        s_t = terrain.pt_s[t]
        deb_len = float(np.ptp(terrain.pt_s[np.flatnonzero((terrain.pt_line == li) & debris_pt)]))
        # Moraine-dammed lakes are elongated along the valley (the tongue has downwasted and retreated up it).
        width_t = 2 * float(terrain.pt_halfwidth[t])
        length = float(np.clip(rng.uniform(0.1, 0.25) * deb_len, min(1.2 * width_t, 0.3 * deb_len), 2000.0))
        s_cell = terrain.pt_s[nearest]
        on_line = terrain.pt_line[nearest] == li
        x = (s_cell - (s_t - length / 2)) / (length / 2)  # -1 .. 1 along the lake
        across = dist / np.maximum(half, 1.0)
        edge = 0.75 * np.sqrt(np.clip(1 - x**2, 0, 1)) * (1 + 0.15 * wobble)
        lake = on_line & (np.abs(x) <= 1) & (across <= edge) & (ice | floor_cell)
        if lake.sum() < 8:
            continue
        level = float(np.percentile(z[lake], 5)) + 1.0
        z[lake] = level
        # The moraine dam downstream stands above the lake level.
        # The moraine dam: a smooth arcuate ridge across the valley just downstream of the lake, standing above
        # the lake level and fading into the valley sides.
        ds = s_cell - s_t
        ridge = np.sin(np.clip(ds / 200.0, 0, 1) * np.pi) * np.clip(1 - (dist / (1.4 * half)) ** 4, 0, 1)
        dam = on_line & (ridge > 0)
        z[dam] = np.maximum(z[dam], level + 3.0 + 25.0 * ridge[dam]) * ridge[dam] + z[dam] * (1 - ridge[dam])
        lake_id[lake] = next_lake
        lake_types[next_lake] = "proglacial"
        next_lake += 1
        ice &= ~lake
        debris &= ~lake
    # Supraglacial ponds with ice cliffs on their up-glacier side.
    ice_cliff = np.zeros(shape, dtype=bool)
    debris_cells = np.flatnonzero(debris.ravel() & (lake_id.ravel() == 0))
    if debris_cells.size:
        n_ponds = rng.poisson(region.lake_propensity * debris_cells.size * cell_area / 1e6 * 3.0)
        if region.lake_propensity >= 0.5 and debris_cells.size * cell_area / 1e6 > 0.05:
            n_ponds = max(n_ponds, 2)  # pond-pitted tongues: a debris tongue this size is rarely without ponds
        n_cliffs = rng.poisson(debris_cells.size * cell_area / 1e6 * 10.0)
        for k in range(n_ponds + n_cliffs):
            c = int(rng.choice(debris_cells))
            r0, c0 = divmod(c, cols)
            radius = rng.uniform(1.5, 4.5)
            win = int(radius * 2 + 4)
            r_lo, r_hi = max(0, r0 - win), min(rows, r0 + win + 1)
            c_lo, c_hi = max(0, c0 - win), min(cols, c0 + win + 1)
            rr = rr_all[r_lo:r_hi, c_lo:c_hi]
            cc = cc_all[r_lo:r_hi, c_lo:c_hi]
            sub_deb = debris[r_lo:r_hi, c_lo:c_hi]
            blob = _blob(rr, cc, r0, c0, radius, rng) & sub_deb
            # The cliff faces down-glacier on the pond's up-glacier (higher) side.
            ring = _blob(rr, cc, r0, c0, radius + 1.5, rng) & ~blob & sub_deb
            zz = z[r_lo:r_hi, c_lo:c_hi]
            cliff = ring & (zz > np.median(zz[ring])) if ring.any() else ring
            ice_cliff[r_lo:r_hi, c_lo:c_hi] |= cliff
            if k < n_ponds and blob.sum() >= 3:
                zz[blob] = zz[blob].min() - 1.0
                lake_id[r_lo:r_hi, c_lo:c_hi][blob] = next_lake
                lake_types[next_lake] = "supraglacial"
                next_lake += 1
    ice_cliff &= debris & (lake_id == 0)

    # --- Proglacial streams -----------------------------------------------------------------------------------------
    # Valley-axis points downstream of a terminus carry meltwater; a tributary's stream continues down its parent
    # valley from the confluence. The channel is about 20 m wide below the terminus and widens to 40-60 m downstream
    # (distance scale 3 km), with braiding (smooth noise on the width).
    wet_pt = np.zeros(n_pts, dtype=bool)
    down_m = np.full(n_pts, np.inf)
    for li in sorted(range(n_lines), key=lambda k: terrain.line_parent[k] >= 0, reverse=True):  # tributaries first
        idx = np.flatnonzero(terrain.pt_line == li)
        t = terminus[li]
        if t >= 0:
            after = idx[terrain.pt_s[idx] > terrain.pt_s[t]]
            wet_pt[after] = True
            down_m[after] = np.minimum(down_m[after], terrain.pt_s[after] - terrain.pt_s[t])
        parent = terrain.line_parent[li]
        if parent >= 0 and wet_pt[idx[-1]]:
            j = terrain.line_junction[li]
            pidx = np.flatnonzero(terrain.pt_line == parent)
            below_j = pidx[pidx >= j]
            wet_pt[below_j] = True
            start = down_m[idx[-1]] - terrain.pt_s[j]
            down_m[below_j] = np.minimum(down_m[below_j], start + terrain.pt_s[below_j])
    braid = fractal_noise(shape, rng, beta=2.5, min_wavelength_px=3, max_wavelength_px=30)
    d_down = np.where(wet_pt[nearest], down_m[nearest], 0.0)
    half_w = (10.0 + 15.0 * np.tanh(d_down / 3000.0)) * (1.0 + 0.3 * braid)
    river = wet_pt[nearest] & floor_cell & (dist <= half_w) & ~ice & (lake_id == 0)
    river = ndimage.binary_opening(river, structure=np.ones((2, 2)))

    # --- Glacier ids, classes, velocity ---------------------------------------------------------------------------
    glacier_body = ice | ((lake_id > 0) & np.isin(lake_id, [k for k, v in lake_types.items() if v == "supraglacial"]))
    glacier_id, _ = ndimage.label(glacier_body, structure=np.ones((3, 3)))
    classes = np.zeros(shape, dtype=np.uint8)
    classes[glacier_body] = CLASS_IDS["clean_ice"]
    classes[debris & glacier_body] = CLASS_IDS["debris"]
    classes[lake_id > 0] = CLASS_IDS["lake"]

    # Balance velocity: ice flux / cross-section (surface speed = 1.25 x depth average), plug-like across.
    # Debris-covered tongues are out of balance (they thin in place rather than carry their balance flux), and
    # are observed to be near-stagnant: their speed is cut to a third.
    h_tongue = np.clip(0.4 * half, 30, 300)
    width = 2 * half * width_factor[nearest]
    v_tongue = flux[nearest] / 0.9 / np.maximum(width * h_tongue, 1.0) * 1.25 * np.clip(1 - rel_d**4, 0.2, 1)
    v_tongue = np.where(debris, v_tongue / 3.0, v_tongue)
    velocity = np.where(tongue & ice, v_tongue, 0.0)
    velocity = np.where(ice & ~tongue, 8.0 + 0.4 * slope_deg, velocity).astype(np.float32)
    velocity[lake_id > 0] = 0.0

    # --- Surface types --------------------------------------------------------------------------------------------
    s_new, _ = slope_aspect(z)
    slope_new = np.degrees(s_new)
    surface = np.full(shape, Surface.BEDROCK, dtype=np.uint8)
    scree = (slope_new > 22) & (slope_new < 38) & (dist <= half + 0.25 * terrain.valley_spacing_m / 2)
    sediment = scree | lateral | (foreland & (slope_new < 30)) | (beyond_term & (slope_new < 30))
    surface[sediment] = Surface.SEDIMENT
    veg_noise = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=5)
    veg_fraction = np.clip((region.treeline_m + 250.0 + 120.0 * veg_noise - z) / 400.0, 0, 1)
    veg_fraction *= np.clip((45.0 - slope_new) / 15.0, 0, 1) * np.clip(0.75 + 0.25 * veg_noise, 0, 1)
    veg_fraction = veg_fraction.astype(np.float32)
    surface[veg_fraction > 0.5] = Surface.VEGETATION
    snow_line = ela + 150.0 + 120.0 * fractal_noise(shape, rng, beta=3.0, min_wavelength_px=10)
    snow = snow_patch | ((z > snow_line) & (ndimage.gaussian_filter(slope_new, 2.0) < 32))
    surface[ndimage.binary_opening(snow, iterations=2)] = Surface.SNOW
    surface[ice & (z > ela_field)] = Surface.FIRN
    surface[ice & (z <= ela_field)] = Surface.ICE
    surface[debris & ice] = Surface.DEBRIS
    surface[ice_cliff] = Surface.ICE_CLIFF
    surface[river] = Surface.RIVER
    for k, kind in lake_types.items():
        surface[lake_id == k] = Surface.LAKE if kind == "proglacial" else Surface.POND
    veg_fraction[(surface >= Surface.SNOW)] = 0.0

    n_glac = int(glacier_id.max())
    logger.debug(
        "glaciers: %d bodies, %d lakes, debris share %.2f",
        n_glac,
        len(lake_types),
        float((classes == 2).sum() / max(1, ((classes == 1) | (classes == 2)).sum())),
    )
    return GlacierField(
        z=z.astype(np.float32),
        surface=surface,
        classes=classes,
        glacier_id=glacier_id.astype(np.int32),
        lake_id=lake_id,
        lake_types=lake_types,
        velocity=velocity,
        veg_fraction=veg_fraction,
        debris_supply={int(i): float(s) for i, s in enumerate(supply)},
    )
