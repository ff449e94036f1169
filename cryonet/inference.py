"""Full-scene prediction: overlapping windows, smooth blending, output on exactly the input's grid.

How it works. Windows of ``tile_size`` pixels are laid on a regular grid with stride ``tile_size - overlap``; the
last row/column of windows is shifted to end at the raster edge, so every pixel is covered and no window reads past
the scene (scenes smaller than one tile are padded with nodata). Each window's softmax probabilities are weighted by
a separable window function that is largest in the tile centre and small, but never zero, at its edges
(:func:`blend_weights`), summed, and divided by the summed weights: predictions near tile edges, where a CNN sees
the least context, count least, and no seams show.

Memory. The scene is processed one row of windows at a time (a strip ``tile_size`` pixels high and the scene's
width). When a row of windows is done, the rows above the next window row are final and written out, and the
accumulator moves down. Peak memory is therefore independent of the number of rows and grows with the width only
through that strip: ``(classes + 1) x tile_size x width x 4`` bytes (about 45 MB for a full 10,980-pixel-wide
Sentinel-2 tile, 4 classes, 256-pixel tiles), plus one batch of windows. Each window is predicted exactly once.

Outputs: a single-band ``uint8`` class raster (``255`` where the stack has no valid data), optionally a float32
per-class probability raster, both tiled GeoTIFFs, written atomically; ``cog=True`` turns them into Cloud-Optimised
GeoTIFFs (GDAL's COG driver) in a final streaming copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.raster import Grid, atomic_path, open_raster

logger = logging.getLogger(__name__)


def blend_weights(tile_size: int, *, floor: float = 1e-3) -> np.ndarray:
    """Separable blending window ``(tile_size, tile_size)``: a squared sine, 1 in the centre, ``>= floor`` at edges.

    ``w(i) = max(sin^2(pi (i + 0.5) / n), floor)``; the 2-D weight is the outer product. A floor keeps single-window
    coverage at scene borders well defined.
    """
    i = np.arange(tile_size, dtype=np.float64)
    h = np.maximum(np.sin(np.pi * (i + 0.5) / tile_size) ** 2, floor)
    return np.outer(h, h).astype(np.float32)


def window_offsets(length: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets along one axis: ``0, stride, ...``, the last shifted to end at ``length`` (>= 1 offset)."""
    if length <= tile_size:
        return [0]
    offsets = list(range(0, length - tile_size + 1, stride))
    if offsets[-1] != length - tile_size:
        offsets.append(length - tile_size)
    return offsets


