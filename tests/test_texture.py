"""GLCM texture features: window-by-window agreement with scikit-image, quantisation, masks, dask, files, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from skimage.feature import graycomatrix, graycoprops

from cryonet.features.texture import (
    ALL_FEATURES,
    glcm_features,
    glcm_features_dask,
    halo,
    pair_offsets,
    quantization_limits,
    quantize,
    texture_file,
)


def skimage_reference(q, window, levels, distances, angles, features=ALL_FEATURES):
    """Independent reference: scikit-image's GLCM of every full window patch, averaged over (distance, angle)."""
    r = window // 2
    out = np.full((len(features), *q.shape), np.nan)
    rad = np.deg2rad(angles)
    for y in range(r, q.shape[0] - r):
        for x in range(r, q.shape[1] - r):
            P = graycomatrix(
                q[y - r : y + r + 1, x - r : x + r + 1], distances, rad, levels, symmetric=True, normed=True
            )
            for f, name in enumerate(features):
                out[f, y, x] = graycoprops(P, name).mean()
    return out


@pytest.mark.parametrize(
    ("window", "levels", "angles", "distances"),
    [
        (3, 8, (0,), (1,)),
        (5, 16, (0, 90), (1,)),
        (7, 32, (0, 45, 90, 135), (1,)),
        (3, 32, (0, 45, 90, 135), (2,)),
        (5, 8, (0, 45, 90, 135), (1, 2)),
        (7, 16, (0, 90), (2,)),
        (5, 8, (30, 60, 120, 180, 270), (1, 3)),  # offsets whose rounding is a near half-way case
        (3, 8, (0, 90), (3,)),  # no pair fits inside the window: skimage's empty GLCM
        (9, 8, (0, 45, 90, 135), (1, 4)),
    ],
)
def test_equals_skimage_window_by_window(window, levels, angles, distances):
    rng = np.random.default_rng(window * 100 + levels)
    q = rng.integers(0, levels, size=(24, 24)).astype(np.uint8)
    # Blocks of equal values, so that windows have repeated pairs and large counts, not only singletons.
    q[4:12, 6:14] = 3
    ours = glcm_features(q, window=window, levels=levels, distances=distances, angles=angles)
    ref = skimage_reference(q, window, levels, distances, angles)
    assert ours.dtype == np.float32 and ours.shape == (len(ALL_FEATURES), 24, 24)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    for f, name in enumerate(ALL_FEATURES):
        np.testing.assert_allclose(ours[f], ref[f], rtol=1e-5, atol=1e-6, err_msg=name)


def test_feature_subset_and_order():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 16, size=(20, 20)).astype(np.uint8)
    full = glcm_features(q, levels=16)
    sub = glcm_features(q, levels=16, features=("entropy", "contrast", "mean"))
    idx = [ALL_FEATURES.index(n) for n in ("entropy", "contrast", "mean")]
    np.testing.assert_array_equal(sub, full[idx])


def test_pair_offsets_follow_skimage_convention():
    assert pair_offsets((1,), (0, 45, 90, 135)) == [(0, 1), (1, 1), (1, 0), (1, -1)]
    assert pair_offsets((2,), (0, 90)) == [(0, 2), (2, 0)]
    assert pair_offsets((1, 3), (30,)) == [(1, 1), (1, 3)]  # skimage's round(): sin(30°) = 0.49999999999999994 -> 1
    assert halo(7, (1,)) == 3 and halo(5, (4,)) == 2
    with pytest.raises(ValueError, match="odd"):
        halo(6)


def test_quantize_float_formula_and_percentiles():
    rng = np.random.default_rng(2)
    img = rng.normal(100.0, 20.0, size=(30, 40))
    img[3, 5] = np.nan
    levels = 16
    valid = np.isfinite(img)
    lo, hi = np.percentile(img[valid], [2, 98])
    assert quantization_limits(img, levels) == pytest.approx((lo, hi))
    q = quantize(img, levels)
    assert q.dtype == np.uint8
    # Independent formulation: bin edges vmin + k (vmax - vmin) / levels, k = 1..levels-1 (np.digitize).
    edges = lo + (hi - lo) * np.arange(1, levels) / levels
    expected = np.digitize(np.where(valid, img, lo), edges)
    np.testing.assert_array_equal(q, expected)
    assert q[3, 5] == 0
    assert q[valid].min() == 0 and q[valid].max() == levels - 1  # 2 % below vmin, 2 % above vmax: clipped
    # Explicit limits, and the endpoints: vmin -> 0, vmax -> top level, outside -> clipped.
    x = np.array([[0.0, 10.0, 24.99, 25.0, 99.99, 100.0, 150.0, -3.0]])
    np.testing.assert_array_equal(quantize(x, 4, 0.0, 100.0), [[0, 0, 0, 1, 3, 3, 3, 0]])
    with pytest.raises(ValueError, match="vmin <= vmax"):
        quantize(x, 4, 5.0, 1.0)


