"""Assemble and write a synthetic twin scene: the raw inputs of one region as a real workflow receives them.

Everything is simulated on one 10 m master grid (the scene plus a margin) in the region's UTM zone, then delivered
at each product's native grid:

========================  =======================================  ==========================================
product                   grid                                     encoding
========================  =======================================  ==========================================
Sentinel-2 B2 B3 B4 B8    10 m, scene extent, UTM                  uint16 L2A DN = reflectance * 10000 + 1000,
                                                                   nodata 0 (strip outside the swath)
Sentinel-2 B5-B7 B8A      20 m (2 x 2 area mean), UTM              as above
B11 B12
DEM                       1 arc-second, EPSG:4326, scene + margin  float32 metres, nodata -32767
InSAR coherence / phase   40 m (4 x 4 looks), UTM, scene + 200 m   float32, nodata NaN (declared, none present)
Reference polygons        GeoPackage, EPSG:4326                    layers glaciers / debris / lakes
========================  =======================================  ==========================================

Grids nest: the scene origin is snapped to a multiple of 40 m, so the 10, 20 and 40 m grids share corners.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio.warp
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from tqdm.auto import tqdm

from cryonet.constants import S2_BANDS, S2_BANDS_10M, S2_L2A_NODATA, S2_L2A_OFFSET, S2_L2A_SCALE
from cryonet.raster import Grid, write_raster
from cryonet.regions import Region, get_region
from cryonet.scene import SCENE_FILE, Scene, SceneError
from cryonet.synthetic.glaciers import GlacierField, make_glaciers
from cryonet.synthetic.insar import LOOKS, TEMPORAL_BASELINE_DAYS, Interferogram, simulate_pair
from cryonet.synthetic.labels import label_layers, write_geopackage
from cryonet.synthetic.optics import add_sensor_noise, boa_reflectance
from cryonet.synthetic.terrain import PIXEL_M, make_terrain

logger = logging.getLogger(__name__)

#: Version of the generator; a scene written by another version is regenerated.
GENERATOR_VERSION: str = "1.2"
#: Margin of the master grid around the scene, 10 m pixels (a multiple of 4, so 40 m grids nest; 480 m).
MARGIN_PX: int = 48
#: Margin of the InSAR grid around the scene, 40 m pixels (200 m).
INSAR_MARGIN_PX40: int = 5
#: Margin of the DEM around the scene, metres.
DEM_MARGIN_M: float = 120.0
#: DEM pixel size, degrees (1 arc-second, Copernicus GLO-30).
DEM_RES_DEG: float = 1.0 / 3600.0
#: DEM nodata value.
DEM_NODATA: float = -32767.0
#: Smallest supported scene edge, pixels.
MIN_SIZE_PX: int = 32
#: Horizontal look direction of the ascending, right-looking Sentinel-1 pass, degrees from north.
S1_LOOK_AZIMUTH_DEG: float = 78.0


@dataclass
class TwinArrays:
    """A synthetic scene in memory, before it is written.

    Attributes:
        region: The region preset.
        size: Scene edge, 10 m pixels.
        seed: Random seed.
        grid10: Scene grid at 10 m (Sentinel-2 10 m bands, labels).
        grid20: Scene grid at 20 m.
        grid_insar: InSAR grid at 40 m (scene plus 200 m).
        grid_dem: DEM grid in EPSG:4326.
        s2: Band -> ``(rows, cols)`` uint16 L2A digital numbers on its native grid (0 = nodata).
        dem: ``(rows, cols)`` float32 DEM on ``grid_dem``.
        coherence: ``(rows, cols)`` float32 on ``grid_insar``.
        phase: ``(rows, cols)`` float32 on ``grid_insar``.
        classes: ``(rows, cols)`` uint8 reference label on ``grid10``.
        surface: ``(rows, cols)`` uint8 surface types (:class:`cryonet.synthetic.glaciers.Surface`) on ``grid10``.
        elevation: ``(rows, cols)`` float32 surface elevation on ``grid10``, metres.
        velocity: ``(rows, cols)`` float32 surface speed on ``grid10``, m/yr.
        true_coherence_10m: ``(rows, cols)`` float32 coherence the pair was simulated with, on ``grid10``.
        glacier_id: ``(rows, cols)`` int32 glacier number on ``grid10``.
        lake_id: ``(rows, cols)`` int32 lake number on ``grid10``.
        lake_types: Lake number -> type.
        layers: Reference polygons (layer name -> GeoDataFrame, EPSG:4326).
        meta: Metadata written into ``scene.json``.
    """

    region: Region
    size: int
    seed: int
    grid10: Grid
    grid20: Grid
    grid_insar: Grid
    grid_dem: Grid
    s2: dict[str, np.ndarray]
    dem: np.ndarray
    coherence: np.ndarray
    phase: np.ndarray
    classes: np.ndarray
    surface: np.ndarray
    elevation: np.ndarray
    velocity: np.ndarray
    glacier_id: np.ndarray
    lake_id: np.ndarray
    lake_types: dict[int, str]
    layers: dict[str, gpd.GeoDataFrame]
    meta: dict[str, Any] = field(default_factory=dict)


def scene_origin(region: Region, size: int) -> tuple[float, float]:
    """Upper-left corner (easting, northing) of a ``size`` x ``size`` 10 m scene centred on the region's centre.

    The corner is snapped to a multiple of 40 m so that the 10, 20 and 40 m grids nest.
    """
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{region.epsg}", always_xy=True)
    e, n = to_utm.transform(region.centre_lon, region.centre_lat)
    half = size * PIXEL_M / 2
    left = round((e - half) / 40.0) * 40.0
    top = round((n + half) / 40.0) * 40.0
    return float(left), float(top)


def _nodata_strip(grid: Grid, side: str, x_top: float, x_bottom: float) -> np.ndarray:
    """Cells of ``grid`` beyond the (slanted) swath edge from ``(x_top, top)`` to ``(x_bottom, bottom)``."""
    left, bottom, right, top = grid.bounds
    cols = left + (np.arange(grid.width) + 0.5) * grid.res[0]
    rows = top - (np.arange(grid.height) + 0.5) * grid.res[1]
    frac = (top - rows) / (top - bottom)
    edge = x_top + (x_bottom - x_top) * frac
    return cols[None, :] < edge[:, None] if side == "west" else cols[None, :] > edge[:, None]


def _to_dn(refl: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Reflectance -> L2A digital numbers (``DN = reflectance * 10000 - offset``), 0 where ``nodata``."""
    dn = np.round(refl * S2_L2A_SCALE) - S2_L2A_OFFSET
    dn = np.clip(dn, 1, np.iinfo(np.uint16).max).astype(np.uint16)
    dn[nodata] = S2_L2A_NODATA
    return dn


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping ``k`` x ``k`` blocks of the last two axes (area-averaging to a coarser grid)."""
    *lead, rows, cols = a.shape
    return a.reshape(*lead, rows // k, k, cols // k, k).mean(axis=(-3, -1))


@dataclass(frozen=True)
class _Grids:
    """The grids of one synthetic scene; all share the scene's UTM CRS and nest at 40 m.

    Attributes:
        origin: Upper-left corner ``(easting, northing)`` of the scene, metres.
        grid10: Scene grid at 10 m.
        grid20: Scene grid at 20 m.
        grid_insar: InSAR grid at 40 m (scene plus :data:`INSAR_MARGIN_PX40`).
        master: Simulation grid at 10 m (scene plus :data:`MARGIN_PX`, a multiple of the InSAR looks).
    """

    origin: tuple[float, float]
    grid10: Grid
    grid20: Grid
    grid_insar: Grid
    master: Grid


def _scene_grids(reg: Region, size: int) -> _Grids:
    """The 10 m, 20 m, InSAR and master grids of a ``size`` x ``size`` scene of ``reg``.

    Args:
        reg: Region preset (centre, UTM zone).
        size: Scene edge, 10 m pixels.

    Returns:
        The :class:`_Grids`.
    """
    crs = CRS.from_epsg(reg.epsg)
    left, top = scene_origin(reg, size)
    m = MARGIN_PX
    master_n = int(math.ceil((size + 2 * m) / LOOKS) * LOOKS)
    grid10 = Grid(crs, Affine(PIXEL_M, 0, left, 0, -PIXEL_M, top), size, size)
    n20 = int(math.ceil(size / 2))
    grid20 = Grid(crs, Affine(20.0, 0, left, 0, -20.0, top), n20, n20)
    n40 = int(math.ceil(size / 4)) + 2 * INSAR_MARGIN_PX40
    grid_insar = Grid(
        crs, Affine(40.0, 0, left - 40.0 * INSAR_MARGIN_PX40, 0, -40.0, top + 40.0 * INSAR_MARGIN_PX40), n40, n40
    )
    master = Grid(crs, Affine(PIXEL_M, 0, left - m * PIXEL_M, 0, -PIXEL_M, top + m * PIXEL_M), master_n, master_n)
    return _Grids(origin=(left, top), grid10=grid10, grid20=grid20, grid_insar=grid_insar, master=master)


def _swath_edge(left: float, size: int, rng: np.random.Generator) -> tuple[str, float, float]:
    """Swath edge: a slanted strip on the east or west edge, 2-6 % of the scene.

    Args:
        left: Scene's western edge (easting), metres.
        size: Scene edge, 10 m pixels.
        rng: Random generator (consumed).

    Returns:
        ``(side, x_top, x_bottom)``: ``"west"`` or ``"east"``, and the edge's easting at the top and bottom.
    """
    side = "west" if rng.random() < 0.5 else "east"
    width_m = size * PIXEL_M
    w_top, w_bottom = rng.uniform(0.0, 0.05) * width_m, rng.uniform(0.03, 0.08) * width_m
    x_top = left + w_top if side == "west" else left + width_m - w_top
    x_bottom = left + w_bottom if side == "west" else left + width_m - w_bottom
    return side, x_top, x_bottom


def _sentinel2(
    glaciers: GlacierField, reg: Region, size: int, grids: _Grids, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Sentinel-2 L2A bands on their native grids: reflectance, sensor noise, a nodata strip beyond the swath.

    Args:
        glaciers: Glaciers and surface types on the master grid.
        reg: Region preset (sun position).
        size: Scene edge, 10 m pixels.
        grids: The scene's grids.
        rng: Random generator (consumed).

    Returns:
        Band -> ``(rows, cols)`` uint16 L2A digital numbers (0 = nodata).
    """
    m = MARGIN_PX
    n20 = grids.grid20.width
    refl = boa_reflectance(glaciers, reg.sun_azimuth_deg, reg.sun_elevation_deg, rng)  # (bands, M, M) at 10 m
    inner = (slice(m, m + size), slice(m, m + size))
    inner20 = (slice(m // 2, m // 2 + n20), slice(m // 2, m // 2 + n20))
    side, x_top, x_bottom = _swath_edge(grids.origin[0], size, rng)
    s2: dict[str, np.ndarray] = {}
    for b, band in enumerate(S2_BANDS):
        if band in S2_BANDS_10M:
            native, grid = refl[b][inner], grids.grid10
        else:
            native, grid = _block_mean(refl[b], 2)[inner20], grids.grid20
        s2[band] = _to_dn(add_sensor_noise(native, rng), _nodata_strip(grid, side, x_top, x_bottom))
    return s2


def _insar(
    glaciers: GlacierField, grid_insar: Grid, rng: np.random.Generator
) -> tuple[Interferogram, np.ndarray, np.ndarray]:
    """The Sentinel-1 pair, cut to the InSAR grid.

    Args:
        glaciers: Glaciers and surface types on the master grid.
        grid_insar: The 40 m InSAR grid.
        rng: Random generator (consumed).

    Returns:
        ``(ifg, coherence, phase)``: the simulated pair, and its coherence and phase on ``grid_insar``.
    """
    ifg = simulate_pair(glaciers, look_azimuth_deg=S1_LOOK_AZIMUTH_DEG, rng=rng)
    n40 = grid_insar.width
    o = MARGIN_PX // LOOKS - INSAR_MARGIN_PX40
    insar_win = (slice(o, o + n40), slice(o, o + n40))
    return ifg, ifg.coherence[insar_win], ifg.phase[insar_win]


def _dem(z: np.ndarray, grids: _Grids, rng: np.random.Generator) -> tuple[Grid, np.ndarray]:
    """DEM: the surface reprojected to 1 arc-second geographic coordinates (area-weighted), with GLO-30-like noise.

    Args:
        z: ``(rows, cols)`` float32 surface elevation on the master grid, metres.
        grids: The scene's grids.
        rng: Random generator (consumed: the noise).

    Returns:
        ``(grid_dem, dem)``: the EPSG:4326 grid (scene plus :data:`DEM_MARGIN_M`) and the float32 DEM on it.
    """
    crs = grids.grid10.crs
    scene_left, scene_bottom, scene_right, scene_top = grids.grid10.bounds
    lon0, lat0, lon1, lat1 = rasterio.warp.transform_bounds(
        crs,
        "EPSG:4326",
        scene_left - DEM_MARGIN_M,
        scene_bottom - DEM_MARGIN_M,
        scene_right + DEM_MARGIN_M,
        scene_top + DEM_MARGIN_M,
        densify_pts=21,
    )
    res = DEM_RES_DEG
    lon0, lat1 = math.floor(lon0 / res) * res, math.ceil(lat1 / res) * res
    dem_w, dem_h = int(math.ceil((lon1 - lon0) / res)), int(math.ceil((lat1 - lat0) / res))
    grid_dem = Grid(CRS.from_epsg(4326), Affine(res, 0, lon0, 0, -res, lat1), dem_w, dem_h)
    z_dem_src = z + rng.normal(0.0, 2.0, z.shape).astype(np.float32)
    dem = np.full(grid_dem.shape, DEM_NODATA, dtype=np.float32)
    rasterio.warp.reproject(
        z_dem_src,
        dem,
        src_transform=grids.master.transform,
        src_crs=crs,
        src_nodata=None,
        dst_transform=grid_dem.transform,
        dst_crs=grid_dem.crs,
        dst_nodata=DEM_NODATA,
        resampling=rasterio.warp.Resampling.average,
    )
    return grid_dem, dem


def _scene_meta(reg: Region, size: int, seed: int, ifg: Interferogram, classes: np.ndarray) -> dict[str, Any]:
    """Metadata of a synthetic scene, as written into ``scene.json``.

    Args:
        reg: Region preset.
        size: Scene edge, 10 m pixels.
        seed: Random seed.
        ifg: The simulated Sentinel-1 pair.
        classes: ``(rows, cols)`` uint8 reference label of the scene.

    Returns:
        JSON-ready dict.
    """
    acq = date.fromisoformat(reg.acquisition)
    s1_first = acq - timedelta(days=TEMPORAL_BASELINE_DAYS // 2)
    glacier_px = int(np.isin(classes, (1, 2)).sum())
    return {
        "seed": int(seed),
        "size": size,
        "generator": "cryonet.synthetic",
        "generator_version": GENERATOR_VERSION,
        "acquisition": reg.acquisition,
        "s1_pair": [s1_first.isoformat(), (s1_first + timedelta(days=TEMPORAL_BASELINE_DAYS)).isoformat()],
        "s1_perpendicular_baseline_m": round(ifg.perpendicular_baseline_m, 2),
        "s1_height_of_ambiguity_m": round(ifg.height_of_ambiguity_m, 1),
        "s1_look_azimuth_deg": S1_LOOK_AZIMUTH_DEG,
        "insar_nodata": "NaN",
        "epsg": reg.epsg,
        "description": (
            f"Synthetic twin scene of the {reg.title} (seed {seed}, {size} x {size} px at 10 m): simulated terrain, "
            "glaciers, Sentinel-2 L2A reflectance, Copernicus-like DEM, Sentinel-1 12-day coherence and phase, and "
            "reference polygons. Every number derived from it is synthetic."
        ),
        "class_pixels": {
            c: int((classes == i).sum()) for i, c in enumerate(("background", "clean_ice", "debris", "lake"))
        },
        "debris_share_of_glacier": round(float((classes == 2).sum() / max(glacier_px, 1)), 4),
    }


def _scene_cut(glaciers: GlacierField, size: int) -> dict[str, np.ndarray]:
    """The scene's part of the master-grid glacier arrays (views), named as the fields of :class:`TwinArrays`.

    Args:
        glaciers: Glaciers and surface types on the master grid.
        size: Scene edge, 10 m pixels.

    Returns:
        ``classes``, ``surface``, ``elevation``, ``velocity``, ``glacier_id`` and ``lake_id`` on the 10 m grid.
    """
    inner = (slice(MARGIN_PX, MARGIN_PX + size), slice(MARGIN_PX, MARGIN_PX + size))
    return {
        "classes": glaciers.classes[inner],
        "surface": glaciers.surface[inner],
        "elevation": glaciers.z[inner],
        "velocity": glaciers.velocity[inner],
        "glacier_id": glaciers.glacier_id[inner],
        "lake_id": glaciers.lake_id[inner],
    }


def synthesize(region: str | Region, *, size: int | None = None, seed: int = 0, progress: bool = True) -> TwinArrays:
    """Simulate a synthetic twin scene in memory.

    Args:
        region: Region preset or its name (``poiqu``, ``montblanc``).
        size: Scene edge in 10 m pixels; None for the preset's default.
        seed: Random seed; the same seed gives byte-identical arrays.
        progress: Show a progress bar.

    Returns:
        The :class:`TwinArrays`.

    Raises:
        ValueError: ``size`` smaller than :data:`MIN_SIZE_PX`.
    """
    reg = get_region(region) if isinstance(region, str) else region
    size = int(size if size is not None else reg.default_size_px)
    if size < MIN_SIZE_PX:
        raise ValueError(f"scene size {size} px is too small; expected at least {MIN_SIZE_PX} pixels (10 m each)")
    rng = np.random.default_rng([seed, sum(map(ord, reg.name))])
    grids = _scene_grids(reg, size)

    steps = tqdm(total=5, desc=f"synth {reg.name} {size}px", disable=not progress, unit="step")
    steps.set_postfix_str("terrain")
    terrain = make_terrain(reg, grids.master.shape, rng)
    steps.update()
    steps.set_postfix_str("glaciers")
    glaciers = make_glaciers(reg, terrain, rng)
    steps.update()
    steps.set_postfix_str("optics")
    s2 = _sentinel2(glaciers, reg, size, grids, rng)
    steps.update()
    steps.set_postfix_str("insar")
    ifg, coherence, phase = _insar(glaciers, grids.grid_insar, rng)
    grid_dem, dem = _dem(glaciers.z, grids, rng)
    steps.update()
    steps.set_postfix_str("labels")
    cut = _scene_cut(glaciers, size)
    layers = label_layers(
        cut["classes"],
        cut["glacier_id"],
        cut["lake_id"],
        glaciers.lake_types,
        cut["elevation"],
        grids.grid10,
        id_prefix=f"SYN{reg.name[:2].upper()}",
    )
    steps.update()
    steps.close()

    return TwinArrays(
        region=reg,
        size=size,
        seed=int(seed),
        grid10=grids.grid10,
        grid20=grids.grid20,
        grid_insar=grids.grid_insar,
        grid_dem=grid_dem,
        s2=s2,
        dem=dem,
        coherence=coherence,
        phase=phase,
        lake_types=glaciers.lake_types,
        layers=layers,
        meta=_scene_meta(reg, size, seed, ifg, cut["classes"]),
        **cut,
    )


def _file_names(reg: Region) -> dict[str, str]:
    """Relative paths of the scene's files (realistic, clearly synthetic names)."""
    stamp = reg.acquisition.replace("-", "")
    band_letter = "CDEFGHJKLMNPQRSTUVWX"[int((reg.centre_lat + 80) // 8)]
    tile = f"T{reg.epsg % 100}{band_letter}SYN"
    acq = date.fromisoformat(reg.acquisition)
    d0 = acq - timedelta(days=TEMPORAL_BASELINE_DAYS // 2)
    d1 = d0 + timedelta(days=TEMPORAL_BASELINE_DAYS)
    pair = f"{d0:%Y%m%d}_{d1:%Y%m%d}"
    names = {
        band: f"s2/SYNTH_{tile}_{stamp}_B{band[1:]:0>2}_{10 if band in S2_BANDS_10M else 20}m.tif" for band in S2_BANDS
    }
    names["dem"] = "dem/SYNTH_GLO30_DEM.tif"
    names["coherence"] = f"insar/SYNTH_S1_{pair}_coherence_40m.tif"
    names["phase"] = f"insar/SYNTH_S1_{pair}_phase_40m.tif"
    names["labels"] = "labels/SYNTH_reference.gpkg"
    return names


def _existing(out: Path, reg: Region, size: int, seed: int) -> Scene | None:
    """The complete scene already in ``out`` with the same region, size, seed and generator version, else None."""
    path = out / SCENE_FILE
    if not path.is_file():
        return None
    try:
        scene = Scene.load(out)
        doc = json.loads(path.read_text())
    except (SceneError, json.JSONDecodeError):
        return None
    same = (
        doc.get("region") == reg.name
        and doc.get("size") == size
        and doc.get("seed") == seed
        and doc.get("generator_version") == GENERATOR_VERSION
        and scene.labels is not None
    )
    return scene if same else None


def generate_scene(
    region: str | Region,
    out_dir: str | Path,
    *,
    size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Scene:
    """Generate a synthetic twin scene and write it to ``out_dir`` (described by ``out_dir/scene.json``).

    If ``out_dir`` already holds a complete scene of the same region, size, seed and generator version, it is
    returned without regenerating anything (unless ``overwrite``).

    Args:
        region: Region preset or its name (``poiqu``, ``montblanc``).
        out_dir: Scene directory (created if needed).
        size: Scene edge in 10 m pixels; None for the preset's default (1500 for poiqu, 1000 for montblanc).
        seed: Random seed; the same seed gives byte-identical rasters.
        progress: Show a progress bar.
        overwrite: Regenerate even if a matching scene exists.

    Returns:
        The written :class:`cryonet.scene.Scene`.
    """
    reg = get_region(region) if isinstance(region, str) else region
    size = int(size if size is not None else reg.default_size_px)
    out = Path(out_dir)
    if not overwrite:
        existing = _existing(out, reg, size, seed)
        if existing is not None:
            logger.info(
                "%s: complete %s scene (size %d, seed %d) already there; not regenerated", out, reg.name, size, seed
            )
            return existing
    twin = synthesize(reg, size=size, seed=seed, progress=progress)
    names = _file_names(reg)
    out.mkdir(parents=True, exist_ok=True)
    # Any old scene.json goes first, so that an interrupted rewrite never looks complete.
    (out / SCENE_FILE).unlink(missing_ok=True)
    tags = {"SYNTHETIC": "yes", "GENERATOR": f"cryonet.synthetic {GENERATOR_VERSION}", "SEED": str(seed)}
    for band in S2_BANDS:
        grid = twin.grid10 if band in S2_BANDS_10M else twin.grid20
        write_raster(
            out / names[band],
            twin.s2[band],
            grid,
            nodata=S2_L2A_NODATA,
            descriptions=[band],
            tags={
                **tags,
                "BOA_QUANTIFICATION_VALUE": str(int(S2_L2A_SCALE)),
                "BOA_ADD_OFFSET": str(S2_L2A_OFFSET),
                "ACQUISITION": reg.acquisition,
            },
        )
    write_raster(
        out / names["dem"],
        twin.dem,
        twin.grid_dem,
        nodata=DEM_NODATA,
        descriptions=["elevation_m"],
        tags={**tags, "UNITS": "metre"},
    )
    write_raster(
        out / names["coherence"],
        twin.coherence,
        twin.grid_insar,
        nodata=float("nan"),
        descriptions=["coherence"],
        tags={**tags, "PAIR": "_".join(twin.meta["s1_pair"])},
    )
    write_raster(
        out / names["phase"],
        twin.phase,
        twin.grid_insar,
        nodata=float("nan"),
        descriptions=["wrapped_phase_rad"],
        tags={**tags, "PAIR": "_".join(twin.meta["s1_pair"]), "UNITS": "radian"},
    )
    write_geopackage(twin.layers, out / names["labels"])
    scene = Scene(
        root=out,
        region=reg.name,
        s2={b: out / names[b] for b in S2_BANDS},
        dem=out / names["dem"],
        coherence=out / names["coherence"],
        phase=out / names["phase"],
        labels=out / names["labels"],
        sun_azimuth_deg=reg.sun_azimuth_deg,
        sun_elevation_deg=reg.sun_elevation_deg,
        synthetic=True,
        meta=twin.meta,
    )
    scene.save()
    logger.info("wrote synthetic %s scene to %s", reg.name, out)
    return Scene.load(out)
