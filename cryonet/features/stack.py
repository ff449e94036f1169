"""The feature stack: all seven input families of the paper in one GeoTIFF, computed window by window.

:func:`build_stack` turns a scene directory (raw inputs at their native grids, see :mod:`cryonet.scene`) into one
float32 GeoTIFF on the scene's 10 m reference grid, one band per layer, grouped as
:data:`cryonet.constants.LAYER_GROUPS`:

======================  ========================================================================================
group                   layers
======================  ========================================================================================
``s2``                  the ten Sentinel-2 bands as surface reflectance 0-1
``indices``             NDSI, NDWI, NDVI, NDGI, red/SWIR and NIR/SWIR ratios (:mod:`~cryonet.features.indices`)
``pca``                 first principal components of the ten bands (:mod:`~cryonet.features.pca`)
``tasseled_cap``        brightness, greenness, wetness (:mod:`~cryonet.features.tasseled_cap`)
``terrain``             elevation, slope, aspect, curvatures, hillshade, TPI, ... (:mod:`~cryonet.features.terrain`)
``insar``               coherence, sin and cos of the wrapped phase (:mod:`~cryonet.features.insar`)
``texture``             GLCM features of PC1 (or B8) (:mod:`~cryonet.features.texture`)
======================  ========================================================================================

How it is computed (peak memory does not grow with the scene):

1. **Global settings first.** Whatever must be the same in every block is fixed before the block loop from a
   regular lattice sample of the scene (every ``s``-th row and column, at most :data:`SAMPLE_PIXELS` pixels, read
   window by window): the PCA transform (fitted on a random sample of those pixels, unless one is given) and the
   texture quantisation limits ``vmin``/``vmax`` (2nd/98th percentiles of the texture base image, as
   :func:`cryonet.features.texture.quantization_limits`). Computing either per block would make blocks disagree.
2. **Block loop.** For each output block of ``block`` × ``block`` pixels, every input is read over the block plus a
   halo (the largest margin any neighbourhood operation needs: :func:`cryonet.features.terrain.halo`,
   :func:`cryonet.features.texture.halo`) through a warped virtual raster (:func:`cryonet.raster.warped`, whose
   window reads equal the same pixels of a whole-raster warp), i.e. resampled on the fly onto the reference grid
   (bilinear; the 10 m bands are on the grid already, the 20 m bands, the DEM and the InSAR rasters are not). All
   families are computed on the padded block, the halo is cut off, and the block is written into the output
   GeoTIFF, opened on
   :func:`cryonet.raster.atomic_path` (tiled, deflate, float32, NaN nodata, band descriptions = layer names).
   Halos are clipped at the scene edge, exactly as a whole-scene computation sees the edge, so the result does not
   depend on ``block`` (the tests compare a block-wise build with a single-block one).
3. **Wrapped phase.** Bilinear interpolation of a wrapped phase is wrong at the ±pi wrap, so, as
   :func:`cryonet.raster.align_phase_to_grid` does, ``cos`` and ``sin`` of the phase are written once on the phase's
   own grid (a temporary two-band raster beside the output, written window by window) and *those* are warped
   bilinearly; the layers ``phase_sin``/``phase_cos`` are the components of the interpolated unit vector, i.e. of
   ``atan2(sin, cos)``.

Beside ``STACK.tif`` the build writes ``STACK.layers.csv`` (layer, group, units, source, band: the 1-based band
index) and, when PCA is used, ``STACK.pca.json`` (the fitted transform); :class:`cryonet.stackfile.StackFile`
reads the three back. Transfer: build the target region's stack with ``like=SOURCE_STACK.tif`` (or
``pca=PCATransform.load(...)`` and ``texture_params={"vmin":..., "vmax":...}``) so that the source region's PCA
axes and texture grey levels are applied unchanged.

Resuming: the output is written atomically, so a file under its final name is complete. The build goes through the
library's one reuse rule (:mod:`cryonet.reuse`): its key is the build settings and the contents (sha256) of the
scene's input files, recorded in ``STACK.tif.reuse.json``. If the stack exists with the same key,
:func:`build_stack` returns at once; a changed setting or input content rebuilds it, a touched but unchanged input
does not (``overwrite=True`` rebuilds).

Dask: :func:`build_stack_dask` builds the same stack with :func:`dask.array.overlap.overlap` /
``map_blocks`` / ``trim_internal`` (what :func:`dask.array.map_overlap` does, spelled out because the output has a
different number of bands than the input) over the same per-block function, so a user with a
``dask.distributed`` cluster can build stacks for whole Sentinel-2 tiles; it equals the numpy build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from cryonet import reuse
from cryonet.constants import CLASSES, LABEL_NODATA, LAYER_GROUPS, S2_BANDS, S2_L2A_NODATA
from cryonet.errors import CryonetError
from cryonet.features.indices import INDEX_LAYERS, INDEX_SOURCES, INDEX_UNITS, spectral_indices
from cryonet.features.pca import PCATransform, pca_layer_names
from cryonet.features.tasseled_cap import TC_LAYERS, TC_UNITS, tasseled_cap
from cryonet.prepare import dn_to_reflectance, rasterize_scene_labels
from cryonet.raster import (
    Grid,
    atomic_path,
    gtiff_profile,
    halo_slices,
    iter_windows,
    read_window,
    warped,
)
from cryonet.scene import Scene
from cryonet.stackfile import Selection, StackFile

logger = logging.getLogger(__name__)

#: At most this many pixels (a regular lattice) are read to fix the global settings (PCA, texture limits).
SAMPLE_PIXELS: Final[int] = 1_000_000
#: Pixels drawn at random from the lattice sample to fit the PCA.
PCA_SAMPLE: Final[int] = 100_000
#: Default number of principal components in the ``pca`` group.
PCA_COMPONENTS: Final[int] = 3
#: Texture bases: the image the GLCM is computed on.
TEXTURE_BASES: Final[tuple[str, ...]] = ("pc1", "B8")
#: Prefix of texture layer names (``glcm_contrast``, ...).
TEXTURE_PREFIX: Final[str] = "glcm_"
#: GDAL block cache for the build, MB: keeps peak memory independent of the scene size.
GDAL_CACHE_MB: Final[int] = 64
_TAG: Final[str] = "cryonet_stack"


class StackError(CryonetError, ValueError):
    """A stack or its layer table is missing or does not fit what was asked for; the message names the file."""


@dataclass(frozen=True)
class LayerSpec:
    """One band of the feature stack.

    Attributes:
        name: Layer name (the GeoTIFF band description).
        group: Layer group, one of :data:`cryonet.constants.LAYER_GROUPS`.
        units: Physical units.
        source: Where it comes from (input, formula, reference).
    """

    name: str
    group: str
    units: str
    source: str


@dataclass(frozen=True)
class TextureSettings:
    """GLCM settings of the ``texture`` group (see :func:`cryonet.features.texture.glcm_features`).

    ``vmin``/``vmax`` None means: fixed globally from the lattice sample before the block loop.
    """

    base: str = "pc1"
    window: int = 7
    levels: int = 32
    distances: tuple[int, ...] = (1,)
    angles: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
    features: tuple[str, ...] | None = None  # None: all of texture.ALL_FEATURES
    vmin: float | None = None
    vmax: float | None = None


@dataclass(frozen=True)
class StackInfo:
    """What :func:`build_stack` wrote.

    Attributes:
        path: The stack GeoTIFF.
        layers_csv: The layer table (``STACK.layers.csv``).
        pca_path: The PCA transform (``STACK.pca.json``), or None when no PCA was used.
        layers: The layers, in band order.
        grid: The reference grid.
        halo: Halo width used around each block, pixels.
        block: Block edge length, pixels.
        texture_range: ``(vmin, vmax)`` of the texture quantisation, or None.
        seconds: Wall time of the build.
        skipped: True when an up-to-date stack was already there and nothing was computed.
    """

    path: Path
    layers_csv: Path
    pca_path: Path | None
    layers: tuple[LayerSpec, ...]
    grid: Grid
    halo: int
    block: int
    texture_range: tuple[float, float] | None
    seconds: float
    skipped: bool = False

    @property
    def table(self) -> pd.DataFrame:
        """The layer table (as :attr:`cryonet.stackfile.StackFile.table` reads it back)."""
        return layer_table(self.layers)


# ------------------------------------------------------------------------------------------------------------------
# The layer registry
# ------------------------------------------------------------------------------------------------------------------
def _check_groups(groups: Iterable[str]) -> tuple[str, ...]:
    groups = tuple(groups)
    unknown = [g for g in groups if g not in LAYER_GROUPS]
    if unknown or not groups:
        raise ValueError(f"unknown layer group(s) {unknown or groups!r}; expected a subset of {list(LAYER_GROUPS)}")
    return tuple(g for g in LAYER_GROUPS if g in groups)  # always in stack order


def _texture_features(settings: TextureSettings) -> tuple[str, ...]:
    from cryonet.features import texture

    return tuple(settings.features) if settings.features is not None else tuple(texture.ALL_FEATURES)


def _terrain_layer_names(terrain_params: dict[str, Any]) -> tuple[str, ...]:
    from cryonet.features import terrain

    if "layers" in terrain_params:
        return tuple(terrain_params["layers"])
    radii = tuple(terrain_params.get("tpi_radii", ()))
    return (*terrain.TERRAIN_LAYERS, *(f"tpi_{float(r):g}m" for r in radii))


def stack_layers(
    groups: Sequence[str] = LAYER_GROUPS,
    *,
    pca_components: int = PCA_COMPONENTS,
    pca_units: str = "reflectance (projected)",
    texture: TextureSettings | None = None,
    terrain_params: dict[str, Any] | None = None,
) -> tuple[LayerSpec, ...]:
    """The registry: the layers of ``groups``, in stack order (groups in :data:`LAYER_GROUPS` order).

    Args:
        groups: Layer groups to include.
        pca_components: Number of principal components.
        pca_units: Units of the component layers.
        texture: GLCM settings (default :class:`TextureSettings`).
        terrain_params: ``layers`` and/or ``tpi_radii`` passed to :func:`cryonet.features.terrain.terrain_layers`.

    Returns:
        One :class:`LayerSpec` per band.
    """
    groups = _check_groups(groups)
    texture = texture or TextureSettings()
    specs: list[LayerSpec] = []
    for group in groups:
        if group == "s2":
            specs += [
                LayerSpec(
                    b,
                    group,
                    "surface reflectance (0-1)",
                    f"Sentinel-2 L2A {b}: (DN-1000)/10000 clipped at 0, DN 0 = nodata; bilinear",
                )  # fmt: skip
                for b in S2_BANDS
            ]
        elif group == "indices":
            specs += [LayerSpec(n, group, INDEX_UNITS[n], INDEX_SOURCES[n]) for n in INDEX_LAYERS]
        elif group == "pca":
            specs += [
                LayerSpec(n, group, pca_units, "PCA of the ten S2 bands (sklearn), source-region transform")
                for n in pca_layer_names(pca_components)
            ]
        elif group == "tasseled_cap":
            specs += [
                LayerSpec(n, group, TC_UNITS[n], "Nedkov (2017) Sentinel-2 coefficients, ten-band restriction")
                for n in TC_LAYERS
            ]
        elif group == "terrain":
            from cryonet.features import terrain as terrain_mod

            for n in _terrain_layer_names(terrain_params or {}):
                units = terrain_mod.TERRAIN_UNITS.get(n, "m")
                specs.append(LayerSpec(n, group, units, "DEM resampled bilinearly to 10 m; gdaldem-compatible"))
        elif group == "insar":
            from cryonet.features.insar import INSAR_LAYERS, INSAR_UNITS

            specs += [
                LayerSpec(n, group, INSAR_UNITS[n], "InSAR, bilinear (phase resampled via cos/sin)")
                for n in INSAR_LAYERS
            ]
        elif group == "texture":
            src = (
                f"GLCM of {texture.base}, window {texture.window}, {texture.levels} levels, distances "
                f"{list(texture.distances)}, angles {list(texture.angles)}"
            )
            for f in _texture_features(texture):
                units = {
                    "contrast": "grey levels^2",
                    "variance": "grey levels^2",
                    "dissimilarity": "grey levels",
                    "mean": "grey levels",
                    "entropy": "nats",
                }.get(f, "1")
                specs.append(LayerSpec(TEXTURE_PREFIX + f, group, units, src))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"layer names {dupes} occur twice in the stack; rename them in the group definitions")
    return tuple(specs)


def layer_table(layers: Sequence[LayerSpec]) -> pd.DataFrame:
    """The layer table: columns ``layer, group, units, source, band`` (``band`` 1-based, GDAL order)."""
    return pd.DataFrame(
        {
            "layer": [s.name for s in layers],
            "group": [s.group for s in layers],
            "units": [s.units for s in layers],
            "source": [s.source for s in layers],
            "band": np.arange(1, len(layers) + 1, dtype=int),
        }
    )


# ------------------------------------------------------------------------------------------------------------------
# The build plan: everything a block needs, fixed once (picklable, so dask workers get it too)
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    grid: Grid
    layers: tuple[LayerSpec, ...]
    groups: tuple[str, ...]
    inputs: tuple[str, ...]  # names of the aligned inputs, in array order
    paths: dict[str, str]  # input name -> file read through warped()
    halo: int
    pca: PCATransform | None
    texture: TextureSettings
    terrain_params: dict[str, Any] = field(default_factory=dict)
    sun_azimuth: float = 0.0
    sun_elevation: float = 45.0

    @property
    def needs_s2(self) -> bool:
        return bool({"s2", "indices", "pca", "tasseled_cap", "texture"} & set(self.groups))


def _needed_inputs(groups: Sequence[str]) -> tuple[str, ...]:
    names: list[str] = []
    if {"s2", "indices", "pca", "tasseled_cap", "texture"} & set(groups):
        names += list(S2_BANDS)
    if "terrain" in groups:
        names.append("dem")
    if "insar" in groups:
        names += ["coherence", "phase_cos", "phase_sin"]
    return tuple(names)


def _halo(groups: Sequence[str], grid: Grid, texture: TextureSettings, terrain_params: dict[str, Any]) -> int:
    h = 0
    if "terrain" in groups:
        from cryonet.features import terrain

        h = max(h, terrain.halo(grid.res, terrain_params.get("tpi_radii", ())))
    if "texture" in groups:
        from cryonet.features import texture as tex

        h = max(h, tex.halo(texture.window, texture.distances))
    return int(h)


class _Readers:
    """The scene's inputs opened once as warped VRTs on the reference grid; reads padded windows."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self._stack = ExitStack()
        self._vrts: dict[str, Any] = {}
        files: dict[str, str] = {}
        for name in plan.inputs:
            key = "phase_cos_sin" if name.startswith("phase_") else name
            files[key] = plan.paths[key]
        try:
            for key, path in files.items():
                kw = {"src_nodata": S2_L2A_NODATA} if key in S2_BANDS else {}
                self._vrts[key] = self._stack.enter_context(warped(path, plan.grid, **kw))
        except BaseException:
            self._stack.close()
            raise

    def read(self, window: Window) -> np.ndarray:
        """``(n_inputs, rows, cols)`` float32 of every input over ``window`` (NaN for nodata)."""
        out = np.empty((len(self.plan.inputs), int(window.height), int(window.width)), dtype=np.float32)
        for i, name in enumerate(self.plan.inputs):
            if name in ("phase_cos", "phase_sin"):
                continue
            # The VRTs are float32 with NaN as nodata (source nodata never enters the interpolation), and windows lie
            # inside the grid, so a plain read is enough (read_window's mask pass would warp a second time).
            data = self._vrts[name].read(1, window=window)
            out[i] = dn_to_reflectance(data) if name in S2_BANDS else data
        if "phase_cos" in self.plan.inputs:
            cs = self._vrts["phase_cos_sin"].read(window=window)
            out[self.plan.inputs.index("phase_cos")] = cs[0]
            out[self.plan.inputs.index("phase_sin")] = cs[1]
        return out

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compute_block(plan: _Plan, inputs: np.ndarray) -> np.ndarray:
    """All layers of ``plan`` from the aligned inputs of one (padded) block.

    Args:
        plan: The build plan.
        inputs: ``(len(plan.inputs), rows, cols)`` aligned inputs (reflectance, metres, coherence, cos/sin).

    Returns:
        ``(len(plan.layers), rows, cols)`` float32.
    """
    arr = {name: inputs[i] for i, name in enumerate(plan.inputs)}
    rows, cols = inputs.shape[1:]
    groups = set(plan.groups)
    values: dict[str, np.ndarray] = {}
    refl = {b: arr[b] for b in S2_BANDS} if plan.needs_s2 else {}
    if "s2" in groups:
        values.update(refl)
    if "indices" in groups:
        values.update(spectral_indices(refl))
    pcs: dict[str, np.ndarray] = {}
    if plan.pca is not None and ("pca" in groups or ("texture" in groups and plan.texture.base == "pc1")):
        pcs = plan.pca.transform_bands(refl)
        if "pca" in groups:
            values.update(pcs)
    if "tasseled_cap" in groups:
        values.update(tasseled_cap(refl))
    if "terrain" in groups:
        from cryonet.features.terrain import terrain_layers

        dem = arr["dem"]
        kw: dict[str, Any] = {"layers": _terrain_layer_names(plan.terrain_params)}
        if plan.terrain_params.get("tpi_radii"):
            kw["tpi_radii"] = tuple(plan.terrain_params["tpi_radii"])
        values.update(
            terrain_layers(
                dem,
                plan.grid.res,
                sun_azimuth=plan.sun_azimuth,
                sun_elevation=plan.sun_elevation,
                nodata_mask=~np.isfinite(dem),
                **kw,
            )
        )
    if "insar" in groups:
        from cryonet.features.insar import insar_layers

        # Angle of the bilinearly interpolated unit vector (cos, sin): the circular interpolation of the phase.
        phase = np.arctan2(arr["phase_sin"], arr["phase_cos"])
        values.update(insar_layers(arr["coherence"], phase))
    if "texture" in groups:
        from cryonet.features.texture import glcm_features

        t = plan.texture
        base = pcs["pc1"] if t.base == "pc1" else refl["B8"]
        feats = glcm_features(
            base,
            window=t.window,
            levels=t.levels,
            distances=t.distances,
            angles=t.angles,
            features=_texture_features(t),
            vmin=t.vmin,
            vmax=t.vmax,
            nodata_mask=~np.isfinite(base),
        )
        for name, f in zip(_texture_features(t), feats, strict=True):
            values[TEXTURE_PREFIX + name] = f
    out = np.empty((len(plan.layers), rows, cols), dtype=np.float32)
    for i, spec in enumerate(plan.layers):
        out[i] = values[spec.name]
    return out


