"""The per-pixel baseline: layer selection by family, learning from one layer, chance without signal, the exact
test tiles of the split, determinism, the comparison table, and a CNN run's evaluate() result beside it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cryonet import baseline as B
from cryonet import metrics
from cryonet.constants import LABEL_NODATA
from cryonet.datasets import DatasetError, Split, invalid_pixels, scan_tiles
from cryonet.raster import Grid, open_raster, write_raster

SIZE, TILE = 64, 16
LAYERS = [("B2", "s2"), ("B3", "s2"), ("slope", "terrain"), ("coherence", "insar")]


def _write_stack(root: Path, seed: int = 0) -> tuple[Path, Path, Split]:
    """64 x 64 px: four classes in 4 px stripes (every 16 px tile holds all four); B2 = class / 4 + small noise
    (classes separable by B2 alone), every other layer pure noise; a NaN row, a nodata label column."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    lab = (((rr // 4) + (cc // 4)) % 4).astype(np.uint8)
    lab[:, -1] = LABEL_NODATA
    b2 = lab.astype(np.float32) / 4 + rng.normal(0, 0.02, lab.shape)
    noise = rng.normal(0.3, 0.1, (3, SIZE, SIZE))
    stack = np.concatenate([b2[None], noise]).astype(np.float32)
    stack[:, 0, :] = np.nan  # first row: every layer missing -> nodata
    grid = Grid(CRS.from_epsg(32645), Affine(10, 0, 500_000.0, 0, -10, 3_130_000.0), SIZE, SIZE)
    sp = write_raster(root / "stack.tif", stack, grid, nodata=float("nan"), descriptions=[n for n, _ in LAYERS])
    with open(root / "stack.layers.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["layer", "group", "units", "source", "band"])
        for i, (name, group) in enumerate(LAYERS, start=1):
            w.writerow([name, group, "", "test", i])
    lp = write_raster(root / "labels.tif", lab, grid, nodata=LABEL_NODATA)
    tiles = scan_tiles(sp, lp, TILE, TILE, progress=False)
    # a hand-made split: the right-hand column of tiles is the test set, one tile validation, the rest training
    test = [t for t in tiles if t.col == SIZE - TILE]
    val = [t for t in tiles if t.col == 0 and t.row == 0]
    train = [t for t in tiles if t not in test and t not in val]
    split = Split(
        {"train": train, "val": val, "test": test},
        {},
        {"tile_size": TILE},
        grid.crs.to_wkt(),
        tuple(grid.transform)[:6],
        (SIZE, SIZE),
    )
    return sp, lp, split


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return _write_stack(tmp_path_factory.mktemp("pix"))


def test_select_layers_by_group(scene):
    sp, _, _ = scene
    assert B.select_layers(sp, ["s2"]) == (["B2", "B3"], [1, 2])
    assert B.select_layers(sp, ["insar", "terrain"]) == (["slope", "coherence"], [3, 4])
    with pytest.raises(ValueError, match="unknown layer group"):
        B.select_layers(sp, ["optics"])
    with pytest.raises(DatasetError, match="no layer of the groups"):
        B.select_layers(sp, ["texture"])
    (sp.parent / "stack.layers.csv").rename(sp.parent / "moved.csv")
    try:
        with pytest.raises(DatasetError, match=r"stack\.layers\.csv.*group"):
            B.select_layers(sp, ["s2"])
    finally:
        (sp.parent / "moved.csv").rename(sp.parent / "stack.layers.csv")


@pytest.mark.parametrize("estimator", B.ESTIMATORS)
def test_separable_by_one_layer_gives_iou_near_one(scene, estimator):
    sp, lp, split = scene
    clf = B.pixel_classifier(
        sp,
        lp,
        split,
        groups=("s2",),
        max_pixels=3000,
        estimator=estimator,
        progress=False,
        **({"n_estimators": 20} if estimator == "random_forest" else {}),
    )
    assert clf.layers == ["B2", "B3"] and clf.n_train_pixels <= 3000
    res = B.evaluate_pixel_classifier(clf, sp, lp, split, "test", n_boot=200, progress=False)
    ious = res["classes"]["iou"].to_numpy()
    assert ious.min() > 0.97, res["classes"]
    assert res["summary"]["miou_all"] > 0.97
    assert res["class_ci"].loc["debris", "iou_low"] > 0.9


def test_groups_without_signal_are_near_chance(scene):
    sp, lp, split = scene
    clf = B.pixel_classifier(
        sp, lp, split, groups=("terrain", "insar"), max_pixels=3000, n_estimators=20, progress=False
    )
    res = B.evaluate_pixel_classifier(clf, sp, lp, split, "test", n_boot=50, progress=False)
    # four balanced classes guessed at random: accuracy ~0.25, IoU ~0.14 per class
    assert res["summary"]["pixel_accuracy"] < 0.4
    assert res["summary"]["miou_all"] < 0.3


def test_scores_exactly_the_test_tiles_of_the_split(scene):
    sp, lp, split = scene
    clf = B.pixel_classifier(sp, lp, split, max_pixels=2000, n_estimators=10, progress=False)
    res = B.evaluate_pixel_classifier(clf, sp, lp, split, "test", n_boot=20, progress=False)
    assert res["tiles"] == split.get("test") and res["n_tiles"] == len(split.get("test")) == 4
    # independent reference: scikit-learn's confusion matrix of each test window, nodata rule applied by hand
    expected = np.zeros((4, 4), np.int64)
    with open_raster(sp) as s, open_raster(lp) as lab:
        for t in split.get("test"):
            x = s.read(window=t.window)
            y = lab.read(1, window=t.window)
            keep = ~invalid_pixels(x, y)
            feats = x[:2].reshape(2, -1).T[keep.ravel()]
            expected += sk_confusion_matrix(y[keep], clf.estimator.predict(feats), labels=[0, 1, 2, 3])
    np.testing.assert_array_equal(res["confusion_matrix"], expected)
    np.testing.assert_array_equal(res["cm_tiles"].sum(axis=0), expected)
    # test tiles: 4 tiles of 16 x 16, first row NaN (16 px) and last label column nodata (64 px, 1 shared)
    assert expected.sum() == 4 * TILE * TILE - TILE - SIZE + 1
    # the training sample never touches a test tile
    test_cols = {t.col for t in split.get("test")}
    assert all(t.col not in test_cols for t in split.get("train"))


def test_deterministic_with_a_seed(scene):
    sp, lp, split = scene
    kw = dict(groups=("s2", "terrain"), max_pixels=1500, n_estimators=15, progress=False)
    a = B.pixel_classifier(sp, lp, split, seed=3, **kw)
    b = B.pixel_classifier(sp, lp, split, seed=3, **kw)
    with open_raster(sp) as s:
        x = s.read()
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    xa, ya = B.sample_training_pixels(sp, lp, split.get("train"), [1, 3], max_pixels=500, seed=3, progress=False)
    xb, yb = B.sample_training_pixels(sp, lp, split.get("train"), [1, 3], max_pixels=500, seed=3, progress=False)
    xc, _ = B.sample_training_pixels(sp, lp, split.get("train"), [1, 3], max_pixels=500, seed=4, progress=False)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    assert len(np.unique(xa[:, 0])) == len(xa)  # no pixel drawn twice


def test_predict_window_marks_nodata(scene):
    sp, lp, split = scene
    clf = B.pixel_classifier(sp, lp, split, max_pixels=2000, n_estimators=10, progress=False)
    pred = clf.predict_window(sp)
    assert pred.shape == (SIZE, SIZE) and (pred[0] == LABEL_NODATA).all()
    with open_raster(lp) as src:
        lab = src.read(1)
    ok = lab[1:, :-1]
    assert (pred[1:, :-1] == ok).mean() > 0.97


def test_comparison_table_formats_class_intervals():
    # class_intervals moved to cryonet.metrics (tested there); the old name still works
    assert B.class_intervals is metrics.class_intervals and B.CLASS_SCORES == metrics.CLASS_SCORES
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (12, 4, 4))
    cms[:, 3, :] = 0
    cms[:, :, 3] = 0  # lake absent everywhere: NaN
    table = metrics.class_intervals(cms, n_boot=300, seed=5)
    text = B.comparison_table({"m": {"class_ci": table}}, classes=["debris", "lake"])
    assert text.loc[("m", "lake"), "iou"] == "n/a"
    d = table.loc["debris"]
    assert text.loc[("m", "debris"), "iou"] == f"{d['iou']:.3f} [{d['iou_low']:.3f}, {d['iou_high']:.3f}]"


