"""Layer-group importance: which of the seven input families does the trained model rely on?

Two measures, both by the layer groups of :data:`cryonet.constants.LAYER_GROUPS` (a stack's groups come from its
sidecar ``STACK.layers.csv``, :attr:`cryonet.stackfile.StackFile.table`):

**Grouped permutation importance** (:func:`permutation_importance`). The trained model is scored once on the
evaluation tiles of its run's saved split (the baseline), then again after the layers of one group have been
permuted, ``repeats`` times per group; the importance is the drop of the metric. The permutation is *joint* and
*pooled*: one random permutation of the evaluated pixels (all tiles together; nodata pixels,
:func:`cryonet.datasets.invalid_pixels`, are neither moved nor scored) is applied to every layer of the group.
A pixel's group values thus move together, so the group's joint distribution and its within-group correlation
(e.g. the ten Sentinel-2 bands) are kept, while its relation to the labels, to the other groups and to its
spatial neighbourhood is broken. Permuting layers one by one would instead create impossible combinations (a
pixel bright in B3 and dark in B4) and, for correlated layers, understate the group's importance because the
others still carry the signal. The permutation is drawn in physical units, before normalisation, so permuted
values are values that occur. Pooling over all tiles (rather than within each tile) also removes between-tile
information.
The mean drop over repeats comes with a two-sided Student-t interval (``mean +- t(1 - alpha/2, n-1) * sd /
sqrt(n)``): it says how much the estimate depends on the random permutations, not how it would vary with
another test area or another training run (with 2 repeats, as in the ``ci`` profile, it is wide by construction).

**Drop-group ablation** (:func:`drop_group_ablation`). For each group a reduced stack without its layers is
made (a VRT over the full stack: no pixel is copied) and a model is retrained on it with the same protocol, then
scored on the *same* test tiles and pixels as the full model; the importance is the score lost. This measures
what the model can do without the group (other groups may stand in for it), whereas permutation measures how much
the trained model uses it.

Both score with :func:`cryonet.metrics.summary` of the confusion matrix summed over the tiles (the same metric as
:func:`cryonet.train.evaluate`), on tiles held in memory (the test split of a ``ci`` run is a few dozen tiles of
``layers x 128 x 128`` float32, tens of MB) with batched inference.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryonet import reuse
from cryonet.constants import CLASSES, GLACIER_CLASSES, LABEL_NODATA, LAYER_GROUPS
from cryonet.errors import CryonetError

logger = logging.getLogger(__name__)

#: Default metric (a key of :func:`cryonet.metrics.summary`): mean IoU of clean ice, debris and lake.
DEFAULT_METRIC: str = "overall_iou_glacier"
#: Name of the per-group result file of :func:`drop_group_ablation` (its presence marks a finished group).
ABLATION_FILE: str = "ablation.json"
#: Name of the reduced stack in each group's folder of :func:`drop_group_ablation`: a VRT over the full stack.
REDUCED_STACK: str = "stack.vrt"
#: Columns of the table :func:`drop_group_ablation` returns (one row per group).
ABLATION_COLUMNS: tuple[str, ...] = (
    "group", "dropped_layers", "layers_left", "metric", "full_score", "score", "drop", "same_split", "epochs_run",
    "run_dir",
)  # fmt: skip


class ImportanceError(CryonetError, ValueError):
    """An input of the importance analysis does not fit (layers, groups, split, metric); the message says which."""


# ------------------------------------------------------------------------------------------------------------------
# tiles in memory, batched prediction, scoring
# ------------------------------------------------------------------------------------------------------------------
def load_tiles(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tiles: Sequence[Any],
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read tiles of a stack and its labels into memory.

    Args:
        stack_path: Feature stack (float32, NaN = nodata).
        labels_path: Label raster on the same grid.
        tiles: :class:`cryonet.datasets.Tile` objects (anything with a ``window``), all of one size.
        progress: Show a progress bar.

    Returns:
        ``x`` float32 ``(tiles, layers, size, size)`` in physical units (NaN kept) and ``y`` int64
        ``(tiles, size, size)`` with :data:`~cryonet.constants.LABEL_NODATA` where the pixel is nodata
        (:func:`cryonet.datasets.invalid_pixels`, as :class:`cryonet.datasets.TileDataset` marks them).
    """
    from tqdm.auto import tqdm

    from cryonet.datasets import check_pair, invalid_pixels
    from cryonet.raster import open_raster

    if not tiles:
        raise ImportanceError(f"{stack_path}: no tiles to evaluate.")
    check_pair(stack_path, labels_path)
    xs, ys = [], []
    with open_raster(stack_path) as s_src, open_raster(labels_path) as l_src:
        for t in tqdm(tiles, desc="reading tiles", unit="tile", disable=not progress, leave=False):
            x = s_src.read(window=t.window, out_dtype="float32")
            y = l_src.read(1, window=t.window).astype(np.int64)
            y[invalid_pixels(x, y)] = LABEL_NODATA
            xs.append(x)
            ys.append(y)
    return np.stack(xs), np.stack(ys)


