"""Outlines: class raster -> polygons (areas, holes, minimum area) -> GeoPackage -> comparison with references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyogrio
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cryonet import vector as V
from cryonet.constants import CLASS_IDS, LABEL_NODATA
from cryonet.prepare import rasterize_polygons, rasterize_scene_labels
from cryonet.raster import Grid, write_raster

RES = 10.0
PX_M2 = RES * RES


def _grid(rows: int, cols: int, res: float = RES, epsg: int = 32645) -> Grid:
    return Grid(CRS.from_epsg(epsg), from_origin(500_000.0, 3_100_000.0, res, res), cols, rows)


def _write(tmp_path, name, lab, res=RES):
    return write_raster(tmp_path / name, lab, _grid(*lab.shape, res=res), nodata=LABEL_NODATA)


@pytest.fixture
def scene_labels(tmp_path):
    """A 20x20-px glacier with a 6x6-px debris ring around a 2x2-px pond, a separate lake, nodata rows."""
    lab = np.zeros((48, 48), np.uint8)
    lab[4:24, 4:24] = CLASS_IDS["clean_ice"]
    lab[8:14, 8:14] = CLASS_IDS["debris"]
    lab[10:12, 10:12] = CLASS_IDS["lake"]  # pond inside the debris: a hole of the debris polygon
    lab[30:35, 30:34] = CLASS_IDS["lake"]  # 20 px proglacial lake
    lab[40:42, 40:41] = CLASS_IDS["clean_ice"]  # 2 px ice patch
    lab[0:2, :] = LABEL_NODATA
    lab[46:, 0:10] = LABEL_NODATA
    return _write(tmp_path, "labels.tif", lab), lab


def test_polygon_areas_are_pixel_counts_and_holes_are_kept(scene_labels):
    path, lab = scene_labels
    gdf = V.polygonize_classes(path)
    assert list(gdf.columns) == ["class", "class_id", "area_m2", "geometry"]
    assert gdf.crs == CRS.from_epsg(32645)
    for cls in ("clean_ice", "debris", "lake"):
        sel = gdf[gdf["class"] == cls]
        assert sel["area_m2"].sum() == pytest.approx((lab == CLASS_IDS[cls]).sum() * PX_M2, abs=1e-6)
        np.testing.assert_allclose(sel["area_m2"], sel.geometry.area)
    ice = gdf[gdf["class"] == "clean_ice"].iloc[0]  # largest first
    assert ice.area_m2 == pytest.approx((400 - 36) * PX_M2)
    assert len(ice.geometry.interiors) == 1  # the debris patch (with its pond) is one hole
    assert ice.geometry.interiors[0].convex_hull.area == pytest.approx(36 * PX_M2)
    debris = gdf[gdf["class"] == "debris"].iloc[0]
    assert debris.area_m2 == pytest.approx(32 * PX_M2) and len(debris.geometry.interiors) == 1
    # every polygon exactly covers its class pixels: rasterising the polygons gives the label raster back
    back = rasterize_polygons({c: gdf[gdf["class"] == c] for c in ("clean_ice", "debris", "lake")}, _grid(*lab.shape))
    expect = np.where(lab == LABEL_NODATA, 0, lab)
    np.testing.assert_array_equal(back, expect)
    assert not (gdf["class_id"] == LABEL_NODATA).any()


def test_min_area_filter_and_class_subset(scene_labels):
    path, lab = scene_labels
    gdf = V.polygonize_classes(path, min_area_m2=3 * PX_M2)
    ice = gdf[gdf["class"] == "clean_ice"]
    assert len(ice) == 1  # the 2-px patch is gone
    gdf2 = V.polygonize_classes(path, min_area_m2={"lake": 10 * PX_M2})
    assert sorted(gdf2.loc[gdf2["class"] == "lake", "area_m2"]) == [pytest.approx(20 * PX_M2)]
    assert (gdf2["class"] == "clean_ice").sum() == 2
    only = V.polygonize_classes(path, classes=("debris",))
    assert set(only["class"]) == {"debris"} and len(only) == 1
    with pytest.raises(ValueError, match="unknown class"):
        V.polygonize_classes(path, classes=("rock",))


def test_simplification_keeps_a_coverage(tmp_path):
    rng = np.random.default_rng(1)
    rr, cc = np.mgrid[0:64, 0:64]
    lab = np.zeros((64, 64), np.uint8)
    lab[(rr - 32) ** 2 + (cc - 30) ** 2 < 24**2] = 1
    lab[((rr - 36) ** 2 + (cc - 34) ** 2 < 10**2) & (rng.random((64, 64)) > 0.05)] = 2
    path = _write(tmp_path, "l.tif", lab)
    exact = V.polygonize_classes(path)
    simple = V.polygonize_classes(path, simplify_m=RES)
    assert simple.geometry.is_valid.all()
    assert sum(len(g.exterior.coords) for g in simple.geometry) < sum(len(g.exterior.coords) for g in exact.geometry)
    # shared edges stay shared: no overlap between classes and the union keeps its area within 1 %
    ice = V._dissolve(simple.loc[simple["class"] == "clean_ice"].geometry.values)
    deb = V._dissolve(simple.loc[simple["class"] == "debris"].geometry.values)
    assert ice.intersection(deb).area < 1e-6
    assert ice.union(deb).area == pytest.approx(exact.area_m2.sum(), rel=0.01)


def test_area_table(scene_labels):
    path, lab = scene_labels
    table = V.area_table(V.polygonize_classes(path))
    assert list(table.index) == ["clean_ice", "debris", "lake"]
    assert table.loc["clean_ice", "count"] == 2
    assert table.loc["clean_ice", "total_km2"] == pytest.approx((364 + 2) * PX_M2 / 1e6)
    assert table.loc["lake", "median_km2"] == pytest.approx((4 + 20) / 2 * PX_M2 / 1e6)
    empty = V.area_table(V.polygonize_classes(path, classes=("debris",)), classes=["debris", "lake"])
    assert empty.loc["lake", "count"] == 0 and np.isnan(empty.loc["lake", "median_km2"])


def test_geopackage_round_trip_and_reference_layers(scene_labels, tmp_path):
    path, lab = scene_labels
    gdf = V.polygonize_classes(path)
    out = V.write_outlines(gdf, tmp_path / "sub" / "pred.gpkg")
    assert sorted(pyogrio.list_layers(out)[:, 0]) == ["debris", "glaciers", "lakes", "outlines"]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["pred.gpkg"]  # no temporary files left
    back = V.read_outlines(out)
    assert back.crs == gdf.crs and list(back["class"]) == list(gdf["class"])
    assert all(a.equals(b) for a, b in zip(back.geometry, gdf.geometry, strict=True))
    import geopandas as gpd

    glaciers = gpd.read_file(out, layer="glaciers")
    assert len(glaciers) == 2  # the main glacier (ice + debris) and the 2-px patch
    assert glaciers["area_km2"].max() == pytest.approx((400 - 4) * PX_M2 / 1e6)  # pond is a hole
    assert glaciers["debris_km2"].max() == pytest.approx(32 * PX_M2 / 1e6)
    # the reference-style layers rasterise back to the label raster, like a scene's reference GeoPackage
    raster = rasterize_scene_labels(out, _grid(*lab.shape))
    np.testing.assert_array_equal(raster, np.where(lab == LABEL_NODATA, 0, lab))
    # an empty prediction still writes every layer
    empty = V.write_outlines(V.polygonize_classes(path, classes=("lake",), min_area_m2=1e9), tmp_path / "e.gpkg")
    assert len(V.read_outlines(empty)) == 0
    with pytest.raises(V.VectorError, match="GeoPackage"):
        V.write_outlines(gdf, tmp_path / "pred.shp")


def test_compare_with_identical_reference_is_perfect(scene_labels, tmp_path):
    path, lab = scene_labels
    gdf = V.polygonize_classes(path)
    ref = V.write_outlines(gdf, tmp_path / "ref.gpkg")
    res = V.compare_with_reference(gdf, ref)
    assert list(res["classes"].index) == ["clean_ice", "debris", "lake"]
    np.testing.assert_allclose(res["classes"]["iou"], 1.0)
    g = res["glaciers"]
    assert len(g) == 2
    np.testing.assert_allclose(g["diff_km2"], 0.0, atol=1e-12)
    # the same comparison from file to file, and from a reference given as layers in EPSG:4326
    res2 = V.compare_with_reference(tmp_path / "ref.gpkg", ref)
    np.testing.assert_allclose(res2["classes"]["iou"], 1.0)
    layers = {k: v.to_crs(4326) for k, v in V.outline_layers(gdf).items() if k != V.OUTLINES_LAYER}
    res3 = V.compare_with_reference(gdf, layers)
    np.testing.assert_allclose(res3["classes"]["iou"], 1.0, atol=1e-6)


def test_compare_with_shifted_reference_gives_known_iou(tmp_path):
    lab = np.zeros((40, 40), np.uint8)
    lab[5:25, 5:25] = CLASS_IDS["clean_ice"]  # 20 x 20
    shifted = np.zeros_like(lab)
    shifted[5:25, 9:29] = CLASS_IDS["clean_ice"]  # 4 px east: overlap 20 x 16
    pred = V.polygonize_classes(_write(tmp_path, "p.tif", lab))
    ref_gdf = V.polygonize_classes(_write(tmp_path, "r.tif", shifted))
    ref = V.write_outlines(ref_gdf, tmp_path / "ref.gpkg")
    res = V.compare_with_reference(pred, ref)
    assert res["classes"].loc["clean_ice", "iou"] == pytest.approx(320 / 480)
    assert res["classes"].loc["clean_ice", "intersection_km2"] == pytest.approx(320 * PX_M2 / 1e6)
    g = res["glaciers"].iloc[0]
    assert g.ref_km2 == pytest.approx(400 * PX_M2 / 1e6)
    assert g.pred_km2 == pytest.approx(320 * PX_M2 / 1e6)  # predicted ice inside the reference outline
    assert g.rel_diff == pytest.approx(-0.2)
    # debris predicted where the reference has clean ice: class IoU drops, glacier area (ice + debris) does not
    lab2 = lab.copy()
    lab2[5:25, 5:15] = CLASS_IDS["debris"]
    res2 = V.compare_with_reference(V.polygonize_classes(_write(tmp_path, "p2.tif", lab2)), ref)
    assert res2["glaciers"].iloc[0].pred_km2 == pytest.approx(320 * PX_M2 / 1e6)
    # predicted ice: columns 15-24 (200 px), all inside the reference (columns 9-28, 400 px)
    assert res2["classes"].loc["clean_ice", "iou"] == pytest.approx(200 / 400)
    assert res2["classes"].loc["debris", "iou"] == 0.0


def test_reference_priority_lakes_over_debris_over_glaciers():
    import geopandas as gpd
    from shapely.geometry import box

    crs = "EPSG:32645"
    layers = {
        "glaciers": gpd.GeoDataFrame(geometry=[box(0, 0, 100, 100)], crs=crs),
        "debris": gpd.GeoDataFrame(geometry=[box(50, 0, 100, 100)], crs=crs),
        "lakes": gpd.GeoDataFrame(geometry=[box(80, 80, 120, 120)], crs=crs),
    }
    g = V.reference_class_geometries(layers)
    assert g["lake"].area.iloc[0] == pytest.approx(1600)
    assert g["debris"].area.iloc[0] == pytest.approx(5000 - 400)
    assert g["clean_ice"].area.iloc[0] == pytest.approx(5000)
    assert isinstance(
        V.compare_with_reference(
            gpd.GeoDataFrame({"class": ["lake"]}, geometry=[box(80, 80, 120, 120)], crs=crs), layers
        )["classes"],
        pd.DataFrame,
    )


def test_rgi_glaciers_survive_raster_vector_round_trip(realdata, tmp_path):
    """RGI 7 outlines (HEF complex) -> 20 m UTM 32N raster -> polygons: per-glacier areas match RGI's area_km2."""
    from rasterio.transform import from_origin as fo

    rgi = V.read_polygons(realdata / "oggm-sample-data/test-files/rgi7/rgi7g_hef_complex.shp")
    utm = rgi.to_crs(32632)
    x0, y0, x1, y1 = utm.total_bounds
    res = 20.0
    left, top = np.floor(x0 / res) * res - 200, np.ceil(y1 / res) * res + 200
    grid = Grid(
        CRS.from_epsg(32632),
        fo(left, top, res, res),
        int(np.ceil((x1 - left) / res)) + 10,
        int(np.ceil((top - y0) / res)) + 10,
    )
    lab = rasterize_polygons({"clean_ice": utm}, grid)
    path = write_raster(tmp_path / "rgi.tif", lab, grid, nodata=LABEL_NODATA)
    pred = V.polygonize_classes(path, classes=("clean_ice",))
    assert pred["area_m2"].sum() == pytest.approx((lab == 1).sum() * res * res)
    res_cmp = V.compare_with_reference(pred, {"glaciers": rgi}, id_column="rgi_id")
    g = res_cmp["glaciers"].join(rgi.set_index("rgi_id")["area_km2"].rename("rgi_km2"))
    big = g[g["rgi_km2"] > 1.0]
    assert len(big) >= 15
    rel = (big["pred_km2"] - big["rgi_km2"]) / big["rgi_km2"]
    assert rel.abs().max() < 0.03, rel.sort_values()
    # the expected bias of "inside the outline": edge pixels lose their parts outside it (~ -1 % here)
    assert -0.02 < rel.mean() < 0.0
    # the whole complex, without attribution to glaciers: raster area equals the inventory's within 0.5 %
    assert pred["area_m2"].sum() / 1e6 == pytest.approx(rgi["area_km2"].sum(), rel=0.005)
    # the dissolved complex: area IoU of the rasterised ice against the RGI outlines ~ 1 - boundary pixels
    iou = res_cmp["classes"].loc["clean_ice", "iou"]
    assert 0.95 < iou < 1.0


