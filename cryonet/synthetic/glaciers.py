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


@dataclass
class _Cells:
    """Per-cell fields of the bare terrain that every step of :func:`make_glaciers` reads.

    Attributes:
        slope_deg: ``(rows, cols)`` slope of the bare terrain, degrees.
        ela_field: ``(rows, cols)`` local snow line, metres: the ELA plus +-40 m of smooth noise.
        half: ``(rows, cols)`` half-width of the flat floor at the nearest valley point, metres.
        floor_cell: ``(rows, cols)`` True on the flat valley floor.
        acc_cell: ``(rows, cols)`` True where snow accumulates (above the snow line, not too steep, off the floor).
    """

    slope_deg: np.ndarray
    ela_field: np.ndarray
    half: np.ndarray
    floor_cell: np.ndarray
    acc_cell: np.ndarray


@dataclass
class _Flow:
    """The balance flux marched down every valley: per valley point, and the terminus of each valley.

    Attributes:
        glaciated: ``(n_points,)`` True where the valley point carries ice.
        debris: ``(n_points,)`` True where the tongue at the point is debris-covered.
        flux: ``(n_points,)`` ice flux through the point, m^3 w.e. per year (0 off the glaciers).
        melted_share: ``(n_points,)`` share of the ice flux melted upstream of the point.
        terminus: ``(n_lines,)`` point index of each valley's terminus (-1 for a valley without a glacier).
    """

    glaciated: np.ndarray
    debris: np.ndarray
    flux: np.ndarray
    melted_share: np.ndarray
    terminus: np.ndarray


@dataclass
class _Ice:
    """Glacier extent on the master grid; ``ice`` and ``debris`` lose the cells that lakes later take.

    ``debris``, ``rel_d`` and ``below`` are empty until :func:`_debris_cover` fills them.

    Attributes:
        width_factor: ``(n_points,)`` narrowing of the tongue towards its terminus (0.45-1).
        tongue: ``(rows, cols)`` True on valley-floor tongues.
        ice: ``(rows, cols)`` True on glacier ice (tongues and accumulation basins large enough to be glaciers).
        snow_patch: ``(rows, cols)`` True on ice bodies too small to count as glaciers.
        debris: ``(rows, cols)`` True on debris-covered ice.
        rel_d: ``(rows, cols)`` distance from the valley axis relative to the tongue's half-width.
        below: ``(rows, cols)`` True where the nearest valley floor lies below the local snow line.
    """

    width_factor: np.ndarray
    tongue: np.ndarray
    ice: np.ndarray
    snow_patch: np.ndarray
    debris: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    rel_d: np.ndarray = field(default_factory=lambda: np.zeros(0))
    below: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class _Moraines:
    """Loose-rock landforms beside and below the tongues (they become sediment surfaces).

    Attributes:
        lateral: ``(rows, cols)`` True on lateral moraine ridges.
        foreland: ``(rows, cols)`` True on the ice-free valley floor below the ELA.
        beyond_term: ``(rows, cols)`` True on the valley floor up to 1.5 km below a terminus.
    """

    lateral: np.ndarray
    foreland: np.ndarray
    beyond_term: np.ndarray


@dataclass
class _Lakes:
    """Lakes on the master grid.

    Attributes:
        lake_id: ``(rows, cols)`` int32 lake number (0 = no lake).
        lake_types: Lake number -> ``"proglacial"`` or ``"supraglacial"``; numbers run from 1 in creation order.
    """

    lake_id: np.ndarray
    lake_types: dict[int, str] = field(default_factory=dict)

    def add(self, mask: np.ndarray, kind: str, window: tuple[slice, slice] = (slice(None), slice(None))) -> None:
        """Number the cells ``mask`` of ``window`` as the next lake, of type ``kind``.

        Args:
            mask: Boolean mask of the lake within ``window``.
            kind: ``"proglacial"`` or ``"supraglacial"``.
            window: Part of the grid that ``mask`` covers (default: all of it).
        """
        number = len(self.lake_types) + 1
        self.lake_id[window][mask] = number
        self.lake_types[number] = kind


def _disk() -> np.ndarray:
    """The 7 x 7 disk (radius 3 px) that smooths glacier and debris margins."""
    return np.hypot(*np.mgrid[-3:4, -3:4]) <= 3


