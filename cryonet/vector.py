"""Read and validate polygon layers (reference outlines, lake inventories) with geopandas.

Every polygon input of the package goes through :func:`read_polygons`, which turns the many ways a vector file can
be wrong into one clear :class:`VectorError` naming the file, and which returns only valid, two-dimensional
``Polygon``/``MultiPolygon`` geometries with a CRS:

* GeoPackage, ESRI Shapefile, GeoJSON and anything else GDAL/OGR reads (engine: pyogrio);
* any CRS, including one given only as an ESRI ``.prj`` WKT without an EPSG code (pyproj parses it);
* shapefile attribute text in an unexpected encoding (read again as latin-1, with a warning);
* invalid geometries (self-intersecting rings, ...) repaired with :func:`shapely.make_valid`, keeping only the
  polygonal parts, with a :class:`GeometryRepairWarning` that says how many and which rows; or refused with the
  reason when ``repair=False``;
* points, lines, null and empty geometries dropped with a warning.

The second half turns class rasters into outlines: :func:`polygonize_classes` (polygons with areas),
:func:`write_outlines` / :func:`read_outlines` (GeoPackage with the reference layers ``glaciers``/``debris``/
``lakes``), :func:`area_table` and :func:`compare_with_reference` (area IoU per class, area per reference glacier).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from cryonet.constants import CLASS_IDS, CLASS_PRIORITY, CLASSES, GLACIER_CLASSES, LABEL_NODATA
from cryonet.errors import CryonetError
from cryonet.raster import open_raster
from cryonet.scene import LABEL_LAYERS

logger = logging.getLogger(__name__)

#: Geometry types that are kept as they are.
POLYGON_TYPES: tuple[str, ...] = ("Polygon", "MultiPolygon")
#: How many row numbers an error or warning lists before it abbreviates.
_MAX_ROWS_SHOWN = 10


class VectorError(CryonetError, ValueError):
    """A vector input is missing, unreadable or holds no usable polygons; the message names the file."""


class GeometryRepairWarning(UserWarning):
    """Invalid geometries were repaired, or unusable ones dropped, while reading a vector file."""


def _rows(index: np.ndarray | list) -> str:
    """A short, readable list of row labels for messages."""
    items = [str(i) for i in list(index)[:_MAX_ROWS_SHOWN]]
    more = len(index) - len(items)
    return "[" + ", ".join(items) + (f", ... ({more} more)" if more > 0 else "") + "]"


def _polygonal(geom: BaseGeometry | None) -> Polygon | MultiPolygon | None:
    """The polygonal part of ``geom`` (e.g. of the GeometryCollection that make_valid may return), or None."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in POLYGON_TYPES:
        return geom
    # Flatten collections (possibly nested) and keep polygon pieces; lines and points have no area.
    polys: list[Polygon] = []
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon" and not part.is_empty:
            polys.append(part)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            sub = _polygonal(part)
            if sub is not None:
                polys.extend(shapely.get_parts(sub))
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _read_file(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    """Read one layer with pyogrio, mapping OGR failures to :class:`VectorError`."""
    try:
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except UnicodeDecodeError as exc:
        # Shapefiles often carry attribute text in a legacy code page while their .cpg (or the default) says
        # UTF-8. Latin-1 decodes every byte, so the geometries are always readable; the text may be mojibake.
        warnings.warn(
            f"{path}: attribute text is not valid in the declared encoding ({exc}); read again as latin-1. "
            "Text fields may show wrong characters; add a .cpg file naming the right code page to fix it.",
            GeometryRepairWarning,
            stacklevel=3,
        )
        # "ISO-8859-1" (not "latin-1"): GDAL's shapefile driver recodes only under the canonical iconv name.
        return gpd.read_file(path, layer=layer, engine="pyogrio", encoding="ISO-8859-1")


def _layer_names(path: Path, layer: str | None) -> list[str]:
    """The layers of a vector file, after checking that the file exists and that ``layer`` picks one of them.

    Args:
        path: Vector file.
        layer: Requested layer, or None (allowed when the file holds one layer).

    Returns:
        The file's layer names.

    Raises:
        VectorError: The file is missing or not a vector dataset, holds no layer, or ``layer`` is ambiguous or
            unknown.
    """
    if not path.exists():
        raise VectorError(f"{path}: file not found; check the path (a shapefile needs its .shp, .shx, .dbf, .prj).")
    try:
        layers = [str(name) for name in pyogrio.list_layers(path)[:, 0]]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise VectorError(
            f"{path}: not a readable vector dataset ({exc}). Expected a GeoPackage, shapefile or GeoJSON of polygons."
        ) from exc
    if not layers:
        raise VectorError(f"{path}: the vector dataset has no layers; expected polygon features.")
    if layer is None and len(layers) > 1:
        raise VectorError(f"{path}: holds {len(layers)} layers {layers}; say which one to read (layer=...).")
    if layer is not None and layer not in layers:
        raise VectorError(f"{path}: no layer named {layer!r}; the layers are {layers}.")
    return layers


def _drop_missing(gdf: gpd.GeoDataFrame, where: str) -> gpd.GeoDataFrame:
    """Drop null and empty geometries (with a warning to the caller of :func:`read_polygons`) and Z coordinates.

    Args:
        gdf: The layer as read.
        where: The file (and layer) for messages.

    Returns:
        The remaining rows, with 2-D geometries.
    """
    geoms = gdf.geometry.values
    missing = gdf.index[np.asarray(geoms.isna() | geoms.is_empty)]
    if len(missing):
        warnings.warn(
            f"{where}: dropped {len(missing)} features with null or empty geometry (rows {_rows(missing)}).",
            GeometryRepairWarning,
            stacklevel=3,
        )
        gdf = gdf.drop(index=missing)
    return gdf.set_geometry(shapely.force_2d(gdf.geometry.values))


def _keep_polygonal(gdf: gpd.GeoDataFrame, where: str) -> tuple[gpd.GeoDataFrame, pd.Series]:
    """Keep the polygonal parts of collections and drop points and lines (with a warning to the caller).

    Args:
        gdf: Rows with 2-D geometries.
        where: The file (and layer) for messages.

    Returns:
        ``(gdf, types)``: the polygonal rows, and the geometry type of every input row.
    """
    types = gdf.geom_type
    other = ~types.isin(POLYGON_TYPES)
    if other.any():
        # Collections may hold polygons: keep those parts; points and lines are dropped.
        extracted = gdf.geometry[other].map(_polygonal)
        dropped = extracted.index[extracted.isna()]
        if len(dropped):
            found = sorted(set(types.loc[dropped]))
            warnings.warn(
                f"{where}: dropped {len(dropped)} non-polygon features ({', '.join(found)}; rows {_rows(dropped)}); "
                "only polygons have an area to map.",
                GeometryRepairWarning,
                stacklevel=3,
            )
        kept = extracted.dropna()
        gdf = gdf.drop(index=dropped)
        if len(kept):
            gdf.loc[kept.index, gdf.geometry.name] = gpd.GeoSeries(kept, crs=gdf.crs)
    return gdf, types


def _repair_invalid(gdf: gpd.GeoDataFrame, where: str, *, repair: bool, allow_empty: bool) -> gpd.GeoDataFrame:
    """Repair invalid geometries with :func:`shapely.make_valid`, keeping polygonal parts, or refuse them.

    Args:
        gdf: Polygonal rows.
        where: The file (and layer) for messages.
        repair: Repair (with a warning to the caller of :func:`read_polygons`); if False, raise.
        allow_empty: Return an empty frame when no polygon with an area is left, instead of raising.

    Returns:
        The rows with valid geometries.

    Raises:
        VectorError: Invalid geometries and ``repair`` is False, or none is left after repairing.
    """
    valid = np.asarray(shapely.is_valid(gdf.geometry.values))
    if valid.all():
        return gdf
    bad = gdf.index[~valid]
    reasons = shapely.is_valid_reason(gdf.geometry.values[~valid])
    detail = "; ".join(f"row {i}: {r}" for i, r in list(zip(bad, reasons, strict=True))[:_MAX_ROWS_SHOWN])
    if not repair:
        raise VectorError(
            f"{where}: {len(bad)} invalid geometries ({detail}). Repair them (read_polygons(..., repair=True) "
            "uses shapely.make_valid, or fix them in a GIS) before use."
        )
    repaired = gpd.GeoSeries(shapely.make_valid(gdf.geometry.values[~valid]), index=bad, crs=gdf.crs)
    repaired = repaired.map(_polygonal)
    lost = repaired.index[repaired.isna()]
    warnings.warn(
        f"{where}: repaired {len(bad)} invalid geometries with shapely.make_valid, keeping polygonal parts "
        f"({detail})" + (f"; rows {_rows(lost)} had no area left and were dropped" if len(lost) else "") + ".",
        GeometryRepairWarning,
        stacklevel=3,
    )
    logger.info("%s: repaired %d invalid geometries", where, len(bad))
    ok = repaired.dropna()
    gdf = gdf.drop(index=lost)
    if len(ok):
        gdf.loc[ok.index, gdf.geometry.name] = gpd.GeoSeries(ok, crs=gdf.crs)
    if len(gdf) == 0 and not allow_empty:
        raise VectorError(f"{where}: no polygon with a non-zero area is left after repairing geometries.")
    return gdf


def read_polygons(
    path: str | os.PathLike[str],
    layer: str | None = None,
    *,
    repair: bool = True,
    allow_empty: bool = False,
) -> gpd.GeoDataFrame:
    """Read a polygon layer and return only valid, 2-D polygonal geometries with a CRS.

    Rows keep the index they have in the file (0-based feature order), so that warnings and later results can be
    traced back to the source features even after rows were dropped.

    Args:
        path: GeoPackage, shapefile (``.shp`` with its ``.shx``/``.dbf``/``.prj``), GeoJSON, or any OGR vector.
        layer: Layer name; required when the file holds more than one layer (e.g. a GeoPackage).
        repair: Repair invalid geometries with :func:`shapely.make_valid` (keeping only polygonal parts) and warn;
            if False, refuse them with a :class:`VectorError` that states the reason.
        allow_empty: Return an empty GeoDataFrame instead of raising when the layer has no polygons (used for
            optional label layers, e.g. a scene without lakes).

    Returns:
        GeoDataFrame in the file's CRS with ``Polygon``/``MultiPolygon`` geometries (Z coordinates dropped).

    Raises:
        VectorError: naming the file, for a missing file, a file that is not a vector dataset, an ambiguous or
            unknown layer, a layer without CRS, no polygon geometries, or (with ``repair=False``) invalid ones.

    Warns:
        GeometryRepairWarning: with the number and rows of repaired, dropped or re-decoded features.
    """
    path = Path(path)
    layers = _layer_names(path, layer)
    try:
        gdf = _read_file(path, layer)  # called from here: its latin-1 warning points at read_polygons' caller
    except (
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
        pyogrio.errors.FieldError,
        pyogrio.errors.GeometryError,
        pyogrio.errors.FeatureError,
        pyogrio.errors.CRSError,
    ) as exc:
        raise VectorError(f"{path}: cannot read layer {layer or layers[0]!r} ({exc}).") from exc
    where = f"{path}" + (f" (layer {layer!r})" if layer else "")
    if gdf.crs is None:
        raise VectorError(
            f"{where}: no coordinate reference system. Expected one (for a shapefile, a .prj file beside the .shp); "
            "assign it in a GIS or with `ogr2ogr -a_srs EPSG:XXXX`."
        )
    gdf, types = _keep_polygonal(_drop_missing(gdf, where), where)
    if len(gdf) == 0:
        if allow_empty:
            return gdf
        raise VectorError(
            f"{where}: no polygon geometries (found {sorted(set(types)) or 'no features'}). Expected glacier, "
            "debris or lake outlines as Polygon/MultiPolygon features."
        )
    return _repair_invalid(gdf, where, repair=repair, allow_empty=allow_empty)


# ---------------------------------------------------------------------------------------------------------------------
# Outlines: class raster -> polygons -> areas -> comparison with reference outlines
# ---------------------------------------------------------------------------------------------------------------------
#: Layer of an outlines GeoPackage that holds every predicted polygon with its ``class`` (lossless round trip).
OUTLINES_LAYER: str = "outlines"
#: Classes that make up a glacier's extent in per-glacier comparisons (supraglacial lakes are not counted).
GLACIER_EXTENT_CLASSES: tuple[str, ...] = ("clean_ice", "debris")


def _class_ids(classes: Sequence[str]) -> dict[str, int]:
    unknown = [c for c in classes if c not in CLASS_IDS]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}; expected names from {list(CLASS_IDS)}")
    return {c: CLASS_IDS[c] for c in classes}


