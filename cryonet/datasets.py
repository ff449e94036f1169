"""Tiles, spatially blocked splits, normalisation, augmentation and the torch ``Dataset`` of the training pipeline.

From a feature stack (multi-band float32 GeoTIFF, band descriptions = layer names, NaN = nodata) and a label raster
on the same grid (uint8, classes ``0..3``, ``255`` = nodata) this module builds, step by step:

1. **Tiles** (:func:`scan_tiles`): a regular grid of ``tile_size`` x ``tile_size`` pixel windows with ``stride``
   pixels between their origins, plus one window flush with the right and bottom edges so that the whole raster is
   covered. Windows are read lazily with rasterio (never the whole raster in memory). A tile is **skipped when more
   than** ``max_nodata_fraction`` **(default 0.5) of its pixels are nodata**. A pixel is nodata when its label is
   255 or when more than half of its layers are NaN (outside the optical footprint, say); a pixel with only a few
   NaN layers (aspect is NaN on flat cells such as lake surfaces, texture at edges) is kept, its NaN layers set
   to 0 (the training mean) by the normaliser (:func:`invalid_pixels`).
2. **A spatially blocked split** (:func:`make_split`): the scene is cut into square blocks of ``block_size_m``
   metres; whole blocks go to train / validation / test (seeded, stratified so that every split holds every class
   where the number of blocks containing that class allows it; rare lakes first). Each tile belongs to the block
   that holds its centre. Then tiles that come within ``buffer_m`` metres of a tile of another split are dropped
   (test tiles are never dropped, validation tiles only for test tiles, training tiles for both), so that after the
   split no tile of one split overlaps, touches or comes within ``buffer_m`` of a tile of another split.
3. **Normalisation** (:class:`Normalizer`): per-layer mean and standard deviation from a random sample of valid
   pixels of the *training* tiles only, winsorised at the 0.5th and 99.5th percentiles so that a few extreme
   pixels do not inflate the spread. Applied as ``(x - mean) / std``; **NaN becomes 0 after normalisation** (the
   training mean), so that nodata pixels carry no signal.
4. **Augmentation** (:class:`Augmenter`): flips and 90 degree rotations with the aspect vector transformed
   consistently (see the class docstring for the rule and for sun-dependent layers).
5. **Class balance** (:func:`class_weights`, :func:`tile_sampling_weights`): inverse-square-root-frequency class
   weights for the loss and per-tile weights for a weighted sampler that favours tiles with rare classes (lakes).
6. **The dataset** (:class:`TileDataset`): ``(x, y)`` with ``x`` float32 ``(layers, rows, cols)`` and ``y`` int64
   ``(rows, cols)``, deterministic for a given seed and epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.windows import Window

from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.errors import CryonetError
from cryonet.raster import Grid, RasterError, atomic_path, open_raster
from cryonet.stackfile import StackFile

logger = logging.getLogger(__name__)

#: A tile whose share of nodata pixels (see :func:`invalid_pixels`) exceeds this is skipped.
DEFAULT_MAX_NODATA_FRACTION: float = 0.5
#: Split names, in the order of precedence used when buffering (earlier splits keep their tiles).
SPLITS: tuple[str, ...] = ("test", "val", "train")
#: Substrings of layer names whose values depend on the sun's position (see :class:`Augmenter`).
SUN_DEPENDENT_KEYS: tuple[str, ...] = ("hillshade", "illumination", "shade", "shadow", "solar", "sun_")
#: Number of classes of the label raster.
NUM_CLASSES: int = len(CLASSES)
#: A pixel with a larger share of NaN layers is nodata (ignored); below it the NaN layers are filled with 0.
MAX_NAN_LAYER_FRACTION: float = 0.5


def invalid_pixels(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nodata mask of a tile: label 255, or more than :data:`MAX_NAN_LAYER_FRACTION` of the layers NaN.

    Why not "any layer NaN": some layers are NaN by design on valid ground (aspect on flat cells, i.e. on every
    lake surface), and dropping those pixels would hide the rarest class from training.

    Args:
        x: ``(layers, rows, cols)`` float.
        labels: ``(rows, cols)`` class ids.

    Returns:
        ``(rows, cols)`` bool, True where the pixel is ignored.
    """
    return (labels == LABEL_NODATA) | (np.isnan(x).mean(axis=0) > MAX_NAN_LAYER_FRACTION)


class DatasetError(CryonetError, ValueError):
    """A stack, label raster, split or statistics file does not fit what was expected; the message names it."""


# --------------------------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------------------------
def check_pair(stack_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> Grid:
    """Check that stack and labels share one grid; return it.

    Raises:
        DatasetError: the grids differ (CRS, transform or shape) or the label raster has more than one band.
    """
    g_stack = Grid.from_file(stack_path)
    g_lab = Grid.from_file(labels_path)
    with open_raster(labels_path) as src:
        if src.count != 1:
            raise DatasetError(f"{labels_path}: expected a single-band label raster, found {src.count} bands.")
    same = (
        g_stack.crs == g_lab.crs
        and g_stack.shape == g_lab.shape
        and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(g_stack.transform, g_lab.transform, strict=True))
    )
    if not same:
        raise DatasetError(
            f"{labels_path}: label grid {g_lab.shape} {g_lab.crs} {tuple(g_lab.transform)[:6]} differs from the "
            f"stack {stack_path} grid {g_stack.shape} {g_stack.crs} {tuple(g_stack.transform)[:6]}. "
            "Align the labels onto the stack with `cryonet align`."
        )
    return g_stack


# --------------------------------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------------------------------
def _offsets(length: int, tile: int, stride: int) -> list[int]:
    if length < tile:
        return []
    offs = list(range(0, length - tile + 1, stride))
    if offs[-1] != length - tile:
        offs.append(length - tile)  # one tile flush with the edge, so that the whole raster is covered
    return offs


