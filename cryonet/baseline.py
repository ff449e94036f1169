"""The trivial baseline of the model comparison, and tile-wise scoring that puts it and the CNNs on one footing.

The question a reader should ask of any segmentation network is whether it beats something simple. Here the
simple thing is **a per-pixel classifier on the Sentinel-2 bands alone** (:func:`pixel_classifier`): a
scikit-learn random forest (or a multinomial logistic regression) that sees each pixel's ten reflectances and
nothing of its neighbourhood, terrain, radar or texture. It is trained on a pixel sample of the **training tiles of
the CNN's own spatial split** (``RUN/split.json``) and scored on **exactly the same test tiles** as
:func:`cryonet.train.evaluate` scores the CNN (:func:`evaluate_pixel_classifier`): same windows, same nodata rule
(:func:`cryonet.datasets.invalid_pixels`: label 255 or more than half of the layers NaN), one confusion matrix per
tile, summed, with percentile bootstrap intervals that resample whole tiles (:func:`cryonet.metrics.score_cm_tiles`,
the scorer :func:`cryonet.train.evaluate` uses too). Overlapping test tiles count their shared pixels once per tile,
as in :func:`cryonet.train.evaluate`.

The scoring loop (:func:`score_tiles`) takes any batch predictor. A trained CNN run is **not** scored here: its
one scorer is :func:`cryonet.train.evaluate`, which keeps the per-tile confusion matrices
(``RUN/cm_tiles_<split>.npy``) and the per-class intervals (:func:`cryonet.metrics.class_intervals`), and whose
result carries the same keys as that of :func:`evaluate_pixel_classifier`, so either can go into
:func:`comparison_table` and :func:`cryonet.metrics.paired_difference`.

Layers are chosen by family (``groups``, names of :data:`cryonet.constants.LAYER_GROUPS`) from the stack's sidecar
table ``STACK.layers.csv`` (column ``group``; :meth:`cryonet.stackfile.StackFile.select`), so the baseline can also
be fitted on other families for comparison.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from rasterio.windows import Window

from cryonet import metrics
from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import DatasetError, Split, Tile, check_pair, invalid_pixels
from cryonet.raster import open_raster
from cryonet.stackfile import StackFile

logger = logging.getLogger(__name__)

#: Estimators :func:`pixel_classifier` can fit.
ESTIMATORS: tuple[str, ...] = ("random_forest", "logistic")

EstimatorName = Literal["random_forest", "logistic"]
#: A batch predictor: ``(N, layers, rows, cols)`` float32 in physical units (NaN = missing) -> ``(N, rows, cols)``
#: class ids.
BatchPredictor = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------------------------
# layers and splits
# --------------------------------------------------------------------------------------------------------------------
def load_split(split: Split | str | os.PathLike[str]) -> Split:
    """A :class:`~cryonet.datasets.Split` from itself, its ``split.json`` or a run directory holding one."""
    if isinstance(split, Split):
        return split
    path = Path(split)
    return Split.load(path / "split.json" if path.is_dir() else path)


def _read_tile(s_src: Any, l_src: Any, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """All layers and the labels of one tile.

    Layers ``(layers, rows, cols)`` float32, labels ``(rows, cols)`` int64 with the training pipeline's nodata rule
    applied (255 where :func:`invalid_pixels`).
    """
    x = s_src.read(window=tile.window, out_dtype="float32")
    y = l_src.read(1, window=tile.window).astype(np.int64)
    y[invalid_pixels(x, y)] = LABEL_NODATA
    return x, y


# --------------------------------------------------------------------------------------------------------------------
# the per-pixel classifier
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class PixelClassifier:
    """A fitted per-pixel classifier and what it was fitted on.

    Attributes:
        estimator: The fitted scikit-learn pipeline (median imputation of NaN, then the classifier).
        kind: ``"random_forest"`` or ``"logistic"``.
        groups: Layer families it sees.
        layers: Names of the layers it sees, in stack order.
        band_indexes: 1-based band indexes of those layers in the stack.
        n_train_pixels: Pixels it was fitted on.
        train_class_pixels: Pixels per class in the training sample, ``(classes,)``.
        seconds_fit: Wall time of the fit, seconds.
        seed: Seed of the pixel sample and the estimator.
        params: The estimator's settings, for tables.
    """

    estimator: Any
    kind: str
    groups: tuple[str, ...]
    layers: list[str]
    band_indexes: list[int]
    n_train_pixels: int
    train_class_pixels: np.ndarray
    seconds_fit: float
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Short label for tables, e.g. ``"pixel RF (s2)"``."""
        short = {"random_forest": "RF", "logistic": "logistic"}.get(self.kind, self.kind)
        return f"pixel {short} ({'+'.join(self.groups)})"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classify every pixel of a stack array.

        Args:
            x: ``(layers, rows, cols)`` or ``(N, layers, rows, cols)`` float, **all** layers of the stack in band
                order (physical units, NaN = missing); the classifier picks its own.

        Returns:
            ``(rows, cols)`` or ``(N, rows, cols)`` uint8 class ids.
        """
        arr = np.asarray(x, dtype=np.float32)
        single = arr.ndim == 3
        if single:
            arr = arr[None]
        if arr.ndim != 4:
            raise ValueError(f"expected (layers, rows, cols) or (N, layers, rows, cols), got shape {arr.shape}")
        if max(self.band_indexes) > arr.shape[1]:
            raise ValueError(f"the classifier reads band {max(self.band_indexes)} but x has {arr.shape[1]} layers")
        sel = arr[:, [i - 1 for i in self.band_indexes]]  # (N, k, rows, cols)
        n, k, rows, cols = sel.shape
        feats = sel.transpose(0, 2, 3, 1).reshape(-1, k)
        pred = self.estimator.predict(feats).astype(np.uint8).reshape(n, rows, cols)
        return pred[0] if single else pred

    def predict_window(self, stack_path: str | os.PathLike[str], window: Window | None = None) -> np.ndarray:
        """Classify a window of a stack; pixels whose layers are mostly NaN get 255.

        Args:
            stack_path: Feature stack (same layers as at fit time).
            window: Pixel window (default: the whole raster; memory ~ layers x pixels x 4 bytes).

        Returns:
            ``(rows, cols)`` uint8 class ids, 255 = no valid input.
        """
        with open_raster(stack_path) as src:
            x = src.read(window=window, out_dtype="float32")
        pred = self.predict(x)
        pred[invalid_pixels(x, np.zeros(pred.shape, np.uint8))] = LABEL_NODATA
        return pred


def _make_estimator(kind: str, seed: int, n_jobs: int, **params: Any) -> tuple[Any, dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "random_forest":
        settings = {"n_estimators": 100, "max_depth": 16, "min_samples_leaf": 2, **params}
        clf = RandomForestClassifier(class_weight="balanced", n_jobs=n_jobs, random_state=seed, **settings)
        # keep_empty_features: a layer that is NaN in the whole sample keeps its column (predict sees the same width)
        pipe = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), clf)
    elif kind == "logistic":
        settings = {"C": 1.0, "max_iter": 500, **params}
        clf = LogisticRegression(class_weight="balanced", random_state=seed, **settings)
        pipe = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), clf)
    else:
        raise ValueError(f"unknown estimator {kind!r}; expected one of {ESTIMATORS}")
    return pipe, {"class_weight": "balanced", **settings}


def sample_training_pixels(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tiles: Sequence[Tile],
    band_indexes: Sequence[int],
    *,
    max_pixels: int = 200_000,
    seed: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random sample of the valid pixels of some tiles, each pixel at most once.

    Every tile contributes up to ``ceil(max_pixels / len(tiles))`` random valid pixels; pixels drawn from two
    overlapping tiles are kept once (by their position in the raster), and the pooled sample is cut to
    ``max_pixels`` at random.

    Args:
        stack_path: Feature stack.
        labels_path: Label raster on its grid.
        tiles: Tiles to sample (the training tiles of a split).
        band_indexes: 1-based bands to return.
        max_pixels: Largest sample.
        seed: Seed of the draws.
        progress: Show a tqdm bar.

    Returns:
        ``(features, labels)``: ``(n, len(band_indexes))`` float32 and ``(n,)`` uint8, ``n <= max_pixels``.

    Raises:
        DatasetError: No tiles, or no valid pixel in them.
    """
    from tqdm.auto import tqdm

    if not tiles:
        raise DatasetError(f"{stack_path}: no tiles to sample training pixels from.")
    grid = check_pair(stack_path, labels_path)
    rng = np.random.default_rng(seed)
    per_tile = max(1, math.ceil(max_pixels / len(tiles)))
    bands = [i - 1 for i in band_indexes]
    feats, labs, where = [], [], []
    with open_raster(stack_path) as s_src, open_raster(labels_path) as l_src:
        for tile in tqdm(tiles, desc="sampling pixels", disable=not progress, leave=False):
            x, y = _read_tile(s_src, l_src, tile)
            valid = np.flatnonzero(y.ravel() != LABEL_NODATA)
            if valid.size == 0:
                continue
            take = np.sort(rng.choice(valid, size=min(per_tile, valid.size), replace=False))
            rr, cc = np.divmod(take, tile.size)
            feats.append(x[bands].reshape(len(bands), -1)[:, take].T)
            labs.append(y.ravel()[take].astype(np.uint8))
            where.append((tile.row + rr) * grid.width + (tile.col + cc))
    if not feats:
        raise DatasetError(f"{stack_path}: the {len(tiles)} tiles hold no valid labelled pixel to train on.")
    f, lab, pos = np.concatenate(feats), np.concatenate(labs), np.concatenate(where)
    _, first = np.unique(pos, return_index=True)  # a pixel shared by overlapping tiles counts once
    keep = np.sort(first)
    if keep.size > max_pixels:
        keep = np.sort(rng.choice(keep, size=max_pixels, replace=False))
    return f[keep], lab[keep]


