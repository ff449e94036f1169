"""Terrain layers: cell-by-cell against ``gdaldem`` on real DEMs, analytic surfaces, blocks, dask and the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cryonet.features.terrain import (
    TERRAIN_LAYERS,
    TERRAIN_UNITS,
    halo,
    terrain_file,
    terrain_layers,
    terrain_layers_dask,
)
from cryonet.raster import RasterError

# --- against gdaldem on real DEMs -----------------------------------------------------------------------------------

REAL_DEMS = {
    "chhota_shigri_94m_tm": "oggm-sample-data/test-files/dem_chhota_shigri.tif",
    "grindelwald_46m_tm": "oggm-sample-data/realisation/RGI50-11.01270/dem.tif",
    "exploradores_aster_30m_utm_voids": "geoutils-data/data/Exploradores_ASTER/AST_L1A_00303182012144228_Z.tif",
    "hef_srtm_4326_to_utm32n": "oggm-sample-data/test-files/hef_srtm.tif",
}


def _reproject_to_utm32n(src_path: Path, dst_path: Path) -> Path:
    """Bilinear reprojection of a geographic SRTM tile onto a 60 m UTM 32N grid (-9999 outside the footprint)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:32632", src.width, src.height, *src.bounds, resolution=60.0
        )
        dst = np.full((height, width), -9999.0, dtype=np.float32)
        reproject(
            src.read(1).astype(np.float32),
            dst,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:32632",
            dst_nodata=-9999.0,
            resampling=Resampling.bilinear,
        )
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:32632",
        "transform": transform,
        "nodata": -9999.0,
    }
    with rasterio.open(dst_path, "w", **profile) as out:
        out.write(dst, 1)
    return dst_path


def _gdaldem(mode: str, dem: Path, out: Path, *options: str) -> tuple[np.ndarray, np.ndarray]:
    """Run ``gdaldem <mode>`` (default options unless given); return (values as float64, nodata mask)."""
    subprocess.run(["gdaldem", mode, "-q", *options, str(dem), str(out)], check=True, capture_output=True)
    with rasterio.open(out) as ds:
        values = ds.read(1).astype(np.float64)
        return values, values == ds.nodata


@pytest.fixture(params=list(REAL_DEMS), ids=list(REAL_DEMS))
def real_dem(request: pytest.FixtureRequest, realdata: Path, tmp_path: Path) -> Path:
    path = realdata / REAL_DEMS[request.param]
    if not path.is_file():
        pytest.skip(f"{path} not present")
    if request.param == "hef_srtm_4326_to_utm32n":
        return _reproject_to_utm32n(path, tmp_path / "hef_utm32n.tif")
    return path


