"""Synthetic alpine terrain: a dendritic valley network carved into fractal, ridged relief.

The terrain is built in three steps, all vectorised (numpy FFTs and :func:`scipy.ndimage.distance_transform_edt`):

1. A drainage network of trunk valleys and tributaries is drawn as polylines that run from the high side of the
   scene (the main crest) to the low side (the outlet). Every line point carries a valley-floor elevation that
   decreases monotonically downstream along a concave long profile.
2. Each valley carves a glacial trough around its axis: the distance ``d`` to the nearest point of the axis (a
   Euclidean distance transform with indices) sets the cross-valley profile (a flat floor, steep lower walls,
   gentler upper slopes) rising to a ridge field that falls from the crest towards the outlet. The terrain is the
   minimum over all valleys, so that sharp ridges (aretes) form where two troughs meet; every cell remembers the
   valley point it belongs to (the catchment partition the glacier model marches along).
3. Ridged multifractal noise roughens the walls and ridges (aretes, gullies); a little fBm roughens the floors.

The result is rescaled onto the region preset's elevation range (reduced for small scenes, so that slopes stay
alpine rather than vertical when the scene is only a few kilometres across).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryonet.regions import Region

logger = logging.getLogger(__name__)

#: Master grid spacing, metres.
PIXEL_M: float = 10.0


def fractal_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    beta: float = 3.0,
    min_wavelength_px: float = 2.0,
    max_wavelength_px: float | None = None,
) -> np.ndarray:
    """Spectral-synthesis fractal noise (power spectrum ``~ k**-beta``), standardised to mean 0, sd 1.

    Hand-written because it is three FFT lines; no installed library offers seeded 2-D fBm.

    Args:
        shape: ``(rows, cols)``.
        rng: Random generator (consumed).
        beta: Spectral exponent; 2 is rough, 3-4 is smooth terrain-like.
        min_wavelength_px: Wavelengths shorter than this are removed.
        max_wavelength_px: Wavelengths longer than this are removed (band-pass); None keeps all.

    Returns:
        ``(rows, cols)`` float32 array.
    """
    rows, cols = shape
    white = rng.standard_normal(shape)
    spec = np.fft.rfft2(white)
    ky = np.fft.fftfreq(rows)[:, None]
    kx = np.fft.rfftfreq(cols)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0
    amp = k ** (-beta / 2.0)
    amp[k > 1.0 / min_wavelength_px] = 0.0
    if max_wavelength_px is not None:
        amp[k < 1.0 / max_wavelength_px] = 0.0
    amp[0, 0] = 0.0
    field = np.fft.irfft2(spec * amp, s=shape)
    sd = field.std()
    return ((field - field.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def ridged_noise(
    shape: tuple[int, int], rng: np.random.Generator, *, wavelength_px: float, octaves: int = 4
) -> np.ndarray:
    """Ridged multifractal noise in [0, 1]: sharp crests (aretes) where band-limited noise crosses zero.

    Args:
        shape: ``(rows, cols)``.
        rng: Random generator (consumed).
        wavelength_px: Wavelength of the coarsest octave, pixels.
        octaves: Number of octaves, each half the wavelength and 0.3 times the weight of the previous.

    Returns:
        ``(rows, cols)`` float32 array.
    """
    out = np.zeros(shape, dtype=np.float32)
    weight, total = 1.0, 0.0
    lam = wavelength_px
    for _ in range(octaves):
        n = fractal_noise(shape, rng, beta=2.0, min_wavelength_px=max(2.0, lam / 2.5), max_wavelength_px=lam * 2.0)
        out += weight * (1.0 - np.abs(np.tanh(n))) ** 2
        total += weight
        weight *= 0.3  # each octave a little smoother than self-similar: slopes stay alpine, not vertical
        lam /= 2.0
    return out / total


def slope_aspect(z: np.ndarray, pixel_m: float = PIXEL_M) -> tuple[np.ndarray, np.ndarray]:
    """Slope and aspect of a north-up grid.

    Args:
        z: ``(rows, cols)`` elevation, metres (row 0 is north).
        pixel_m: Cell size, metres.

    Returns:
        ``(slope, aspect)`` in radians; aspect is the downslope direction, clockwise from north.
    """
    dz_drow, dz_dcol = np.gradient(z.astype(np.float64), pixel_m)
    dz_dx = dz_dcol  # east
    dz_dy = -dz_drow  # north
    slope = np.arctan(np.hypot(dz_dx, dz_dy))
    aspect = np.mod(np.arctan2(-dz_dx, -dz_dy), 2 * np.pi)
    return slope.astype(np.float32), aspect.astype(np.float32)


@dataclass
class Terrain:
    """Bare terrain on the master grid, with its valley network.

    Attributes:
        z: ``(rows, cols)`` float32 bedrock / ground elevation, metres.
        nearest: ``(rows, cols)`` int32 index of the nearest valley-line point (into the ``pt_*`` arrays).
        dist_m: ``(rows, cols)`` float32 distance to that point, metres.
        pt_line: ``(n_points,)`` valley id of each line point.
        pt_s: ``(n_points,)`` arc length of the point along its valley from the head, metres.
        pt_floor: ``(n_points,)`` valley-floor elevation at the point, metres (after rescaling).
        pt_halfwidth: ``(n_points,)`` half-width of the flat valley floor at the point, metres.
        line_parent: ``(n_lines,)`` valley each valley drains into (-1 for trunks leaving the scene).
        line_junction: ``(n_lines,)`` point index on the parent where a tributary joins (-1 for trunks).
        elevation_range_m: ``(low, high)`` elevation range the terrain was scaled to.
        valley_spacing_m: Typical distance between neighbouring trunk valleys, metres.
    """

    z: np.ndarray
    nearest: np.ndarray
    dist_m: np.ndarray
    pt_line: np.ndarray
    pt_s: np.ndarray
    pt_floor: np.ndarray
    pt_halfwidth: np.ndarray
    line_parent: np.ndarray
    line_junction: np.ndarray
    elevation_range_m: tuple[float, float]
    valley_spacing_m: float


def scaled_elevation_range(region: Region, extent_m: float) -> tuple[float, float]:
    """Elevation range for a scene ``extent_m`` across: the preset's range, shrunk for small scenes.

    Relief scales with the square root of the extent below the preset's default extent, and the reduced range is
    placed so that the equilibrium-line altitude keeps its relative position (glaciers keep both an accumulation
    and an ablation zone at every size).
    """
    lo, hi = region.elevation_range_m
    default_extent = region.default_size_px * PIXEL_M
    relief = (hi - lo) * min(1.0, float((extent_m / default_extent) ** 0.5))
    frac = (region.ela_m - lo) / (hi - lo)
    new_lo = region.ela_m - frac * relief
    return (float(new_lo), float(new_lo + relief))


def _smooth_path(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """A smooth random lateral offset along a path of ``n`` samples (meanders), zero at the start."""
    walk = np.cumsum(rng.standard_normal(n))
    walk = ndimage.gaussian_filter1d(walk, sigma=max(2.0, n / 8), mode="nearest")
    walk -= walk[0]
    peak = np.abs(walk).max()
    return walk / (peak if peak > 0 else 1.0) * amplitude


#: Sampling step along the valley lines, pixels.
_LINE_STEP_PX: float = 0.5


@dataclass
class _Frame:
    """The scene's flow-aligned frame: ``u`` runs downstream (crest at u = 0), ``v`` across the valleys.

    Attributes:
        ed: ``(2,)`` downstream unit vector, ``(col, row)`` components.
        ep: ``(2,)`` across-flow unit vector, ``(col, row)`` components.
        u0: Smallest ``u`` of the scene's corners, pixels from the centre.
        u1: Largest ``u`` of the scene's corners.
        v0: Smallest ``v`` of the scene's corners.
        v1: Largest ``v`` of the scene's corners.
        centre: ``(2,)`` scene centre, ``(col, row)`` pixels.
    """

    ed: np.ndarray
    ep: np.ndarray
    u0: float
    u1: float
    v0: float
    v1: float
    centre: np.ndarray

    def to_px(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Normalised (u along flow, v across) -> (col, row) pixel coordinates.

        Args:
            u: ``(n,)`` position along the flow, 0-1 across the scene.
            v: ``(n,)`` position across the flow, 0-1 across the scene.

        Returns:
            ``(n, 2)`` pixel coordinates ``(col, row)``.
        """
        uu = self.u0 + u * (self.u1 - self.u0)
        vv = self.v0 + v * (self.v1 - self.v0)
        return self.centre + uu[:, None] * self.ed + vv[:, None] * self.ep