def test_quantize_integer_as_is_or_scaled():
    q = np.arange(32, dtype=np.int32).reshape(4, 8)
    np.testing.assert_array_equal(quantize(q, 32), q)  # already in [0, levels): used as is
    assert quantization_limits(q, 32) is None
    wide = (q * 100).astype(np.uint16)  # out of range: scaled between its percentiles
    lo, hi = np.percentile(wide, [2, 98])
    np.testing.assert_array_equal(
        quantize(wide, 32), np.clip(np.floor((wide - lo) / (hi - lo) * 32), 0, 31).astype(np.uint8)
    )
    assert quantize(np.zeros((3, 3)), 300).dtype == np.uint16


def test_float_input_equals_quantised_input():
    rng = np.random.default_rng(3)
    img = rng.gamma(2.0, 50.0, size=(26, 26)).astype(np.float32)
    q = quantize(img, 16, 20.0, 250.0)
    np.testing.assert_array_equal(
        glcm_features(img, levels=16, vmin=20.0, vmax=250.0, window=5), glcm_features(q, levels=16, window=5)
    )
    ref = skimage_reference(q, 5, 16, (1,), (0, 45, 90, 135), features=("entropy", "correlation"))
    ours = glcm_features(img, levels=16, vmin=20.0, vmax=250.0, window=5, features=("entropy", "correlation"))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_edges_and_nodata_windows_are_nan():
    rng = np.random.default_rng(4)
    img = rng.uniform(0, 1, size=(30, 32))
    window, r = 5, 2
    clean = glcm_features(img, window=window, levels=8, vmin=0.0, vmax=1.0)
    interior = np.zeros((30, 32), dtype=bool)
    interior[r:-r, r:-r] = True
    assert np.isnan(clean[:, ~interior]).all()
    assert np.isfinite(clean[:, interior]).all()

    holed = img.copy()
    holed[10, 20] = np.nan
    mask = np.zeros_like(img, dtype=bool)
    mask[25, 5] = True
    out = glcm_features(holed, window=window, levels=8, vmin=0.0, vmax=1.0, nodata_mask=mask)
    touched = np.zeros_like(mask)
    touched[10 - r : 10 + r + 1, 20 - r : 20 + r + 1] = True
    touched[25 - r : 25 + r + 1, 5 - r : 5 + r + 1] = True
    assert np.isnan(out[:, touched]).all()
    keep = interior & ~touched
    np.testing.assert_array_equal(out[:, keep], clean[:, keep])  # windows without a missing pixel are unchanged


def test_constant_image_follows_skimage_conventions():
    q = np.full((12, 12), 5, dtype=np.uint8)
    out = glcm_features(q, window=5, levels=8)
    ref = skimage_reference(q, 5, 8, (1,), (0, 45, 90, 135))
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    centre = dict(zip(ALL_FEATURES, out[:, 6, 6], strict=True))
    assert centre["correlation"] == 1.0  # scikit-image returns 1 where the marginal variance is zero
    assert centre["contrast"] == 0.0 and centre["variance"] == 0.0
    assert 0.0 <= centre["entropy"] < 1e-12  # c ln c is summed in fixed point (resolution ~2**-36)
    assert centre["ASM"] == 1.0 and centre["energy"] == 1.0 and centre["homogeneity"] == 1.0
    assert centre["mean"] == 5.0