def pixel_classifier(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    split: Split | str | os.PathLike[str],
    *,
    groups: Sequence[str] = ("s2",),
    max_pixels: int = 200_000,
    seed: int = 0,
    estimator: EstimatorName = "random_forest",
    n_jobs: int = 2,
    progress: bool = True,
    **params: Any,
) -> PixelClassifier:
    """Fit the per-pixel baseline on the training tiles of a split.

    Args:
        stack_path: Feature stack (with its sidecar layer table).
        labels_path: Label raster on the stack's grid (0..3, 255 = nodata).
        split: The CNN run's split: a :class:`~cryonet.datasets.Split`, its ``split.json`` or the run directory.
        groups: Layer families the classifier sees (default: the Sentinel-2 bands alone); each must be in the
            stack's layer table.
        max_pixels: Size of the training pixel sample (:func:`sample_training_pixels`).
        seed: Seed of the sample and of the estimator (same seed, same classifier).
        estimator: ``"random_forest"`` (``RandomForestClassifier``: 100 trees, depth <= 16, at least 2 pixels per
            leaf, balanced class weights) or ``"logistic"`` (standardised multinomial logistic regression,
            balanced class weights). NaN values are replaced by the training sample's median first.
        n_jobs: Worker threads of the random forest.
        progress: Show a tqdm bar.
        **params: Estimator settings replacing the defaults (e.g. ``n_estimators=50``).

    Returns:
        The fitted :class:`PixelClassifier`.

    Raises:
        cryonet.stackfile.StackFileError: The layer table is missing or does not fit the stack, ``groups`` is
            empty, or a group is not in the stack.
    """
    sp = load_split(split)
    sel = StackFile(stack_path).select(groups=groups)
    names, bands = list(sel.names), list(sel.bands)
    t0 = time.perf_counter()
    x, y = sample_training_pixels(
        stack_path, labels_path, sp.get("train"), bands, max_pixels=max_pixels, seed=seed, progress=progress
    )
    pipe, settings = _make_estimator(estimator, seed, n_jobs, **params)
    pipe.fit(x, y)
    seconds = time.perf_counter() - t0
    counts = np.bincount(y, minlength=len(CLASSES))[: len(CLASSES)]
    logger.info("pixel classifier %s on %s: %d pixels, %.1f s", estimator, list(groups), len(y), seconds)
    return PixelClassifier(
        pipe,
        estimator,
        tuple(groups),
        names,
        bands,
        int(len(y)),
        counts,
        seconds,
        seed,
        {**settings, "max_pixels": max_pixels},
    )