def _empty_outlines(crs: object) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "class": pd.Series(dtype="object"),
            "class_id": pd.Series(dtype="int64"),
            "area_m2": pd.Series(dtype="float64"),
        },
        geometry=gpd.GeoSeries([], crs=crs),
        crs=crs,
    )


def equal_area_crs(gdf: gpd.GeoDataFrame | gpd.GeoSeries) -> object:
    """A CRS to measure areas of ``gdf`` in: its own if projected, else a Lambert azimuthal equal-area CRS.

    The equal-area CRS is centred on the data (``+proj=laea`` at the centre of the bounds, WGS 84), so areas of a
    scene in geographic coordinates are exact up to the ellipsoid model.
    """
    from pyproj import CRS

    crs = CRS.from_user_input(gdf.crs) if gdf.crs is not None else None
    if crs is None:
        raise VectorError("geometries without a CRS: cannot measure areas; read them with read_polygons.")
    if crs.is_projected:
        return crs
    lon0, lat0, lon1, lat1 = gdf.to_crs("EPSG:4326").total_bounds
    return CRS.from_proj4(
        f"+proj=laea +lat_0={(lat0 + lat1) / 2:.6f} +lon_0={(lon0 + lon1) / 2:.6f} +datum=WGS84 +units=m +no_defs"
    )