@dataclass
class _Points:
    """All valley-line points, concatenated line after line.

    Attributes:
        xy: ``(n_points, 2)`` pixel coordinates ``(col, row)``.
        line: ``(n_points,)`` int32 valley id.
        s: ``(n_points,)`` arc length from the valley head, metres.
        floor: ``(n_points,)`` valley-floor elevation, relative 0-1 of the relief.
        half: ``(n_points,)`` half-width of the flat floor, metres.
        offsets: Index of each valley's first point.
    """

    xy: np.ndarray
    line: np.ndarray
    s: np.ndarray
    floor: np.ndarray
    half: np.ndarray
    offsets: list[int]


@dataclass
class _Walls:
    """Cross-valley trough profile: flat floor, walls rising to the ridge field.

    Attributes:
        warp: ``(rows, cols)`` smooth noise added to the distance from the axis (spurs and gullies), metres.
        wall_scale: Horizontal distance over which a wall rises from the floor to the ridge, metres.
        p: Exponent of the wall profile (below 1: steep lower walls, gentler upper slopes).
    """

    warp: np.ndarray
    wall_scale: float
    p: float

    def profile(self, d: np.ndarray, half: np.ndarray) -> np.ndarray:
        """Wall profile 0 (floor) to 1 (ridge) at distance ``d`` from the axis where the floor is ``half`` wide.

        Args:
            d: ``(rows, cols)`` distance from the valley axis, metres.
            half: ``(rows, cols)`` half-width of the flat floor there, metres.

        Returns:
            ``(rows, cols)`` profile values in [0, 1].
        """
        x = np.clip((d - half + np.maximum(self.warp, -0.3 * half)) / self.wall_scale, 0, None)
        return np.minimum(x, 1.0) ** self.p


