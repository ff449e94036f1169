"""Tiling, spatially blocked splits, normalisation, augmentation, class balance and the torch Dataset."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from cryonet.constants import LABEL_NODATA
from cryonet.datasets import (
    Augmenter,
    DatasetError,
    Normalizer,
    Split,
    TileDataset,
    class_weights,
    make_split,
    scan_tiles,
    tile_sampling_weights,
    tile_windows,
)
from cryonet.raster import Grid, write_raster
from cryonet.stackfile import StackFile

#: Pixel size of the DEMs of the augmentation tests, metres.
RES = 10.0


# ------------------------------------------------------------------------------------------------------------------
# tiling
# ------------------------------------------------------------------------------------------------------------------
def test_tile_windows_cover_raster_with_flush_edge():
    offs = tile_windows(100, 70, 32, 32)
    rows = sorted({r for r, _ in offs})
    cols = sorted({c for _, c in offs})
    assert rows == [0, 32, 64, 68]  # last one flush with the bottom edge (100 - 32)
    assert cols == [0, 32, 38]
    covered = np.zeros((100, 70), bool)
    for r, c in offs:
        covered[r : r + 32, c : c + 32] = True
    assert covered.all()
    assert tile_windows(20, 20, 32) == []


def test_scan_tiles_counts_and_nodata_threshold(tmp_path, make_stack):
    size = 64
    grid = make_stack.grid(size)
    lab = np.zeros((size, size), np.uint8)
    lab[:32, 32:] = 1
    lab[40:44, 40:44] = 3
    lab[32:, :32] = LABEL_NODATA  # lower-left tile: all nodata
    x = np.ones((3, size, size), np.float32)
    x[1:, :20, :32] = np.nan  # upper-left tile: 20/32 rows with 2 of 3 layers NaN = 62.5 % nodata
    x[2, 40:44, 40:44] = np.nan  # one NaN layer of 3 on the lake (aspect on a flat surface): still valid
    sp = make_stack(tmp_path / "s.tif", x, ["a", "b", "c"], grid=grid)
    lp = write_raster(tmp_path / "l.tif", lab, grid, nodata=255)
    tiles = scan_tiles(sp, lp, 32, progress=False)
    got = {(t.row, t.col): t for t in tiles}
    assert set(got) == {(0, 32), (32, 32)}  # (0,0) 62.5 % > 50 %; (32,0) 100 %
    assert got[(0, 32)].class_counts == (0, 1024, 0, 0)
    assert got[(32, 32)].class_counts == (1024 - 16, 0, 0, 16)
    kept = scan_tiles(sp, lp, 32, max_nodata_fraction=0.7, progress=False)
    up_left = next(t for t in kept if (t.row, t.col) == (0, 0))
    assert up_left.nodata_fraction == pytest.approx(20 / 32)
    assert up_left.class_counts == (32 * 12, 0, 0, 0)


def test_label_grid_mismatch_is_a_clear_error(tmp_path, make_stack):
    sp = make_stack(tmp_path / "s.tif", np.ones((1, 32, 32), np.float32), ["a"], nodata=None)
    lp = write_raster(tmp_path / "l.tif", np.zeros((32, 32), np.uint8), make_stack.grid(32, res=20.0))
    with pytest.raises(DatasetError, match="l.tif.*differs"):
        scan_tiles(sp, lp, 32, progress=False)


# ------------------------------------------------------------------------------------------------------------------
# split
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_setup(tmp_path_factory, make_stack):
    root = tmp_path_factory.mktemp("split")
    sp, lp = make_stack.twin(root, size=256, seed=3)
    tiles = scan_tiles(sp, lp, 32, 16, progress=False)  # overlapping tiles: the buffer has work to do
    return sp, lp, tiles, Grid.from_file(sp)


@pytest.mark.parametrize("buffer_m", [0.0, 150.0])
def test_split_has_no_tiles_within_buffer_of_another_split(split_setup, buffer_m):
    _, _, tiles, grid = split_setup
    split = make_split(tiles, grid, block_size_m=640.0, buffer_m=buffer_m, seed=1)
    gdf = split.to_geodataframe()
    assert all(len(split.get(s)) > 0 for s in ("train", "val", "test"))
    # independent check in map coordinates with shapely's distance, every pair across splits
    parts = {s: list(gdf.geometry[gdf["split"] == s]) for s in ("train", "val", "test")}
    min_gap = np.inf
    for a, b in itertools.combinations(parts, 2):
        for ga in parts[a]:
            d = min(ga.distance(gb) for gb in parts[b])
            min_gap = min(min_gap, d)
    assert min_gap > buffer_m  # strictly: not even touching when buffer is 0
    assert min_gap > 0
    # the buffer dropped something, and only from val/train (test tiles are never dropped)
    assert split.dropped["test"] == 0 and split.dropped["train"] > 0
    n_total = sum(len(v) for v in split.tiles.values()) + sum(split.dropped.values())
    assert n_total == len(tiles)


def test_split_is_stratified_seeded_and_round_trips(split_setup, tmp_path):
    _, _, tiles, grid = split_setup
    split = make_split(tiles, grid, block_size_m=640.0, buffer_m=0.0, seed=1)
    for s in ("train", "val", "test"):
        assert (split.class_counts(s) > 0).all(), (s, split.summary())  # lakes in every split
    # seeded: same seed same split, another seed another split
    again = make_split(tiles, grid, block_size_m=640.0, buffer_m=0.0, seed=1)
    other = make_split(tiles, grid, block_size_m=640.0, buffer_m=0.0, seed=2)
    assert again.blocks == split.blocks and other.blocks != split.blocks
    # blocks are whole: all tiles (centres) of one block are in one split
    blk = 64  # 640 m / 10 m
    for s, ts in split.tiles.items():
        for t in ts:
            key = f"{int((t.row + 16) // blk)},{int((t.col + 16) // blk)}"
            assert split.blocks[key] == s
    path = split.save(tmp_path / "split.json")
    loaded = Split.load(path)
    assert loaded.to_dict() == split.to_dict()
    assert json.loads(path.read_text())["params"]["block_size_m"] == 640.0
    gpkg = split.save_gpkg(tmp_path / "split.gpkg")
    import geopandas as gpd

    g = gpd.read_file(gpkg)
    assert g.crs.to_epsg() == 32645
    assert sorted(g["split"].unique()) == ["test", "train", "val"]
    assert len(g) == sum(len(v) for v in split.tiles.values())
    # polygons lie on the stack's grid: the first tile's box matches its window
    first = split.tiles["train"][0]
    x0, y0 = grid.transform @ (first.col, first.row)
    row = g[(g["split"] == "train") & (g["row"] == first.row) & (g["col"] == first.col)].iloc[0]
    assert row.geometry.bounds == pytest.approx((x0, y0 - 320, x0 + 320, y0))


def test_block_assignment_gives_every_split_a_real_share_and_keeps_val_apart_from_test():
    from cryonet.datasets import _assign_blocks

    # 6 x 6 blocks of background and ice; lakes in four blocks, one of which holds only 5 stray pixels
    counts = {(i, j): np.array([900, 100, 0, 0]) for i in range(6) for j in range(6)}
    lakes = {(1, 1): 1000, (1, 2): 5, (1, 3): 900, (4, 4): 800}
    for k, n in lakes.items():
        counts[k] = counts[k] + np.array([0, 0, 0, n])
    tiles = dict.fromkeys(counts, 4)
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    for seed in range(20):
        assign = _assign_blocks(counts, tiles, fractions, np.random.default_rng(seed), reach=1)
        lake_of = {s: sum(counts[k][3] for k, v in assign.items() if v == s) for s in ("train", "val", "test")}
        assert min(lake_of.values()) >= 800, (seed, lake_of)  # never just the 5 stray pixels
        val = [k for k, v in assign.items() if v == "val"]
        test = [k for k, v in assign.items() if v == "test"]
        gaps = [max(abs(a[0] - b[0]), abs(a[1] - b[1])) for a in val for b in test]
        assert min(gaps) >= 2, (seed, sorted(val), sorted(test))  # the buffer will not eat a validation block


def test_refined_split_balances_shares_after_the_buffer(split_setup):
    from cryonet.datasets import SPLITS

    _, _, tiles, grid = split_setup
    target = np.array([0.15, 0.15, 0.7])  # test, val, train
    gains = []
    for seed in range(3):
        greedy = make_split(tiles, grid, block_size_m=640.0, buffer_m=150.0, seed=seed, refine_iter=0)
        refined = make_split(tiles, grid, block_size_m=640.0, buffer_m=150.0, seed=seed)

        def cost(split):  # shares of the kept tiles, computed here from the split itself
            sums = np.stack([np.append(split.class_counts(s), len(split.get(s))) for s in SPLITS]).astype(float)
            share = sums / sums.sum(axis=0)
            return float(((share - target[:, None]) ** 2).sum() + np.clip(0.5 * target[:, None] - share, 0, None).sum())

        assert cost(refined) <= cost(greedy) + 1e-12, seed
        gains.append(cost(greedy) - cost(refined))
        for s in SPLITS:
            assert (refined.class_counts(s) > 0).all(), (seed, s, refined.summary())
    assert max(gains) > 0.01, gains  # the search does improve on the greedy here
    # the buffer drops exactly the tiles a brute-force reference drops: every tile of a block goes to the block's
    # split, then (test > val > train) a tile within buffer_m of a kept tile of a higher split is left out
    from shapely import box

    res = grid.res
    blk = 640.0 / res[0]

    def geom(t):
        return box(t.col * res[0], -(t.row + t.size) * res[1], (t.col + t.size) * res[0], -t.row * res[1])

    kept: dict[str, list] = {}
    for n, name in enumerate(SPLITS):
        mine = [
            t
            for t in tiles
            if refined.blocks[f"{int((t.row + t.size / 2) // blk)},{int((t.col + t.size / 2) // blk)}"] == name
        ]
        higher = [geom(u) for s in SPLITS[:n] for u in kept[s]]
        kept[name] = [t for t in mine if all(geom(t).distance(h) > 150.0 for h in higher)]
        assert {(t.row, t.col) for t in kept[name]} == {(t.row, t.col) for t in refined.get(name)}, name
        assert refined.dropped[name] == len(mine) - len(kept[name]), name


def test_split_load_bad_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="x.json"):
        Split.load(bad)
    with pytest.raises(DatasetError, match="not found"):
        Split.load(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------------------------
# normalisation
# ------------------------------------------------------------------------------------------------------------------
def test_normalizer_uses_training_tiles_only(tmp_path, make_stack):
    size = 64
    rng = np.random.default_rng(0)
    x = np.empty((2, size, size), np.float32)
    x[0] = rng.normal(5.0, 2.0, (size, size))
    x[1] = rng.normal(-1.0, 0.5, (size, size))
    x[:, :, 32:] = 1000.0  # "test" half: very different values
    x[0, 0, 0] = np.nan
    sp = make_stack(tmp_path / "s.tif", x, ["a", "b"])
    from rasterio.windows import Window

    train_windows = [Window(0, 0, 32, 32), Window(0, 32, 32, 32)]  # left half only
    norm = Normalizer.fit(sp, train_windows, max_pixels=10**6, clip_percentiles=None, progress=False)
    ref = x[:, :, :32].reshape(2, -1).astype(np.float64)
    for i in range(2):
        v = ref[i][np.isfinite(ref[i])]
        assert norm.mean[i] == pytest.approx(v.mean(), rel=1e-5)
        assert norm.std[i] == pytest.approx(v.std(), rel=1e-5)
    assert norm.layers == ["a", "b"]
    # winsorised statistics stay close to the plain ones on Gaussian data and far from the test values
    robust = Normalizer.fit(sp, train_windows, max_pixels=500, progress=False)
    assert abs(robust.mean[0] - 5.0) < 0.4 and robust.std[0] < 3
    # apply: standardised, NaN -> 0
    out = norm.apply(x[:, :32, :32])
    assert out.dtype == np.float32 and out[0, 0, 0] == 0.0
    assert out[1, 5, 5] == pytest.approx((x[1, 5, 5] - norm.mean[1]) / norm.std[1], rel=1e-5)
    back = Normalizer.load(norm.save(tmp_path / "n.json"))
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    with pytest.raises(DatasetError, match="trained on"):
        back.check_layers(["b", "a"], "other.tif")


# ------------------------------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------------------------------
def _terrain(dem: np.ndarray) -> np.ndarray:
    from cryonet.features.terrain import terrain_layers

    t = terrain_layers(dem, (RES, RES), layers=("aspect_sin", "aspect_cos", "aspect"))
    return np.stack([t["aspect_sin"], t["aspect_cos"], t["aspect"]])


@pytest.mark.parametrize(
    "hflip,vflip,k",
    [
        (True, False, 0),
        (False, True, 0),
        (False, False, 1),
        (False, False, 2),
        (False, False, 3),
        (True, True, 1),
        (True, False, 3),
    ],
)
def test_aspect_transform_matches_aspect_of_transformed_dem(hflip, vflip, k):
    rr, cc = np.mgrid[0:24, 0:24].astype(float)
    # tilted plane (downslope towards south-east) plus bumps, so that many directions occur
    dem = 3000 - 2.0 * cc * RES * 0.1 + 1.5 * rr * RES * 0.1 + 8 * np.sin(rr / 3) * np.cos(cc / 4)
    layers = ["b1", "aspect_sin", "aspect_cos", "aspect"]
    x = np.concatenate([dem[None], _terrain(dem)]).astype(np.float64)
    y = (dem > dem.mean()).astype(np.uint8)
    aug = Augmenter(layers)
    xt, yt = aug.transform(x, y, hflip=hflip, vflip=vflip, k=k)
    dem_t = dem
    if hflip:
        dem_t = dem_t[:, ::-1]
    if vflip:
        dem_t = dem_t[::-1, :]
    dem_t = np.rot90(dem_t, k)
    ref = _terrain(np.ascontiguousarray(dem_t))
    inner = (slice(1, -1), slice(1, -1))  # the terrain edge ring is NaN
    np.testing.assert_allclose(xt[1][inner], ref[0][inner], atol=1e-6)
    np.testing.assert_allclose(xt[2][inner], ref[1][inner], atol=1e-6)
    diff = np.abs((xt[3][inner] - ref[2][inner] + 180) % 360 - 180)
    assert np.nanmax(diff) < 1e-4  # float32 degrees
    np.testing.assert_array_equal(xt[0], dem_t)  # other layers move with the pixels, values unchanged
    np.testing.assert_array_equal(yt, (dem_t > dem.mean()).astype(np.uint8))


def test_sun_dependent_layers_switch_geometry_off_in_sun_safe_mode():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    y = np.zeros((4, 4), np.uint8)
    rng = np.random.default_rng(0)
    safe = Augmenter(["hillshade", "B2"], mode="sun_safe")
    assert not safe.geometric and safe.sun_layers == ["hillshade"]
    xs, _ = safe(x, y, rng)
    np.testing.assert_array_equal(xs, x)
    assert Augmenter(["hillshade", "B2"], mode="full").geometric
    assert Augmenter(["slope", "B2"], mode="sun_safe").geometric
    with pytest.raises(ValueError, match="augment mode"):
        Augmenter(["a"], mode="flip")


# ------------------------------------------------------------------------------------------------------------------
# class balance
# ------------------------------------------------------------------------------------------------------------------
def test_class_weights_inverse_sqrt_frequency():
    counts = np.array([8100, 900, 900, 100])
    w = class_weights(counts)
    freq = counts / counts.sum()
    expected = freq**-0.5
    expected /= (expected * freq).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w[3] / w[0] == pytest.approx(9.0)  # 81 x rarer -> 9 x heavier
    assert (w * freq).sum() == pytest.approx(1.0)
    w0 = class_weights([100, 0, 50, 0])
    assert w0[1] == 0 and w0[3] == 0
    capped = class_weights([10**6, 1, 0, 0], max_weight=20)
    assert capped[1] / capped[0] == pytest.approx(20.0)
    with pytest.raises(DatasetError):
        class_weights([0, 0, 0, 0])


def test_weighted_sampler_favours_lake_tiles():
    import torch

    from cryonet.datasets import Tile

    tiles = [Tile(0, i, 32, (1024, 0, 0, 0), 0.0) for i in range(9)] + [Tile(0, 99, 32, (924, 0, 0, 100), 0.0)]
    w = class_weights(np.sum([t.class_counts for t in tiles], axis=0))
    tw = tile_sampling_weights(tiles, w)
    expected_lake = (924 * w[0] + 100 * w[3]) / 1024
    assert tw[-1] == pytest.approx(expected_lake) and tw[0] == pytest.approx(w[0])
    g = torch.Generator().manual_seed(0)
    draws = list(torch.utils.data.WeightedRandomSampler(tw, 20000, replacement=True, generator=g))
    share = np.mean(np.asarray(draws) == 9)
    assert share == pytest.approx(tw[-1] / tw.sum(), abs=0.01)
    assert share > 0.15  # vs 0.10 without weighting


# ------------------------------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------------------------------
def test_tile_dataset_shapes_dtypes_and_determinism(tmp_path, make_stack):
    sp, lp = make_stack.twin(tmp_path, size=64, nodata_rows=3)
    assert StackFile(sp).layers == list(make_stack.TWIN_LAYERS)
    tiles = scan_tiles(sp, lp, 32, progress=False)
    norm = Normalizer.fit(sp, [t.window for t in tiles], progress=False)
    ds = TileDataset(sp, lp, tiles, norm, Augmenter(StackFile(sp).layers), seed=7)
    x, y = ds[0]
    assert x.shape == (8, 32, 32) and x.dtype.is_floating_point and str(x.dtype) == "torch.float32"
    assert y.shape == (32, 32) and str(y.dtype) == "torch.int64"
    assert not x.isnan().any()
    raw_x, raw_y = ds.read(0)
    assert raw_y.dtype == np.uint8
    # pixels with mostly NaN layers are ignored in y (first three rows of the scene), wherever augmentation moved
    # them; a pixel with one NaN layer of eight is kept (its layer becomes 0)
    assert int((y == LABEL_NODATA).sum()) == int(((raw_y == LABEL_NODATA) | np.isnan(raw_x).all(0)).sum())
    x2, y2 = ds[0]
    assert (x == x2).all() and (y == y2).all()  # same seed/epoch: same sample
    ds.set_epoch(1)
    changed = any(
        not (ds[i][1] == TileDataset(sp, lp, tiles, norm, Augmenter(StackFile(sp).layers), seed=7)[i][1]).all()
        for i in range(len(ds))
    )
    assert changed  # another epoch draws other flips
    plain = TileDataset(sp, lp, tiles, norm, None)
    xp, yp = plain[1]
    np.testing.assert_allclose(xp.numpy(), norm.apply(plain.read(1)[0]))
    bad = Normalizer(["x"] * 8, norm.mean, norm.std)
    with pytest.raises(DatasetError, match="trained on"):
        TileDataset(sp, lp, tiles, bad)


def test_plot_split_draws_every_kept_tile(split_setup, tmp_path):
    from cryonet.plots import SPLIT_COLOURS, plot_split

    sp, lp, tiles, grid = split_setup
    split = make_split(tiles, grid, block_size_m=640.0, buffer_m=0.0, seed=1)
    fig = plot_split(split, background=lp)
    ax = fig.axes[0]
    assert len(ax.images) == 1
    # one boundary collection per split, holding one outline per kept tile
    from matplotlib.colors import to_hex

    drawn = {}
    for coll in ax.collections:
        drawn[to_hex(coll.get_edgecolor()[0])] = len(coll.get_paths())
    for name in ("train", "val", "test"):
        assert drawn[SPLIT_COLOURS[name]] == len(split.get(name))
    x0, x1 = ax.get_xlim()
    assert x0 == pytest.approx(500.0) and x1 == pytest.approx(502.56)  # km, the stack's extent
    fig.savefig(tmp_path / "split.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_tile_dataset_in_worker_processes_matches_serial(tmp_path, make_stack):
    import torch

    sp, lp = make_stack.twin(tmp_path, size=64)
    tiles = scan_tiles(sp, lp, 32, 16, progress=False)
    norm = Normalizer.fit(sp, [t.window for t in tiles], progress=False)
    ds = TileDataset(sp, lp, tiles, norm, Augmenter(StackFile(sp).layers), seed=3)
    ds.set_epoch(2)
    serial = [ds[i] for i in range(len(ds))]
    ds[0]  # open handles in this process: workers must open their own
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, multiprocessing_context="fork")
    xs, ys = zip(*dl, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(x, torch.stack([s[0] for s in serial]))
    assert torch.equal(y, torch.stack([s[1] for s in serial]))
