"""Reference polygons of a synthetic scene: glacier outlines, debris-covered parts, lakes (GeoPackage, EPSG:4326).

The internal class raster is polygonised with :func:`rasterio.features.shapes` (8-connectivity, like the labelling
that defined the glaciers), simplified lightly in the projected CRS (the pixel staircase, not the shape) and
reprojected to geographic coordinates, as inventories such as RGI and the HKH glacial-lake inventory are delivered.
Layers and the classes they rasterise to are :data:`cryonet.scene.LABEL_LAYERS`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
from shapely.geometry import shape as to_shape

from cryonet.constants import CLASS_IDS
from cryonet.raster import Grid
from cryonet.scene import LABEL_LAYERS

#: Simplification tolerance, metres (half a 10 m pixel: removes the staircase, keeps the outline).
SIMPLIFY_M: float = 5.0
#: CRS of the reference polygons.
LABEL_CRS: str = "EPSG:4326"


def _polygons(ids: np.ndarray, grid: Grid) -> gpd.GeoDataFrame:
    """Polygons of every positive id in ``ids`` (one (multi)polygon per id), in the grid's CRS."""
    mask = ids > 0
    geoms, values = [], []
    if mask.any():
        for geom, value in rasterio.features.shapes(
            ids.astype(np.int32), mask=mask, transform=grid.transform, connectivity=8
        ):
            geoms.append(to_shape(geom))
            values.append(int(value))
    gdf = gpd.GeoDataFrame({"id": pd.Series(values, dtype="int64")}, geometry=geoms, crs=grid.crs)
    if len(gdf):
        gdf = gdf.dissolve(by="id", as_index=False)
        # buffer(0) repairs any self-touching ring the simplification leaves and always returns (multi)polygons.
        gdf["geometry"] = gdf.geometry.simplify(SIMPLIFY_M, preserve_topology=True).buffer(0)
        gdf = gdf[~gdf.geometry.is_empty]
    return gdf


def label_layers(
    classes: np.ndarray,
    glacier_id: np.ndarray,
    lake_id: np.ndarray,
    lake_types: dict[int, str],
    elevation: np.ndarray,
    grid: Grid,
    *,
    id_prefix: str = "SYN",
) -> dict[str, gpd.GeoDataFrame]:
    """Turn the class raster of a scene into the three reference layers.

    Args:
        classes: ``(rows, cols)`` uint8 label (0 background, 1 clean ice, 2 debris, 3 lake) on ``grid``.
        glacier_id: ``(rows, cols)`` glacier number (0 = none); the whole glacier incl. debris and ponds.
        lake_id: ``(rows, cols)`` lake number (0 = none).
        lake_types: Lake number -> ``"proglacial"`` / ``"supraglacial"``.
        elevation: ``(rows, cols)`` surface elevation, metres (glacier elevation attributes).
        grid: The scene's 10 m grid (projected CRS, metres).
        id_prefix: Prefix of the glacier identifiers (``<prefix>-00001``).

    Returns:
        Layer name -> GeoDataFrame in EPSG:4326: ``glaciers`` (glac_id, area_km2, debris_km2, zmin_m, zmed_m,
        zmax_m), ``debris`` (glac_id, area_km2), ``lakes`` (lake_id, area_km2, type, glac_id).
    """
    # Renumber glaciers 1..n in order of first appearance (stable ids for a given seed).
    gid = np.where(glacier_id > 0, glacier_id, 0)
    uniq = np.unique(gid[gid > 0])
    remap = np.zeros(int(gid.max()) + 1 if gid.size else 1, dtype=np.int32)
    remap[uniq] = np.arange(1, len(uniq) + 1)
    gid = remap[gid]

    def name(i: int) -> str:
        return f"{id_prefix}-{i:05d}"

    glaciers = _polygons(gid, grid)
    if len(glaciers):
        flat_id = gid.ravel()
        debris_px = np.bincount(flat_id[classes.ravel() == CLASS_IDS["debris"]], minlength=len(uniq) + 1)
        stats = pd.DataFrame({"id": flat_id, "z": elevation.ravel()})[flat_id > 0].groupby("id")["z"]
        zmin, zmed, zmax = stats.min(), stats.median(), stats.max()
        glaciers["glac_id"] = [name(i) for i in glaciers["id"]]
        glaciers["area_km2"] = glaciers.geometry.area / 1e6
        glaciers["debris_km2"] = debris_px[glaciers["id"]] * abs(grid.transform.a * grid.transform.e) / 1e6
        glaciers["zmin_m"] = zmin.loc[glaciers["id"]].to_numpy().round(1)
        glaciers["zmed_m"] = zmed.loc[glaciers["id"]].to_numpy().round(1)
        glaciers["zmax_m"] = zmax.loc[glaciers["id"]].to_numpy().round(1)
    else:
        for col, dtype in (
            ("glac_id", "object"),
            ("area_km2", "float64"),
            ("debris_km2", "float64"),
            ("zmin_m", "float64"),
            ("zmed_m", "float64"),
            ("zmax_m", "float64"),
        ):
            glaciers[col] = pd.Series(dtype=dtype)
    glaciers = glaciers[["glac_id", "area_km2", "debris_km2", "zmin_m", "zmed_m", "zmax_m", "geometry"]]

    debris = _polygons(np.where(classes == CLASS_IDS["debris"], gid, 0), grid)
    debris["glac_id"] = [name(i) for i in debris["id"]] if len(debris) else pd.Series(dtype="object")
    debris["area_km2"] = debris.geometry.area / 1e6
    debris = debris[["glac_id", "area_km2", "geometry"]]

    lakes = _polygons(np.where(classes == CLASS_IDS["lake"], lake_id, 0), grid)
    if len(lakes):
        lakes["lake_id"] = [f"{id_prefix}-L{i:04d}" for i in lakes["id"]]
        lakes["type"] = [lake_types.get(int(i), "proglacial") for i in lakes["id"]]
        # The glacier a supraglacial pond lies on (most common glacier number under it); none for proglacial lakes.
        owner = []
        for i in lakes["id"]:
            under = gid[lake_id == i]
            under = under[under > 0]
            owner.append(name(int(np.bincount(under).argmax())) if under.size else None)
        lakes["glac_id"] = owner
    else:
        for col in ("lake_id", "type", "glac_id"):
            lakes[col] = pd.Series(dtype="object")
    lakes["area_km2"] = lakes.geometry.area / 1e6
    lakes = lakes[["lake_id", "area_km2", "type", "glac_id", "geometry"]]

    layers = {"glaciers": glaciers, "debris": debris, "lakes": lakes}
    assert set(layers) == set(LABEL_LAYERS)
    return {k: v.to_crs(LABEL_CRS) for k, v in layers.items()}


def write_geopackage(layers: dict[str, gpd.GeoDataFrame], path: str | os.PathLike[str]) -> Path:
    """Write the layers into one GeoPackage, atomically (a temporary file in the same directory, then renamed).

    Args:
        layers: Layer name -> GeoDataFrame.
        path: Destination ``.gpkg``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}."))
    try:
        tmp = tmp_dir / path.name
        for layer, gdf in layers.items():
            gdf.to_file(tmp, layer=layer, driver="GPKG", engine="pyogrio")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
