"""Scoring a trained run: confusion matrices of predictions, and :func:`evaluate` over one split's tiles."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import Split, Tile, TileDataset
from cryonet.raster import atomic_path
from cryonet.train.checkpoints import CheckpointError, load_model
from cryonet.train.distributed import resolve_device
from cryonet.train.rundir import _write_json

logger = logging.getLogger(__name__)


def _confusion(pred: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    """Confusion matrix ``cm[true, pred]`` of one batch on the device, ignoring label 255."""
    valid = target != LABEL_NODATA
    idx = target[valid] * n + pred[valid]
    return torch.bincount(idx, minlength=n * n).reshape(n, n)


def _summary(cm: np.ndarray) -> dict[str, Any]:
    """Validation metrics (:func:`cryonet.metrics.summary`; ``miou_glacier`` is the early-stopping score)."""
    from cryonet import metrics

    return {k: (int(v) if k == "n_pixels" else float(v)) for k, v in metrics.summary(cm).items()}


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) atomically."""
    # through a file handle: np.save given a name not ending in .npy (the temporary one) would append ".npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


@dataclass
class _Scored:
    """A run's best model and the tiles of one split, ready to be scored."""

    stack: Path
    labels: Path
    dev: torch.device
    model: torch.nn.Module
    meta: dict[str, Any]
    tiles: list[Tile]
    ds: TileDataset


def _open_scoring(
    run_dir: Path,
    split: str,
    stack_path: str | os.PathLike[str] | None,
    labels_path: str | os.PathLike[str] | None,
    device: str,
) -> _Scored:
    """The run's best model, its stack and labels (those of ``run.json`` unless given) and the split's tiles."""
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no run.json). Train with `cryonet train --out RUN/`.")
    info = json.loads(info_path.read_text())
    stack = Path(stack_path) if stack_path is not None else Path(info["stack"])
    labels = Path(labels_path) if labels_path is not None else Path(info["labels"])
    dev = resolve_device(device)
    model, norm, meta = load_model(run_dir, device=dev)
    sp = Split.load(run_dir / "split.json")
    tiles = sp.get(split)
    if not tiles:
        raise ValueError(f"{run_dir / 'split.json'}: split {split!r} has no tiles to evaluate.")
    ds = TileDataset(stack, labels, tiles, norm, None)
    return _Scored(stack, labels, dev, model, meta, tiles, ds)


def _tile_confusions(sc: _Scored, split: str, progress: bool) -> tuple[list[np.ndarray], float]:
    """One confusion matrix per tile, in the split's order, and the seconds spent in the model's forward pass."""
    from tqdm.auto import tqdm

    from cryonet import metrics

    prof, meta, dev = sc.meta["profile"], sc.meta, sc.dev
    dl = torch.utils.data.DataLoader(sc.ds, batch_size=int(prof.get("batch_size", 8)), shuffle=False)
    n_cls = len(CLASSES)
    cms: list[np.ndarray] = []
    seconds = 0.0
    with torch.no_grad():
        for x, y in tqdm(
            dl, desc=f"evaluate {split} [{meta['model']}/{meta['encoder']}]", disable=not progress, leave=False
        ):
            t0 = time.perf_counter()
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                pred = sc.model(x.to(dev)).float().argmax(1).cpu().numpy()
            seconds += time.perf_counter() - t0
            yn = y.numpy()
            cms += [metrics.confusion_matrix(yn[i], pred[i], num_classes=n_cls) for i in range(len(yn))]
    sc.ds.close()
    return cms, seconds


def _metrics_record(
    run_dir: Path, split: str, sc: _Scored, scores: dict[str, Any], *, alpha: float, n_boot: int, seed: int
) -> tuple[dict[str, Any], Path]:
    """The JSON record of :func:`evaluate` (before NaN -> null) and the path of its ``cm_tiles`` file."""
    meta = sc.meta
    npy_path = run_dir / f"cm_tiles_{split}.npy"
    out: dict[str, Any] = {
        "model": meta["model"],
        "encoder": meta["encoder"],
        "checkpoint": meta["checkpoint"],
        "epoch": meta["epoch"],
        "split": split,
        "n_tiles": len(sc.tiles),
        "stack": str(sc.stack),
        "labels": str(sc.labels),
        "summary": scores["summary"],
        "classes": scores["classes"].to_dict(orient="index"),
        "class_ci": scores["class_ci"].to_dict(orient="index"),
        "confusion_matrix": scores["confusion_matrix"].tolist(),
        "class_names": list(CLASSES),
        "ci": scores["ci"],
        "ci_level": 1 - alpha,
        "n_boot": n_boot,
        "bootstrap_unit": "tile",
        "bootstrap_seed": seed,
        "cm_tiles_file": npy_path.name,
    }
    return out, npy_path


