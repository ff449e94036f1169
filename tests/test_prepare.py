"""Data preparation (cryonet.prepare): reflectance, rasterised labels and whole scenes on one grid, against
hand counts and independent references."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform
from shapely.geometry import box

from cryonet import prepare, raster
from cryonet.constants import CLASS_IDS, LABEL_NODATA, S2_BANDS, S2_RESOLUTION_M
from cryonet.raster import Grid
from cryonet.scene import Scene

UTM45 = "EPSG:32645"


def _grid(epsg: str, left: float, top: float, res: float, width: int, height: int) -> Grid:
    return Grid(
        crs=rasterio.crs.CRS.from_string(epsg), transform=from_origin(left, top, res, res), width=width, height=height
    )


# ------------------------------------------------------------------------------------------------ rasterising --
def test_rasterize_priority_hand_counts():
    grid = _grid(UTM45, 500_000.0, 3_130_000.0, 10.0, 20, 20)

    def square(r0, r1, c0, c1):  # rows/cols [r0, r1) x [c0, c1) as a polygon in grid coordinates
        return box(500_000 + 10 * c0, 3_130_000 - 10 * r1, 500_000 + 10 * c1, 3_130_000 - 10 * r0)

    clean = gpd.GeoDataFrame(geometry=[square(2, 12, 2, 12)], crs=UTM45)  # 100 px
    debris = gpd.GeoDataFrame(geometry=[square(6, 16, 6, 16)], crs=UTM45)  # 100 px, 36 over clean ice
    lake = gpd.GeoDataFrame(geometry=[square(9, 14, 9, 14)], crs=UTM45).to_crs("EPSG:4326")  # 25 px, in debris
    # Given in reverse order: painting follows the priority, not the dict order.
    labels = prepare.rasterize_polygons({"lake": lake, "debris": debris, "clean_ice": clean}, grid)
    assert labels.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=4)
    assert counts.tolist() == [400 - 64 - 75 - 25, 64, 75, 25]
    assert labels[10, 10] == CLASS_IDS["lake"] and labels[7, 7] == CLASS_IDS["debris"]
    assert labels[3, 3] == CLASS_IDS["clean_ice"] and labels[0, 0] == 0
    touched = prepare.rasterize_polygons({"lake": lake}, grid, all_touched=True)
    assert (touched == 3).sum() >= 25
    with pytest.raises(ValueError, match="unknown class"):
        prepare.rasterize_polygons({"rock": lake}, grid)


def _gpkg(path: Path, layers: dict[str, gpd.GeoDataFrame]) -> Path:
    for name, gdf in layers.items():
        gdf.to_file(path, layer=name, driver="GPKG")
    return path


def test_rasterize_scene_labels(tmp_path):
    grid = _grid(UTM45, 500_000.0, 3_130_000.0, 10.0, 20, 20)
    gl = gpd.GeoDataFrame(geometry=[box(500_000, 3_129_800, 500_100, 3_130_000)], crs=UTM45)  # cols 0-9, rows 0-19
    lk = gpd.GeoDataFrame(geometry=[box(500_050, 3_129_950, 500_150, 3_130_000)], crs=UTM45)  # cols 5-14, rows 0-4
    path = _gpkg(tmp_path / "ref.gpkg", {"glaciers": gl, "lakes": lk})  # no debris layer: treated as empty
    labels = prepare.rasterize_scene_labels(path, grid)
    assert (labels == 3).sum() == 50 and (labels == 1).sum() == 200 - 25 and (labels == 2).sum() == 0
    other = _gpkg(tmp_path / "other.gpkg", {"roads": gl})
    from cryonet.vector import VectorError

    with pytest.raises(VectorError, match="none of the label layers") as exc:
        prepare.rasterize_scene_labels(other, grid)
    assert str(other) in str(exc.value)


# ------------------------------------------------------------------------------------------------ whole scene --
def _tiny_scene(root: Path) -> tuple[Scene, dict[str, np.ndarray]]:
    """A hand-made 32x32 (10 m) scene: S2 DN at native resolution, DEM in EPSG:4326, InSAR at 20 m, labels."""
    left, top = 500_000.0, 3_130_000.0
    rng = np.random.default_rng(7)
    dns = {}
    files = {}
    for band in S2_BANDS:
        res = S2_RESOLUTION_M[band]
        n = 320 // res
        dn = rng.integers(500, 9000, (n, n)).astype("uint16")
        dn[:2, :] = 0  # L2A nodata stripe at the top (20 m rows 0-1 = 10 m rows 0-3)
        dns[band] = dn
        files[band] = f"s2/{band}.tif"
        _write(root / files[band], dn, UTM45, from_origin(left, top, res, res), nodata=0 if band != "B2" else None)
    (lon0, lon1), (lat1, lat0) = transform(UTM45, "EPSG:4326", [left - 200, left + 520], [top + 200, top - 520])
    dem = np.linspace(4000, 5000, 40 * 40).reshape(40, 40).astype("int16")
    _write(
        root / "dem.tif", dem, "EPSG:4326", rasterio.transform.from_bounds(lon0, lat0, lon1, lat1, 40, 40), nodata=None
    )
    _write(root / "coh.tif", rng.random((16, 16)).astype("float32"), UTM45, from_origin(left, top, 20, 20))
    _write(
        root / "phase.tif",
        rng.uniform(-np.pi, np.pi, (16, 16)).astype("float32"),
        UTM45,
        from_origin(left, top, 20, 20),
    )
    gl = gpd.GeoDataFrame(geometry=[box(left, top - 320, left + 160, top)], crs=UTM45)  # cols 0-15
    db = gpd.GeoDataFrame(geometry=[box(left + 100, top - 320, left + 200, top)], crs=UTM45)  # cols 10-19
    lk = gpd.GeoDataFrame(geometry=[box(left + 250, top - 100, left + 300, top - 50)], crs=UTM45)  # 5x5
    _gpkg(root / "ref.gpkg", {"glaciers": gl, "debris": db, "lakes": lk})
    doc = {
        "region": "poiqu",
        "synthetic": True,
        "s2": files,
        "dem": "dem.tif",
        "coherence": "coh.tif",
        "phase": "phase.tif",
        "labels": "ref.gpkg",
        "sun_azimuth_deg": 150.0,
        "sun_elevation_deg": 50.0,
    }
    (root / "scene.json").write_text(json.dumps(doc))
    return Scene.load(root), dns


def _write(path: Path, arr: np.ndarray, crs: str, tr, nodata=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[1],
        height=arr.shape[0],
        count=1,
        dtype=arr.dtype,
        crs=crs,
        transform=tr,
        nodata=nodata,
    ) as dst:
        dst.write(arr, 1)


def test_align_scene_tiny(tmp_path):
    scene, dns = _tiny_scene(tmp_path / "scene")
    out = prepare.align_scene(scene, tmp_path / "aligned", progress=False)
    assert set(out) == {*S2_BANDS, "dem", "coherence", "phase", "labels"}
    grid = Grid.from_file(scene.reference_band)
    for name, path in out.items():
        assert path == tmp_path / "aligned" / f"{name}.tif"
        assert Grid.from_file(path) == grid
        with rasterio.open(path) as ds:
            assert ds.descriptions == (name,)
    # B2 is on the reference grid already: exactly (DN - 1000) / 10000, clipped at 0, NaN where DN == 0.
    b2 = raster.read_raster(out["B2"])[0]
    dn = dns["B2"].astype("float64")
    expected = np.where(dn == 0, np.nan, np.maximum((dn - 1000) / 10000, 0))
    np.testing.assert_allclose(b2, expected, atol=1e-6)
    assert np.isnan(b2[:2]).all() and np.nanmin(b2) == 0.0 and np.nanmax(b2) <= 0.8
    # a 20 m band: NaN over its nodata stripe (rows 0-3 at 10 m), reflectance in range elsewhere
    b11 = raster.read_raster(out["B11"])[0]
    assert np.isnan(b11[:3]).all() and np.isfinite(b11[5:]).all() and np.nanmax(b11) <= 0.8
    dem = raster.read_raster(out["dem"])[0]
    assert np.isfinite(dem).all() and 4000 <= dem.min() and dem.max() <= 5000
    phase = raster.read_raster(out["phase"])[0]
    assert np.isfinite(phase).all() and np.abs(phase).max() <= np.pi + 1e-6
    with rasterio.open(out["labels"]) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == LABEL_NODATA
        labels = ds.read(1)
    assert (labels[:2] == LABEL_NODATA).all() and (labels[2:] != LABEL_NODATA).all()
    body = labels[2:]
    assert (body[:, :10] == 1).all() and (body[:, 10:20] == 2).all()
    assert (labels == 3).sum() == 25 and (body[:, 20:] != 1).all()
    # Resume: a second run keeps complete outputs (same mtime); overwrite recomputes.
    stamps = {k: os.stat(p).st_mtime_ns for k, p in out.items()}
    os.remove(out["dem"])
    again = prepare.align_scene(scene, tmp_path / "aligned", progress=False)
    assert again["dem"].exists()
    assert all(os.stat(p).st_mtime_ns == stamps[k] for k, p in again.items() if k != "dem")


# --------------------------------------------------------------------------------------------------- realdata --
def test_realdata_rasterize_hef_area(realdata):
    from cryonet.vector import read_polygons

    hef = read_polygons(realdata / "oggm-sample-data/test-files/Hintereisferner_RGI6.shp")
    assert abs(float(hef["Area"].iloc[0]) - 8.036) < 1e-3
    left, bottom, right, top = hef.to_crs("EPSG:32632").total_bounds
    res = 10.0
    left, top = np.floor(left / res) * res - 100, np.ceil(top / res) * res + 100
    grid = _grid("EPSG:32632", left, top, res, int((right - left) // res) + 20, int((top - bottom) // res) + 20)
    labels = prepare.rasterize_polygons({"clean_ice": hef}, grid)
    area_km2 = (labels == 1).sum() * res * res / 1e6
    assert abs(area_km2 - 8.036) / 8.036 < 0.01


# ------------------------------------------------------------------------------------------------- the split --
def test_dn_to_reflectance_offset_scale_clip_nan():
    dn = np.array([0.0, 999.0, 1000.0, 3500.0, np.nan])
    np.testing.assert_array_equal(prepare.dn_to_reflectance(dn), [0.0, 0.0, 0.0, 0.25, np.nan])


def test_raster_module_keeps_no_preparation_names():
    """raster.py is generic raster I/O: the preparation functions live in cryonet.prepare only (no aliases)."""
    moved = ("dn_to_reflectance", "_dn_to_reflectance", "rasterize_polygons", "rasterize_scene_labels", "align_scene")
    assert [name for name in moved if hasattr(raster, name)] == []