def predict_tiles(
    model: Any, normalizer: Any, x: np.ndarray, *, batch_size: int = 8, device: str | Any = "cpu"
) -> np.ndarray:
    """Class predictions of tiles held in memory.

    Args:
        model: ``torch.nn.Module`` mapping ``(N, layers, H, W)`` to logits ``(N, classes, H, W)``.
        normalizer: :class:`cryonet.datasets.Normalizer` (``apply`` per tile; NaN -> 0).
        x: ``(tiles, layers, H, W)`` float32 in physical units.
        batch_size: Tiles per forward pass.
        device: Torch device (string or ``torch.device``).

    Returns:
        ``(tiles, H, W)`` int64 class ids.
    """
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    model = model.to(dev).eval()
    out = np.empty((x.shape[0], *x.shape[2:]), dtype=np.int64)
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = np.stack([normalizer.apply(t) for t in x[i : i + batch_size]])
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                logits = model(torch.from_numpy(xb).to(dev))
            out[i : i + batch_size] = logits.float().argmax(1).cpu().numpy()
    return out


def score_tiles(
    model: Any,
    normalizer: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    metric: str = DEFAULT_METRIC,
    batch_size: int = 8,
    device: str | Any = "cpu",
) -> tuple[float, np.ndarray]:
    """``(metric, confusion matrix)`` of the model on in-memory tiles (label 255 ignored)."""
    from cryonet import metrics

    _check_metric(metric)
    pred = predict_tiles(model, normalizer, x, batch_size=batch_size, device=device)
    cm = metrics.confusion_matrix(y, pred, num_classes=len(CLASSES))
    return float(metrics.summary(cm)[metric]), cm


def _check_metric(metric: str) -> None:
    from cryonet import metrics

    known = list(metrics.summary(np.eye(len(CLASSES), dtype=np.int64)))
    if metric not in known:
        raise ImportanceError(f"unknown metric {metric!r}; expected a key of cryonet.metrics.summary: {known}")