def test_bad_parameters_are_reported():
    img = np.zeros((10, 10), dtype=np.uint8)
    with pytest.raises(ValueError, match="odd"):
        glcm_features(img, window=4)
    with pytest.raises(ValueError, match="unknown GLCM feature"):
        glcm_features(img, features=("contrast", "smoothness"))
    with pytest.raises(ValueError, match="distances"):
        glcm_features(img, distances=(0,))
    with pytest.raises(ValueError, match="fewer levels"):
        glcm_features(img, levels=60000)  # the count matrices for ASM/energy/entropy would not fit
    assert np.isfinite(glcm_features(img, levels=60000, features=("contrast",))[0, 5, 5])  # no matrix needed
    with pytest.raises(ValueError, match=r"\(rows, cols\)"):
        glcm_features(np.zeros((2, 10, 10)))


def test_dask_equals_numpy_threaded_scheduler():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(10)
    img = rng.uniform(0.0, 1.0, size=(30, 34)).astype(np.float32)
    img[14, 16] = np.nan
    lazy = glcm_features_dask(da.from_array(img, chunks=(8, 12)), window=5, levels=16, features=("ASM", "mean"))
    assert lazy.chunks == ((2,), (8, 8, 8, 6), (12, 12, 10))
    got = lazy.compute(scheduler="threads")
    np.testing.assert_array_equal(got, glcm_features(img, window=5, levels=16, features=("ASM", "mean")))


@pytest.mark.slow
def test_dask_equals_numpy_on_local_cluster():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(5)
    img = rng.normal(0.0, 1.0, size=(61, 75))
    img[30, 40] = np.nan
    img[0:3, 70:75] = np.nan
    expected = glcm_features(img, window=7, levels=16)  # percentiles of all valid pixels
    darr = da.from_array(img, chunks=(20, 26))  # chunks not multiples of anything; last chunk smaller
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None):
        lazy = glcm_features_dask(darr, window=7, levels=16)
        assert lazy.shape == expected.shape and lazy.dtype == np.float32
        got = lazy.compute()
        np.testing.assert_array_equal(got, expected)  # bit for bit, NaNs included
        q = rng.integers(0, 8, size=(40, 33)).astype(np.uint8)
        got_q = glcm_features_dask(da.from_array(q, chunks=(9, 11)), window=5, levels=8, distances=(1, 2)).compute()
        np.testing.assert_array_equal(got_q, glcm_features(q, window=5, levels=8, distances=(1, 2)))
        mask = np.zeros(q.shape, dtype=bool)
        mask[20, 11] = True  # on a chunk corner
        got_m = glcm_features_dask(da.from_array(q, chunks=(10, 11)), window=3, levels=8, nodata_mask=mask).compute()
        np.testing.assert_array_equal(got_m, glcm_features(q, window=3, levels=8, nodata_mask=mask))
        assert np.isnan(got_m[:, 19:22, 10:13]).all()


def test_texture_file_equals_array_version(make_raster, tmp_path):
    rng = np.random.default_rng(6)
    data = rng.gamma(2.0, 300.0, size=(37, 45)).astype(np.float32)
    data[12, 30] = -9999.0
    src = make_raster("band.tif", data, nodata=-9999.0)
    out = texture_file(src, tmp_path / "tex.tif", window=5, levels=16, block=16, progress=False)
    mask = data == -9999.0
    expected = glcm_features(data, window=5, levels=16, nodata_mask=mask)  # small band: percentiles of all pixels
    with rasterio.open(out) as ds, rasterio.open(src) as ref:
        assert ds.count == len(ALL_FEATURES)
        assert ds.descriptions == tuple(f"glcm_{f}" for f in ALL_FEATURES)
        assert ds.crs == ref.crs and ds.transform == ref.transform and ds.shape == ref.shape
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        np.testing.assert_array_equal(ds.read(), expected)
    assert np.isnan(expected[:, 12, 30]).all() and np.isfinite(expected[:, 20, 20]).all()


def test_texture_file_limits_are_global_when_decimated(make_raster, tmp_path, monkeypatch):
    import cryonet.features.texture as texture

    rng = np.random.default_rng(9)
    data = np.cumsum(rng.normal(size=(48, 40)), axis=0).astype(np.float32)  # a trend: per-tile limits would differ
    src = make_raster("trend.tif", data)
    monkeypatch.setattr(texture, "PERCENTILE_SAMPLE", 200)  # force a decimated read for the percentile limits
    a = texture_file(src, tmp_path / "a.tif", levels=16, block=12, progress=False)
    b = texture_file(src, tmp_path / "b.tif", levels=16, block=1000, progress=False)
    with rasterio.open(a) as da_, rasterio.open(b) as db_:
        one, whole = da_.read(), db_.read()
    np.testing.assert_array_equal(one, whole)  # tiles of 12 px and a single tile agree: limits fixed once
    # ...and they differ from limits of all pixels, so the decimated sample was really used.
    assert not np.array_equal(whole, glcm_features(data, levels=16), equal_nan=True)


