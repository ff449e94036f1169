"""Data preparation: a scene's raw inputs onto one reference grid, with its labels rasterised.

Everything here knows what the inputs physically are, which :mod:`cryonet.raster` (generic raster I/O) does not:

* :func:`dn_to_reflectance`: Sentinel-2 L2A digital numbers -> surface reflectance 0-1;
* :func:`rasterize_polygons`, :func:`rasterize_scene_labels`: reference polygons -> a class-id raster, painted in
  :data:`~cryonet.constants.CLASS_PRIORITY` order;
* :func:`align_scene`: every input of a :class:`~cryonet.scene.Scene` onto the grid of its Sentinel-2 B2 band, one
  GeoTIFF per layer, resumable (outputs are written atomically, so an existing file under its final name is complete).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
from tqdm import tqdm

from cryonet.constants import (
    CLASS_IDS,
    CLASS_PRIORITY,
    LABEL_NODATA,
    S2_BANDS,
    S2_L2A_NODATA,
    S2_L2A_OFFSET,
    S2_L2A_SCALE,
)
from cryonet.raster import (
    DEFAULT_WINDOW,
    Grid,
    RasterError,
    align_phase_to_grid,
    align_to_grid,
    check_raster,
    iter_windows,
    open_raster,
    read_window,
    write_raster,
)
from cryonet.scene import LABEL_LAYERS, Scene
from cryonet.vector import VectorError, read_polygons

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Sentinel-2 digital numbers
# ---------------------------------------------------------------------------------------------------------------


def dn_to_reflectance(dn: np.ndarray) -> np.ndarray:
    """Sentinel-2 L2A digital numbers -> surface reflectance 0-1 (NaN stays NaN).

    ``(DN + S2_L2A_OFFSET) / S2_L2A_SCALE``; the conversion is linear, so converting after resampling equals
    resampling reflectance. Since processing baseline 04.00 dark pixels can have DN < 1000, i.e. a negative
    reflectance (noise around zero): it is clipped to 0, as a reflectance cannot be negative and the indices
    computed later (ratios) would otherwise flip sign.
    """
    refl = (dn + S2_L2A_OFFSET) / S2_L2A_SCALE
    return np.maximum(refl, 0.0, out=refl)  # np.maximum propagates NaN


# ---------------------------------------------------------------------------------------------------------------
# Rasterising reference polygons
# ---------------------------------------------------------------------------------------------------------------


def rasterize_polygons(
    layers: dict[str, gpd.GeoDataFrame],
    grid: Grid,
    *,
    priority: Sequence[str] = CLASS_PRIORITY,
    all_touched: bool = False,
) -> np.ndarray:
    """Burn class polygons into a label raster on ``grid``.

    Layers are painted in ``priority`` order, each over the previous ones, so that with the default
    :data:`~cryonet.constants.CLASS_PRIORITY` a pixel inside both a debris and a lake polygon is a lake: lake >
    debris > clean_ice > background. Pixels covered by no polygon are background (0).

    Args:
        layers: Class name (one of :data:`~cryonet.constants.CLASSES`) -> GeoDataFrame of polygons in any CRS;
            they are reprojected onto the grid's CRS.
        grid: Target grid.
        priority: Painting order, lowest priority first; must name every key of ``layers``.
        all_touched: Burn every pixel a polygon touches, not only those whose centre it covers.

    Returns:
        ``(rows, cols)`` uint8 array of class ids.
    """
    from rasterio.features import rasterize

    unknown = sorted(set(layers) - set(CLASS_IDS))
    if unknown:
        raise ValueError(f"unknown class layer(s) {unknown}; expected names from {list(CLASS_IDS)}")
    unordered = sorted(set(layers) - set(priority))
    if unordered:
        raise ValueError(f"class layer(s) {unordered} are missing from the priority order {list(priority)}")
    out = np.zeros(grid.shape, dtype=np.uint8)
    for name in priority:
        gdf = layers.get(name)
        if gdf is None or len(gdf) == 0:
            continue
        if gdf.crs is None:
            raise ValueError(f"the {name!r} polygons have no CRS; read them with cryonet.vector.read_polygons")
        geoms = [g for g in gdf.to_crs(grid.crs).geometry if g is not None and not g.is_empty]
        if geoms:
            rasterize(((g, CLASS_IDS[name]) for g in geoms), out=out, transform=grid.transform, all_touched=all_touched)
    return out


def rasterize_scene_labels(labels_gpkg: str | os.PathLike[str], grid: Grid, *, all_touched: bool = False) -> np.ndarray:
    """Rasterise a scene's reference GeoPackage (layers of :data:`cryonet.scene.LABEL_LAYERS`) onto ``grid``.

    ``glaciers`` become clean_ice, ``debris`` debris and ``lakes`` lake, painted by
    :data:`~cryonet.constants.CLASS_PRIORITY`. A missing layer is treated as empty (with a warning in the log); a
    GeoPackage with none of them is an error.

    Returns:
        ``(rows, cols)`` uint8 array of class ids (0 = background).

    Raises:
        cryonet.vector.VectorError: the file is unreadable, has none of the label layers, or invalid polygons that
            cannot be repaired.
    """
    import pyogrio

    path = Path(labels_gpkg)
    if not path.exists():
        raise VectorError(f"{path}: reference polygons not found; check the 'labels' entry of scene.json.")
    try:
        present = {str(n) for n in pyogrio.list_layers(path)[:, 0]}
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise VectorError(f"{path}: not a readable GeoPackage ({exc}).") from exc
    if not present & set(LABEL_LAYERS):
        raise VectorError(
            f"{path}: none of the label layers {list(LABEL_LAYERS)} found (layers: {sorted(present)}). "
            "Expected one polygon layer per class: glaciers (clean ice), debris, lakes."
        )
    layers = {}
    for layer, cls in LABEL_LAYERS.items():
        if layer not in present:
            logger.warning("%s: no %r layer; no %s pixels come from it", path, layer, cls)
            continue
        layers[cls] = read_polygons(path, layer=layer, allow_empty=True)
    return rasterize_polygons(layers, grid, all_touched=all_touched)


# ---------------------------------------------------------------------------------------------------------------
# A whole scene onto its reference grid
# ---------------------------------------------------------------------------------------------------------------


def _on_grid(path: Path, grid: Grid) -> bool:
    """True if ``path`` is a readable raster on exactly ``grid``."""
    try:
        other = Grid.from_file(path)
    except RasterError:
        return False
    return (
        other.crs == grid.crs
        and other.shape == grid.shape
        and other.transform.almost_equals(grid.transform, precision=1e-9)
    )


def _write_labels(scene: Scene, grid: Grid, path: Path, window_size: int) -> Path:
    labels = rasterize_scene_labels(scene.labels, grid)
    with open_raster(scene.reference_band) as src:
        for win in iter_windows(grid, window_size):
            dn = read_window(src, win)[0]
            no_data = np.isnan(dn) | (dn == S2_L2A_NODATA)
            labels[win.toslices()][no_data] = LABEL_NODATA
    return write_raster(
        path,
        labels,
        grid,
        nodata=LABEL_NODATA,
        descriptions=["labels"],
        dtype="uint8",
        tags={"classes": "0 background, 1 clean_ice, 2 debris, 3 lake", "source": Path(scene.labels).name},
    )


def align_scene(
    scene: Scene,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    overwrite: bool = False,
    window_size: int = DEFAULT_WINDOW,
) -> dict[str, Path]:
    """Align every input of a scene onto its reference grid (Sentinel-2 B2, 10 m) and rasterise its labels.

    Writes into ``out_dir``, one single-band GeoTIFF per layer, each with its band description set:

    * ``B2.tif`` ... ``B12.tif``: surface reflectance 0-1, float32, NaN where L2A DN is 0 (nodata); bilinear for
      the 20 m bands; negative reflectance clipped to 0 (see :func:`dn_to_reflectance`);
    * ``dem.tif``: elevation (metres), bilinear from the DEM's own CRS (e.g. EPSG:4326);
    * ``coherence.tif``: InSAR coherence 0-1, bilinear;
    * ``phase.tif``: wrapped phase (radians), resampled through its complex exponential
      (:func:`align_phase_to_grid`), because bilinear interpolation of wrapped values is wrong at the ±pi wrap;
    * ``labels.tif`` (if ``scene.labels``): uint8 class ids, :data:`~cryonet.constants.LABEL_NODATA` (255) where
      the reference band has no data (DN 0, nodata or masked).

    Memory: the raster layers are warped window by window (a few ``window_size``² blocks at a time); only the
    label raster is held whole while the polygons are burnt in (one byte per pixel: 120 MB for a full 10980²
    Sentinel-2 tile).

    Resuming: each file is written atomically, so a file under its final name is complete; an existing output on
    the reference grid is therefore kept as it is (skipped) unless ``overwrite`` is set. Delete ``out_dir`` or
    pass ``overwrite=True`` after changing the scene's inputs.

    Args:
        scene: The scene (see :class:`cryonet.scene.Scene`).
        out_dir: Output directory (created if needed).
        progress: Show a progress bar over layers.
        overwrite: Recompute outputs that already exist.
        window_size: Processing window edge length in pixels.

    Returns:
        Layer name (``"B2"`` ... ``"B12"``, ``"dem"``, ``"coherence"``, ``"phase"``, ``"labels"``) -> path.
    """
    grid = check_raster(scene.reference_band, count=1)
    # Fail fast, before hours of warping, if any input is unreadable, truncated or not single-band.
    for path in [*scene.s2.values(), scene.dem, scene.coherence, scene.phase]:
        check_raster(path, count=1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def s2_job(band: str) -> Callable[[Path], Path]:
        return lambda dst: align_to_grid(
            scene.s2[band], grid, dst, band_names=[band], window_size=window_size, src_nodata=S2_L2A_NODATA,
            convert=dn_to_reflectance, tags={"units": "surface reflectance (0-1)"},
        )  # fmt: skip

    def continuous_job(src: Path, name: str, units: str) -> Callable[[Path], Path]:
        return lambda dst: align_to_grid(
            src, grid, dst, band_names=[name], window_size=window_size, tags={"units": units}
        )

    jobs: list[tuple[str, Callable[[Path], Path]]] = [(band, s2_job(band)) for band in S2_BANDS]
    jobs += [
        ("dem", continuous_job(scene.dem, "dem", "metres")),
        ("coherence", continuous_job(scene.coherence, "coherence", "coherence (0-1)")),
        ("phase", lambda dst: align_phase_to_grid(scene.phase, grid, dst, window_size=window_size)),
    ]
    if scene.labels is not None:
        jobs.append(("labels", lambda dst: _write_labels(scene, grid, dst, window_size)))

    outputs: dict[str, Path] = {}
    for name, job in tqdm(jobs, desc="align scene", unit="layer", disable=not progress):
        path = out_dir / f"{name}.tif"
        if not overwrite and path.exists() and _on_grid(path, grid):
            logger.info("%s already exists on the reference grid; kept (overwrite=True recomputes it)", path)
        else:
            job(path)
        outputs[name] = path
    return outputs
