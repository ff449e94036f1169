"""Feature stack: layer names and groups, halo logic (block-wise == one block), selection/permutation, dask."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cryonet.constants import LAYER_GROUPS, S2_BANDS
from cryonet.features.pca import PCATransform
from cryonet.features.stack import (
    TextureSettings,
    build_stack,
    build_stack_dask,
    class_table,
    permute_group,
    separability,
    separability_by_group,
    stack_layers,
)
from cryonet.raster import Grid, write_raster
from cryonet.scene import Scene
from cryonet.stackfile import StackFile, StackFileError

N = 48  # scene edge, 10 m pixels
X0, Y0 = 500_000.0, 3_130_000.0
UTM = CRS.from_epsg(32645)


def _smooth(rng, shape, scale):
    """A smooth random field (sum of a few sinusoids) in [0, 1]."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    f = np.zeros(shape)
    for _ in range(4):
        kx, ky, ph = rng.uniform(1, 4 * scale), rng.uniform(1, 4 * scale), rng.uniform(0, 2 * np.pi)
        f += np.sin(2 * np.pi * (kx * xx + ky * yy) + ph)
    return (f - f.min()) / (f.max() - f.min())


def make_scene(root, seed=0, n=N):
    """A tiny scene with the real file layout: 10/20 m S2 DNs, DEM in EPSG:4326, InSAR at 20 m."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "s2").mkdir(exist_ok=True)
    bright = _smooth(rng, (n, n), 1.0)
    green = _smooth(rng, (n, n), 2.0)
    s2 = {}
    for k, band in enumerate(S2_BANDS):
        res = 10 if band in ("B2", "B3", "B4", "B8") else 20
        m = n * 10 // res
        base = bright[:: res // 10, :: res // 10][:m, :m]
        veg = green[:: res // 10, :: res // 10][:m, :m]
        refl = 0.05 + 0.5 * base * (1.0 - 0.05 * k) + (0.25 * veg if band in ("B6", "B7", "B8", "B8A") else 0.0)
        refl += 0.01 * rng.normal(size=refl.shape)
        dn = np.clip(np.round(refl * 10000 + 1000), 1, 20000).astype(np.uint16)
        dn[:2, :3] = 0  # a nodata corner
        grid = Grid(UTM, from_origin(X0, Y0, res, res), m, m)
        s2[band] = write_raster(root / "s2" / f"{band}_{res}m.tif", dn, grid, nodata=0)
    # DEM in geographic coordinates covering the scene with a margin (bilinear resampling needed)
    from pyproj import Transformer

    tr = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lon0, lat1 = tr.transform(X0 - 200, Y0 + 200)
    lon1, lat0 = tr.transform(X0 + n * 10 + 200, Y0 - n * 10 - 200)
    dres = 0.0001
    w, h = int((lon1 - lon0) / dres) + 2, int((lat1 - lat0) / dres) + 2
    yy, xx = np.mgrid[0:h, 0:w]
    dem = (4500 + 3.0 * yy + 2.0 * xx + 40 * _smooth(rng, (h, w), 1.5)).astype(np.float32)
    write_raster(root / "dem.tif", dem, Grid(CRS.from_epsg(4326), from_origin(lon0, lat1, dres, dres), w, h))
    # InSAR at 20 m with a margin; the phase wraps across +-pi inside the scene
    m = n // 2 + 4
    ig = Grid(UTM, from_origin(X0 - 40, Y0 + 40, 20, 20), m, m)
    coh = np.clip(_smooth(rng, (m, m), 1.0), 0, 1).astype(np.float32)
    yy, xx = np.mgrid[0:m, 0:m]
    phase = np.angle(np.exp(1j * (0.9 * xx + 0.3 * yy))).astype(np.float32)
    write_raster(root / "coherence.tif", coh, ig)
    write_raster(root / "phase.tif", phase, ig)
    scene = Scene(
        root=root,
        region="poiqu",
        s2={b: p for b, p in s2.items()},
        dem=root / "dem.tif",
        coherence=root / "coherence.tif",
        phase=root / "phase.tif",
        labels=None,
        sun_azimuth_deg=152.0,
        sun_elevation_deg=48.0,
        synthetic=True,
    )
    scene.save()
    return Scene.load(root)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("scene") / "poiqu")


TEX = {"window": 5, "levels": 16}


@pytest.fixture(scope="module")
def full_stack(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("stack") / "stack.tif"
    info = build_stack(scene, out, texture_params=TEX, block=1024, progress=False)
    return info


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), list(src.descriptions), src


def test_layers_descriptions_and_sidecar(full_stack):
    data, desc, src = _read(full_stack.path)
    expected = [s.name for s in stack_layers(LAYER_GROUPS, texture=TextureSettings(**TEX))]
    assert desc == expected == [s.name for s in full_stack.layers]
    assert desc[:10] == list(S2_BANDS) and "glcm_contrast" in desc and "pc1" in desc and "tc_wetness" in desc
    table = StackFile(full_stack.path).table
    assert list(table.columns) == ["layer", "group", "units", "source", "band"]
    assert list(table["layer"]) == desc and list(table["band"]) == list(range(1, len(desc) + 1))
    # groups appear in LAYER_GROUPS order, each contiguous
    order = list(dict.fromkeys(table["group"]))
    assert order == list(LAYER_GROUPS)
    assert set(table.loc[table["layer"].isin(["ndsi", "ndvi"]), "group"]) == {"indices"}
    assert set(table.loc[table["layer"].isin(["slope", "elevation"]), "group"]) == {"terrain"}
    assert set(table.loc[table["layer"].isin(["coherence", "phase_sin"]), "group"]) == {"insar"}
    assert set(table.loc[table["layer"].str.startswith("glcm_"), "group"]) == {"texture"}
    assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
    assert full_stack.pca_path.is_file()


def test_values_match_the_family_functions(full_stack, scene):
    """Spot-check the stack against the formulas on the 10 m bands (no resampling involved)."""
    data, desc, _ = _read(full_stack.path)
    layer = {n: data[i] for i, n in enumerate(desc)}
    with rasterio.open(scene.s2["B3"]) as s3, rasterio.open(scene.s2["B8"]) as s8:
        b3 = (s3.read(1).astype(float) - 1000) / 10000
        b8 = (s8.read(1).astype(float) - 1000) / 10000
    ok = np.ones_like(b3, bool)
    ok[:2, :3] = False
    np.testing.assert_allclose(layer["B3"][ok], b3[ok], atol=1e-6)
    assert np.isnan(layer["B3"][:2, :3]).all() and np.isnan(layer["ndwi"][:2, :3]).all()
    np.testing.assert_allclose(layer["ndwi"][ok], ((b3 - b8) / (b3 + b8))[ok], rtol=1e-5, atol=1e-6)
    # PCA layers are the saved transform applied to the s2 layers
    pca = PCATransform.load(full_stack.pca_path)
    s2 = np.stack([layer[b] for b in S2_BANDS])
    np.testing.assert_allclose(np.stack([layer["pc1"], layer["pc2"]]), pca.transform(s2)[:2], rtol=1e-5, atol=1e-5)
    # phase layers are a unit vector; the phase wraps in this scene, yet the interpolated vector stays unit
    r = np.hypot(layer["phase_sin"], layer["phase_cos"])
    np.testing.assert_allclose(r[np.isfinite(r)], 1.0, atol=1e-5)
    # terrain: edge rows are NaN (3x3 window leaves the raster), the inside is finite
    assert np.isnan(layer["slope"][0]).all() and np.isfinite(layer["slope"][2:-2, 2:-2]).all()


def test_blockwise_equals_single_block(full_stack, scene, tmp_path):
    """The halo logic: 16-px blocks (halo 2 for the 5-px GLCM window) give the same stack as one block."""
    out = tmp_path / "blocks.tif"
    info = build_stack(scene, out, texture_params=TEX, block=16, progress=False)
    assert info.halo == 2
    a, _, _ = _read(full_stack.path)
    b, _, _ = _read(out)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, equal_nan=True)


def test_resume_skips_up_to_date_stack(tmp_path, caplog):
    """The stack goes through the one reuse rule: same settings and input contents -> kept, else rebuilt."""
    import logging
    import os

    scene = make_scene(tmp_path / "poiqu")  # its own scene: an input is rewritten below
    out = tmp_path / "s.tif"
    first = build_stack(scene, out, groups=("s2", "indices"), block=32, progress=False)
    assert (tmp_path / "s.tif.reuse.json").is_file()
    mtime = out.stat().st_mtime_ns
    with rasterio.open(out) as src:
        b2_before = src.read(1)
    again = build_stack(scene, out, groups=("s2", "indices"), block=32, progress=False)
    assert not first.skipped and again.skipped and out.stat().st_mtime_ns == mtime
    # an input touched, its content unchanged: still up to date
    b2 = scene.s2["B2"]
    st = b2.stat()
    os.utime(b2, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert build_stack(scene, out, groups=("s2", "indices"), block=32, progress=False).skipped
    # an input rewritten with other values, its modification time put back: rebuilt with the new values
    with rasterio.open(b2) as src:
        dn, grid = src.read(1), Grid(src.crs, src.transform, src.width, src.height)
    mtime_b2 = b2.stat().st_mtime_ns
    write_raster(b2, np.where(dn > 0, dn + 100, 0).astype(np.uint16), grid, nodata=0)
    os.utime(b2, ns=(st.st_atime_ns, mtime_b2))
    with caplog.at_level(logging.INFO, logger="cryonet.features.stack"):
        rebuilt = build_stack(scene, out, groups=("s2", "indices"), block=32, progress=False)
    assert not rebuilt.skipped and out.stat().st_mtime_ns != mtime
    assert any("B2 (content of" in r.getMessage() for r in caplog.records)
    with rasterio.open(out) as src:
        np.testing.assert_allclose(src.read(1), b2_before + 0.01, atol=1e-5)  # 100 DN more: +0.01 reflectance
    other = build_stack(scene, out, groups=("s2",), block=32, progress=False)  # other settings: rebuilt
    assert not other.skipped and list(StackFile(out).groups) == ["s2"]


def test_transfer_reuses_source_pca_and_texture_range(full_stack, tmp_path):
    target = make_scene(tmp_path / "montblanc", seed=5)
    out = tmp_path / "target.tif"
    info = build_stack(target, out, like=full_stack.path, texture_params=TEX, progress=False)
    src_pca = PCATransform.load(full_stack.pca_path)
    assert PCATransform.load(info.pca_path) == src_pca  # the source transform, not a refit
    assert info.texture_range == full_stack.texture_range
    refit = build_stack(target, tmp_path / "refit.tif", groups=("s2", "pca"), progress=False)
    assert PCATransform.load(refit.pca_path) != src_pca


def test_select_drop_permute_by_group(full_stack):
    stack = StackFile(full_stack.path)
    table = stack.table
    data, _, _ = _read(full_stack.path)
    idx = stack.select(groups=["terrain"]).index0
    assert list(table["layer"].iloc[idx]) == [
        n for n, g in zip(table["layer"], table["group"], strict=False) if g == "terrain"
    ]
    keep = stack.select(drop=["texture", "s2"]).index0
    assert not set(table["group"].iloc[keep]) & {"texture", "s2"} and len(keep) == len(table) - sum(
        table["group"].isin(["texture", "s2"])
    )
    with pytest.raises(ValueError, match="not in this stack"):
        stack.select(groups=["optics"])

    rest = stack.without(["texture"])
    reduced, sub = data[rest.index0], rest.reduced_table
    assert reduced.shape[0] == len(sub) and "texture" not in set(sub["group"])
    assert list(sub["layer"]) == [n for n, g in zip(table["layer"], table["group"], strict=True) if g != "texture"]
    assert list(sub["band"]) == list(range(1, len(sub) + 1))

    perm = permute_group(data, table, "indices", rng=0)
    g = stack.select(groups=["indices"]).index0
    others = np.setdiff1d(np.arange(len(table)), g)
    np.testing.assert_array_equal(perm[others], data[others])  # other groups untouched
    assert not np.array_equal(perm[g], data[g], equal_nan=True)  # the group moved
    # jointly: every permuted pixel's index vector is an original pixel's vector, at the same shuffled position
    flat_o = data[g].reshape(len(g), -1)
    flat_p = perm[g].reshape(len(g), -1)
    pos = np.where(np.isfinite(flat_o).all(0))[0][:50]
    for p in pos:
        src = np.where((flat_o == flat_p[:, [p]]).all(0))[0]
        assert src.size >= 1
    # batch of tiles
    tiles = np.stack([data[:, :16, :16], data[:, 16:32, 16:32]])
    pt = permute_group(tiles, table, "terrain", rng=1)
    np.testing.assert_array_equal(np.delete(pt, idx, axis=1), np.delete(tiles, idx, axis=1))
    np.testing.assert_array_equal(np.sort(pt[:, idx[0]].ravel()), np.sort(tiles[:, idx[0]].ravel()))


def test_class_table_and_separability(full_stack, tmp_path):
    data, desc, src = _read(full_stack.path)
    layer = {n: data[i] for i, n in enumerate(desc)}
    # labels: debris where the terrain is steep-ish, clean ice where bright, the rest background
    lab = np.zeros(data.shape[1:], np.uint8)
    lab[layer["B3"] > np.nanpercentile(layer["B3"], 80)] = 1
    lab[(layer["elevation"] > np.nanpercentile(layer["elevation"], 70)) & (lab == 0)] = 2
    lab[:2, :3] = 255
    grid = Grid.from_file(full_stack.path)
    lpath = write_raster(tmp_path / "labels.tif", lab, grid, nodata=255)
    t = class_table(full_stack.path, lpath, sample=10_000, seed=0)
    assert {"debris_mean", "debris_sd", "background_n", "rock_mean"} <= set(t.columns)
    # independent reference: the mean of the layer over all debris pixels (sample covers every pixel here)
    deb = lab == 2
    assert t.loc["elevation", "debris_mean"] == pytest.approx(np.nanmean(layer["elevation"][deb]), rel=1e-4)
    assert t.loc["elevation", "debris_n"] == np.isfinite(layer["elevation"][deb]).sum()
    sep = separability(t, a="debris", b="background")
    e_d = layer["elevation"][deb]
    e_b = layer["elevation"][(lab == 0)]
    e_d, e_b = e_d[np.isfinite(e_d)], e_b[np.isfinite(e_b)]
    pooled = np.sqrt(((e_d.size - 1) * e_d.var(ddof=1) + (e_b.size - 1) * e_b.var(ddof=1)) / (e_d.size + e_b.size - 2))
    assert sep.loc["elevation", "d"] == pytest.approx((e_d.mean() - e_b.mean()) / pooled, rel=1e-3)
    by_group = separability_by_group(sep)
    assert list(by_group.index) == list(LAYER_GROUPS)
    assert by_group.loc["terrain", "max_abs_d"] > 1.0  # debris was defined by elevation
    assert by_group.loc["terrain", "best_layer"] in set(t.index[t["group"] == "terrain"])
    with pytest.raises(ValueError, match="class"):
        separability(t, a="moraine")


def test_bad_inputs(scene, tmp_path):
    with pytest.raises(ValueError, match="layer group"):
        build_stack(scene, tmp_path / "x.tif", groups=("s2", "optics"), progress=False)
    with pytest.raises(ValueError, match="texture_base"):
        build_stack(scene, tmp_path / "x.tif", texture_base="B4", progress=False)
    with pytest.raises(ValueError, match="texture parameter"):
        build_stack(scene, tmp_path / "x.tif", texture_params={"size": 3}, progress=False)
    with pytest.raises(Exception, match="scene.json"):
        build_stack(tmp_path / "nowhere", tmp_path / "x.tif", progress=False)
    with pytest.raises(StackFileError, match=r"none\.layers\.csv: layer table not found.*`cryonet features`"):
        _ = StackFile(tmp_path / "none.tif").table


@pytest.mark.slow
def test_dask_local_cluster_equals_numpy(full_stack, scene, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "dask.tif"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster):
            info = build_stack_dask(scene, out, texture_params=TEX, chunk=20, progress=False)
    a, da_, _ = _read(full_stack.path)
    b, db, _ = _read(out)
    assert db == da_ and info.halo == 2
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert json.loads(pd.read_csv(info.layers_csv).to_json())  # sidecar written by the dask build too


def test_inputs_agree_with_raster_align_scene(full_stack, scene, tmp_path):
    """Cross-check the on-the-fly reads against cryonet.prepare.align_scene (written files, other code path)."""
    from cryonet.prepare import align_scene
    from cryonet.raster import read_raster

    aligned = align_scene(scene, tmp_path / "aligned", progress=False)
    data, desc, _ = _read(full_stack.path)
    layer = {n: data[i] for i, n in enumerate(desc)}
    for band in ("B11", "B5", "B2"):
        np.testing.assert_allclose(layer[band], read_raster(aligned[band])[0], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(layer["coherence"], read_raster(aligned["coherence"])[0], atol=1e-6, equal_nan=True)
    phase = read_raster(aligned["phase"])[0]
    ok = np.isfinite(phase)
    diff = np.angle(np.exp(1j * (np.arctan2(layer["phase_sin"], layer["phase_cos"]) - phase)))
    assert np.abs(diff[ok]).max() < 1e-5
    dem = read_raster(aligned["dem"])[0]
    assert np.nanmax(np.abs(layer["elevation"] - dem)) < 1.0  # GDAL's per-request kernel scale, see stack._warped


def test_cli_features(scene, tmp_path, capsys):
    from cryonet.cli import main

    out = tmp_path / "cli.tif"
    rc = main(
        [
            "-q",
            "features",
            "--scene",
            str(scene.root),
            "--out",
            str(out),
            "--groups",
            "s2",
            "indices",
            "pca",
            "--block",
            "32",
        ]
    )
    assert rc == 0 and "feature stack" in capsys.readouterr().out
    assert list(StackFile(out).groups) == ["s2", "indices", "pca"]
    assert (tmp_path / "cli.pca.json").is_file()
    rc = main(["features", "--scene", str(tmp_path / "missing"), "--out", str(out)])
    assert rc == 1
    assert "scene.json" in capsys.readouterr().err


@pytest.mark.slow
def test_poiqu_twin_debris_overlaps_rock_in_s2_but_separates_elsewhere(tmp_path):
    """The issue's "done when": on the poiqu twin scene debris and rock-like background overlap in the s2 group
    (|d| < 1 for every band) and separate (|d| > 1) in at least one terrain, InSAR or texture layer."""
    from cryonet.synthetic import generate_scene

    twin = generate_scene("poiqu", tmp_path / "poiqu", size=400, seed=0, progress=False)
    info = build_stack(twin, tmp_path / "poiqu.tif", progress=False)
    table = class_table(info.path, twin.labels, sample=100_000, seed=0)
    assert table.loc["B2", "debris_n"] > 500 and table.loc["B2", "rock_n"] > 500
    by_group = separability_by_group(separability(table, a="debris", b="rock"))
    assert by_group.loc["s2", "max_abs_d"] < 1.0
    assert max(by_group.loc[g, "max_abs_d"] for g in ("terrain", "insar", "texture")) > 1.0