def polygonize_classes(
    labels_path: str | os.PathLike[str],
    *,
    classes: Sequence[str] = ("clean_ice", "debris", "lake"),
    min_area_m2: float | Mapping[str, float] = 0.0,
    simplify_m: float | None = None,
    band: int = 1,
) -> gpd.GeoDataFrame:
    """Polygons of the chosen classes of a class raster (a prediction or a rasterised reference).

    The band is read whole (uint8: one byte per pixel, 120 MB for a full 10,980-pixel Sentinel-2 tile) and
    polygonised once with :func:`rasterio.features.shapes` (GDAL's polygonizer, 4-connectivity: pixels that touch
    only at a corner are separate polygons, so every polygon is valid). Reading window by window would cut polygons
    at window seams and need a topological merge afterwards; a class raster is small enough not to need it.
    Pixels with nodata (255, or the file's nodata value) and classes not asked for are not polygonised. Holes are
    kept: a debris patch inside clean ice is a hole of the clean-ice polygon and a polygon of its own, and the
    polygons of all classes share their edges exactly (a polygonal coverage).

    Args:
        labels_path: Single-band class raster (``uint8``, ids of :data:`cryonet.constants.CLASSES`) in a projected
            CRS (metres); a geographic CRS is accepted and areas are then measured in :func:`equal_area_crs`.
        classes: Class names to polygonise.
        min_area_m2: Polygons smaller than this (m², before simplification) are dropped; a number for every class
            or a mapping class -> minimum (missing classes: 0). Holes are never filled.
        simplify_m: If set, simplify the outlines with :func:`shapely.coverage_simplify` (Visvalingam-Whyatt; the
            tolerance is roughly the square root of the largest triangle area removed, in metres), which keeps
            shared edges shared, so neighbouring classes neither overlap nor open gaps. ``None``: the exact pixel
            staircase (areas equal pixel counts times the pixel area).
        band: Band of the raster to read.

    Returns:
        GeoDataFrame in the raster's CRS, one row per polygon, with columns ``class`` (name), ``class_id``,
        ``area_m2`` and ``geometry``, ordered by class then by decreasing area.

    Raises:
        cryonet.raster.RasterError: the raster is missing or unreadable.
        ValueError: an unknown class name.
    """
    import rasterio.features
    from shapely.geometry import shape as to_shape

    ids = _class_ids(classes)
    with open_raster(labels_path) as src:
        data = src.read(band)
        transform, crs, nodata = src.transform, src.crs, src.nodata
    if not np.issubdtype(data.dtype, np.integer):
        raise VectorError(
            f"{labels_path}: expected an integer class raster, found {data.dtype}; "
            "pass the class (label) raster, not the probabilities."
        )
    mask = np.isin(data, list(ids.values())) & (data != LABEL_NODATA)
    if nodata is not None and not np.isnan(nodata):
        mask &= data != nodata
    name_of = {v: k for k, v in ids.items()}
    rows: list[tuple[str, int]] = []
    geoms: list[BaseGeometry] = []
    if mask.any():
        src_arr = data if data.dtype in (np.uint8, np.uint16, np.int16, np.int32) else data.astype(np.int32)
        for geom, value in rasterio.features.shapes(src_arr, mask=mask, transform=transform, connectivity=4):
            rows.append((name_of[int(value)], int(value)))
            geoms.append(to_shape(geom))
    if not geoms:
        logger.info("%s: no pixels of %s", labels_path, list(classes))
        return _empty_outlines(crs)
    gdf = gpd.GeoDataFrame(
        {"class": [r[0] for r in rows], "class_id": np.array([r[1] for r in rows], np.int64)}, geometry=geoms, crs=crs
    )
    area_crs = equal_area_crs(gdf)
    gdf["area_m2"] = gdf.geometry.to_crs(area_crs).area if area_crs != gdf.crs else gdf.geometry.area
    mins = gdf["class"].map(
        lambda c: float(min_area_m2.get(c, 0.0)) if isinstance(min_area_m2, Mapping) else float(min_area_m2)
    )
    small = gdf["area_m2"] < mins
    if small.any():
        logger.info("%s: dropped %d polygons below the minimum area", labels_path, int(small.sum()))
        gdf = gdf.loc[~small]
    if simplify_m:
        gdf = gdf.set_geometry(shapely.coverage_simplify(gdf.geometry.values, float(simplify_m)), crs=crs)
        gdf["area_m2"] = gdf.geometry.to_crs(area_crs).area if area_crs != gdf.crs else gdf.geometry.area
    order = {c: i for i, c in enumerate(classes)}
    gdf = gdf.assign(_o=gdf["class"].map(order)).sort_values(["_o", "area_m2"], ascending=[True, False])
    return gdf.drop(columns="_o").reset_index(drop=True)[["class", "class_id", "area_m2", "geometry"]]


