"""Segmentation metrics from the confusion matrix, bootstrap intervals over test tiles, outline distances.

Conventions
-----------
* **Confusion matrix** ``cm`` of shape ``(C, C)``, int64: ``cm[i, j]`` = number of pixels whose reference class
  is ``i`` and predicted class is ``j`` (rows = truth, columns = prediction; scikit-learn's convention). Pixels
  whose reference is ``ignore_index`` (255, :data:`cryonet.constants.LABEL_NODATA`) are not counted.
* Per class ``k``: ``TP = cm[k, k]``, ``FP = cm[:, k].sum() - TP``, ``FN = cm[k, :].sum() - TP``;
  ``IoU = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
  ``F1 = 2 TP / (2 TP + FP + FN)``, ``support = TP + FN`` (reference pixels of the class).

Zero division (explicit, the same for every per-class metric)
-------------------------------------------------------------
* A class **absent from both the reference and the prediction** (``TP + FP + FN = 0``): IoU, precision, recall
  and F1 are **NaN** (nothing to score) and the class is left out of every mean below.
* A class present on **one side only**: an undefined ratio counts as **0** (precision of a class never predicted
  while present in the reference; recall of a class predicted while absent from the reference). IoU and F1 are
  then 0 anyway. This equals scikit-learn with ``zero_division=0`` except for the both-absent case.
* Means ("macro" averages) are taken over the classes that are not NaN; a mean over only NaN classes is NaN.
  Pixel accuracy and kappa of an empty matrix are NaN.

Summary figures (:func:`summary`)
---------------------------------
The paper's headline "overall IoU" does not say which average it is. We report all three readings, named:

* ``overall_iou_glacier`` (= ``miou_glacier``): mean of the per-class IoU over the three glacier classes
  (clean_ice, debris, lake), background excluded. This is our primary "overall IoU".
* ``overall_iou_all`` (= ``miou_all``): mean of the per-class IoU over all four classes, background included.
* ``glacier_union_iou``: micro (pooled) IoU of the binary problem "any glacier class vs background": pixels of
  any glacier class predicted as any glacier class are true positives (confusion *between* glacier classes is
  not an error here), background predicted as glacier are false positives, glacier predicted as background are
  false negatives.

Further keys: ``pixel_accuracy`` (trace / total), ``mean_precision_*``, ``mean_recall_*``, ``mean_f1_*`` (macro
means with suffix ``_glacier`` or ``_all`` as above), ``kappa`` (Cohen's kappa over all four classes) and
``n_pixels``.

Bootstrap over tiles
--------------------
Intervals resample whole tiles with replacement (percentile intervals; :func:`bootstrap_ci`,
:func:`class_intervals`, :func:`paired_difference`). Every one of them draws its replicates through
:func:`_tile_resamples`, so one seed gives the same replicates everywhere. :func:`score_cm_tiles` is the scorer of
a set of per-tile matrices (a CNN run, the pixel baseline, a transferred model): summary, per-class table and the
intervals of both, from one draw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from cryonet.constants import CLASSES, GLACIER_CLASSES, LABEL_NODATA

logger = logging.getLogger(__name__)

#: Per-class scores that :func:`class_intervals` gives bootstrap intervals for.
CLASS_SCORES: tuple[str, ...] = ("iou", "precision", "recall", "f1")
#: Keys of :func:`summary` that :func:`score_cm_tiles` gives bootstrap intervals for (its ``ci``).
CI_METRICS: tuple[str, ...] = (
    "miou_glacier",
    "miou_all",
    "glacier_union_iou",
    "pixel_accuracy",
    "mean_f1_glacier",
    "mean_precision_glacier",
    "mean_recall_glacier",
)

__all__ = [
    "CI_METRICS",
    "CLASS_SCORES",
    "TileScores",
    "boundary_distance",
    "bootstrap_ci",
    "class_intervals",
    "class_metrics",
    "confusion_matrix",
    "paired_difference",
    "per_class",
    "score_cm_tiles",
    "summary",
]


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(CLASSES), ignore_index: int | None = LABEL_NODATA
) -> np.ndarray:
    """Confusion matrix of two label arrays (one ``np.bincount`` over ``true * C + pred``).

    Args:
        y_true: Reference labels, any shape (e.g. ``(rows, cols)`` or ``(N, rows, cols)``), integer.
        y_pred: Predicted labels, same shape, integer in ``[0, num_classes)`` wherever the reference is valid.
        num_classes: Number of classes ``C``.
        ignore_index: Reference value of pixels that are not counted (None: count every pixel).

    Returns:
        ``(C, C)`` int64 matrix, rows = reference, columns = prediction.

    Raises:
        ValueError: Shapes differ, or a counted pixel has a label outside ``[0, C)`` in either array.
    """
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    t = t.ravel()
    p = p.ravel()
    if ignore_index is not None:
        keep = t != ignore_index
        if not keep.all():
            t, p = t[keep], p[keep]
    t = t.astype(np.int64, copy=False)
    p = p.astype(np.int64, copy=False)
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            values = np.unique(arr[bad])[:5].tolist()
            raise ValueError(
                f"{name} has {int(bad.sum())} counted pixels with labels outside [0, {num_classes}) "
                f"(e.g. {values}); expected class ids, with ignore_index={ignore_index} for unlabelled reference"
            )
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(num: np.ndarray, den: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` and NaN where ``absent`` (see the module docstring)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    out[absent] = np.nan
    return out


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class counts and scores of one matrix ``(C, C)`` or a stack ``(..., C, C)``.

    Args:
        cm: Confusion matrix (rows = reference), or a stack of them.

    Returns:
        Arrays of shape ``(..., C)``: ``tp``, ``fp``, ``fn``, ``support`` (int64) and ``iou``, ``precision``,
        ``recall``, ``f1`` (float64; NaN for classes absent from both reference and prediction, 0 for undefined
        ratios of classes present on one side only).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"confusion matrix must have shape (..., C, C), got {cm.shape}")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fp = cm.sum(axis=-2) - tp
    fn = cm.sum(axis=-1) - tp
    absent = (tp + fp + fn) == 0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "iou": _ratio(tp, tp + fp + fn, absent),
        "precision": _ratio(tp, tp + fp, absent),
        "recall": _ratio(tp, tp + fn, absent),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, absent),
    }


def class_metrics(cm: np.ndarray, class_names: Sequence[str] = CLASSES) -> pd.DataFrame:
    """Table of per-class scores.

    Args:
        cm: ``(C, C)`` confusion matrix (rows = reference).
        class_names: Names of the ``C`` classes, in label order.

    Returns:
        DataFrame indexed by class name with columns ``iou``, ``precision``, ``recall``, ``f1`` (0-1; NaN for a
        class absent from both reference and prediction), ``support`` (reference pixels) and ``predicted``
        (predicted pixels).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {len(class_names)} class names")
    pc = per_class(cm)
    df = pd.DataFrame(
        {
            "iou": pc["iou"],
            "precision": pc["precision"],
            "recall": pc["recall"],
            "f1": pc["f1"],
            "support": pc["support"],
            "predicted": pc["tp"] + pc["fp"],
        },
        index=pd.Index(list(class_names), name="class"),
    )
    return df


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN (without a warning) where every value is NaN."""
    valid = ~np.isnan(values)
    n = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.divide(total, n, out=np.full(np.shape(total), np.nan), where=n > 0)


def summary(
    cm: np.ndarray,
    class_names: Sequence[str] = CLASSES,
    glacier_classes: Sequence[str] = GLACIER_CLASSES,
) -> dict[str, float]:
    """Headline figures of one confusion matrix (definitions in the module docstring).

    Args:
        cm: ``(C, C)`` confusion matrix (rows = reference).
        class_names: Names of the ``C`` classes, in label order.
        glacier_classes: The classes of interest; every other class counts as background for
            ``glacier_union_iou``.

    Returns:
        Dict with ``pixel_accuracy``, ``miou_glacier``, ``miou_all``, ``overall_iou_glacier``,
        ``overall_iou_all``, ``glacier_union_iou``, ``mean_precision_glacier``, ``mean_precision_all``,
        ``mean_recall_glacier``, ``mean_recall_all``, ``mean_f1_glacier``, ``mean_f1_all``, ``kappa`` (floats
        0-1, NaN when undefined) and ``n_pixels``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {len(class_names)} class names")
    unknown = [c for c in glacier_classes if c not in class_names]
    if unknown:
        raise ValueError(f"glacier classes {unknown} are not among the class names {list(class_names)}")
    g = np.array([list(class_names).index(c) for c in glacier_classes], dtype=np.int64)
    bg = np.setdiff1d(np.arange(len(class_names)), g)
    pc = per_class(cm)
    n = int(cm.sum())
    out: dict[str, float] = {"pixel_accuracy": float(np.trace(cm) / n) if n else float("nan")}
    for metric in ("iou", "precision", "recall", "f1"):
        prefix = "miou" if metric == "iou" else f"mean_{metric}"
        out[f"{prefix}_glacier"] = float(_nanmean(pc[metric][g]))
        out[f"{prefix}_all"] = float(_nanmean(pc[metric]))
    out["overall_iou_glacier"] = out["miou_glacier"]
    out["overall_iou_all"] = out["miou_all"]
    tp = cm[np.ix_(g, g)].sum()
    fp = cm[np.ix_(bg, g)].sum()
    fn = cm[np.ix_(g, bg)].sum()
    out["glacier_union_iou"] = float(tp / (tp + fp + fn)) if tp + fp + fn else float("nan")
    # Cohen's kappa: (p_o - p_e) / (1 - p_e), p_e from the row and column marginals.
    if n:
        p_o = np.trace(cm) / n
        p_e = float((cm.sum(axis=0) * cm.sum(axis=1)).sum()) / n**2
        out["kappa"] = float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")
    else:
        out["kappa"] = float("nan")
    out["n_pixels"] = n
    return out