def evaluate(
    run_dir: str | os.PathLike[str],
    split: str = "test",
    *,
    stack_path: str | os.PathLike[str] | None = None,
    labels_path: str | os.PathLike[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Score the run's best model on one split; write ``RUN/metrics_<split>.json`` and ``RUN/cm_tiles_<split>.npy``.

    This is the one scorer of a trained run. One confusion matrix is made per tile of the split, in the order of
    ``split.json`` (label 255 and pixels with more than half their layers NaN ignored, as in training:
    :func:`cryonet.datasets.invalid_pixels`); the per-tile matrices are saved as ``cm_tiles_<split>.npy``
    ``(T, C, C)`` int64 and summed into one matrix, from which :func:`cryonet.metrics.summary` and
    :func:`cryonet.metrics.class_metrics` are computed. Percentile bootstrap intervals resample whole tiles with the
    run's seed, by the one scorer of per-tile matrices (:func:`cryonet.metrics.score_cm_tiles`: the summary metrics of
    :data:`cryonet.metrics.CI_METRICS` and the per-class scores, from the same replicates). Overlapping tiles count
    their shared pixels once per tile. Both files are written atomically.

    The returned dict carries the keys of :func:`cryonet.baseline.evaluate_pixel_classifier`'s result, so it can go
    wherever that goes (:func:`cryonet.baseline.comparison_table`, :func:`cryonet.metrics.paired_difference` of
    two ``cm_tiles``).

    Args:
        run_dir: Run directory written by :func:`cryonet.train.train`.
        split: ``"test"``, ``"val"`` or ``"train"``.
        stack_path: Feature stack (default: the one recorded in ``run.json``).
        labels_path: Label raster (default: the one recorded in ``run.json``).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals (0.05: 95 % intervals).
        device: ``"auto"`` or a torch device string.
        progress: Show a tqdm bar.

    Returns:
        Dict with ``model, encoder, checkpoint, epoch, split, n_tiles, stack, labels, summary`` (headline metrics),
        ``classes`` (:func:`cryonet.metrics.class_metrics` DataFrame: per-class iou/precision/recall/f1/support/
        predicted), ``class_ci`` (:func:`cryonet.metrics.class_intervals` DataFrame), ``confusion_matrix``
        ``(C, C)`` int64 array (rows = reference), ``cm_tiles`` ``(T, C, C)`` int64 array, ``tiles`` (the scored
        :class:`~cryonet.datasets.Tile` list, in the order of ``cm_tiles``), ``ci`` (metric -> estimate, low,
        high), ``ci_level``, ``n_boot``, ``seconds_predict`` (seconds in the model's forward pass), ``file`` (the
        JSON written) and ``cm_tiles_file`` (the ``.npy`` written). The JSON holds the same without ``cm_tiles``,
        ``tiles`` and ``seconds_predict``, with the tables as ``{class: {column: value}}``, the matrix as nested
        lists, NaN as null and ``cm_tiles_file`` as a name relative to the run directory.
    """
    from cryonet import metrics

    run_dir = Path(run_dir)
    sc = _open_scoring(run_dir, split, stack_path, labels_path, device)
    seed = int(sc.meta["profile"].get("seed", 0))
    cms, seconds = _tile_confusions(sc, split, progress)
    tile_scores = metrics.score_cm_tiles(np.stack(cms), n_boot=n_boot, alpha=alpha, seed=seed)
    cm_tiles, cm, summ = tile_scores.cm_tiles, tile_scores.confusion_matrix, tile_scores.summary
    table, class_ci, ci = tile_scores.classes, tile_scores.class_ci, tile_scores.ci
    scores = {"summary": summ, "classes": table, "class_ci": class_ci, "confusion_matrix": cm, "ci": ci}
    out, npy_path = _metrics_record(run_dir, split, sc, scores, alpha=alpha, n_boot=n_boot, seed=seed)
    path = run_dir / f"metrics_{split}.json"
    _save_npy(npy_path, cm_tiles)  # first: the JSON names it
    _write_json(path, _nan_to_none(out))
    logger.info(
        "%s %s: mIoU(glacier) %.4f [%s/%s]", run_dir, split, summ["miou_glacier"], sc.meta["model"], sc.meta["encoder"]
    )
    return {
        **out,
        "classes": table,
        "class_ci": class_ci,
        "confusion_matrix": cm,
        "cm_tiles": cm_tiles,
        "tiles": list(sc.tiles),
        "seconds_predict": seconds,
        "file": path,
        "cm_tiles_file": npy_path,
    }
