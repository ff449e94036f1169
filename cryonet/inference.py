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


class _Blend:
    """Running sums of window-weighted class probabilities over a strip of rows, moving down the raster.

    The strip is ``tile_size`` rows high and the raster's width; it starts at raster row :attr:`base`. Each window's
    weighted softmax is added to :attr:`acc` and its weights to :attr:`wsum`; :meth:`take` divides the rows that
    receive no more contributions and moves the strip down past them.
    """

    def __init__(self, tile_size: int, width: int) -> None:
        """An empty strip at the top of the raster.

        Args:
            tile_size: Window edge, pixels (the strip's height).
            width: Raster width, pixels.
        """
        self.tile_size = tile_size
        self.width = width
        self.base = 0  # first raster row held in the strip
        self.acc: np.ndarray | None = None  # (classes, tile_size, width), once the number of classes is known
        self.wsum = np.zeros((tile_size, width), dtype=np.float32)
        self.valid = np.zeros((tile_size, width), dtype=bool)

    def add(self, probs: np.ndarray, cols: list[int], r0: int, win_h: int, weights: np.ndarray) -> None:
        """Add a batch of weighted window probabilities.

        Args:
            probs: ``(windows, classes, tile_size, tile_size)`` softmax times the blending weights.
            cols: Column offset of each window.
            r0: Raster row of the windows' top edge.
            win_h: Rows of the windows that lie inside the raster.
            weights: ``(tile_size, tile_size)`` blending weights (:func:`blend_weights`).
        """
        if self.acc is None:
            self.acc = np.zeros((probs.shape[1], self.tile_size, self.width), dtype=np.float32)
        off = r0 - self.base
        for k, c in enumerate(cols):
            cw = min(self.tile_size, self.width - c)
            self.acc[:, off : off + win_h, c : c + cw] += probs[k, :, :win_h, :cw]
            self.wsum[off : off + win_h, c : c + cw] += weights[:win_h, :cw]

    def mark_valid(self, r0: int, win_h: int, strip_valid: np.ndarray) -> None:
        """Mark the pixels of a window row that have valid input.

        Args:
            r0: Raster row of the window row's top edge.
            win_h: Rows of the window row inside the raster.
            strip_valid: ``(win_h, width)`` True where the input is valid.
        """
        self.valid[r0 - self.base : r0 - self.base + win_h] |= strip_valid

    def take(self, n_done: int) -> tuple[np.ndarray, np.ndarray]:
        """Blended probabilities of the strip's first ``n_done`` rows; the strip then moves down past them.

        Args:
            n_done: Rows that receive no more contributions.

        Returns:
            ``(p, valid)``: ``(classes, n_done, width)`` float32 probabilities and ``(n_done, width)`` validity.
        """
        assert self.acc is not None
        acc, wsum, valid = self.acc, self.wsum, self.valid
        p = acc[:, :n_done] / np.maximum(wsum[:n_done], 1e-12)
        done_valid = valid[:n_done].copy()
        keep = acc.shape[1] - n_done
        acc[:, :keep] = acc[:, n_done:].copy()
        acc[:, keep:] = 0
        wsum[:keep] = wsum[n_done:].copy()
        wsum[keep:] = 0
        valid[:keep] = valid[n_done:].copy()
        valid[keep:] = False
        self.base += n_done
        return p, done_valid