# ------------------------------------------------------------------------------------------------------------------
# groups
# ------------------------------------------------------------------------------------------------------------------
def group_layers(table: pd.DataFrame, groups: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Group name -> 0-based band indices, for ``groups`` (default: every group of the table, in stack order).

    Raises:
        ImportanceError: a requested group is not in the stack.
    """
    from cryonet.stackfile import Selection

    present = list(dict.fromkeys(table["group"]))
    if groups is None:
        groups = [g for g in LAYER_GROUPS if g in present] + [g for g in present if g not in LAYER_GROUPS]
    missing = [g for g in groups if g not in present]
    if missing:
        raise ImportanceError(f"group(s) {missing} not in this stack; it has {present}")
    return {g: Selection.from_table(table, groups=[g]).index0 for g in groups}


def _group_key(group: str) -> int:
    """A stable number per group, so that a group's permutations do not depend on which other groups are run."""
    if group in LAYER_GROUPS:
        return LAYER_GROUPS.index(group)
    return 1000 + int.from_bytes(group.encode()[:8].ljust(8, b"\0"), "little") % 10**9


def permute_pixels(x: np.ndarray, valid: np.ndarray, layers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute ``layers`` of ``x`` jointly over the valid pixels of all tiles; returns a copy of those layers.

    Unlike :func:`cryonet.features.stack.permute_group` (which moves every pixel, nodata included) only valid
    pixels are shuffled, among themselves, so that the scored pixels stay the same and a nodata pixel's NaN never
    moves into a scored one (a few NaN layers of a valid pixel, e.g. aspect on a lake, move with its values).

    Args:
        x: ``(tiles, layers, H, W)``.
        valid: ``(tiles, H, W)`` bool, the pixels to shuffle.
        layers: Band indices of the group.
        rng: Random generator.

    Returns:
        ``(tiles, len(layers), H, W)``: the group's layers after the permutation (``x`` is not modified).
    """
    idx = np.flatnonzero(valid.ravel())
    perm = idx[rng.permutation(len(idx))]
    out = np.array(x[:, layers], copy=True)
    for k, layer in enumerate(layers):
        plane = x[:, layer].reshape(-1)
        dst = out[:, k].reshape(-1)
        dst[idx] = plane[perm]
        out[:, k] = dst.reshape(out.shape[0], *out.shape[2:])
    return out


# ------------------------------------------------------------------------------------------------------------------
# permutation importance
# ------------------------------------------------------------------------------------------------------------------
def _permutation_row(
    group: str, repeat: int, metric: str, baseline: float, score: float, base_iou: np.ndarray, cm: np.ndarray
) -> dict[str, Any]:
    """One row of :func:`permutation_importance_tiles`: the score lost overall and per class by one permutation."""
    from cryonet import metrics

    class_drop = base_iou - metrics.per_class(cm)["iou"]
    return {
        "group": group,
        "repeat": repeat,
        "metric": metric,
        "baseline": baseline,
        "score": score,
        "drop": baseline - score,
        **{f"drop_iou_{c}": float(v) for c, v in zip(CLASSES, class_drop, strict=True)},
    }


def permutation_importance_tiles(
    model: Any,
    normalizer: Any,
    x: np.ndarray,
    y: np.ndarray,
    table: pd.DataFrame,
    *,
    groups: Sequence[str] | None = None,
    repeats: int = 5,
    metric: str = DEFAULT_METRIC,
    seed: int = 0,
    batch_size: int = 8,
    device: str | Any = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Grouped permutation importance of a model on tiles held in memory (see the module docstring).

    Args:
        model: Model (``(N, layers, H, W)`` -> logits).
        normalizer: Its :class:`cryonet.datasets.Normalizer`.
        x: ``(tiles, layers, H, W)`` float32, physical units, layers in the order of ``table``. Permuted in place
            one group at a time and restored before returning (also on error), so no second copy is held.
        y: ``(tiles, H, W)`` labels, 255 = not scored.
        table: Layer table of the stack (columns ``layer``, ``group``, ``band``).
        groups: Groups to permute (default all of the table).
        repeats: Permutations per group.
        metric: Key of :func:`cryonet.metrics.summary`.
        seed: Seed; repeat ``r`` of a group draws from ``default_rng([seed, group number, r])``.
        batch_size: Tiles per forward pass.
        device: Torch device.
        progress: Show a tqdm bar over permutations.

    Returns:
        One row per (group, repeat): ``group, repeat, metric, baseline, score, drop`` (``drop = baseline -
        score``; positive = the model needs the group), then ``drop_iou_<class>`` for every class of
        :data:`cryonet.constants.CLASSES` (the class's IoU before minus after, from the same confusion matrices:
        which class loses when the group is permuted; :func:`class_drops` averages them). ``attrs``: ``baseline``,
        ``metric``, ``n_tiles``, ``n_pixels``, ``baseline_class_iou`` (class -> IoU), ``summary``
        (:func:`importance_summary`).
    """
    from tqdm.auto import tqdm

    from cryonet import metrics

    if repeats < 1:
        raise ImportanceError(f"repeats must be >= 1, got {repeats}")
    if x.shape[1] != len(table):
        raise ImportanceError(f"tiles have {x.shape[1]} layers but the layer table lists {len(table)}")
    normalizer.check_layers(list(table["layer"]), "the layer table")
    idx = group_layers(table, groups)
    baseline, cm = score_tiles(model, normalizer, x, y, metric=metric, batch_size=batch_size, device=device)
    base_iou = metrics.per_class(cm)["iou"]
    valid = y != LABEL_NODATA
    # permute in place, one group at a time, and put the group back afterwards: memory is x plus one group
    rows = []
    bar = tqdm(total=len(idx) * repeats, desc="permutation importance", unit="perm", disable=not progress)
    try:
        for group, layers in idx.items():
            original = x[:, layers].copy()
            try:
                for r in range(repeats):
                    rng = np.random.default_rng([int(seed), _group_key(group), r])
                    x[:, layers] = permute_pixels(original, valid, np.arange(len(layers)), rng)
                    score, cm_p = score_tiles(
                        model, normalizer, x, y, metric=metric, batch_size=batch_size, device=device
                    )
                    rows.append(_permutation_row(group, r, metric, baseline, score, base_iou, cm_p))
                    bar.update(1)
            finally:
                x[:, layers] = original
    finally:
        bar.close()
    df = pd.DataFrame(
        rows, columns=["group", "repeat", "metric", "baseline", "score", "drop", *[f"drop_iou_{c}" for c in CLASSES]]
    )
    df.attrs.update(
        baseline=baseline,
        metric=metric,
        n_tiles=int(len(x)),
        n_pixels=int(cm.sum()),
        baseline_class_iou={c: float(v) for c, v in zip(CLASSES, base_iou, strict=True)},
        summary=importance_summary(df),
    )
    logger.info(
        "permutation importance (%s, baseline %.4f): %s",
        metric,
        baseline,
        df.groupby("group", sort=False)["drop"].mean().round(4).to_dict(),
    )
    return df


def class_drops(df: pd.DataFrame, classes: Sequence[str] = GLACIER_CLASSES) -> pd.DataFrame:
    """Mean drop of each class's IoU per permuted group (groups in the order of ``df``).

    Args:
        df: Result of :func:`permutation_importance_tiles` / :func:`permutation_importance` (columns
            ``drop_iou_<class>``).
        classes: Classes to report (default clean ice, debris, lake).

    Returns:
        DataFrame indexed by group, one column per class: the IoU lost when the group is permuted, averaged over
        the repeats (positive: the model needs the group for that class).
    """
    cols = [f"drop_iou_{c}" for c in classes]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ImportanceError(
            f"the importance table has no per-class columns {missing}; it was written before "
            "per-class drops were recorded: rerun the permutation importance."
        )
    out = df.groupby("group", sort=False)[cols].mean()
    out.columns = list(classes)
    return out


def importance_summary(df: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Mean drop per group with a Student-t interval over the repeats.

    Args:
        df: Rows ``group, drop`` (:func:`permutation_importance`).
        level: Two-sided confidence level.

    Returns:
        DataFrame indexed by group (in the order of ``df``): ``mean_drop``, ``sd``, ``n``, ``low``, ``high``
        (NaN interval for a single repeat).
    """
    from scipy import stats

    out = []
    for group, d in df.groupby("group", sort=False)["drop"]:
        n = int(d.count())
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
        out.append({"group": group, "mean_drop": mean, "sd": sd, "n": n, "low": mean - half, "high": mean + half})
    return pd.DataFrame(out, columns=["group", "mean_drop", "sd", "n", "low", "high"]).set_index("group")


def _run_files(run_or_ckpt: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(run directory, split.json)`` of a run directory or a checkpoint inside one."""
    p = Path(run_or_ckpt)
    run_dir = p if p.is_dir() else p.parent
    split = run_dir / "split.json"
    if not split.is_file():
        raise ImportanceError(
            f"{run_dir}: no split.json; permutation importance scores the run's own test tiles. Give the run "
            "directory written by `cryonet train` (or a checkpoint inside it)."
        )
    return run_dir, split


def permutation_importance(
    run_dir_or_ckpt: str | os.PathLike[str],
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    split: str = "test",
    groups: Sequence[str] | None = None,
    repeats: int = 5,
    metric: str = DEFAULT_METRIC,
    seed: int = 0,
    device: str = "auto",
    batch_size: int | None = None,
    max_tiles: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Grouped permutation importance of a trained run on the tiles of its saved split.

    The split's tiles are held in memory (``tiles x layers x size² x 4`` bytes: ~90 MB for 34 tiles of 40 layers
    at 128 px, a ``ci`` run; a large ``paper`` test split can need ``max_tiles``).

    Args:
        run_dir_or_ckpt: Run directory of :func:`cryonet.train.train` (``best.pt``) or a checkpoint in it.
        stack_path: The feature stack the run was trained on (same layers, same order; with its layer table).
        labels_path: Its label raster.
        split: Tiles to score (``test``, ``val`` or ``train``) from the run's ``split.json``.
        groups: Groups to permute (default every group of the stack).
        repeats: Permutations per group (the profiles' ``importance_repeats``: 2 in ``ci``, 10 in ``paper``).
        metric: Key of :func:`cryonet.metrics.summary` (default the mean glacier-class IoU).
        seed: Seed of the permutations.
        device: ``auto`` or a torch device string.
        batch_size: Tiles per forward pass (default the run's batch size).
        max_tiles: Score a seeded random subset of at most this many tiles of the split (None: all).
        progress: Show progress bars.

    Returns:
        As :func:`permutation_importance_tiles` (``attrs["summary"]`` holds the per-group means and intervals).
    """
    from cryonet.datasets import Split
    from cryonet.stackfile import StackFile
    from cryonet.train import load_model, resolve_device

    _check_metric(metric)
    run_dir, split_file = _run_files(run_dir_or_ckpt)
    dev = resolve_device(device)
    model, norm, meta = load_model(run_dir_or_ckpt, device=dev)
    table = StackFile(stack_path).table
    norm.check_layers(list(table["layer"]), str(stack_path))
    tiles = Split.load(split_file).get(split)
    if max_tiles is not None and len(tiles) > max_tiles:
        pick = np.sort(np.random.default_rng(seed).choice(len(tiles), size=int(max_tiles), replace=False))
        tiles = [tiles[i] for i in pick]
    x, y = load_tiles(stack_path, labels_path, tiles, progress=progress)
    bs = int(batch_size or meta.get("profile", {}).get("batch_size", 8))
    df = permutation_importance_tiles(
        model,
        norm,
        x,
        y,
        table,
        groups=groups,
        repeats=repeats,
        metric=metric,
        seed=seed,
        batch_size=bs,
        device=dev,
        progress=progress,
    )
    df.attrs.update(
        run=str(run_dir), checkpoint=meta["checkpoint"], split=split, model=meta["model"], encoder=meta["encoder"]
    )
    return df


# ------------------------------------------------------------------------------------------------------------------
# drop-group ablation
# ------------------------------------------------------------------------------------------------------------------
def write_reduced_stack(
    stack_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    drop: Sequence[str],
    *,
    block: int = 1024,
    progress: bool = False,
) -> Path:
    """A stack without the layers of ``drop``, with its layer table: a VRT of the kept bands, or a GeoTIFF copy.

    With an ``OUT.vrt`` path (what :func:`drop_group_ablation` uses) the output is a GDAL VRT that reads the kept
    bands from the full stack (:func:`cryonet.raster.write_band_subset_vrt`): no pixel is copied, so an ablation
    over every group of a 44-layer Sentinel-2 tile (about 21 GB as float32) does not write seven more such stacks.
    Any other suffix writes a float32 GeoTIFF on the same grid (NaN nodata, band descriptions = layer names, tiled,
    deflate), window by window. Either is written atomically, with ``OUT.layers.csv`` (bands renumbered,
    :attr:`cryonet.stackfile.Selection.reduced_table`). An existing output with the expected layer table is kept
    (resume).

    Returns:
        ``out_path``.
    """
    import rasterio
    from tqdm.auto import tqdm

    from cryonet.raster import Grid, atomic_path, gtiff_profile, iter_windows, open_raster, write_band_subset_vrt
    from cryonet.stackfile import StackFile, StackFileError

    out_path = Path(out_path)
    rest = StackFile(stack_path).without(list(drop))
    keep = rest.index0
    if len(keep) == 0:
        raise ImportanceError(f"{stack_path}: dropping {list(drop)} leaves no layer.")
    sub = rest.reduced_table
    layers_csv = StackFile.sidecar_paths(out_path).layers_csv
    if out_path.is_file() and layers_csv.is_file():
        try:
            if StackFile(out_path).table.equals(sub):
                logger.info("%s exists with the expected layers: kept", out_path)
                return out_path
        except StackFileError:
            pass
    bands = list(rest.bands)
    with atomic_path(layers_csv) as tmp:
        sub.to_csv(tmp, index=False)
    with open_raster(stack_path) as src:
        tags = {k: v for k, v in src.tags().items() if not k.endswith("_digest")}
    tags["cryonet_dropped_groups"] = ",".join(drop)
    if out_path.suffix.lower() == ".vrt":
        return write_band_subset_vrt(stack_path, out_path, bands, descriptions=list(sub["layer"]), tags=tags)
    grid = Grid.from_file(stack_path)
    profile = gtiff_profile(grid, len(keep), "float32", float("nan"))
    profile["BIGTIFF"] = "IF_SAFER"
    with open_raster(stack_path) as src, atomic_path(out_path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for win in tqdm(
                list(iter_windows(grid, block)),
                desc=f"stack without {','.join(drop)}",
                disable=not progress,
                leave=False,
            ):
                dst.write(src.read(bands, window=win, out_dtype="float32"), window=win)
            for i, name in enumerate(sub["layer"], start=1):
                dst.set_band_description(i, str(name))
            dst.update_tags(**tags)
    return out_path


def _same_split(a: Any, b: Any) -> bool:
    return all(
        [(t.row, t.col, t.size) for t in a.get(s)] == [(t.row, t.col, t.size) for t in b.get(s)]
        for s in ("train", "val", "test")
    )


def _ablation_inputs(checkpoint: Path, prof: Any, model: str, stack_path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a group's ablation row records about its inputs, as plain JSON values.

    The reference checkpoint by its content (sha256), the training profile and model, and the full stack by its
    size and modification time (nanoseconds). Whether a group is reused is decided by the reuse rule
    (:func:`_ablation_key`), not by these.
    """
    st = Path(stack_path).stat()
    return {
        "full_checkpoint_sha256": reuse.digest(checkpoint),
        "profile": json.loads(json.dumps(prof.to_dict())),  # plain JSON types, as they read back from the file
        "model": str(model),
        "stack_size": int(st.st_size),
        "stack_mtime_ns": int(st.st_mtime_ns),
    }


def _ablation_key(group: str, ref: _Reference, gdir: Path) -> dict[str, Any]:
    """The reuse key (:mod:`cryonet.reuse`) of one group's folder.

    Settings: the group, the training profile and the model. Inputs (by content): the reference checkpoint, the
    full stack and the labels.
    """
    settings = {"group": group, "profile": ref.inputs["profile"], "model": ref.inputs["model"]}
    files = {"full_checkpoint": ref.base / "best.pt", "stack": ref.stack, "labels": ref.labels}
    return reuse.key(settings, files, known=gdir)


def _reduced_path(gdir: Path) -> Path:
    """The group's reduced stack file.

    ``stack.vrt``, or the ``stack.tif`` copy that versions before the VRT wrote (kept and used, so that their runs
    resume on the file they started with).
    """
    legacy = gdir / "stack.tif"
    return legacy if legacy.is_file() else gdir / REDUCED_STACK


@dataclass(frozen=True)
class _Reference:
    """The full model of an ablation: its run, its test tiles in memory and its score on them."""

    base: Path
    stack: Path
    labels: Path
    model: str
    prof: Any
    split: Any
    x: np.ndarray
    y: np.ndarray
    full_score: float
    checkpoint: str
    inputs: dict[str, Any]


def _full_run(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_dir: Path,
    *,
    base_run: str | os.PathLike[str] | None,
    model: str,
    profile: Any,
    seed: int,
    device: str,
    progress: bool,
    overrides: dict[str, Any],
) -> tuple[Path, str, Any]:
    """``(run directory, model, profile)`` of the full model: ``base_run``'s, or one trained in ``OUT/full/run``."""
    from cryonet.train import resolve_profile, train_or_reuse

    if base_run is None:
        prof = resolve_profile(profile, seed=seed, **overrides)
        base = out_dir / "full" / "run"
        res, _ = train_or_reuse(
            stack_path, labels_path, base, model=model, profile=prof, device=device, progress=progress
        )
        if not res.finished:
            raise ImportanceError(f"{base}: the full model's training did not finish.")
        return base, model, prof
    base = Path(base_run)
    info_path = base / "run.json"
    if not info_path.is_file():
        raise ImportanceError(f"{base}: not a run directory (no run.json); train the full model first.")
    info = json.loads(info_path.read_text())
    return base, info["model"], resolve_profile(info["profile"], **overrides)


def _reference(
    base: Path,
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    table: pd.DataFrame,
    prof: Any,
    model: str,
    *,
    metric: str,
    dev: Any,
    progress: bool,
) -> _Reference:
    """The full model's test tiles (held in memory for every group) and its score on them."""
    from cryonet.datasets import Split
    from cryonet.train import load_model

    base_split = Split.load(base / "split.json")
    test_tiles = base_split.get("test")
    x, y = load_tiles(stack_path, labels_path, test_tiles, progress=progress)
    full_model, full_norm, full_meta = load_model(base, device=dev)
    full_norm.check_layers(list(table["layer"]), str(stack_path))
    bs = int(prof.batch_size)
    full_score, _ = score_tiles(full_model, full_norm, x, y, metric=metric, batch_size=bs, device=dev)
    del full_model
    logger.info("full model %s: %s = %.4f on %d test tiles", base, metric, full_score, len(test_tiles))
    inputs = _ablation_inputs(base / "best.pt", prof, model, stack_path)
    return _Reference(
        base, Path(stack_path), Path(labels_path), model, prof, base_split, x, y, full_score, full_meta["checkpoint"],
        inputs,
    )  # fmt: skip


def _ablate_group(
    group: str,
    gdir: Path,
    ref: _Reference,
    table: pd.DataFrame,
    idx: dict[str, np.ndarray],
    *,
    metric: str,
    device: str,
    dev: Any,
    progress: bool,
) -> dict[str, Any]:
    """One group's row: kept when its folder is reusable (:func:`_ablation_key`), else retrained (or resumed)."""
    from cryonet.datasets import Split
    from cryonet.raster import atomic_path
    from cryonet.stackfile import Selection
    from cryonet.train import load_model, train

    key = _ablation_key(group, ref, gdir)
    state = reuse.status(gdir, key)
    if state.startswith(reuse.STALE):
        logger.warning("%s: %s; removed, the group is redone", gdir, state.removeprefix(f"{reuse.STALE}: "))
        shutil.rmtree(gdir)
    done = gdir / ABLATION_FILE
    if state == reuse.REUSE and done.is_file():
        row = json.loads(done.read_text())
        if row.get("metric") == metric and row.get("full_run") == str(ref.base.resolve()):
            logger.info("%s: finished earlier with the same inputs, kept", gdir)
            return row
    if state not in (reuse.REUSE, reuse.RESUME):
        reuse.record(gdir, key, complete=False)
    reduced = write_reduced_stack(ref.stack, _reduced_path(gdir), [group], progress=progress)
    run_dir = gdir / "run"
    res = train(
        reduced, ref.labels, run_dir, model=ref.model, profile=ref.prof, resume=True, device=device, progress=progress
    )
    if not res.finished:
        raise ImportanceError(f"{run_dir}: training without {group!r} did not finish.")
    keep = Selection.from_table(table, drop=[group]).index0
    net, norm, _ = load_model(run_dir, device=dev)
    score, _ = score_tiles(
        net, norm, ref.x[:, keep], ref.y, metric=metric, batch_size=int(ref.prof.batch_size), device=dev
    )
    row = {
        "group": group,
        "dropped_layers": list(table["layer"].iloc[idx[group]]),
        "layers_left": int(len(keep)),
        "metric": metric,
        "full_score": ref.full_score,
        "score": score,
        "drop": ref.full_score - score,
        "same_split": _same_split(Split.load(run_dir / "split.json"), ref.split),
        "epochs_run": int(res.epochs_run),
        "run_dir": str(run_dir),
        "full_run": str(ref.base.resolve()),
        **ref.inputs,
    }
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(row, indent=1, default=float))
    reuse.record(gdir, key)
    logger.info("without %s: %s = %.4f (full %.4f)", group, metric, score, ref.full_score)
    return row


def drop_group_ablation(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    groups: Sequence[str] | None = None,
    model: str = "cryonet",
    profile: Any = "ci",
    base_run: str | os.PathLike[str] | None = None,
    seed: int = 0,
    metric: str = DEFAULT_METRIC,
    device: str = "auto",
    progress: bool = True,
    **overrides: Any,
) -> pd.DataFrame:
    """Retrain without each layer group and report the score lost on the full model's test tiles.

    For each group: ``OUT/<group>/stack.vrt`` (+ ``stack.layers.csv``), a VRT of the full stack without the group's
    layers (:func:`write_reduced_stack`; it reads the full stack by a relative path, so move the two together), a
    run in ``OUT/<group>/run`` trained with :func:`cryonet.train.train` and the same profile, model and seed as the
    full model, scored on the full model's test tiles and pixels (the nodata pixels of the full stack are left out
    for every model, so all scores count the same pixels), and ``OUT/<group>/ablation.json``.

    Reuse. Each group folder goes through the library's one reuse rule (:mod:`cryonet.reuse`, record
    ``OUT/<group>.reuse.json``): its key is the group, the training profile and model of the retrained run, and the
    contents (sha256) of the reference checkpoint (the full model's ``best.pt``), the full stack and the labels. A
    finished group with the same key is kept without retraining, and an interrupted one resumes from its
    ``last.pt``; a stack touched without a change of content changes nothing. A group folder with another key or
    without a record is removed with a warning naming what changed, and redone. The full model of ``OUT/full/run``
    (when ``base_run`` is None) is trained through :func:`cryonet.train.train_or_reuse`, the same rule. A group
    folder of an earlier version, with a ``stack.tif`` copy instead of the VRT, keeps its copy.

    The split. :func:`cryonet.train.train` takes no split; it makes one from the stack with the profile's seed.
    :func:`cryonet.datasets.make_split` depends only on the tiles, the grid and the seed, but the tiles
    (:func:`cryonet.datasets.scan_tiles`) depend on the layers through the nodata test (a pixel is nodata when
    more than half of its layers are NaN, :func:`cryonet.datasets.invalid_pixels`) and their class counts: a
    group whose NaN pattern differs from the others' (e.g. texture, NaN near the scene edge) changes that share
    and can change which tiles are kept and so the split. Each row therefore records
    ``same_split`` (train/val/test tile windows identical to the full model's); scoring always uses the full
    model's test tiles.

    Args:
        stack_path: Full feature stack (with its layer table).
        labels_path: Label raster.
        out_dir: Output directory (one folder per group, and ``full/`` when ``base_run`` is None).
        groups: Groups to drop, one at a time (default every group of the stack); a subset keeps ``ci`` cheap.
        model: Model name (ignored with ``base_run``: its model is used).
        profile: Profile name / object (ignored with ``base_run``: its stored profile is used).
        base_run: A finished run of the full model on ``stack_path``; None trains one in ``OUT/full/run``.
        seed: Training seed (ignored with ``base_run``).
        metric: Key of :func:`cryonet.metrics.summary`.
        device: ``auto`` or a torch device.
        progress: Show progress bars.
        **overrides: Profile fields for the retrained runs (e.g. ``epochs=2``); with ``base_run`` they make the
            retrained runs differ from the full model's protocol, so use them without ``base_run`` for a fair
            comparison (the full model is then trained with them too).

    Returns:
        One row per group: ``group, dropped_layers, layers_left, metric, full_score, score, drop`` (``full_score -
        score``), ``same_split``, ``epochs_run``, ``run_dir``. ``attrs``: ``full_score``, ``metric``, ``base_run``.
        Each group's ``ablation.json`` holds these plus ``full_run`` and the recorded inputs
        (``full_checkpoint_sha256``, ``profile``, ``model``, ``stack_size``, ``stack_mtime_ns``).
    """
    from cryonet.stackfile import StackFile
    from cryonet.train import resolve_device

    _check_metric(metric)
    out_dir = Path(out_dir)
    stack = StackFile(stack_path)
    table = stack.table
    idx = group_layers(table, groups)
    dev = resolve_device(device)
    base, model, prof = _full_run(
        stack_path, labels_path, out_dir, base_run=base_run, model=model, profile=profile, seed=seed, device=device,
        progress=progress, overrides=overrides,
    )  # fmt: skip
    ref = _reference(base, stack_path, labels_path, table, prof, model, metric=metric, dev=dev, progress=progress)
    rows = [
        _ablate_group(group, out_dir / group, ref, table, idx, metric=metric, device=device, dev=dev, progress=progress)
        for group in idx
    ]
    df = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    df.attrs.update(
        full_score=ref.full_score, metric=metric, base_run=str(base), model=model, full_checkpoint=ref.checkpoint
    )
    return df