def tile_windows(height: int, width: int, tile_size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Upper-left ``(row, col)`` offsets of a grid of square tiles covering a ``height`` x ``width`` raster.

    Args:
        height: Raster rows.
        width: Raster columns.
        tile_size: Tile edge, pixels.
        stride: Pixels between tile origins (default: ``tile_size``, i.e. no overlap). The last row/column of
            tiles is shifted to end flush with the raster edge.

    Returns:
        Offsets in row-major order; empty if the raster is smaller than one tile.
    """
    stride = tile_size if stride is None else stride
    if tile_size <= 0 or stride <= 0:
        raise ValueError(f"tile_size and stride must be positive, got {tile_size} and {stride}")
    return [(r, c) for r in _offsets(height, tile_size, stride) for c in _offsets(width, tile_size, stride)]


@dataclass(frozen=True)
class Tile:
    """One tile: a pixel window and what it holds.

    Attributes:
        row: Row offset of the upper-left pixel.
        col: Column offset of the upper-left pixel.
        size: Edge length, pixels.
        class_counts: Pixels per class (``len(CLASSES)`` integers; nodata excluded).
        nodata_fraction: Share of pixels that are nodata (:func:`invalid_pixels`).
    """

    row: int
    col: int
    size: int
    class_counts: tuple[int, ...]
    nodata_fraction: float

    @property
    def window(self) -> Window:
        """The rasterio window."""
        return Window(self.col, self.row, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "row": self.row,
            "col": self.col,
            "size": self.size,
            "class_counts": list(self.class_counts),
            "nodata_fraction": self.nodata_fraction,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tile:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(d["row"]),
            int(d["col"]),
            int(d["size"]),
            tuple(int(v) for v in d["class_counts"]),
            float(d["nodata_fraction"]),
        )


def scan_tiles(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    tile_size: int,
    stride: int | None = None,
    *,
    max_nodata_fraction: float = DEFAULT_MAX_NODATA_FRACTION,
    progress: bool = True,
) -> list[Tile]:
    """Tile a stack + label pair and keep the tiles with enough valid data.

    Reads one window at a time (memory ~ ``layers * tile_size**2`` floats).

    Args:
        stack_path: Feature stack (float, NaN = nodata).
        labels_path: Label raster on the same grid (0..3, 255 = nodata).
        tile_size: Tile edge, pixels.
        stride: Pixels between tile origins (default ``tile_size``).
        max_nodata_fraction: Tiles with a larger share of nodata pixels are skipped.
        progress: Show a tqdm bar.

    Returns:
        The kept tiles, with their class counts.
    """
    from tqdm.auto import tqdm

    grid = check_pair(stack_path, labels_path)
    offsets = tile_windows(grid.height, grid.width, tile_size, stride)
    if not offsets:
        raise DatasetError(
            f"{stack_path}: raster {grid.shape} is smaller than one tile of {tile_size} px; use a smaller tile size."
        )
    tiles: list[Tile] = []
    with open_raster(stack_path) as s_src, open_raster(labels_path) as l_src:
        for r, c in tqdm(offsets, desc="scanning tiles", disable=not progress, leave=False):
            win = Window(c, r, tile_size, tile_size)
            lab = l_src.read(1, window=win)
            x = s_src.read(window=win, out_dtype="float32")
            invalid = invalid_pixels(x, lab)
            frac = float(invalid.mean())
            if frac > max_nodata_fraction:
                continue
            bad = (lab[~invalid] >= NUM_CLASSES).sum()
            if bad:
                raise DatasetError(
                    f"{labels_path}: found label values {np.unique(lab[lab >= NUM_CLASSES]).tolist()} outside "
                    f"0..{NUM_CLASSES - 1} and {LABEL_NODATA} (nodata). Rasterise the labels with `cryonet align`."
                )
            counts = np.bincount(lab[~invalid].ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            tiles.append(Tile(r, c, tile_size, tuple(int(v) for v in counts), frac))
    logger.info("%s: %d of %d tiles kept (max nodata %.2f)", stack_path, len(tiles), len(offsets), max_nodata_fraction)
    return tiles


# --------------------------------------------------------------------------------------------------------------------
# spatially blocked split
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Tiles assigned to train / validation / test by spatial blocks, with a buffer between splits.

    Attributes:
        tiles: Split name -> its tiles.
        blocks: ``"block_row,block_col"`` -> split name, for every block that holds at least one tile centre.
        params: The parameters that made the split (tile size, stride, block size, buffer, fractions, seed, ...).
        crs_wkt: CRS of the stack (WKT).
        transform: Affine transform of the stack (6 numbers, GDAL order as in ``affine.Affine``).
        shape: ``(rows, cols)`` of the stack.
        dropped: Split name -> number of tiles dropped by the buffer.
    """

    tiles: dict[str, list[Tile]]
    blocks: dict[str, str]
    params: dict[str, Any]
    crs_wkt: str
    transform: tuple[float, ...]
    shape: tuple[int, int]
    dropped: dict[str, int] = field(default_factory=dict)

    def windows(self, split: str) -> list[Window]:
        """Rasterio windows of one split."""
        return [t.window for t in self.get(split)]

    def get(self, split: str) -> list[Tile]:
        """Tiles of one split (``train``, ``val`` or ``test``)."""
        if split not in self.tiles:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self.tiles)}")
        return self.tiles[split]

    def class_counts(self, split: str) -> np.ndarray:
        """Pixels per class over the tiles of a split, ``(classes,)`` int64 (overlapping tiles count twice)."""
        tiles = self.get(split)
        if not tiles:
            return np.zeros(NUM_CLASSES, dtype=np.int64)
        return np.asarray([t.class_counts for t in tiles], dtype=np.int64).sum(axis=0)

    def summary(self) -> dict[str, dict[str, int]]:
        """Number of tiles and pixels per class for every split."""
        out: dict[str, dict[str, int]] = {}
        for name in self.tiles:
            counts = self.class_counts(name)
            out[name] = {"tiles": len(self.tiles[name]), **{c: int(n) for c, n in zip(CLASSES, counts, strict=True)}}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": "cryonet-split/1",
            "params": self.params,
            "crs_wkt": self.crs_wkt,
            "transform": list(self.transform),
            "shape": list(self.shape),
            "blocks": self.blocks,
            "dropped": self.dropped,
            "summary": self.summary(),
            "tiles": {k: [t.to_dict() for t in v] for k, v in self.tiles.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tiles={k: [Tile.from_dict(t) for t in v] for k, v in d["tiles"].items()},
            blocks=dict(d["blocks"]),
            params=dict(d["params"]),
            crs_wkt=d["crs_wkt"],
            transform=tuple(float(v) for v in d["transform"]),
            shape=(int(d["shape"][0]), int(d["shape"][1])),
            dropped={k: int(v) for k, v in d.get("dropped", {}).items()},
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the split as JSON (atomically); returns ``path``."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """Read a split written by :meth:`save`.

        Raises:
            DatasetError: the file is missing or not a split file.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if d.get("format") != "cryonet-split/1":
                raise KeyError("format")
            return cls.from_dict(d)
        except FileNotFoundError as exc:
            raise DatasetError(f"{path}: split file not found; create it with cryonet.datasets.make_split.") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{path}: not a cryonet split file (expected JSON with format 'cryonet-split/1'): {exc}"
            ) from exc

    def to_geodataframe(self) -> Any:
        """Tile polygons with columns ``split, row, col, size`` and one per class count, in the stack's CRS."""
        import geopandas as gpd
        from affine import Affine
        from shapely.geometry import box

        tr = Affine(*self.transform[:6])
        recs: list[dict[str, Any]] = []
        geoms = []
        for name, tiles in self.tiles.items():
            for t in tiles:
                x0, y0 = tr @ (t.col, t.row)
                x1, y1 = tr @ (t.col + t.size, t.row + t.size)
                geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
                recs.append(
                    {
                        "split": name,
                        "row": t.row,
                        "col": t.col,
                        "size": t.size,
                        **{c: n for c, n in zip(CLASSES, t.class_counts, strict=True)},
                    }
                )
        return gpd.GeoDataFrame(recs, geometry=geoms, crs=self.crs_wkt)

    def save_gpkg(self, path: str | os.PathLike[str]) -> Path:
        """Write the tile polygons (with a ``split`` column) as a GeoPackage, atomically; returns ``path``."""
        path = Path(path)
        gdf = self.to_geodataframe()
        with atomic_path(path) as tmp:
            # GDAL wants a .gpkg name: write beside the temporary file, then move it onto the temporary name
            named = tmp.with_name(tmp.name[: -len(".tmp")])
            try:
                gdf.to_file(named, driver="GPKG", layer="tiles")
                os.replace(named, tmp)
            finally:
                named.unlink(missing_ok=True)
        return path


