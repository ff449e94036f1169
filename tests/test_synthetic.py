"""Synthetic twin scenes: file contract, determinism, physics of the simulated inputs, labels, reuse, plots."""

from __future__ import annotations

import math
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import rasterio.warp
from pyproj import Transformer

from cryonet.constants import CLASS_IDS, S2_BANDS, S2_BANDS_10M, S2_L2A_NODATA, S2_L2A_OFFSET, S2_L2A_SCALE
from cryonet.regions import MONTBLANC, POIQU, get_region
from cryonet.scene import LABEL_LAYERS, Scene
from cryonet.synthetic import generate_scene, synthesize
from cryonet.synthetic.glaciers import Surface
from cryonet.synthetic.terrain import scaled_elevation_range

SMALL = 256


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scene]:
    """One small written scene per region (seed 0)."""
    root = tmp_path_factory.mktemp("synth")
    return {
        name: generate_scene(name, root / name, size=SMALL, seed=0, progress=False) for name in ("poiqu", "montblanc")
    }


def _rasterise(scene: Scene, shape: tuple[int, int], transform, crs) -> np.ndarray:
    """Reference polygons -> class raster (glaciers 1, then debris 2, then lakes 3), independent of cryonet.raster."""
    out = np.zeros(shape, dtype=np.uint8)
    for layer, cls in LABEL_LAYERS.items():
        gdf = gpd.read_file(scene.labels, layer=layer)
        if len(gdf):
            rasterio.features.rasterize(
                ((g, CLASS_IDS[cls]) for g in gdf.to_crs(crs).geometry), out=out, transform=transform
            )
    return out


def _features_on_10m(scene: Scene) -> dict[str, np.ndarray]:
    """S2 bands (DN, NaN = nodata), coherence and DEM slope (degrees) on the 10 m grid, read from the files."""
    with rasterio.open(scene.reference_band) as ref:
        shape, transform, crs = (ref.height, ref.width), ref.transform, ref.crs

    def warp(path: Path, resampling: rasterio.warp.Resampling) -> np.ndarray:
        out = np.full(shape, np.nan, dtype=np.float32)
        with rasterio.open(path) as src:
            rasterio.warp.reproject(
                rasterio.band(src, 1),
                out,
                src_nodata=src.nodata,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=resampling,
            )
        return out

    feats = {b: warp(scene.s2[b], rasterio.warp.Resampling.nearest) for b in S2_BANDS}
    feats["coherence"] = warp(scene.coherence, rasterio.warp.Resampling.bilinear)
    dem = warp(scene.dem, rasterio.warp.Resampling.bilinear)
    gy, gx = np.gradient(dem.astype(np.float64), 10.0)
    feats["slope"] = np.degrees(np.arctan(np.hypot(gx, gy)))
    return feats