# ------------------------------------------------------------------------------------------------------------------
# Global settings from a lattice sample
# ------------------------------------------------------------------------------------------------------------------
def _lattice_sample(plan: _Plan, names: Sequence[str], max_pixels: int = SAMPLE_PIXELS) -> tuple[np.ndarray, int]:
    """Every ``s``-th row and column of the named inputs, read window by window: ``((n, r, c), s)``."""
    rows, cols = plan.grid.shape
    step = max(1, math.ceil(math.sqrt(rows * cols / max_pixels)))
    size = max(step, (1024 // step) * step)  # windows start on the lattice, so [::step] picks the global lattice
    out = np.full((len(names), -(-rows // step), -(-cols // step)), np.nan, dtype=np.float32)
    sub = _Plan(**{**plan.__dict__, "inputs": tuple(names)})  # read only what is needed
    with _Readers(sub) as readers:
        for win in iter_windows(plan.grid, size):
            data = readers.read(win)[:, ::step, ::step]
            r, c = int(win.row_off) // step, int(win.col_off) // step
            out[:, r : r + data.shape[1], c : c + data.shape[2]] = data
    return out, step


def _global_settings(
    plan: _Plan, pca: PCATransform | None, *, pca_components: int, seed: int, standardize: bool, meta: dict
) -> tuple[PCATransform | None, TextureSettings]:
    groups = set(plan.groups)
    needs_pca = "pca" in groups or ("texture" in groups and plan.texture.base == "pc1")
    needs_range = "texture" in groups and (plan.texture.vmin is None or plan.texture.vmax is None)
    texture = plan.texture
    if not (needs_pca and pca is None) and not needs_range:
        return (pca if needs_pca else None), texture
    sample, step = _lattice_sample(plan, S2_BANDS)
    logger.info("global settings from every %d-th pixel (%d x %d lattice)", step, *sample.shape[1:])
    if needs_pca and pca is None:
        pca = PCATransform.fit(
            sample, bands=S2_BANDS, n_components=pca_components, sample=PCA_SAMPLE, seed=seed,
            standardize=standardize, meta=meta,
        )  # fmt: skip
    if needs_range:
        from cryonet.features.texture import quantization_limits

        base = pca.transform(sample)[0] if texture.base == "pc1" else sample[S2_BANDS.index("B8")]
        limits = quantization_limits(base, texture.levels, nodata_mask=~np.isfinite(base)) or (0.0, 1.0)
        texture = TextureSettings(
            **{
                **texture.__dict__,
                "vmin": float(limits[0]) if texture.vmin is None else texture.vmin,
                "vmax": float(limits[1]) if texture.vmax is None else texture.vmax,
            }
        )
    return (pca if needs_pca else None), texture


# ------------------------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------------------------
def _texture_settings(texture_base: str, texture_params: dict[str, Any] | None) -> TextureSettings:
    if texture_base not in TEXTURE_BASES:
        raise ValueError(f"texture_base must be one of {TEXTURE_BASES}, got {texture_base!r}")
    params = dict(texture_params or {})
    known = set(TextureSettings.__dataclass_fields__) - {"base"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown texture parameter(s) {unknown}; expected some of {sorted(known)}")
    for key in ("distances", "angles", "features"):
        if key in params and params[key] is not None:
            v = params[key]
            params[key] = (v,) if isinstance(v, int | float | str) else tuple(v)
    return TextureSettings(base=texture_base, **params)


@contextmanager
def _phase_cos_sin(phase_path: Path, where: Path) -> Iterator[Path]:
    """Cos and sin of the wrapped phase on the phase's own grid, as a temporary 2-band GeoTIFF in ``where``."""
    from cryonet.raster import open_raster

    tmpdir = Path(tempfile.mkdtemp(dir=where, prefix=".stack-phase."))
    try:
        path = tmpdir / "phase_cos_sin.tif"
        with open_raster(phase_path) as src:
            grid = Grid(crs=src.crs, transform=src.transform, width=src.width, height=src.height)
            with rasterio.open(path, "w", **gtiff_profile(grid, 2, "float32", float("nan"))) as dst:
                for win in iter_windows(grid, 1024):
                    phase = read_window(src, win)[0]
                    dst.write(np.stack([np.cos(phase), np.sin(phase)]).astype(np.float32), window=win)
        yield path
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _settings_doc(plan: _Plan, scene: Scene) -> dict[str, Any]:
    """Everything the stack's values depend on; stored in the file and compared when resuming."""

    def stamp(p: str) -> list[Any]:
        st = Path(p).stat()
        return [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]

    files = {k: stamp(str(getattr(scene, k))) for k in ("dem", "coherence", "phase")}
    files.update({b: stamp(str(p)) for b, p in scene.s2.items()})
    return {
        "version": 1,
        "layers": [s.name for s in plan.layers],
        "grid": [plan.grid.crs.to_wkt(), list(plan.grid.transform)[:6], plan.grid.width, plan.grid.height],
        "pca": plan.pca.to_dict() if plan.pca is not None else None,
        "texture": {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.texture.__dict__.items()},
        "terrain": plan.terrain_params,
        "sun": [plan.sun_azimuth, plan.sun_elevation],
        "inputs": files,
    }


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _prepare(
    scene: Scene | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    groups: Sequence[str],
    pca: PCATransform | None,
    texture_base: str,
    texture_params: dict[str, Any] | None,
    terrain_params: dict[str, Any] | None,
    like: str | os.PathLike[str] | None,
    pca_components: int,
    pca_standardize: bool,
    seed: int,
) -> tuple[Scene, _Plan, Path]:
    scene = scene if isinstance(scene, Scene) else Scene.load(scene)
    out_path = Path(out_path)
    groups = _check_groups(groups)
    texture_params = dict(texture_params or {})
    if like is not None:
        pca, like_range, like_texture = _settings_of(like)
        if like_range is not None:
            texture_params.setdefault("vmin", like_range[0])
            texture_params.setdefault("vmax", like_range[1])
        if like_texture:
            texture_base = like_texture
    texture = _texture_settings(texture_base, texture_params)
    terrain_params = dict(terrain_params or {})
    grid = Grid.from_file(scene.reference_band)
    if pca is not None and tuple(pca.bands) != tuple(S2_BANDS):
        raise ValueError(f"the PCA transform is for bands {pca.bands}, the stack needs {S2_BANDS}")
    n_comp = pca.n_components if pca is not None else pca_components
    if "texture" in groups and texture.base == "pc1" and n_comp < 1:
        raise ValueError("texture_base='pc1' needs at least one principal component")
    inputs = _needed_inputs(groups)
    paths = {b: str(scene.s2[b]) for b in S2_BANDS}
    paths.update(dem=str(scene.dem), coherence=str(scene.coherence), phase=str(scene.phase))
    plan = _Plan(
        grid=grid,
        layers=(),
        groups=groups,
        inputs=inputs,
        paths=paths,
        halo=_halo(groups, grid, texture, terrain_params),
        pca=pca,
        texture=texture,
        terrain_params=terrain_params,
        sun_azimuth=scene.sun_azimuth_deg,
        sun_elevation=scene.sun_elevation_deg,
    )
    return scene, plan, out_path


def _settings_of(stack_path: str | os.PathLike[str]) -> tuple[PCATransform | None, tuple[float, float] | None, str]:
    """PCA transform, texture range and texture base of an existing stack (for ``like=``)."""
    stack_path = Path(stack_path)
    if not stack_path.is_file():
        raise StackError(f"{stack_path}: reference stack not found (like=); build the source region's stack first")
    pca_path = StackFile(stack_path).pca_path
    pca = PCATransform.load(pca_path) if pca_path is not None else None
    with rasterio.open(stack_path) as src:
        doc = json.loads(src.tags().get(_TAG + "_settings", "{}"))
    tex = doc.get("texture") or {}
    rng = (tex["vmin"], tex["vmax"]) if tex.get("vmin") is not None and tex.get("vmax") is not None else None
    return pca, rng, tex.get("base", "")


def _finalise_plan(
    scene: Scene,
    plan: _Plan,
    *,
    pca_components: int,
    pca_standardize: bool,
    seed: int,
    out_path: Path,
) -> _Plan:
    meta = {"region": scene.region, "scene": str(scene.root), "synthetic": scene.synthetic, "stack": out_path.name}
    pca, texture = _global_settings(
        plan, plan.pca, pca_components=pca_components, seed=seed, standardize=pca_standardize, meta=meta
    )
    layers = stack_layers(
        plan.groups,
        pca_components=pca.n_components if pca is not None else pca_components,
        pca_units=pca.units if pca is not None else "reflectance (projected)",
        texture=texture,
        terrain_params=plan.terrain_params,
    )
    return _Plan(**{**plan.__dict__, "layers": layers, "pca": pca, "texture": texture})


def _reuse_key(doc: dict[str, Any], scene: Scene, out_path: Path) -> dict[str, Any]:
    """The stack's key of the one reuse rule (:mod:`cryonet.reuse`): its settings and its inputs' contents."""
    settings = {k: v for k, v in doc.items() if k != "inputs"}  # the inputs enter by content, not by stamp
    inputs = {k: getattr(scene, k) for k in ("dem", "coherence", "phase")} | dict(scene.s2)
    return reuse.key(settings, inputs, known=out_path)


def _write_sidecars(plan: _Plan, out_path: Path) -> tuple[Path, Path | None]:
    layers_csv, pca_path = StackFile.sidecar_paths(out_path)
    with atomic_path(layers_csv) as tmp:
        layer_table(plan.layers).to_csv(tmp, index=False)
    if plan.pca is not None:
        plan.pca.save(pca_path)
        return layers_csv, pca_path
    return layers_csv, None


def _output_profile(plan: _Plan) -> dict[str, Any]:
    profile = gtiff_profile(plan.grid, len(plan.layers), "float32", float("nan"))
    profile["BIGTIFF"] = "IF_SAFER"
    return profile


def _run_build(
    scene: Scene,
    plan: _Plan,
    out_path: Path,
    *,
    block: int,
    overwrite: bool,
    progress: bool,
    pca_components: int,
    pca_standardize: bool,
    seed: int,
    write_blocks: Callable[[_Plan, Any, list[Window], bool], None],
) -> StackInfo:
    t0 = time.perf_counter()
    if block < 16:
        raise ValueError(f"block must be at least 16 pixels, got {block}")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), ExitStack() as stack:
        if "insar" in plan.groups:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            cs = stack.enter_context(_phase_cos_sin(Path(plan.paths["phase"]), out_path.parent))
            plan = _Plan(**{**plan.__dict__, "paths": {**plan.paths, "phase_cos_sin": str(cs)}})
        plan = _finalise_plan(
            scene, plan, pca_components=pca_components, pca_standardize=pca_standardize, seed=seed,
            out_path=out_path,
        )  # fmt: skip
        doc = _settings_doc(plan, scene)
        digest = _digest(doc)
        layers_csv, pca_path = StackFile.sidecar_paths(out_path)
        texture_range = (plan.texture.vmin, plan.texture.vmax) if "texture" in plan.groups else None
        key = _reuse_key(doc, scene, out_path)
        state = "absent" if overwrite else reuse.status(out_path, key)
        if state == reuse.REUSE and layers_csv.is_file():
            logger.info("%s is up to date (same inputs and settings); kept. overwrite=True rebuilds it", out_path)
            return StackInfo(
                out_path, layers_csv, pca_path if plan.pca is not None else None, plan.layers, plan.grid, plan.halo,
                block, texture_range, time.perf_counter() - t0, skipped=True,
            )  # fmt: skip
        if state.startswith(reuse.STALE):
            logger.info("%s: %s; rebuilt", out_path, state.removeprefix(f"{reuse.STALE}: "))
        windows = list(iter_windows(plan.grid, block))
        with atomic_path(out_path) as tmp:
            with rasterio.open(tmp, "w", **_output_profile(plan)) as dst:
                write_blocks(plan, dst, windows, progress)
                for i, spec in enumerate(plan.layers, start=1):
                    dst.set_band_description(i, spec.name)
                dst.update_tags(
                    **{
                        _TAG + "_digest": digest,
                        _TAG + "_settings": json.dumps({k: doc[k] for k in ("layers", "texture", "terrain", "sun")}),
                        "region": scene.region,
                        "synthetic": str(scene.synthetic).lower(),
                    }
                )
            layers_csv, pca_path = _write_sidecars(plan, out_path)
        reuse.record(out_path, key)
    seconds = time.perf_counter() - t0
    logger.info("feature stack %s: %d layers, %d blocks, %.1f s", out_path, len(plan.layers), len(windows), seconds)
    return StackInfo(out_path, layers_csv, pca_path, plan.layers, plan.grid, plan.halo, block, texture_range, seconds)


def build_stack(
    scene: Scene | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    groups: Sequence[str] = LAYER_GROUPS,
    pca: PCATransform | None = None,
    texture_base: str = "pc1",
    texture_params: dict[str, Any] | None = None,
    terrain_params: dict[str, Any] | None = None,
    like: str | os.PathLike[str] | None = None,
    block: int = 512,
    pca_components: int = PCA_COMPONENTS,
    pca_standardize: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> StackInfo:
    """Build the feature stack of a scene, block by block (see the module docstring).

    Args:
        scene: A :class:`~cryonet.scene.Scene` or its directory.
        out_path: Output GeoTIFF (``STACK.tif``); ``STACK.layers.csv`` and ``STACK.pca.json`` are written beside it.
        groups: Layer groups to include (any subset of :data:`LAYER_GROUPS`; always written in that order).
        pca: A fitted transform to apply (transfer: the source region's, loaded with :meth:`PCATransform.load`);
            None fits one on this scene.
        texture_base: ``"pc1"`` (default) or ``"B8"``: the image the GLCM features are computed on.
        texture_params: Overrides of :class:`TextureSettings` (``window``, ``levels``, ``distances``, ``angles``,
            ``features``, ``vmin``, ``vmax``).
        terrain_params: ``layers`` and/or ``tpi_radii`` for :func:`cryonet.features.terrain.terrain_layers`.
        like: An existing stack (the source region's) whose PCA transform, texture base and texture range are
            reused unchanged; overrides ``pca``.
        block: Output block edge length, pixels.
        pca_components: Components kept when fitting.
        pca_standardize: Correlation instead of covariance PCA when fitting.
        seed: Seed of the PCA pixel sample.
        overwrite: Rebuild even if an up-to-date stack exists.
        progress: Show a progress bar over blocks.

    Returns:
        A :class:`StackInfo`.

    Raises:
        cryonet.scene.SceneError: the scene directory is incomplete.
        cryonet.raster.RasterError: an input is unreadable or does not overlap the reference grid.
        ValueError: unknown groups or parameters.
    """
    scene, plan, out_path = _prepare(
        scene, out_path, groups=groups, pca=pca, texture_base=texture_base, texture_params=texture_params,
        terrain_params=terrain_params, like=like, pca_components=pca_components, pca_standardize=pca_standardize,
        seed=seed,
    )  # fmt: skip

    def write_blocks(plan: _Plan, dst: Any, windows: list[Window], progress: bool) -> None:
        outers = list(iter_windows(plan.grid, block, overlap=plan.halo))
        with _Readers(plan) as readers:
            for win, outer in tqdm(
                list(zip(windows, outers, strict=True)), desc=f"stack {out_path.name}", unit="block",
                disable=not progress,
            ):  # fmt: skip
                data = _compute_block(plan, readers.read(outer))
                rs, cs = halo_slices(win, outer)
                dst.write(data[:, rs, cs], window=win)

    return _run_build(
        scene, plan, out_path, block=block, overwrite=overwrite, progress=progress, pca_components=pca_components,
        pca_standardize=pca_standardize, seed=seed, write_blocks=write_blocks,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------
# Dask
# ------------------------------------------------------------------------------------------------------------------
def _read_chunk(plan: _Plan, block_info: dict | None = None) -> np.ndarray:
    """Aligned inputs of one chunk (a dask task: opens the warped inputs itself)."""
    loc = block_info[None]["array-location"]  # type: ignore[index]
    (r0, r1), (c0, c1) = loc[1], loc[2]
    with _Readers(plan) as readers:
        return readers.read(Window(c0, r0, c1 - c0, r1 - r0))


def _compute_chunk(x: np.ndarray, plan: _Plan) -> np.ndarray:
    return _compute_block(plan, x)


def _stack_dask_array(plan: _Plan, chunk: int) -> Any:
    """The stack of ``plan`` as a lazy ``(n_layers, rows, cols)`` float32 dask array.

    Inputs are read per chunk through :func:`cryonet.raster.warped`; :func:`dask.array.overlap.overlap` shares a
    halo of ``plan.halo`` pixels between neighbouring chunks (``boundary="none"``: no padding at the scene edge,
    as in the numpy build), every overlapped chunk goes through the same per-block function as :func:`build_stack`,
    and :func:`dask.array.overlap.trim_internal` cuts the halo off.
    """
    import dask.array as da
    from dask.array.overlap import overlap, trim_internal

    rows, cols = plan.grid.shape
    chunks = (
        (len(plan.inputs),),
        tuple(min(chunk, rows - r) for r in range(0, rows, chunk)),
        tuple(min(chunk, cols - c) for c in range(0, cols, chunk)),
    )
    inputs = da.map_blocks(_read_chunk, plan=plan, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), "f4"))
    depth = {0: 0, 1: plan.halo, 2: plan.halo}
    if plan.halo == 0:
        return inputs.map_blocks(_compute_chunk, plan=plan, chunks=((len(plan.layers),), *chunks[1:]), dtype=np.float32)
    g = overlap(inputs, depth=depth, boundary="none")
    out = g.map_blocks(_compute_chunk, plan=plan, chunks=((len(plan.layers),), *g.chunks[1:]), dtype=np.float32)
    return trim_internal(out, depth, boundary="none")


def build_stack_dask(
    scene: Scene | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    groups: Sequence[str] = LAYER_GROUPS,
    pca: PCATransform | None = None,
    texture_base: str = "pc1",
    texture_params: dict[str, Any] | None = None,
    terrain_params: dict[str, Any] | None = None,
    like: str | os.PathLike[str] | None = None,
    chunk: int = 1024,
    batch: int | None = None,
    pca_components: int = PCA_COMPONENTS,
    pca_standardize: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> StackInfo:
    """:func:`build_stack` with dask: chunks are computed by the active dask scheduler, e.g. a distributed cluster.

    Create a ``distributed.Client`` before calling to use a cluster. The global settings (PCA, texture limits) are
    fixed first on the calling process, exactly as in :func:`build_stack`; the chunks are then computed ``batch``
    at a time (default: twice the cluster's thread count, or 4) and written by the calling process, so memory on
    the caller stays a few chunks whatever the scene size. Inputs must be readable by the workers (same paths).

    Args:
        scene: See :func:`build_stack`.
        out_path: See :func:`build_stack`.
        groups: See :func:`build_stack`.
        pca: See :func:`build_stack`.
        texture_base: See :func:`build_stack`.
        texture_params: See :func:`build_stack`.
        terrain_params: See :func:`build_stack`.
        like: See :func:`build_stack`.
        chunk: Chunk edge length, pixels.
        batch: Chunks computed concurrently before being written.
        pca_components: See :func:`build_stack`.
        pca_standardize: See :func:`build_stack`.
        seed: See :func:`build_stack`.
        overwrite: See :func:`build_stack`.
        progress: Show a progress bar over chunks.

    Returns:
        A :class:`StackInfo` (``block`` is the chunk size).
    """
    import dask

    scene, plan, out_path = _prepare(
        scene, out_path, groups=groups, pca=pca, texture_base=texture_base, texture_params=texture_params,
        terrain_params=terrain_params, like=like, pca_components=pca_components, pca_standardize=pca_standardize,
        seed=seed,
    )  # fmt: skip

    def write_blocks(plan: _Plan, dst: Any, windows: list[Window], progress: bool) -> None:
        arr = _stack_dask_array(plan, chunk)
        offsets_r = np.cumsum((0, *arr.chunks[1]))
        offsets_c = np.cumsum((0, *arr.chunks[2]))
        delayed = arr.to_delayed()[0]
        items = [
            (Window(int(offsets_c[j]), int(offsets_r[i]), arr.chunks[2][j], arr.chunks[1][i]), delayed[i, j])
            for i in range(delayed.shape[0])
            for j in range(delayed.shape[1])
        ]
        n = batch or _default_batch()
        bar = tqdm(total=len(items), desc=f"stack {out_path.name} (dask)", unit="chunk", disable=not progress)
        for k in range(0, len(items), n):
            part = items[k : k + n]
            results = dask.compute(*(d for _, d in part))
            for (win, _), data in zip(part, results, strict=True):
                dst.write(np.asarray(data, dtype=np.float32), window=win)
            bar.update(len(part))
        bar.close()

    return _run_build(
        scene, plan, out_path, block=chunk, overwrite=overwrite, progress=progress, pca_components=pca_components,
        pca_standardize=pca_standardize, seed=seed, write_blocks=write_blocks,
    )  # fmt: skip


def _default_batch() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(2, 2 * sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return 4


# ------------------------------------------------------------------------------------------------------------------
# Using a stack: permutation (reading, selecting and dropping layers: cryonet.stackfile.StackFile)
# ------------------------------------------------------------------------------------------------------------------
def permute_group(
    array: np.ndarray, table: pd.DataFrame, group: str, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Shuffle one group's layers spatially, jointly: the same pixel permutation for every layer of the group.

    Used for permutation importance: the group's values keep their joint distribution (a pixel's layers stay
    together) but lose their position; all other layers are untouched.

    Args:
        array: ``(bands, rows, cols)`` stack, or ``(batch, bands, rows, cols)`` tiles (then pixels are permuted
            across the whole batch).
        table: Layer table of the stack (:attr:`cryonet.stackfile.StackFile.table`).
        group: The group to permute.
        rng: Random generator or seed.

    Returns:
        A permuted copy of ``array``.
    """
    rng = np.random.default_rng(rng)
    idx = Selection.from_table(table, groups=[group]).index0
    arr = np.asarray(array)
    if arr.ndim not in (3, 4) or arr.shape[-3] != len(table):
        raise ValueError(
            f"expected a (bands, rows, cols) or (batch, bands, rows, cols) array with {len(table)} bands, got "
            f"shape {arr.shape}"
        )
    out = arr.copy()
    if arr.ndim == 3:
        sub = arr[idx].reshape(len(idx), -1)
        perm = rng.permutation(sub.shape[1])
        out[idx] = sub[:, perm].reshape(len(idx), *arr.shape[1:])
    else:
        sub = np.moveaxis(arr[:, idx], 1, 0).reshape(len(idx), -1)  # (k, batch*rows*cols)
        perm = rng.permutation(sub.shape[1])
        shuffled = sub[:, perm].reshape(len(idx), arr.shape[0], *arr.shape[2:])
        out[:, idx] = np.moveaxis(shuffled, 0, 1)
    return out


# ------------------------------------------------------------------------------------------------------------------
# Class statistics and separability
# ------------------------------------------------------------------------------------------------------------------
#: Pseudo-class of :func:`class_table`: background pixels that look like bare rock / moraine (see there).
ROCK: Final[str] = "rock"
#: Thresholds of the rock mask: NDVI below (not vegetated), NDSI below (not snow), NDWI below (not water).
ROCK_THRESHOLDS: Final[dict[str, float]] = {"ndvi": 0.2, "ndsi": 0.4, "ndwi": 0.2}


def _labels_reader(labels_path: Path, grid: Grid) -> Callable[[Window], np.ndarray]:
    if labels_path.suffix.lower() == ".gpkg":
        labels = rasterize_scene_labels(labels_path, grid)  # uint8, one byte per pixel
        return lambda win: labels[win.toslices()]
    src_grid = Grid.from_file(labels_path)
    if src_grid.shape != grid.shape or not src_grid.transform.almost_equals(grid.transform):
        raise StackError(
            f"{labels_path}: label raster grid {src_grid.shape} differs from the stack's {grid.shape}; align it with "
            "`cryonet align --scene` or pass the scene's GeoPackage"
        )

    def read(win: Window) -> np.ndarray:
        with rasterio.open(labels_path) as src:
            return src.read(1, window=win)

    return read


def sample_pixels(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    sample: int = 200_000,
    seed: int = 0,
) -> pd.DataFrame:
    """A random sample of labelled pixels of a stack, read window by window.

    Args:
        stack_path: Feature stack GeoTIFF.
        labels_path: Label raster on the stack's grid (uint8 class ids, 255 nodata) or the scene's GeoPackage.
        sample: Number of pixels drawn (uniformly, without replacement, among all pixels; unlabelled ones dropped).
        seed: Random seed.

    Returns:
        One row per sampled pixel: every layer, ``class`` (class name) and ``rock`` (bool, see :func:`class_table`).
    """
    stack_path, labels_path = Path(stack_path), Path(labels_path)
    table = StackFile(stack_path).table
    grid = Grid.from_file(stack_path)
    read_labels = _labels_reader(labels_path, grid)
    rows, cols = grid.shape
    rng = np.random.default_rng(seed)
    n = min(sample, rows * cols)
    flat = np.sort(rng.choice(rows * cols, size=n, replace=False))
    pr, pc = np.divmod(flat, cols)
    values = np.full((n, len(table)), np.nan, dtype=np.float32)
    labels = np.full(n, LABEL_NODATA, dtype=np.uint8)
    with rasterio.open(stack_path) as src:
        for win in iter_windows(grid, 512):
            r0, c0 = int(win.row_off), int(win.col_off)
            sel = np.flatnonzero((pr >= r0) & (pr < r0 + win.height) & (pc >= c0) & (pc < c0 + win.width))
            if sel.size == 0:
                continue
            data = src.read(window=win)
            lab = read_labels(win)
            values[sel] = data[:, pr[sel] - r0, pc[sel] - c0].T
            labels[sel] = lab[pr[sel] - r0, pc[sel] - c0]
    keep = labels < len(CLASSES)
    df = pd.DataFrame(values[keep], columns=list(table["layer"]))
    df["class"] = pd.Categorical.from_codes(labels[keep].astype(int), categories=list(CLASSES))
    rock = df["class"] == "background"
    for layer, thr in ROCK_THRESHOLDS.items():
        if layer in df:
            rock &= df[layer] < thr
    df[ROCK] = rock.to_numpy() if all(k in df for k in ROCK_THRESHOLDS) else False
    df.attrs["groups"] = list(table["group"])
    return df


def class_table(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    sample: int = 200_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class mean and standard deviation of every layer, from a random pixel sample.

    Classes: background, clean_ice, debris, lake, and the pseudo-class ``rock``: background pixels that are not
    vegetated (NDVI < 0.2), not snow (NDSI < 0.4) and not water (NDWI < 0.2) — bare rock, moraine and scree, the
    surfaces debris-covered ice is confused with. ``background`` as a whole also holds vegetation, snow fields and
    rivers, which are easy to tell from debris and would flatter any layer. ``rock`` needs the ``indices`` group.

    Args:
        stack_path: Feature stack GeoTIFF.
        labels_path: Label raster on the stack's grid or the scene's GeoPackage.
        sample: Pixels drawn at random.
        seed: Random seed.

    Returns:
        DataFrame indexed by layer, columns ``group``, ``units`` and, per class, ``<class>_mean``, ``<class>_sd``,
        ``<class>_n`` (number of sampled pixels with a finite value).
    """
    df = sample_pixels(stack_path, labels_path, sample=sample, seed=seed)
    table = StackFile(stack_path).table.set_index("layer")
    return _summarise(df, table)


def _summarise(df: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    layers = [c for c in df.columns if c not in ("class", ROCK)]
    out = pd.DataFrame(index=pd.Index(layers, name="layer"))
    out["group"] = table.loc[layers, "group"].to_numpy()
    out["units"] = table.loc[layers, "units"].to_numpy()
    groups = {c: df["class"] == c for c in CLASSES}
    groups[ROCK] = df[ROCK].astype(bool)
    for name, mask in groups.items():
        sub = df.loc[mask.to_numpy(), layers]
        out[f"{name}_mean"] = sub.mean().to_numpy()
        out[f"{name}_sd"] = sub.std(ddof=1).to_numpy()
        out[f"{name}_n"] = sub.notna().sum().to_numpy()
    return out


def separability(table_or_samples: pd.DataFrame, a: str = "debris", b: str = "background") -> pd.DataFrame:
    """Standardised mean difference (Cohen's d) of every layer between classes ``a`` and ``b``.

    ``d = (mean_a - mean_b) / s_pooled`` with ``s_pooled = sqrt(((n_a-1) sd_a² + (n_b-1) sd_b²) / (n_a+n_b-2))``.
    |d| < 0.5 means the two classes overlap heavily in that layer; |d| > 2 means they are well apart. Use
    ``b="rock"`` for debris against bare rock and moraine (see :func:`class_table`).

    Args:
        table_or_samples: A :func:`class_table` result, or a :func:`sample_pixels` frame.
        a: First class.
        b: Second class (``"rock"`` for the rock-like background).

    Returns:
        DataFrame indexed by layer with columns ``group``, ``d``, ``abs_d``; per-group summaries with
        :func:`separability_by_group`.
    """
    t = table_or_samples
    if "class" in t.columns:
        layers = [c for c in t.columns if c not in ("class", ROCK)]
        groups = t.attrs.get("groups")
        fake = pd.DataFrame({"group": groups or ["?"] * len(layers), "units": [""] * len(layers)}, index=layers)
        t = _summarise(t, fake)
    for cls in (a, b):
        if f"{cls}_mean" not in t.columns:
            raise ValueError(f"class {cls!r} not in the table; expected one of {[*CLASSES, ROCK]}")
    na, nb = t[f"{a}_n"].astype(float), t[f"{b}_n"].astype(float)
    pooled = np.sqrt(((na - 1) * t[f"{a}_sd"] ** 2 + (nb - 1) * t[f"{b}_sd"] ** 2) / (na + nb - 2))
    d = (t[f"{a}_mean"] - t[f"{b}_mean"]) / pooled.where(pooled > 0)
    return pd.DataFrame({"group": t["group"], "d": d, "abs_d": d.abs()}, index=t.index)


def separability_by_group(sep: pd.DataFrame) -> pd.DataFrame:
    """Summarise :func:`separability` per layer group: the best layer's |d|, the median |d|, and the best layer.

    Returns:
        DataFrame indexed by group (stack order) with columns ``max_abs_d``, ``median_abs_d``, ``best_layer``.
    """
    rows = []
    for group, sub in sep.groupby("group", sort=False):
        s = sub["abs_d"].dropna()
        rows.append(
            {
                "group": group,
                "max_abs_d": float(s.max()) if len(s) else np.nan,
                "median_abs_d": float(s.median()) if len(s) else np.nan,
                "best_layer": s.idxmax() if len(s) else "",
            }
        )
    out = pd.DataFrame(rows).set_index("group")
    order = [g for g in LAYER_GROUPS if g in out.index] + [g for g in out.index if g not in LAYER_GROUPS]
    return out.loc[order]


__all__ = [
    "LayerSpec",
    "StackError",
    "StackInfo",
    "TextureSettings",
    "build_stack",
    "build_stack_dask",
    "class_table",
    "layer_table",
    "permute_group",
    "sample_pixels",
    "separability",
    "separability_by_group",
    "stack_layers",
]