def tile_gap_m(a: Tile, b: Tile, res: tuple[float, float]) -> float:
    """Shortest distance between the footprints of two tiles, metres (0 when they touch or overlap)."""
    dx = max(0, b.col - (a.col + a.size), a.col - (b.col + b.size)) * res[0]
    dy = max(0, b.row - (a.row + a.size), a.row - (b.row + b.size)) * res[1]
    return float(math.hypot(dx, dy))


def _assign_blocks(
    block_counts: dict[tuple[int, int], np.ndarray],
    block_tiles: dict[tuple[int, int], int],
    fractions: dict[str, float],
    rng: np.random.Generator,
    reach: int = 1,
) -> dict[tuple[int, int], str]:
    """Seeded, class-stratified assignment of blocks to splits.

    1. Presence, rarest class first: while a split lacks a class that some unassigned block holds, it gets one such
       block, drawn at random among the blocks holding at least a quarter of the largest free holding of the class
       (train first, then test, then validation).
    2. Proportions: the remaining blocks, those holding the largest share of some class first (ties in seeded
       random order), each go to the split that minimises the squared deviation of every class's share (each
       class weighing the same, so that rare lakes count as much as background) and of the tile share from the
       target fractions. This is the greedy of scikit-learn's ``StratifiedGroupKFold``, with blocks as groups;
       hand-written because that class makes equal-size folds, not 70/15/15 splits.

    Validation and test blocks are kept at least ``reach + 1`` blocks apart (Chebyshev distance) wherever another
    choice exists: the buffer of :func:`make_split` drops every validation tile near a test tile, so a validation
    block between two test blocks would lose all its tiles, and with them the rare classes it was chosen for.
    """
    keys = list(block_counts)
    order = rng.permutation(len(keys))
    keys = [keys[i] for i in order]
    assign: dict[tuple[int, int], str] = {}
    names = [s for s in ("train", "val", "test") if fractions.get(s, 0) > 0]
    target = np.array([fractions[s] for s in names]) / sum(fractions[s] for s in names)
    # per block: class pixel counts + tile count, as one row; per split: the running sums
    mass = {k: np.append(block_counts[k], block_tiles[k]).astype(np.float64) for k in keys}
    total = np.sum(list(mass.values()), axis=0)
    present = total > 0
    sums = np.zeros((len(names), total.size))

    def put(k: tuple[int, int], split: str) -> None:
        assign[k] = split
        sums[names.index(split)] += mass[k]

    rival = {"val": "test", "test": "val"}

    def clashes(k: tuple[int, int], split: str) -> bool:
        """Whether block ``k`` in ``split`` would sit within ``reach`` blocks of a block of the rival held-out split."""
        other = rival.get(split)
        return other is not None and any(
            s == other and max(abs(k[0] - q[0]), abs(k[1] - q[1])) <= reach for q, s in assign.items()
        )

    # 1. presence of every class in every split, rarest class first
    for cls in np.argsort(total[:-1], kind="stable"):
        if total[cls] == 0:
            continue
        holders = [k for k in keys if block_counts[k][cls] > 0]
        for split in [s for s in ("train", "test", "val") if s in names]:  # train must learn it, test must score it
            if any(block_counts[k][cls] > 0 for k, s in assign.items() if s == split):
                continue
            free = [k for k in holders if k not in assign]
            if not free:
                break
            apart = [k for k in free if not clashes(k, split)] or free
            # a block with a few stray pixels of the class would satisfy "presence" but not let a split learn or
            # score it: draw among the blocks holding at least a quarter of the largest free holding
            most = max(block_counts[k][cls] for k in apart)
            pool = [k for k in apart if block_counts[k][cls] >= 0.25 * most]
            put(pool[int(rng.integers(len(pool)))], split)
    # 2. proportions: greedy, most "class-concentrated" blocks first
    rest = [k for k in keys if k not in assign]
    rest.sort(key=lambda k: -float(np.max(mass[k][present] / total[present])))  # stable: seeded order breaks ties
    for k in rest:
        costs = []
        for i in range(len(names)):
            trial = sums.copy()
            trial[i] += mass[k]
            share = trial[:, present] / total[present]  # (splits, classes + tiles)
            costs.append(float(((share - target[:, None]) ** 2).sum()))
        allowed = [c if not clashes(k, names[i]) else math.inf for i, c in enumerate(costs)]
        # every split clashes only when there is no training split to fall back on: keep the proportions then
        put(k, names[int(np.argmin(allowed if np.isfinite(min(allowed)) else costs))])
    return assign


