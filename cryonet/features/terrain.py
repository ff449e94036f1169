"""Terrain layers from a digital elevation model on a projected (metric) grid.

Every layer is computed from the 3 × 3 neighbourhood of a cell with vectorised numpy slicing, in float64, and
returned as float32. The formulas follow ``gdaldem`` (GDAL 3.x, default options) so that the layers can be checked
against it cell by cell:

* ``slope``: Horn (1981) gradient, exactly as ``gdaldem slope`` (degrees, 0–90).
* ``aspect``: direction the slope faces (downslope azimuth), degrees clockwise from north in [0, 360), Horn's
  gradient, as ``gdaldem aspect``. **Flat cells** (both Horn differences exactly 0) get NaN here; ``gdaldem`` writes
  its nodata value -9999 there. ``aspect_sin`` / ``aspect_cos`` (east and north components of the downslope unit
  vector, i.e. sin/cos of the aspect) are 0 on flat cells, so that the model sees "no direction" rather than NaN.
  For non-square pixels the gradient uses each axis' own pixel size (``gdaldem aspect`` ignores the pixel size, which
  is the same thing only for square pixels).
* ``hillshade``: cosine of the solar incidence angle on the Horn-gradient surface, clipped to [0, 1] (0 = in
  shade). ``gdaldem hillshade`` (default algorithm, ``-z 1``) writes the byte ``round(1 + 254 · hillshade)``; this
  module keeps the physical 0–1 value. Cast shadows are not modelled (neither does ``gdaldem``).
* ``tpi``: topographic position index as ``gdaldem TPI``: centre minus the mean of the 8 neighbours (metres).
  Optional multi-scale TPIs (``tpi_radii``): centre minus the mean of all other cells whose centres lie within a disc
  of the given radius in metres (layer ``tpi_<r>m``). A radius between √2 and 2 pixels reproduces ``tpi``.
* ``roughness``: as ``gdaldem roughness``: maximum minus minimum of the 3 × 3 window (metres).
* ``curv_plan`` / ``curv_profile``: curvatures from the Zevenbergen & Thorne (1987) quadratic surface (the formulas
  of ArcGIS's *Curvature* tool), in **1/m** (multiply by 100 for ArcGIS's 1/(100 z-units)). Sign convention here:
  **positive = convex** for both. ``curv_profile`` is minus the second derivative of elevation along the steepest
  slope (positive on convex, decelerating slopes such as a hill shoulder, negative in concave footslopes);
  ``curv_plan`` is minus the second derivative along the contour (positive where contours are convex, flow
  diverges: ridges and noses; negative in hollows and channels). Note that Zevenbergen & Thorne's own plan curvature
  has the opposite sign. Both are 0 where the gradient vanishes (direction undefined).
* ``elevation``: the DEM itself (metres), NaN where the DEM is nodata.

Edges and nodata: a cell whose 3 × 3 window (or TPI disc) touches a nodata cell or lies on the raster edge gets NaN
in every derived layer, like ``gdaldem`` without ``-compute_edges``. ``elevation`` is NaN only where the DEM itself
is nodata.

The grid must be projected with pixel sizes in metres; :func:`terrain_file` refuses a DEM in geographic coordinates
(use ``cryonet align`` to bring it onto the scene's UTM grid first).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import rasterio
from rasterio.windows import Window
from scipy.signal import fftconvolve
from tqdm.auto import tqdm

from cryonet.raster import Grid, RasterError, atomic_path, open_raster

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da

logger = logging.getLogger(__name__)

#: Layers computed by default, in band order of :func:`terrain_file`.
TERRAIN_LAYERS: Final[tuple[str, ...]] = (
    "elevation",
    "slope",
    "aspect",
    "aspect_sin",
    "aspect_cos",
    "curv_plan",
    "curv_profile",
    "hillshade",
    "tpi",
    "roughness",
)

#: Unit of each layer (multi-scale ``tpi_<r>m`` layers are in metres too).
TERRAIN_UNITS: Final[dict[str, str]] = {
    "elevation": "m",
    "slope": "degree",
    "aspect": "degree clockwise from north (NaN on flat cells)",
    "aspect_sin": "1 (east component of the downslope direction)",
    "aspect_cos": "1 (north component of the downslope direction)",
    "curv_plan": "1/m (positive = convex)",
    "curv_profile": "1/m (positive = convex)",
    "hillshade": "1 (cosine of solar incidence, 0-1)",
    "tpi": "m",
    "roughness": "m",
}


def _tpi_name(radius_m: float) -> str:
    return f"tpi_{radius_m:g}m"


def _disc_offsets(radius_m: float, res: tuple[float, float]) -> tuple[int, int]:
    """Half-sizes ``(rows, cols)`` in pixels of the disc of ``radius_m`` metres."""
    xres, yres = res
    # The small tolerance keeps a radius of exactly k pixels inclusive despite floating-point division.
    return int(math.floor(radius_m / yres + 1e-9)), int(math.floor(radius_m / xres + 1e-9))


def halo(res: tuple[float, float] = (1.0, 1.0), tpi_radii: Iterable[float] = ()) -> int:
    """Margin in pixels that a window needs on each side so that its interior matches a whole-raster computation.

    Args:
        res: Pixel size ``(x, y)`` in metres (only matters with ``tpi_radii``).
        tpi_radii: Radii of the multi-scale TPI discs, metres.

    Returns:
        1 for the 3 × 3 layers, more when a TPI disc reaches further.
    """
    margin = 1
    for r in tpi_radii:
        margin = max(margin, *_disc_offsets(float(r), res))
    return margin


def _check_layers(layers: Sequence[str], tpi_radii: Sequence[float]) -> None:
    known = set(TERRAIN_LAYERS) | {_tpi_name(r) for r in tpi_radii}
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown terrain layer(s) {unknown}; expected names from {sorted(known)}")


def _multiscale_tpi(z: np.ndarray, invalid: np.ndarray, radius_m: float, res: tuple[float, float]) -> np.ndarray:
    """Centre minus the mean of the disc of ``radius_m`` (centre excluded); NaN where the disc is incomplete."""
    xres, yres = res
    hr, hc = _disc_offsets(radius_m, res)
    if hr < 1 and hc < 1:
        raise ValueError(f"TPI radius {radius_m} m is smaller than one pixel ({xres} × {yres} m)")
    ii, jj = np.mgrid[-hr : hr + 1, -hc : hc + 1]
    kernel = ((ii * yres) ** 2 + (jj * xres) ** 2 <= radius_m**2 * (1 + 1e-12)).astype(np.float64)
    kernel[hr, hc] = 0.0
    n = kernel.sum()
    # FFT convolution: a direct sliding sum costs O(kernel size) per cell, prohibitive for radii of tens of pixels.
    zp = np.pad(np.where(invalid, 0.0, z), ((hr, hr), (hc, hc)))
    bad = np.pad(invalid.astype(np.float64), ((hr, hr), (hc, hc)), constant_values=1.0)
    total = fftconvolve(zp, kernel, mode="valid")
    nbad = fftconvolve(bad, kernel, mode="valid")
    out = z - total / n
    out[(nbad > 0.5) | invalid] = np.nan
    return out


def _layer_list(layers: Sequence[str], tpi_radii: Sequence[float]) -> tuple[Sequence[str], tuple[float, ...]]:
    """Checked layer names and TPI radii: the default layers gain one ``tpi_<r>m`` layer per radius.

    Args:
        layers: Requested layer names (the default :data:`TERRAIN_LAYERS` object, or the caller's own).
        tpi_radii: Radii of the multi-scale TPI discs, metres.

    Returns:
        ``(layers, tpi_radii)`` with the radii as floats.

    Raises:
        ValueError: A layer is unknown.
    """
    tpi_radii = tuple(float(r) for r in tpi_radii)
    if layers is TERRAIN_LAYERS and tpi_radii:
        layers = (*TERRAIN_LAYERS, *(_tpi_name(r) for r in tpi_radii))
    _check_layers(layers, tpi_radii)
    return layers, tpi_radii


def _checked_dem(dem: np.ndarray, res: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    """The DEM as a float64 array and the pixel size as floats, checked.

    Args:
        dem: Elevation, metres, ``(rows, cols)``.
        res: Pixel size ``(x, y)`` in metres.

    Returns:
        ``(z, xres, yres)``.

    Raises:
        ValueError: ``dem`` is not 2-D, or ``res`` is not positive and finite.
    """
    z = np.asarray(dem, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected a (rows, cols) DEM, got an array of shape {z.shape}")
    xres, yres = (float(res[0]), float(res[1]))
    if not (xres > 0 and yres > 0 and math.isfinite(xres) and math.isfinite(yres)):
        raise ValueError(f"pixel size must be positive metres (x, y), got {res}")
    return z, xres, yres


def _masked_dem(z: np.ndarray, nodata_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The DEM with NaN at every nodata cell, and the nodata mask.

    Args:
        z: ``(rows, cols)`` float64 elevation, metres; NaN marks nodata.
        nodata_mask: Optional ``(rows, cols)`` boolean array, True where the DEM is nodata.

    Returns:
        ``(z, invalid)``.

    Raises:
        ValueError: The mask's shape differs from the DEM's.
    """
    invalid = ~np.isfinite(z)
    if nodata_mask is not None:
        mask = np.asarray(nodata_mask, dtype=bool)
        if mask.shape != z.shape:
            raise ValueError(f"nodata_mask shape {mask.shape} does not match DEM shape {z.shape}")
        invalid |= mask
    return np.where(invalid, np.nan, z), invalid


class _Window3x3:
    """The 3 × 3 neighbours of every cell, by slicing a NaN-padded copy, and the cells whose window is incomplete.

    Names as in Zevenbergen & Thorne: ``z1 z2 z3 / z4 z5 z6 / z7 z8 z9`` (z1 = north-west, z2 = north, ...,
    z9 = south-east).
    """

    def __init__(self, z: np.ndarray, invalid: np.ndarray) -> None:
        """Slice the neighbours of ``z``.

        Args:
            z: ``(rows, cols)`` float64 elevation, NaN at nodata.
            invalid: ``(rows, cols)`` True at nodata.
        """
        zp = np.pad(z, 1, constant_values=np.nan)
        self.z1, self.z2, self.z3 = zp[:-2, :-2], zp[:-2, 1:-1], zp[:-2, 2:]
        self.z4, self.z5, self.z6 = zp[1:-1, :-2], zp[1:-1, 1:-1], zp[1:-1, 2:]
        self.z7, self.z8, self.z9 = zp[2:, :-2], zp[2:, 1:-1], zp[2:, 2:]
        ip = np.pad(invalid, 1, constant_values=True)
        bad = np.zeros_like(invalid)
        for di in range(3):
            for dj in range(3):
                bad |= ip[di : di + z.shape[0], dj : dj + z.shape[1]]
        self.bad = bad  # True where the window touches nodata or the raster edge
        self.out: dict[str, np.ndarray] = {}

    def keep(self, name: str, arr: np.ndarray) -> None:
        """Store a layer: NaN where the window is incomplete, float32 at once (keeps a large block's peak memory low).

        Args:
            name: Layer name.
            arr: ``(rows, cols)`` float64 layer (changed in place).
        """
        arr[self.bad] = np.nan
        self.out[name] = arr.astype(np.float32)


def _horn_layers(
    w: _Window3x3, res: tuple[float, float], want: set[str], sun_azimuth: float, sun_elevation: float
) -> None:
    """Slope, aspect, its sine and cosine, and hillshade from Horn's (1981) gradient, as gdaldem.

    Args:
        w: The 3 × 3 neighbours; the layers in ``want`` are stored in it.
        res: Pixel size ``(x, y)`` in metres.
        want: Names of the layers wanted.
        sun_azimuth: Sun azimuth for ``hillshade``, degrees clockwise from north.
        sun_elevation: Sun elevation for ``hillshade``, degrees.
    """
    xres, yres = res
    # Weighted differences over the 3 × 3 window. x east, n north.
    dzdx = ((w.z3 + 2.0 * w.z6 + w.z9) - (w.z1 + 2.0 * w.z4 + w.z7)) / (8.0 * xres)
    dzdn = ((w.z1 + 2.0 * w.z2 + w.z3) - (w.z7 + 2.0 * w.z8 + w.z9)) / (8.0 * yres)
    grad = np.hypot(dzdx, dzdn)
    flat = grad == 0.0
    if "slope" in want:
        w.keep("slope", np.degrees(np.arctan(grad)))
    if "aspect" in want:
        # Downslope direction (-dz/dx, -dz/dn) as an azimuth clockwise from north.
        aspect = np.mod(np.degrees(np.arctan2(-dzdx, -dzdn)), 360.0)
        aspect[aspect >= 360.0] = 0.0  # np.mod(-tiny, 360) rounds to 360
        aspect[flat] = np.nan
        w.keep("aspect", aspect)
        del aspect
    if want & {"aspect_sin", "aspect_cos"}:
        safe = np.where(flat, 1.0, grad)
        if "aspect_sin" in want:
            w.keep("aspect_sin", np.where(flat, 0.0, -dzdx / safe))
        if "aspect_cos" in want:
            w.keep("aspect_cos", np.where(flat, 0.0, -dzdn / safe))
        del safe
    if "hillshade" in want:
        az = math.radians(sun_azimuth)
        alt = math.radians(sun_elevation)
        # Unit surface normal (-dz/dx, -dz/dn, 1)/|.| dotted with the unit vector towards the sun.
        cosi = math.sin(alt) - math.cos(alt) * (math.sin(az) * dzdx + math.cos(az) * dzdn)
        cosi /= np.sqrt(1.0 + grad * grad)
        w.keep("hillshade", np.clip(cosi, 0.0, 1.0, out=cosi))


def _curvature_layers(w: _Window3x3, res: tuple[float, float], want: set[str]) -> None:
    """Plan and profile curvature from the Zevenbergen & Thorne (1987) quadratic surface (positive = convex).

    Args:
        w: The 3 × 3 neighbours; the layers in ``want`` are stored in it.
        res: Pixel size ``(x, y)`` in metres.
        want: Names of the layers wanted.
    """
    xres, yres = res
    # p, q first and r, s, t second derivatives of the fitted surface (y north).
    p = (w.z6 - w.z4) / (2.0 * xres)
    q = (w.z2 - w.z8) / (2.0 * yres)
    r = (w.z4 + w.z6 - 2.0 * w.z5) / (xres * xres)
    t = (w.z2 + w.z8 - 2.0 * w.z5) / (yres * yres)
    s = (-w.z1 + w.z3 + w.z7 - w.z9) / (4.0 * xres * yres)
    g2 = p * p + q * q
    flat2 = g2 == 0.0
    safe = np.where(flat2, 1.0, g2)
    if "curv_profile" in want:  # minus d²z/ds² along the gradient
        w.keep("curv_profile", np.where(flat2, 0.0, -(r * p * p + 2.0 * s * p * q + t * q * q) / safe))
    if "curv_plan" in want:  # minus d²z/dc² along the contour
        w.keep("curv_plan", np.where(flat2, 0.0, -(r * q * q - 2.0 * s * p * q + t * p * p) / safe))


def _local_layers(w: _Window3x3, want: set[str]) -> None:
    """TPI (centre minus the mean of the 8 neighbours) and roughness (range of the window), as gdaldem.

    Args:
        w: The 3 × 3 neighbours; the layers in ``want`` are stored in it.
        want: Names of the layers wanted.
    """
    if "tpi" in want:
        w.keep("tpi", w.z5 - (w.z1 + w.z2 + w.z3 + w.z4 + w.z6 + w.z7 + w.z8 + w.z9) / 8.0)
    if "roughness" in want:
        hi, lo = w.z1.copy(), w.z1.copy()
        for zi in (w.z2, w.z3, w.z4, w.z5, w.z6, w.z7, w.z8, w.z9):
            np.maximum(hi, zi, out=hi)
            np.minimum(lo, zi, out=lo)
        w.keep("roughness", hi - lo)


def terrain_layers(
    dem: np.ndarray,
    res: tuple[float, float],
    *,
    sun_azimuth: float = 315.0,
    sun_elevation: float = 45.0,
    nodata_mask: np.ndarray | None = None,
    layers: Sequence[str] = TERRAIN_LAYERS,
    tpi_radii: Sequence[float] = (),
) -> dict[str, np.ndarray]:
    """Terrain layers of a DEM (see the module docstring for formulas, units and conventions).

    Args:
        dem: Elevation, metres, ``(rows, cols)``, north up (row 0 is the northern edge). NaN marks nodata.
        res: Pixel size ``(x, y)`` in metres, positive (non-square pixels allowed).
        sun_azimuth: Sun azimuth for ``hillshade``, degrees clockwise from north (gdaldem default 315).
        sun_elevation: Sun elevation above the horizon for ``hillshade``, degrees (gdaldem default 45).
        nodata_mask: Optional ``(rows, cols)`` boolean array, True where the DEM is nodata (in addition to NaN).
        layers: Names of the layers to compute, from :data:`TERRAIN_LAYERS` (plus ``tpi_<r>m`` for ``tpi_radii``).
        tpi_radii: Radii in metres of extra multi-scale TPI layers, named ``tpi_<r>m`` (``f"tpi_{r:g}m"``); they
            are added to the output when ``layers`` is left at its default.

    Returns:
        Layer name -> float32 ``(rows, cols)`` array, in the order of ``layers``. Cells whose 3 × 3 window touches
        nodata or the raster edge are NaN in every layer except ``elevation``.

    Raises:
        ValueError: ``dem`` is not 2-D, ``res`` is not positive, the mask's shape differs, or a layer is unknown.
    """
    z, xres, yres = _checked_dem(dem, res)
    layers, tpi_radii = _layer_list(layers, tpi_radii)
    z, invalid = _masked_dem(z, nodata_mask)

    w = _Window3x3(z, invalid)
    want = set(layers)
    if want & {"slope", "aspect", "aspect_sin", "aspect_cos", "hillshade"}:
        _horn_layers(w, (xres, yres), want, sun_azimuth, sun_elevation)
    if want & {"curv_plan", "curv_profile"}:
        _curvature_layers(w, (xres, yres), want)
    _local_layers(w, want)
    out = w.out
    if "elevation" in want:
        out["elevation"] = z.astype(np.float32)
    for radius in tpi_radii:
        name = _tpi_name(radius)
        if name in want:
            out[name] = _multiscale_tpi(z, invalid, radius, (xres, yres)).astype(np.float32)
    return {name: out[name] for name in layers}


def terrain_layers_dask(
    dem: da.Array,
    res: tuple[float, float],
    *,
    sun_azimuth: float = 315.0,
    sun_elevation: float = 45.0,
    nodata_mask: da.Array | np.ndarray | None = None,
    layers: Sequence[str] = TERRAIN_LAYERS,
    tpi_radii: Sequence[float] = (),
) -> dict[str, da.Array]:
    """Lazy :func:`terrain_layers` over a chunked dask array, equal to the numpy result cell by cell.

    Each layer is one ``dask.array.map_overlap`` with a :func:`halo`-pixel overlap; the outer boundary is padded
    with NaN, so the raster edge becomes NaN exactly as in the whole-array computation. Chunks must be at least
    ``halo`` pixels on each side.

    Args:
        dem: Elevation, metres, ``(rows, cols)`` dask array (any real dtype).
        res: Pixel size ``(x, y)`` in metres.
        sun_azimuth: See :func:`terrain_layers`.
        sun_elevation: See :func:`terrain_layers`.
        nodata_mask: Optional boolean ``(rows, cols)`` array, True where the DEM is nodata.
        layers: See :func:`terrain_layers`.
        tpi_radii: See :func:`terrain_layers`.

    Returns:
        Layer name -> lazy float32 ``(rows, cols)`` dask array.
    """
    import dask.array as da

    tpi_radii = tuple(float(r) for r in tpi_radii)
    if layers is TERRAIN_LAYERS and tpi_radii:
        layers = (*TERRAIN_LAYERS, *(_tpi_name(r) for r in tpi_radii))
    _check_layers(layers, tpi_radii)
    z = da.asarray(dem).astype(np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected a (rows, cols) DEM, got an array of shape {z.shape}")
    if nodata_mask is not None:
        z = da.where(da.asarray(nodata_mask, chunks=z.chunks), np.nan, z)
    depth = halo(res, tpi_radii)
    result: dict[str, da.Array] = {}
    for name in layers:

        def _block(block: np.ndarray, _name: str = name) -> np.ndarray:
            return terrain_layers(
                block,
                res,
                sun_azimuth=sun_azimuth,
                sun_elevation=sun_elevation,
                layers=(_name,),
                tpi_radii=tpi_radii,
            )[_name]

        result[name] = da.map_overlap(_block, z, depth=depth, boundary=np.nan, dtype=np.float32, trim=True)
    return result


def _check_metric(path: Path, src: rasterio.io.DatasetReader) -> tuple[float, float]:
    """Pixel size in metres of a north-up projected raster; a clear error otherwise."""
    crs = src.crs
    if crs.is_geographic:
        raise RasterError(
            f"{path}: the DEM is in geographic coordinates ({crs.to_string()}), so its pixels are in degrees and "
            "slopes would be wrong. Reproject it onto a projected metric grid first, e.g. onto the scene's UTM grid "
            f"with `cryonet align --inputs {path} --reference <S2 band or grid raster> --out <dir>`."
        )
    try:
        unit, factor = crs.linear_units_factor
    except Exception as exc:  # rasterio raises CRSError for CRSs without a linear unit
        raise RasterError(f"{path}: cannot tell the linear unit of the CRS {crs.to_string()} ({exc}).") from exc
    if not math.isclose(factor, 1.0):
        raise RasterError(
            f"{path}: the CRS's linear unit is {unit!r}, expected metres. Reproject the DEM onto a metric grid "
            "first (`cryonet align`)."
        )
    t = src.transform
    if t.b != 0 or t.d != 0 or t.e >= 0:
        raise RasterError(
            f"{path}: expected a north-up grid without rotation, found the geotransform {tuple(t)[:6]}. "
            "Warp it onto a north-up grid first (`cryonet align`)."
        )
    return abs(t.a), abs(t.e)


def _output_profile(grid: Grid, count: int) -> dict[str, object]:
    """Creation options of the terrain GeoTIFF: float32, NaN nodata, deflate level 1, tiled when large enough.

    Args:
        grid: The DEM's grid.
        count: Number of bands.

    Returns:
        rasterio creation options.
    """
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        # Float terrain layers compress poorly (about 20 %); deflate level 1 gets most of that at a third of the
        # default level's cost.
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
    }
    if min(grid.width, grid.height) >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _describe_bands(
    dst: rasterio.io.DatasetWriter, layers: Sequence[str], sun_azimuth: float, sun_elevation: float, source: str
) -> None:
    """Band descriptions (layer names), units and the dataset's tags of a terrain GeoTIFF.

    Args:
        dst: The output dataset, open for writing.
        layers: Layer names, in band order.
        sun_azimuth: Hillshade sun azimuth, degrees.
        sun_elevation: Hillshade sun elevation, degrees.
        source: Name of the DEM file.
    """
    for i, name in enumerate(layers, start=1):
        dst.set_band_description(i, name)
        dst.set_band_unit(i, TERRAIN_UNITS.get(name, "m"))
    dst.update_tags(
        sun_azimuth_deg=str(sun_azimuth),
        sun_elevation_deg=str(sun_elevation),
        source=source,
        edges="NaN where the 3x3 window touches nodata or the raster edge (as gdaldem without -compute_edges)",
    )


def _block_windows(grid: Grid, block: int) -> list[Window]:
    """``block`` × ``block`` windows tiling ``grid`` row by row (smaller at the right and bottom edges).

    Args:
        grid: The raster's grid.
        block: Block edge, pixels.

    Returns:
        The windows.
    """
    return [
        Window(c, r, min(block, grid.width - c), min(block, grid.height - r))
        for r in range(0, grid.height, block)
        for c in range(0, grid.width, block)
    ]


def _read_with_halo(src: rasterio.io.DatasetReader, win: Window, margin: int) -> np.ndarray:
    """Band 1 of ``win`` plus ``margin`` pixels on every side, as float64 with NaN at nodata and outside the raster.

    Padding with NaN where the halo falls outside the raster makes edge cells NaN as in the whole array.

    Args:
        src: The DEM, open.
        win: The block.
        margin: Halo width, pixels.

    Returns:
        ``(win.height + 2 * margin, win.width + 2 * margin)`` float64 elevations.
    """
    r0, c0 = int(win.row_off), int(win.col_off)
    h, w = int(win.height), int(win.width)
    rr0, cc0 = max(r0 - margin, 0), max(c0 - margin, 0)
    rr1, cc1 = min(r0 + h + margin, src.height), min(c0 + w + margin, src.width)
    chunk = src.read(1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0), masked=True)
    z = np.ma.filled(chunk.astype(np.float64), np.nan)
    pad = ((margin - (r0 - rr0), margin - (rr1 - r0 - h)), (margin - (c0 - cc0), margin - (cc1 - c0 - w)))
    return np.pad(z, pad, constant_values=np.nan)