def _dissolve(geoms: Sequence[BaseGeometry] | np.ndarray) -> BaseGeometry:
    """Union of polygons (empty polygon for none), polygonal parts only."""
    arr = np.asarray(list(geoms), dtype=object)
    if len(arr) == 0:
        return Polygon()
    out = _polygonal(shapely.union_all(arr))
    return out if out is not None else Polygon()


def glacier_outlines(gdf: gpd.GeoDataFrame, classes: Sequence[str] = GLACIER_EXTENT_CLASSES) -> gpd.GeoDataFrame:
    """Glacier outlines from class polygons: the union of clean ice and debris, one row per connected glacier.

    Returns:
        GeoDataFrame (``gdf``'s CRS) with ``glac_id`` (``PRED-00001``, by decreasing area), ``area_km2`` and
        ``debris_km2``; supraglacial lakes are holes (the reference glaciers of :mod:`cryonet.synthetic` include
        them, see :func:`compare_with_reference`).
    """
    sel = gdf[gdf["class"].isin(list(classes))]
    union = _dissolve(sel.geometry.values)
    parts = [p for p in shapely.get_parts(union) if not p.is_empty]
    out = gpd.GeoDataFrame(geometry=gpd.GeoSeries(parts, crs=gdf.crs), crs=gdf.crs)
    if len(out) == 0:
        out["glac_id"] = pd.Series(dtype="object")
        out["area_km2"] = pd.Series(dtype="float64")
        out["debris_km2"] = pd.Series(dtype="float64")
        return out[["glac_id", "area_km2", "debris_km2", "geometry"]]
    area_crs = equal_area_crs(out)
    out["area_km2"] = out.geometry.to_crs(area_crs).area / 1e6
    debris = _dissolve(gdf.loc[gdf["class"] == "debris"].geometry.values)
    out["debris_km2"] = (
        gpd.GeoSeries(out.geometry.intersection(debris), crs=gdf.crs).to_crs(area_crs).area / 1e6
        if not debris.is_empty
        else 0.0
    )
    out = out.sort_values("area_km2", ascending=False).reset_index(drop=True)
    out["glac_id"] = [f"PRED-{i:05d}" for i in range(1, len(out) + 1)]
    return out[["glac_id", "area_km2", "debris_km2", "geometry"]]