# --------------------------------------------------------------------------------------------------------------------
# tile-wise scoring of a batch predictor (the pixel classifier; CNN runs: cryonet.train.evaluate)
# --------------------------------------------------------------------------------------------------------------------
def score_tiles(
    predict: BatchPredictor,
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tiles: Sequence[Tile],
    *,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "scoring tiles",
) -> tuple[np.ndarray, float]:
    """One confusion matrix per tile of a predictor's output against the labels.

    Tiles are read in the given order and passed to ``predict`` in batches of ``batch_size``; pixels with label 255
    or mostly NaN layers (:func:`cryonet.datasets.invalid_pixels`) are not counted.

    Args:
        predict: Batch predictor (see :data:`BatchPredictor`).
        stack_path: Feature stack.
        labels_path: Label raster on its grid.
        tiles: The tiles to score (e.g. ``split.get("test")``).
        batch_size: Tiles per call of ``predict``.
        progress: Show a tqdm bar.
        desc: Label of the bar.

    Returns:
        ``(cms, seconds)``: ``(T, C, C)`` int64 matrices (rows = reference) and the seconds spent in ``predict``.
    """
    from tqdm.auto import tqdm

    if not tiles:
        raise ValueError(f"{stack_path}: no tiles to score.")
    check_pair(stack_path, labels_path)
    cms: list[np.ndarray] = []
    seconds = 0.0
    with open_raster(stack_path) as s_src, open_raster(labels_path) as l_src:
        starts = range(0, len(tiles), batch_size)
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
            pairs = [_read_tile(s_src, l_src, t) for t in tiles[start : start + batch_size]]
            xb = np.stack([p[0] for p in pairs])
            t0 = time.perf_counter()
            pred = np.asarray(predict(xb))
            seconds += time.perf_counter() - t0
            for (_, y), p in zip(pairs, pred, strict=True):
                cms.append(metrics.confusion_matrix(y, p, num_classes=len(CLASSES)))
    return np.stack(cms), seconds