def terrain_file(
    dem_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    sun_azimuth: float = 315.0,
    sun_elevation: float = 45.0,
    block: int = 2048,
    progress: bool = True,
    layers: Sequence[str] = TERRAIN_LAYERS,
    tpi_radii: Sequence[float] = (),
) -> Path:
    """Compute the terrain layers of a DEM file block by block and write them as one float32 GeoTIFF.

    Blocks of ``block`` × ``block`` pixels are read with a :func:`halo` margin (rasterio windows), so memory stays
    bounded and the result equals :func:`terrain_layers` on the whole raster. The output lies on the DEM's grid,
    has one band per layer (band descriptions = layer names, band units from :data:`TERRAIN_UNITS`), NaN as nodata,
    and is written atomically.

    Args:
        dem_path: DEM GeoTIFF in a projected CRS with metre units, north up; its nodata value (if any) is honoured.
        out_path: Output GeoTIFF.
        sun_azimuth: Sun azimuth for the hillshade, degrees clockwise from north.
        sun_elevation: Sun elevation for the hillshade, degrees.
        block: Processing block edge, pixels.
        progress: Show a tqdm progress bar over the blocks.
        layers: Layers to write, in band order (default :data:`TERRAIN_LAYERS`).
        tpi_radii: Radii in metres of extra multi-scale TPI bands (``tpi_<r>m``).

    Returns:
        ``out_path``.

    Raises:
        RasterError: the DEM is missing or unreadable, in geographic coordinates, not in metres, or rotated.
    """
    dem_path = Path(dem_path)
    out_path = Path(out_path)
    if block < 1:
        raise ValueError(f"block must be a positive number of pixels, got {block}")
    layers, tpi_radii = _layer_list(layers, tpi_radii)
    with open_raster(dem_path) as src:
        res = _check_metric(dem_path, src)
        grid = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        margin = halo(res, tpi_radii)
        windows = _block_windows(grid, block)
        logger.info(
            "terrain of %s: %d × %d px at %s m, %d block(s)", dem_path, grid.width, grid.height, res, len(windows)
        )
        # Streaming block writes into an atomic temporary file: write_raster needs the whole stack in memory.
        with atomic_path(out_path) as tmp, rasterio.open(tmp, "w", **_output_profile(grid, len(layers))) as dst:
            _describe_bands(dst, layers, sun_azimuth, sun_elevation, dem_path.name)
            for win in tqdm(windows, desc="terrain", unit="block", disable=not progress):
                result = terrain_layers(
                    _read_with_halo(src, win, margin),
                    res,
                    sun_azimuth=sun_azimuth,
                    sun_elevation=sun_elevation,
                    layers=layers,
                    tpi_radii=tpi_radii,
                )
                h, w = int(win.height), int(win.width)
                stack = np.stack([result[name][margin : margin + h, margin : margin + w] for name in layers])
                dst.write(stack, window=win)
    logger.info("wrote %s (%d bands)", out_path, len(layers))
    return out_path