def _smd(a: np.ndarray, b: np.ndarray) -> float:
    """Standardised mean difference |mean(a) - mean(b)| / pooled sd, ignoring NaN."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return float(abs(a.mean() - b.mean()) / math.sqrt((a.var() + b.var()) / 2))


# --- file contract -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_files_open_with_expected_grids(scenes, name):
    scene, region = scenes[name], get_region(name)
    assert scene.synthetic and scene.region == name
    assert scene.meta["seed"] == 0 and scene.meta["size"] == SMALL and "generator_version" in scene.meta
    for band in S2_BANDS:
        with rasterio.open(scene.s2[band]) as src:
            res = 10.0 if band in S2_BANDS_10M else 20.0
            assert src.crs.to_epsg() == region.epsg
            assert src.res == (res, res)
            assert src.dtypes[0] == "uint16" and src.nodata == S2_L2A_NODATA
            assert src.descriptions[0] == band
            assert src.width == math.ceil(SMALL * 10 / res) and src.height == src.width
            # Every grid's corner lies on the 40 m lattice, so 10/20/40 m grids nest.
            assert src.transform.c % 40 == 0 and src.transform.f % 40 == 0
    with rasterio.open(scene.dem) as src:
        assert src.crs.to_epsg() == 4326 and src.dtypes[0] == "float32" and src.nodata == -32767
        assert src.res == pytest.approx((1 / 3600, 1 / 3600), rel=1e-9)
        dem_bounds = src.bounds
    for path in (scene.coherence, scene.phase):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == region.epsg and src.res == (40.0, 40.0)
            assert src.dtypes[0] == "float32" and math.isnan(src.nodata)
    # The DEM covers the scene with a margin.
    with rasterio.open(scene.reference_band) as ref:
        lon0, lat0, lon1, lat1 = rasterio.warp.transform_bounds(ref.crs, "EPSG:4326", *ref.bounds, densify_pts=21)
    assert dem_bounds.left < lon0 and dem_bounds.right > lon1 and dem_bounds.bottom < lat0 and dem_bounds.top > lat1
    layers = set(gpd.list_layers(scene.labels)["name"])
    assert layers == set(LABEL_LAYERS)
    for layer in LABEL_LAYERS:
        assert gpd.read_file(scene.labels, layer=layer).crs.to_epsg() == 4326


@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_scene_centred_on_region(scenes, name):
    region = get_region(name)
    with rasterio.open(scenes[name].reference_band) as src:
        cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
    lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    assert lon == pytest.approx(region.centre_lon, abs=0.001) and lat == pytest.approx(region.centre_lat, abs=0.001)


@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_s2_values_and_nodata_strip(scenes, name):
    scene = scenes[name]
    with rasterio.open(scene.s2["B3"]) as src:
        green = src.read(1)
    nodata = green == S2_L2A_NODATA
    assert 0.005 < nodata.mean() < 0.10  # a strip outside the swath, a few % of the scene
    # The strip lies along exactly one of the east / west edges.
    assert nodata[:, 0].any() != nodata[:, -1].any()
    assert not nodata[:, nodata.shape[1] // 2].any()
    for band in S2_BANDS:
        with rasterio.open(scene.s2[band]) as src:
            dn = src.read(1)
        valid = dn[dn != S2_L2A_NODATA]
        refl = (valid.astype(float) + S2_L2A_OFFSET) / S2_L2A_SCALE
        assert valid.min() >= 1
        assert -0.05 < np.percentile(refl, 1) and np.percentile(refl, 99) < 1.2
    # Band physics: snow and ice are bright in the visible and dark in the SWIR; rock is not.
    twin = synthesize(name, size=SMALL, seed=0, progress=False)
    g = (twin.s2["B3"].astype(float) + S2_L2A_OFFSET) / S2_L2A_SCALE
    b11 = np.repeat(np.repeat(twin.s2["B11"], 2, 0), 2, 1)[:SMALL, :SMALL]
    swir = (b11.astype(float) + S2_L2A_OFFSET) / S2_L2A_SCALE
    ndsi = (g - swir) / (g + swir)
    valid = twin.s2["B3"] != S2_L2A_NODATA
    firn = (twin.surface == Surface.FIRN) & valid
    rock = (twin.surface == Surface.BEDROCK) & valid
    assert np.median(ndsi[firn]) > 0.6 and np.median(ndsi[rock]) < 0.2


@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_insar_ranges(scenes, name):
    scene = scenes[name]
    with rasterio.open(scene.coherence) as src:
        coh = src.read(1)
    with rasterio.open(scene.phase) as src:
        phase = src.read(1)
    assert np.isfinite(coh).all() and np.isfinite(phase).all()
    assert coh.min() >= 0 and coh.max() <= 1
    assert phase.min() >= -np.pi and phase.max() < np.pi
    assert phase.std() > 1.0  # wrapped fringes and noise, not a constant


@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_elevation_range_follows_preset(scenes, name):
    region = get_region(name)
    lo, hi = scaled_elevation_range(region, SMALL * 10.0)
    assert region.elevation_range_m[0] <= lo < region.ela_m < hi <= region.elevation_range_m[1]
    with rasterio.open(scenes[name].dem) as src:
        dem = src.read(1, masked=True)
    assert dem.min() > lo - 150 and dem.max() < hi + 150
    assert dem.max() - dem.min() > 0.4 * (hi - lo)
    assert dem.min() < region.ela_m < dem.max()


# --- determinism ---------------------------------------------------------------------------------------------------
def test_same_seed_identical_different_seed_different():
    a = synthesize("poiqu", size=96, seed=3, progress=False)
    b = synthesize("poiqu", size=96, seed=3, progress=False)
    c = synthesize("poiqu", size=96, seed=4, progress=False)
    for band in S2_BANDS:
        assert a.s2[band].tobytes() == b.s2[band].tobytes()
    for key in ("dem", "coherence", "phase", "classes"):
        assert getattr(a, key).tobytes() == getattr(b, key).tobytes()
    assert not np.array_equal(a.s2["B4"], c.s2["B4"])
    assert not np.array_equal(a.dem, c.dem)
    assert not np.array_equal(a.coherence, c.coherence)


def test_written_rasters_byte_identical(tmp_path):
    s1 = generate_scene("montblanc", tmp_path / "a", size=64, seed=1, progress=False)
    s2 = generate_scene("montblanc", tmp_path / "b", size=64, seed=1, progress=False)
    for p, q in [(s1.s2["B12"], s2.s2["B12"]), (s1.dem, s2.dem), (s1.phase, s2.phase)]:
        with rasterio.open(p) as x, rasterio.open(q) as y:
            assert x.read().tobytes() == y.read().tobytes()


# --- labels --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["poiqu", "montblanc"])
def test_label_polygons_rasterise_to_the_classes(scenes, name):
    scene = scenes[name]
    twin = synthesize(name, size=SMALL, seed=0, progress=False)
    with rasterio.open(scene.reference_band) as ref:
        labels = _rasterise(scene, (ref.height, ref.width), ref.transform, ref.crs)
    counts = np.bincount(labels.ravel(), minlength=4)
    # Every class present even at 256 px in Poiqu; Mont Blanc has few lakes (they appear at its default size).
    assert (counts[: 4 if name == "poiqu" else 3] > 0).all(), counts
    # The polygons reproduce the generator's class raster up to the light simplification.
    assert (labels == twin.classes).mean() > 0.97
    glaciers = gpd.read_file(scene.labels, layer="glaciers")
    area_utm = glaciers.to_crs(get_region(name).epsg).area / 1e6
    assert np.allclose(glaciers["area_km2"], area_utm, rtol=0.01)
    assert glaciers["glac_id"].is_unique
    lakes = gpd.read_file(scene.labels, layer="lakes")
    assert set(lakes["type"]) <= {"proglacial", "supraglacial"}
    debris = gpd.read_file(scene.labels, layer="debris")
    assert set(debris["glac_id"]) <= set(glaciers["glac_id"])


def test_poiqu_debris_share_and_lakes(scenes):
    with rasterio.open(scenes["poiqu"].reference_band) as ref:
        labels = _rasterise(scenes["poiqu"], (ref.height, ref.width), ref.transform, ref.crs)
    glacier = np.isin(labels, (1, 2)).sum()
    assert (labels == 2).sum() / glacier >= 0.10
    assert (labels == 3).any()


def _debris_and_rock(size: int, seeds: tuple[int, ...]):
    """(S2 DN on the 10 m grid, debris mask, off-glacier rock mask) of in-memory Poiqu twins."""
    for seed in seeds:
        twin = synthesize("poiqu", size=size, seed=seed, progress=False)
        valid = twin.s2["B3"] != S2_L2A_NODATA
        bands = _twin_features(twin)
        debris = (twin.classes == CLASS_IDS["debris"]) & valid
        rock = np.isin(twin.surface, (Surface.BEDROCK, Surface.SEDIMENT)) & (twin.classes == 0) & valid
        yield bands, debris, rock


def test_debris_looks_like_rock_but_not_in_terrain_and_coherence(tmp_path):
    """The central difficulty: debris overlaps rock/moraine in S2 bands, separates in coherence and slope."""
    name, size = "poiqu", 300
    twin = synthesize(name, size=size, seed=0, progress=False)
    feats = _features_on_10m(generate_scene(name, tmp_path, size=size, seed=0, progress=False))
    debris = twin.classes == CLASS_IDS["debris"]
    rock = np.isin(twin.surface, (Surface.BEDROCK, Surface.SEDIMENT)) & (twin.classes == CLASS_IDS["background"])
    assert debris.sum() > 500 and rock.sum() > 5000
    smd = {k: _smd(v[debris], v[rock]) for k, v in feats.items()}
    assert smd["coherence"] > 1.0 and smd["slope"] > 1.0, smd
    # The spectral overlap is a property of the generator, not of one realisation: a 3 km scene holds few lithology
    # wavelengths, so its SMD varies from seed to seed (0.0-0.6 over seeds 0-5); average three scenes.
    spectral = np.mean(
        [[_smd(f[b][d], f[b][r]) for b in S2_BANDS] for f, d, r in _debris_and_rock(size, (0, 1, 2))], axis=0
    )
    assert sum(s < 0.5 for s in spectral) >= 7, spectral  # most bands overlap strongly
    assert max(spectral) < 1.0, spectral
    # Direction: debris is less coherent and flatter than rock; debris is more coherent than clean ice.
    coh = feats["coherence"]
    assert np.nanmean(coh[debris]) < np.nanmean(coh[rock])
    assert np.nanmean(coh[debris]) > np.nanmean(coh[twin.classes == CLASS_IDS["clean_ice"]])
    assert np.nanmean(feats["slope"][debris]) < np.nanmean(feats["slope"][rock])


# --- reuse ---------------------------------------------------------------------------------------------------------
def test_complete_scene_is_reused_not_regenerated(tmp_path):
    out = tmp_path / "scene"
    first = generate_scene("poiqu", out, size=64, seed=2, progress=False)
    files = [*first.s2.values(), first.dem, first.coherence, first.phase, first.labels, out / "scene.json"]
    mtimes = [p.stat().st_mtime_ns for p in files]
    t0 = time.perf_counter()
    again = generate_scene("poiqu", out, size=64, seed=2, progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert again.to_dict() == first.to_dict()
    # Another seed, or overwrite, regenerates.
    generate_scene("poiqu", out, size=64, seed=5, progress=False)
    assert Scene.load(out).meta["seed"] == 5
    generate_scene("poiqu", out, size=64, seed=5, progress=False, overwrite=True)
    assert (out / "scene.json").stat().st_mtime_ns > mtimes[-1]


def test_incomplete_scene_is_regenerated(tmp_path):
    out = tmp_path / "scene"
    first = generate_scene("poiqu", out, size=64, seed=2, progress=False)
    first.s2["B8A"].unlink()
    again = generate_scene("poiqu", out, size=64, seed=2, progress=False)
    assert again.s2["B8A"].is_file()


def test_bad_input_errors(tmp_path):
    with pytest.raises(KeyError, match="poiqu"):
        generate_scene("atlantis", tmp_path, size=64)
    with pytest.raises(ValueError, match="too small"):
        synthesize("poiqu", size=8)


def test_cli_synth(tmp_path):
    from cryonet.cli import main

    assert main(["-q", "synth", "--region", "montblanc", "--out", str(tmp_path / "m"), "--size", "64"]) == 0
    assert Scene.load(tmp_path / "m").region == "montblanc"


# --- plots ---------------------------------------------------------------------------------------------------------
def test_plot_scene_and_class_shares(scenes):
    import matplotlib.pyplot as plt

    from cryonet.plots import class_shares, plot_scene

    fig = plot_scene(scenes["poiqu"], max_size=100)
    try:
        assert len(fig.axes) == 4
        assert all(ax.images for ax in fig.axes)
        assert max(fig.axes[0].images[0].get_array().shape[:2]) <= 100
    finally:
        plt.close(fig)
    labels = np.array([[0, 0, 1, 2], [3, 1, 1, 255]], dtype=np.uint8)
    df = class_shares(labels)
    assert list(df["class"]) == ["background", "clean_ice", "debris", "lake"]
    assert list(df["pixels"]) == [2, 3, 1, 1]
    assert df["share_of_scene"].sum() == pytest.approx(1.0)
    assert df.loc[df["class"] == "debris", "share_of_glacier"].item() == pytest.approx(0.25)
    assert df["share_of_glacier"].sum() == pytest.approx(1.0)


# --- default scenes (slow) -----------------------------------------------------------------------------------------
def _twin_features(twin) -> dict[str, np.ndarray]:
    """S2 DN (20 m bands repeated), coherence (40 m repeated) and DEM slope on the 10 m grid, from in-memory arrays."""
    n = twin.size
    feats = {}
    for band in S2_BANDS:
        a = twin.s2[band].astype(np.float32)
        a[a == S2_L2A_NODATA] = np.nan
        feats[band] = a if band in S2_BANDS_10M else np.repeat(np.repeat(a, 2, 0), 2, 1)[:n, :n]
    m = (twin.grid10.transform.c - twin.grid_insar.transform.c) / 40.0
    assert m == int(m)
    coh = twin.coherence[int(m) :, int(m) :]
    feats["coherence"] = np.repeat(np.repeat(coh, 4, 0), 4, 1)[:n, :n]
    dem = np.full(twin.grid10.shape, np.nan, dtype=np.float32)
    rasterio.warp.reproject(
        twin.dem,
        dem,
        src_transform=twin.grid_dem.transform,
        src_crs=twin.grid_dem.crs,
        src_nodata=-32767,
        dst_transform=twin.grid10.transform,
        dst_crs=twin.grid10.crs,
        dst_nodata=np.nan,
        resampling=rasterio.warp.Resampling.bilinear,
    )
    gy, gx = np.gradient(dem.astype(np.float64), 10.0)
    feats["slope"] = np.degrees(np.arctan(np.hypot(gx, gy)))
    return feats


def _assert_real_confusions(twin, feats: dict[str, np.ndarray], name: str) -> None:
    """The confusions of real late-summer imagery: snow across the outline, meltwater streams that are not lakes."""
    valid = np.isfinite(feats["B3"])
    # Off-glacier snow and the accumulation area are one snowpack: in the S2 bands they overlap (only illumination
    # differs: other slopes and aspects), while the coherence (the firn moves) separates them.
    snow = (twin.surface == Surface.SNOW) & valid
    firn = (twin.surface == Surface.FIRN) & valid
    assert snow.sum() > 1000 and firn.sum() > 1000, name
    smd = {k: _smd(v[snow], v[firn]) for k, v in feats.items()}
    assert max(smd[b] for b in S2_BANDS) < 0.5 and smd["coherence"] > 0.5, (name, smd)  # as debris and rock
    # Meltwater streams: water as dark in the SWIR as lakes, labelled background, on the sloping valley floor (lakes
    # are flat), below the snow line.
    river = (twin.surface == Surface.RIVER) & valid
    lake = (twin.classes == CLASS_IDS["lake"]) & valid
    assert river.sum() > 500, name
    assert (twin.classes[river] == CLASS_IDS["background"]).all()
    green, nir = ((feats[b] + S2_L2A_OFFSET) / S2_L2A_SCALE for b in ("B3", "B8"))
    ndwi = (green - nir) / (green + nir)
    assert np.median(ndwi[river]) > 0.3 and np.median(ndwi[lake]) > 0.3, name
    assert np.median(feats["slope"][river]) > np.median(feats["slope"][lake]), name
    assert np.median(feats["slope"][river]) < 15.0, name  # on the valley floor, not on the walls
    assert twin.elevation[river].max() < twin.region.ela_m, name  # below the glaciers' snow line


@pytest.mark.slow
def test_default_scenes_hold_every_class_and_the_regional_contrast():
    shares = {}
    for region in (POIQU, MONTBLANC):
        twin = synthesize(region, seed=0, progress=False)
        feats = _twin_features(twin)
        debris = twin.classes == CLASS_IDS["debris"]
        rock = np.isin(twin.surface, (Surface.BEDROCK, Surface.SEDIMENT)) & (twin.classes == 0)
        smd = {k: _smd(v[debris], v[rock]) for k, v in feats.items()}
        assert sum(smd[b] < 0.5 for b in S2_BANDS) >= 7, (region.name, smd)
        assert smd["coherence"] > 1.0 and smd["slope"] > 1.0, (region.name, smd)
        assert twin.size == region.default_size_px
        counts = np.bincount(twin.classes.ravel(), minlength=4)
        assert (counts > 0).all(), (region.name, counts)
        shares[region.name] = counts[2] / (counts[1] + counts[2])
        lo, hi = region.elevation_range_m
        dem = twin.dem[twin.dem != -32767]
        assert dem.min() < lo + 0.25 * (hi - lo) and dem.max() > hi - 0.25 * (hi - lo)
        assert dem.min() > lo - 100 and dem.max() < hi + 100
        assert (twin.layers["lakes"]["type"] == "proglacial").any()
        _assert_real_confusions(twin, feats, region.name)
    assert shares["poiqu"] >= 0.10
    assert shares["montblanc"] < shares["poiqu"]


# --- physics of the pieces -----------------------------------------------------------------------------------------
def test_cast_shadow_of_a_wall_matches_geometry():
    from cryonet.synthetic.optics import cast_shadow

    z = np.zeros((20, 100))
    z[:, 60:62] = 100.0  # a 100 m high wall running north-south
    shadow = cast_shadow(z, sun_azimuth_deg=90.0, sun_elevation_deg=45.0)  # sun in the east, 45 deg high
    # The shadow reaches 100 m / tan(45 deg) = 100 m = 10 cells west of the wall, and nothing lies east of it.
    row = shadow[10]
    assert row[51:60].all() and not row[:49].any() and not row[62:].any()


def test_illumination_is_one_on_flat_open_ground_and_lower_on_shaded_slopes():
    from cryonet.synthetic.optics import illumination

    flat = np.zeros((32, 32))
    assert np.allclose(illumination(flat, 152.0, 48.0), 1.0, atol=1e-6)
    # A 30 deg slope facing north (away from a southern sun) receives less light than one facing south.
    x = np.arange(32) * 10.0
    north_facing = np.tile((x * np.tan(np.radians(30)))[:, None], (1, 32))  # rises towards the south
    south_facing = north_facing[::-1].copy()
    e_n = illumination(north_facing, 180.0, 48.0)[:, 8:24, 8:24].mean()
    e_s = illumination(south_facing, 180.0, 48.0)[:, 8:24, 8:24].mean()
    assert e_n < 0.75 < 1.1 < e_s


def test_coherence_estimator_separates_rock_and_water():
    from cryonet.synthetic.glaciers import GlacierField
    from cryonet.synthetic.insar import simulate_pair

    shape = (64, 64)
    surface = np.full(shape, Surface.BEDROCK, dtype=np.uint8)
    surface[:, 32:] = Surface.LAKE
    zeros = np.zeros(shape, dtype=np.float32)
    field = GlacierField(
        z=zeros + 3000,
        surface=surface,
        classes=np.zeros(shape, np.uint8),
        glacier_id=np.zeros(shape, np.int32),
        lake_id=np.zeros(shape, np.int32),
        lake_types={},
        velocity=zeros,
        veg_fraction=zeros,
    )
    ifg = simulate_pair(field, look_azimuth_deg=78.0, rng=np.random.default_rng(0))
    assert ifg.coherence.shape == (16, 16)
    # Rock: true coherence 0.85 (+-10 %), estimated from 16 looks. Water: true ~0.04, but a 16-look estimate of
    # incoherent signals reads about sqrt(pi / 64) = 0.22 (the estimator's known bias).
    assert 0.7 < np.median(ifg.coherence[:, :7]) < 0.95
    assert 0.12 < np.median(ifg.coherence[:, 9:]) < 0.35
    # Phase noise: tight on coherent rock, uniform over water.
    rock_phase = np.angle(np.exp(1j * (ifg.phase[:, :7] - np.angle(np.exp(1j * ifg.phase[:, :7]).mean()))))
    assert rock_phase.std() < 0.6 and ifg.phase[:, 9:].std() > 1.4


def test_lower_snow_line_grows_the_glaciers():
    import dataclasses

    from cryonet.synthetic.glaciers import make_glaciers
    from cryonet.synthetic.terrain import make_terrain

    terrain = make_terrain(POIQU, (320, 320), np.random.default_rng(11))
    area = {}
    for ela in (5650.0, 5850.0):
        region = dataclasses.replace(POIQU, ela_m=ela)
        field = make_glaciers(region, terrain, np.random.default_rng(12))
        area[ela] = int(np.isin(field.classes, (1, 2)).sum())
    assert area[5650.0] > 1.2 * area[5850.0]


def test_debris_propensity_controls_debris_cover():
    import dataclasses

    from cryonet.synthetic.glaciers import make_glaciers
    from cryonet.synthetic.terrain import make_terrain

    terrain = make_terrain(POIQU, (320, 320), np.random.default_rng(21))
    share = {}
    for p in (0.2, 1.0):
        field = make_glaciers(dataclasses.replace(POIQU, debris_propensity=p), terrain, np.random.default_rng(22))
        c = field.classes
        share[p] = (c == 2).sum() / max(1, np.isin(c, (1, 2)).sum())
    assert share[1.0] > share[0.2] + 0.05


@pytest.mark.slow
@pytest.mark.realdata
def test_default_poiqu_resembles_real_glacier_terrain_and_lakes(realdata):
    """Against real references: Liligo Glacier debris/clean labels on SRTM (30 m) and the HKH 2020 Sun Koshi lakes."""

    def smd30(z: np.ndarray, labels: np.ndarray, res: float) -> tuple[float, float, float]:
        gy, gx = np.gradient(z.astype(np.float64), res)
        slope = np.degrees(np.arctan(np.hypot(gx, gy)))
        deb, bg = slope[labels == 2], slope[labels == 0]
        deb, bg = deb[np.isfinite(deb)], bg[np.isfinite(bg)]
        return float(deb.mean()), float(bg.mean()), _smd(deb, bg)

    liligo = realdata / "glacierSMBM-liligo"
    with rasterio.open(liligo / "labels_clean1_debris2_bg0.tif") as src:
        real_labels = src.read(1)
    with rasterio.open(liligo / "derived_baltoro_srtm_on_liligo_grid.tif") as src:
        real_dem = src.read(1)
    real_deb, real_bg, real_smd = smd30(real_dem, real_labels, 30.0)

    twin = synthesize("poiqu", seed=0, progress=False)
    n = twin.size // 3 * 3
    z30 = twin.elevation[:n, :n].reshape(n // 3, 3, n // 3, 3).mean(axis=(1, 3))  # 30 m, like SRTM
    syn_deb, syn_bg, syn_smd = smd30(z30, twin.classes[1:n:3, 1:n:3], 30.0)
    assert abs(syn_deb - real_deb) < 8.0, (syn_deb, real_deb)  # debris tongues are gentle (~12 deg at Liligo)
    assert abs(syn_bg - real_bg) < 10.0, (syn_bg, real_bg)  # surrounding terrain is steep (~35 deg)
    assert syn_smd > 0.5 * real_smd, (syn_smd, real_smd)

    lakes = gpd.read_file(realdata / "hkh-glacial-lakes" / "derived_HKH_2020_SunKoshi_Poiqu.geojson")
    proglacial = twin.layers["lakes"].query("type == 'proglacial'")["area_km2"]
    assert len(proglacial) >= 1
    assert proglacial.between(lakes["Area"].min(), lakes["Area"].max()).all(), (proglacial, lakes["Area"].describe())