#: Keys of :class:`cryonet.metrics.TileScores` in the result of :func:`evaluate_pixel_classifier`, in this order.
_RESULT_KEYS: tuple[str, ...] = (
    "n_tiles",
    "summary",
    "classes",
    "class_ci",
    "ci",
    "ci_level",
    "confusion_matrix",
    "cm_tiles",
)


def _result(cms: np.ndarray, *, n_boot: int, alpha: float, seed: int, **info: Any) -> dict[str, Any]:
    """``info`` followed by the :func:`cryonet.metrics.score_cm_tiles` scores of the per-tile matrices ``cms``."""
    scores = metrics.score_cm_tiles(cms, n_boot=n_boot, alpha=alpha, seed=seed)
    return {**info, **scores.to_dict(_RESULT_KEYS)}


def evaluate_pixel_classifier(
    clf: PixelClassifier,
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    split: Split | str | os.PathLike[str],
    split_name: str = "test",
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the pixel classifier on one split's tiles, the same tiles the CNN evaluation uses.

    Args:
        clf: The fitted classifier.
        stack_path: Feature stack.
        labels_path: Label raster.
        split: The CNN run's split (object, ``split.json`` or run directory).
        split_name: ``"test"``, ``"val"`` or ``"train"``.
        n_boot: Bootstrap replicates (tiles resampled with replacement).
        alpha: Two-sided level of the intervals (0.05: 95 %).
        seed: Seed of the bootstrap.
        progress: Show a tqdm bar.

    Returns:
        Dict with ``model`` (the classifier's name), ``split``, ``tiles`` (the scored tiles), ``n_tiles``,
        ``summary`` (:func:`cryonet.metrics.summary`), ``classes`` (:func:`cryonet.metrics.class_metrics` table),
        ``class_ci`` (:func:`cryonet.metrics.class_intervals`), ``ci`` (summary metric -> estimate, low, high),
        ``confusion_matrix`` ``(C, C)``, ``cm_tiles`` ``(T, C, C)`` and ``seconds_predict``.
    """
    sp = load_split(split)
    tiles = sp.get(split_name)
    cms, seconds = score_tiles(
        clf.predict,
        stack_path,
        labels_path,
        tiles,
        batch_size=16,
        progress=progress,
        desc=f"scoring {clf.name} on {split_name}",
    )
    return _result(
        cms,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        model=clf.name,
        split=split_name,
        tiles=list(tiles),
        seconds_predict=seconds,
    )


def comparison_table(
    results: dict[str, dict[str, Any]],
    *,
    classes: Sequence[str] = CLASSES,
    scores: Sequence[str] = metrics.CLASS_SCORES,
    digits: int = 3,
) -> pd.DataFrame:
    """Per-class scores of several models side by side, each as ``"estimate [low, high]"``.

    Args:
        results: Model label -> a dict of :func:`cryonet.train.evaluate` or :func:`evaluate_pixel_classifier`
            (any dict with a ``class_ci`` table).
        classes: Classes (rows) to show.
        scores: Scores (columns) to show, from :data:`cryonet.metrics.CLASS_SCORES`.
        digits: Decimals.

    Returns:
        DataFrame indexed by ``(model, class)``, one string column per score.
    """

    def fmt(v: float, lo: float, hi: float) -> str:
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    rows = []
    for label, res in results.items():
        ci = res["class_ci"]
        for c in classes:
            rows.append(
                {
                    "model": label,
                    "class": c,
                    **{s: fmt(ci.loc[c, s], ci.loc[c, f"{s}_low"], ci.loc[c, f"{s}_high"]) for s in scores},
                }
            )
    return pd.DataFrame(rows).set_index(["model", "class"])


def train_step_seconds(
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    encoder: str | None = None,
    full_res_head: bool = False,
    steps: int = 3,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Median wall time of one training step (forward, cross-entropy, backward, AdamW step) on one batch, seconds.

    One warm-up step is run first and not timed. Used to compare the models' training cost in one run on one
    machine, where the epoch times recorded in the run histories may come from different moments (and loads).

    Args:
        model: Model name (:data:`cryonet.models.MODEL_NAMES`).
        x: ``(N, layers, rows, cols)`` float32 normalised batch.
        y: ``(N, rows, cols)`` int64 labels (255 ignored).
        encoder: Encoder override (as in :func:`cryonet.models.create`).
        full_res_head: With the full-resolution head (as in :func:`cryonet.models.create`).
        steps: Timed steps.
        lr: AdamW learning rate.
        seed: Seed of the initialisation.

    Returns:
        The median seconds per step.
    """
    import torch

    from cryonet import models

    torch.manual_seed(seed)
    net = models.create(model, in_channels=x.shape[1], encoder=encoder, full_res_head=full_res_head).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=LABEL_NODATA)
    xb, yb = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))