# ------------------------------------------------------------------------------------------------------------------
# CLI: predict -> outlines
# ------------------------------------------------------------------------------------------------------------------
def test_outlines_cli_writes_geopackage_and_compares(scene_labels, tmp_path, capsys):
    from cryonet.cli import main

    path, lab = scene_labels
    ref = V.write_outlines(V.polygonize_classes(path), tmp_path / "ref.gpkg")
    out = tmp_path / "out.gpkg"
    assert main(["outlines", str(path), str(out), "--min-area", str(3 * PX_M2), "--reference", str(ref)]) == 0
    text = capsys.readouterr().out
    assert "clean_ice" in text and "iou" in text and "per reference glacier (2)" in text
    written = V.read_outlines(out)
    assert (written["class"] == "clean_ice").sum() == 1  # the 2-px patch is below --min-area
    assert main(["outlines", str(tmp_path / "missing.tif"), str(out)]) == 1


@pytest.mark.slow
def test_predict_cli_writes_cog_on_the_input_grid(tmp_path, capsys, make_stack, make_run):
    """`cryonet predict` on a scene that is not a multiple of the tile size: a COG on exactly the input grid."""
    import rasterio
    import torch

    from cryonet.cli import main
    from cryonet.train import load_model

    sp, lp = make_stack.group_stack(tmp_path / "scene", size=83)
    run = make_run(tmp_path / "run", sp, lp, uses=[make_stack.SIGNAL])
    out = tmp_path / "pred.tif"
    probs = tmp_path / "probs.tif"
    rc = main(
        [
            "-q",
            "predict",
            "--checkpoint",
            str(run / "best.pt"),
            "--stack",
            str(sp),
            "--out",
            str(out),
            "--probabilities",
            str(probs),
            "--tile",
            "96",
            "--overlap",
            "0",
            "--batch",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "1 windows" in capsys.readouterr().out
    with rasterio.open(sp) as s, rasterio.open(out) as p, rasterio.open(probs) as q:
        assert p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (p.crs, p.transform, p.shape) == (s.crs, s.transform, s.shape) == (q.crs, q.transform, q.shape)
        x = s.read()
        pred = p.read(1)
        assert q.count == 4
    # one window covers the scene: the prediction is the model on the zero-padded, normalised scene
    model, norm, _ = load_model(run)
    pad = np.zeros((x.shape[0], 96, 96), np.float32)
    pad[:, :83, :83] = norm.apply(x)
    with torch.no_grad():
        direct = model(torch.from_numpy(pad)[None]).argmax(1)[0, :83, :83].numpy()
    valid = ~np.isnan(x).all(0)
    assert (pred[~valid] == LABEL_NODATA).all() and (~valid).sum() == 2 * 83
    np.testing.assert_array_equal(pred[valid], direct[valid])
    # default tile (the run's 32 px) with overlap: still exactly the input grid
    assert (
        main(
            [
                "-q",
                "predict",
                "--checkpoint",
                str(run),
                "--stack",
                str(sp),
                "--out",
                str(tmp_path / "b.tif"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with rasterio.open(tmp_path / "b.tif") as p:
        assert p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and p.shape == (83, 83)
        assert p.transform == s.transform
    assert (
        main(
            ["predict", "--checkpoint", str(tmp_path / "none.pt"), "--stack", str(sp), "--out", str(tmp_path / "c.tif")]
        )
        == 1
    )