@pytest.mark.skipif(shutil.which("gdaldem") is None, reason="gdaldem (gdal-bin) not installed")
def test_matches_gdaldem_on_real_dems(real_dem: Path, tmp_path: Path) -> None:
    with rasterio.open(real_dem) as src:
        dem = np.ma.filled(src.read(1, masked=True).astype(np.float64), np.nan)
        res = src.res
    ours = terrain_layers(dem, res)
    border = np.zeros(dem.shape, dtype=bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True

    for mode, layer in [
        ("slope", "slope"),
        ("aspect", "aspect"),
        ("hillshade", "hillshade"),
        ("TPI", "tpi"),
        ("roughness", "roughness"),
    ]:
        ref, ref_nodata = _gdaldem(mode, real_dem, tmp_path / f"{mode}.tif")
        mine = ours[layer].astype(np.float64)
        # Nodata equivalence: gdaldem's nodata cells (edges, windows touching voids, and for aspect flat cells) are
        # exactly our NaN cells.
        np.testing.assert_array_equal(np.isnan(mine), ref_nodata, err_msg=f"{mode}: nodata cells differ")
        assert ref_nodata[border].all()
        valid = ~ref_nodata & ~border
        assert valid.sum() > 0.8 * (~np.isnan(dem)).sum() - 4 * sum(dem.shape)
        if mode == "slope":
            # Same Horn formula; differences come only from gdaldem's float32 arithmetic on float inputs.
            assert np.abs(mine - ref)[valid].max() < 0.1
        elif mode == "aspect":
            steep = valid & (ours["slope"] > 2.0)
            diff = np.abs((mine - ref + 180.0) % 360.0 - 180.0)
            assert diff[steep].max() < 0.5
        elif mode == "hillshade":
            # gdaldem writes round(1 + 254 cos i) as a byte, with a fast approximate 1/sqrt: allow 1 DN.
            dn = np.round(1.0 + 254.0 * mine)
            assert np.abs(dn - ref)[valid].max() <= 1.0
            assert (dn == ref)[valid].mean() > 0.99
        else:
            # Metres; gdaldem sums float32 elevations of up to ~6000 m (float32 spacing 4.9e-4 m): allow 1 cm.
            assert np.abs(mine - ref)[valid].max() < 0.01

    # Another sun (the Poiqu preset's Sentinel-2 overpass geometry): the azimuth/elevation conventions agree.
    ref, ref_nodata = _gdaldem("hillshade", real_dem, tmp_path / "hs2.tif", "-az", "152", "-alt", "48")
    mine = terrain_layers(dem, res, sun_azimuth=152.0, sun_elevation=48.0, layers=("hillshade",))["hillshade"]
    np.testing.assert_array_equal(np.isnan(mine), ref_nodata)
    dn = np.round(1.0 + 254.0 * mine.astype(np.float64))
    assert np.abs(dn - ref)[~ref_nodata].max() <= 1.0


# --- analytic surfaces --------------------------------------------------------------------------------------------


def _coords(shape: tuple[int, int], res: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Easting and northing (metres) of cell centres relative to the centre cell; row 0 is north."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    x = (cols - shape[1] // 2) * res[0]
    y = -(rows - shape[0] // 2) * res[1]
    return x.astype(np.float64), y.astype(np.float64)


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.0), (0.0, -0.5), (-0.2, 0.7), (0.9, 0.9)])
def test_tilted_plane_has_analytic_slope_aspect_hillshade(a: float, b: float) -> None:
    res = (10.0, 25.0)  # non-square pixels
    x, y = _coords((21, 17), res)
    dem = 3000.0 + a * x + b * y  # dz/dx = a (east), dz/dy = b (north)
    out = terrain_layers(dem, res, sun_azimuth=135.0, sun_elevation=30.0)
    inner = (slice(1, -1), slice(1, -1))
    slope = np.degrees(np.arctan(np.hypot(a, b)))
    aspect = np.degrees(np.arctan2(-a, -b)) % 360.0  # downslope azimuth
    np.testing.assert_allclose(out["slope"][inner], slope, atol=1e-4)
    np.testing.assert_allclose(out["aspect"][inner], aspect, atol=1e-4)
    np.testing.assert_allclose(out["aspect_sin"][inner], np.sin(np.radians(aspect)), atol=1e-6)
    np.testing.assert_allclose(out["aspect_cos"][inner], np.cos(np.radians(aspect)), atol=1e-6)
    az, alt = np.radians(135.0), np.radians(30.0)
    normal = np.array([-a, -b, 1.0]) / np.sqrt(1 + a * a + b * b)
    sun = np.array([np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt), np.sin(alt)])
    np.testing.assert_allclose(out["hillshade"][inner], max(normal @ sun, 0.0), atol=1e-6)
    for name in ("curv_plan", "curv_profile", "tpi"):
        np.testing.assert_allclose(out[name][inner], 0.0, atol=1e-6)
    # Roughness of a plane: the largest elevation difference across the 3 × 3 window.
    np.testing.assert_allclose(out["roughness"][inner], 2 * abs(a) * res[0] + 2 * abs(b) * res[1], rtol=1e-5)


def test_cardinal_aspects_follow_gdal_convention() -> None:
    x, y = _coords((5, 5), (10.0, 10.0))
    facing = {
        "north": (0.0, -1.0, 0.0),
        "east": (-1.0, 0.0, 90.0),
        "south": (0.0, 1.0, 180.0),
        "west": (1.0, 0.0, 270.0),
    }
    for name, (a, b, expected) in facing.items():
        aspect = terrain_layers(a * x + b * y, (10.0, 10.0), layers=("aspect",))["aspect"][2, 2]
        assert aspect == pytest.approx(expected, abs=1e-4), name


