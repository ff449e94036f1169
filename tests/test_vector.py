"""Reading and validating polygon layers (cryonet.vector.read_polygons)."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from cryonet.vector import GeometryRepairWarning, VectorError, read_polygons

UTM32 = "EPSG:32632"
BOWTIE = Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])  # self-intersecting ring, area 50 m² when repaired


def _squares(n: int = 3) -> list[Polygon]:
    return [box(100 * i, 0, 100 * i + 50, 50) for i in range(n)]


def test_reads_valid_geopackage_layer(tmp_path):
    path = tmp_path / "ref.gpkg"
    gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=_squares(), crs=UTM32).to_file(path, layer="glaciers")
    gpd.GeoDataFrame(geometry=_squares(1), crs=UTM32).to_file(path, layer="lakes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file gives no warning
        gdf = read_polygons(path, layer="glaciers")
    assert len(gdf) == 3 and gdf.crs.to_epsg() == 32632 and np.allclose(gdf.area, 2500.0)
    with pytest.raises(VectorError, match="2 layers") as exc:
        read_polygons(path)
    assert str(path) in str(exc.value) and "glaciers" in str(exc.value)
    with pytest.raises(VectorError, match="no layer named 'debris'") as exc:
        read_polygons(path, layer="debris")
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path):
    path = tmp_path / "none.gpkg"
    with pytest.raises(VectorError, match="file not found") as exc:
        read_polygons(path)
    assert str(path) in str(exc.value)


def test_not_a_vector(tmp_path):
    path = tmp_path / "junk.geojson"
    path.write_text("certainly not GeoJSON {{{")
    with pytest.raises(VectorError, match="not a readable vector") as exc:
        read_polygons(path)
    assert str(path) in str(exc.value)


def test_no_crs(tmp_path):
    path = tmp_path / "nocrs.shp"
    gpd.GeoDataFrame(geometry=_squares(), crs=None).to_file(path)
    assert not path.with_suffix(".prj").exists()
    with pytest.raises(VectorError, match="no coordinate reference system") as exc:
        read_polygons(path)
    assert str(path) in str(exc.value)


def test_no_polygons(tmp_path):
    path = tmp_path / "points.gpkg"
    gpd.GeoDataFrame(geometry=[Point(0, 0), Point(1, 1)], crs=UTM32).to_file(path)
    with pytest.raises(VectorError, match="no polygon geometries") as exc:
        read_polygons(path)
    assert str(path) in str(exc.value) and "Point" in str(exc.value)
    assert len(read_polygons(path, allow_empty=True)) == 0


def test_non_polygons_dropped_with_warning(tmp_path):
    path = tmp_path / "mixed.geojson"
    geoms = [box(0, 0, 10, 10), LineString([(0, 0), (5, 5)]), box(20, 20, 30, 30), Point(3, 3)]
    gpd.GeoDataFrame({"k": [0, 1, 2, 3]}, geometry=geoms, crs=UTM32).to_file(path, driver="GeoJSON")
    with pytest.warns(GeometryRepairWarning, match=r"dropped 2 non-polygon features .*rows \[1, 3\]"):
        gdf = read_polygons(path)
    assert gdf["k"].tolist() == [0, 2] and gdf.area.sum() == pytest.approx(200.0)


def test_invalid_polygon_repaired_with_warning(tmp_path):
    path = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame({"k": [0, 1]}, geometry=[box(50, 50, 60, 60), BOWTIE], crs=UTM32).to_file(path)
    with pytest.warns(GeometryRepairWarning, match=r"repaired 1 invalid geometries.*row 1: Self-intersection") as rec:
        gdf = read_polygons(path)
    assert str(path) in str(rec[0].message)
    assert gdf.is_valid.all() and set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    # The bowtie's two triangles (25 m² each) survive; the valid square is untouched.
    assert gdf.area.tolist() == pytest.approx([100.0, 50.0])


def test_invalid_polygon_refused_without_repair(tmp_path):
    path = tmp_path / "bad.shp"
    gpd.GeoDataFrame({"k": [0, 1]}, geometry=[box(50, 50, 60, 60), BOWTIE], crs=UTM32).to_file(path)
    with pytest.raises(VectorError, match=r"1 invalid geometries \(row 1: Self-intersection") as exc:
        read_polygons(path, repair=False)
    assert str(path) in str(exc.value)


def test_z_dropped_and_esri_prj_without_epsg(tmp_path):
    albers = "+proj=aea +lat_0=30 +lon_0=95 +lat_1=15 +lat_2=65 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
    path = tmp_path / "lakes.shp"
    poly_z = Polygon([(0, 0, 5000), (1000, 0, 5000), (1000, 500, 5010), (0, 500, 5010)])
    gpd.GeoDataFrame({"Area": [0.5]}, geometry=[poly_z], crs=albers).to_file(path)
    assert "PROJCS" in path.with_suffix(".prj").read_text()  # an ESRI WKT .prj
    gdf = read_polygons(path)
    assert gdf.crs is not None and gdf.crs.to_epsg() is None and not gdf.has_z.any()
    assert gdf.to_crs("EPSG:4326").to_crs(gdf.crs).area.iloc[0] == pytest.approx(500_000.0, rel=1e-6)


def test_latin1_text_with_wrong_cpg(tmp_path):
    path = tmp_path / "names.shp"
    gpd.GeoDataFrame({"Name": ["Gepatschferner Otztal"]}, geometry=_squares(1), crs=UTM32).to_file(path)
    dbf = path.with_suffix(".dbf")
    dbf.write_bytes(dbf.read_bytes().replace(b"Otztal", "Ötztal".encode("latin-1")))
    path.with_suffix(".cpg").write_text("UTF-8")  # claims UTF-8, holds latin-1 bytes
    with pytest.warns(GeometryRepairWarning, match="latin-1"):
        gdf = read_polygons(path)
    assert gdf["Name"].iloc[0] == "Gepatschferner Ötztal"


# --------------------------------------------------------------------------------------------------- realdata --
def test_realdata_invalid_rgi6_ring(realdata):
    path = realdata / "oggm-sample-data/test-files/RGI60-14.03439/RGI60-14.03439.shp"
    with pytest.warns(GeometryRepairWarning, match=r"repaired 1 invalid geometries.*Ring Self-intersection"):
        gdf = read_polygons(path)
    assert len(gdf) == 1 and gdf.is_valid.all()
    # make_valid keeps the area: compare with the RGI attribute (km², equal-area) within 2 %
    area = gdf.to_crs("+proj=laea +lat_0=36.4 +lon_0=74.97 +datum=WGS84 +units=m").area.iloc[0] / 1e6
    assert area == pytest.approx(float(gdf["Area"].iloc[0]), rel=0.02)
    with pytest.raises(VectorError, match="Ring Self-intersection") as exc:
        read_polygons(path, repair=False)
    assert str(path) in str(exc.value)


def test_realdata_rgi_oetztal_encoding_and_repairs(realdata):
    path = realdata / "oggm-sample-data/test-workflow/rgi/rgi_oetztal.shp"
    with pytest.warns(GeometryRepairWarning, match="repaired 3 invalid"):
        gdf = read_polygons(path)
    assert len(gdf) == 20 and gdf.is_valid.all()
    assert gdf["Name"].str.contains("Hintereisferner").any()


def test_realdata_hkh_albers_prj(realdata):
    path: Path = realdata / "hkh-glacial-lakes/HKH_2000.shp"
    gdf = read_polygons(path)
    assert len(gdf) == 1485 and gdf.crs is not None and gdf.crs.to_epsg() is None
    assert gdf.crs.is_projected and not gdf.has_z.any()
    # The CRS is usable: through geographic coordinates into another equal-area projection (EPSG:6933).
    area = gdf.to_crs("EPSG:4326").to_crs("EPSG:6933").area / 1e6
    rel = np.abs(area - gdf["Area"]) / gdf["Area"]
    assert np.mean(rel < 0.05) > 0.9
    assert np.median(rel) < 0.02
