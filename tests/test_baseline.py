"""The per-pixel baseline: layer selection by family, learning from one layer, chance without signal, the exact
test tiles of the split, determinism, the comparison table, and a CNN run's evaluate() result beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cryonet import baseline as B
from cryonet import metrics
from cryonet.constants import LABEL_NODATA
from cryonet.datasets import Split, invalid_pixels, scan_tiles
from cryonet.raster import open_raster, write_raster
from cryonet.stackfile import StackFile, StackFileError

SIZE, TILE = 64, 16
LAYERS = [("B2", "s2"), ("B3", "s2"), ("slope", "terrain"), ("coherence", "insar")]


def _write_stack(make_stack, root: Path, seed: int = 0) -> tuple[Path, Path, Split]:
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
    grid = make_stack.grid(SIZE)
    sp = make_stack(root / "stack.tif", stack, [n for n, _ in LAYERS], [g for _, g in LAYERS], grid=grid)
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
def scene(tmp_path_factory, make_stack):
    return _write_stack(make_stack, tmp_path_factory.mktemp("pix"))


def test_layers_are_chosen_by_group_from_the_layer_table(scene):
    """The classifier's layers: StackFile's selection (names, 1-based bands); bad groups and no table are errors."""
    sp, lp, split = scene
    sel = StackFile(sp).select(groups=["insar", "terrain"])
    assert (sel.names, sel.bands) == (("slope", "coherence"), (3, 4))
    assert StackFile(sp).select(groups=["s2"]).bands == (1, 2)
    for groups, message in ((("optics",), r"\['optics'\] not in this stack"), (("texture",), "texture")):
        with pytest.raises(StackFileError, match=message):
            B.pixel_classifier(sp, lp, split, groups=groups, progress=False)
    (sp.parent / "stack.layers.csv").rename(sp.parent / "moved.csv")
    try:
        with pytest.raises(StackFileError, match=r"stack\.layers\.csv: layer table not found.*`cryonet features`"):
            B.pixel_classifier(sp, lp, split, progress=False)
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
    assert (clf.layers, clf.band_indexes) == (["slope", "coherence"], [3, 4])  # band order, 1-based
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
    # class_intervals, CLASS_SCORES and paired_difference live in cryonet.metrics only (tested there)
    assert not any(hasattr(B, name) for name in ("class_intervals", "CLASS_SCORES", "paired_difference"))
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (12, 4, 4))
    cms[:, 3, :] = 0
    cms[:, :, 3] = 0  # lake absent everywhere: NaN
    table = metrics.class_intervals(cms, n_boot=300, seed=5)
    text = B.comparison_table({"m": {"class_ci": table}}, classes=["debris", "lake"])
    assert text.loc[("m", "lake"), "iou"] == "n/a"
    d = table.loc["debris"]
    assert text.loc[("m", "debris"), "iou"] == f"{d['iou']:.3f} [{d['iou_low']:.3f}, {d['iou_high']:.3f}]"


def test_result_keeps_its_keys_and_is_the_one_scorer():
    rng = np.random.default_rng(2)
    cms = rng.integers(0, 40, (9, 4, 4))
    res = B._result(cms, n_boot=60, alpha=0.1, seed=4, model="m", split="test")
    # the keys (and their order) of evaluate_pixel_classifier's result before the scorer moved to cryonet.metrics
    assert list(res) == [
        "model",
        "split",
        "n_tiles",
        "summary",
        "classes",
        "class_ci",
        "ci",
        "ci_level",
        "confusion_matrix",
        "cm_tiles",
    ]
    ref = metrics.score_cm_tiles(cms, n_boot=60, alpha=0.1, seed=4)
    assert res["ci"] == ref.ci and res["summary"] == ref.summary and res["ci_level"] == 1 - 0.1
    assert list(res["ci"]) == list(metrics.CI_METRICS)
    np.testing.assert_array_equal(res["class_ci"].to_numpy(), ref.class_ci.to_numpy())
    np.testing.assert_array_equal(res["confusion_matrix"], cms.sum(axis=0))


@pytest.mark.slow
def test_a_reused_run_and_evaluate_feed_the_comparison(tmp_path, make_stack):
    """A reused run (cryonet.train.train_or_reuse); its evaluate() result goes where the pixel baseline's goes (one
    scorer for a CNN run)."""
    import json

    from cryonet import train as T
    from cryonet.config import get_profile

    sp, lp = make_stack.twin(tmp_path / "twin", size=128, seed=0, table=True)  # the table the pixel baseline reads
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
    diff = metrics.paired_difference(ev["cm_tiles"], pix["cm_tiles"], fn, n_boot=50, seed=prof.seed)
    assert diff[0] == pytest.approx(ev["summary"]["miou_glacier"] - pix["summary"]["miou_glacier"])


def test_train_step_seconds_runs_a_real_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 4, (2, 32, 32)).astype(np.int64)
    y[0, 0, 0] = LABEL_NODATA
    s = B.train_step_seconds("unet", x, y, encoder="resnet18", steps=2)
    assert 0 < s < 30