def test_flat_dem() -> None:
    dem = np.full((8, 9), 1234.5)
    out = terrain_layers(dem, (30.0, 30.0), sun_elevation=40.0)
    inner = (slice(1, -1), slice(1, -1))
    assert np.all(out["slope"][inner] == 0.0)
    assert np.all(np.isnan(out["aspect"]))  # flat: no aspect (gdaldem writes -9999)
    assert np.all(out["aspect_sin"][inner] == 0.0) and np.all(out["aspect_cos"][inner] == 0.0)
    np.testing.assert_allclose(out["hillshade"][inner], np.sin(np.radians(40.0)), rtol=1e-6)
    for name in ("curv_plan", "curv_profile", "tpi", "roughness"):
        assert np.all(out[name][inner] == 0.0), name
    np.testing.assert_array_equal(out["elevation"], np.float32(1234.5))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_elliptic_paraboloid_curvatures(sign: float) -> None:
    """z = -sign (k1 x² + k2 y²)/2: a dome (sign +1, convex, positive) or a bowl (sign -1, concave, negative).

    Along the x axis the steepest slope runs along x, so the profile curvature is sign·k1 and the plan curvature
    (along the contour, i.e. along y) is sign·k2; along the y axis they swap. Central differences are exact on a
    quadratic, so the values are exact.
    """
    k1, k2 = 2e-3, 5e-4
    res = (20.0, 12.0)
    shape = (31, 27)
    x, y = _coords(shape, res)
    dem = 4000.0 - sign * (k1 * x * x + k2 * y * y) / 2.0
    out = terrain_layers(dem, res, layers=("curv_plan", "curv_profile", "tpi"))
    r0, c0 = shape[0] // 2, shape[1] // 2
    on_x = (r0, np.r_[1:c0, c0 + 1 : shape[1] - 1])
    on_y = (np.r_[1:r0, r0 + 1 : shape[0] - 1], c0)
    np.testing.assert_allclose(out["curv_profile"][on_x], sign * k1, rtol=1e-4)
    np.testing.assert_allclose(out["curv_plan"][on_x], sign * k2, rtol=1e-4)
    np.testing.assert_allclose(out["curv_profile"][on_y], sign * k2, rtol=1e-4)
    np.testing.assert_allclose(out["curv_plan"][on_y], sign * k1, rtol=1e-4)
    assert out["curv_plan"][r0, c0] == 0.0  # apex: gradient 0, direction undefined -> 0
    # General cell: plan + profile = -(z_xx + z_yy) (the Laplacian is invariant to the rotation of the axes).
    inner = (slice(1, -1), slice(1, -1))
    total = out["curv_plan"][inner] + out["curv_profile"][inner]
    apex = np.zeros(total.shape, dtype=bool)
    apex[r0 - 1, c0 - 1] = True
    np.testing.assert_allclose(total[~apex], sign * (k1 + k2), rtol=1e-3)
    # A dome's summit stands above its neighbours: positive TPI (and equal to the analytic mean excess).
    tpi = sign * (2 * k1 * res[0] ** 2 + 2 * k2 * res[1] ** 2 + 4 * (k1 * res[0] ** 2 + k2 * res[1] ** 2)) / 16
    np.testing.assert_allclose(out["tpi"][inner], tpi, rtol=1e-6)


