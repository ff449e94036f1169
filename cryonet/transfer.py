"""Transfer to another region: the source model applied unchanged, distribution shift, few-shot fine-tuning.

The paper trains CryoNet on the Poiqu basin (central Himalaya) and reports that it transfers to Mont Blanc. This
module holds the three steps of that experiment:

1. **Zero-shot transfer** (:func:`apply_source_model`). The target region's feature stack must be built with the
   source region's PCA axes and texture grey-level limits (``build_stack(..., like=SOURCE_STACK)``; checked by
   :func:`check_feature_settings`). The source run's model and its **source** normalisation statistics (the
   checkpoint's, fitted on the source training tiles) predict the whole target scene; nothing is refitted on the
   target. The prediction is scored against the target labels on a regular grid of evaluation tiles
   (:func:`score_prediction`): one confusion matrix per tile, summed; percentile bootstrap intervals resample whole
   tiles, as :func:`cryonet.train.evaluate` does on the source test tiles.
2. **Why it drops** (:func:`shift_diagnostics`). For every layer, the shift between the two regions' pixel
   distributions: the standardised mean difference in source-normalised units, the Wasserstein distance of the
   source-normalised values (:func:`scipy.stats.wasserstein_distance`), the two-sample Kolmogorov-Smirnov statistic
   (:func:`scipy.stats.ks_2samp`) and the share of target pixels outside the source's 0.5-99.5 % range;
   summarised per layer group (:func:`shift_by_group`), optionally per class.
3. **Few-shot fine-tuning** (:func:`fewshot_finetune`). A small labelled block of the target — a contiguous
   ``rows x cols`` block of ``n_tiles`` training tiles on the training tile grid, chosen deterministically
   (:func:`choose_fewshot_block`: the block holding the most classes while the rest of the scene keeps them too) —
   fine-tunes the source model (``cryonet.train.train(init_checkpoint=..., normalizer=SOURCE, tile_split=...)``).
   Both the transferred and the fine-tuned predictions are then scored on the **rest** of the target scene: every
   pixel outside the block grown by the profile's split buffer (``profile.split.buffer_m``), so that no scored
   pixel lies in or next to what the fine-tuning saw. How much of the drop the labels recover is
   ``(fine-tuned - transferred) / (source test - transferred)`` (:func:`recovered_fraction`), left undefined when
   the drop is too small to divide by.

Our choices (the paper does not describe its transfer protocol): the evaluation tile (the source training tile
size), the block shape (the factor pair of ``n_tiles`` closest to a square), the fine-tuning learning rate
(:data:`FINETUNE_LR_FACTOR` times the source peak rate, a common choice so that a few steps do not erase what the
source model learned), a fixed number of epochs without early stopping, and the last epoch's weights (with so few
labels there is no separate validation block; the block's own tiles are the run's ``val`` tiles, a fit monitor).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from rasterio.windows import Window

from cryonet import metrics, reuse
from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import (
    DatasetError,
    Normalizer,
    Split,
    Tile,
    check_pair,
    invalid_pixels,
    scan_tiles,
)
from cryonet.errors import CryonetError
from cryonet.raster import Grid, atomic_path, iter_windows, open_raster
from cryonet.stackfile import StackFile

logger = logging.getLogger(__name__)

#: Fine-tuning peak learning rate = this factor x the source run's peak rate (our choice).
FINETUNE_LR_FACTOR: Final[float] = 0.1
#: A drop (source test minus transferred score) smaller than this leaves the recovered fraction undefined (NaN).
MIN_DROP: Final[float] = 0.02
#: Layers shown by default in the shift figure (those present in the stack).
SHIFT_PLOT_LAYERS: Final[tuple[str, ...]] = ("elevation", "slope", "coherence", "B8", "ndsi")


class TransferError(CryonetError, ValueError):
    """The source run and the target stack do not fit together; the message says what differs and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# source run and feature settings
# --------------------------------------------------------------------------------------------------------------------
def _run_dir(source_run: str | os.PathLike[str]) -> Path:
    path = Path(source_run)
    run = path if path.is_dir() else path.parent
    if not (run / "run.json").is_file():
        raise TransferError(
            f"{source_run}: not a training run (no run.json in {run}). Train the source model first "
            "(`cryonet train` / cryonet.train.train)."
        )
    return run


def _run_info(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return _json_safe(obj.to_dict(orient="index"))
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path | Window):
        return str(obj)
    return obj


def _write_json(path: Path, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(obj), indent=1))
    return path


def check_feature_settings(
    source_stack: str | os.PathLike[str], target_stack: str | os.PathLike[str]
) -> dict[str, Any]:
    """Check that the target stack applies the source region's feature definitions unchanged.

    Compares the layer names (in order), the fitted PCA transform (``STACK.pca.json`` beside each stack) and the
    texture grey-level limits (stored in the stack's build settings).

    Returns:
        ``{"layers": n, "pca": "same"|"absent", "texture": "same"|"not recorded"}``.

    Raises:
        TransferError: the layers or the PCA transform differ, or the texture limits differ (the target stack was
            built with its own PCA or texture range: rebuild it with ``build_stack(..., like=SOURCE_STACK)``).
    """
    src, tgt = Path(source_stack), Path(target_stack)
    fix = f"Rebuild {tgt} with cryonet.features.stack.build_stack(..., like='{src}') (`cryonet features --like`)."
    a, b = StackFile(src).layers, StackFile(tgt).layers
    if a != b:
        raise TransferError(f"{tgt}: its layers {b} differ from the source stack {src} ({a}). {fix}")
    out: dict[str, Any] = {"layers": len(a)}
    pa, pb = StackFile.sidecar_paths(src).pca_json, StackFile.sidecar_paths(tgt).pca_json
    if pa.is_file() != pb.is_file():
        raise TransferError(f"{pa} / {pb}: one stack has a PCA transform and the other has none. {fix}")
    if pa.is_file():
        ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
        keys = [k for k in ("components", "mean", "scale") if k in ja or k in jb]
        same = all(
            np.allclose(np.asarray(ja.get(k), float), np.asarray(jb.get(k), float))
            for k in keys
            if ja.get(k) is not None and jb.get(k) is not None
        )
        if not same:
            raise TransferError(
                f"{pb}: the target stack's PCA transform differs from the source's {pa}; the PCA "
                f"layers would mean something else in the two regions. {fix}"
            )
        out["pca"] = "same"
    else:
        out["pca"] = "absent"
    limits = [_texture_limits(p) for p in (src, tgt)]
    if None in limits:
        out["texture"] = "not recorded"
    elif not np.allclose(limits[0], limits[1]):
        raise TransferError(f"{tgt}: texture grey-level limits {limits[1]} differ from the source's {limits[0]}. {fix}")
    else:
        out["texture"] = "same"
    return out


