"""Read, write and align rasters with rasterio; rasterise reference polygons.

Conventions used throughout the package:

* Arrays are ``(bands, rows, cols)``; single bands are ``(rows, cols)``.
* Missing data is NaN in float arrays (read with :func:`read_raster`), or a separate boolean mask.
* Every file is written atomically: to a temporary file in the destination directory, then renamed, so that a
  killed job never leaves a half-written GeoTIFF under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

logger = logging.getLogger(__name__)


class RasterError(ValueError):
    """A raster input is missing, unreadable or does not fit what was expected; the message names the file."""


@dataclass(frozen=True)
class Grid:
    """A georeferenced pixel grid: CRS, affine transform and shape.

    Attributes:
        crs: Coordinate reference system.
        transform: Affine transform from pixel (col, row) to CRS coordinates of the pixel's upper-left corner.
        width: Number of columns.
        height: Number of rows.
    """

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units (positive numbers)."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units."""
        left, top = self.transform * (0, 0)
        right, bottom = self.transform * (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Grid:
        """The grid of an existing raster."""
        with open_raster(path) as src:
            return cls(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


@contextmanager
def open_raster(path: str | os.PathLike[str]) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading, turning every failure into a :class:`RasterError` that names the file.

    Raises:
        RasterError: the file is missing, not a raster, truncated or corrupt, or has no CRS.
    """
    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: file not found; check the path or regenerate the input.")
    if path.is_dir():
        raise RasterError(f"{path}: is a directory, expected a raster file (GeoTIFF).")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(
            f"{path}: not a readable raster ({exc}). Expected a GeoTIFF or another GDAL-readable raster; "
            "the file may be truncated or of another format. Re-download or regenerate it."
        ) from exc
    try:
        if src.crs is None:
            raise RasterError(
                f"{path}: the raster has no coordinate reference system. Expected a georeferenced raster; "
                "assign one with `gdal_edit.py -a_srs EPSG:XXXX` if you know it."
            )
        yield src
    finally:
        src.close()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination directory so that the final :func:`os.replace` is atomic on POSIX
    file systems. On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        # GDAL may leave an .aux.xml side-car next to the temporary name.
        Path(str(tmp_path) + ".aux.xml").unlink(missing_ok=True)


def write_raster(
    path: str | os.PathLike[str],
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | int | None = None,
    descriptions: Sequence[str] | None = None,
    dtype: str | np.dtype | None = None,
    cog: bool = False,
    compress: str = "deflate",
    blocksize: int = 256,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write ``data`` as a tiled, compressed GeoTIFF (or Cloud-Optimised GeoTIFF), atomically.

    Args:
        path: Destination file.
        data: ``(bands, rows, cols)`` or ``(rows, cols)`` array on ``grid``.
        grid: The pixel grid of ``data``.
        nodata: Value that marks missing data in the file (NaN is allowed for float types).
        descriptions: One name per band (layer names), stored as GDAL band descriptions.
        dtype: Output data type; defaults to ``data.dtype``.
        cog: Write a Cloud-Optimised GeoTIFF (GDAL's COG driver: internal tiling and overviews).
        compress: Compression codec.
        blocksize: Internal tile size in pixels.
        tags: Dataset-level metadata tags.

    Returns:
        ``path``.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise ValueError(f"expected a (bands, rows, cols) or (rows, cols) array, got shape {arr.shape}")
    if arr.shape[1:] != grid.shape:
        raise ValueError(f"array shape {arr.shape[1:]} does not match grid shape {grid.shape}")
    if descriptions is not None and len(descriptions) != arr.shape[0]:
        raise ValueError(f"{len(descriptions)} band descriptions for {arr.shape[0]} bands")
    out_dtype = np.dtype(dtype) if dtype is not None else arr.dtype
    if out_dtype == np.bool_:
        out_dtype = np.dtype("uint8")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": arr.shape[0],
        "dtype": out_dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": compress,
    }
    if min(grid.width, grid.height) >= blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if np.issubdtype(out_dtype, np.floating):
        profile["predictor"] = 3 if compress in ("deflate", "lzw", "zstd") else 1
    path = Path(path)
    with atomic_path(path) as tmp:
        target = tmp.with_name(tmp.name + ".plain.tif") if cog else tmp
        try:
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(arr.astype(out_dtype, copy=False))
                if descriptions is not None:
                    for i, name in enumerate(descriptions, start=1):
                        dst.set_band_description(i, str(name))
                if tags:
                    dst.update_tags(**tags)
            if cog:
                from rasterio.shutil import copy as rio_copy

                rio_copy(target, tmp, driver="COG", compress=compress, blocksize=blocksize, overview_resampling="nearest"
                         if np.issubdtype(out_dtype, np.integer) else "average")
        finally:
            if cog:
                Path(target).unlink(missing_ok=True)
    logger.debug("wrote %s (%d bands, %s)", path, arr.shape[0], out_dtype)
    return path