def _cells(region: Region, terrain: Terrain, rng: np.random.Generator) -> _Cells:
    """Slope, local snow line, valley floor and accumulation cells of the bare terrain.

    Args:
        region: Region preset (ELA).
        terrain: Bare terrain with its valley network.
        rng: Random generator (consumed: the snow-line noise).

    Returns:
        The :class:`_Cells`.
    """
    z0 = terrain.z
    slope, _ = slope_aspect(z0)
    slope_deg = np.degrees(slope)
    # An irregular snow line: the ELA varies by aspect/shading; +-40 m of smooth noise stands in for that.
    ela_field = region.ela_m + 40.0 * fractal_noise(z0.shape, rng, beta=3.0, min_wavelength_px=15)
    half = terrain.pt_halfwidth[terrain.nearest]
    floor_cell = terrain.dist_m <= half
    slope_smooth = ndimage.gaussian_filter(slope_deg, 2.0)
    acc_cell = (z0 > ela_field) & (slope_smooth < MAX_ICE_SLOPE_DEG) & ~floor_cell
    acc_cell = ndimage.binary_opening(acc_cell, iterations=2)
    return _Cells(slope_deg=slope_deg, ela_field=ela_field, half=half, floor_cell=floor_cell, acc_cell=acc_cell)


def _point_balance(terrain: Terrain, cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """Surface mass balance gathered onto the valley points, m^3 w.e. per year.

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.

    Returns:
        ``(acc_b, tongue_b)``, each ``(n_points,)``: the balance of the accumulation cells and of the valley-floor
        cells nearest to each point.
    """
    cell_area = PIXEL_M * PIXEL_M
    dz = terrain.z - cells.ela_field
    balance = np.clip(np.where(dz > 0, ACCUMULATION_GRADIENT, ABLATION_GRADIENT) * dz, -15.0, MAX_ACCUMULATION)
    n_pts = len(terrain.pt_line)
    flat_near = terrain.nearest.ravel()
    acc_b = np.bincount(flat_near, weights=(balance * cells.acc_cell).ravel() * cell_area, minlength=n_pts)
    tongue_b = np.bincount(flat_near, weights=(balance * cells.floor_cell).ravel() * cell_area, minlength=n_pts)
    return acc_b, tongue_b


def _debris_supply(region: Region, terrain: Terrain, slope_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Debris supply of each catchment: share of steep headwalls among its cells near and above the snow line.

    Args:
        region: Region preset (ELA, debris propensity).
        terrain: Bare terrain with its valley network.
        slope_deg: ``(rows, cols)`` slope of the bare terrain, degrees.

    Returns:
        ``(supply, r_onset)``, each ``(n_lines,)``: the relative debris supply, and the melted share of the ice
        flux from which the tongue is debris-covered.
    """
    n_lines = len(terrain.line_parent)
    line_of_cell = terrain.pt_line[terrain.nearest]
    high = terrain.z > region.ela_m - 300.0
    steep_high = high & (slope_deg > HEADWALL_SLOPE_DEG)
    n_high = np.bincount(line_of_cell[high], minlength=n_lines)
    n_steep = np.bincount(line_of_cell[steep_high], minlength=n_lines)
    wall_frac = n_steep / np.maximum(n_high, 1)
    supply = region.debris_propensity * np.sqrt(wall_frac / 0.2)
    r_onset = np.clip(1.0 - 0.75 * supply, 0.1, 0.95)
    return supply, r_onset


def _march_line(
    idx: np.ndarray,
    balance: tuple[np.ndarray, np.ndarray, np.ndarray],
    pt_floor: np.ndarray,
    ela: float,
    onset: float,
    flow: _Flow,
) -> tuple[float, int]:
    """March the balance flux down one valley from its head, filling ``flow`` at its glaciated points.

    Args:
        idx: Point indices of the valley, head first.
        balance: ``(acc_b, tongue_b, inflow)`` per point: accumulation-cell balance, valley-floor balance, and
            the flux that tributaries deliver at their confluence.
        pt_floor: ``(n_points,)`` valley-floor elevation, metres.
        ela: Equilibrium-line altitude, metres.
        onset: Melted share of the flux from which this valley's tongue is debris-covered.
        flow: Filled in place.

    Returns:
        ``(q, last)``: the flux left at the end of the march and the terminus point (-1 when no glacier formed).
    """
    acc_b, tongue_b, inflow = balance
    q, melted = 0.0, 0.0
    last = -1
    started = False
    for p in idx:
        q += acc_b[p] + inflow[p]
        b = tongue_b[p]
        share = melted / (melted + q) if q > 0 else 1.0
        is_debris = pt_floor[p] < ela and share >= onset
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
        flow.glaciated[p], flow.debris[p], flow.flux[p], flow.melted_share[p] = True, is_debris, q, share
        last = p
    return q, last


def _march_valleys(terrain: Terrain, ela: float, acc_b: np.ndarray, tongue_b: np.ndarray, r_onset: np.ndarray) -> _Flow:
    """March down every valley, tributaries first: their outflow feeds the trunk at the confluence.

    Args:
        terrain: Bare terrain with its valley network.
        ela: Equilibrium-line altitude, metres.
        acc_b: ``(n_points,)`` balance of the accumulation cells nearest to each point.
        tongue_b: ``(n_points,)`` balance of the valley-floor cells nearest to each point.
        r_onset: ``(n_lines,)`` melted share from which each valley's tongue is debris-covered.

    Returns:
        The :class:`_Flow`.
    """
    n_pts = len(terrain.pt_line)
    n_lines = len(terrain.line_parent)
    flow = _Flow(
        glaciated=np.zeros(n_pts, dtype=bool),
        debris=np.zeros(n_pts, dtype=bool),
        flux=np.zeros(n_pts),
        melted_share=np.zeros(n_pts),
        terminus=np.full(n_lines, -1, dtype=np.int64),
    )
    inflow = np.zeros(n_pts)
    order = sorted(range(n_lines), key=lambda li: terrain.line_parent[li] < 0)
    for li in order:
        idx = np.flatnonzero(terrain.pt_line == li)
        q, last = _march_line(idx, (acc_b, tongue_b, inflow), terrain.pt_floor, ela, r_onset[li], flow)
        flow.terminus[li] = last
        parent = terrain.line_parent[li]
        if parent >= 0 and last == idx[-1] and q > 0:
            inflow[terrain.line_junction[li]] += q
    return flow


def _ice_extent(terrain: Terrain, cells: _Cells, flow: _Flow) -> _Ice:
    """Tongue cells (narrowing towards the terminus as the flux dwindles) and glacier ice.

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.

    Returns:
        The :class:`_Ice` without its debris fields.
    """
    nearest = terrain.nearest
    n_lines = len(terrain.line_parent)
    q_max = np.zeros(n_lines)
    np.maximum.at(q_max, terrain.pt_line, flow.flux)
    width_factor = np.clip((flow.flux / np.maximum(q_max[terrain.pt_line], 1.0)) ** 0.3, 0.45, 1.0)
    tongue = flow.glaciated[nearest] & (terrain.dist_m <= cells.half * width_factor[nearest])
    # Where two valleys' nearest-point regions interleave (confluences) the margin is jagged: smooth it as ice would.
    disk = _disk()
    tongue = ndimage.binary_opening(ndimage.binary_closing(tongue, disk), disk)
    ice = tongue | cells.acc_cell
    # Keep the ice bodies large enough to be glaciers; the rest is perennial snow.
    lab, n_lab = ndimage.label(ice, structure=np.ones((3, 3)))
    cell_area = PIXEL_M * PIXEL_M
    sizes = np.bincount(lab.ravel(), minlength=n_lab + 1) * cell_area / 1e6
    keep = sizes >= MIN_GLACIER_KM2
    keep[0] = False
    snow_patch = ice & ~keep[lab]
    ice &= keep[lab]
    return _Ice(width_factor=width_factor, tongue=tongue, ice=ice, snow_patch=snow_patch)


def _debris_cover(
    terrain: Terrain, cells: _Cells, flow: _Flow, r_onset: np.ndarray, ice: _Ice, rng: np.random.Generator
) -> np.ndarray:
    """Debris-covered part of each tongue, plus lateral debris bands where the margins melt out earlier.

    Sets ``ice.debris``, ``ice.rel_d`` and ``ice.below``.

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        r_onset: ``(n_lines,)`` melted share from which each valley's tongue is debris-covered.
        ice: Glacier extent (completed in place).
        rng: Random generator (consumed: the debris-boundary noise).

    Returns:
        ``(rows, cols)`` float32 smooth noise that perturbed the debris boundary (lake shores reuse it).
    """
    nearest = terrain.nearest
    tongue, glacier = ice.tongue, ice.ice
    rel_d = terrain.dist_m / np.maximum(cells.half * ice.width_factor[nearest], 1.0)
    below = terrain.pt_floor[nearest] < cells.ela_field
    share_cell = flow.melted_share[nearest]
    onset_cell = r_onset[terrain.pt_line[nearest]]
    debris = tongue & glacier & below & (flow.debris[nearest] | ((rel_d > 0.7) & (share_cell >= 0.5 * onset_cell)))
    # Medial moraines and marginal irregularity: perturb the debris boundary with smooth noise.
    wobble = fractal_noise(terrain.z.shape, rng, beta=3.0, min_wavelength_px=4, max_wavelength_px=40)
    debris_fuzzy = ndimage.binary_opening(debris, iterations=1) | (
        tongue & glacier & below & (share_cell >= onset_cell * (1 + 0.25 * wobble)) & (rel_d > 0.2)
    )
    disk = _disk()
    ice.debris = ndimage.binary_opening(ndimage.binary_closing(debris_fuzzy, disk), disk) & glacier & tongue
    ice.rel_d, ice.below = rel_d, below
    return wobble


def _ice_surface(terrain: Terrain, cells: _Cells, ice: _Ice, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Surface elevation with smooth glacier surfaces and hummocky debris.

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        ice: Glacier extent with its debris cover.
        rng: Random generator (consumed: the hummock noise).

    Returns:
        ``(z, hummock)``: ``(rows, cols)`` float32 surface elevation, metres, and the band-passed hummock noise.
    """
    z0 = terrain.z
    nearest = terrain.nearest
    glacier = ice.ice
    z = z0.astype(np.float32).copy()
    sigma = max(3.0, float(np.median(terrain.pt_halfwidth)) / PIXEL_M / 4)
    z_smooth = ndimage.gaussian_filter(z0, sigma)
    # Tongues: a surface that follows the valley floor's long profile at the ice thickness, slightly convex across
    # (ice flattens the trough); accumulation basins: the smoothed terrain under a few tens of metres of firn.
    h_ice = np.clip(0.25 * cells.half, 20, 150) * ice.width_factor[nearest]
    z_tongue = terrain.pt_floor[nearest] + h_ice * (1 - 0.3 * np.clip(ice.rel_d, 0, 1) ** 2)
    z_ice = np.where(ice.tongue, z_tongue, z_smooth + 25.0).astype(np.float32)
    z_ice = ndimage.gaussian_filter(np.where(glacier, z_ice, z), 5.0)
    w_ice = np.clip(ndimage.gaussian_filter(glacier.astype(np.float32), 1.5) * 1.6, 0, 1)
    w_ice[glacier] = 1.0
    z = z * (1 - w_ice) + z_ice * w_ice
    # Hummocky debris: band-passed noise of a few metres amplitude, 40-150 m wavelength.
    hummock = fractal_noise(z0.shape, rng, beta=2.0, min_wavelength_px=6, max_wavelength_px=20)
    w_deb = ndimage.gaussian_filter(ice.debris.astype(np.float32), 1.0)
    z += 3.0 * hummock * w_deb
    return z, hummock


def _moraines(
    z: np.ndarray, hummock: np.ndarray, terrain: Terrain, cells: _Cells, flow: _Flow, ice: _Ice, ela: float
) -> _Moraines:
    """Raise lateral moraine ridges beside the tongues and hummocks on the valley floor below the termini.

    Lateral moraines stand beside the tongues below the ELA; below the termini lies sediment (outwash and dead-ice
    moraine, with smaller hummocks).

    Args:
        z: ``(rows, cols)`` float32 surface elevation, metres (raised in place).
        hummock: ``(rows, cols)`` hummock noise.
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        ice: Glacier extent with its debris cover.
        ela: Equilibrium-line altitude, metres.

    Returns:
        The :class:`_Moraines`.
    """
    shape = z.shape
    nearest = terrain.nearest
    glacier, debris = ice.ice, ice.debris
    d_ice = ndimage.distance_transform_edt(~glacier) * PIXEL_M
    debris_near = ndimage.distance_transform_edt(~debris) * PIXEL_M < 400.0 if debris.any() else np.zeros(shape, bool)
    lateral = (~glacier) & (d_ice > 0) & (d_ice <= 80.0) & ice.below & (cells.slope_deg < 42)
    ridge_h = np.where(debris_near, 30.0, 12.0) * np.sin(np.clip(d_ice / 80.0, 0, 1) * np.pi)
    z += (ridge_h * lateral).astype(np.float32)
    foreland = (~glacier) & cells.floor_cell & ~flow.glaciated[nearest] & (terrain.z < ela)
    beyond_term = np.zeros(shape, dtype=bool)
    s_cell = terrain.pt_s[nearest]
    for li, t in enumerate(flow.terminus):
        if t < 0:
            continue
        s_t = terrain.pt_s[t]
        on_line = (terrain.pt_line[nearest] == li) & (s_cell > s_t) & (s_cell < s_t + 1500)
        beyond_term |= on_line & cells.floor_cell
    z += (2.0 * hummock * (foreland & beyond_term)).astype(np.float32)
    return _Moraines(lateral=lateral, foreland=foreland, beyond_term=beyond_term)


def _lake_candidates(terrain: Terrain, flow: _Flow, debris: np.ndarray) -> list[tuple[int, int]]:
    """Valleys whose terminus is debris-covered, as ``(debris cells, valley)``, largest debris cover first."""
    cand = []
    for li, t in enumerate(flow.terminus):
        if t < 0 or not flow.debris[t]:
            continue
        on = (terrain.pt_line[terrain.nearest] == li) & debris
        cand.append((int(on.sum()), li))
    cand.sort(reverse=True)
    return cand


def _dam_lake(
    li: int,
    z: np.ndarray,
    terrain: Terrain,
    cells: _Cells,
    flow: _Flow,
    ice: _Ice,
    wobble: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """A moraine-dammed lake at the terminus of valley ``li``: level its surface and raise the dam in ``z``.

    Moraine-dammed lakes are elongated along the valley (the tongue has downwasted and retreated up it).

    Args:
        li: Valley index.
        z: ``(rows, cols)`` float32 surface elevation, metres (changed in place).
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        ice: Glacier extent with its debris cover.
        wobble: ``(rows, cols)`` smooth noise that roughens the shore.
        rng: Random generator (consumed: the lake length).

    Returns:
        ``(rows, cols)`` boolean lake mask, or None where the lake would be smaller than 8 cells.
    """
    nearest, dist, half = terrain.nearest, terrain.dist_m, cells.half
    t = flow.terminus[li]
    s_t = terrain.pt_s[t]
    deb_len = float(np.ptp(terrain.pt_s[np.flatnonzero((terrain.pt_line == li) & flow.debris)]))
    width_t = 2 * float(terrain.pt_halfwidth[t])
    length = float(np.clip(rng.uniform(0.1, 0.25) * deb_len, min(1.2 * width_t, 0.3 * deb_len), 2000.0))
    s_cell = terrain.pt_s[nearest]
    on_line = terrain.pt_line[nearest] == li
    x = (s_cell - (s_t - length / 2)) / (length / 2)  # -1 .. 1 along the lake
    across = dist / np.maximum(half, 1.0)
    edge = 0.75 * np.sqrt(np.clip(1 - x**2, 0, 1)) * (1 + 0.15 * wobble)
    lake = on_line & (np.abs(x) <= 1) & (across <= edge) & (ice.ice | cells.floor_cell)
    if lake.sum() < 8:
        return None
    level = float(np.percentile(z[lake], 5)) + 1.0
    z[lake] = level
    # The moraine dam: a smooth arcuate ridge across the valley just downstream of the lake, standing above the
    # lake level and fading into the valley sides.
    ds = s_cell - s_t
    ridge = np.sin(np.clip(ds / 200.0, 0, 1) * np.pi) * np.clip(1 - (dist / (1.4 * half)) ** 4, 0, 1)
    dam = on_line & (ridge > 0)
    z[dam] = np.maximum(z[dam], level + 3.0 + 25.0 * ridge[dam]) * ridge[dam] + z[dam] * (1 - ridge[dam])
    return lake


def _proglacial_lakes(
    region: Region,
    z: np.ndarray,
    terrain: Terrain,
    cells: _Cells,
    flow: _Flow,
    ice: _Ice,
    wobble: np.ndarray,
    rng: np.random.Generator,
) -> _Lakes:
    """Proglacial lakes at debris-covered termini (at least one per scene where the region has lakes at all).

    Lake cells are removed from ``ice.ice`` and ``ice.debris``.

    Args:
        region: Region preset (lake propensity).
        z: ``(rows, cols)`` float32 surface elevation, metres (changed in place).
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        ice: Glacier extent with its debris cover (changed in place).
        wobble: ``(rows, cols)`` smooth noise that roughens the shores.
        rng: Random generator (consumed).

    Returns:
        The :class:`_Lakes` holding the proglacial lakes.
    """
    lakes = _Lakes(lake_id=np.zeros(z.shape, dtype=np.int32))
    for rank, (n_deb, li) in enumerate(_lake_candidates(terrain, flow, ice.debris)):
        p_lake = min(1.0, region.lake_propensity * 0.8)
        if n_deb < 30 or (rank > 0 and rng.random() > p_lake) or (rank == 0 and region.lake_propensity <= 0):
            continue
        lake = _dam_lake(li, z, terrain, cells, flow, ice, wobble, rng)
        if lake is None:
            continue
        lakes.add(lake, "proglacial")
        ice.ice &= ~lake
        ice.debris &= ~lake
    return lakes


def _pond(
    cell: int, dig: bool, z: np.ndarray, debris: np.ndarray, lakes: _Lakes, rng: np.random.Generator
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A supraglacial pond centred on debris cell ``cell``, with an ice cliff on its up-glacier side.

    Args:
        cell: Flat index of the centre cell.
        dig: Dig the pond (where it covers at least 3 cells); if False only the ice cliff is made.
        z: ``(rows, cols)`` float32 surface elevation, metres (the pond is lowered in place).
        debris: ``(rows, cols)`` debris-covered ice.
        lakes: Lakes so far (the pond is added).
        rng: Random generator (consumed: radius and shape).

    Returns:
        ``(window, cliff)``: the window around the pond and the ice-cliff cells within it.
    """
    rows, cols = z.shape
    r0, c0 = divmod(cell, cols)
    radius = rng.uniform(1.5, 4.5)
    win = int(radius * 2 + 4)
    r_lo, r_hi = max(0, r0 - win), min(rows, r0 + win + 1)
    c_lo, c_hi = max(0, c0 - win), min(cols, c0 + win + 1)
    window = (slice(r_lo, r_hi), slice(c_lo, c_hi))
    rr, cc = np.mgrid[r_lo:r_hi, c_lo:c_hi]
    sub_deb = debris[window]
    blob = _blob(rr, cc, r0, c0, radius, rng) & sub_deb
    # The cliff faces down-glacier on the pond's up-glacier (higher) side.
    ring = _blob(rr, cc, r0, c0, radius + 1.5, rng) & ~blob & sub_deb
    zz = z[window]
    cliff = ring & (zz > np.median(zz[ring])) if ring.any() else ring
    if dig and blob.sum() >= 3:
        zz[blob] = zz[blob].min() - 1.0
        lakes.add(blob, "supraglacial", window)
    return window, cliff


def _ponds(region: Region, z: np.ndarray, debris: np.ndarray, lakes: _Lakes, rng: np.random.Generator) -> np.ndarray:
    """Supraglacial ponds with ice cliffs on their up-glacier side, and further ice cliffs without ponds.

    Args:
        region: Region preset (lake propensity).
        z: ``(rows, cols)`` float32 surface elevation, metres (ponds are lowered in place).
        debris: ``(rows, cols)`` debris-covered ice.
        lakes: Lakes so far (the ponds are added).
        rng: Random generator (consumed).

    Returns:
        ``(rows, cols)`` boolean ice-cliff cells (on debris, off the lakes).
    """
    cell_area = PIXEL_M * PIXEL_M
    ice_cliff = np.zeros(z.shape, dtype=bool)
    debris_cells = np.flatnonzero(debris.ravel() & (lakes.lake_id.ravel() == 0))
    if debris_cells.size:
        n_ponds = rng.poisson(region.lake_propensity * debris_cells.size * cell_area / 1e6 * 3.0)
        if region.lake_propensity >= 0.5 and debris_cells.size * cell_area / 1e6 > 0.05:
            n_ponds = max(n_ponds, 2)  # pond-pitted tongues: a debris tongue this size is rarely without ponds
        n_cliffs = rng.poisson(debris_cells.size * cell_area / 1e6 * 10.0)
        for k in range(n_ponds + n_cliffs):
            c = int(rng.choice(debris_cells))
            window, cliff = _pond(c, k < n_ponds, z, debris, lakes, rng)
            ice_cliff[window] |= cliff
    ice_cliff &= debris & (lakes.lake_id == 0)
    return ice_cliff


def _stream_points(terrain: Terrain, terminus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valley points that carry meltwater, and their distance down the stream from the terminus it leaves.

    Valley-axis points downstream of a terminus carry meltwater; a tributary's stream continues down its parent
    valley from the confluence.

    Args:
        terrain: Bare terrain with its valley network.
        terminus: ``(n_lines,)`` terminus point of each valley (-1 for none).

    Returns:
        ``(wet_pt, down_m)``, each ``(n_points,)``: True on streams, and the distance downstream, metres (inf off
        the streams).
    """
    n_pts = len(terrain.pt_line)
    n_lines = len(terrain.line_parent)
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
    return wet_pt, down_m


def _streams(
    terrain: Terrain, cells: _Cells, flow: _Flow, glacier: np.ndarray, lake_id: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Proglacial meltwater streams on the valley floors below the termini.

    The channel is about 20 m wide below the terminus and widens to 40-60 m downstream (distance scale 3 km), with
    braiding (smooth noise on the width).

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        glacier: ``(rows, cols)`` glacier ice.
        lake_id: ``(rows, cols)`` lake numbers (0 = no lake).
        rng: Random generator (consumed: the braiding noise).

    Returns:
        ``(rows, cols)`` boolean stream cells.
    """
    nearest = terrain.nearest
    wet_pt, down_m = _stream_points(terrain, flow.terminus)
    braid = fractal_noise(terrain.z.shape, rng, beta=2.5, min_wavelength_px=3, max_wavelength_px=30)
    d_down = np.where(wet_pt[nearest], down_m[nearest], 0.0)
    half_w = (10.0 + 15.0 * np.tanh(d_down / 3000.0)) * (1.0 + 0.3 * braid)
    river = wet_pt[nearest] & cells.floor_cell & (terrain.dist_m <= half_w) & ~glacier & (lake_id == 0)
    return ndimage.binary_opening(river, structure=np.ones((2, 2)))


def _classes(ice: _Ice, lakes: _Lakes) -> tuple[np.ndarray, np.ndarray]:
    """Glacier numbers and reference classes.

    Args:
        ice: Glacier extent with its debris cover (lakes removed).
        lakes: All lakes.

    Returns:
        ``(glacier_id, classes)``: ``(rows, cols)`` glacier numbers (clean ice, debris and ponds; 0 = none) and
        uint8 class labels.
    """
    supraglacial = [k for k, v in lakes.lake_types.items() if v == "supraglacial"]
    glacier_body = ice.ice | ((lakes.lake_id > 0) & np.isin(lakes.lake_id, supraglacial))
    glacier_id, _ = ndimage.label(glacier_body, structure=np.ones((3, 3)))
    classes = np.zeros(glacier_body.shape, dtype=np.uint8)
    classes[glacier_body] = CLASS_IDS["clean_ice"]
    classes[ice.debris & glacier_body] = CLASS_IDS["debris"]
    classes[lakes.lake_id > 0] = CLASS_IDS["lake"]
    return glacier_id, classes


def _velocity(terrain: Terrain, cells: _Cells, flow: _Flow, ice: _Ice, lake_id: np.ndarray) -> np.ndarray:
    """Surface speed from the balance flux through the tongue cross-section, metres per year.

    Balance velocity: ice flux / cross-section (surface speed = 1.25 x depth average), plug-like across.
    Debris-covered tongues are out of balance (they thin in place rather than carry their balance flux), and are
    observed to be near-stagnant: their speed is cut to a third.

    Args:
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        flow: The marched flux.
        ice: Glacier extent with its debris cover (lakes removed).
        lake_id: ``(rows, cols)`` lake numbers (0 = no lake).

    Returns:
        ``(rows, cols)`` float32 speed (0 off the glaciers and on lakes).
    """
    nearest = terrain.nearest
    half = cells.half
    h_tongue = np.clip(0.4 * half, 30, 300)
    width = 2 * half * ice.width_factor[nearest]
    v_tongue = flow.flux[nearest] / 0.9 / np.maximum(width * h_tongue, 1.0) * 1.25 * np.clip(1 - ice.rel_d**4, 0.2, 1)
    v_tongue = np.where(ice.debris, v_tongue / 3.0, v_tongue)
    velocity = np.where(ice.tongue & ice.ice, v_tongue, 0.0)
    velocity = np.where(ice.ice & ~ice.tongue, 8.0 + 0.4 * cells.slope_deg, velocity).astype(np.float32)
    velocity[lake_id > 0] = 0.0
    return velocity


def _ground_cover(
    region: Region,
    z: np.ndarray,
    terrain: Terrain,
    cells: _Cells,
    moraines: _Moraines,
    snow_patch: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Surface types off the glaciers: bedrock, sediment, vegetation and snow.

    Args:
        region: Region preset (ELA, treeline).
        z: ``(rows, cols)`` float32 surface elevation, metres.
        terrain: Bare terrain with its valley network.
        cells: The shared per-cell fields.
        moraines: Moraines and valley-floor sediment.
        snow_patch: ``(rows, cols)`` ice bodies too small to be glaciers.
        rng: Random generator (consumed: vegetation and snow-line noise).

    Returns:
        ``(surface, veg_fraction)``: ``(rows, cols)`` uint8 :class:`Surface` codes and float32 vegetation cover.
    """
    shape = z.shape
    s_new, _ = slope_aspect(z)
    slope_new = np.degrees(s_new)
    surface = np.full(shape, Surface.BEDROCK, dtype=np.uint8)
    scree = (slope_new > 22) & (slope_new < 38) & (terrain.dist_m <= cells.half + 0.25 * terrain.valley_spacing_m / 2)
    gentle = slope_new < 30
    sediment = scree | moraines.lateral | (moraines.foreland & gentle) | (moraines.beyond_term & gentle)
    surface[sediment] = Surface.SEDIMENT
    veg_noise = fractal_noise(shape, rng, beta=3.0, min_wavelength_px=5)
    veg_fraction = np.clip((region.treeline_m + 250.0 + 120.0 * veg_noise - z) / 400.0, 0, 1)
    veg_fraction *= np.clip((45.0 - slope_new) / 15.0, 0, 1) * np.clip(0.75 + 0.25 * veg_noise, 0, 1)
    veg_fraction = veg_fraction.astype(np.float32)
    surface[veg_fraction > 0.5] = Surface.VEGETATION
    snow_line = region.ela_m + 150.0 + 120.0 * fractal_noise(shape, rng, beta=3.0, min_wavelength_px=10)
    snow = snow_patch | ((z > snow_line) & (ndimage.gaussian_filter(slope_new, 2.0) < 32))
    surface[ndimage.binary_opening(snow, iterations=2)] = Surface.SNOW
    return surface, veg_fraction


def _paint_glaciers(
    surface: np.ndarray,
    z: np.ndarray,
    ela_field: np.ndarray,
    ice: _Ice,
    ice_cliff: np.ndarray,
    river: np.ndarray,
    lakes: _Lakes,
) -> None:
    """Paint glacier, stream and lake surface types over the ground cover, in place.

    Args:
        surface: ``(rows, cols)`` uint8 :class:`Surface` codes (changed in place).
        z: ``(rows, cols)`` float32 surface elevation, metres.
        ela_field: ``(rows, cols)`` local snow line, metres (firn above it, bare ice below).
        ice: Glacier extent with its debris cover (lakes removed).
        ice_cliff: ``(rows, cols)`` ice cliffs.
        river: ``(rows, cols)`` proglacial streams.
        lakes: All lakes.
    """
    glacier = ice.ice
    surface[glacier & (z > ela_field)] = Surface.FIRN
    surface[glacier & (z <= ela_field)] = Surface.ICE
    surface[ice.debris & glacier] = Surface.DEBRIS
    surface[ice_cliff] = Surface.ICE_CLIFF
    surface[river] = Surface.RIVER
    for k, kind in lakes.lake_types.items():
        surface[lakes.lake_id == k] = Surface.LAKE if kind == "proglacial" else Surface.POND


def make_glaciers(region: Region, terrain: Terrain, rng: np.random.Generator) -> GlacierField:
    """Grow glaciers, debris, lakes and surface types on ``terrain``.

    Args:
        region: Region preset (ELA, treeline, debris and lake propensity).
        terrain: Bare terrain with its valley network.
        rng: Random generator (consumed).

    Returns:
        The :class:`GlacierField`.
    """
    cells = _cells(region, terrain, rng)
    acc_b, tongue_b = _point_balance(terrain, cells)
    supply, r_onset = _debris_supply(region, terrain, cells.slope_deg)
    flow = _march_valleys(terrain, region.ela_m, acc_b, tongue_b, r_onset)
    ice = _ice_extent(terrain, cells, flow)
    wobble = _debris_cover(terrain, cells, flow, r_onset, ice, rng)
    z, hummock = _ice_surface(terrain, cells, ice, rng)
    moraines = _moraines(z, hummock, terrain, cells, flow, ice, region.ela_m)
    lakes = _proglacial_lakes(region, z, terrain, cells, flow, ice, wobble, rng)
    ice_cliff = _ponds(region, z, ice.debris, lakes, rng)
    river = _streams(terrain, cells, flow, ice.ice, lakes.lake_id, rng)
    glacier_id, classes = _classes(ice, lakes)
    velocity = _velocity(terrain, cells, flow, ice, lakes.lake_id)
    surface, veg_fraction = _ground_cover(region, z, terrain, cells, moraines, ice.snow_patch, rng)
    _paint_glaciers(surface, z, cells.ela_field, ice, ice_cliff, river, lakes)
    veg_fraction[(surface >= Surface.SNOW)] = 0.0

    logger.debug(
        "glaciers: %d bodies, %d lakes, debris share %.2f",
        int(glacier_id.max()),
        len(lakes.lake_types),
        float((classes == 2).sum() / max(1, ((classes == 1) | (classes == 2)).sum())),
    )
    return GlacierField(
        z=z.astype(np.float32),
        surface=surface,
        classes=classes,
        glacier_id=glacier_id.astype(np.int32),
        lake_id=lakes.lake_id,
        lake_types=lakes.lake_types,
        velocity=velocity,
        veg_fraction=veg_fraction,
        debris_supply={int(i): float(s) for i, s in enumerate(supply)},
    )
