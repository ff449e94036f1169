"""Reading, checking and aligning single rasters (cryonet.raster), against independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.warp import reproject, transform
from rasterio.windows import Window

from cryonet import raster
from cryonet.raster import Grid, RasterError

UTM45 = "EPSG:32645"
UTM44 = "EPSG:32644"


def _grid(epsg: str, left: float, top: float, res: float, width: int, height: int) -> Grid:
    return Grid(
        crs=rasterio.crs.CRS.from_string(epsg), transform=from_origin(left, top, res, res), width=width, height=height
    )


def _reference(src_path: Path, grid: Grid, resampling: Resampling, src_nodata=None) -> np.ndarray:
    """Independent whole-array rasterio.warp.reproject onto ``grid``, NaN outside."""
    with rasterio.open(src_path) as src:
        data = src.read(1).astype("float64")
        nod = src.nodata if src_nodata is None else src_nodata
        out = np.full(grid.shape, np.nan, "float64")
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=nod,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=resampling,
        )
    return out


def _assert_matches(got: np.ndarray, ref: np.ndarray, atol: float = 0.05) -> None:
    """Same nodata pixels and values within ``atol``.

    ``rasterio.warp.reproject`` approximates the coordinate transformation to 0.125 pixel (GDAL's default), the
    library to 1e-6 pixel (cryonet.raster.WARP_TOLERANCE), so values on these ~3-per-pixel ramps may differ by a
    few hundredths.
    """
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], rtol=0, atol=atol)


def _smooth(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    return (1000 + 3 * x + 2 * y + 20 * np.sin(x / 4.0) + rng.normal(0, 1, (rows, cols))).astype("float32")


# ------------------------------------------------------------------------------------------------------- VRT --
def test_band_subset_vrt_reads_as_the_source_bands(make_raster, tmp_path):
    """GDAL, reading the VRT, must give exactly the chosen source bands in the chosen order, on the same grid."""
    data = np.stack([_smooth(23, 31, seed=i) for i in range(4)])
    data[2, 3:5, 4:9] = np.nan
    src = make_raster("stack.tif", data, nodata=float("nan"))
    with rasterio.open(src, "r+") as ds:
        for i, name in enumerate(["a", "b", "c", "d"], start=1):
            ds.set_band_description(i, name)
        ds.update_tags(region="x")
    out = raster.write_band_subset_vrt(src, tmp_path / "sub" / "view.vrt", [3, 1])
    with rasterio.open(src) as a, rasterio.open(out) as v:
        assert v.driver == "VRT" and v.count == 2 and v.descriptions == ("c", "a")
        assert (v.crs, v.transform, v.shape) == (a.crs, a.transform, a.shape) and np.isnan(v.nodata)
        np.testing.assert_array_equal(v.read(), a.read([3, 1]))
        win = Window(5, 2, 11, 7)
        np.testing.assert_array_equal(v.read(window=win), a.read([3, 1], window=win))
        assert v.tags()["region"] == "x"
    # the source is referenced relative to the VRT: the two move together
    moved = tmp_path / "moved"
    moved.mkdir()
    src.rename(moved / src.name)
    (tmp_path / "sub").rename(moved / "sub")
    with rasterio.open(moved / "sub" / "view.vrt") as v:
        np.testing.assert_array_equal(v.read(2), data[0])
    # integer bands and names given
    ints = make_raster("ints.tif", (np.arange(12, dtype="uint16").reshape(3, 4)), nodata=7)
    out2 = raster.write_band_subset_vrt(ints, tmp_path / "ints.vrt", [1], descriptions=["count"], tags={})
    with rasterio.open(out2) as v:
        assert (v.dtypes[0], v.nodata, v.descriptions) == ("uint16", 7.0, ("count",))
        np.testing.assert_array_equal(v.read(1), np.arange(12).reshape(3, 4))
    with pytest.raises(RasterError, match="within 1..4"):
        raster.write_band_subset_vrt(moved / src.name, tmp_path / "bad.vrt", [0, 5])
    assert not (tmp_path / "bad.vrt").exists()


# ----------------------------------------------------------------------------------------------------- reading --
def test_read_raster_int_nodata_to_nan_and_bands_window(make_raster):
    data = np.arange(2 * 16 * 16, dtype="int16").reshape(2, 16, 16)
    data[0, 3, 4] = -9999
    data[1, 5, 6] = -9999
    path = make_raster("a.tif", data, nodata=-9999)
    arr = raster.read_raster(path)
    assert arr.dtype == np.float32 and arr.shape == (2, 16, 16)
    assert np.isnan(arr[0, 3, 4]) and np.isnan(arr[1, 5, 6]) and np.isnan(arr).sum() == 2
    assert arr[0, 0, 1] == 1.0 and arr[1, 15, 15] == data[1, 15, 15]
    raw = raster.read_raster(path, masked_nan=False)
    assert raw[0, 3, 4] == -9999
    part = raster.read_raster(path, bands=2, window=Window(4, 2, 5, 3))
    np.testing.assert_array_equal(part[0], data[1, 2:5, 4:9].astype("float32"))
    with pytest.raises(RasterError, match="band"):
        raster.read_raster(path, bands=3)


def test_read_mask_combines_nodata_and_internal_mask(tmp_path):
    data = np.full((1, 16, 16), 7, "uint8")
    data[0, 0, 0] = 0  # nodata
    path = tmp_path / "m.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=16,
            height=16,
            count=1,
            dtype="uint8",
            crs=UTM45,
            transform=from_origin(5e5, 3.1e6, 10, 10),
            nodata=0,
        ) as dst:
            dst.write(data)
            mask = np.full((16, 16), 255, "uint8")
            mask[10:, :] = 0  # internally masked rows
            dst.write_mask(mask)
    valid = raster.read_mask(path)
    expected = np.ones((16, 16), bool)
    expected[0, 0] = False
    expected[10:, :] = False
    np.testing.assert_array_equal(valid, expected)
    arr = raster.read_raster(path)[0]
    np.testing.assert_array_equal(np.isnan(arr), ~expected)


def test_read_mask_float_nan(make_raster):
    data = np.ones((8, 8), "float32")
    data[2, 2] = np.nan
    path = make_raster("f.tif", data)
    valid = raster.read_mask(path)
    assert valid.sum() == 63 and not valid[2, 2]


def test_iter_windows_partition_and_halo():
    shape = (37, 50)
    cover = np.zeros(shape, int)
    cores = list(raster.iter_windows(shape, 16))
    for w in cores:
        cover[w.toslices()] += 1
    assert (cover == 1).all() and len(cores) == 3 * 4
    outers = list(raster.iter_windows(shape, 16, overlap=3))
    assert len(outers) == len(cores)
    field = np.arange(37 * 50).reshape(shape)
    for core, outer in zip(cores, outers, strict=True):
        assert outer.row_off >= 0 and outer.col_off >= 0
        assert outer.row_off + outer.height <= 37 and outer.col_off + outer.width <= 50
        block = field[outer.toslices()]
        np.testing.assert_array_equal(block[raster.halo_slices(core, outer)], field[core.toslices()])
        if core.row_off > 0:
            assert core.row_off - outer.row_off == 3
    unclipped = list(
        raster.iter_windows(
            Grid(rasterio.crs.CRS.from_string(UTM45), from_origin(0, 0, 1, 1), 50, 37), 16, overlap=3, clip=False
        )
    )
    assert unclipped[0].row_off == -3 and unclipped[0].col_off == -3 and unclipped[0].height == 22


def test_read_window_boundless(make_raster):
    data = np.arange(16 * 16, dtype="float32").reshape(16, 16)
    data[1, 1] = -1
    path = make_raster("b.tif", data, nodata=-1)
    arr = raster.read_window(path, Window(-2, -3, 8, 8))
    assert arr.shape == (1, 8, 8)
    assert np.isnan(arr[0, :3, :]).all() and np.isnan(arr[0, :, :2]).all()
    np.testing.assert_array_equal(arr[0, 3:, 2:], np.where(data[:5, :6] == -1, np.nan, data[:5, :6]))
    with rasterio.open(path) as src:
        far = raster.read_window(src, ((20, 24), (20, 24)))
    assert np.isnan(far).all()


# ------------------------------------------------------------------------------------------------- bad inputs --
def test_check_raster_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(RasterError, match="not found") as exc:
        raster.check_raster(path)
    assert str(path) in str(exc.value)


def test_check_raster_not_a_raster(tmp_path):
    path = tmp_path / "text.tif"
    path.write_text("this is not a GeoTIFF\n" * 10)
    with pytest.raises(RasterError, match="not a readable raster") as exc:
        raster.check_raster(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("tiled", [False, True])
def test_check_raster_truncated(tmp_path, tiled):
    path = tmp_path / "full.tif"
    rng = np.random.default_rng(1)
    kw = {"tiled": True, "blockxsize": 16, "blockysize": 16} if tiled else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=2,
        dtype="float32",
        crs=UTM45,
        transform=from_origin(5e5, 3.1e6, 10, 10),
        compress="deflate",
        **kw,
    ) as dst:
        dst.write(rng.random((2, 64, 64)).astype("float32"))
    raster.check_raster(path)  # the complete file passes
    cut = tmp_path / "cut.tif"
    blob = path.read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    with rasterio.open(cut) as src:  # the premise: the header alone still opens
        assert src.count == 2
    with pytest.raises(RasterError, match="truncated or corrupt") as exc:
        raster.check_raster(cut)
    assert str(cut) in str(exc.value)
    with pytest.raises(RasterError, match="truncated or corrupt"):
        raster.read_raster(cut)


def test_check_raster_no_crs(make_raster):
    path = make_raster("nocrs.tif", np.zeros((8, 8), "float32"), epsg=None)
    with pytest.raises(RasterError, match="no coordinate reference system") as exc:
        raster.check_raster(path)
    assert str(path) in str(exc.value)


def test_check_raster_wrong_band_count_and_dtype(make_raster):
    path = make_raster("three.tif", np.zeros((3, 8, 8), "uint8"))
    with pytest.raises(RasterError, match="expected 1 band") as exc:
        raster.check_raster(path, count=1)
    assert str(path) in str(exc.value) and "found 3" in str(exc.value)
    with pytest.raises(RasterError, match="expected float data, found uint8") as exc:
        raster.check_raster(path, dtype_kind="f")
    assert str(path) in str(exc.value)
    grid = raster.check_raster(path, count=3, dtype_kind="iu")
    assert grid.shape == (8, 8) and grid.crs.to_epsg() == 32645


def test_align_grids_do_not_overlap(make_raster, tmp_path):
    path = make_raster("far.tif", np.ones((16, 16), "float32"), origin=(300_000.0, 3_000_000.0))
    grid = _grid(UTM45, 600_000.0, 3_200_000.0, 10.0, 32, 32)
    with pytest.raises(RasterError, match="does not overlap") as exc:
        raster.align_to_grid(path, grid, tmp_path / "out.tif")
    msg = str(exc.value)
    assert str(path) in msg and "300000.0, 2999840.0, 300160.0, 3000000.0" in msg
    assert "600000.0, 3199680.0, 600320.0, 3200000.0" in msg and "EPSG:32645" in msg
    assert not (tmp_path / "out.tif").exists()


def test_align_missing_input_names_file(tmp_path):
    grid = _grid(UTM45, 5e5, 3.1e6, 10.0, 8, 8)
    with pytest.raises(RasterError) as exc:
        raster.align_to_grid(tmp_path / "missing.tif", grid, tmp_path / "o.tif")
    assert "missing.tif" in str(exc.value)


# ------------------------------------------------------------------------------------------------- alignment --
def _cross_zone_case(make_raster, nodata_hole: bool = False):
    """A 20 m raster in UTM 44N and a 10 m grid in UTM 45N that covers it partly (with margin outside it)."""
    data = _smooth(40, 40)
    if nodata_hole:
        data[18:22, 18:22] = -9999
    # Near the zone boundary (84E) so that both zones are sensible.
    x44, y44 = 880_000.0, 3_150_000.0
    nodata = -9999 if nodata_hole else None
    path = make_raster("src20.tif", data, epsg=32644, res=20.0, origin=(x44, y44), nodata=nodata)
    (x45,), (y45,) = transform(UTM44, UTM45, [x44 + 400], [y44 - 400])
    grid = _grid(UTM45, round(x45) - 600.0, round(y45) + 600.0, 10.0, 120, 120)  # 200 m beyond every edge
    return path, grid, data


@pytest.mark.parametrize("method", ["bilinear", "cubic"])
def test_align_cross_crs_matches_reproject(make_raster, tmp_path, method):
    src, grid, _ = _cross_zone_case(make_raster)
    out = raster.align_to_grid(src, grid, tmp_path / "al.tif", resampling=method)
    assert raster.check_raster(out, count=1, dtype_kind="f") == grid
    got = raster.read_raster(out)[0]
    ref = _reference(src, grid, Resampling[method])
    _assert_matches(got, ref)
    # nodata outside the footprint: NaN, never zeros; inside: data.
    assert np.isnan(got).sum() > 500 and np.nanmin(got) > 900
    assert np.isfinite(got[30:90, 30:90]).all()
    for corner in (got[:5, :5], got[:5, -5:], got[-5:, :5], got[-5:, -5:]):
        assert np.isnan(corner).all()
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("src20",) and np.isnan(ds.nodata)


def test_align_source_nodata_becomes_nan(make_raster, tmp_path):
    src, grid, _ = _cross_zone_case(make_raster, nodata_hole=True)
    got = raster.read_raster(raster.align_to_grid(src, grid, tmp_path / "al.tif"))[0]
    ref = _reference(src, grid, Resampling.bilinear)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.nanmin(got) > 900  # no -9999 blended into neighbours
    # the hole (a 80 m square in the source) is NaN in the output
    (hx,), (hy,) = transform(UTM44, UTM45, [880_000.0 + 20 * 20], [3_150_000.0 - 20 * 20])
    row, col = rasterio.transform.rowcol(grid.transform, hx, hy)
    assert np.isnan(got[row - 2 : row + 2, col - 2 : col + 2]).all()


def test_windowed_align_equals_whole_reproject(make_raster, tmp_path, monkeypatch):
    src, grid, _ = _cross_zone_case(make_raster)
    seen = []
    real = raster.iter_windows

    def spy(*args, **kwargs):
        for w in real(*args, **kwargs):
            seen.append(w)
            yield w

    monkeypatch.setattr(raster, "iter_windows", spy)
    out = raster.align_to_grid(src, grid, tmp_path / "win.tif", window_size=16)
    assert len(seen) == 64 and all(w.width <= 16 and w.height <= 16 for w in seen)
    got = raster.read_raster(out)[0]
    whole = _reference(src, grid, Resampling.bilinear)
    _assert_matches(got, whole)
    monkeypatch.setattr(raster, "iter_windows", real)
    big = raster.read_raster(raster.align_to_grid(src, grid, tmp_path / "big.tif", window_size=4096))[0]
    np.testing.assert_array_equal(got, big)


def test_tiled_output_windows_round_to_tiles(tmp_path):
    # A grid larger than one 256-px tile: the output is tiled and windows are whole tiles.
    src = tmp_path / "big_src.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=200,
        height=160,
        count=1,
        dtype="float32",
        crs=UTM44,
        transform=from_origin(880_000.0, 3_150_000.0, 30.0, 30.0),
    ) as dst:
        dst.write(_smooth(160, 200, seed=5), 1)
    (x45,), (y45,) = transform(UTM44, UTM45, [880_000.0], [3_150_000.0])
    grid = _grid(UTM45, round(x45), round(y45), 10.0, 600, 300)
    out = raster.align_to_grid(src, grid, tmp_path / "tiled.tif", window_size=100)
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
    got = raster.read_raster(out)[0]
    _assert_matches(got, _reference(src, grid, Resampling.bilinear))
    # The windows do not change the values: one 256-px tile at a time equals one 4096-px window.
    whole = raster.read_raster(raster.align_to_grid(src, grid, tmp_path / "whole.tif", window_size=4096))[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(whole))
    np.testing.assert_allclose(got[np.isfinite(got)], whole[np.isfinite(whole)], rtol=0, atol=1e-3)


def test_failed_alignment_leaves_no_file(make_raster, tmp_path):
    src, grid, _ = _cross_zone_case(make_raster)
    calls = []

    def explode(data):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return data

    dst = tmp_path / "out" / "x.tif"
    with pytest.raises(RuntimeError, match="disk full"):
        raster._align(src, grid, dst, window_size=16, convert=explode)
    assert list((tmp_path / "out").iterdir()) == []  # neither the output nor a temporary file


def test_warped_reads_any_window_on_grid(make_raster, tmp_path):
    src, grid, _ = _cross_zone_case(make_raster)
    full = raster.read_raster(raster.align_to_grid(src, grid, tmp_path / "al.tif"))[0]
    with raster.warped(src, grid) as vrt:
        assert (vrt.height, vrt.width) == grid.shape and vrt.crs == grid.crs
        part = raster.read_window(vrt, Window(30, 20, 17, 9))[0]
    np.testing.assert_array_equal(part, full[20:29, 30:47])


@pytest.mark.parametrize("method", ["nearest", "mode"])
def test_align_categorical_keeps_value_set(make_raster, tmp_path, method):
    rng = np.random.default_rng(3)
    classes = rng.choice(np.array([1, 2, 3, 7], "uint8"), size=(40, 40))
    path = make_raster("cls.tif", classes, epsg=32644, res=20.0, origin=(880_000.0, 3_150_000.0))
    _, grid, _ = _cross_zone_case(make_raster)
    out = raster.align_to_grid(path, grid, tmp_path / "cls_al.tif", categorical=True, resampling=method)
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        arr = ds.read(1)
    assert set(np.unique(arr)) <= {1, 2, 3, 7, 255}
    assert (arr == 255).sum() > 500 and (arr == 0).sum() == 0  # outside the footprint: nodata, not class 0
    if method == "nearest":
        ref = _reference(path, grid, Resampling.nearest)
        inside = arr != 255
        np.testing.assert_array_equal(arr[inside], ref[inside].astype("uint8"))
    with pytest.raises(ValueError, match="class ids"):
        raster.align_to_grid(path, grid, tmp_path / "x.tif", categorical=True, resampling="bilinear")


def test_phase_resampling_across_wrap(make_raster, tmp_path):
    # A phase ramp that wraps: true phase = wrap(pi + 0.05 * (x - 20)) along columns, on a 20 m grid.
    cols = np.arange(40)
    true_src = np.angle(np.exp(1j * (np.pi + 0.05 * (cols - 20))))
    phase = np.tile(true_src, (40, 1)).astype("float32")
    path = make_raster("phase.tif", phase, epsg=32645, res=20.0, origin=(500_000.0, 3_130_000.0))
    grid = _grid(UTM45, 500_100.0, 3_129_900.0, 10.0, 60, 60)  # inside the source, 10 m
    out = raster.align_phase_to_grid(path, grid, tmp_path / "phase_al.tif")
    got = raster.read_raster(out)[0]
    assert np.isfinite(got).all()
    # True phase at each output pixel centre (source pixel centres sit at 20*c + 10 m from the source origin).
    x = 100.0 + 10.0 * np.arange(60) + 5.0
    c = (x - 10.0) / 20.0
    expected = np.angle(np.exp(1j * (np.pi + 0.05 * (c - 20))))
    diff = np.angle(np.exp(1j * (got - expected[None, :])))
    assert np.abs(diff).max() < 1e-3
    assert np.abs(got).min() > 2.3  # true |phase| >= pi - 0.76 here: nothing near 0
    # The naive method (bilinear on the wrapped numbers) does produce near-zero values here: the test can fail.
    naive = _reference(path, grid, Resampling.bilinear)
    assert np.nanmin(np.abs(naive)) < 2.0
    assert np.nanmax(np.abs(np.angle(np.exp(1j * (naive - expected[None, :]))))) > 1.5
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("phase",) and ds.tags()["units"] == "radians"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporaries removed


# --------------------------------------------------------------------------------------------------- realdata --
def test_realdata_custom_tm_dem_to_utm(realdata, tmp_path):
    src = realdata / "oggm-sample-data/realisation/RGI50-11.01270/dem.tif"
    with rasterio.open(src) as ds:
        assert ds.crs.to_epsg() is None  # the premise: a custom Transverse Mercator
        src_data = ds.read(1)
        src_bounds, src_crs = ds.bounds, ds.crs
    # A 25 m UTM 32N grid extending 1 km beyond the footprint on every side.
    left, bottom, right, top = rasterio.warp.transform_bounds(src_crs, "EPSG:32632", *src_bounds)
    left, top = np.floor(left / 25) * 25 - 1000, np.ceil(top / 25) * 25 + 1000
    width, height = int((right - left + 1000) // 25) + 1, int((top - bottom + 1000) // 25) + 1
    grid = _grid("EPSG:32632", left, top, 25.0, width, height)
    got = raster.read_raster(raster.align_to_grid(src, grid, tmp_path / "dem_utm.tif"))[0]
    assert abs(np.nanmin(got) - src_data.min()) < 10 and abs(np.nanmax(got) - src_data.max()) < 10
    # nodata: exactly the pixels whose centre falls outside the source footprint (1-pixel tolerance at the edge)
    rows, cols = np.mgrid[0:height, 0:width]
    xs, ys = rasterio.transform.xy(grid.transform, rows.ravel(), cols.ravel())
    sx, sy = transform("EPSG:32632", src_crs, xs, ys)
    sx, sy = np.reshape(sx, (height, width)), np.reshape(sy, (height, width))
    res = 46.0 * 1.5
    inside = (
        (sx > src_bounds.left + res)
        & (sx < src_bounds.right - res)
        & (sy > src_bounds.bottom + res)
        & (sy < src_bounds.top - res)
    )
    outside = (sx < src_bounds.left) | (sx > src_bounds.right) | (sy < src_bounds.bottom) | (sy > src_bounds.top)
    assert np.isfinite(got[inside]).all() and np.isnan(got[outside]).all()
    assert outside.sum() > 1000


def test_atomic_outputs_get_umask_mode(tmp_path):
    """Files written atomically are readable like any other new file (mkstemp alone would give 0600)."""
    import os

    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from cryonet.raster import Grid, write_raster
    from cryonet.scene import Scene

    old = os.umask(0o022)
    try:
        grid = Grid(CRS.from_epsg(32645), from_origin(0, 100, 10, 10), 4, 4)
        p = write_raster(tmp_path / "a.tif", np.zeros((4, 4), "float32"), grid)
        assert (p.stat().st_mode & 0o777) == 0o644
        scene = Scene(tmp_path, "poiqu", {}, p, p, p, None, 0.0, 0.0)
        assert (scene.save().stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