def _flow_frame(rows: int, cols: int, rng: np.random.Generator) -> _Frame:
    """Flow direction (downstream) roughly along one of the four grid axes, so that the crest lies along one edge.

    Args:
        rows: Grid rows.
        cols: Grid columns.
        rng: Random generator (consumed: the flow direction).

    Returns:
        The :class:`_Frame`.
    """
    theta = rng.integers(0, 4) * np.pi / 2 + rng.uniform(-0.35, 0.35)
    ed = np.array([np.cos(theta), np.sin(theta)])  # (col, row) components
    ep = np.array([-ed[1], ed[0]])
    corners = np.array([[0, 0], [cols, 0], [0, rows], [cols, rows]], dtype=float) - [cols / 2, rows / 2]
    u_ext = corners @ ed
    v_ext = corners @ ep
    centre = np.array([cols / 2, rows / 2])
    return _Frame(ed=ed, ep=ep, u0=u_ext.min(), u1=u_ext.max(), v0=v_ext.min(), v1=v_ext.max(), centre=centre)


def _trunk_lines(frame: _Frame, n_trunk: int, rng: np.random.Generator) -> list[dict]:
    """Trunk valleys from near the crest to beyond the outlet edge, evenly spaced across the flow, meandering.

    Args:
        frame: The flow-aligned frame.
        n_trunk: Number of trunk valleys.
        rng: Random generator (consumed).

    Returns:
        One dict per trunk: ``xy`` (pixel coordinates), ``parent`` -1, ``junction`` -1, ``kind``, ``uv``.
    """
    spacing_v = 1.0 / n_trunk
    lines: list[dict] = []
    for i in range(n_trunk):
        vc = (i + 0.5) * spacing_v + rng.uniform(-0.12, 0.12) * spacing_v
        u_start = rng.uniform(0.10, 0.20)
        length_px = (1.05 - u_start) * (frame.u1 - frame.u0)
        n = max(8, int(length_px / _LINE_STEP_PX))
        u = np.linspace(u_start, 1.05, n)
        v = vc + _smooth_path(rng, n, 0.18 * spacing_v)
        xy = frame.to_px(u, v)
        lines.append({"xy": xy, "parent": -1, "junction": -1, "kind": "trunk", "uv": (u, v)})
    return lines