class _BufferedShares:
    """Class shares of each split *after* the buffer, for many candidate block assignments (fast to re-evaluate).

    The buffer of :func:`make_split` drops validation tiles near test tiles and training tiles near kept validation
    or test tiles. Which tiles conflict is fixed by the geometry, so the pairs are found once (shapely ``STRtree``)
    and a candidate assignment is then scored with a few array operations: the same drop rule, vectorised.
    """

    def __init__(self, tile_block: np.ndarray, counts: np.ndarray, pairs: np.ndarray, target: np.ndarray) -> None:
        self.tile_block = tile_block  # (T,) block index of each tile
        self.mass = np.hstack([counts, np.ones((len(counts), 1))]).astype(np.float64)  # (T, classes + 1 tile count)
        self.pairs = pairs  # (P, 2) tiles within the buffer of each other, from different blocks, both directions
        self.target = target  # (splits,) in precedence order test, val, train
        self.present = self.mass.sum(axis=0) > 0

    def kept(self, block_split: np.ndarray) -> np.ndarray:
        """``(T,)`` split index of every tile after the buffer (0 test, 1 val, 2 train), -1 where dropped."""
        split = block_split[self.tile_block]
        out = split.copy()
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        # validation tiles near a test tile go; then training tiles near a test tile or a kept validation tile
        out[np.unique(a[(split[a] == 1) & (split[b] == 0)])] = -1
        out[np.unique(a[(split[a] == 2) & ((out[b] == 0) | (out[b] == 1))])] = -1
        return out

    def cost(self, block_split: np.ndarray) -> float:
        """The cost of a block split (lower is better).

        Squared deviation of each split's share of every class (and of the tiles) from its target, after the buffer,
        plus the shortfall below half the target (linear, so that a split left with a sliver of a rare class costs
        more than an uneven spread of a common one) and 1 per class missing from a split that could hold it.
        """
        kept = self.kept(block_split)
        sums = np.stack([self.mass[kept == i].sum(axis=0) for i in range(len(self.target))])  # (splits, C + 1)
        total = sums.sum(axis=0)
        ok = self.present & (total > 0)
        share = sums[:, ok] / total[ok]
        missing = float(((sums[:, :-1] == 0) & self.present[None, :-1]).sum())
        shortfall = float(np.clip(0.5 * self.target[:, None] - share, 0.0, None).sum())
        return float(((share - self.target[:, None]) ** 2).sum()) + shortfall + missing


def _refine_blocks(
    assign: dict[tuple[int, int], str],
    shares: _BufferedShares,
    keys: list[tuple[int, int]],
    rng: np.random.Generator,
    n_iter: int,
) -> dict[tuple[int, int], str]:
    """Seeded local search on the block assignment, scored after the buffer (:class:`_BufferedShares`).

    Starting from the greedy of :func:`_assign_blocks`, each step proposes either swapping the splits of two blocks
    or moving one block to another split, and keeps the change if it lowers the cost. Hand-written because no library
    splits spatial blocks against class shares *after* a buffer: scikit-learn's group splitters ignore geometry.
    """
    order = ("test", "val", "train")
    current = np.array([order.index(assign[k]) for k in keys])
    best = shares.cost(current)
    n = len(keys)
    for _ in range(n_iter):
        trial = current.copy()
        i = int(rng.integers(n))
        if rng.random() < 0.5:
            j = int(rng.integers(n))
            if trial[i] == trial[j]:
                continue
            trial[i], trial[j] = trial[j], trial[i]
        else:
            trial[i] = (trial[i] + 1 + int(rng.integers(2))) % 3
        c = shares.cost(trial)
        if c < best - 1e-12:
            current, best = trial, c
    return {k: order[v] for k, v in zip(keys, current, strict=True)}