def test_texture_file_integer_band_and_errors(make_raster, tmp_path):
    from cryonet.raster import RasterError

    rng = np.random.default_rng(7)
    q = rng.integers(0, 8, size=(2, 20, 21)).astype(np.uint8)
    src = make_raster("q.tif", q)
    out = texture_file(src, tmp_path / "t.tif", band=2, levels=8, distance=2, angles=(0, 90), block=8, progress=False)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), glcm_features(q[1], levels=8, distances=(2,), angles=(0, 90)))
    with pytest.raises(RasterError, match="band 3"):
        texture_file(src, tmp_path / "u.tif", band=3, progress=False)
    with pytest.raises(RasterError, match="not found"):
        texture_file(tmp_path / "missing.tif", tmp_path / "u.tif", progress=False)
    assert not (tmp_path / "u.tif").exists()


def test_cli_texture(make_raster, tmp_path, capsys):
    from cryonet.cli import main

    rng = np.random.default_rng(8)
    data = rng.uniform(0, 1, size=(25, 30)).astype(np.float32)
    src = make_raster("in.tif", data)
    dst = tmp_path / "out.tif"
    rc = main(
        [
            "-q",
            "texture",
            str(src),
            str(dst),
            "--window",
            "5",
            "--levels",
            "8",
            "--angles",
            "0,90",
            "--distance",
            "2",
            "--vmin",
            "0",
            "--vmax",
            "1",
        ]
    )
    assert rc == 0 and str(dst) in capsys.readouterr().out
    with rasterio.open(dst) as ds:
        expected = glcm_features(data, window=5, levels=8, distances=(2,), angles=(0, 90), vmin=0.0, vmax=1.0)
        np.testing.assert_array_equal(ds.read(), expected)
    assert main(["texture", str(tmp_path / "nope.tif"), str(dst)]) == 1
    assert "nope.tif" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_landsat_band_matches_skimage(realdata, tmp_path):
    """Landsat 7 NIR over Khumbu (debris-covered glaciers, saturated snow): file output vs skimage per window."""
    path = realdata / "geoutils-data/data/Everest_Landsat/LE71400412000304SGS00_B4_cropped.tif"
    with rasterio.open(path) as src:
        data = src.read(1)
    out = texture_file(path, tmp_path / "tex.tif", levels=32, progress=False)
    with rasterio.open(out) as ds:
        tex = ds.read()
    q = quantize(data, 32)  # uint8 DN 15-255 are not in [0, 32): scaled between the 2nd/98th percentiles
    lo, hi = np.percentile(data, [2, 98])
    np.testing.assert_array_equal(q, np.clip(np.floor((data - lo) / (hi - lo) * 32), 0, 31))
    rng = np.random.default_rng(0)
    r = 3
    ys = rng.integers(r, data.shape[0] - r, 300)
    xs = rng.integers(r, data.shape[1] - r, 300)
    windows = np.lib.stride_tricks.sliding_window_view(q, (7, 7))
    flat = np.argwhere(np.ptp(windows, axis=(2, 3)) == 0)[:20] + r  # saturated snow: constant windows
    assert len(flat) > 0
    ys, xs = np.concatenate([ys, flat[:, 0]]), np.concatenate([xs, flat[:, 1]])
    rad = np.deg2rad([0, 45, 90, 135])
    for y, x in zip(ys, xs, strict=True):
        P = graycomatrix(q[y - r : y + r + 1, x - r : x + r + 1], [1], rad, 32, symmetric=True, normed=True)
        ref = [graycoprops(P, name).mean() for name in ALL_FEATURES]
        np.testing.assert_allclose(tex[:, y, x], ref, rtol=1e-5, atol=1e-6, err_msg=f"window at {(y, x)}")
    assert (tex[ALL_FEATURES.index("correlation"), flat[:, 0], flat[:, 1]] == 1.0).all()