def test_paired_difference():
    rng = np.random.default_rng(1)
    good = rng.integers(0, 5, (10, 4, 4)) + np.eye(4, dtype=np.int64) * 100  # mostly on the diagonal
    bad = good.copy()
    bad[:, 2, 2] -= 60
    bad[:, 2, 0] += 60  # debris often missed
    fn = lambda m: metrics.per_class(m)["iou"][2]  # noqa: E731
    d, lo, hi = B.paired_difference(good, bad, fn, n_boot=200, seed=2)
    assert d == pytest.approx(fn(good.sum(0)) - fn(bad.sum(0))) and 0 < lo <= d <= hi
    assert B.paired_difference(good, good, fn, n_boot=50) == (0.0, 0.0, 0.0)
    # the same replicates as bootstrap_ci: with b all zeros and a metric that is 0 there, (a - b) is bootstrap_ci(a)
    share = lambda m: m[2, 2] / max(int(m.sum()), 1)  # noqa: E731
    assert B.paired_difference(good, np.zeros_like(good), share, n_boot=200, seed=2) == pytest.approx(
        metrics.bootstrap_ci(good, share, n_boot=200, seed=2)
    )
    with pytest.raises(ValueError, match="same tiles"):
        B.paired_difference(good, good[:5], fn)


@pytest.mark.slow
def test_a_reused_run_and_evaluate_feed_the_comparison(tmp_path):
    """A reused run (cryonet.train.train_or_reuse); its evaluate() result goes where the pixel baseline's goes (one
    scorer for a CNN run)."""
    import json

    from test_datasets import TWIN_LAYERS, write_twin

    from cryonet import train as T
    from cryonet.config import get_profile

    sp, lp = write_twin(tmp_path / "twin", size=128, seed=0)
    with open(sp.parent / "stack.layers.csv", "w", newline="") as fh:  # the layer table the pixel baseline reads
        w = csv.writer(fh)
        w.writerow(["layer", "group", "units", "source", "band"])
        for i, name in enumerate(TWIN_LAYERS, start=1):
            group = "s2" if name.startswith("B") else "indices" if name == "ndsi" else "terrain"
            w.writerow([name, group, "", "test twin", i])
    run = tmp_path / "run"
    prof = get_profile("ci").replace(
        tile_size=32,
        tile_stride=16,
        epochs=1,
        batch_size=4,
        max_train_tiles=None,
        split={"block_size_m": 640.0, "buffer_m": 0.0},
    )
    first, status = T.train_or_reuse(sp, lp, run, model="unet", profile=prof)
    assert status == "trained" and first.finished
    stamp = (run / "last.pt").stat().st_mtime_ns
    again, status = T.train_or_reuse(sp, lp, run, model="unet", profile=prof)
    assert status == "reused" and (run / "last.pt").stat().st_mtime_ns == stamp
    assert again.best_score == first.best_score
    assert not hasattr(B, "score_run") and not hasattr(B, "model_predictor")  # evaluate is the one CNN scorer
    assert not hasattr(B, "train_or_reuse")  # a training run's reuse: cryonet.train.train_or_reuse

    ev = T.evaluate(run, "test", n_boot=50, progress=False)
    saved = json.loads((run / "metrics_test.json").read_text())
    cms = np.load(run / "cm_tiles_test.npy")
    np.testing.assert_array_equal(cms.sum(axis=0), np.array(saved["confusion_matrix"]))
    assert ev["model"] == "unet" and ev["encoder"] == "resnet18" and ev["n_tiles"] == len(cms)
    ref = metrics.class_intervals(cms, n_boot=50, seed=prof.seed)  # independently, from the file
    np.testing.assert_array_equal(ev["class_ci"].to_numpy(), ref.to_numpy())

    # the pixel baseline on the same tiles: same keys, so both go into comparison_table and paired_difference
    clf = B.pixel_classifier(sp, lp, run, max_pixels=2000, n_estimators=10, seed=prof.seed, progress=False)
    pix = B.evaluate_pixel_classifier(clf, sp, lp, run, "test", n_boot=50, seed=prof.seed, progress=False)
    assert set(pix) - {"seconds_predict"} <= set(ev)
    for key in ("summary", "ci"):
        assert set(pix[key]) <= set(ev[key]), key
    assert [t.window for t in ev["tiles"]] == [t.window for t in pix["tiles"]]
    assert list(ev["classes"].columns) == list(pix["classes"].columns)
    table = B.comparison_table({"cnn": ev, "pixel": pix}, classes=["debris"])
    d = ref.loc["debris"]
    assert table.loc[("cnn", "debris"), "iou"] == f"{d['iou']:.3f} [{d['iou_low']:.3f}, {d['iou_high']:.3f}]"
    fn = lambda m: metrics.summary(m)["miou_glacier"]  # noqa: E731
    diff = B.paired_difference(ev["cm_tiles"], pix["cm_tiles"], fn, n_boot=50, seed=prof.seed)
    assert diff[0] == pytest.approx(ev["summary"]["miou_glacier"] - pix["summary"]["miou_glacier"])


def test_train_step_seconds_runs_a_real_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 4, (2, 32, 32)).astype(np.int64)
    y[0, 0, 0] = LABEL_NODATA
    s = B.train_step_seconds("unet", x, y, encoder="resnet18", steps=2)
    assert 0 < s < 30