@dataclass(frozen=True)
class PredictionResult:
    """Where a prediction went and how it was made."""

    labels: Path
    probabilities: Path | None
    windows: int
    seconds: float
    grid: Grid


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_raster(
    stack_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    model: Any,
    normalizer: Any,
    tile_size: int = 256,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    probabilities_path: str | os.PathLike[str] | None = None,
    cog: bool = True,
    min_valid_fraction: float = 0.0,
    progress: bool = True,
) -> PredictionResult:
    """Predict every pixel of a feature stack with a trained model.

    Args:
        stack_path: Feature stack GeoTIFF (band descriptions = layer names, NaN = nodata).
        out_path: Class raster to write (uint8, 255 = no valid input).
        model: A ``torch.nn.Module`` mapping ``(N, layers, H, W)`` to logits ``(N, classes, H, W)``.
        normalizer: Object with ``layers`` (names the model was trained on), ``apply(x)`` and
            ``check_layers(names, source)`` (see :class:`cryonet.datasets.Normalizer`).
        tile_size: Window edge in pixels (use the training tile size or a multiple of 32 larger than it).
        overlap: Overlap between neighbouring windows in pixels (default: a quarter of ``tile_size``).
        batch_size: Windows per forward pass.
        device: ``auto`` (cuda, then mps, then cpu) or a torch device string.
        probabilities_path: Also write per-class probabilities here (float32, one band per class).
        cog: Convert the outputs to Cloud-Optimised GeoTIFFs at the end.
        min_valid_fraction: Pixels are labelled nodata where fewer than this fraction of layers is valid.
        progress: Show a tqdm bar over window rows.

    Returns:
        A :class:`PredictionResult`.
    """
    import time

    import torch
    from tqdm.auto import tqdm

    from cryonet.stackfile import StackFile
    from cryonet.train import resolve_device

    if overlap is None:
        overlap = tile_size // 4
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size); got {overlap} for tile_size {tile_size}")
    stride = tile_size - overlap
    names = StackFile(stack_path).layers
    normalizer.check_layers(names, source=str(stack_path))
    dev = resolve_device(device)
    model = model.to(dev).eval()
    weights_np = blend_weights(tile_size)
    weights = torch.from_numpy(weights_np).to(dev)
    t0 = time.perf_counter()

    with open_raster(stack_path) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
        height, width = src.height, src.width
        rows = window_offsets(height, tile_size, stride)
        cols = window_offsets(width, tile_size, stride)
        n_classes: int | None = None
        base = 0  # first raster row held in the accumulator
        acc: np.ndarray | None = None
        wsum = np.zeros((tile_size, width), dtype=np.float32)
        valid = np.zeros((tile_size, width), dtype=bool)
        n_windows = 0
        profile = {
            "driver": "GTiff", "width": width, "height": height, "crs": src.crs, "transform": src.transform,
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }  # fmt: skip
        with atomic_path(out_path) as tmp_labels, _maybe_atomic(probabilities_path) as tmp_probs:
            dst_labels = rasterio.open(tmp_labels, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **profile)
            dst_probs = None
            try:
                for r_index, r0 in enumerate(tqdm(rows, desc="predict", unit="row", disable=not progress)):
                    win_h = min(tile_size, height - r0)
                    strip = src.read(window=Window(0, r0, width, win_h), out_dtype="float32")
                    finite = np.isfinite(strip)
                    strip_valid = finite.mean(axis=0) > min_valid_fraction if min_valid_fraction else finite.any(0)
                    x_strip = normalizer.apply(strip)
                    if win_h < tile_size or width < tile_size:  # scene smaller than a tile: pad
                        pad = np.zeros((x_strip.shape[0], tile_size, max(width, tile_size)), dtype=np.float32)
                        pad[:, :win_h, :width] = x_strip
                        x_strip = pad
                    with torch.inference_mode():
                        for batch in _batches(cols, batch_size):
                            xb = torch.from_numpy(np.stack([x_strip[:, :, c : c + tile_size] for c in batch])).to(dev)
                            with torch.autocast(device_type=dev.type, enabled=dev.type == "cuda"):
                                logits = model(xb)
                            probs = torch.softmax(logits.float(), dim=1) * weights
                            probs_np = probs.cpu().numpy()
                            if acc is None:
                                n_classes = probs_np.shape[1]
                                acc = np.zeros((n_classes, tile_size, width), dtype=np.float32)
                            off = r0 - base
                            for k, c in enumerate(batch):
                                cw = min(tile_size, width - c)
                                acc[:, off : off + win_h, c : c + cw] += probs_np[k, :, :win_h, :cw]
                                wsum[off : off + win_h, c : c + cw] += weights_np[:win_h, :cw]
                            n_windows += len(batch)
                    valid[r0 - base : r0 - base + win_h] |= strip_valid
                    # rows above the next window row receive no more contributions: flush them
                    last = r_index == len(rows) - 1
                    done_until = height if last else rows[r_index + 1]
                    n_done = done_until - base
                    if n_done > 0:
                        assert acc is not None and n_classes is not None
                        p = acc[:, :n_done] / np.maximum(wsum[:n_done], 1e-12)
                        labels = p.argmax(axis=0).astype(np.uint8)
                        labels[~valid[:n_done]] = LABEL_NODATA
                        out_win = Window(0, base, width, n_done)
                        dst_labels.write(labels, 1, window=out_win)
                        if tmp_probs is not None:
                            if dst_probs is None:
                                dst_probs = rasterio.open(
                                    tmp_probs,
                                    "w",
                                    count=n_classes,
                                    dtype="float32",
                                    nodata=float("nan"),
                                    predictor=3,
                                    **profile,
                                )
                                names_out = (
                                    CLASSES if n_classes == len(CLASSES) else [f"class_{i}" for i in range(n_classes)]
                                )
                                for i, nm in enumerate(names_out, start=1):
                                    dst_probs.set_band_description(i, f"p_{nm}")
                            p = p.astype(np.float32)
                            p[:, ~valid[:n_done]] = np.nan
                            dst_probs.write(p, window=out_win)
                        # move the accumulator down
                        keep = acc.shape[1] - n_done
                        acc[:, :keep] = acc[:, n_done:].copy()
                        acc[:, keep:] = 0
                        wsum[:keep] = wsum[n_done:].copy()
                        wsum[keep:] = 0
                        valid[:keep] = valid[n_done:].copy()
                        valid[keep:] = False
                        base = done_until
                dst_labels.set_band_description(1, "class")
                dst_labels.update_tags(classes=",".join(CLASSES), nodata_meaning="no valid input layer")
            finally:
                dst_labels.close()
                if dst_probs is not None:
                    dst_probs.close()
            if cog:
                _to_cog(tmp_labels, resampling="nearest")
                if tmp_probs is not None:
                    _to_cog(tmp_probs, resampling="average")
    seconds = time.perf_counter() - t0
    logger.info("predicted %d windows in %.1f s -> %s", n_windows, seconds, out_path)
    return PredictionResult(
        labels=Path(out_path),
        probabilities=Path(probabilities_path) if probabilities_path else None,
        windows=n_windows,
        seconds=seconds,
        grid=grid,
    )


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_atomic(path: str | os.PathLike[str] | None) -> Any:
    return atomic_path(path) if path is not None else _NullContext()


def _to_cog(path: Path, *, resampling: str) -> None:
    """Rewrite ``path`` in place as a Cloud-Optimised GeoTIFF (GDAL's COG driver streams the copy)."""
    from rasterio.shutil import copy as rio_copy

    tmp = path.with_name(path.name + ".cog.tif")
    try:
        rio_copy(path, tmp, driver="COG", compress="deflate", blocksize=256, overview_resampling=resampling)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def predict_checkpoint(
    checkpoint: str | os.PathLike[str],
    stack_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    **kwargs: Any,
) -> PredictionResult:
    """Load a training run's model and normalisation (:func:`cryonet.train.load_model`) and predict a stack.

    ``tile_size`` defaults to the training tile size stored in the checkpoint; other keyword arguments go to
    :func:`predict_raster`.
    """
    from cryonet.train import load_model

    model, normalizer, meta = load_model(checkpoint)
    if "tile_size" not in kwargs:
        tile = int(meta.get("tile_size") or meta.get("profile", {}).get("tile_size") or 256)
        kwargs["tile_size"] = tile
    return predict_raster(stack_path, out_path, model=model, normalizer=normalizer, **kwargs)
