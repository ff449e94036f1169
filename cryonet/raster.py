"""Read, write and align single rasters with rasterio: generic raster I/O, whatever the layer holds.

What the inputs physically are (Sentinel-2 digital numbers, class polygons, a whole scene) is the business of
:mod:`cryonet.prepare`, which builds on these functions.

Conventions used throughout the package:

* Arrays are ``(bands, rows, cols)``; single bands are ``(rows, cols)``.
* Missing data is NaN in float arrays (read with :func:`read_raster`), or a separate boolean mask.
* Every file is written atomically: to a temporary file in the destination directory, then renamed, so that a
  killed job never leaves a half-written GeoTIFF under the final name. A file that exists under its final name is
  therefore complete, which is what lets :func:`cryonet.prepare.align_scene` resume by skipping existing outputs.
* Rasters larger than memory are processed window by window (:func:`iter_windows`, :func:`read_window`); alignment
  reads a :class:`rasterio.vrt.WarpedVRT` (:func:`warped`) so that no aligned raster is ever materialised whole.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from tqdm import tqdm

from cryonet.errors import CryonetError

logger = logging.getLogger(__name__)


class RasterError(CryonetError, ValueError):
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
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
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


def _default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 minus the process umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
        # mkstemp creates files readable by the owner only; give the result the usual umask-based mode
        os.chmod(tmp_path, _default_file_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        # GDAL may leave an .aux.xml side-car next to the temporary name.
        Path(str(tmp_path) + ".aux.xml").unlink(missing_ok=True)


def gtiff_profile(
    grid: Grid,
    count: int,
    dtype: np.dtype | str,
    nodata: float | int | None,
    *,
    compress: str = "deflate",
    blocksize: int = 256,
) -> dict:
    """The rasterio creation profile of a compressed GeoTIFF on ``grid``, as :func:`write_raster` uses it.

    For writing window by window: ``with atomic_path(dst) as tmp, rasterio.open(tmp, "w", **gtiff_profile(...))``
    then ``dst.write(block, window=w)`` per window, with windows of whole tiles (multiples of ``blocksize``).

    Args:
        grid: Pixel grid of the file.
        count: Number of bands.
        dtype: Data type of the file.
        nodata: Nodata value (NaN allowed for float types), or None.
        compress: Compression codec (a floating-point predictor is added for float data).
        blocksize: Tile edge length; the file is tiled only if the grid is at least one tile in each direction.

    Returns:
        Keyword arguments for ``rasterio.open(path, "w", **profile)``.
    """
    dtype = np.dtype(dtype)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "compress": compress,
    }
    if min(grid.width, grid.height) >= blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if np.issubdtype(dtype, np.floating):
        profile["predictor"] = 3 if compress in ("deflate", "lzw", "zstd") else 1
    return profile


#: Former private name, still imported by :mod:`cryonet.features.stack`.
_gtiff_profile = gtiff_profile


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
    profile = gtiff_profile(grid, arr.shape[0], out_dtype, nodata, compress=compress, blocksize=blocksize)
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

                overview = "nearest" if np.issubdtype(out_dtype, np.integer) else "average"
                rio_copy(
                    target, tmp, driver="COG", compress=compress, blocksize=blocksize, overview_resampling=overview
                )
        finally:
            if cog:
                Path(target).unlink(missing_ok=True)
    logger.debug("wrote %s (%d bands, %s)", path, arr.shape[0], out_dtype)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Reading: whole rasters, windows, validity masks, integrity checks
# ---------------------------------------------------------------------------------------------------------------

#: A window as a rasterio :class:`~rasterio.windows.Window` or as ``((row_start, row_stop), (col_start, col_stop))``.
WindowLike = Window | tuple[tuple[int, int], tuple[int, int]]
#: Default edge length (pixels) of the windows in which rasters are aligned: 1024² float32 = 4 MiB per band.
DEFAULT_WINDOW = 1024


def write_band_subset_vrt(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    bands: Sequence[int],
    *,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a GDAL VRT that shows some bands of a raster, in a given order, without copying a pixel.

    The VRT (GDAL's XML virtual format, read by rasterio like any raster) holds the source's grid, CRS, nodata and
    block size, one ``SimpleSource`` per band, and the source's path relative to the VRT's folder, so that the two
    can be moved together. It stays valid only as long as the source exists at that relative place and is not
    rewritten with other bands. Written here because rasterio writes no VRT (``gdal_translate -of VRT -b ...`` does
    the same, but the GDAL command-line tools are not a Python dependency). Written atomically.

    Args:
        src_path: Source raster (e.g. a feature stack GeoTIFF).
        dst_path: Output ``.vrt``.
        bands: 1-based source band indexes, in the order they get in the VRT.
        descriptions: Band descriptions (default: the source's).
        tags: Dataset metadata (default: the source's).

    Returns:
        ``dst_path``.

    Raises:
        RasterError: Unreadable source, a band index out of range, or a description count that does not match.
    """
    import xml.etree.ElementTree as ET

    src_path, dst_path = Path(src_path), Path(dst_path)
    with open_raster(src_path) as src:
        bad = [b for b in bands if not 1 <= int(b) <= src.count]
        if bad or not bands:
            raise RasterError(f"{src_path}: band indexes {list(bands)} must be a non-empty list within 1..{src.count}")
        descs = list(descriptions) if descriptions is not None else [src.descriptions[int(b) - 1] for b in bands]
        if len(descs) != len(bands):
            raise RasterError(f"{dst_path}: {len(descs)} descriptions for {len(bands)} bands")
        meta = dict(src.tags() if tags is None else tags)
        width, height, crs, transform = src.width, src.height, src.crs, src.transform
        infos = [(src.dtypes[int(b) - 1], src.block_shapes[int(b) - 1], src.nodatavals[int(b) - 1]) for b in bands]
    gdal_types = {
        "uint8": "Byte",
        "int8": "Int8",
        "uint16": "UInt16",
        "int16": "Int16",
        "uint32": "UInt32",
        "int32": "Int32",
        "float32": "Float32",
        "float64": "Float64",
    }
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in transform.to_gdal())
    if meta:
        md = ET.SubElement(root, "Metadata")
        for key, value in meta.items():
            ET.SubElement(md, "MDI", key=str(key)).text = str(value)
    rel = os.path.relpath(src_path.resolve(), dst_path.resolve().parent)
    for i, (b, desc, (dtype, (by, bx), nodata)) in enumerate(zip(bands, descs, infos, strict=True), start=1):
        if dtype not in gdal_types:
            raise RasterError(f"{src_path}: band {b} has data type {dtype}, which this VRT writer does not handle")
        band = ET.SubElement(
            root, "VRTRasterBand", dataType=gdal_types[dtype], band=str(i), blockXSize=str(bx), blockYSize=str(by)
        )
        if desc:
            ET.SubElement(band, "Description").text = str(desc)
        if nodata is not None:
            ET.SubElement(band, "NoDataValue").text = "nan" if np.isnan(nodata) else repr(nodata)
        source = ET.SubElement(band, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = rel
        ET.SubElement(source, "SourceBand").text = str(int(b))
        ET.SubElement(
            source,
            "SourceProperties",
            RasterXSize=str(width),
            RasterYSize=str(height),
            DataType=gdal_types[dtype],
            BlockXSize=str(bx),
            BlockYSize=str(by),
        )
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
        ET.SubElement(source, "DstRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
    ET.indent(root)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst_path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8")
    return dst_path


def _as_window(window: WindowLike) -> Window:
    """A rasterio Window with integer offsets and sizes."""
    win = window if isinstance(window, Window) else Window.from_slices(*window)
    return Window(int(round(win.col_off)), int(round(win.row_off)), int(round(win.width)), int(round(win.height)))


def _indexes(src: rasterio.io.DatasetReaderBase, bands: int | Sequence[int] | None) -> list[int]:
    """1-based band indexes to read, checked against the raster's band count."""
    if bands is None:
        return list(src.indexes)
    idx = [int(bands)] if isinstance(bands, int | np.integer) else [int(b) for b in bands]
    bad = [b for b in idx if not 1 <= b <= src.count]
    if bad:
        raise RasterError(f"{src.name}: band(s) {bad} requested, but the raster has {src.count} (numbered from 1).")
    return idx


def _valid(src: rasterio.io.DatasetReaderBase, data: np.ndarray, idx: list[int], window: Window | None) -> np.ndarray:
    """``(bands, rows, cols)`` True where a pixel is valid.

    GDAL's mask band is either the internal (or ``.msk``) mask or the nodata mask, never both, so nodata and NaN
    are tested here as well: a pixel is valid only if every one of them says so.
    """
    valid = src.read_masks(idx, window=window) > 0
    for k, bidx in enumerate(idx):
        nodata = src.nodatavals[bidx - 1]
        if nodata is not None:
            valid[k] &= ~np.isnan(data[k]) if np.isnan(nodata) else data[k] != nodata
    if data.dtype.kind == "f":
        valid &= ~np.isnan(data)
    return valid


def _read(src: rasterio.io.DatasetReaderBase, idx: list[int], window: Window | None, masked_nan: bool) -> np.ndarray:
    data = src.read(idx, window=window)
    valid = _valid(src, data, idx, window) if masked_nan else None
    out = data.astype(np.float32, copy=True)
    if valid is not None:
        out[~valid] = np.nan
    return out


def _corrupt(path: str | os.PathLike[str], exc: Exception) -> RasterError:
    return RasterError(
        f"{path}: the header is readable but the pixel data are not ({exc}); the file is truncated or corrupt "
        "(e.g. an interrupted download or copy). Re-download or regenerate it."
    )


def read_raster(
    path: str | os.PathLike[str],
    bands: int | Sequence[int] | None = None,
    window: WindowLike | None = None,
    *,
    masked_nan: bool = True,
) -> np.ndarray:
    """Read bands of a raster as float32, with missing pixels as NaN.

    Args:
        path: Raster file.
        bands: 1-based band index or indexes; all bands by default.
        window: Part of the raster to read (must lie inside it; see :func:`read_window` for reads that do not).
        masked_nan: Set pixels that are nodata, masked by an internal mask, or NaN to NaN. With False the raw
            values are returned (converted to float32).

    Returns:
        ``(bands, rows, cols)`` float32 array (integer data are converted; float64 is rounded to float32).

    Raises:
        RasterError: the file is missing, unreadable, truncated, has no CRS, or lacks a requested band.
    """
    with open_raster(path) as src:
        idx = _indexes(src, bands)
        try:
            return _read(src, idx, _as_window(window) if window is not None else None, masked_nan)
        except rasterio.errors.RasterioError as exc:
            raise _corrupt(path, exc) from exc


def read_mask(path: str | os.PathLike[str], band: int = 1, window: WindowLike | None = None) -> np.ndarray:
    """Validity mask of one band: True where the pixel holds data.

    A pixel is invalid if it equals the band's nodata value, is masked by an internal (or ``.msk``) mask, or is NaN.

    Args:
        path: Raster file.
        band: 1-based band index.
        window: Part of the raster to read; whole raster by default.

    Returns:
        ``(rows, cols)`` boolean array.
    """
    with open_raster(path) as src:
        idx = _indexes(src, band)
        win = _as_window(window) if window is not None else None
        try:
            data = src.read(idx, window=win)
            return _valid(src, data, idx, win)[0]
        except rasterio.errors.RasterioError as exc:
            raise _corrupt(path, exc) from exc


def _shape_of(grid_or_shape: Grid | rasterio.io.DatasetReaderBase | tuple[int, int]) -> tuple[int, int]:
    if isinstance(grid_or_shape, Grid):
        return grid_or_shape.shape
    if hasattr(grid_or_shape, "height") and hasattr(grid_or_shape, "width"):
        return (int(grid_or_shape.height), int(grid_or_shape.width))
    rows, cols = grid_or_shape  # type: ignore[misc]
    return (int(rows), int(cols))


def iter_windows(
    grid_or_shape: Grid | rasterio.io.DatasetReaderBase | tuple[int, int],
    size: int | tuple[int, int],
    overlap: int = 0,
    *,
    clip: bool = True,
) -> Iterator[Window]:
    """Tile a raster into windows, row by row, for processing rasters larger than memory.

    Without overlap the windows partition the raster: ``size``-square tiles, smaller at the right and bottom edges.

    Halo handling: with ``overlap > 0`` every tile is grown by ``overlap`` pixels on each side, so that a
    neighbourhood operation (a filter, GLCM texture, slope) sees its neighbours across tile seams. The tiles
    themselves are what ``iter_windows(grid, size)`` yields, in the same order, so a caller pairs them with::

        for core, outer in zip(iter_windows(g, 512), iter_windows(g, 512, overlap=8)):
            block = f(read_window(src, outer))          # computed with the halo
            dst.write(block[(slice(None), *halo_slices(core, outer))], window=core)   # halo cut off

    With ``clip=True`` (default) the grown windows are cut at the raster edge, so edge windows have less halo;
    with ``clip=False`` they extend beyond it (negative offsets) and every grown window has the full halo, to be
    read with :func:`read_window` (NaN outside the raster).

    Args:
        grid_or_shape: A :class:`Grid`, an open dataset, or ``(rows, cols)``.
        size: Tile edge length in pixels, or ``(rows, cols)``.
        overlap: Halo width in pixels added on every side.
        clip: Cut grown windows at the raster edge.

    Yields:
        :class:`rasterio.windows.Window` objects.
    """
    rows, cols = _shape_of(grid_or_shape)
    sh, sw = (size, size) if isinstance(size, int | np.integer) else size
    if sh <= 0 or sw <= 0:
        raise ValueError(f"window size must be positive, got {size}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    for r in range(0, rows, sh):
        for c in range(0, cols, sw):
            r0, r1 = r - overlap, min(r + sh, rows) + overlap
            c0, c1 = c - overlap, min(c + sw, cols) + overlap
            if clip:
                r0, r1, c0, c1 = max(r0, 0), min(r1, rows), max(c0, 0), min(c1, cols)
            yield Window(c0, r0, c1 - c0, r1 - r0)


def halo_slices(core: Window, outer: Window) -> tuple[slice, slice]:
    """``(row_slice, col_slice)`` that cut the ``core`` window out of an array read over ``outer``."""
    r = int(core.row_off - outer.row_off)
    c = int(core.col_off - outer.col_off)
    if r < 0 or c < 0 or r + core.height > outer.height or c + core.width > outer.width:
        raise ValueError(f"{core} does not lie inside {outer}")
    return (slice(r, r + int(core.height)), slice(c, c + int(core.width)))


def read_window(
    src_or_path: rasterio.io.DatasetReaderBase | str | os.PathLike[str],
    window: WindowLike,
    *,
    bands: int | Sequence[int] | None = None,
    fill: float = np.nan,
) -> np.ndarray:
    """Read a window that may extend beyond the raster (a boundless read), as float32 with NaN for missing data.

    Pixels outside the raster get ``fill`` (NaN by default); nodata, masked and NaN pixels inside it are NaN.
    Works on any open dataset, including the :class:`~rasterio.vrt.WarpedVRT` returned by :func:`warped`.

    Args:
        src_or_path: An open rasterio dataset or a raster path.
        window: The window (offsets may be negative, sizes may run past the edge).
        bands: 1-based band index or indexes; all by default.
        fill: Value for pixels outside the raster.

    Returns:
        ``(bands, window.height, window.width)`` float32 array.
    """
    if isinstance(src_or_path, str | os.PathLike):
        with open_raster(src_or_path) as src:
            return read_window(src, window, bands=bands, fill=fill)
    src = src_or_path
    win = _as_window(window)
    idx = _indexes(src, bands)
    out = np.full((len(idx), win.height, win.width), fill, dtype=np.float32)
    r0, c0 = max(win.row_off, 0), max(win.col_off, 0)
    r1, c1 = min(win.row_off + win.height, src.height), min(win.col_off + win.width, src.width)
    if r1 > r0 and c1 > c0:
        try:
            data = _read(src, idx, Window(c0, r0, c1 - c0, r1 - r0), masked_nan=True)
        except rasterio.errors.RasterioError as exc:
            raise _corrupt(src.name, exc) from exc
        out[:, r0 - win.row_off : r1 - win.row_off, c0 - win.col_off : c1 - win.col_off] = data
    return out


_KIND_NAMES = {"f": "float", "i": "signed integer", "u": "unsigned integer", "b": "boolean", "c": "complex"}


def check_raster(path: str | os.PathLike[str], *, count: int | None = None, dtype_kind: str | None = None) -> Grid:
    """Check that a file is a complete, georeferenced raster of the expected shape, and return its grid.

    Pixel data are actually read (the first and the last block of every band), because a GeoTIFF cut short
    still opens: its header and tile index sit at the start of the file, and only reading a missing tile fails.

    Args:
        path: Raster file.
        count: Expected number of bands.
        dtype_kind: Accepted numpy dtype kinds, e.g. ``"f"`` (float) or ``"iu"`` (any integer).

    Returns:
        The raster's :class:`Grid`.

    Raises:
        RasterError: naming the file, if it is missing, not a raster, truncated or corrupt, has no CRS, has another
            band count (expected vs found) or another data type kind.
    """
    with open_raster(path) as src:
        if count is not None and src.count != count:
            raise RasterError(
                f"{path}: expected {count} band(s), found {src.count}. Check that this is the right file "
                "(e.g. a single-band layer, not a multi-band stack)."
            )
        if dtype_kind is not None:
            kinds = {np.dtype(d).kind for d in src.dtypes}
            if not kinds <= set(dtype_kind):
                want = " or ".join(_KIND_NAMES.get(k, k) for k in dtype_kind)
                raise RasterError(f"{path}: expected {want} data, found {', '.join(sorted(set(src.dtypes)))}.")
        try:
            for bidx in src.indexes:
                bh, bw = src.block_shapes[bidx - 1]
                first = Window(0, 0, min(bw, src.width), min(bh, src.height))
                lr, lc = (src.height - 1) // bh * bh, (src.width - 1) // bw * bw
                last = Window(lc, lr, src.width - lc, src.height - lr)
                src.read(bidx, window=first)
                src.read(bidx, window=last)
        except rasterio.errors.RasterioError as exc:
            raise _corrupt(path, exc) from exc
        return Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)


# ---------------------------------------------------------------------------------------------------------------
# Alignment onto a reference grid
# ---------------------------------------------------------------------------------------------------------------

#: Largest error (in pixels) allowed in GDAL's approximation of the coordinate transformation while warping.
#: GDAL's default (0.125) interpolates the transformation linearly over the region being warped, so that a value
#: depends on which window is read: up to ~0.1 pixel shifts between a windowed and a whole-raster read. At 1e-5 the
#: result is the same for any window to float32 rounding (checked for EPSG:4326 -> UTM at 3 m), at ~1.5-3x the
#: cost of the default. (rasterio refuses an exact 0.)
WARP_TOLERANCE = 1e-5

#: Resampling methods that keep a categorical raster inside its set of values.
CATEGORICAL_RESAMPLING: tuple[Resampling, ...] = (Resampling.nearest, Resampling.mode)


def _resampling(resampling: Resampling | str | None, categorical: bool) -> Resampling:
    """Default bilinear for continuous and nearest for categorical layers; refuse interpolation of classes."""
    if resampling is None:
        return Resampling.nearest if categorical else Resampling.bilinear
    rs = Resampling[resampling] if isinstance(resampling, str) else Resampling(resampling)
    if categorical and rs not in CATEGORICAL_RESAMPLING:
        raise ValueError(
            f"resampling {rs.name!r} would invent values between class ids; use 'nearest' or 'mode' for a "
            "categorical layer."
        )
    return rs


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_proj4() or crs.to_wkt()


def _check_overlap(src: rasterio.io.DatasetReaderBase, grid: Grid, path: str | os.PathLike[str]) -> None:
    """Raise if the source footprint, projected onto the grid's CRS, does not intersect the grid."""
    from rasterio.warp import transform_bounds

    try:
        sb = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
    except Exception as exc:  # noqa: BLE001 - a pre-check only: if the bounds cannot be projected, the warp decides
        logger.debug("%s: could not project bounds onto the grid CRS (%s); overlap not pre-checked", path, exc)
        return
    if not np.all(np.isfinite(sb)):
        return
    gb = grid.bounds
    if sb[0] >= gb[2] or sb[2] <= gb[0] or sb[1] >= gb[3] or sb[3] <= gb[1]:
        fmt = ", ".join
        raise RasterError(
            f"{path}: its footprint ({fmt(f'{v:.1f}' for v in sb)}) does not overlap the target grid "
            f"({fmt(f'{v:.1f}' for v in gb)}); both as (left, bottom, right, top) in {_crs_label(grid.crs)}. "
            "Check that the input covers the reference raster's area and that its CRS is right."
        )


def _output_type(src: rasterio.io.DatasetReaderBase, categorical: bool) -> tuple[str, float | int]:
    """Output dtype and nodata: float32/NaN for continuous layers; the source type for categorical ones.

    A categorical source without a nodata value gets the largest (unsigned) or smallest (signed) value of its
    type, e.g. 255 for uint8 as in :data:`cryonet.constants.LABEL_NODATA`, so that pixels outside its footprint
    never read as class 0.
    """
    dtype = np.dtype(src.dtypes[0])
    if not categorical:
        return "float32", float("nan")
    if dtype.kind == "f":
        return dtype.name, src.nodata if src.nodata is not None else float("nan")
    if src.nodata is not None:
        return dtype.name, src.nodata
    info = np.iinfo(dtype)
    return dtype.name, int(info.max if dtype.kind == "u" else info.min)


@contextmanager
def warped(
    path: str | os.PathLike[str],
    grid: Grid,
    *,
    categorical: bool = False,
    resampling: Resampling | str | None = None,
    src_nodata: float | None = None,
    tolerance: float = WARP_TOLERANCE,
) -> Iterator[WarpedVRT]:
    """Open a raster as a virtual raster warped onto ``grid``, read lazily window by window.

    Any window of the returned :class:`~rasterio.vrt.WarpedVRT` is computed on request by GDAL's warper, so later
    steps can read any part of any input on the reference grid without materialising the aligned raster.

    Continuous layers are warped to float32 with NaN as nodata; categorical layers keep their data type and
    nodata value (see :func:`_output_type`). Pixels outside the source footprint and pixels computed only from
    source nodata are nodata, never zeros; source nodata (and NaN in float sources) never enters interpolation.

    Args:
        path: Source raster.
        grid: Target grid.
        categorical: The layer holds class ids: nearest (default) or mode resampling, source dtype kept.
        resampling: Override the method: ``"bilinear"`` (continuous default), ``"cubic"``, ``"nearest"``
            (categorical default), ``"mode"``, ... (a :class:`rasterio.enums.Resampling` or its name).
        src_nodata: Treat this source value as nodata (overrides the file's own nodata value).
        tolerance: Transformation approximation error in pixels (see :data:`WARP_TOLERANCE`).

    Yields:
        The warped virtual dataset (``vrt.read(window=w)`` returns ``(bands, rows, cols)``).

    Raises:
        RasterError: the source is unreadable or its footprint does not overlap the grid.
        ValueError: interpolating resampling requested for a categorical layer.
    """
    rs = _resampling(resampling, categorical)
    with open_raster(path) as src:
        _check_overlap(src, grid, path)
        dtype, nodata = _output_type(src, categorical)
        if src_nodata is None:
            src_nodata = src.nodata
            if src_nodata is None and np.dtype(src.dtypes[0]).kind == "f":
                src_nodata = float("nan")  # NaN marks missing data in float rasters without a nodata tag
        extra = {"src_nodata": src_nodata} if src_nodata is not None else {}
        # GDAL's warper otherwise derives the resampling kernel's scale (source pixels per destination pixel) from
        # each request's windows, so a window read would differ slightly from the same pixels of a whole read (up
        # to ~0.5 m of elevation for a DEM in degrees). Fixing XSCALE/YSCALE to the raster-wide ratio, together
        # with the tight transformer tolerance, makes every window equal the whole-raster warp.
        left, bottom, right, top = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
        scale = {
            "XSCALE": repr((right - left) / src.width / grid.res[0]),  # destination pixels per source pixel
            "YSCALE": repr((top - bottom) / src.height / grid.res[1]),
        }
        with WarpedVRT(
            src,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=rs,
            nodata=nodata,
            dtype=dtype,
            tolerance=tolerance,
            **extra,
            **scale,
        ) as vrt:
            yield vrt


def _window_size(window_size: int, profile: dict) -> int:
    """Round the processing window to whole output tiles, so that each compressed tile is written once."""
    if profile.get("tiled"):
        block = int(profile["blockxsize"])
        return max(block, window_size // block * block)
    return window_size


def _align(
    src_path: str | os.PathLike[str],
    grid: Grid,
    dst_path: str | os.PathLike[str],
    *,
    categorical: bool = False,
    resampling: Resampling | str | None = None,
    band_names: Sequence[str] | None = None,
    progress: bool = False,
    window_size: int = DEFAULT_WINDOW,
    src_nodata: float | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
    out_count: int | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Warp ``src_path`` onto ``grid`` window by window into ``dst_path`` (atomic), optionally converting values.

    ``convert`` maps each warped ``(bands, rows, cols)`` window to the ``(out_count, rows, cols)`` values written.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    with warped(src_path, grid, categorical=categorical, resampling=resampling, src_nodata=src_nodata) as vrt:
        count = out_count or vrt.count
        if band_names is not None:
            names = [str(n) for n in band_names]
        else:
            own = vrt.src_dataset.descriptions
            names = [own[i] or (src_path.stem if count == 1 else f"{src_path.stem}_{i + 1}") for i in range(count)]
        if len(names) != count:
            raise ValueError(f"{len(names)} band names given for {count} output bands of {src_path}")
        dtype, nodata = vrt.dtypes[0], vrt.nodata
        profile = gtiff_profile(grid, count, dtype, nodata)
        size = _window_size(window_size, profile)
        n_windows = -(-grid.height // size) * -(-grid.width // size)
        with atomic_path(dst_path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                windows = iter_windows(grid, size)
                for win in tqdm(windows, total=n_windows, desc=dst_path.name, unit="win", disable=not progress):
                    data = vrt.read(window=win)
                    if convert is not None:
                        data = convert(data)
                    dst.write(data.astype(dtype, copy=False), window=win)
                for i, name in enumerate(names, start=1):
                    dst.set_band_description(i, name)
                dst.update_tags(**{"source": src_path.name, "resampling": vrt.resampling.name, **(tags or {})})
    logger.debug("aligned %s -> %s (%s)", src_path, dst_path, vrt.resampling.name)
    return dst_path


def align_to_grid(
    src_path: str | os.PathLike[str],
    grid: Grid,
    dst_path: str | os.PathLike[str],
    *,
    categorical: bool = False,
    resampling: Resampling | str | None = None,
    band_names: Sequence[str] | None = None,
    progress: bool = False,
    window_size: int = DEFAULT_WINDOW,
    src_nodata: float | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Resample a raster onto ``grid`` and write it as a GeoTIFF, window by window and atomically.

    Peak memory is a few windows (``window_size``² pixels per band) plus GDAL's block cache (bounded by
    ``GDAL_CACHEMAX``, default 5 % of RAM; ``with rasterio.Env(GDAL_CACHEMAX=64):`` caps it at 64 MB), independent
    of the raster size: the output is written into the temporary file of :func:`atomic_path` one window at a time
    from :func:`warped`.

    Args:
        src_path: Source raster (any CRS GDAL knows, including custom ones).
        grid: Target grid.
        dst_path: Output GeoTIFF.
        categorical: Class-id layer: nearest (or ``"mode"``) resampling, its data type and nodata kept.
        resampling: ``"bilinear"`` (default for continuous layers), ``"cubic"``, ``"nearest"``, ``"mode"``, ...
        band_names: Band descriptions to store; default: the source's descriptions, else the file stem.
        progress: Show a progress bar over windows.
        window_size: Edge length of the processing windows in pixels (rounded to whole 256-pixel output tiles).
        src_nodata: Treat this source value as nodata (overrides the file's own nodata value).
        convert: Applied to each warped ``(bands, rows, cols)`` window before it is written (e.g. digital numbers
            to reflectance, :func:`cryonet.prepare.dn_to_reflectance`); must keep the shape.
        tags: GeoTIFF metadata tags to add (e.g. ``{"units": "metres"}``) to ``source`` and ``resampling``.

    Returns:
        ``dst_path``. Continuous output is float32 with NaN as nodata; nodata covers pixels outside the source
        footprint and pixels from source nodata.

    Raises:
        RasterError: the source is missing, unreadable, truncated, without CRS, or does not overlap ``grid``.
    """
    check_raster(src_path)
    return _align(
        src_path,
        grid,
        dst_path,
        categorical=categorical,
        resampling=resampling,
        band_names=band_names,
        progress=progress,
        window_size=window_size,
        src_nodata=src_nodata,
        convert=convert,
        tags=tags,
    )


def align_phase_to_grid(
    src_path: str | os.PathLike[str],
    grid: Grid,
    dst_path: str | os.PathLike[str],
    *,
    resampling: Resampling | str | None = None,
    band_names: Sequence[str] | None = None,
    progress: bool = False,
    window_size: int = DEFAULT_WINDOW,
) -> Path:
    """Resample a wrapped phase raster (radians, -pi..pi) onto ``grid`` through its complex exponential.

    Phase is an angle: +3.1 and -3.1 rad are 0.08 rad apart, but bilinear interpolation of the wrapped numbers
    would put ~0 rad between them, inventing a fringe wherever the phase wraps. So ``cos`` and ``sin`` of the phase
    are written (window by window, on the source grid) to a temporary 2-band raster, warped onto ``grid`` with
    ``resampling`` (bilinear by default), and the phase is recovered as ``atan2(sin, cos)``: the angle of the
    interpolated unit vectors, correct across the ±pi wrap.

    Args:
        src_path: Single-band wrapped phase raster, radians.
        grid: Target grid.
        dst_path: Output GeoTIFF (float32, NaN nodata, radians in [-pi, pi]).
        resampling: Method applied to cos and sin (``"bilinear"`` default, ``"cubic"``, ``"nearest"``).
        band_names: Band description; default ``["phase"]``.
        progress: Show progress bars.
        window_size: Processing window edge length in pixels.

    Returns:
        ``dst_path``.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    check_raster(src_path, count=1)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with open_raster(src_path) as src:
        _check_overlap(src, grid, src_path)  # here, so that the message names the input and not the temporary file
        src_grid = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
        with tempfile.TemporaryDirectory(dir=dst_path.parent, prefix=f".{dst_path.stem}.") as tmpdir:
            unit = Path(tmpdir) / "cos_sin.tif"
            profile = gtiff_profile(src_grid, 2, "float32", float("nan"))
            size = _window_size(window_size, profile)
            with rasterio.open(unit, "w", **profile) as dst:
                for win in iter_windows(src_grid, size):
                    phase = read_window(src, win)[0]  # nodata -> NaN -> NaN cos and sin
                    dst.write(np.stack([np.cos(phase), np.sin(phase)]).astype(np.float32), window=win)
            return _align(
                unit,
                grid,
                dst_path,
                resampling=resampling,
                band_names=band_names or ["phase"],
                progress=progress,
                window_size=window_size,
                convert=lambda cs: np.arctan2(cs[1], cs[0])[np.newaxis],  # NaN in either -> NaN
                out_count=1,
                tags={"units": "radians", "source": src_path.name, "resampled_as": "complex exponential"},
            )
