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

from cryonet.constants import (
    CLASS_COLOURS,
    CLASS_IDS,
    CLASSES,
    LABEL_NODATA,
    S2_L2A_NODATA,
    S2_L2A_OFFSET,
    S2_L2A_SCALE,
)
from cryonet.scene import LABEL_LAYERS, Scene

logger = logging.getLogger(__name__)


def _display_grid(scene: Scene, max_size: int) -> tuple[rasterio.crs.CRS, Affine, tuple[int, int]]:
    """The scene's reference grid, decimated so that its longer side is at most ``max_size`` pixels."""
    with rasterio.open(scene.reference_band) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (int(np.ceil(src.height / factor)), int(np.ceil(src.width / factor)))
        transform = src.transform @ Affine.scale(src.width / shape[1], src.height / shape[0])
        return src.crs, transform, shape


def _read_on(
    path: str,
    crs: rasterio.crs.CRS,
    transform: Affine,
    shape: tuple[int, int],
    resampling: rasterio.warp.Resampling = rasterio.warp.Resampling.average,
) -> np.ndarray:
    """Band 1 of ``path`` resampled onto the display grid, float32 with NaN for nodata."""
    out = np.full(shape, np.nan, dtype=np.float32)
    with rasterio.open(path) as src:
        rasterio.warp.reproject(
            rasterio.band(src, 1),
            out,
            src_nodata=src.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=resampling,
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
        rasterio.features.rasterize(
            ((g, CLASS_IDS[cls]) for g in geoms if g is not None and not g.is_empty), out=labels, transform=transform
        )
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
    labels = (
        rasterise_labels(str(scene.labels), crs, transform, shape)
        if scene.labels is not None
        else np.full(shape, LABEL_NODATA, dtype=np.uint8)
    )

    left, top = transform.c, transform.f
    extent_km = (0.0, shape[1] * res_m / 1000, 0.0, shape[0] * res_m / 1000)
    fig, axes = plt.subplots(2, 2, figsize=(11, 10), constrained_layout=True)
    ax = axes.ravel()
    ax[0].imshow(_stretch(rgb), extent=extent_km)
    ax[0].set_title("Sentinel-2 true colour (B4 B3 B2)")
    ax[1].imshow(_hillshade(np.nan_to_num(dem, nan=float(np.nanmean(dem))), res_m), cmap="gray", extent=extent_km)
    ax[1].set_title(f"DEM hillshade ({np.nanmin(dem):.0f}-{np.nanmax(dem):.0f} m)")
    im = ax[2].imshow(coh, cmap="magma", vmin=0, vmax=1, extent=extent_km)
    # The colour bar lives in an inset of its panel, so that the figure keeps exactly its four map axes.
    fig.colorbar(im, cax=ax[2].inset_axes((1.02, 0.0, 0.04, 1.0)), label="coherence")
    ax[2].set_title("InSAR coherence (12 days)")
    cmap = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
    ax[3].imshow(
        np.where(labels == LABEL_NODATA, 0, labels),
        cmap=cmap,
        vmin=-0.5,
        vmax=len(CLASSES) - 0.5,
        interpolation="nearest",
        extent=extent_km,
    )
    ax[3].legend(
        handles=[Patch(color=CLASS_COLOURS[c], label=c.replace("_", " ")) for c in CLASSES],
        loc="lower right",
        fontsize=8,
        framealpha=0.8,
    )
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
    df["share_of_glacier"] = [
        n / glacier if c in glacier_classes and glacier else np.nan for c, n in zip(CLASSES, counts, strict=True)
    ]
    return df


#: Colours of the train / validation / test tiles in split maps.
SPLIT_COLOURS: dict[str, str] = {"train": "#1b9e77", "val": "#d95f02", "test": "#7570b3"}


def plot_split(
    split: object, background: str | np.ndarray | None = None, *, max_size: int = 800, ax: plt.Axes | None = None
) -> Figure:
    """Map of a spatially blocked split: tile outlines coloured by split over a background, in the stack's CRS.

    Args:
        split: A :class:`cryonet.datasets.Split` (or the path of its ``split.json``).
        background: A raster file on the split's grid (band 1 is drawn: a label raster is shown in the class
            colours, anything else in grey), a ``(rows, cols)`` array on that grid, or None.
        max_size: Longest side, in pixels, the background is read at (decimated read).
        ax: Axes to draw into (default: a new figure).

    Returns:
        The figure. Tiles dropped by the buffer are not drawn; the title gives the tile counts per split.
    """
    from cryonet.datasets import Split

    sp = split if isinstance(split, Split) else Split.load(str(split))
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 7))
    else:
        fig = ax.figure
    tr = Affine(*sp.transform[:6])
    rows, cols = sp.shape
    left, top = tr.c, tr.f
    right, bottom = left + cols * tr.a, top + rows * tr.e
    extent = (left / 1000, right / 1000, bottom / 1000, top / 1000)
    if background is not None:
        is_labels = False
        if isinstance(background, np.ndarray):
            img = np.asarray(background, dtype=np.float32)
        else:
            with rasterio.open(background) as src:
                factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
                shape = (int(np.ceil(src.height / factor)), int(np.ceil(src.width / factor)))
                img = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest).astype(np.float32)
                is_labels = src.dtypes[0] == "uint8" and src.nodata == LABEL_NODATA
                if src.nodata is not None:
                    img[img == src.nodata] = np.nan
        if is_labels:
            cmap = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
            ax.imshow(
                img, extent=extent, cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5, interpolation="nearest", alpha=0.8
            )
        else:
            lo, hi = np.nanpercentile(img, [2, 98]) if np.isfinite(img).any() else (0, 1)
            ax.imshow(img, extent=extent, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    gdf = sp.to_geodataframe()
    handles = []
    for name in ("train", "val", "test"):
        part = gdf[gdf["split"] == name]
        if len(part):
            part.geometry.scale(1e-3, 1e-3, origin=(0, 0)).boundary.plot(
                ax=ax, color=SPLIT_COLOURS[name], linewidth=1.0
            )
        handles.append(Patch(facecolor="none", edgecolor=SPLIT_COLOURS[name], label=f"{name} ({len(part)} tiles)"))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("easting, km")
    ax.set_ylabel("northing, km")
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    p = sp.params
    ax.set_title(f"Spatially blocked split: {p.get('block_size_m', 0):g} m blocks, {p.get('buffer_m', 0):g} m buffer")
    return fig


# --- book: layer maps and class distributions (chapters 1 and 2) -------------------------------------------------
#: Colour maps of named layers in :func:`plot_layers` (anything else: ``viridis``).
LAYER_CMAPS: dict[str, str] = {
    "dem": "terrain", "elevation": "terrain", "hillshade": "gray", "coherence": "magma", "phase": "twilight",
    "phase_sin": "twilight", "phase_cos": "twilight", "aspect": "twilight", "slope": "cividis",
}  # fmt: skip


def _read_bands(
    path: object, bands: list[object], max_size: int
) -> tuple[dict[object, np.ndarray], dict[object, bool], tuple[float, float, float, float]]:
    """Bands of one raster (indexes from 1 or band descriptions), read decimated in a single call.

    One read for all bands matters for a pixel-interleaved multi-band stack: each read decompresses every band's
    blocks, so reading 14 of 44 bands one by one would decompress the file 14 times.

    Returns the float32 images (NaN for nodata) and whether each is a label raster, keyed as asked, and the extent in
    km from the raster's lower-left corner.
    """
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        index = {}
        for band in bands:
            if isinstance(band, str):
                if band not in names:
                    raise ValueError(f"{path}: no band described as {band!r}; bands are {names}")
                index[band] = names.index(band) + 1
            else:
                index[band] = int(band)
        order = sorted(set(index.values()))
        factor = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (int(np.ceil(src.height / factor)), int(np.ceil(src.width / factor)))
        data = src.read(order, out_shape=(len(order), *shape), resampling=rasterio.enums.Resampling.nearest)
        images, labels = {}, {}
        for band, i in index.items():
            img = data[order.index(i)].astype(np.float32)
            labels[band] = src.dtypes[i - 1] == "uint8" and src.nodata == LABEL_NODATA
            if src.nodata is not None and not np.isnan(src.nodata):
                img[img == src.nodata] = np.nan
            images[band] = img
        left, bottom, right, top = src.bounds
    return images, labels, (0.0, (right - left) / 1000, 0.0, (top - bottom) / 1000)


def plot_layers(
    layers: dict[str, object],
    *,
    ncols: int = 4,
    max_size: int = 500,
    cmaps: dict[str, str] | None = None,
    units: dict[str, str] | None = None,
    panel_size: float = 3.2,
    suptitle: str | None = None,
) -> Figure:
    """One map per raster layer, in a grid of panels with their own colour bars.

    Each layer is read decimated (nearest neighbour) so that its longer side is at most ``max_size`` pixels. A label
    raster (uint8 with nodata :data:`~cryonet.constants.LABEL_NODATA`) is drawn in the class colours; a cyclic
    layer (phase, aspect) with a cyclic colour map; any other layer with a 2-98 % percentile stretch.

    Args:
        layers: Panel title -> raster: a path (band 1), or ``(path, band)`` with ``band`` an index from 1 or a band
            description (e.g. ``("stack.tif", "ndsi")``).
        ncols: Panels per row.
        max_size: Longest side of each displayed raster, pixels.
        cmaps: Panel title -> matplotlib colour map (default: :data:`LAYER_CMAPS` by title, else ``viridis``).
        units: Panel title -> colour-bar label.
        panel_size: Edge of one panel, inches.
        suptitle: Figure title.

    Returns:
        The figure (axes in km from the raster's upper-left corner).
    """
    if not layers:
        raise ValueError("plot_layers: no layers given")
    cmaps, units = cmaps or {}, units or {}
    n = len(layers)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size * ncols * 1.15, panel_size * nrows), constrained_layout=True, squeeze=False
    )
    sources = {title: (src if isinstance(src, tuple) else (src, 1)) for title, src in layers.items()}
    by_path: dict[str, list[object]] = {}
    for path, band in sources.values():
        by_path.setdefault(str(path), []).append(band)
    read = {path: _read_bands(path, bands, max_size) for path, bands in by_path.items()}
    for ax, (title, (path, band)) in zip(axes.ravel(), sources.items(), strict=False):
        images, label_flags, extent = read[str(path)]
        img, is_labels = images[band], label_flags[band]
        if is_labels:
            cmap = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
            ax.imshow(
                np.where(np.isnan(img), 0, img),
                cmap=cmap,
                vmin=-0.5,
                vmax=len(CLASSES) - 0.5,
                interpolation="nearest",
                extent=extent,
            )
            ax.legend(
                handles=[Patch(color=CLASS_COLOURS[c], label=c.replace("_", " ")) for c in CLASSES],
                loc="lower right",
                fontsize=6,
                framealpha=0.8,
            )
        else:
            key = title.split()[-1].lower()
            cmap = cmaps.get(title, LAYER_CMAPS.get(key, "viridis"))
            if cmap == "twilight":
                finite = img[np.isfinite(img)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            else:
                lo, hi = np.nanpercentile(img, [2, 98]) if np.isfinite(img).any() else (0.0, 1.0)
            im = ax.imshow(
                img, cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-6, interpolation="nearest", extent=extent
            )
            fig.colorbar(im, ax=ax, shrink=0.8, label=units.get(title, ""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("km")
        ax.set_ylabel("km")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_class_distributions(
    samples: pd.DataFrame,
    layers: list[str],
    *,
    classes: tuple[str, ...] = ("debris", "rock", "clean_ice", "lake"),
    ncols: int = 4,
    bins: int = 60,
    suptitle: str | None = None,
) -> Figure:
    """Per-class histograms (density) of some layers, from a pixel sample.

    Args:
        samples: One row per pixel with a column per layer, a ``class`` column and optionally a boolean ``rock``
            column (as :func:`cryonet.features.stack.sample_pixels` returns).
        layers: Columns to show, one panel each.
        classes: Classes to draw; ``"rock"`` selects the rows flagged ``rock`` (rock-like background).
        ncols: Panels per row.
        bins: Histogram bins over the 1-99 % range of the shown classes.
        suptitle: Figure title.

    Returns:
        The figure; each panel's legend gives the number of pixels per class.
    """
    colours = {**CLASS_COLOURS, "rock": "#7f7f7f"}
    missing = [c for c in layers if c not in samples.columns]
    if missing:
        raise ValueError(
            f"plot_class_distributions: layers {missing} not in the sample; it has {list(samples.columns)}"
        )
    n = len(layers)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), constrained_layout=True, squeeze=False)
    masks = {c: (samples["rock"].astype(bool) if c == "rock" else samples["class"] == c).to_numpy() for c in classes}
    for ax, layer in zip(axes.ravel(), layers, strict=False):
        values = samples[layer].to_numpy(dtype=float)
        shown = np.zeros(len(values), bool)
        for m in masks.values():
            shown |= m
        finite = values[shown & np.isfinite(values)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for c, m in masks.items():
            v = values[m & np.isfinite(values)]
            if v.size:
                ax.hist(
                    v,
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=1.4,
                    color=colours.get(c, "k"),
                    label=f"{c.replace('_', ' ')} ({v.size})",
                )
        ax.set_title(layer, fontsize=10)
        ax.set_yticks([])
        ax.legend(fontsize=6, loc="upper right")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_importance(
    df: pd.DataFrame,
    *,
    value: str = "drop",
    title: str | None = None,
    xlabel: str | None = None,
    level: float = 0.95,
    ax: plt.Axes | None = None,
) -> Figure:
    """Horizontal bars of layer-group importance with intervals (the book's chapter on layer importance).

    Args:
        df: Either the long table of :func:`cryonet.importance.permutation_importance` (``group`` and ``value``
            columns, one row per repeat: bars are means, whiskers the Student-t interval of
            :func:`cryonet.importance.importance_summary`), its summary (index ``group``, columns ``mean_drop``,
            ``low``, ``high``), or the table of :func:`cryonet.importance.drop_group_ablation` (one row per group,
            no whiskers).
        value: Column holding the importance in a long table.
        title: Axes title.
        xlabel: x-axis label (default: the metric in ``df.attrs`` and "drop").
        level: Confidence level of the whiskers.
        ax: Axes to draw into (default a new figure).

    Returns:
        The figure; groups sorted by importance, most important on top; a vertical line at 0.
    """
    from cryonet.importance import importance_summary

    if {"mean_drop", "low", "high"} <= set(df.columns):
        summ = df
    elif "group" in df.columns and value in df.columns:
        summ = importance_summary(df.rename(columns={value: "drop"})[["group", "drop"]], level=level)
    else:
        raise ValueError(
            f"plot_importance: expected columns 'group' and {value!r}, or a summary with mean_drop, "
            f"low, high; got {list(df.columns)}"
        )
    summ = summ.sort_values("mean_drop")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 0.45 * len(summ) + 1.2), constrained_layout=True)
    else:
        fig = ax.figure
    y = np.arange(len(summ))
    err = np.vstack([summ["mean_drop"] - summ["low"], summ["high"] - summ["mean_drop"]])
    has_err = np.isfinite(err).all(axis=0)
    ax.barh(y, summ["mean_drop"], color="#4c72b0", height=0.6)
    if has_err.any():
        ax.errorbar(
            summ["mean_drop"].to_numpy()[has_err],
            y[has_err],
            xerr=err[:, has_err],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([str(g) for g in summ.index])
    metric = df.attrs.get("metric", "metric")
    ax.set_xlabel(xlabel or f"drop of {metric} ({int(round(level * 100))} % interval over repeats)")
    if title:
        ax.set_title(title)
    return fig


# --- book: training and model comparison (chapters 3 and 4) ---------------------------------------------------------
#: Error categories of :func:`error_map` (value -> label, colour); 255 = not scored.
ERROR_CLASSES: dict[int, tuple[str, str]] = {
    0: ("correct", "#f0f0f0"),
    1: ("glacier missed (predicted background)", "#d62728"),
    2: ("false glacier (background predicted as glacier)", "#ff7f0e"),
    3: ("wrong glacier class", "#9467bd"),
}


def plot_history(
    histories: pd.DataFrame | list[dict] | dict[str, pd.DataFrame | list[dict]],
    *,
    metric: str = "val_miou_glacier",
    metric_label: str = "validation mean IoU (glacier classes)",
    title: str | None = None,
) -> Figure:
    """Training curves: losses per epoch (left) and a validation metric per epoch (right).

    Args:
        histories: One run's history (the rows of ``RUN/history.csv`` as a DataFrame, or ``history.json``'s list of
            dicts, with columns ``epoch``, ``train_loss``, ``val_loss`` and ``metric``), or a dict label -> history
            to draw several runs in one figure (one colour per run).
        metric: Column drawn on the right.
        metric_label: Its axis label.
        title: Figure title.

    Returns:
        The figure; training loss solid, validation loss dashed, the best epoch of each run marked on the right.
    """
    runs = histories if isinstance(histories, dict) else {"": histories}
    fig, (ax_loss, ax_m) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, hist) in enumerate(runs.items()):
        df = pd.DataFrame(hist)
        missing = {"epoch", "train_loss", "val_loss", metric} - set(df.columns)
        if missing:
            raise ValueError(f"plot_history: history of {label or 'the run'} lacks columns {sorted(missing)}")
        c = colours[i % len(colours)]
        prefix = f"{label}: " if label else ""
        ax_loss.plot(df["epoch"], df["train_loss"], "-o", color=c, ms=3, label=f"{prefix}training")
        ax_loss.plot(df["epoch"], df["val_loss"], "--s", color=c, ms=3, label=f"{prefix}validation")
        ax_m.plot(df["epoch"], df[metric], "-o", color=c, ms=3, label=label or None)
        best = df[metric].astype(float).idxmax() if df[metric].notna().any() else None
        if best is not None:
            ax_m.plot(df.loc[best, "epoch"], df.loc[best, metric], "*", color=c, ms=12, mec="black", mew=0.5)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (cross-entropy + Dice)")
    ax_loss.legend(fontsize=7, ncol=2 if len(runs) > 2 else 1)
    ax_m.set_xlabel("epoch")
    ax_m.set_ylabel(metric_label)
    ax_m.set_ylim(0, 1)
    if len(runs) > 1:
        ax_m.legend(fontsize=8)
    for ax in (ax_loss, ax_m):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_m.set_title("best epoch marked with a star", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def split_region(split: object, name: str = "test", *, cell: int = 16) -> rasterio.windows.Window:
    """The pixel window around the largest connected group of one split's tiles (e.g. the held-out test block).

    Tiles are painted on a coarse mask (``cell`` pixels per mask cell), its 8-connected components are labelled
    (``scipy.ndimage.label``), and the window is the bounding box of the tiles whose centre lies in the component
    holding the most tiles.

    Args:
        split: A :class:`cryonet.datasets.Split` or the path of its ``split.json``.
        name: Split name.
        cell: Mask resolution, pixels.

    Returns:
        A rasterio ``Window`` on the split's grid.
    """
    from scipy import ndimage

    from cryonet.datasets import Split

    sp = split if isinstance(split, Split) else Split.load(str(split))
    tiles = sp.get(name)
    if not tiles:
        raise ValueError(f"split {name!r} has no tiles")
    rows, cols = sp.shape
    mask = np.zeros((-(-rows // cell), -(-cols // cell)), dtype=bool)
    for t in tiles:
        mask[t.row // cell : -(-(t.row + t.size) // cell), t.col // cell : -(-(t.col + t.size) // cell)] = True
    comp, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    ids = [comp[(t.row + t.size // 2) // cell, (t.col + t.size // 2) // cell] for t in tiles]
    values, counts = np.unique(ids, return_counts=True)
    biggest = values[np.argmax(counts)]
    chosen = [t for t, i in zip(tiles, ids, strict=True) if i == biggest]
    r0, c0 = min(t.row for t in chosen), min(t.col for t in chosen)
    r1, c1 = max(t.row + t.size for t in chosen), max(t.col + t.size for t in chosen)
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def error_map(reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-pixel error category of a prediction (:data:`ERROR_CLASSES`).

    Args:
        reference: ``(rows, cols)`` reference class ids (255 = nodata).
        prediction: ``(rows, cols)`` predicted class ids (255 = no prediction).

    Returns:
        ``(rows, cols)`` uint8: 0 correct, 1 a glacier class predicted as background, 2 background predicted as a
        glacier class, 3 one glacier class predicted as another, 255 where either side is nodata.
    """
    ref = np.asarray(reference)
    pred = np.asarray(prediction)
    if ref.shape != pred.shape:
        raise ValueError(f"error_map: reference {ref.shape} and prediction {pred.shape} differ in shape")
    bg = CLASS_IDS["background"]
    out = np.zeros(ref.shape, dtype=np.uint8)
    wrong = ref != pred
    out[wrong & (ref != bg) & (pred == bg)] = 1
    out[wrong & (ref == bg) & (pred != bg)] = 2
    out[wrong & (ref != bg) & (pred != bg)] = 3
    out[(ref == LABEL_NODATA) | (pred == LABEL_NODATA)] = LABEL_NODATA
    return out


def _region_arrays(
    rasters: dict[str, object], window: rasterio.windows.Window | None
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Band 1 of each raster (path, or a full-grid array) inside ``window``, as uint8 class ids."""
    out: dict[str, np.ndarray] = {}
    for key, src in rasters.items():
        if isinstance(src, np.ndarray):
            arr = src if window is None else src[rasterio.windows.window_index(window)]
        else:
            with rasterio.open(src) as ds:
                arr = ds.read(1, window=window)
        out[key] = np.asarray(arr).astype(np.uint8)
    shapes = {a.shape for a in out.values()}
    if len(shapes) != 1:
        raise ValueError(f"rasters differ in shape inside the window: { {k: a.shape for k, a in out.items()} }")
    return out, shapes.pop()


def _region_extent(
    split: object | None, window: rasterio.windows.Window | None, shape: tuple[int, int]
) -> tuple[tuple[float, float, float, float], Affine | None]:
    """Extent in km (map coordinates) of the window when a split gives the transform, else in pixels."""
    if split is None:
        return (0.0, float(shape[1]), float(shape[0]), 0.0), None
    from cryonet.datasets import Split

    sp = split if isinstance(split, Split) else Split.load(str(split))
    tr = Affine(*sp.transform[:6])
    if window is not None:
        tr = tr @ Affine.translation(window.col_off, window.row_off)
    left, top = tr.c, tr.f
    right, bottom = left + shape[1] * tr.a, top + shape[0] * tr.e
    return (left / 1000, right / 1000, bottom / 1000, top / 1000), tr


def _panel_width(shape: tuple[int, int], height: float = 4.9) -> float:
    """Width in inches of a map panel of ``height`` inches for a region of ``shape`` (rows, cols), with its axes."""
    return float(np.clip(height * shape[1] / max(shape[0], 1) + 1.3, 2.6, 6.0))


def _draw_tiles(ax: plt.Axes, split: object | None, name: str) -> None:
    if split is None:
        return
    from cryonet.datasets import Split

    sp = split if isinstance(split, Split) else Split.load(str(split))
    gdf = sp.to_geodataframe()
    part = gdf[gdf["split"] == name]
    if len(part):
        lim = (ax.get_xlim(), ax.get_ylim())
        part.geometry.scale(1e-3, 1e-3, origin=(0, 0)).boundary.plot(ax=ax, color="black", linewidth=0.5, alpha=0.5)
        ax.set_xlim(*lim[0])
        ax.set_ylim(*lim[1])


def _show_classes(ax: plt.Axes, labels: np.ndarray, extent: tuple[float, float, float, float]) -> None:
    cmap = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
    img = np.ma.masked_equal(labels, LABEL_NODATA)
    ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5, interpolation="nearest", extent=extent)


def _show_errors(ax: plt.Axes, errors: np.ndarray, extent: tuple[float, float, float, float]) -> None:
    cmap = ListedColormap([colour for _, colour in ERROR_CLASSES.values()])
    img = np.ma.masked_equal(errors, LABEL_NODATA)
    ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=len(ERROR_CLASSES) - 0.5, interpolation="nearest", extent=extent)


def plot_prediction(
    reference: object,
    prediction: object,
    *,
    window: rasterio.windows.Window | None = None,
    split: object | None = None,
    split_name: str = "test",
    title: str | None = None,
) -> Figure:
    """Reference labels, a model's prediction and its error map, side by side, over one region.

    Args:
        reference: Label raster path (or a full-grid ``(rows, cols)`` array).
        prediction: Predicted class raster path on the same grid (or a full-grid array).
        window: Region to show (e.g. :func:`split_region`); default the whole raster.
        split: The run's split (object or ``split.json``): gives map coordinates and draws the outlines of the
            ``split_name`` tiles (the scored area).
        split_name: Which tiles to outline.
        title: Figure title.

    Returns:
        The figure with three map panels; the error panel's title gives the share of correct pixels.
    """
    arrays, shape = _region_arrays({"reference": reference, "prediction": prediction}, window)
    extent, _ = _region_extent(split, window, shape)
    errors = error_map(arrays["reference"], arrays["prediction"])
    width = _panel_width(shape)
    fig, axes = plt.subplots(1, 3, figsize=(3 * width, 5.4), constrained_layout=True)
    _show_classes(axes[0], arrays["reference"], extent)
    axes[0].set_title("reference labels")
    _show_classes(axes[1], arrays["prediction"], extent)
    axes[1].set_title("prediction")
    _show_errors(axes[2], errors, extent)
    scored = errors != LABEL_NODATA
    share = float((errors[scored] == 0).mean()) if scored.any() else float("nan")
    axes[2].set_title(f"errors ({100 * share:.1f} % of pixels correct)")
    for ax in axes:
        _draw_tiles(ax, split, split_name)
        ax.set_xlabel("easting, km" if split is not None else "column")
        ax.set_ylabel("northing, km" if split is not None else "row")
    axes[1].legend(
        handles=[Patch(color=CLASS_COLOURS[c], label=c.replace("_", " ")) for c in CLASSES],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=4,
        fontsize=8,
    )
    axes[2].legend(
        handles=[Patch(color=col, label=lab) for lab, col in ERROR_CLASSES.values()],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=2,
        fontsize=7,
    )
    if title:
        fig.suptitle(title)
    return fig


def plot_error_maps(
    reference: object,
    predictions: dict[str, object],
    *,
    window: rasterio.windows.Window | None = None,
    split: object | None = None,
    split_name: str = "test",
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """The reference and the error map of several models' predictions over one region, one panel each.

    Args:
        reference: Label raster path (or a full-grid array).
        predictions: Model label -> predicted class raster path (or a full-grid array), all on the same grid.
        window: Region to show; default the whole raster.
        split: The split (map coordinates and tile outlines), or None for pixel coordinates.
        split_name: Which tiles to outline.
        ncols: Panels per row.
        title: Figure title.

    Returns:
        The figure: the reference first, then one error map per model with its share of correct pixels.
    """
    if not predictions:
        raise ValueError("plot_error_maps: no predictions given")
    arrays, shape = _region_arrays({"__reference__": reference, **predictions}, window)
    ref = arrays.pop("__reference__")
    extent, _ = _region_extent(split, window, shape)
    n = len(arrays) + 1
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(_panel_width(shape) * ncols, 4.9 * nrows + 0.6), constrained_layout=True, squeeze=False
    )
    flat = axes.ravel()
    _show_classes(flat[0], ref, extent)
    flat[0].set_title("reference labels")
    for ax, (label, pred) in zip(flat[1:], arrays.items(), strict=False):
        errors = error_map(ref, pred)
        _show_errors(ax, errors, extent)
        scored = errors != LABEL_NODATA
        share = float((errors[scored] == 0).mean()) if scored.any() else float("nan")
        ax.set_title(f"{label}: {100 * share:.1f} % correct", fontsize=10)
    for ax in flat[:n]:
        _draw_tiles(ax, split, split_name)
        ax.set_xlabel("easting, km" if split is not None else "column")
        ax.set_ylabel("northing, km" if split is not None else "row")
    for ax in flat[n:]:
        ax.set_visible(False)
    handles = [Patch(color=CLASS_COLOURS[c], label=c.replace("_", " ")) for c in CLASSES]
    handles += [Patch(color=col, label=lab) for lab, col in ERROR_CLASSES.values()]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_class_scores(
    results: dict[str, pd.DataFrame],
    *,
    score: str = "iou",
    classes: tuple[str, ...] = ("clean_ice", "debris", "lake"),
    title: str | None = None,
) -> Figure:
    """Grouped bars of one per-class score for several models, with bootstrap interval whiskers.

    Args:
        results: Model label -> per-class table with columns ``score``, ``score_low``, ``score_high``
            (:func:`cryonet.metrics.class_intervals`).
        score: ``iou``, ``precision``, ``recall`` or ``f1``.
        classes: Classes along the x axis.
        title: Axes title.

    Returns:
        The figure.
    """
    if not results:
        raise ValueError("plot_class_scores: no results given")
    fig, ax = plt.subplots(
        figsize=(max(6.0, 1.6 * len(classes) * max(1, len(results)) / 2), 3.8), constrained_layout=True
    )
    width = 0.8 / len(results)
    x = np.arange(len(classes))
    for i, (label, table) in enumerate(results.items()):
        missing = {score, f"{score}_low", f"{score}_high"} - set(table.columns)
        if missing:
            raise ValueError(f"plot_class_scores: table of {label} lacks columns {sorted(missing)}")
        t = table.loc[list(classes)]
        v = t[score].to_numpy(dtype=float)
        err = np.vstack([v - t[f"{score}_low"].to_numpy(dtype=float), t[f"{score}_high"].to_numpy(dtype=float) - v])
        ax.bar(x + (i - (len(results) - 1) / 2) * width, np.nan_to_num(v), width, label=label)
        ok = np.isfinite(err).all(axis=0)
        ax.errorbar(
            (x + (i - (len(results) - 1) / 2) * width)[ok],
            v[ok],
            yerr=err[:, ok],
            fmt="none",
            ecolor="black",
            capsize=2,
            linewidth=0.8,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([c.replace("_", " ") for c in classes])
    ax.set_ylim(0, 1)
    ax.set_ylabel(
        f"{score} (95 % bootstrap interval over test tiles)"
        if score != "iou"
        else "IoU (95 % bootstrap interval over test tiles)"
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(len(results), 5), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    if title:
        ax.set_title(title)
    return fig


# --- book: transfer to the Alps (chapter 6) -------------------------------------------------------------------------
def plot_layer_shift(
    source: pd.DataFrame,
    target: pd.DataFrame,
    diagnostics: pd.DataFrame,
    *,
    layers: tuple[str, ...] = ("elevation", "slope", "coherence", "B8", "ndsi"),
    names: tuple[str, str] = ("source", "target"),
    title: str | None = None,
) -> Figure:
    """Distributions of a few layers in two regions (top) and the shift per layer group (bottom).

    Args:
        source: Pixel sample of the source region (:func:`cryonet.transfer.sample_layers`), one column per layer.
        target: Pixel sample of the target region, same columns.
        diagnostics: :func:`cryonet.transfer.shift_diagnostics` of the two (rows with ``class == "all"`` used).
        layers: Layers whose histograms are drawn (those missing from the samples are skipped).
        names: Labels of the two regions.
        title: Figure title.

    Returns:
        The figure: one histogram panel per layer (density, physical units, the layer's Wasserstein distance in
        the panel title) and a bar chart of the mean Wasserstein distance per layer group, in source standard
        deviations.
    """
    shown = [lay for lay in layers if lay in source.columns and lay in target.columns]
    if not shown:
        raise ValueError(f"plot_layer_shift: none of the layers {layers} is in the samples")
    diag = diagnostics[diagnostics["class"] == "all"] if "class" in diagnostics.columns else diagnostics
    diag = diag.set_index("layer")
    fig = plt.figure(figsize=(3.0 * max(len(shown), 3), 7.0), constrained_layout=True)
    gs = fig.add_gridspec(2, len(shown), height_ratios=[1.0, 1.1])
    for k, lay in enumerate(shown):
        ax = fig.add_subplot(gs[0, k])
        a = source[lay].to_numpy(float)
        b = target[lay].to_numpy(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        lo, hi = np.percentile(np.concatenate([a, b]), [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        ax.hist(a, bins=bins, density=True, alpha=0.55, color="#1f77b4", label=names[0])
        ax.hist(b, bins=bins, density=True, alpha=0.55, color="#d62728", label=names[1])
        w = diag.loc[lay, "wasserstein"] if lay in diag.index else float("nan")
        ax.set_title(f"{lay}\nW = {w:.2f} source sd", fontsize=9)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7, loc="best")
    ax = fig.add_subplot(gs[1, :])
    by_group = diag.groupby("group", sort=False)["wasserstein"].agg(["mean", "max"])
    by_group = by_group.sort_values("mean", ascending=False)
    x = np.arange(len(by_group))
    ax.bar(x - 0.2, by_group["mean"], 0.4, label="mean over the group's layers", color="#7570b3")
    ax.bar(x + 0.2, by_group["max"], 0.4, label="most shifted layer", color="#d95f02", alpha=0.7)
    ax.set_xticks(x)
    ax.set_xticklabels(by_group.index, fontsize=9)
    ax.set_ylabel("Wasserstein distance\n(source standard deviations)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"distribution shift {names[0]} → {names[1]} per layer group", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def plot_fewshot(
    reference: object,
    predictions: dict[str, object],
    *,
    block: rasterio.windows.Window,
    exclusion: rasterio.windows.Window | None = None,
    title: str | None = None,
) -> Figure:
    """Error maps of several predictions of one scene with the fine-tuning block (and its buffer) outlined.

    Args:
        reference: Label raster path (or a full-grid array).
        predictions: Label -> predicted class raster path (or array), e.g. transferred and fine-tuned.
        block: Pixel window of the labelled fine-tuning block (drawn solid).
        exclusion: The block grown by its buffer, never scored (drawn dashed).
        title: Figure title.

    Returns:
        The figure of :func:`plot_error_maps` (pixel coordinates) with the windows outlined on every panel.
    """
    from matplotlib.patches import Rectangle

    fig = plot_error_maps(reference, predictions, ncols=len(predictions) + 1, title=title)
    for ax in fig.axes:
        if not ax.get_visible() or not ax.images:
            continue
        ax.add_patch(
            Rectangle(
                (block.col_off, block.row_off), block.width, block.height, fill=False, edgecolor="black", linewidth=1.5
            )
        )
        if exclusion is not None:
            ax.add_patch(
                Rectangle(
                    (exclusion.col_off, exclusion.row_off),
                    exclusion.width,
                    exclusion.height,
                    fill=False,
                    edgecolor="black",
                    linewidth=1.0,
                    linestyle="--",
                )
            )
    return fig