def _texture_limits(stack: Path) -> tuple[float, float] | None:
    """Texture quantisation limits recorded in a stack's build settings (``cryonet_stack_settings`` tag)."""
    with open_raster(stack) as src:
        doc = json.loads(src.tags().get("cryonet_stack_settings", "{}") or "{}")
    tex = doc.get("texture") or {}
    if tex.get("vmin") is None or tex.get("vmax") is None:
        return None
    return float(tex["vmin"]), float(tex["vmax"])


# --------------------------------------------------------------------------------------------------------------------
# scoring a prediction raster
# --------------------------------------------------------------------------------------------------------------------
def _pixel_rect(window: Window | None) -> tuple[int, int, int, int] | None:
    if window is None:
        return None
    return (
        int(window.row_off),
        int(window.col_off),
        int(window.row_off + window.height),
        int(window.col_off + window.width),
    )


def score_prediction(
    prediction: str | os.PathLike[str],
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    tile_size: int = 128,
    exclude: Window | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a predicted class raster against the labels, tile by tile, with bootstrap intervals over tiles.

    The scene is cut into non-overlapping ``tile_size`` windows (smaller at the right and bottom edges), so every
    pixel is scored once. A pixel is scored when its label is a class (not 255), fewer than half of its layers are
    NaN (:func:`cryonet.datasets.invalid_pixels`, the training rule), the prediction is a class, and it lies
    outside ``exclude``. Tiles without a scored pixel are left out.

    Args:
        prediction: Class raster on the labels' grid (uint8, 255 = no prediction).
        stack_path: The feature stack that was predicted (for the nodata rule).
        labels_path: Reference labels (uint8, 0..3, 255 = nodata).
        tile_size: Evaluation tile edge, pixels (the bootstrap unit).
        exclude: Pixel window left out of the scoring (e.g. a fine-tuning block plus its buffer).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals.
        seed: Seed of the bootstrap.
        progress: Show a tqdm bar.

    Returns:
        Dict with ``summary`` (:func:`cryonet.metrics.summary`), ``classes`` (:func:`cryonet.metrics.class_metrics`
        table), ``class_ci`` (:func:`cryonet.metrics.class_intervals` table), ``ci`` (metric -> estimate, low,
        high), ``confusion_matrix`` ``(C, C)``, ``cm_tiles`` ``(T, C, C)``, ``tiles`` (the scored windows as
        ``(row, col, height, width)``), ``n_tiles``, ``n_pixels``, ``exclude``, ``tile_size``, ``ci_level``.
    """
    from tqdm.auto import tqdm

    grid = check_pair(stack_path, labels_path)
    if Grid.from_file(prediction).shape != grid.shape:
        raise DatasetError(
            f"{prediction}: prediction grid {Grid.from_file(prediction).shape} differs from the "
            f"labels {labels_path} {grid.shape}; predict the same stack."
        )
    rect = _pixel_rect(exclude)
    n_cls = len(CLASSES)
    cms: list[np.ndarray] = []
    tiles: list[tuple[int, int, int, int]] = []
    windows = list(iter_windows(grid, tile_size))
    with open_raster(stack_path) as s_src, open_raster(labels_path) as l_src, open_raster(prediction) as p_src:
        for win in tqdm(windows, desc="scoring", disable=not progress, leave=False):
            x = s_src.read(window=win, out_dtype="float32")
            y = l_src.read(1, window=win).astype(np.int64)
            p = p_src.read(1, window=win).astype(np.int64)
            skip = invalid_pixels(x, y) | (p >= n_cls)
            if rect is not None:
                r0, c0 = int(win.row_off), int(win.col_off)
                rr = np.arange(r0, r0 + int(win.height))[:, None]
                cc = np.arange(c0, c0 + int(win.width))[None, :]
                skip |= (rr >= rect[0]) & (rr < rect[2]) & (cc >= rect[1]) & (cc < rect[3])
            if skip.all():
                continue
            y[skip] = LABEL_NODATA
            cms.append(metrics.confusion_matrix(y, np.where(skip, 0, p), num_classes=n_cls))
            tiles.append((int(win.row_off), int(win.col_off), int(win.height), int(win.width)))
    if not cms:
        raise DatasetError(f"{prediction}: no pixel left to score against {labels_path} (all nodata or excluded).")
    scores = metrics.score_cm_tiles(np.stack(cms), n_boot=n_boot, alpha=alpha, seed=seed)
    return {
        **scores.to_dict(("summary", "classes", "class_ci", "ci", "ci_level", "confusion_matrix", "cm_tiles")),
        "tiles": tiles,
        **scores.to_dict(("n_tiles", "n_pixels")),
        "exclude": None
        if rect is None
        else {"row_off": rect[0], "col_off": rect[1], "height": rect[2] - rect[0], "width": rect[3] - rect[1]},
        "tile_size": int(tile_size),
    }


def _metrics_record(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready part of a :func:`score_prediction` result (no per-tile matrices)."""
    return {k: v for k, v in res.items() if k not in ("cm_tiles", "tiles")}


# --------------------------------------------------------------------------------------------------------------------
# 1. zero-shot transfer
# --------------------------------------------------------------------------------------------------------------------
def apply_source_model(
    source_run: str | os.PathLike[str],
    target_stack: str | os.PathLike[str],
    target_labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    progress: bool = True,
    eval_tile: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    cog: bool = True,
) -> dict[str, Any]:
    """Predict the target region with the source run's model, normalisation and PCA unchanged, and score it.

    Nothing is fitted on the target: the model and the normalisation statistics are the source checkpoint's
    (:func:`cryonet.train.load_model` via :func:`cryonet.inference.predict_checkpoint`), and the target stack must
    carry the source's PCA transform and texture limits (:func:`check_feature_settings`). No normalisation file is
    written for the target.

    Args:
        source_run: The source training run (directory; its ``best.pt`` is used) or a checkpoint file.
        target_stack: The target region's feature stack (built with ``like=`` the source stack).
        target_labels: The target's label raster on the stack's grid.
        out_dir: Where ``prediction.tif`` (a Cloud-Optimised GeoTIFF when ``cog``) and ``metrics.json`` go.
        device: ``"auto"`` or a torch device string.
        progress: tqdm bars.
        eval_tile: Evaluation tile edge, pixels (default: the source training tile size).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals.
        cog: Write the prediction as a Cloud-Optimised GeoTIFF.

    Returns:
        The :func:`score_prediction` dict plus ``prediction`` (path), ``seconds_predict``, ``windows``,
        ``checkpoint``, ``normalizer`` (the source statistics used, as a dict), ``feature_check``
        (:func:`check_feature_settings`) and ``file`` (the ``metrics.json`` written).
    """
    from cryonet.inference import predict_checkpoint
    from cryonet.train import checkpoint_path, load_checkpoint

    run = _run_dir(source_run)
    ckpt_path = checkpoint_path(source_run)
    info = _run_info(run)
    target_stack, target_labels, out = Path(target_stack), Path(target_labels), Path(out_dir)
    source_stack = Path(info["stack"])
    if source_stack.is_file():
        feature_check = check_feature_settings(source_stack, target_stack)
    else:
        logger.warning("%s: source stack %s not found; PCA/texture settings not checked", run, source_stack)
        feature_check = {"layers": len(StackFile(target_stack).layers), "pca": "not checked", "texture": "not checked"}
    ckpt = load_checkpoint(ckpt_path)
    norm = Normalizer.from_dict(ckpt["normalizer"])
    norm.check_layers(StackFile(target_stack).layers, str(target_stack))
    prof = ckpt["profile"]
    seed = int(prof.get("seed", 0))
    tile = int(eval_tile or prof.get("tile_size", 128))
    del ckpt
    out.mkdir(parents=True, exist_ok=True)
    pred = predict_checkpoint(
        ckpt_path,
        target_stack,
        out / "prediction.tif",
        device=device,
        cog=cog,
        progress=progress,
        batch_size=int(prof.get("batch_size", 8)),
    )
    res = score_prediction(
        pred.labels,
        target_stack,
        target_labels,
        tile_size=tile,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        progress=progress,
    )
    res.update(
        {
            "prediction": pred.labels,
            "seconds_predict": pred.seconds,
            "windows": pred.windows,
            "checkpoint": str(ckpt_path),
            "source_run": str(run),
            "target_stack": str(target_stack),
            "target_labels": str(target_labels),
            "normalizer": norm.to_dict(),
            "feature_check": feature_check,
        }
    )
    res["file"] = _write_json(out / "metrics.json", {**_metrics_record(res), "normalizer": "source run's (unchanged)"})
    logger.info("transfer %s -> %s: mIoU(glacier) %.4f", run, target_stack, res["summary"]["miou_glacier"])
    return res


# --------------------------------------------------------------------------------------------------------------------
# 2. distribution shift
# --------------------------------------------------------------------------------------------------------------------
def sample_layers(
    stack_path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    sample: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """A random sample of valid pixels of a stack: one row per pixel, one column per layer (physical units).

    Pixel positions are drawn uniformly without replacement over the raster and read window by window; pixels with
    more than half of their layers NaN (or label 255, when ``labels`` is given) are dropped.

    Args:
        stack_path: Feature stack.
        labels: Optional label raster on the stack's grid: adds a ``class`` column (class name).
        sample: Pixel positions drawn (fewer rows remain after dropping nodata).
        seed: Seed of the draw.

    Returns:
        DataFrame with the layers (and ``class``); ``attrs["groups"]`` maps layer -> group (from the layer table;
        empty when the stack has none).
    """
    stack_path = Path(stack_path)
    stack = StackFile(stack_path)
    names = stack.layers
    grid = check_pair(stack_path, labels) if labels is not None else Grid.from_file(stack_path)
    rows, cols = grid.shape
    rng = np.random.default_rng(seed)
    n = min(int(sample), rows * cols)
    flat = np.sort(rng.choice(rows * cols, size=n, replace=False))
    pr, pc = np.divmod(flat, cols)
    values = np.full((n, len(names)), np.nan, dtype=np.float32)
    lab = np.zeros(n, dtype=np.uint8)
    with ExitStack() as files:
        src = files.enter_context(open_raster(stack_path))
        l_src = files.enter_context(open_raster(labels)) if labels is not None else None
        for win in iter_windows(grid, 512):
            r0, c0 = int(win.row_off), int(win.col_off)
            sel = np.flatnonzero((pr >= r0) & (pr < r0 + win.height) & (pc >= c0) & (pc < c0 + win.width))
            if sel.size == 0:
                continue
            data = src.read(window=win, out_dtype="float32")
            values[sel] = data[:, pr[sel] - r0, pc[sel] - c0].T
            if l_src is not None:
                lab[sel] = l_src.read(1, window=win)[pr[sel] - r0, pc[sel] - c0]
    keep = np.isnan(values).mean(axis=1) <= 0.5
    if labels is not None:
        keep &= lab < len(CLASSES)
    df = pd.DataFrame(values[keep], columns=names)
    if labels is not None:
        df["class"] = pd.Categorical.from_codes(lab[keep].astype(int), categories=list(CLASSES))
    table = stack.table if stack.layers_csv.is_file() else None
    df.attrs["groups"] = dict(zip(table["layer"], table["group"], strict=True)) if table is not None else {}
    return df


def _shift_rows(
    src: pd.DataFrame, tgt: pd.DataFrame, layers: Sequence[str], groups: dict[str, str], norm: Normalizer | None
) -> list[dict[str, Any]]:
    from scipy.stats import ks_2samp, wasserstein_distance

    rows = []
    for layer in layers:
        a = src[layer].to_numpy(np.float64)
        b = tgt[layer].to_numpy(np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        row: dict[str, Any] = {"layer": layer, "group": groups.get(layer, ""), "n_source": a.size, "n_target": b.size}
        if a.size < 2 or b.size < 2:
            rows.append(
                {
                    **row,
                    "mean_source": np.nan,
                    "mean_target": np.nan,
                    "smd": np.nan,
                    "wasserstein": np.nan,
                    "ks": np.nan,
                    "outside_source_range": np.nan,
                }
            )
            continue
        if norm is not None:
            scale = float(norm.std[norm.layers.index(layer)])
        else:
            scale = float(a.std())
        scale = max(scale, 1e-12)
        lo, hi = np.percentile(a, [0.5, 99.5])
        rows.append(
            {
                **row,
                "mean_source": float(a.mean()),
                "mean_target": float(b.mean()),
                "sd_source": float(a.std()),
                "sd_target": float(b.std()),
                "scale": scale,
                "smd": float((b.mean() - a.mean()) / scale),
                "wasserstein": float(wasserstein_distance(a / scale, b / scale)),
                "ks": float(ks_2samp(a, b).statistic),
                "outside_source_range": float(((b < lo) | (b > hi)).mean()),
            }
        )
    return rows


def shift_diagnostics(
    source_stack: str | os.PathLike[str] | pd.DataFrame,
    target_stack: str | os.PathLike[str] | pd.DataFrame,
    *,
    sample: int = 20_000,
    seed: int = 0,
    labels: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    normalizer: Normalizer | None = None,
) -> pd.DataFrame:
    """Per-layer distribution shift between a source and a target region.

    For each layer, from pixel samples of both regions (:func:`sample_layers`):

    * ``smd``: standardised mean difference ``(mean_target - mean_source) / scale`` — in source-normalised units
      when ``normalizer`` (the source run's statistics) is given (``scale`` = its per-layer std), else scaled by
      the source sample's standard deviation;
    * ``wasserstein``: the 1-Wasserstein distance between the two samples divided by ``scale`` (how far, in source
      standard deviations, the target's values must move on average to match the source's distribution);
    * ``ks``: the two-sample Kolmogorov-Smirnov statistic (0-1, scale-free);
    * ``outside_source_range``: share of target pixels below the source's 0.5th or above its 99.5th percentile
      (values the source model rarely saw; about 0.01 for identical distributions, by construction).

    Args:
        source_stack: Source feature stack, or a :func:`sample_layers` frame of it.
        target_stack: Target feature stack (same layers), or its sample.
        sample: Pixels drawn per region when stacks are given.
        seed: Seed of the draws.
        labels: ``(source_labels, target_labels)``: also compute the shift within each class (the samples then
            hold only labelled pixels). With sample frames, a ``class`` column does the same.
        normalizer: The source run's normalisation statistics (recommended: the model sees these units).

    Returns:
        DataFrame with columns ``class`` (``"all"``, then each class when labels are known), ``layer``, ``group``,
        ``n_source``, ``n_target``, ``mean_source``, ``mean_target``, ``sd_source``, ``sd_target``, ``scale``,
        ``smd``, ``wasserstein``, ``ks``, ``outside_source_range``; one row per (class, layer).
    """

    def as_sample(obj: Any, lab: Any, s: int) -> pd.DataFrame:
        if isinstance(obj, pd.DataFrame):
            return obj
        return sample_layers(obj, labels=lab, sample=sample, seed=s)

    src = as_sample(source_stack, labels[0] if labels else None, seed)
    tgt = as_sample(target_stack, labels[1] if labels else None, seed + 1)
    layers = [c for c in src.columns if c != "class"]
    missing = [c for c in layers if c not in tgt.columns]
    if missing:
        raise TransferError(
            f"the target sample lacks the source layers {missing}; build both stacks with the same "
            "layers (build_stack(..., like=SOURCE_STACK))."
        )
    groups = dict(src.attrs.get("groups") or tgt.attrs.get("groups") or {})
    rows = [{"class": "all", **r} for r in _shift_rows(src, tgt, layers, groups, normalizer)]
    if "class" in src.columns and "class" in tgt.columns:
        for cls in CLASSES:
            a, b = src[src["class"] == cls], tgt[tgt["class"] == cls]
            if len(a) >= 2 and len(b) >= 2:
                rows += [{"class": cls, **r} for r in _shift_rows(a, b, layers, groups, normalizer)]
    return pd.DataFrame(rows)


def shift_by_group(diagnostics: pd.DataFrame, *, cls: str = "all") -> pd.DataFrame:
    """Summarise :func:`shift_diagnostics` per layer group for one class (``"all"``: every pixel).

    Returns:
        DataFrame indexed by group (in the order they appear) with ``layers``, ``mean_abs_smd``,
        ``mean_wasserstein``, ``mean_ks``, ``max_wasserstein`` and ``most_shifted`` (the layer with the largest
        Wasserstein distance), sorted by ``mean_wasserstein`` descending.
    """
    d = diagnostics[diagnostics["class"] == cls] if "class" in diagnostics.columns else diagnostics
    if d.empty:
        raise ValueError(f"no shift diagnostics for class {cls!r}")
    rows = []
    for group, sub in d.groupby("group", sort=False):
        w = sub.set_index("layer")["wasserstein"]
        rows.append(
            {
                "group": group,
                "layers": len(sub),
                "mean_abs_smd": float(sub["smd"].abs().mean()),
                "mean_wasserstein": float(w.mean()),
                "mean_ks": float(sub["ks"].mean()),
                "max_wasserstein": float(w.max()),
                "most_shifted": str(w.idxmax()) if w.notna().any() else "",
            }
        )
    return pd.DataFrame(rows).set_index("group").sort_values("mean_wasserstein", ascending=False)


# --------------------------------------------------------------------------------------------------------------------
# 3. few-shot fine-tuning
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FewshotBlock:
    """The labelled target block used for fine-tuning and what is excluded around it.

    Attributes:
        tiles: The block's training tiles (``rows x cols`` tiles of the training tile grid).
        shape: ``(rows, cols)`` of tiles.
        window: Pixel window covered by the tiles.
        exclusion: ``window`` grown by ``buffer_px`` on every side (clipped to the raster): never scored.
        buffer_px: Buffer width, pixels.
        block_classes: Classes with labelled pixels in the block.
        rest_classes: Classes with labelled pixels in tiles clear of the exclusion window.
    """

    tiles: tuple[Tile, ...]
    shape: tuple[int, int]
    window: Window
    exclusion: Window
    buffer_px: int
    block_classes: tuple[str, ...]
    rest_classes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        win = {k: int(getattr(self.window, k)) for k in ("row_off", "col_off", "height", "width")}
        exc = {k: int(getattr(self.exclusion, k)) for k in ("row_off", "col_off", "height", "width")}
        return {
            "n_tiles": len(self.tiles),
            "shape": list(self.shape),
            "window": win,
            "exclusion": exc,
            "buffer_px": self.buffer_px,
            "block_classes": list(self.block_classes),
            "rest_classes": list(self.rest_classes),
        }


def block_shape(n_tiles: int) -> tuple[int, int]:
    """The factor pair ``(rows, cols)`` of ``n_tiles`` closest to a square, ``rows <= cols`` (16 -> 4 x 4)."""
    if n_tiles < 1:
        raise ValueError(f"n_tiles must be >= 1, got {n_tiles}")
    r = max(d for d in range(1, int(math.isqrt(n_tiles)) + 1) if n_tiles % d == 0)
    return r, n_tiles // r


def _box_sum(integral: np.ndarray, r0: int, c0: int, r1: int, c1: int) -> np.ndarray:
    """Sum of cells ``[r0:r1, c0:c1]`` from a zero-padded integral image ``(R+1, C+1, ...)``."""
    return integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]


def choose_fewshot_block(
    tiles: Sequence[Tile],
    shape: tuple[int, int],
    n_tiles: int,
    *,
    stride: int,
    buffer_px: int,
) -> FewshotBlock:
    """Choose a contiguous block of ``n_tiles`` training tiles, deterministically.

    Candidates are all ``rows x cols`` (:func:`block_shape`) groups of tiles on the regular tile grid (origins every
    ``stride`` pixels) whose tiles all exist (were kept by :func:`cryonet.datasets.scan_tiles`). They are ranked
    by: (1) the number of classes present both in the block and in the rest of the scene (the tiles clear of the
    block grown by ``buffer_px``), so that the block teaches every class and the evaluation can still score every
    class; (2) the number of classes in the block; (3) ``sum(log(1 + pixels of class c))`` over the block, which
    favours blocks that hold every class in quantity; then (4) the upper-left-most block. Pixel counts of
    overlapping tiles count once per tile (used for ranking only).

    Args:
        tiles: Tiles of the target (:func:`cryonet.datasets.scan_tiles` with the training tile size and stride).
        shape: ``(rows, cols)`` of the raster.
        n_tiles: Tiles in the block.
        stride: Pixels between tile origins.
        buffer_px: Buffer around the block that is never scored, pixels.

    Returns:
        The :class:`FewshotBlock`.

    Raises:
        DatasetError: no complete block of that size exists.
    """
    if not tiles:
        raise DatasetError("no target tiles to choose a fine-tuning block from")
    size = tiles[0].size
    br, bc = block_shape(n_tiles)
    grid_tiles = {(t.row // stride, t.col // stride): t for t in tiles if t.row % stride == 0 and t.col % stride == 0}
    n_r = (shape[0] - size) // stride + 1
    n_c = (shape[1] - size) // stride + 1
    counts = np.zeros((n_r, n_c, len(CLASSES)), dtype=np.float64)
    present = np.zeros((n_r, n_c), dtype=np.int64)
    for (i, j), t in grid_tiles.items():
        if i < n_r and j < n_c:
            counts[i, j] = t.class_counts
            present[i, j] = 1
    integ = np.zeros((n_r + 1, n_c + 1, len(CLASSES)))
    integ[1:, 1:] = counts.cumsum(0).cumsum(1)
    integ_p = np.zeros((n_r + 1, n_c + 1))
    integ_p[1:, 1:] = present.cumsum(0).cumsum(1)
    total = counts.sum(axis=(0, 1))
    best: tuple[Any, ...] | None = None
    for orient in sorted({(br, bc), (bc, br)}):
        rr, cc = orient
        for i in range(0, n_r - rr + 1):
            for j in range(0, n_c - cc + 1):
                if _box_sum(integ_p, i, j, i + rr, j + cc) < rr * cc:
                    continue
                block = _box_sum(integ, i, j, i + rr, j + cc)
                # pixel rectangle of the block grown by the buffer, and the grid tiles touching it
                p0, q0 = i * stride - buffer_px, j * stride - buffer_px
                p1, q1 = (i + rr - 1) * stride + size + buffer_px, (j + cc - 1) * stride + size + buffer_px
                a0, a1 = max(0, -(-(p0 - size + 1) // stride)), min(n_r, -(-p1 // stride))
                b0, b1 = max(0, -(-(q0 - size + 1) // stride)), min(n_c, -(-q1 // stride))
                rest = total - _box_sum(integ, a0, b0, a1, b1)
                in_block, in_rest = block > 0, rest > 0
                key = (int((in_block & in_rest).sum()), int(in_block.sum()), float(np.log1p(block).sum()), -i, -j)
                if best is None or key > best[0]:
                    best = (key, i, j, rr, cc, in_block, in_rest)
    if best is None:
        raise DatasetError(
            f"no complete block of {n_tiles} tiles ({br} x {bc} on the {stride}-px tile grid, tile {size} px) in the "
            f"{shape} target raster; use fewer tiles (fewshot_tiles)."
        )
    _, i, j, rr, cc, in_block, in_rest = best
    chosen = tuple(grid_tiles[(i + a, j + b)] for a in range(rr) for b in range(cc))
    r0, c0 = i * stride, j * stride
    win = Window(c0, r0, (cc - 1) * stride + size, (rr - 1) * stride + size)
    e0, f0 = max(0, r0 - buffer_px), max(0, c0 - buffer_px)
    e1 = min(shape[0], r0 + int(win.height) + buffer_px)
    f1 = min(shape[1], c0 + int(win.width) + buffer_px)
    exclusion = Window(f0, e0, f1 - f0, e1 - e0)
    return FewshotBlock(
        chosen,
        (rr, cc),
        win,
        exclusion,
        int(buffer_px),
        tuple(c for c, k in zip(CLASSES, in_block, strict=True) if k),
        tuple(c for c, k in zip(CLASSES, in_rest, strict=True) if k),
    )


def recovered_fraction(source: float, transferred: float, finetuned: float, *, min_drop: float = MIN_DROP) -> float:
    """Share of the transfer drop that fine-tuning recovers: ``(finetuned - transferred) / (source - transferred)``.

    1 means the fine-tuned model scores on the target what the source model scored on its own test tiles; 0 means
    no gain; negative values a loss; values above 1 that it scores higher than at the source. When the drop
    ``source - transferred`` is below ``min_drop`` (nothing, or too little, to recover: the ratio would be noise
    divided by noise) the result is NaN.
    """
    drop = float(source) - float(transferred)
    if not math.isfinite(drop) or drop < min_drop or not math.isfinite(float(finetuned)):
        return float("nan")
    return (float(finetuned) - float(transferred)) / drop


def _finetune_profile(source_profile: dict[str, Any], *, epochs: int, seed: int, lr_factor: float) -> Any:
    from cryonet.config import Profile

    src = Profile.from_dict(source_profile)
    return src.replace(
        name=f"{src.name}-finetune",
        epochs=int(epochs),
        lr=float(src.lr) * float(lr_factor),
        early_stopping_patience=None,
        max_train_tiles=None,
        seed=int(seed),
    )


def _fewshot_counts(prof: Any, n_tiles: int | None, epochs: int | None) -> tuple[int, int]:
    """``(n_tiles, epochs)``: the given ones, else the profile's (largest ``fewshot_tiles``, ``finetune_epochs``)."""
    if n_tiles is None:
        choices = [n for n in prof.fewshot_tiles if n > 0]
        if not choices:
            raise ValueError(
                f"profile {prof.name!r} has no positive fewshot_tiles ({prof.fewshot_tiles}); pass n_tiles"
            )
        n_tiles = max(choices)
    epochs = int(prof.finetune_epochs if epochs is None else epochs)
    if epochs < 1:
        raise ValueError(f"fine-tuning needs at least 1 epoch, got {epochs}")
    return int(n_tiles), epochs


def _fewshot_split(
    target_stack: Path, target_labels: Path, ft_prof: Any, n_tiles: int, *, seed: int, progress: bool
) -> tuple[FewshotBlock, Split]:
    """The labelled block (:func:`choose_fewshot_block`) and the split that trains and validates on its tiles."""
    tile, stride = int(ft_prof.tile_size), int(ft_prof.tile_stride)
    grid = check_pair(target_stack, target_labels)
    buffer_px = int(math.ceil(float(ft_prof.split.buffer_m) / min(grid.res)))
    tiles = scan_tiles(target_stack, target_labels, tile, stride, progress=progress)
    block = choose_fewshot_block(tiles, grid.shape, int(n_tiles), stride=stride, buffer_px=buffer_px)
    missing = [c for c in CLASSES if c not in block.block_classes]
    if missing:
        logger.warning(
            "fine-tuning block holds no %s pixels (no block of %d tiles holds every class)", missing, n_tiles
        )
    split = Split(
        tiles={"train": list(block.tiles), "val": list(block.tiles), "test": []},
        blocks={},
        params={
            "kind": "fewshot block",
            "n_tiles": int(n_tiles),
            "tile_size": tile,
            "stride": stride,
            "buffer_px": buffer_px,
            "block": block.to_dict(),
            "stack": target_stack.name,
            "labels": target_labels.name,
            "seed": int(seed),
        },
        crs_wkt=grid.crs.to_wkt(),
        transform=tuple(grid.transform)[:6],
        shape=grid.shape,
    )
    return block, split


def _finetune(
    out: Path,
    model: str,
    ft_prof: Any,
    src_ckpt: Path,
    split: Split,
    target: tuple[Path, Path],
    *,
    device: str,
    progress: bool,
    retrain: bool,
) -> str:
    """Fine-tune into ``out``, or reuse / resume a run of the same key; ``"trained"``, ``"reused"`` or ``"resumed"``.

    The key (:mod:`cryonet.reuse`): model, fine-tuning profile and block tiles; contents of the source
    checkpoint, the target stack and the target labels.
    """
    from cryonet.train import train

    stack, labels = target
    wanted = json.loads(json.dumps(ft_prof.to_dict()))
    settings = {"model": model, "profile": wanted, "tiles": [t.to_dict() for t in split.get("train")]}
    key = reuse.key(settings, {"init_checkpoint": src_ckpt, "stack": stack, "labels": labels}, known=out)
    state = reuse.ABSENT if retrain else reuse.status(out, key)
    if state in (reuse.REUSE, reuse.RESUME):
        status = "reused" if state == reuse.REUSE else "resumed"
        res = train(stack, labels, out, model=model, profile=wanted, resume=True, device=device, progress=progress)
    else:
        if state != reuse.ABSENT:
            logger.info("%s: %s; fine-tuned afresh", out, state.removeprefix(f"{reuse.STALE}: "))
        status = "trained"
        for name in ("last.pt", "best.pt", "history.csv", "history.json", "prediction.tif"):
            (out / name).unlink(missing_ok=True)  # a fresh run must not inherit an older run's files
        reuse.record(out, key, complete=False)
        res = train(
            stack,
            labels,
            out,
            model=model,
            profile=ft_prof,
            device=device,
            progress=progress,
            init_checkpoint=src_ckpt,
            normalizer=src_ckpt,
            tile_split=split,
        )
    reuse.record(out, key, complete=res.finished)
    return status


def _finetuned_prediction(out: Path, target_stack: Path, *, batch_size: int, device: str, progress: bool) -> Path:
    """``out/prediction.tif`` of the last checkpoint, reused while its key (checkpoint, stack, batch size) holds."""
    from cryonet.inference import predict_checkpoint

    pred_path = out / "prediction.tif"
    settings = {"batch_size": int(batch_size), "cog": True}
    key = reuse.key(settings, {"checkpoint": out / "last.pt", "stack": target_stack}, known=pred_path)
    if reuse.status(pred_path, key) == reuse.REUSE:
        logger.info("%s: reusing the prediction of the finished fine-tuning run", pred_path)
        return pred_path
    pred_path = predict_checkpoint(
        out / "last.pt",
        target_stack,
        pred_path,
        device=device,
        cog=True,
        progress=progress,
        batch_size=int(batch_size),
    ).labels
    reuse.record(pred_path, key)
    return pred_path


def _score_pair(
    finetuned: Path,
    transferred: Path,
    target: tuple[Path, Path],
    block: FewshotBlock,
    *,
    eval_tile: int,
    n_boot: int,
    alpha: float,
    seed: int,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], tuple[float, float, float]]:
    """Both predictions scored on the same pixels outside the block's exclusion window, and the paired gain."""
    target_stack, target_labels = target
    kw = {
        "tile_size": eval_tile,
        "exclude": block.exclusion,
        "n_boot": n_boot,
        "alpha": alpha,
        "seed": int(seed),
        "progress": progress,
    }
    fin = score_prediction(finetuned, target_stack, target_labels, **kw)
    tra = score_prediction(transferred, target_stack, target_labels, **kw)
    assert fin["tiles"] == tra["tiles"]  # same evaluation pixels for both
    gain = metrics.paired_difference(
        fin["cm_tiles"],
        tra["cm_tiles"],
        lambda m: metrics.summary(m)["miou_glacier"],
        n_boot=n_boot,
        alpha=alpha,
        seed=int(seed),
    )
    return fin, tra, gain


def _source_test_score(run: Path) -> float | None:
    """The source run's test mean glacier IoU from its ``metrics_test.json`` (None when it was not evaluated)."""
    if (run / "metrics_test.json").is_file():
        return json.loads((run / "metrics_test.json").read_text())["summary"].get("miou_glacier")
    return None


@dataclass(frozen=True)
class _Fewshot:
    """A fine-tuning run of :func:`fewshot_finetune` and the two predictions to score."""

    out: Path
    run: Path
    n_tiles: int
    epochs: int
    ft_prof: Any
    target: tuple[Path, Path]
    block: FewshotBlock
    status: str
    prediction: Path
    transferred: Path


def _fewshot_run(
    source_run: str | os.PathLike[str],
    target: tuple[Path, Path],
    out: Path,
    *,
    n_tiles: int | None,
    epochs: int | None,
    profile: Any,
    seed: int,
    device: str,
    progress: bool,
    lr_factor: float,
    transferred_prediction: str | os.PathLike[str] | None,
    retrain: bool,
) -> _Fewshot:
    """Choose the block, fine-tune (or reuse / resume), predict the target with the fine-tuned and source models."""
    from cryonet.inference import predict_checkpoint
    from cryonet.train import checkpoint_path, resolve_profile

    run = _run_dir(source_run)
    src_ckpt = checkpoint_path(source_run)
    info = _run_info(run)
    n_tiles, epochs = _fewshot_counts(resolve_profile(profile), n_tiles, epochs)
    ft_prof = _finetune_profile(info["profile"], epochs=epochs, seed=seed, lr_factor=lr_factor)
    block, split = _fewshot_split(*target, ft_prof, n_tiles, seed=seed, progress=progress)
    status = _finetune(
        out, info["model"], ft_prof, src_ckpt, split, target, device=device, progress=progress, retrain=retrain
    )
    bs = int(ft_prof.batch_size)
    pred_path = _finetuned_prediction(out, target[0], batch_size=bs, device=device, progress=progress)
    if transferred_prediction is None:
        transferred_prediction = predict_checkpoint(
            src_ckpt,
            target[0],
            out / "prediction_source.tif",
            device=device,
            cog=True,
            progress=progress,
            batch_size=bs,
        ).labels
    return _Fewshot(out, run, n_tiles, epochs, ft_prof, target, block, status, pred_path, Path(transferred_prediction))


def _fewshot_result(
    fs: _Fewshot, *, eval_tile: int | None, n_boot: int, alpha: float, seed: int, progress: bool
) -> dict[str, Any]:
    """The result of :func:`fewshot_finetune` (without ``seconds`` and ``file``): scores, gain, recovered share."""
    etile = int(eval_tile or fs.ft_prof.tile_size)
    fin, tra, gain = _score_pair(
        fs.prediction, fs.transferred, fs.target, fs.block, eval_tile=etile, n_boot=n_boot, alpha=alpha, seed=seed,
        progress=progress,
    )  # fmt: skip
    src_test = _source_test_score(fs.run)
    rec = (
        recovered_fraction(src_test, tra["summary"]["miou_glacier"], fin["summary"]["miou_glacier"])
        if src_test is not None
        else float("nan")
    )
    return {
        "block": fs.block.to_dict(),
        "status": fs.status,
        "n_tiles": int(fs.n_tiles),
        "epochs": fs.epochs,
        "lr": fs.ft_prof.lr,
        "source_run": str(fs.run),
        "checkpoint": str(fs.out / "last.pt"),
        "prediction": fs.prediction,
        "transferred_prediction": fs.transferred,
        "finetuned": fin,
        "transferred": tra,
        "gain": {"estimate": gain[0], "low": gain[1], "high": gain[2], "metric": "miou_glacier"},
        "source_test": src_test,
        "recovered": rec,
        "min_drop": MIN_DROP,
    }


def fewshot_finetune(
    source_run: str | os.PathLike[str],
    target_stack: str | os.PathLike[str],
    target_labels: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    n_tiles: int | None = None,
    epochs: int | None = None,
    profile: Any = "ci",
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    lr_factor: float = FINETUNE_LR_FACTOR,
    transferred_prediction: str | os.PathLike[str] | None = None,
    eval_tile: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    retrain: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune the source model on a small labelled target block; score it and the transferred model on the rest.

    Steps: tile the target with the source run's tile size and stride (:func:`cryonet.datasets.scan_tiles`);
    choose the block (:func:`choose_fewshot_block`; buffer = the source profile's ``split.buffer_m``); fine-tune
    with :func:`cryonet.train.train` (``init_checkpoint`` = the source checkpoint, ``normalizer`` = the source
    statistics, ``tile_split`` = the block's tiles as ``train`` and ``val``; the source profile with ``epochs``,
    ``lr x lr_factor``, no early stopping, no tile cap, ``seed``); predict the target with the **last** epoch's
    weights; score that prediction and the transferred one on the same pixels: everything outside the block's
    exclusion window (:func:`score_prediction`). Through the library's one reuse rule (:mod:`cryonet.reuse`),
    a run already in ``out_dir`` with the same key (model, fine-tuning profile, block tiles; contents of the source
    checkpoint, the target stack and labels) is reused, or resumed if it was interrupted, unless ``retrain``; so is
    its prediction while the last checkpoint and the stack are unchanged.

    Args:
        source_run: Source training run (directory) or checkpoint.
        target_stack: Target feature stack (built with ``like=`` the source stack).
        target_labels: Target labels.
        out_dir: Fine-tuning run directory (checkpoints, ``prediction.tif``, ``metrics_fewshot.json``).
        n_tiles: Tiles in the labelled block (default: the largest of ``profile.fewshot_tiles``).
        epochs: Fine-tuning epochs (default ``profile.finetune_epochs``).
        profile: Profile (name, dict or object) giving the defaults of ``n_tiles`` and ``epochs``; the training
            settings themselves are the source run's.
        seed: Seed of the fine-tuning.
        device: ``"auto"`` or a torch device string.
        progress: tqdm bars.
        lr_factor: Peak learning rate = this x the source run's.
        transferred_prediction: The source model's prediction of the target (from :func:`apply_source_model`);
            predicted here (into ``out_dir/prediction_source.tif``) when not given.
        eval_tile: Evaluation tile edge, pixels (default: the training tile size).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals.
        retrain: Fine-tune afresh even if a matching run exists.

    Returns:
        ``(run_dir, result)``: ``result`` has ``block`` (:meth:`FewshotBlock.to_dict`), ``status`` (``trained``,
        ``resumed`` or ``reused``), ``epochs``, ``lr``, ``finetuned`` and ``transferred`` (:func:`score_prediction`
        dicts on the same evaluation pixels), ``gain`` (mean glacier IoU fine-tuned minus transferred, with a paired
        bootstrap interval), ``source_test`` (the source run's test mean glacier IoU, from its
        ``metrics_test.json``, or None), ``recovered`` (:func:`recovered_fraction`, NaN when undefined),
        ``prediction`` and ``seconds``.
    """
    t0 = time.perf_counter()
    fs = _fewshot_run(
        source_run, (Path(target_stack), Path(target_labels)), Path(out_dir), n_tiles=n_tiles, epochs=epochs,
        profile=profile, seed=seed, device=device, progress=progress, lr_factor=lr_factor,
        transferred_prediction=transferred_prediction, retrain=retrain,
    )  # fmt: skip
    result = _fewshot_result(fs, eval_tile=eval_tile, n_boot=n_boot, alpha=alpha, seed=seed, progress=progress)
    result["seconds"] = time.perf_counter() - t0
    record = {
        **{k: v for k, v in result.items() if k not in ("finetuned", "transferred")},
        "finetuned": _metrics_record(result["finetuned"]),
        "transferred": _metrics_record(result["transferred"]),
    }
    result["file"] = _write_json(fs.out / "metrics_fewshot.json", record)
    logger.info(
        "few-shot %d tiles: mIoU(glacier) %.4f -> %.4f (recovered %.2f)",
        fs.n_tiles,
        result["transferred"]["summary"]["miou_glacier"],
        result["finetuned"]["summary"]["miou_glacier"],
        result["recovered"],
    )
    return fs.out, result
