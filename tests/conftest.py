"""Shared pytest fixtures: offline settings, the real-data folder, tiny generated rasters, stacks and runs.

Feature stacks are written through one fixture, ``make_stack``; the builders behind it and ``make_run`` live in
``tests/builders.py``, which only this file imports: no test module imports another.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from builders import RunFactory, StackFactory

import cryonet._torch_compat  # noqa: F401  (before any test imports smp/torchvision: see that module)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a mistaken weight download fails at once instead of retrying
os.environ.setdefault("MPLBACKEND", "Agg")

#: Real rasters and vectors for checks against independent references (read-only, never copied into the project).
REALDATA = Path(os.environ.get("CRYONET_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The ``../shared/realdata`` folder; tests using it are skipped when it is absent."""
    if not (REALDATA / "README.md").is_file():
        pytest.skip(f"real validation data not found at {REALDATA}")
    return REALDATA


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small GeoTIFF with a real CRS and transform; returns its path.

    Usage: ``make_raster("a.tif", data, epsg=32645, res=10, origin=(500000, 3100000), nodata=None)``.
    """
    import rasterio
    from rasterio.transform import from_origin

    def _make(
        name: str,
        data: np.ndarray,
        *,
        epsg: int | None = 32645,
        res: float = 10.0,
        origin: tuple[float, float] = (500_000.0, 3_130_000.0),
        nodata: float | None = None,
    ) -> Path:
        arr = np.asarray(data)
        if arr.ndim == 2:
            arr = arr[None]
        path = tmp_path / name
        profile = {
            "driver": "GTiff",
            "width": arr.shape[2],
            "height": arr.shape[1],
            "count": arr.shape[0],
            "dtype": arr.dtype.name,
            "transform": from_origin(origin[0], origin[1], res, res),
            "nodata": nodata,
        }
        if epsg is not None:
            profile["crs"] = f"EPSG:{epsg}"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
        return path

    return _make


@pytest.fixture(scope="session")
def make_stack() -> StackFactory:
    """The one writer of test feature stacks (GeoTIFF + optional layer table) and of the shared scenes.

    Usage: ``make_stack(path, data, layers, groups=None, grid=None, nodata=nan)``; ``make_stack.twin(root, size,
    seed, nodata_rows, table=False)`` and ``make_stack.group_stack(root, size, seed)`` write the twin and group
    stacks with their labels; ``make_stack.TWIN_LAYERS``, ``.TWIN_GROUPS``, ``.GROUP_STACK``, ``.GROUP_LAYERS``,
    ``.SIGNAL`` name their layers; ``make_stack.grid(size)`` is the square test grid. Session-scoped (it holds no
    state), so module-scoped fixtures can use it.
    """
    return StackFactory()


@pytest.fixture(scope="session")
def make_run() -> RunFactory:
    """Writes a run directory over the group stack whose model sees only the layers ``uses``.

    Usage: ``make_run(root, stack, labels, uses=[make_stack.SIGNAL], model="unet")``; ``make_run.PROFILE`` is its
    profile, ``make_run.identity_normalizer()`` its normaliser.
    """
    return RunFactory()
