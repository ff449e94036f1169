"""Builders of the tiny feature stacks, label rasters and run directories the tests share.

Imported by ``conftest.py`` only: tests get these through the fixtures ``make_stack`` (:class:`StackFactory`, the
one writer of test feature stacks) and ``make_run`` (:class:`RunFactory`), so that no test module imports another.
Every builder is seeded: the same call writes the same arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS

from cryonet.constants import LABEL_NODATA
from cryonet.raster import Grid, write_raster
from cryonet.stackfile import StackFile

#: Pixel size of every test stack, metres.
RES = 10.0

#: Layers of the twin stack (five spectral-like layers, slope, aspect vector) and their groups.
TWIN_LAYERS = ("B2", "B3", "B8", "B11", "ndsi", "slope", "aspect_sin", "aspect_cos")
TWIN_GROUPS = {
    "B2": "s2",
    "B3": "s2",
    "B8": "s2",
    "B11": "s2",
    "ndsi": "indices",
    "slope": "terrain",
    "aspect_sin": "terrain",
    "aspect_cos": "terrain",
}

#: Layers of the group stack: group -> layer names. Only ``elevation`` (terrain) carries the label.
GROUP_STACK = {"s2": ["B2", "B3"], "terrain": ["elevation", "slope"], "texture": ["glcm_contrast"]}
GROUP_LAYERS = [name for names in GROUP_STACK.values() for name in names]
#: 0-based band of the group stack's one informative layer.
SIGNAL = GROUP_LAYERS.index("elevation")

#: Profile of the runs :func:`make_run` writes: 32 px tiles, 320 m blocks.
RUN_PROFILE = {
    "tile_size": 32,
    "tile_stride": 32,
    "batch_size": 4,
    "epochs": 3,
    "lr": 5e-3,
    "max_train_tiles": None,
    "encoder": "resnet18",
    "split": {"block_size_m": 320.0, "buffer_m": 0.0},
}


def square_grid(size: int, res: float = RES) -> Grid:
    """A ``size`` x ``size`` grid in EPSG:32645 with its upper-left corner at (500000, 3130000)."""
    return Grid(CRS.from_epsg(32645), Affine(res, 0, 500_000.0, 0, -res, 3_130_000.0), size, size)


def write_stack(
    path: Path,
    data: np.ndarray,
    layers: Sequence[str],
    groups: Sequence[str] | None = None,
    *,
    grid: Grid,
    nodata: float | None = float("nan"),
) -> Path:
    """A feature stack as ``cryonet features`` writes one: GeoTIFF (band descriptions = ``layers``) + layer table.

    The layer table ``STACK.layers.csv`` (columns ``layer, group, units, source, band``) is written only when
    ``groups`` (one per layer) is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sp = write_raster(path, data, grid, nodata=nodata, descriptions=list(layers))
    if groups is not None:
        if len(groups) != len(layers):
            raise ValueError(f"{len(groups)} groups for {len(layers)} layers")
        table = pd.DataFrame(
            {
                "layer": list(layers),
                "group": list(groups),
                "units": "1",
                "source": "test",
                "band": np.arange(1, len(layers) + 1),
            }
        )
        table.to_csv(StackFile.sidecar_paths(sp).layers_csv, index=False)
    return sp