@dataclass
class _Predictor:
    """A model on its device with its normalisation and blending weights, predicting one window row at a time.

    Attributes:
        model: The model in eval mode on ``device``.
        normalizer: Normaliser with ``apply(x)``.
        device: The torch device.
        weights: ``(tile_size, tile_size)`` blending weights as a numpy array.
        weights_t: The same weights as a tensor on ``device``.
        tile_size: Window edge, pixels.
        stride: Window stride, pixels.
        batch_size: Windows per forward pass.
        min_valid_fraction: A pixel is valid where more than this fraction of layers is finite (0: any layer).
    """

    model: Any
    normalizer: Any
    device: Any
    weights: np.ndarray
    weights_t: Any
    tile_size: int
    stride: int
    batch_size: int
    min_valid_fraction: float

    @classmethod
    def create(
        cls, model: Any, normalizer: Any, device: str, tile_size: int, stride: int, batch_size: int, min_valid: float
    ) -> _Predictor:
        """Move ``model`` to the resolved ``device`` in eval mode and prepare the blending weights.

        Args:
            model: A ``torch.nn.Module``.
            normalizer: Normaliser with ``apply(x)``.
            device: ``auto`` or a torch device string.
            tile_size: Window edge, pixels.
            stride: Window stride, pixels.
            batch_size: Windows per forward pass.
            min_valid: The ``min_valid_fraction`` of :func:`predict_raster`.

        Returns:
            The :class:`_Predictor`.
        """
        import torch

        from cryonet.train import resolve_device

        dev = resolve_device(device)
        model = model.to(dev).eval()
        weights = blend_weights(tile_size)
        weights_t = torch.from_numpy(weights).to(dev)
        return cls(model, normalizer, dev, weights, weights_t, tile_size, stride, batch_size, min_valid)

    def read_strip(self, src: Any, r0: int, win_h: int) -> tuple[np.ndarray, np.ndarray]:
        """Read and normalise one window row of the stack; pad it to a whole tile where the scene is smaller.

        Args:
            src: Open stack dataset.
            r0: First row.
            win_h: Rows to read.

        Returns:
            ``(x_strip, strip_valid)``: ``(layers, rows, cols)`` float32 model input and ``(win_h, width)`` validity.
        """
        width, tile_size = src.width, self.tile_size
        strip = src.read(window=Window(0, r0, width, win_h), out_dtype="float32")
        finite = np.isfinite(strip)
        min_valid = self.min_valid_fraction
        strip_valid = finite.mean(axis=0) > min_valid if min_valid else finite.any(0)
        x_strip = self.normalizer.apply(strip)
        if win_h < tile_size or width < tile_size:  # scene smaller than a tile: pad
            pad = np.zeros((x_strip.shape[0], tile_size, max(width, tile_size)), dtype=np.float32)
            pad[:, :win_h, :width] = x_strip
            x_strip = pad
        return x_strip, strip_valid

    def predict_row(self, x_strip: np.ndarray, cols: list[int], r0: int, win_h: int, blend: _Blend) -> int:
        """Predict every window of one window row and add it to ``blend``.

        Args:
            x_strip: ``(layers, >= tile_size, >= tile_size)`` normalised input strip (padded if the scene is small).
            cols: Column offsets of the windows.
            r0: Raster row of the window row's top edge.
            win_h: Rows of the windows inside the raster.
            blend: The running sums.

        Returns:
            The number of windows predicted.
        """
        import torch

        dev, ts = self.device, self.tile_size
        with torch.inference_mode():
            for batch in _batches(cols, self.batch_size):
                xb = torch.from_numpy(np.stack([x_strip[:, :, c : c + ts] for c in batch])).to(dev)
                with torch.autocast(device_type=dev.type, enabled=dev.type == "cuda"):
                    logits = self.model(xb)
                probs = torch.softmax(logits.float(), dim=1) * self.weights_t
                blend.add(probs.cpu().numpy(), batch, r0, win_h, self.weights)
        return len(cols)


class _Outputs:
    """The class raster and the optional probability raster, written block row by block row.

    The probability raster is opened at the first write, when the number of classes is known.
    """

    def __init__(self, labels_path: Path, probs_path: Path | None, profile: dict[str, Any]) -> None:
        """Open the class raster for writing.

        Args:
            labels_path: Class raster to write.
            probs_path: Probability raster to write, or None.
            profile: Shared rasterio creation options (driver, size, grid, tiling, compression).
        """
        self.profile = profile
        self.probs_path = probs_path
        self.labels = rasterio.open(labels_path, "w", count=1, dtype="uint8", nodata=LABEL_NODATA, **profile)
        self.probs: Any = None

    def __enter__(self) -> _Outputs:
        """The outputs themselves."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close both rasters."""
        self.labels.close()
        if self.probs is not None:
            self.probs.close()

    def _open_probs(self, n_classes: int) -> Any:
        """Open the probability raster with one band per class, described as ``p_<class>``."""
        dst = rasterio.open(
            self.probs_path, "w", count=n_classes, dtype="float32", nodata=float("nan"), predictor=3, **self.profile
        )
        names_out = CLASSES if n_classes == len(CLASSES) else [f"class_{i}" for i in range(n_classes)]
        for i, nm in enumerate(names_out, start=1):
            dst.set_band_description(i, f"p_{nm}")
        return dst

    def write(self, p: np.ndarray, valid: np.ndarray, row: int) -> None:
        """Write the labels (and probabilities) of the rows from ``row`` on.

        Args:
            p: ``(classes, rows, width)`` blended probabilities.
            valid: ``(rows, width)`` True where the input is valid; elsewhere label nodata and NaN probabilities.
            row: First raster row.
        """
        labels = p.argmax(axis=0).astype(np.uint8)
        labels[~valid] = LABEL_NODATA
        out_win = Window(0, row, self.profile["width"], p.shape[1])
        self.labels.write(labels, 1, window=out_win)
        if self.probs_path is not None:
            if self.probs is None:
                self.probs = self._open_probs(p.shape[0])
            p = p.astype(np.float32)
            p[:, ~valid] = np.nan
            self.probs.write(p, window=out_win)

    def finish(self) -> None:
        """Describe the class band once every row is written."""
        self.labels.set_band_description(1, "class")
        self.labels.update_tags(classes=",".join(CLASSES), nodata_meaning="no valid input layer")


