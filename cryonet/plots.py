"""Figures the chapters show. Every function reads scene files (rasterio / geopandas) and returns a Figure.

Large rasters are read decimated (``out_shape``) so that a figure of a full scene takes well under a second.
"""

from __future__ import annotations

import logging

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.warp
from affine import Affine
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cryonet.constants import CLASS_COLOURS, CLASS_IDS, CLASSES, LABEL_NODATA, S2_L2A_NODATA, S2_L2A_OFFSET, S2_L2A_SCALE
from cryonet.scene import LABEL_LAYERS, Scene

logger = logging.getLogger(__name__)


def _display_grid(scene: Scene, max_size: int) -> tuple[rasterio.crs.CRS, Affine, tuple[int, int]]:
    """The scene's reference grid, decimated so that its longer side is at most ``max_size`` pixels."""
    with rasterio.open(scene.reference_band) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (int(np.ceil(src.height / factor)), int(np.ceil(src.width / factor)))
        transform = src.transform * Affine.scale(src.width / shape[1], src.height / shape[0])
        return src.crs, transform, shape


def _read_on(path: str, crs: rasterio.crs.CRS, transform: Affine, shape: tuple[int, int],
             resampling: rasterio.warp.Resampling = rasterio.warp.Resampling.average) -> np.ndarray:
    """Band 1 of ``path`` resampled onto the display grid, float32 with NaN for nodata."""
    out = np.full(shape, np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            rasterio.band(src, 1), out, src_nodata=src.nodata, dst_transform=transform, dst_crs=crs,
            dst_nodata=np.nan, resampling=resampling,
        )
    return out


def _reflectance(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A Sentinel-2 L2A band read decimated to ``shape``, as reflectance (NaN for nodata)."""
    with rasterio.open(path) as src:
        dn = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
    refl = (dn.astype(np.float32) + S2_L2A_OFFSET) / S2_L2A_SCALE
    refl[dn == S2_L2A_NODATA] = np.nan
    return refl


def _stretch(rgb: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Robust per-channel linear stretch between percentiles, to 0-1 (NaN stays NaN -> shown white)."""
    out = np.empty_like(rgb)
    for i in range(rgb.shape[-1]):
        ch = rgb[..., i]
        lo, hi = np.nanpercentile(ch, [low, high]) if np.isfinite(ch).any() else (0.0, 1.0)
        out[..., i] = np.clip((ch - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.nan_to_num(out, nan=1.0)


def _hillshade(z: np.ndarray, res_m: float, azimuth_deg: float = 315.0, altitude_deg: float = 45.0) -> np.ndarray:
    """Lambertian hillshade 0-1 of a north-up metric grid (the usual cartographic light from the north-west)."""
    dz_drow, dz_dcol = np.gradient(z, res_m)
    slope = np.arctan(np.hypot(dz_dcol, dz_drow))
    aspect = np.arctan2(-dz_dcol, dz_drow)  # downslope direction, clockwise from north
    az, alt = np.radians(azimuth_deg), np.radians(altitude_deg)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0, 1)


def rasterise_labels(path: str, crs: rasterio.crs.CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a reference GeoPackage onto a grid: glaciers -> clean ice, then debris, then lakes on top.

    Returns:
        ``(rows, cols)`` uint8 class ids (:data:`cryonet.constants.CLASSES`).
    """
    labels = np.zeros(shape, dtype=np.uint8)
    for layer, cls in LABEL_LAYERS.items():  # glaciers, debris, lakes: painted in priority order
        gdf = gpd.read_file(path, layer=layer)
        if gdf.empty:
            continue
        geoms = gdf.to_crs(crs).geometry
        rasterio.features.rasterize(((g, CLASS_IDS[cls]) for g in geoms if g is not None and not g.is_empty),
                                    out=labels, transform=transform)
    return labels


def plot_scene(scene: Scene, *, max_size: int = 800) -> Figure:
    """Four panels of a scene: true colour, hillshade, InSAR coherence and the reference labels.

    Args:
        scene: The scene (its files are read, decimated to at most ``max_size`` pixels a side).
        max_size: Longest side of the displayed rasters, pixels.

    Returns:
        A matplotlib Figure with four axes.
    """
    crs, transform, shape = _display_grid(scene, max_size)
    res_m = abs(transform.a)
    rgb = np.dstack([_reflectance(str(scene.s2[b]), shape) for b in ("B4", "B3", "B2")])
    dem = _read_on(str(scene.dem), crs, transform, shape, rasterio.warp.Resampling.bilinear)
    coh = _read_on(str(scene.coherence), crs, transform, shape, rasterio.warp.Resampling.bilinear)
    labels = (rasterise_labels(str(scene.labels), crs, transform, shape) if scene.labels is not None
              else np.full(shape, LABEL_NODATA, dtype=np.uint8))

    left, top = transform.c, transform.f
    extent_km = (0.0, shape[1] * res_m / 1000, 0.0, shape[0] * res_m / 1000)
    fig, axes = plt.subplots(2, 2, figsize=(11, 10), constrained_layout=True)
    ax = axes.ravel()
    ax[0].imshow(_stretch(rgb), extent=extent_km)
    ax[0].set_title("Sentinel-2 true colour (B4 B3 B2)")
    ax[1].imshow(_hillshade(np.nan_to_num(dem, nan=float(np.nanmean(dem))), res_m), cmap="gray", extent=extent_km)
    ax[1].set_title(f"DEM hillshade ({np.nanmin(dem):.0f}-{np.nanmax(dem):.0f} m)")
    im = ax[2].imshow(coh, cmap="magma", vmin=0, vmax=1, extent=extent_km)
    fig.colorbar(im, ax=ax[2], shrink=0.8, label="coherence")
    ax[2].set_title("InSAR coherence (12 days)")
    cmap = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
    ax[3].imshow(np.where(labels == LABEL_NODATA, 0, labels), cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5,
                 interpolation="nearest", extent=extent_km)
    ax[3].legend(handles=[Patch(color=CLASS_COLOURS[c], label=c.replace("_", " ")) for c in CLASSES],
                 loc="lower right", fontsize=8, framealpha=0.8)
    ax[3].set_title("Reference labels")
    for a in ax:
        a.set_xlabel("km")
        a.set_ylabel("km")
    kind = "synthetic twin" if scene.synthetic else "scene"
    fig.suptitle(f"{scene.region}: {kind} ({left:.0f} E, {top:.0f} N, {crs.to_string()})")
    return fig


def class_shares(labels: np.ndarray) -> pd.DataFrame:
    """Pixel counts and shares of every class in a label raster.

    Args:
        labels: ``(rows, cols)`` class ids; :data:`cryonet.constants.LABEL_NODATA` is left out.

    Returns:
        DataFrame with columns ``class``, ``pixels``, ``share_of_scene`` (0-1 of the labelled pixels) and
        ``share_of_glacier`` (0-1 of the glacier area, clean ice + debris; NaN for background and lake).
    """
    lab = np.asarray(labels)
    valid = lab[lab != LABEL_NODATA]
    counts = np.bincount(valid.ravel().astype(np.int64), minlength=len(CLASSES))[: len(CLASSES)]
    total = counts.sum()
    glacier_classes = ("clean_ice", "debris")
    glacier = sum(counts[CLASS_IDS[c]] for c in glacier_classes)
    df = pd.DataFrame({"class": list(CLASSES), "pixels": counts.astype(np.int64)})
    df["share_of_scene"] = df["pixels"] / total if total else np.nan
    df["share_of_glacier"] = [n / glacier if c in glacier_classes and glacier else np.nan
                              for c, n in zip(CLASSES, counts, strict=True)]
    return df