def outline_layers(gdf: gpd.GeoDataFrame) -> dict[str, gpd.GeoDataFrame]:
    """The reference-style layers of class polygons: ``glaciers``, ``debris``, ``lakes`` (+ ``outlines``).

    Layer names and meanings are those of :data:`cryonet.scene.LABEL_LAYERS`, so a prediction's GeoPackage can be
    rasterised with :func:`cryonet.prepare.rasterize_scene_labels` exactly like a reference: ``glaciers`` are whole
    glacier outlines (clean ice and debris; :func:`glacier_outlines`), painted first, ``debris`` and ``lakes`` over
    them. ``outlines`` holds every polygon with its ``class``.
    """
    out: dict[str, gpd.GeoDataFrame] = {OUTLINES_LAYER: gdf.reset_index(drop=True)}
    for layer, cls in LABEL_LAYERS.items():
        if cls == "clean_ice":
            out[layer] = glacier_outlines(gdf)
        else:
            sel = gdf.loc[gdf["class"] == cls, ["area_m2", "geometry"]].reset_index(drop=True)
            sel = sel.assign(area_km2=sel["area_m2"] / 1e6).drop(columns="area_m2")
            out[layer] = gpd.GeoDataFrame(sel, geometry="geometry", crs=gdf.crs)[["area_km2", "geometry"]]
    return out