def _tributaries(trunks: list[dict], frame: _Frame, rng: np.random.Generator) -> list[dict]:
    """Tributaries: hanging side valleys joining each trunk from a secondary cirque (quadratic Bezier curves).

    Args:
        trunks: The trunk valleys (:func:`_trunk_lines`).
        frame: The flow-aligned frame.
        rng: Random generator (consumed).

    Returns:
        One dict per tributary: ``xy``, ``parent`` (trunk index), ``junction_frac``, ``junction`` (point index on
        the trunk), ``kind``.
    """
    spacing_v = 1.0 / len(trunks)
    lines: list[dict] = []
    for i, trunk in enumerate(trunks):
        tu, tv = trunk["uv"]
        n_trib = int(rng.integers(1, 3))
        sides = rng.permutation([-1, 1])
        for k in range(n_trib):
            t_j = rng.uniform(0.3, 0.55)
            j = int(t_j * (len(tu) - 1))
            side = sides[k % 2]
            head_u = max(0.04, tu[0] + rng.uniform(-0.04, 0.10))
            head_v = tv[j] + side * rng.uniform(0.28, 0.40) * spacing_v
            a = np.array([head_u, head_v])
            b = np.array([tu[j], tv[j]])
            ctrl = np.array([(a[0] + b[0]) / 2 - 0.05, a[1] * 0.7 + b[1] * 0.3])
            length_px = np.hypot((b[0] - a[0]) * (frame.u1 - frame.u0), (b[1] - a[1]) * (frame.v1 - frame.v0))
            n = max(8, int(length_px / _LINE_STEP_PX))
            t = np.linspace(0, 1, n)[:, None]
            uv = (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * b
            xy = frame.to_px(uv[:, 0], uv[:, 1])
            lines.append({"xy": xy, "parent": i, "junction_frac": t_j, "junction": j, "kind": "tributary"})
    return lines


def _long_profile(
    line: dict,
    lines: list[dict],
    s: np.ndarray,
    ela_rel: float,
    relief: float,
    steep: float,
    floor_half_trunk: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Valley-floor elevation and floor half-width along one valley.

    Args:
        line: The valley (a trunk, or a tributary whose parent already has its ``floor``).
        lines: All valleys.
        s: ``(n,)`` arc length along the valley from its head, metres.
        ela_rel: ELA in relative units 0-1 of the relief.
        relief: Elevation range, metres.
        steep: Region's relief steepness.
        floor_half_trunk: Half-width of a trunk valley's flat floor, metres.
        rng: Random generator (consumed).

    Returns:
        ``(floor, half)``, each ``(n,)``: floor elevation in relative units, floor half-width in metres.
    """
    t = s / s[-1]
    if line["kind"] == "trunk":
        # Valley-floor gradient is physical (about 7 deg x steepness^0.5, concave long profile), independent of
        # the scene size: small scenes get a short stretch of valley, not a miniature, steeper one.
        head = ela_rel + (1 - ela_rel) * rng.uniform(0.15, 0.35)
        # The floor always falls at least 600 m below the ELA (or to the lowest elevation), so that even a small
        # scene holds a whole glacier system (steeper, as small glaciers are).
        drop = min(
            head, max(s[-1] * np.tan(np.radians(7.0) * np.sqrt(steep)) / relief, head - ela_rel + 600.0 / relief)
        )
        floor = head - drop * (1 - (1 - t) ** 1.3)
        half = floor_half_trunk * (1.0 + 0.6 * np.exp(-((t / 0.08) ** 2))) * rng.uniform(0.85, 1.15)
    else:
        parent = lines[line["parent"]]
        j_floor = parent["floor"][line["junction"]]
        head = ela_rel + (1 - ela_rel) * rng.uniform(0.25, 0.5)
        step_up = rng.uniform(0.0, 0.03)
        floor = j_floor + step_up + (head - j_floor - step_up) * (1 - t) ** 1.2
        half = 0.6 * floor_half_trunk * (1.0 + 0.6 * np.exp(-((t / 0.12) ** 2))) * rng.uniform(0.85, 1.15)
    # The floor widens and narrows along the valley (rock bars, basins): +-25 % smooth modulation.
    half = half * (1.0 + 0.25 * np.tanh(_smooth_path(rng, len(t), 1.0) * 2.0))
    return floor, half


def _valley_points(
    lines: list[dict], ela_rel: float, relief: float, steep: float, floor_half_trunk: float, rng: np.random.Generator
) -> _Points:
    """Long profiles of every valley (relative units 0-1 of the relief, rescaled at the end with the terrain).

    Sets ``line["floor"]`` on every line.

    Args:
        lines: All valleys, trunks first.
        ela_rel: ELA in relative units 0-1 of the relief.
        relief: Elevation range, metres.
        steep: Region's relief steepness.
        floor_half_trunk: Half-width of a trunk valley's flat floor, metres.
        rng: Random generator (consumed).

    Returns:
        The :class:`_Points`.
    """
    pt_xy, pt_line, pt_s, pt_floor, pt_half = [], [], [], [], []
    offsets = []
    for li, line in enumerate(lines):
        xy = line["xy"]
        seg = np.hypot(*np.diff(xy, axis=0).T) * PIXEL_M
        s = np.concatenate([[0.0], np.cumsum(seg)])
        floor, half = _long_profile(line, lines, s, ela_rel, relief, steep, floor_half_trunk, rng)
        line["floor"] = floor
        offsets.append(sum(len(p) for p in pt_xy))
        pt_xy.append(xy)
        pt_line.append(np.full(len(xy), li))
        pt_s.append(s)
        pt_floor.append(floor)
        pt_half.append(half)
    return _Points(
        xy=np.concatenate(pt_xy),
        line=np.concatenate(pt_line).astype(np.int32),
        s=np.concatenate(pt_s),
        floor=np.concatenate(pt_floor),
        half=np.concatenate(pt_half),
        offsets=offsets,
    )


def _ridge_field(shape: tuple[int, int], frame: _Frame, rng: np.random.Generator) -> np.ndarray:
    """Ridge field: high along the crest (u = 0), falling towards the outlet, with fractal undulation.

    Args:
        shape: ``(rows, cols)``.
        frame: The flow-aligned frame.
        rng: Random generator (consumed).

    Returns:
        ``(rows, cols)`` ridge elevation, relative units.
    """
    rows, cols = shape
    ed, centre = frame.ed, frame.centre
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    u_cell = (((xx + 0.5 - centre[0]) * ed[0] + (yy + 0.5 - centre[1]) * ed[1]) - frame.u0) / (frame.u1 - frame.u0)
    del yy, xx
    ridge = 0.8 - 0.4 * np.clip(u_cell, 0, 1) ** 1.2
    ridge += 0.10 * fractal_noise(shape, rng, beta=3.5, min_wavelength_px=20)
    return ridge


def _carve(
    shape: tuple[int, int], n_lines: int, points: _Points, ridge: np.ndarray, walls: _Walls
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carve every valley's trough into the ridge field; the terrain is the minimum over all valleys.

    Where two troughs meet a sharp ridge (arete) forms and the surface stays continuous. The nearest point of each
    valley comes from a Euclidean distance transform with indices.

    Args:
        shape: ``(rows, cols)``.
        n_lines: Number of valleys.
        points: All valley points.
        ridge: ``(rows, cols)`` ridge field, relative units.
        walls: The trough profile.

    Returns:
        ``(rel, nearest, dist_m)``: ``(rows, cols)`` float32 relative elevation (inf where no valley lies inside
        the grid), int32 nearest valley point, float32 distance to it in metres.
    """
    rows, cols = shape
    rel = np.full(shape, np.inf, dtype=np.float32)
    nearest = np.zeros(shape, dtype=np.int32)
    dist_m = np.zeros(shape, dtype=np.float32)
    for li in range(n_lines):
        idx = np.flatnonzero(points.line == li)
        cc = np.floor(points.xy[idx, 0]).astype(int)
        rr = np.floor(points.xy[idx, 1]).astype(int)
        inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        if not inside.any():
            continue
        seeds = np.zeros(shape, dtype=np.int64)
        seeds[rr[inside], cc[inside]] = idx[inside] + 1
        d_px, (ir, ic) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        near_l = (seeds[ir, ic] - 1).astype(np.int32)
        del ir, ic, seeds
        d_l = (d_px * PIXEL_M).astype(np.float32)
        prof = walls.profile(d_l, points.half[near_l])
        floor_z = points.floor[near_l]
        z_l = floor_z + (np.maximum(ridge, floor_z + 0.05) - floor_z) * prof
        better = z_l < rel
        rel[better] = z_l[better]
        nearest[better] = near_l[better]
        dist_m[better] = d_l[better]
    return rel, nearest, dist_m


def _roughen(
    rel: np.ndarray, prof: np.ndarray, steep: float, valley_spacing_m: float, rng: np.random.Generator
) -> np.ndarray:
    """Ridged multifractal noise roughens the walls and ridges (aretes, gullies); a little fBm roughens the floors.

    Args:
        rel: ``(rows, cols)`` float32 relative elevation (changed in place).
        prof: ``(rows, cols)`` wall profile, 0 on the valley floors to 1 on the ridges.
        steep: Region's relief steepness.
        valley_spacing_m: Typical distance between neighbouring trunk valleys, metres.
        rng: Random generator (consumed).

    Returns:
        ``(rows, cols)`` float32 roughened relative elevation.
    """
    shape = rel.shape
    wav = max(30.0, valley_spacing_m / PIXEL_M * 0.5)
    rel += 0.12 * steep * (ridged_noise(shape, rng, wavelength_px=wav) - 0.2) * np.sqrt(prof)
    rel += 0.004 * fractal_noise(shape, rng, beta=2.5, min_wavelength_px=3) * (1 - prof)
    return rel.astype(np.float32)


def _squash(r: np.ndarray) -> np.ndarray:
    """Compress relative elevations softly into the range: the highest peaks and the lowest noise dips.

    Args:
        r: Relative elevation (0-1 maps linearly).

    Returns:
        Relative elevation, above 0.85 and below 0.02 compressed.
    """
    top = np.where(r > 0.85, 0.85 + 0.15 * np.tanh((r - 0.85) / 0.15), r)
    return np.where(top < 0.02, 0.02 * np.exp((top - 0.02) / 0.02), top)


def make_terrain(region: Region, shape: tuple[int, int], rng: np.random.Generator) -> Terrain:
    """Generate the bare terrain of a scene.

    Args:
        region: Region preset (elevation range, ELA, relief steepness).
        shape: ``(rows, cols)`` of the master 10 m grid (scene plus margin).
        rng: Random generator (consumed).

    Returns:
        The :class:`Terrain`.
    """
    rows, cols = shape
    extent_m = max(rows, cols) * PIXEL_M
    lo, hi = scaled_elevation_range(region, extent_m)
    relief = hi - lo
    steep = region.relief_steepness
    frame = _flow_frame(rows, cols, rng)
    n_trunk = int(np.clip(round(extent_m / 5000.0), 1, 6))
    valley_spacing_m = 1.0 / n_trunk * (frame.v1 - frame.v0) * PIXEL_M
    trunks = _trunk_lines(frame, n_trunk, rng)
    lines = trunks + _tributaries(trunks, frame, rng)
    floor_half_trunk = 0.20 * valley_spacing_m / 2
    points = _valley_points(lines, (region.ela_m - lo) / relief, relief, steep, floor_half_trunk, rng)

    ridge = _ridge_field(shape, frame, rng)
    wall_scale = max(valley_spacing_m / 2 - floor_half_trunk, 4 * PIXEL_M)
    # Spurs and gullies: the distance from the valley axis is warped by smooth noise, so trough walls are not planar.
    warp = 0.2 * wall_scale * fractal_noise(shape, rng, beta=3.5, min_wavelength_px=wall_scale / PIXEL_M / 6)
    walls = _Walls(warp=warp, wall_scale=wall_scale, p=0.85 / steep)
    rel, nearest, dist_m = _carve(shape, len(lines), points, ridge, walls)
    if not np.isfinite(rel).all():  # no valley inside a degenerate tiny scene: the ridge field alone
        rel = np.where(np.isfinite(rel), rel, ridge).astype(np.float32)
    # The floor steps from one line point to the next (a few metres); a light blur removes the facets.
    rel = ndimage.gaussian_filter(rel, 1.5)
    rel = _roughen(rel, walls.profile(dist_m, points.half[nearest]), steep, valley_spacing_m, rng)

    # Onto the elevation range: relative 0..1 maps linearly (so valley floors keep their position relative to the
    # ELA); the highest peaks and the lowest noise dips are compressed softly into the range.
    z = lo + _squash(rel) * relief
    pt_floor_m = lo + _squash(points.floor) * relief
    logger.debug("terrain: %d trunks, %d tributaries, %.0f-%.0f m", n_trunk, len(lines) - n_trunk, lo, hi)
    return Terrain(
        z=z.astype(np.float32),
        nearest=nearest,
        dist_m=dist_m,
        pt_line=points.line,
        pt_s=points.s,
        pt_floor=pt_floor_m.astype(np.float32),
        pt_halfwidth=points.half.astype(np.float32),
        line_parent=np.array([ln["parent"] for ln in lines], dtype=np.int32),
        line_junction=np.array(
            [points.offsets[ln["parent"]] + ln["junction"] if ln["parent"] >= 0 else -1 for ln in lines],
            dtype=np.int64,
        ),
        elevation_range_m=(lo, hi),
        valley_spacing_m=float(valley_spacing_m),
    )