def _predict_rows(src: Any, outs: _Outputs, predictor: _Predictor, progress: bool) -> int:
    """Predict the stack one window row at a time, writing the rows that are final after each.

    Args:
        src: Open stack dataset.
        outs: The output rasters.
        predictor: The model, its normalisation and the window layout.
        progress: Show a tqdm bar over window rows.

    Returns:
        The number of windows predicted.
    """
    from tqdm.auto import tqdm

    tile_size = predictor.tile_size
    height, width = src.height, src.width
    rows = window_offsets(height, tile_size, predictor.stride)
    cols = window_offsets(width, tile_size, predictor.stride)
    blend = _Blend(tile_size, width)
    n_windows = 0
    for r_index, r0 in enumerate(tqdm(rows, desc="predict", unit="row", disable=not progress)):
        win_h = min(tile_size, height - r0)
        x_strip, strip_valid = predictor.read_strip(src, r0, win_h)
        n_windows += predictor.predict_row(x_strip, cols, r0, win_h, blend)
        blend.mark_valid(r0, win_h, strip_valid)
        # rows above the next window row receive no more contributions: flush them
        done_until = height if r_index == len(rows) - 1 else rows[r_index + 1]
        if done_until > blend.base:
            row = blend.base
            p, valid = blend.take(done_until - row)
            outs.write(p, valid, row)
    return n_windows


def _predict_file(
    src: Any,
    out_path: str | os.PathLike[str],
    probabilities_path: str | os.PathLike[str] | None,
    predictor: _Predictor,
    *,
    cog: bool,
    progress: bool,
) -> int:
    """Predict an open stack into its class (and probability) rasters, written atomically, optionally as COGs.

    Args:
        src: Open stack dataset.
        out_path: Class raster to write.
        probabilities_path: Probability raster to write, or None.
        predictor: The model, its normalisation and the window layout.
        cog: Convert the outputs to Cloud-Optimised GeoTIFFs at the end.
        progress: Show a tqdm bar over window rows.

    Returns:
        The number of windows predicted.
    """
    profile = {
        "driver": "GTiff", "width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    with atomic_path(out_path) as tmp_labels, _maybe_atomic(probabilities_path) as tmp_probs:
        with _Outputs(tmp_labels, tmp_probs, profile) as outs:
            n_windows = _predict_rows(src, outs, predictor, progress)
            outs.finish()
        if cog:
            _to_cog(tmp_labels, resampling="nearest")
            if tmp_probs is not None:
                _to_cog(tmp_probs, resampling="average")
    return n_windows


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

    from cryonet.stackfile import StackFile

    if overlap is None:
        overlap = tile_size // 4
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size); got {overlap} for tile_size {tile_size}")
    names = StackFile(stack_path).layers
    normalizer.check_layers(names, source=str(stack_path))
    stride = tile_size - overlap
    predictor = _Predictor.create(model, normalizer, device, tile_size, stride, batch_size, min_valid_fraction)
    t0 = time.perf_counter()

    with open_raster(stack_path) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
        n_windows = _predict_file(src, out_path, probabilities_path, predictor, cog=cog, progress=progress)
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