def _tile_blocks(
    tiles: Sequence[Tile], res: tuple[float, float], block_size_m: float
) -> tuple[list[tuple[int, int]], dict[tuple[int, int], np.ndarray], dict[tuple[int, int], int]]:
    """The block holding each tile's centre, and the pixels per class and the tiles of every block.

    Args:
        tiles: Tiles from :func:`scan_tiles`.
        res: Pixel size ``(x, y)``, metres.
        block_size_m: Edge of the square blocks, metres.

    Returns:
        ``(block_of, block_counts, block_tiles)``: the ``(block_row, block_col)`` of each tile, and per block its
        class counts and its number of tiles.
    """
    blk_r = block_size_m / res[1]
    blk_c = block_size_m / res[0]
    block_of: list[tuple[int, int]] = []
    block_counts: dict[tuple[int, int], np.ndarray] = {}
    block_tiles: dict[tuple[int, int], int] = {}
    for t in tiles:
        key = (int((t.row + t.size / 2) // blk_r), int((t.col + t.size / 2) // blk_c))
        block_of.append(key)
        block_counts[key] = block_counts.get(key, np.zeros(NUM_CLASSES, dtype=np.int64)) + np.asarray(t.class_counts)
        block_tiles[key] = block_tiles.get(key, 0) + 1
    return block_of, block_counts, block_tiles


def _buffered_shares(
    tiles: Sequence[Tile],
    tile_block: np.ndarray,
    res: tuple[float, float],
    buffer_m: float,
    fractions: dict[str, float],
) -> _BufferedShares:
    """Which tiles of different blocks lie within ``buffer_m`` of each other, found once, with the split targets.

    The pairs are fixed by the geometry: they serve both to refine the greedy assignment against the shares that
    survive the buffer and to apply the buffer itself.

    Args:
        tiles: Tiles from :func:`scan_tiles`.
        tile_block: ``(tiles,)`` block index of each tile.
        res: Pixel size ``(x, y)``, metres.
        buffer_m: Minimum distance between tiles of different splits, metres.
        fractions: Target share of tiles per split name.

    Returns:
        The :class:`_BufferedShares`.
    """
    from shapely import STRtree, box

    if tiles:
        boxes = [
            box(t.col * res[0], -(t.row + t.size) * res[1], (t.col + t.size) * res[0], -t.row * res[1]) for t in tiles
        ]
        q_idx, t_idx = STRtree(boxes).query(boxes, predicate="dwithin", distance=buffer_m)
        other = tile_block[q_idx] != tile_block[t_idx]
        pairs = np.stack([q_idx[other], t_idx[other]], axis=1)
    else:
        pairs = np.zeros((0, 2), dtype=np.int64)
    target = np.array([fractions.get(s, 0.0) for s in SPLITS]) / sum(fractions.get(s, 0.0) for s in SPLITS)
    counts = np.array([t.class_counts for t in tiles], dtype=np.float64).reshape(len(tiles), NUM_CLASSES)
    return _BufferedShares(tile_block, counts, pairs, target)


def _assemble_split(
    tiles: Sequence[Tile],
    grid: Grid,
    assign: dict[tuple[int, int], str],
    block_of: list[tuple[int, int]],
    final: np.ndarray,
    params: dict[str, Any],
) -> Split:
    """The :class:`Split` of the tiles kept by the buffer; warns about splits without some class.

    Args:
        tiles: Tiles from :func:`scan_tiles`.
        grid: The stack's grid.
        assign: Block -> split name.
        block_of: Block of each tile.
        final: ``(tiles,)`` split index of each tile after the buffer (index into :data:`SPLITS`, -1 dropped).
        params: Recorded in :attr:`Split.params`.

    Returns:
        The split.
    """
    kept = {s: [t for t, f in zip(tiles, final, strict=True) if f == n] for n, s in enumerate(SPLITS)}
    dropped = {s: sum(assign[k] == s for k in block_of) - len(kept[s]) for s in SPLITS}
    split = Split(
        tiles={s: kept[s] for s in ("train", "val", "test")},
        blocks={f"{k[0]},{k[1]}": v for k, v in sorted(assign.items())},
        params=params,
        crs_wkt=grid.crs.to_wkt(),
        transform=tuple(grid.transform)[:6],
        shape=grid.shape,
        dropped=dropped,
    )
    for s in ("train", "val", "test"):
        missing = [c for c, n in zip(CLASSES, split.class_counts(s), strict=True) if n == 0]
        if missing and split.get(s):
            logger.warning("split %s has no pixels of %s (too few blocks hold them)", s, missing)
    logger.info("split: %s (dropped by buffer: %s)", {s: len(v) for s, v in split.tiles.items()}, dropped)
    return split


def make_split(
    tiles: Sequence[Tile],
    grid: Grid,
    *,
    block_size_m: float,
    buffer_m: float,
    fractions: dict[str, float] | Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    extra_params: dict[str, Any] | None = None,
    refine_iter: int = 3000,
) -> Split:
    """Spatially blocked train / validation / test split with a buffer between splits.

    Blocks are assigned to splits by a class-stratified greedy (:func:`_assign_blocks`), then refined by a seeded
    local search that scores each split's share of every class *after* the buffer has dropped its tiles
    (:func:`_refine_blocks`): with few blocks and a wide buffer, the greedy's shares before the buffer can leave a
    split with almost none of a rare class.

    Args:
        tiles: Tiles from :func:`scan_tiles`.
        grid: The stack's grid (for block coordinates, in metres).
        block_size_m: Edge of the square blocks, metres (should be several tiles wide).
        buffer_m: Minimum distance between tiles of different splits, metres. Tiles closer than or exactly at this
            distance (touching tiles are 0 m apart) to a tile of another split are dropped: training tiles near
            validation or test tiles, and validation tiles near test tiles.
        fractions: Target share of tiles for ``train, val, test`` (dict or 3 numbers).
        seed: Seed of the block assignment.
        extra_params: Recorded in :attr:`Split.params` (e.g. tile size, stride, nodata threshold, file names).
        refine_iter: Steps of the local search (0: the greedy alone).

    Returns:
        The split. Every pair of tiles from different splits is more than ``buffer_m`` apart.
    """
    if not isinstance(fractions, dict):
        fractions = dict(zip(("train", "val", "test"), (float(f) for f in fractions), strict=True))
    if block_size_m <= 0 or buffer_m < 0:
        raise ValueError(f"block_size_m must be > 0 and buffer_m >= 0, got {block_size_m} and {buffer_m}")
    res = grid.res
    block_of, block_counts, block_tiles = _tile_blocks(tiles, res, block_size_m)
    rng = np.random.default_rng(seed)
    # A tile belongs to the block holding its centre, so it reaches up to half a tile beyond that block: tiles of
    # blocks d apart (Chebyshev) can come within (d - 1) * block - tile of each other, and the buffer drops them
    # when that is <= buffer_m. ``reach`` is the largest such d.
    tile_m = max((t.size for t in tiles), default=0) * max(res)
    reach = max(1, int(math.floor(1 + (tile_m + buffer_m) / block_size_m)))
    assign = _assign_blocks(block_counts, block_tiles, fractions, rng, reach=reach)

    keys = sorted(block_counts)
    index = {k: i for i, k in enumerate(keys)}
    tile_block = np.array([index[k] for k in block_of], dtype=np.int64)
    shares = _buffered_shares(tiles, tile_block, res, buffer_m, fractions)
    if refine_iter > 0 and all(fractions.get(s, 0) > 0 for s in SPLITS) and len(tiles) > 1:
        assign = _refine_blocks(assign, shares, keys, rng, int(refine_iter))

    # buffer: drop lower-precedence tiles near higher-precedence ones (test > val > train)
    final = shares.kept(np.array([SPLITS.index(assign[k]) for k in keys], dtype=np.int64)) if tiles else tile_block
    params = {
        "block_size_m": float(block_size_m),
        "buffer_m": float(buffer_m),
        "fractions": fractions,
        "seed": int(seed),
        "refine_iter": int(refine_iter),
        **(extra_params or {}),
    }
    return _assemble_split(tiles, grid, assign, block_of, final, params)


# --------------------------------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Normalizer:
    """Per-layer standardisation ``(x - mean) / std``; NaN becomes 0 (the training mean) after it.

    Attributes:
        layers: Layer names, in band order.
        mean: Per-layer mean, ``(layers,)``.
        std: Per-layer standard deviation, ``(layers,)`` (at least ``1e-6``).
        info: How the statistics were made (sample size, percentiles, seed).
    """

    layers: list[str]
    mean: np.ndarray
    std: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        stack_path: str | os.PathLike[str],
        windows: Iterable[Window],
        *,
        layers: Sequence[str] | None = None,
        max_pixels: int = 200_000,
        clip_percentiles: tuple[float, float] | None = (0.5, 99.5),
        seed: int = 0,
        progress: bool = True,
    ) -> Normalizer:
        """Statistics from a random sample of valid pixels inside ``windows`` (the training tiles).

        Each layer's valid (finite) values are pooled, up to ``max_pixels`` pixels are drawn at random (seeded),
        winsorised at ``clip_percentiles`` and summarised by mean and standard deviation.

        Args:
            stack_path: Feature stack.
            windows: The training tiles' windows (only these pixels are read).
            layers: Layer names (default: read from the stack).
            max_pixels: Maximum pixel sample per layer.
            clip_percentiles: Winsorising percentiles, or None for the plain mean and standard deviation.
            seed: Seed of the pixel sample.
            progress: Show a tqdm bar.
        """
        from tqdm.auto import tqdm

        names = list(layers) if layers is not None else StackFile(stack_path).layers
        windows = list(windows)
        if not windows:
            raise DatasetError(f"{stack_path}: no training tiles to compute normalisation statistics from.")
        rng = np.random.default_rng(seed)
        per_tile = max(1, math.ceil(max_pixels / len(windows)))
        chunks: list[np.ndarray] = []
        with open_raster(stack_path) as src:
            if src.count != len(names):
                raise DatasetError(f"{stack_path}: {src.count} bands but {len(names)} layer names.")
            for win in tqdm(windows, desc="normalisation statistics", disable=not progress, leave=False):
                x = src.read(window=win, out_dtype="float32").reshape(src.count, -1)
                take = rng.choice(x.shape[1], size=min(per_tile, x.shape[1]), replace=False)
                chunks.append(x[:, take])
        sample = np.concatenate(chunks, axis=1).astype(np.float64)
        mean = np.zeros(len(names))
        std = np.ones(len(names))
        for i, name in enumerate(names):
            v = sample[i][np.isfinite(sample[i])]
            if v.size == 0:
                logger.warning("%s: layer %s has no valid pixel in the training tiles; mean 0, std 1", stack_path, name)
                continue
            if clip_percentiles is not None:
                lo, hi = np.percentile(v, clip_percentiles)
                v = np.clip(v, lo, hi)
            mean[i] = v.mean()
            std[i] = max(float(v.std()), 1e-6)
        info = {
            "max_pixels": max_pixels,
            "sample_pixels": int(sample.shape[1]),
            "seed": seed,
            "clip_percentiles": list(clip_percentiles) if clip_percentiles else None,
            "source": "valid pixels of training tiles",
        }
        return cls(names, mean.astype(np.float32), std.astype(np.float32), info)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``x`` ``(layers, rows, cols)``; returns float32 with NaN replaced by 0."""
        if x.shape[0] != len(self.layers):
            raise DatasetError(f"expected {len(self.layers)} layers ({self.layers[:3]}...), got {x.shape[0]}")
        out = (x.astype(np.float32) - self.mean[:, None, None]) / self.std[:, None, None]
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)

    def check_layers(self, layers: Sequence[str], source: str = "the stack") -> None:
        """Raise :class:`DatasetError` unless ``layers`` equals the fitted layer names, in order."""
        if list(layers) != self.layers:
            raise DatasetError(
                f"{source} has layers {list(layers)}, but the model was trained on {self.layers}. "
                "Build the stack with the same layers (same order) as the training stack."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``layers``, ``mean``, ``std``, ``info``)."""
        return {
            "format": "cryonet-normalizer/1",
            "layers": self.layers,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        return cls(
            list(d["layers"]),
            np.asarray(d["mean"], dtype=np.float32),
            np.asarray(d["std"], dtype=np.float32),
            dict(d.get("info", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Normalizer:
        """Read statistics written by :meth:`save`.

        Raises:
            DatasetError: the file is missing or malformed.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            if d.get("format") != "cryonet-normalizer/1":
                raise KeyError("format")
            return cls.from_dict(d)
        except FileNotFoundError as exc:
            raise DatasetError(f"{path}: normalisation statistics not found (written by training).") from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: not a cryonet normalisation file: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------------------------------
AugmentMode = Literal["full", "sun_safe", "none"]


class Augmenter:
    """Flips and 90 degree rotations that keep direction-dependent layers physically valid.

    Aspect is the azimuth ``theta`` of the downslope direction, clockwise from north, stored as the unit vector
    ``(aspect_sin, aspect_cos) = (east, north)`` component. With north up in the array (row 0 = north):

    * horizontal flip (columns reversed, east <-> west): ``theta -> 360 - theta``: ``sin -> -sin``;
    * vertical flip (rows reversed, north <-> south): ``theta -> 180 - theta``: ``cos -> -cos``;
    * ``np.rot90(k=1)`` (the picture turned 90 degrees counter-clockwise): the vector turns with it,
      ``(east, north) -> (-north, east)``: ``sin -> -cos``, ``cos -> sin``.

    A layer of aspect in degrees (named ``aspect`` or ``..._aspect``) follows the same rules on the angle:
    ``360 - theta``, ``180 - theta`` and ``theta - 90`` (mod 360; NaN stays NaN). Aspect layers are found by name
    (``aspect_sin``/``eastness``, ``aspect_cos``/``northness``, ``aspect``).

    Layers that need no change: slope, curvature, TPI, elevation, the spectral bands and indices as values, InSAR
    coherence and phase (scalar fields), and GLCM texture averaged over the angles 0/45/90/135 degrees (the
    set of angles maps onto itself under these symmetries).

    Layers that depend on the sun position (hillshade, illumination, cast shadow — names in
    :data:`SUN_DEPENDENT_KEYS`) cannot be made consistent by any flip: after a flip their shading says the sun
    stands in the mirrored direction, while the mirrored aspect says otherwise (the same is true of the terrain
    shading in the optical bands themselves). Modes:

    * ``"full"`` (default): geometric augmentation on every tile; aspect transformed; sun-dependent layers (and the
      optical shading) are knowingly left mirrored, which teaches the network not to rely on the illumination
      direction — useful for transfer to a scene with another sun azimuth. The choice is logged.
    * ``"sun_safe"``: no geometric augmentation at all when the stack holds a sun-dependent layer (otherwise as
      ``"full"``).
    * ``"none"``: no augmentation.

    Randomness comes only from the ``rng`` passed to :meth:`__call__`, so that the dataset controls determinism.
    """

    def __init__(self, layers: Sequence[str], mode: AugmentMode = "full") -> None:
        if mode not in ("full", "sun_safe", "none"):
            raise ValueError(f"augment mode must be 'full', 'sun_safe' or 'none', got {mode!r}")
        self.layers = list(layers)
        low = [n.lower() for n in self.layers]
        self.sin_idx = [i for i, n in enumerate(low) if "aspect_sin" in n or "eastness" in n]
        self.cos_idx = [i for i, n in enumerate(low) if "aspect_cos" in n or "northness" in n]
        if len(self.sin_idx) != len(self.cos_idx):
            raise DatasetError(
                f"aspect layers must come in sin/cos pairs; found sin {self.sin_idx}, cos {self.cos_idx}"
            )
        self.deg_idx = [i for i, n in enumerate(low) if n == "aspect" or n.endswith(("_aspect", "/aspect", ":aspect"))]
        self.sun_layers = [self.layers[i] for i, n in enumerate(low) if any(k in n for k in SUN_DEPENDENT_KEYS)]
        self.geometric = mode == "full" or (mode == "sun_safe" and not self.sun_layers)
        self.mode = mode
        if self.geometric and self.sun_layers:
            logger.info(
                "augmentation flips/rotates sun-dependent layers %s (left inconsistent with the sun)", self.sun_layers
            )

    def transform(
        self, x: np.ndarray, y: np.ndarray, *, hflip: bool, vflip: bool, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply a horizontal flip, then a vertical flip, then ``np.rot90(k)``; aspect layers follow.

        Args:
            x: ``(layers, rows, cols)`` (in physical units: the sign change must precede normalisation, or the
                aspect layers' mean must be ~0; :class:`TileDataset` augments before normalising).
            y: ``(rows, cols)``.
            hflip: Reverse the columns.
            vflip: Reverse the rows.
            k: Number of counter-clockwise quarter turns (0..3).

        Returns:
            The transformed ``(x, y)`` (new contiguous arrays).
        """
        x = x.copy()
        s, c, a = self.sin_idx, self.cos_idx, self.deg_idx
        if hflip:
            x, y = x[:, :, ::-1], y[:, ::-1]
            x[s] = -x[s]
            x[a] = np.mod(360.0 - x[a], 360.0)
        if vflip:
            x, y = x[:, ::-1, :], y[::-1, :]
            x[c] = -x[c]
            x[a] = np.mod(180.0 - x[a], 360.0)
        k %= 4
        if k:
            x = np.rot90(x, k, axes=(1, 2))
            y = np.rot90(y, k)
            for _ in range(k):  # (sin, cos) -> (-cos, sin) per counter-clockwise quarter turn
                sin, cos = x[s].copy(), x[c].copy()
                x[s], x[c] = -cos, sin
            x[a] = np.mod(x[a] - 90.0 * k, 360.0)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random flips/rotation (each of the 8 symmetries of the square equally likely) when enabled."""
        if not self.geometric:
            return x, y
        hflip, vflip = bool(rng.integers(2)), bool(rng.integers(2))
        k = int(rng.integers(4))
        return self.transform(x, y, hflip=hflip, vflip=vflip, k=k)


# --------------------------------------------------------------------------------------------------------------------
# class balance
# --------------------------------------------------------------------------------------------------------------------
def class_weights(counts: Sequence[int] | np.ndarray, *, power: float = 0.5, max_weight: float = 20.0) -> np.ndarray:
    """Inverse-frequency class weights ``(n_c / N) ** -power``, normalised to a pixel-weighted mean of 1.

    With ``power=0.5`` (inverse square root) a class 100 times rarer weighs 10 times more. Classes absent from
    the training tiles get weight 0 (they never occur as targets). Weights are capped at ``max_weight`` times the
    smallest one so that a handful of pixels cannot dominate.

    Args:
        counts: Pixels per class in the training tiles, ``(classes,)``.
        power: Exponent (0.5 = inverse square root, 1 = inverse frequency).
        max_weight: Cap, relative to the smallest weight.

    Returns:
        ``(classes,)`` float32.
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.sum() <= 0:
        raise DatasetError("no labelled pixels in the training tiles: cannot compute class weights.")
    freq = n / n.sum()
    w = np.zeros_like(freq)
    present = freq > 0
    w[present] = freq[present] ** -power
    w[present] = np.minimum(w[present], w[present].min() * max_weight)
    w /= float((w * freq).sum())  # pixel-weighted mean of 1: the loss keeps its scale
    return w.astype(np.float32)


def tile_sampling_weights(tiles: Sequence[Tile], weights: np.ndarray) -> np.ndarray:
    """Sampling weight of each tile: the mean class weight of its labelled pixels.

    A tile of pure background gets the background weight; a tile that is 10 % lake gets ``0.1 * w_lake + ...``.
    Used with ``torch.utils.data.WeightedRandomSampler`` this draws tiles with rare classes (lakes) more often.

    Returns:
        ``(tiles,)`` float64, positive.
    """
    counts = np.asarray([t.class_counts for t in tiles], dtype=np.float64)
    tot = counts.sum(axis=1)
    mean_w = (counts * np.asarray(weights, dtype=np.float64)).sum(axis=1) / np.maximum(tot, 1)
    floor = max(float(np.min(weights[weights > 0])) if np.any(weights > 0) else 1.0, 1e-6) * 1e-3
    return np.maximum(mean_w, floor)


# --------------------------------------------------------------------------------------------------------------------
# torch dataset
# --------------------------------------------------------------------------------------------------------------------
def _torch_dataset_base() -> type:
    from torch.utils.data import Dataset

    return Dataset


class TileDataset(_torch_dataset_base()):  # type: ignore[misc]
    """``(x, y)`` tiles read lazily from a stack and a label raster.

    ``x`` is float32 ``(layers, tile, tile)``: augmented (in physical units), then normalised (NaN -> 0). ``y`` is
    int64 ``(tile, tile)`` with ``255`` where the label is nodata or most layers are NaN (:func:`invalid_pixels`;
    ignored by the loss and the metrics).

    Augmentation is deterministic: sample ``i`` in epoch ``e`` draws from ``np.random.default_rng((seed, e, i))``,
    so that the result does not depend on worker processes or on the order in which samples are read, and a
    resumed run sees the same augmentations (call :meth:`set_epoch` at the start of each epoch).

    Args:
        stack_path: Feature stack.
        labels_path: Label raster.
        tiles: Tiles to serve (one split).
        normalizer: Fitted statistics (layer names are checked against the stack).
        augmenter: Augmentation, or None.
        seed: Seed of the augmentation.
    """

    def __init__(
        self,
        stack_path: str | os.PathLike[str],
        labels_path: str | os.PathLike[str],
        tiles: Sequence[Tile],
        normalizer: Normalizer,
        augmenter: Augmenter | None = None,
        seed: int = 0,
    ) -> None:
        self.stack_path = Path(stack_path)
        self.labels_path = Path(labels_path)
        self.tiles = list(tiles)
        self.normalizer = normalizer
        normalizer.check_layers(StackFile(stack_path).layers, str(stack_path))
        self.augmenter = augmenter
        self.seed = int(seed)
        self.epoch = 0
        self._handles: tuple[int, Any, Any] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations are drawn."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.tiles)

    def _open(self) -> tuple[Any, Any]:
        # one pair of handles per process: DataLoader workers are forked and must not share GDAL handles
        if self._handles is None or self._handles[0] != os.getpid():
            try:
                self._handles = (os.getpid(), rasterio.open(self.stack_path), rasterio.open(self.labels_path))
            except rasterio.errors.RasterioIOError as exc:
                raise RasterError(f"{self.stack_path} / {self.labels_path}: cannot open ({exc})") from exc
        return self._handles[1], self._handles[2]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = None
        return state

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(x, y)`` of one tile: x float32 in physical units with NaN, y uint8 with 255 for nodata."""
        s_src, l_src = self._open()
        win = self.tiles[index].window
        x = s_src.read(window=win, out_dtype="float32")
        y = l_src.read(1, window=win)
        return x, y

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        x, y = self.read(index)
        y = y.astype(np.int64)
        y[invalid_pixels(x, y)] = LABEL_NODATA
        if self.augmenter is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            x, y = self.augmenter(x, y, rng)
        x = self.normalizer.apply(x)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def close(self) -> None:
        """Close the raster handles of this process."""
        if self._handles is not None:
            self._handles[1].close()
            self._handles[2].close()
            self._handles = None