def _tile_stack(cms_per_tile: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``cms_per_tile`` as a ``(T, C, C)`` int64 array, checked (``T >= 1``; ``C == n_classes`` when given)."""
    cms = np.asarray(cms_per_tile, dtype=np.int64)
    if cms.ndim != 3 or cms.shape[1] != cms.shape[2] or cms.shape[0] < 1:
        raise ValueError(f"cms_per_tile must have shape (T, C, C) with T >= 1, got {cms.shape}")
    if n_classes is not None and cms.shape[1] != n_classes:
        raise ValueError(f"cms_per_tile must have shape (T, {n_classes}, {n_classes}), got {cms.shape}")
    return cms


def _check_level(n_boot: int, alpha: float) -> None:
    """Raise ValueError unless ``n_boot >= 1`` and ``0 < alpha < 1``."""
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")


def _tile_resamples(n_tiles: int, n_boot: int, seed: int) -> np.ndarray:
    """Multiplicities of the tiles in every bootstrap replicate: the one place where tiles are resampled.

    One multinomial draw ``(n_boot, T)`` from ``np.random.default_rng(seed)`` (each row sums to ``T``; identical in
    distribution to ``T`` draws of a tile with replacement). :func:`bootstrap_ci`, :func:`class_intervals`,
    :func:`paired_difference` and :func:`score_cm_tiles` all resample through it, so that one seed gives the same
    replicates in each of them.

    Args:
        n_tiles: Number of tiles ``T`` (at least 1).
        n_boot: Number of replicates (at least 1).
        seed: Seed of the generator.

    Returns:
        ``(n_boot, T)`` int64 counts.
    """
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_tiles, np.full(n_tiles, 1.0 / n_tiles), size=n_boot)


def _resampled(cms: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Replicate matrices ``(n_boot, C, C)``: per-tile matrices ``(T, C, C)`` summed with multiplicities ``counts``."""
    return np.tensordot(counts, cms, axes=(1, 0))


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """``alpha/2`` and ``1 - alpha/2`` quantiles of the non-NaN replicate values (NaN, NaN when there are none)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(
    cms_per_tile: np.ndarray,
    metric_fn: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of a metric, resampling test tiles with replacement.

    Each replicate draws ``T`` tiles with replacement and sums their confusion matrices; the metric of the
    summed matrix is one bootstrap value. Resampling whole tiles (not pixels) keeps the spatial correlation
    within a tile. The draw is vectorised: the multiplicities of the tiles in all replicates come from one
    multinomial draw ``(n_boot, T)`` (:func:`_tile_resamples`), and the replicate matrices are one ``tensordot``;
    ``metric_fn`` is then called once per replicate.

    Args:
        cms_per_tile: ``(T, C, C)`` confusion matrices of the ``T`` test tiles.
        metric_fn: Function of a ``(C, C)`` matrix returning a float, e.g.
            ``lambda cm: summary(cm)["miou_glacier"]``.
        n_boot: Number of bootstrap replicates.
        alpha: Two-sided level: the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles.
        seed: Seed of the resampling (same seed, same interval).

    Returns:
        ``(estimate, low, high)``: the metric of the summed matrix of all tiles, and the interval. Replicates
        where the metric is NaN are left out of the quantiles.

    Raises:
        ValueError: Bad shapes or parameters.
    """
    cms = _tile_stack(cms_per_tile)
    _check_level(n_boot, alpha)
    estimate = float(metric_fn(cms.sum(axis=0)))
    boot_cms = _resampled(cms, _tile_resamples(cms.shape[0], n_boot, seed))  # (n_boot, C, C)
    values = np.fromiter((metric_fn(m) for m in boot_cms), dtype=np.float64, count=n_boot)
    return (estimate, *_percentile_interval(values, alpha))


def _class_interval_table(
    cm: np.ndarray, boot_cms: np.ndarray, alpha: float, class_names: Sequence[str]
) -> pd.DataFrame:
    """The :func:`class_intervals` table from the summed matrix ``(C, C)`` and the replicates ``(n_boot, C, C)``."""
    boot = per_class(boot_cms)  # arrays (n_boot, C): all replicates scored in one vectorised call
    point = per_class(cm)
    out: dict[str, np.ndarray] = {}
    for score in CLASS_SCORES:
        low = np.full(len(class_names), np.nan)
        high = np.full(len(class_names), np.nan)
        for k in range(len(class_names)):
            low[k], high[k] = _percentile_interval(boot[score][:, k], alpha)
        out[score], out[f"{score}_low"], out[f"{score}_high"] = point[score], low, high
    return pd.DataFrame(out, index=pd.Index(list(class_names), name="class"))


def class_intervals(
    cms_per_tile: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    class_names: Sequence[str] = CLASSES,
) -> pd.DataFrame:
    """Per-class IoU, precision, recall and F1 with percentile bootstrap intervals over tiles.

    The replicates are those of :func:`bootstrap_ci` with the same ``seed`` (:func:`_tile_resamples`), so an
    interval here equals ``bootstrap_ci`` of the same score. Not written as 16 calls of ``bootstrap_ci`` because
    :func:`per_class` scores all replicate matrices ``(n_boot, C, C)`` in one vectorised call.

    Args:
        cms_per_tile: ``(T, C, C)`` confusion matrices.
        n_boot: Replicates.
        alpha: Two-sided level.
        seed: Seed of the resampling.
        class_names: Class names in label order.

    Returns:
        DataFrame indexed by class, columns ``<score>``, ``<score>_low``, ``<score>_high`` for each of
        :data:`CLASS_SCORES` (NaN where a class is absent from every replicate).

    Raises:
        ValueError: Bad shapes or parameters.
    """
    cms = _tile_stack(cms_per_tile, len(class_names))
    _check_level(n_boot, alpha)
    boot_cms = _resampled(cms, _tile_resamples(cms.shape[0], n_boot, seed))
    return _class_interval_table(cms.sum(axis=0), boot_cms, alpha, class_names)


def paired_difference(
    cms_a: np.ndarray,
    cms_b: np.ndarray,
    metric_fn: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Difference of a metric between two predictions of the same tiles, with a paired bootstrap interval.

    Both sets of per-tile matrices are resampled with the *same* tile multiplicities in every replicate (the two
    predictions are scored on identical tiles, so their errors are correlated and the difference varies less than
    either score). The multiplicities are those of :func:`bootstrap_ci` with the same seed
    (:func:`_tile_resamples`). The difference is ``metric(a) - metric(b)``.

    Args:
        cms_a: ``(T, C, C)`` per-tile confusion matrices of prediction a.
        cms_b: ``(T, C, C)`` of prediction b, same tiles in the same order.
        metric_fn: Function of a ``(C, C)`` matrix, e.g. ``lambda cm: summary(cm)["miou_glacier"]``.
        n_boot: Replicates.
        alpha: Two-sided level.
        seed: Seed of the resampling.

    Returns:
        ``(difference, low, high)``; a lower bound above 0 means a is better than b at that level. Replicates where
        the difference is NaN are left out of the quantiles.

    Raises:
        ValueError: The two stacks differ in shape (not scored on the same tiles), bad shapes or parameters.
    """
    a = np.asarray(cms_a, dtype=np.int64)
    b = np.asarray(cms_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            f"paired_difference: per-tile matrices must have the same (T, C, C) shape, got {a.shape} "
            f"and {b.shape} (score both on the same tiles)"
        )
    a, b = _tile_stack(a), _tile_stack(b)
    _check_level(n_boot, alpha)
    estimate = float(metric_fn(a.sum(axis=0)) - metric_fn(b.sum(axis=0)))
    counts = _tile_resamples(a.shape[0], n_boot, seed)
    boot_a, boot_b = _resampled(a, counts), _resampled(b, counts)
    diffs = np.array([metric_fn(x) - metric_fn(y) for x, y in zip(boot_a, boot_b, strict=True)], dtype=np.float64)
    return (estimate, *_percentile_interval(diffs, alpha))


@dataclass(frozen=True, eq=False)
class TileScores:
    """Everything a model's per-tile confusion matrices say: the pooled scores and their bootstrap intervals.

    Made by :func:`score_cm_tiles`; every scorer of a prediction (a CNN run, the pixel baseline, a transferred model)
    builds its result from one of these, so that the numbers and their keys mean the same everywhere.

    Attributes:
        cm_tiles: ``(T, C, C)`` int64 per-tile matrices (rows = reference), in the order they were given.
        confusion_matrix: ``(C, C)`` int64, their sum.
        summary: :func:`summary` of the summed matrix.
        classes: :func:`class_metrics` table of the summed matrix.
        class_ci: :func:`class_intervals` table (per-class scores with intervals).
        ci: Summary metric -> ``{"estimate", "low", "high"}`` (:func:`bootstrap_ci` of that key of
            :func:`summary`), for the keys asked for (:data:`CI_METRICS` by default).
        alpha: Two-sided level of the intervals.
        n_boot: Bootstrap replicates.
        seed: Seed of the tile resampling.
        class_names: Class names in label order.
    """

    cm_tiles: np.ndarray
    confusion_matrix: np.ndarray
    summary: dict[str, float]
    classes: pd.DataFrame
    class_ci: pd.DataFrame
    ci: dict[str, dict[str, float]]
    alpha: float
    n_boot: int
    seed: int
    class_names: tuple[str, ...]

    @property
    def ci_level(self) -> float:
        """Coverage of the intervals, ``1 - alpha`` (0.95 for 95 % intervals)."""
        return 1 - self.alpha

    @property
    def n_tiles(self) -> int:
        """Number of scored tiles ``T``."""
        return int(self.cm_tiles.shape[0])

    @property
    def n_pixels(self) -> int:
        """Number of scored pixels (the sum of the summed matrix)."""
        return int(self.confusion_matrix.sum())

    def to_dict(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The scores as a dict, with the key names the results of the scorers use.

        Args:
            keys: Keys to return, in this order (default: all of them): ``n_tiles``, ``summary``, ``classes``,
                ``class_ci``, ``ci``, ``ci_level``, ``n_boot``, ``bootstrap_unit`` (``"tile"``),
                ``bootstrap_seed``, ``class_names`` (list), ``confusion_matrix``, ``cm_tiles``, ``n_pixels``.

        Returns:
            Dict of those keys. Arrays and tables are the objects held here, not copies.

        Raises:
            KeyError: An unknown key.
        """
        full: dict[str, Any] = {
            "n_tiles": self.n_tiles,
            "summary": self.summary,
            "classes": self.classes,
            "class_ci": self.class_ci,
            "ci": self.ci,
            "ci_level": self.ci_level,
            "n_boot": self.n_boot,
            "bootstrap_unit": "tile",
            "bootstrap_seed": self.seed,
            "class_names": list(self.class_names),
            "confusion_matrix": self.confusion_matrix,
            "cm_tiles": self.cm_tiles,
            "n_pixels": self.n_pixels,
        }
        if keys is None:
            return full
        unknown = [k for k in keys if k not in full]
        if unknown:
            raise KeyError(f"TileScores has no key(s) {unknown}; expected some of {list(full)}")
        return {k: full[k] for k in keys}


def score_cm_tiles(
    cm_tiles: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    ci_metrics: Sequence[str] = CI_METRICS,
    class_names: Sequence[str] = CLASSES,
) -> TileScores:
    """Score per-tile confusion matrices: summary, per-class table, and bootstrap intervals of both.

    The one scorer behind :func:`cryonet.train.evaluate`, :func:`cryonet.baseline.evaluate_pixel_classifier` and
    :func:`cryonet.transfer.score_prediction`. The matrices are summed for the point estimates (:func:`summary`,
    :func:`class_metrics`). The tiles are resampled **once** (:func:`_tile_resamples` with ``seed``) and the same
    replicates give the interval of every key in ``ci_metrics`` and of every per-class score, so each interval
    equals :func:`bootstrap_ci` (or :func:`class_intervals`) of that score with the same seed, to the bit;
    :func:`summary` runs once per replicate instead of once per replicate and key.

    Args:
        cm_tiles: ``(T, C, C)`` confusion matrices of the ``T`` tiles (rows = reference).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals (0.05: 95 %).
        seed: Seed of the tile resampling.
        ci_metrics: Keys of :func:`summary` to give intervals for.
        class_names: Class names in label order (``C`` of them).

    Returns:
        The :class:`TileScores`.

    Raises:
        ValueError: Bad shapes or parameters, or a key of ``ci_metrics`` that :func:`summary` does not return.
    """
    cms = _tile_stack(cm_tiles, len(class_names))
    _check_level(n_boot, alpha)
    cm = cms.sum(axis=0)
    point = summary(cm, class_names)
    unknown = [k for k in ci_metrics if k not in point]
    if unknown:
        raise ValueError(f"ci_metrics {unknown} are not keys of metrics.summary; expected some of {list(point)}")
    boot_cms = _resampled(cms, _tile_resamples(cms.shape[0], n_boot, seed))  # (n_boot, C, C)
    boot = [summary(m, class_names) for m in boot_cms]
    ci = {}
    for key in ci_metrics:
        values = np.fromiter((s[key] for s in boot), dtype=np.float64, count=n_boot)
        low, high = _percentile_interval(values, alpha)
        ci[key] = {"estimate": float(point[key]), "low": low, "high": high}
    return TileScores(
        cm_tiles=cms,
        confusion_matrix=cm,
        summary=point,
        classes=class_metrics(cm, class_names),
        class_ci=_class_interval_table(cm, boot_cms, alpha, class_names),
        ci=ci,
        alpha=alpha,
        n_boot=int(n_boot),
        seed=seed,
        class_names=tuple(class_names),
    )


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary pixels: in the mask, with a 4-neighbour outside it (image edges are not boundaries)."""
    # border_value=1: the outside of the array counts as inside the mask, so an outline cut by the tile or scene
    # edge does not get an artificial boundary along that edge.
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def boundary_distance(
    y_true_mask: np.ndarray, y_pred_mask: np.ndarray, res: float | tuple[float, float]
) -> dict[str, Any]:
    """Symmetric distance between the outlines of two binary masks, metres.

    Boundaries are the inner boundary pixels of each mask (a pixel of the mask with a 4-connected neighbour
    outside it, found by binary erosion; the array edge is not a boundary). For every boundary pixel of one mask,
    the distance to the nearest boundary pixel of the other is read from a Euclidean distance transform
    (``scipy.ndimage.distance_transform_edt`` with ``sampling=res``, so in metres, centre to centre). The two
    directed sets are pooled ("symmetric") before the statistics.

    Args:
        y_true_mask: Reference mask ``(rows, cols)``, bool (e.g. ``labels == debris``).
        y_pred_mask: Predicted mask, same shape.
        res: Pixel size in metres, one number or ``(row_size, col_size)``.

    Returns:
        Dict with ``mean_m`` (mean), ``p95_m`` (95th percentile), ``max_m`` (Hausdorff distance) of the pooled
        distances, and ``n_true`` / ``n_pred`` (boundary pixel counts). With no boundary in either mask the
        distances are NaN; with a boundary in only one of them they are ``inf``.
    """
    t = np.asarray(y_true_mask, dtype=bool)
    p = np.asarray(y_pred_mask, dtype=bool)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"masks must be 2-D (rows, cols) of the same shape, got {t.shape} and {p.shape}")
    bt, bp = _boundary(t), _boundary(p)
    n_true, n_pred = int(bt.sum()), int(bp.sum())
    if n_true == 0 or n_pred == 0:
        value = float("nan") if n_true == n_pred else float("inf")
        return {"mean_m": value, "p95_m": value, "max_m": value, "n_true": n_true, "n_pred": n_pred}
    sampling = (float(res), float(res)) if np.isscalar(res) else tuple(float(r) for r in res)
    d_to_pred = ndimage.distance_transform_edt(~bp, sampling=sampling)
    d_to_true = ndimage.distance_transform_edt(~bt, sampling=sampling)
    d = np.concatenate([d_to_pred[bt], d_to_true[bp]])
    return {
        "mean_m": float(d.mean()),
        "p95_m": float(np.percentile(d, 95)),
        "max_m": float(d.max()),
        "n_true": n_true,
        "n_pred": n_pred,
    }