def write_outlines(gdf: gpd.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """Write class polygons to a GeoPackage, atomically (a temporary ``.gpkg`` beside it, then :func:`os.replace`).

    Layers (see :func:`outline_layers`): ``outlines`` (every polygon, ``class``, ``class_id``, ``area_m2``: read it
    back with :func:`read_outlines`), and the reference layers ``glaciers`` (whole glacier outlines), ``debris``
    and ``lakes``, so that a prediction and the scene's reference GeoPackage have the same layers and compare
    directly (:func:`compare_with_reference`). Empty classes give empty layers.

    Args:
        gdf: Output of :func:`polygonize_classes`.
        path: Destination ``.gpkg``.

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise VectorError(f"{path}: outlines are written as a GeoPackage; give a file name ending in .gpkg.")
    missing = {"class", "geometry"} - set(gdf.columns)
    if missing:
        raise VectorError(f"outlines need columns 'class' and a geometry (from polygonize_classes); missing {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.gpkg")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # GDAL creates the GeoPackage itself
    try:
        for layer, data in outline_layers(gdf).items():
            extra = {} if len(data) else {"geometry_type": "Polygon"}  # an empty layer needs a declared type
            data.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio", **extra)
        os.replace(tmp, path)
    finally:
        for p in (tmp, Path(str(tmp) + "-journal"), Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
            p.unlink(missing_ok=True)
    logger.info("wrote %d polygons to %s", len(gdf), path)
    return path


def read_outlines(path: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """Class polygons from a GeoPackage: its ``outlines`` layer, or else the reference layers.

    A file written by :func:`write_outlines` is read back as written. A reference GeoPackage (layers of
    :data:`cryonet.scene.LABEL_LAYERS`) is turned into class polygons with the rasterisation priority of
    :func:`cryonet.prepare.rasterize_polygons`: lakes; debris outside lakes; clean ice = glaciers outside debris and
    lakes (see :func:`reference_class_geometries`).
    """
    path = Path(path)
    if not path.exists():
        raise VectorError(f"{path}: file not found.")
    layers = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    if OUTLINES_LAYER in layers:
        gdf = read_polygons(path, layer=OUTLINES_LAYER, allow_empty=True)
        if "class" not in gdf.columns:
            raise VectorError(f"{path}: layer {OUTLINES_LAYER!r} has no 'class' column; write it with write_outlines.")
        return gdf
    geoms = reference_class_geometries(path)
    crs = next(iter(geoms.values())).crs if geoms else None
    recs = []
    for cls, series in geoms.items():
        for part in shapely.get_parts(series.iloc[0]) if len(series) and not series.iloc[0].is_empty else []:
            recs.append({"class": cls, "geometry": part})
    return gpd.GeoDataFrame(recs, geometry="geometry", crs=crs) if recs else _empty_outlines(crs)


def _reference_layers(ref: str | os.PathLike[str] | Mapping[str, gpd.GeoDataFrame]) -> dict[str, gpd.GeoDataFrame]:
    if isinstance(ref, Mapping):
        unknown = sorted(set(ref) - set(LABEL_LAYERS))
        if unknown:
            raise VectorError(f"reference layers {unknown} unknown; expected names from {list(LABEL_LAYERS)}")
        return {k: v for k, v in ref.items() if v is not None}
    path = Path(ref)
    if not path.exists():
        raise VectorError(f"{path}: reference outlines not found.")
    present = {str(n) for n in pyogrio.list_layers(path)[:, 0]}
    if not present & set(LABEL_LAYERS):
        raise VectorError(
            f"{path}: none of the reference layers {list(LABEL_LAYERS)} found (layers: "
            f"{sorted(present)}); expected glaciers, debris and lakes polygons."
        )
    return {layer: read_polygons(path, layer=layer, allow_empty=True) for layer in LABEL_LAYERS if layer in present}


def reference_class_geometries(
    ref: str | os.PathLike[str] | Mapping[str, gpd.GeoDataFrame], crs: object = None
) -> dict[str, gpd.GeoSeries]:
    """One dissolved geometry per class from reference layers, with the rasterisation priority.

    ``glaciers`` (whole outlines) -> clean ice, ``debris`` -> debris, ``lakes`` -> lake, painted in
    :data:`cryonet.constants.CLASS_PRIORITY` order as :func:`cryonet.prepare.rasterize_polygons` does: lake = lakes;
    debris = debris minus lakes; clean ice = glaciers minus debris minus lakes.

    Returns:
        Class name -> one-row GeoSeries (in ``crs``, default the first layer's CRS).
    """
    layers = _reference_layers(ref)
    if not layers:
        raise VectorError("no reference layers given")
    crs = crs if crs is not None else next(iter(layers.values())).crs
    raw = {LABEL_LAYERS[k]: _dissolve(v.to_crs(crs).geometry.values) for k, v in layers.items()}
    out: dict[str, gpd.GeoSeries] = {}
    painted_above = Polygon()
    for cls in reversed(CLASS_PRIORITY):  # highest priority first
        if cls not in raw:
            continue
        geom = raw[cls].difference(painted_above) if not painted_above.is_empty else raw[cls]
        out[cls] = gpd.GeoSeries([_polygonal(geom) or Polygon()], crs=crs)
        painted_above = painted_above.union(raw[cls])
    return out


def area_table(gdf: gpd.GeoDataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class polygon statistics of class polygons.

    Args:
        gdf: Class polygons (:func:`polygonize_classes` or :func:`read_outlines`).
        classes: Rows to report (default the glacier classes), also when a class has no polygon.

    Returns:
        DataFrame indexed by class with ``count`` (polygons), ``total_km2`` and ``median_km2`` (median polygon
        area; NaN without polygons), areas measured in :func:`equal_area_crs`.
    """
    classes = list(classes) if classes is not None else list(GLACIER_CLASSES)
    if len(gdf):
        area = gdf.geometry.to_crs(equal_area_crs(gdf)).area / 1e6
        grouped = area.groupby(gdf["class"].to_numpy())
        count, total, median = grouped.size(), grouped.sum(), grouped.median()
    else:
        count = total = median = pd.Series(dtype="float64")
    table = pd.DataFrame(
        {
            "count": [int(count.get(c, 0)) for c in classes],
            "total_km2": [float(total.get(c, 0.0)) for c in classes],
            "median_km2": [float(median.get(c, np.nan)) for c in classes],
        },
        index=pd.Index(classes, name="class"),
    )
    return table


def compare_with_reference(
    pred: gpd.GeoDataFrame | str | os.PathLike[str],
    reference: str | os.PathLike[str] | Mapping[str, gpd.GeoDataFrame],
    *,
    crs: object = None,
    classes: Sequence[str] | None = None,
    glacier_classes: Sequence[str] = GLACIER_EXTENT_CLASSES,
    id_column: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Compare predicted outlines with reference outlines: area IoU per class and area per reference glacier.

    **Per class**: the predicted polygons of a class and the reference's class geometry (see
    :func:`reference_class_geometries`) are each dissolved; ``iou = area(P & R) / area(P | R)`` (NaN when both are
    empty).

    **Per glacier**: for every reference glacier outline (layer ``glaciers``) the predicted glacier area inside it
    (union of ``glacier_classes``, by default clean ice and debris) is set against the outline's area:
    ``pred_km2``, ``ref_km2``, ``diff_km2 = pred - ref`` and ``rel_diff = diff / ref``. Predicted ice outside every
    reference outline is not attributed to a glacier (it is counted in the class IoU). Even a perfect raster of
    the reference comes out slightly low: its edge pixels lose the parts that lie outside the outline, and pixels
    whose centre lies outside are missing, about a quarter pixel times the outer perimeter (-1 % on average for
    RGI 7 glaciers > 1 km² rasterised at 20 m, see ``tests/test_outlines.py``). The reference outlines of
    the synthetic scenes include supraglacial ponds, which are lakes in the prediction and so give a small
    negative difference; RGI outlines include them too.

    Args:
        pred: Predicted class polygons (GeoDataFrame with ``class``), or a GeoPackage (:func:`read_outlines`).
        reference: Reference GeoPackage with layers ``glaciers``/``debris``/``lakes`` (any subset), or a mapping of
            those layer names to GeoDataFrames.
        crs: CRS in which areas are measured; default the prediction's CRS if projected, else an equal-area CRS
            (:func:`equal_area_crs`).
        classes: Classes to score (default those with reference layers).
        glacier_classes: Predicted classes that make up a glacier's extent.
        id_column: Column of the glacier layer that names glaciers (default the first of ``glac_id``, ``rgi_id``,
            ``RGIId``, ``id`` present; else the row index).

    Returns:
        ``{"classes": DataFrame indexed by class (ref_km2, pred_km2, intersection_km2, union_km2, iou),
        "glaciers": DataFrame indexed by glacier id (ref_km2, pred_km2, diff_km2, rel_diff)}``; an empty
        ``glaciers`` table when the reference has no glacier layer.
    """
    pred_gdf = read_outlines(pred) if isinstance(pred, str | os.PathLike) else pred
    if "class" not in pred_gdf.columns:
        raise VectorError("predicted outlines need a 'class' column (from polygonize_classes / read_outlines)")
    layers = _reference_layers(reference)
    area_crs = crs if crs is not None else equal_area_crs(pred_gdf) if pred_gdf.crs is not None else None
    if area_crs is None:
        area_crs = equal_area_crs(next(iter(layers.values())))
    ref_geoms = reference_class_geometries(layers, crs=area_crs)
    pred_m = pred_gdf.to_crs(area_crs)
    classes = list(classes) if classes is not None else [c for c in CLASSES if c in ref_geoms]
    rows = []
    for cls in classes:
        r = ref_geoms[cls].iloc[0] if cls in ref_geoms else Polygon()
        p = _dissolve(pred_m.loc[pred_m["class"] == cls].geometry.values)
        inter = r.intersection(p).area
        union = r.union(p).area
        rows.append(
            {
                "class": cls,
                "ref_km2": r.area / 1e6,
                "pred_km2": p.area / 1e6,
                "intersection_km2": inter / 1e6,
                "union_km2": union / 1e6,
                "iou": inter / union if union > 0 else np.nan,
            }
        )
    class_df = pd.DataFrame(rows).set_index("class")

    glacier_layer = next((k for k, v in LABEL_LAYERS.items() if v == "clean_ice"), "glaciers")
    cols = ["ref_km2", "pred_km2", "diff_km2", "rel_diff"]
    if glacier_layer not in layers or len(layers[glacier_layer]) == 0:
        return {"classes": class_df, "glaciers": pd.DataFrame(columns=cols, index=pd.Index([], name="glacier"))}
    gl = layers[glacier_layer].to_crs(area_crs)
    if id_column is None:
        id_column = next((c for c in ("glac_id", "rgi_id", "RGIId", "id") if c in gl.columns), None)
    ids = gl[id_column].astype(str).to_numpy() if id_column else gl.index.astype(str).to_numpy()
    gl = gpd.GeoDataFrame({"glacier": ids}, geometry=gl.geometry.values, crs=area_crs)
    extent = _dissolve(pred_m.loc[pred_m["class"].isin(list(glacier_classes))].geometry.values)
    parts = gpd.GeoDataFrame(geometry=[p for p in shapely.get_parts(extent) if not p.is_empty], crs=area_crs)
    ref_km2 = gl.geometry.area.to_numpy() / 1e6
    if len(parts):
        inter = gpd.overlay(gl, parts, how="intersection", keep_geom_type=True)
        pred_by = (inter.geometry.area / 1e6).groupby(inter["glacier"].to_numpy()).sum()
    else:
        pred_by = pd.Series(dtype="float64")
    # glaciers may share an id (multi-part outlines): sum by id
    g = pd.DataFrame({"glacier": ids, "ref_km2": ref_km2}).groupby("glacier", sort=False)["ref_km2"].sum()
    glaciers = pd.DataFrame(
        {"ref_km2": g, "pred_km2": [float(pred_by.get(i, 0.0)) for i in g.index]},
        index=pd.Index(g.index, name="glacier"),
    )
    glaciers["diff_km2"] = glaciers["pred_km2"] - glaciers["ref_km2"]
    glaciers["rel_diff"] = glaciers["diff_km2"] / glaciers["ref_km2"].where(glaciers["ref_km2"] > 0)
    return {"classes": class_df, "glaciers": glaciers}