def write_twin(
    root: Path, size: int = 128, seed: int = 0, nodata_rows: int = 3, *, table: bool = False
) -> tuple[Path, Path]:
    """A tiny stack + labels: ice/debris blobs, one lake per quadrant, class-dependent spectra (learnable).

    The first ``nodata_rows`` rows are NaN in every layer and the last two columns are label 255. With ``table``
    the layer table (:data:`TWIN_GROUPS`) is written beside the stack.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size].astype(float)
    lab = np.zeros((size, size), np.uint8)
    for cls, n, (lo, hi) in ((1, 6, (size / 10, size / 6)), (2, 6, (size / 14, size / 9))):
        for _ in range(n):
            r0, c0, rad = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(lo, hi)
            lab[(rr - r0) ** 2 + (cc - c0) ** 2 < rad**2] = cls
    q = size // 2
    for a, b in [(0, 0), (0, q), (q, 0), (q, q)]:
        r0, c0 = a + rng.uniform(8, q - 8), b + rng.uniform(8, q - 8)
        lab[(rr - r0) ** 2 + (cc - c0) ** 2 < 4.5**2] = 3
    means = np.array(
        [
            [0.1, 0.1, 0.3, 0.2, -0.3],
            [0.8, 0.8, 0.7, 0.1, 0.8],
            [0.2, 0.25, 0.3, 0.3, -0.1],
            [0.05, 0.1, 0.02, 0.01, 0.6],
        ]
    )
    spec = means[lab].transpose(2, 0, 1) + rng.normal(0, 0.08, (5, size, size))
    dem = 5000 - 0.3 * rr * RES + 0.1 * cc * RES + 30 * np.sin(rr / 9) * np.cos(cc / 13)
    gy, gx = np.gradient(dem, RES)
    east, north = -gx, gy  # downslope; rows increase southwards
    norm = np.hypot(east, north)
    slope = np.degrees(np.arctan(norm))
    stack = np.concatenate([spec, slope[None], (east / norm)[None], (north / norm)[None]]).astype(np.float32)
    stack[:, :nodata_rows, :] = np.nan
    lab[:, -2:] = LABEL_NODATA
    g = square_grid(size)
    groups = [TWIN_GROUPS[n] for n in TWIN_LAYERS] if table else None
    sp = write_stack(root / "stack.tif", stack, TWIN_LAYERS, groups, grid=g)
    lp = write_raster(root / "labels.tif", lab, g, nodata=LABEL_NODATA)
    return sp, lp


def write_group_stack(root: Path, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    """A stack whose label depends only on the terrain layer ``elevation`` (= class id + noise); others noise.

    The first two rows are NaN in every layer; the last column is label nodata. A layer table sidecar is written.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size].astype(float)
    lab = np.zeros((size, size), np.uint8)
    for cls, n, rad in ((1, 14, 9.0), (2, 10, 6.0), (3, 8, 3.5)):
        for _ in range(n):
            r0, c0 = rng.uniform(0, size, 2)
            lab[(rr - r0) ** 2 + (cc - c0) ** 2 < rad**2] = cls
    x = rng.normal(0.0, 1.0, (len(GROUP_LAYERS), size, size)).astype(np.float32)
    x[1] = x[0] + rng.normal(0, 0.1, (size, size))  # correlated within the s2 group
    x[SIGNAL] = lab + rng.normal(0.0, 0.05, (size, size))
    x[:, :2] = np.nan
    lab[:, -1] = LABEL_NODATA
    g = square_grid(size)
    groups = [group for group, names in GROUP_STACK.items() for _ in names]
    sp = write_stack(root / "stack.tif", x, GROUP_LAYERS, groups, grid=g)
    lp = write_raster(root / "labels.tif", lab, g, nodata=LABEL_NODATA)
    return sp, lp


