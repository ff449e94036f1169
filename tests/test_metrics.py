"""Metrics against scikit-learn, zero-division rules, bootstrap intervals and outline distances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from skimage.segmentation import find_boundaries
from sklearn import metrics as skm

from cryonet import metrics
from cryonet.constants import CLASSES, GLACIER_CLASSES, LABEL_NODATA

LABELS = list(range(len(CLASSES)))


@pytest.fixture
def labels() -> tuple[np.ndarray, np.ndarray]:
    """Random (2, 48, 48) reference with ~10 % ignored pixels and a prediction that is right ~60 % of the time."""
    rng = np.random.default_rng(42)
    y_true = rng.choice(4, size=(2, 48, 48), p=[0.55, 0.2, 0.15, 0.1]).astype(np.uint8)
    y_pred = np.where(rng.random(y_true.shape) < 0.6, y_true, rng.integers(0, 4, y_true.shape)).astype(np.uint8)
    y_true[rng.random(y_true.shape) < 0.1] = LABEL_NODATA
    return y_true, y_pred


def _valid(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y_true != LABEL_NODATA
    return y_true[keep], y_pred[keep]


def test_confusion_matrix_matches_sklearn(labels):
    y_true, y_pred = labels
    cm = metrics.confusion_matrix(y_true, y_pred)
    t, p = _valid(y_true, y_pred)
    assert cm.dtype == np.int64 and cm.shape == (4, 4)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(t, p, labels=LABELS))
    assert cm.sum() == (y_true != LABEL_NODATA).sum() < y_true.size


def test_class_metrics_match_sklearn(labels):
    y_true, y_pred = labels
    t, p = _valid(y_true, y_pred)
    df = metrics.class_metrics(metrics.confusion_matrix(y_true, y_pred))
    assert list(df.index) == list(CLASSES)
    np.testing.assert_allclose(df["iou"], skm.jaccard_score(t, p, labels=LABELS, average=None))
    prec, rec, f1, support = skm.precision_recall_fscore_support(t, p, labels=LABELS)
    np.testing.assert_allclose(df["precision"], prec)
    np.testing.assert_allclose(df["recall"], rec)
    np.testing.assert_allclose(df["f1"], f1)
    np.testing.assert_array_equal(df["support"], support)
    np.testing.assert_array_equal(df["predicted"], np.bincount(p, minlength=4))


def test_summary_matches_sklearn(labels):
    y_true, y_pred = labels
    t, p = _valid(y_true, y_pred)
    s = metrics.summary(metrics.confusion_matrix(y_true, y_pred))
    glacier = [CLASSES.index(c) for c in GLACIER_CLASSES]
    assert s["pixel_accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    assert s["miou_all"] == pytest.approx(skm.jaccard_score(t, p, labels=LABELS, average="macro"))
    assert s["miou_glacier"] == pytest.approx(skm.jaccard_score(t, p, labels=glacier, average="macro"))
    assert s["overall_iou_glacier"] == s["miou_glacier"] and s["overall_iou_all"] == s["miou_all"]
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, labels=glacier, average="macro")
    assert (s["mean_precision_glacier"], s["mean_recall_glacier"], s["mean_f1_glacier"]) == pytest.approx(
        (prec, rec, f1)
    )
    prec, rec, f1, _ = skm.precision_recall_fscore_support(t, p, labels=LABELS, average="macro")
    assert (s["mean_precision_all"], s["mean_recall_all"], s["mean_f1_all"]) == pytest.approx((prec, rec, f1))
    # glacier vs background, pooled: binary IoU of "class > 0"
    assert s["glacier_union_iou"] == pytest.approx(skm.jaccard_score(t > 0, p > 0))
    assert s["kappa"] == pytest.approx(skm.cohen_kappa_score(t, p))
    assert s["n_pixels"] == t.size


def test_class_absent_and_one_sided_classes():
    # lake (3) absent from both; debris (2) only in the reference; clean_ice (1) only predicted.
    y_true = np.array([0, 0, 0, 2, 2, 0, 0, 255])
    y_pred = np.array([0, 0, 1, 0, 0, 0, 1, 3])  # the 3 sits on an ignored pixel: not counted
    cm = metrics.confusion_matrix(y_true, y_pred)
    df = metrics.class_metrics(cm)
    assert df.loc["lake"].drop(["support", "predicted"]).isna().all()
    # present on one side only: undefined ratios are 0, as scikit-learn with zero_division=0
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y_true[:7], y_pred[:7], labels=[0, 1, 2], zero_division=0)
    np.testing.assert_allclose(df["precision"].iloc[:3], prec)
    np.testing.assert_allclose(df["recall"].iloc[:3], rec)
    np.testing.assert_allclose(df["f1"].iloc[:3], f1)
    assert df.loc["debris", "iou"] == 0 and df.loc["clean_ice", "iou"] == 0
    s = metrics.summary(cm)
    # lake is left out of the means: glacier mean over clean_ice and debris (both 0), all-class mean over 3 classes
    assert s["miou_glacier"] == 0.0
    assert s["miou_all"] == pytest.approx(df.loc["background", "iou"] / 3)
    assert s["mean_recall_all"] == pytest.approx(rec.mean())


def test_summary_of_empty_matrix_is_nan():
    s = metrics.summary(np.zeros((4, 4), dtype=np.int64))
    assert np.isnan(s["pixel_accuracy"]) and np.isnan(s["miou_glacier"]) and np.isnan(s["glacier_union_iou"])
    assert s["n_pixels"] == 0


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"y_pred has 1 counted pixels"):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 7]))
    with pytest.raises(ValueError, match=r"y_true"):
        metrics.confusion_matrix(np.array([0, 5]), np.array([0, 1]))


def _tile_cms(n_tiles: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cms = []
    for _ in range(n_tiles):
        acc = rng.uniform(0.5, 0.9)  # tiles differ in difficulty
        t = rng.integers(0, 4, size=(16, 16))
        p = np.where(rng.random(t.shape) < acc, t, rng.integers(0, 4, t.shape))
        cms.append(metrics.confusion_matrix(t, p))
    return np.stack(cms)


def _miou(cm: np.ndarray) -> float:
    return metrics.summary(cm)["miou_glacier"]


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    cms = _tile_cms(40, seed=1)
    est, low, high = metrics.bootstrap_ci(cms, _miou, n_boot=300, seed=3)
    assert est == pytest.approx(_miou(cms.sum(axis=0)))
    assert low < est < high
    assert metrics.bootstrap_ci(cms, _miou, n_boot=300, seed=3) == (est, low, high)
    assert metrics.bootstrap_ci(cms, _miou, n_boot=300, seed=4) != (est, low, high)


def test_bootstrap_ci_matches_a_loop_over_resampled_tiles():
    # independent reference: plain resampling of tile indices with replacement, many replicates
    cms = _tile_cms(30, seed=2)
    rng = np.random.default_rng(0)
    ref = [_miou(cms[rng.integers(0, 30, 30)].sum(axis=0)) for _ in range(2000)]
    _, low, high = metrics.bootstrap_ci(cms, _miou, n_boot=2000, seed=0)
    ref_low, ref_high = np.quantile(ref, [0.025, 0.975])
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.15 * width and abs(high - ref_high) < 0.15 * width


def test_bootstrap_ci_shrinks_with_more_tiles():
    small = metrics.bootstrap_ci(_tile_cms(10, seed=5), _miou, n_boot=300)
    large = metrics.bootstrap_ci(_tile_cms(160, seed=5), _miou, n_boot=300)
    assert (large[2] - large[1]) < 0.6 * (small[2] - small[1])


def test_class_intervals_match_bootstrap_ci():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (12, 4, 4))
    cms[:, 3, :] = 0
    cms[:, :, 3] = 0  # class 3 absent everywhere: NaN
    table = metrics.class_intervals(cms, n_boot=300, seed=5)
    assert list(table.index) == list(CLASSES)
    assert list(table.columns) == [f"{s}{x}" for s in metrics.CLASS_SCORES for x in ("", "_low", "_high")]
    total = cms.sum(axis=0)
    for k, name in enumerate(["background", "clean_ice", "debris"]):
        tp, fp, fn = total[k, k], total[:, k].sum() - total[k, k], total[k, :].sum() - total[k, k]
        assert table.loc[name, "iou"] == pytest.approx(tp / (tp + fp + fn))  # by hand
        for score in ("iou", "f1"):
            est, lo, hi = metrics.bootstrap_ci(
                cms, lambda m, k=k, s=score: metrics.per_class(m)[s][k], n_boot=300, seed=5
            )
            assert table.loc[name, score] == pytest.approx(est)
            assert (table.loc[name, f"{score}_low"], table.loc[name, f"{score}_high"]) == pytest.approx((lo, hi))
    assert np.isnan(table.loc["lake", "iou"]) and np.isnan(table.loc["lake", "iou_low"])
    with pytest.raises(ValueError, match="shape"):
        metrics.class_intervals(cms[:, :3, :3])


def test_tile_resamples_is_one_seeded_multinomial_draw():
    counts = metrics._tile_resamples(7, 5, seed=1)
    expected = np.random.default_rng(1).multinomial(7, np.full(7, 1 / 7), size=5)
    assert counts.shape == (5, 7) and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, expected)
    assert (counts.sum(axis=1) == 7).all()


def test_bootstrap_numbers_are_those_of_the_previous_implementation():
    # Recorded from the implementation before the tile resampling was written once (commit 847b2be: bootstrap_ci,
    # class_intervals and baseline.paired_difference each drawing their own multinomial counts, baseline._result
    # calling bootstrap_ci once per summary key). Same seed, same input -> the same numbers, to the bit.
    a, b = _tile_cms(12, seed=7), _tile_cms(12, seed=8)
    assert metrics.bootstrap_ci(a, _miou, n_boot=200, seed=3) == (
        0.6304593606413477,
        0.5604633171650178,
        0.6966480679516144,
    )
    kappa = metrics.bootstrap_ci(a, lambda m: metrics.summary(m)["kappa"], n_boot=200, seed=3)
    assert kappa == (0.6922510870588074, 0.6154742995221649, 0.7583729426302913)
    table = metrics.class_intervals(a, n_boot=200, seed=3)
    assert table.loc["debris", ["iou", "iou_low", "iou_high", "f1_low", "f1_high"]].tolist() == [
        0.6233766233766234,
        0.5395996263260012,
        0.7002456854915776,
        0.7009609654509532,
        0.8236994072524719,
    ]
    assert metrics.paired_difference(a, b, _miou, n_boot=200, seed=3) == (
        -0.01339434684234675,
        -0.11862183933287913,
        0.06867598377729224,
    )
    ci = metrics.score_cm_tiles(a, n_boot=200, alpha=0.05, seed=3).ci
    assert tuple(ci["miou_glacier"].values()) == (0.6304593606413477, 0.5604633171650178, 0.6966480679516144)
    assert tuple(ci["glacier_union_iou"].values()) == (0.8499197431781701, 0.8169946343135163, 0.8788568820873378)
    assert tuple(ci["pixel_accuracy"].values()) == (0.7692057291666666, 0.7115641276041667, 0.8190185546875)


def test_paired_difference():
    rng = np.random.default_rng(1)
    good = rng.integers(0, 5, (10, 4, 4)) + np.eye(4, dtype=np.int64) * 100  # mostly on the diagonal
    bad = good.copy()
    bad[:, 2, 2] -= 60
    bad[:, 2, 0] += 60  # debris often missed
    fn = lambda m: metrics.per_class(m)["iou"][2]  # noqa: E731
    d, lo, hi = metrics.paired_difference(good, bad, fn, n_boot=200, seed=2)
    assert d == pytest.approx(fn(good.sum(0)) - fn(bad.sum(0))) and 0 < lo <= d <= hi
    # the same replicates as bootstrap_ci: with b all zeros and a metric that is 0 there, (a - b) is bootstrap_ci(a)
    share = lambda m: m[2, 2] / max(int(m.sum()), 1)  # noqa: E731
    assert metrics.paired_difference(good, np.zeros_like(good), share, n_boot=200, seed=2) == metrics.bootstrap_ci(
        good, share, n_boot=200, seed=2
    )
    with pytest.raises(ValueError, match="same tiles"):
        metrics.paired_difference(good, good[:5], fn)
    with pytest.raises(ValueError, match="n_boot"):
        metrics.paired_difference(good, bad, fn, n_boot=0)


@pytest.mark.parametrize("seed", [0, 7])
def test_paired_difference_of_identical_inputs_is_exactly_zero(seed):
    cms = _tile_cms(15, seed=seed)
    for key in ("miou_glacier", "kappa", "pixel_accuracy"):
        d = metrics.paired_difference(cms, cms.copy(), lambda m, k=key: metrics.summary(m)[k], n_boot=300, seed=seed)
        assert d == (0.0, 0.0, 0.0)  # zero difference, zero-width interval


def test_score_cm_tiles_matches_sklearn(labels):
    y_true, y_pred = labels
    # 18 tiles of 16 x 16 px: the two 48 x 48 images cut into 3 x 3 blocks each
    windows = [np.s_[i, r : r + 16, c : c + 16] for i in range(2) for r in (0, 16, 32) for c in (0, 16, 32)]
    cms = np.stack([metrics.confusion_matrix(y_true[w], y_pred[w]) for w in windows])
    assert cms.shape == (18, 4, 4)
    scores = metrics.score_cm_tiles(cms, n_boot=100, alpha=0.1, seed=4)
    t, p = _valid(y_true, y_pred)
    np.testing.assert_array_equal(scores.confusion_matrix, skm.confusion_matrix(t, p, labels=LABELS))
    df = scores.classes
    assert list(df.index) == list(CLASSES)
    np.testing.assert_allclose(df["iou"], skm.jaccard_score(t, p, labels=LABELS, average=None))
    prec, rec, f1, support = skm.precision_recall_fscore_support(t, p, labels=LABELS)
    np.testing.assert_allclose(df["precision"], prec)
    np.testing.assert_allclose(df["recall"], rec)
    np.testing.assert_allclose(df["f1"], f1)
    np.testing.assert_array_equal(df["support"], support)
    glacier = [CLASSES.index(c) for c in GLACIER_CLASSES]
    assert scores.summary["miou_glacier"] == pytest.approx(skm.jaccard_score(t, p, labels=glacier, average="macro"))
    assert scores.summary["kappa"] == pytest.approx(skm.cohen_kappa_score(t, p))
    # the class table with intervals holds the same point estimates
    for score in metrics.CLASS_SCORES:
        np.testing.assert_array_equal(scores.class_ci[score].to_numpy(), df[score].to_numpy())
    assert scores.n_tiles == 18 and scores.n_pixels == t.size and scores.ci_level == 1 - 0.1
    for key, v in scores.ci.items():
        assert v["estimate"] == scores.summary[key] and v["low"] <= v["estimate"] <= v["high"], key


def test_score_cm_tiles_intervals_are_bootstrap_ci_and_class_intervals_to_the_bit():
    rng = np.random.default_rng(0)
    cms = rng.integers(0, 50, (12, 4, 4))
    cms[:, 3, :] = 0
    cms[:, :, 3] = 0  # lake absent everywhere: NaN class, left out of the means
    scores = metrics.score_cm_tiles(cms, n_boot=300, alpha=0.1, seed=5)
    assert list(scores.ci) == list(metrics.CI_METRICS)
    for key in metrics.CI_METRICS:
        ref = metrics.bootstrap_ci(cms, lambda m, k=key: metrics.summary(m)[k], n_boot=300, alpha=0.1, seed=5)
        assert (scores.ci[key]["estimate"], scores.ci[key]["low"], scores.ci[key]["high"]) == ref, key
    pd.testing.assert_frame_equal(
        scores.class_ci, metrics.class_intervals(cms, n_boot=300, alpha=0.1, seed=5), check_exact=True
    )
    pd.testing.assert_frame_equal(scores.classes, metrics.class_metrics(cms.sum(axis=0)), check_exact=True)
    assert scores.summary == metrics.summary(cms.sum(axis=0))


def test_score_cm_tiles_keys_and_errors():
    cms = _tile_cms(6, seed=1)
    scores = metrics.score_cm_tiles(cms, n_boot=20, seed=2, ci_metrics=("kappa",))
    assert list(scores.ci) == ["kappa"]
    assert list(scores.to_dict()) == [
        "n_tiles",
        "summary",
        "classes",
        "class_ci",
        "ci",
        "ci_level",
        "n_boot",
        "bootstrap_unit",
        "bootstrap_seed",
        "class_names",
        "confusion_matrix",
        "cm_tiles",
        "n_pixels",
    ]
    d = scores.to_dict(("ci", "n_tiles", "bootstrap_seed"))
    assert list(d) == ["ci", "n_tiles", "bootstrap_seed"] and d["n_tiles"] == 6 and d["bootstrap_seed"] == 2
    with pytest.raises(KeyError, match="no key"):
        scores.to_dict(["tiles"])
    with pytest.raises(ValueError, match="not keys of metrics.summary"):
        metrics.score_cm_tiles(cms, ci_metrics=("miou",))
    with pytest.raises(ValueError, match="shape"):
        metrics.score_cm_tiles(cms[:, :3, :3])
    with pytest.raises(ValueError, match="alpha"):
        metrics.score_cm_tiles(cms, alpha=1.5)


def test_boundary_distance_of_offset_edges_is_the_offset():
    # two straight outlines 4 columns apart: every boundary pixel is exactly 4 x 10 m from the other outline
    t = np.zeros((32, 40), dtype=bool)
    p = np.zeros_like(t)
    t[:, :15] = True
    p[:, :19] = True
    d = metrics.boundary_distance(t, p, res=10.0)
    assert d["mean_m"] == pytest.approx(40.0) and d["p95_m"] == pytest.approx(40.0)
    assert d["n_true"] == d["n_pred"] == 32  # the array edge is not a boundary
    # anisotropic pixels: the offset is along columns, so the column size counts
    assert metrics.boundary_distance(t, p, res=(10.0, 20.0))["mean_m"] == pytest.approx(80.0)


def test_boundary_distance_of_offset_squares_matches_brute_force():
    t = np.zeros((48, 48), dtype=bool)
    p = np.zeros_like(t)
    t[10:30, 10:30] = True
    p[13:33, 14:34] = True  # shifted by (3, 4) pixels = 50 m at 10 m
    d = metrics.boundary_distance(t, p, res=10.0)
    bt = np.argwhere(find_boundaries(t, mode="inner", connectivity=1)) * 10.0
    bp = np.argwhere(find_boundaries(p, mode="inner", connectivity=1)) * 10.0
    dist = cdist(bt, bp)
    pooled = np.concatenate([dist.min(axis=1), dist.min(axis=0)])
    assert d["mean_m"] == pytest.approx(pooled.mean())
    assert d["p95_m"] == pytest.approx(np.percentile(pooled, 95))
    assert d["max_m"] == pytest.approx(50.0)  # Hausdorff distance of a shifted square = the shift length
    # a pure shift along columns gives the known offset as the Hausdorff distance too
    assert metrics.boundary_distance(t, np.roll(t, 3, axis=1), res=10.0)["max_m"] == pytest.approx(30.0)


def test_boundary_distance_empty_masks():
    empty = np.zeros((16, 16), dtype=bool)
    square = empty.copy()
    square[4:10, 4:10] = True
    assert np.isnan(metrics.boundary_distance(empty, empty, 10.0)["mean_m"])
    assert np.isinf(metrics.boundary_distance(square, empty, 10.0)["mean_m"])