def test_rotated_saddle_curvatures_are_directional_second_derivatives() -> None:
    """On any quadratic z = ½ uᵀHu + g·u the curvatures are -dᵀHd with d the unit gradient (profile) or the unit
    contour direction (plan); a rotated saddle with a tilt exercises the mixed term z_xy."""
    theta = np.radians(30.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    hess = rot @ np.diag([3e-3, -1e-3]) @ rot.T
    tilt = np.array([0.05, -0.08])
    res = (15.0, 10.0)
    x, y = _coords((25, 29), res)
    xy = np.stack([x, y], axis=-1)
    dem = 2500.0 + 0.5 * np.einsum("...i,ij,...j->...", xy, hess, xy) + xy @ tilt
    out = terrain_layers(dem, res, layers=("curv_plan", "curv_profile"))
    grad = xy @ hess + tilt
    along = grad / np.linalg.norm(grad, axis=-1, keepdims=True)
    across = np.stack([-along[..., 1], along[..., 0]], axis=-1)
    profile = -np.einsum("...i,ij,...j->...", along, hess, along)
    plan = -np.einsum("...i,ij,...j->...", across, hess, across)
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(out["curv_profile"][inner], profile[inner], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(out["curv_plan"][inner], plan[inner], rtol=1e-4, atol=1e-9)


def test_sphere_cap_curvature_near_top() -> None:
    """Near the top of a sphere of radius R both curvatures tend to 1/R (positive: convex)."""
    radius = 5000.0
    res = (10.0, 10.0)
    x, y = _coords((41, 41), res)
    dem = np.sqrt(radius**2 - x * x - y * y)
    out = terrain_layers(dem, res, layers=("curv_plan", "curv_profile"))
    near = (np.hypot(x, y) < 150.0) & (np.hypot(x, y) > 0)
    np.testing.assert_allclose(out["curv_profile"][near], 1.0 / radius, rtol=3e-3)
    np.testing.assert_allclose(out["curv_plan"][near], 1.0 / radius, rtol=3e-3)


# --- nodata and edges ---------------------------------------------------------------------------------------------


def test_nodata_and_edges_become_nan() -> None:
    rng = np.random.default_rng(0)
    dem = 3000.0 + np.cumsum(rng.normal(size=(20, 24)), axis=1) * 5
    dem[7, 11] = np.nan
    out = terrain_layers(dem, (10.0, 10.0))
    expected = np.zeros(dem.shape, dtype=bool)
    expected[6:9, 10:13] = True
    expected[[0, -1], :] = True
    expected[:, [0, -1]] = True
    for name in TERRAIN_LAYERS:
        if name == "elevation":
            np.testing.assert_array_equal(np.isnan(out[name]), np.isnan(dem))
        elif name != "aspect":  # aspect is also NaN on flat cells; none here
            np.testing.assert_array_equal(np.isnan(out[name]), expected, err_msg=name)
        assert out[name].dtype == np.float32
    # A mask is the same as NaN in the DEM.
    filled = np.where(np.isnan(dem), -9999.0, dem)
    masked = terrain_layers(filled, (10.0, 10.0), nodata_mask=filled == -9999.0)
    for name in TERRAIN_LAYERS:
        np.testing.assert_array_equal(masked[name], out[name])


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="rows, cols"):
        terrain_layers(np.zeros((2, 3, 4)), (10.0, 10.0))
    with pytest.raises(ValueError, match="positive"):
        terrain_layers(np.zeros((4, 4)), (0.0, 10.0))
    with pytest.raises(ValueError, match="unknown terrain layer"):
        terrain_layers(np.zeros((4, 4)), (10.0, 10.0), layers=("slopes",))
    with pytest.raises(ValueError, match="nodata_mask shape"):
        terrain_layers(np.zeros((4, 4)), (10.0, 10.0), nodata_mask=np.zeros((3, 4), dtype=bool))


# --- multi-scale TPI ----------------------------------------------------------------------------------------------


def test_multiscale_tpi_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    dem = 2000.0 + rng.normal(scale=30.0, size=(23, 19))
    res = (10.0, 10.0)
    out = terrain_layers(dem, res, layers=("tpi", "tpi_15m", "tpi_30m"), tpi_radii=(15.0, 30.0))
    # A radius between sqrt(2) and 2 pixels is the 8-neighbour TPI.
    np.testing.assert_allclose(out["tpi_15m"], out["tpi"], atol=1e-4, equal_nan=True)
    # Radius 3 px: all cells within 30 m of the centre except the centre itself (28 cells), by explicit loops.
    offsets = [(i, j) for i in range(-3, 4) for j in range(-3, 4) if 0 < i * i + j * j <= 9]
    assert len(offsets) == 28
    ref = np.full(dem.shape, np.nan)
    for r in range(3, dem.shape[0] - 3):
        for c in range(3, dem.shape[1] - 3):
            ref[r, c] = dem[r, c] - np.mean([dem[r + i, c + j] for i, j in offsets])
    np.testing.assert_allclose(out["tpi_30m"], ref, atol=1e-4, equal_nan=True)
    assert halo(res, (30.0,)) == 3 and halo() == 1


# --- block-wise file, dask, CLI -----------------------------------------------------------------------------------


def _random_dem(shape: tuple[int, int], seed: int = 2) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return 3500.0 + 400.0 * gaussian_filter(rng.normal(size=shape), 3.0) / 0.05


def test_terrain_file_blocks_equal_whole_array(make_raster, tmp_path: Path) -> None:
    dem = _random_dem((45, 38)).astype(np.float32)
    dem[20:23, 5:9] = -9999.0
    path = make_raster("dem.tif", dem, epsg=32645, res=30.0, nodata=-9999.0)
    out = terrain_file(path, tmp_path / "terrain.tif", block=16, progress=False, sun_azimuth=200.0, tpi_radii=(75.0,))
    whole = terrain_layers(dem, (30.0, 30.0), nodata_mask=dem == -9999.0, sun_azimuth=200.0, tpi_radii=(75.0,))
    with rasterio.open(out) as ds:
        assert ds.descriptions == (*TERRAIN_LAYERS, "tpi_75m")
        assert ds.units[1] == TERRAIN_UNITS["slope"]
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.crs.to_epsg() == 32645 and ds.transform.a == 30.0
        for i, name in enumerate(ds.descriptions, start=1):
            np.testing.assert_array_equal(ds.read(i), whole[name], err_msg=name)
    assert np.isnan(whole["slope"][19:24, 4:10]).all()


def test_dask_equals_numpy() -> None:
    da = pytest.importorskip("dask.array")
    dem = _random_dem((40, 52))
    dem[10, 30] = np.nan
    mask = np.zeros(dem.shape, dtype=bool)
    mask[25, 3] = True
    res = (20.0, 30.0)
    ref = terrain_layers(dem, res, tpi_radii=(65.0,), sun_azimuth=100.0, nodata_mask=mask)
    lazy = terrain_layers_dask(
        da.from_array(dem, chunks=(13, 17)),
        res,
        tpi_radii=(65.0,),
        sun_azimuth=100.0,
        nodata_mask=da.from_array(mask, chunks=(20, 20)),
    )
    assert np.isnan(ref["slope"][24:27, 2:5]).all()
    assert list(lazy) == list(ref)
    for name, arr in lazy.items():
        np.testing.assert_array_equal(arr.compute(), ref[name], err_msg=name)


def test_cli_writes_band_descriptions(make_raster, tmp_path: Path) -> None:
    from cryonet.cli import main

    dem = _random_dem((30, 33)).astype(np.float32)
    path = make_raster("dem.tif", dem, epsg=32632, res=10.0)
    out = tmp_path / "out" / "terrain.tif"
    rc = main(["-q", "terrain", str(path), str(out), "--sun-azimuth", "120", "--sun-elevation", "25"])
    assert rc == 0
    ref = terrain_layers(dem, (10.0, 10.0), sun_azimuth=120.0, sun_elevation=25.0)
    with rasterio.open(out) as ds:
        assert ds.descriptions == TERRAIN_LAYERS
        np.testing.assert_array_equal(ds.read(TERRAIN_LAYERS.index("hillshade") + 1), ref["hillshade"])


def test_geographic_dem_is_refused(make_raster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryonet.cli import main

    path = make_raster(
        "dem_wgs84.tif", _random_dem((10, 10)).astype(np.float32), epsg=4326, res=0.00083, origin=(10.6, 46.9)
    )
    out = tmp_path / "never.tif"
    with pytest.raises(RasterError, match="dem_wgs84.tif.*geographic.*cryonet align"):
        terrain_file(path, out, progress=False)
    assert not out.exists()
    assert main(["terrain", str(path), str(out)]) == 1
    assert "dem_wgs84.tif" in capsys.readouterr().err