class StackFactory:
    """The ``make_stack`` fixture: writes test feature stacks, and the shared twin and group stacks.

    ``make_stack(path, data, layers, groups=None, grid=..., nodata=nan)`` writes any stack
    (:func:`write_stack`); :meth:`twin` and :meth:`group_stack` write the two shared scenes, whose layer names are
    the class attributes.
    """

    RES = RES
    TWIN_LAYERS = TWIN_LAYERS
    TWIN_GROUPS = TWIN_GROUPS
    GROUP_STACK = GROUP_STACK
    GROUP_LAYERS = GROUP_LAYERS
    SIGNAL = SIGNAL

    def __call__(
        self,
        path: Path,
        data: np.ndarray,
        layers: Sequence[str],
        groups: Sequence[str] | None = None,
        *,
        grid: Grid | None = None,
        nodata: float | None = float("nan"),
    ) -> Path:
        """Write ``data`` ``(bands, rows, cols)`` as a stack on ``grid`` (default: the square test grid)."""
        g = grid if grid is not None else square_grid(np.asarray(data).shape[-1])
        return write_stack(path, data, layers, groups, grid=g, nodata=nodata)

    @staticmethod
    def grid(size: int, res: float = RES) -> Grid:
        """The square test grid (:func:`square_grid`)."""
        return square_grid(size, res)

    @staticmethod
    def twin(
        root: Path, size: int = 128, seed: int = 0, nodata_rows: int = 3, *, table: bool = False
    ) -> tuple[Path, Path]:
        """The twin scene (:func:`write_twin`)."""
        return write_twin(root, size, seed, nodata_rows, table=table)

    @staticmethod
    def group_stack(root: Path, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
        """The group stack (:func:`write_group_stack`)."""
        return write_group_stack(root, size, seed)


def identity_normalizer() -> Any:
    """A :class:`~cryonet.datasets.Normalizer` of the group stack's layers with mean 0 and standard deviation 1."""
    from cryonet.datasets import Normalizer

    n = len(GROUP_LAYERS)
    return Normalizer(list(GROUP_LAYERS), np.zeros(n, np.float32), np.ones(n, np.float32))


def make_run(root: Path, stack: Path, labels: Path, *, uses: list[int], model: str = "unet") -> Path:
    """A run directory as `cryonet train` writes it, with an untrained smp model blind to all layers but ``uses``.

    The model reads the group stack (:func:`write_group_stack`). The encoder's first convolution gets zero weights
    for the other input layers, so they contribute exactly 0.
    """
    import torch

    from cryonet import config, models
    from cryonet.datasets import make_split, scan_tiles
    from cryonet.train import CHECKPOINT_FORMAT, save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    # a bare smp model (no full-resolution head, which would see every layer): the profile says so
    prof = config.CI.replace(
        **{**RUN_PROFILE, "full_res_head": False, "split": {"block_size_m": 320.0, "buffer_m": 0.0}}
    )
    torch.manual_seed(0)
    net = models.create(model, in_channels=len(GROUP_LAYERS), classes=4, encoder="resnet18")
    with torch.no_grad():
        w = net.encoder.conv1.weight
        blind = [i for i in range(len(GROUP_LAYERS)) if i not in uses]
        w[:, blind] = 0.0
        w[:, uses] *= 20.0  # a strong response to the used layers
    tiles = scan_tiles(stack, labels, 32, 32, progress=False)
    split = make_split(tiles, Grid.from_file(stack), block_size_m=320.0, buffer_m=0.0, seed=0)
    split.save(root / "split.json")
    norm = identity_normalizer()
    norm.save(root / "normalizer.json")
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model,
        "encoder": "resnet18",
        "model_state": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "epoch": 1,
        "best_score": 0.0,
        "profile": json.loads(json.dumps(prof.to_dict())),
        "layers": list(GROUP_LAYERS),
        "normalizer": norm.to_dict(),
    }
    save_checkpoint(root / "best.pt", state)
    (root / "run.json").write_text(
        json.dumps(
            {
                "model": model,
                "encoder": "resnet18",
                "profile": prof.to_dict(),
                "stack": str(stack),
                "labels": str(labels),
                "layers": GROUP_LAYERS,
            }
        )
    )
    return root


class RunFactory:
    """The ``make_run`` fixture: ``make_run(root, stack, labels, uses=[...], model="unet")`` (:func:`make_run`).

    Attributes:
        PROFILE: Profile overrides of those runs (32 px tiles, 320 m blocks, 3 epochs).
    """

    PROFILE = RUN_PROFILE

    def __call__(self, root: Path, stack: Path, labels: Path, *, uses: list[int], model: str = "unet") -> Path:
        """Write a run directory over the group stack (:func:`make_run`)."""
        return make_run(root, stack, labels, uses=uses, model=model)

    @staticmethod
    def identity_normalizer() -> Any:
        """The runs' normaliser (:func:`identity_normalizer`)."""
        return identity_normalizer()
