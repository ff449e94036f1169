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
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

logger = logging.getLogger(__name__)

#: Geometry types that are kept as they are.
POLYGON_TYPES: tuple[str, ...] = ("Polygon", "MultiPolygon")
#: How many row numbers an error or warning lists before it abbreviates.
_MAX_ROWS_SHOWN = 10


class VectorError(ValueError):
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
    try:
        gdf = _read_file(path, layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.FeatureError, pyogrio.errors.CRSError) as exc:
        raise VectorError(f"{path}: cannot read layer {layer or layers[0]!r} ({exc}).") from exc
    where = f"{path}" + (f" (layer {layer!r})" if layer else "")
    if gdf.crs is None:
        raise VectorError(
            f"{where}: no coordinate reference system. Expected one (for a shapefile, a .prj file beside the .shp); "
            "assign it in a GIS or with `ogr2ogr -a_srs EPSG:XXXX`."
        )

    geoms = gdf.geometry.values
    missing = gdf.index[np.asarray(geoms.isna() | geoms.is_empty)]
    if len(missing):
        warnings.warn(
            f"{where}: dropped {len(missing)} features with null or empty geometry (rows {_rows(missing)}).",
            GeometryRepairWarning,
            stacklevel=2,
        )
        gdf = gdf.drop(index=missing)
    gdf = gdf.set_geometry(shapely.force_2d(gdf.geometry.values))

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
                stacklevel=2,
            )
        kept = extracted.dropna()
        gdf = gdf.drop(index=dropped)
        if len(kept):
            gdf.loc[kept.index, gdf.geometry.name] = gpd.GeoSeries(kept, crs=gdf.crs)

    if len(gdf) == 0:
        if allow_empty:
            return gdf
        raise VectorError(
            f"{where}: no polygon geometries (found {sorted(set(types)) or 'no features'}). Expected glacier, "
            "debris or lake outlines as Polygon/MultiPolygon features."
        )

    valid = np.asarray(shapely.is_valid(gdf.geometry.values))
    if not valid.all():
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
            stacklevel=2,
        )
        logger.info("%s: repaired %d invalid geometries", where, len(bad))
        ok = repaired.dropna()
        gdf = gdf.drop(index=lost)
        if len(ok):
            gdf.loc[ok.index, gdf.geometry.name] = gpd.GeoSeries(ok, crs=gdf.crs)
        if len(gdf) == 0 and not allow_empty:
            raise VectorError(f"{where}: no polygon with a non-zero area is left after repairing geometries.")
    return gdf
