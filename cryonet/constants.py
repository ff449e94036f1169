"""Named constants that describe the data: classes, Sentinel-2 bands, layer groups.

Defined once here and imported everywhere else, so that a band order or a class id can never differ between the
synthetic generator, the feature stack, the model and the book.
"""

from __future__ import annotations

from typing import Final

#: Segmentation classes, in label order. The label raster stores the index into this tuple.
CLASSES: Final[tuple[str, ...]] = ("background", "clean_ice", "debris", "lake")
#: Class name -> integer label.
CLASS_IDS: Final[dict[str, int]] = {name: i for i, name in enumerate(CLASSES)}
#: The three glacier-related classes (the paper's classes of interest).
GLACIER_CLASSES: Final[tuple[str, ...]] = ("clean_ice", "debris", "lake")
#: Label value written where no reference exists (outside the scene footprint).
LABEL_NODATA: Final[int] = 255
#: Rasterisation priority where reference polygons overlap: later entries win (lake over debris over clean ice).
CLASS_PRIORITY: Final[tuple[str, ...]] = ("background", "clean_ice", "debris", "lake")
#: Colours used for the classes in every map (background, clean ice, debris, lake).
CLASS_COLOURS: Final[dict[str, str]] = {
    "background": "#d9d4c7",
    "clean_ice": "#6fc3ee",
    "debris": "#8c5a2b",
    "lake": "#1f3fbf",
}

#: Sentinel-2 bands at 10 m native resolution.
S2_BANDS_10M: Final[tuple[str, ...]] = ("B2", "B3", "B4", "B8")
#: Sentinel-2 bands at 20 m native resolution that the paper's stack uses.
S2_BANDS_20M: Final[tuple[str, ...]] = ("B5", "B6", "B7", "B8A", "B11", "B12")
#: All ten bands in the stack's order (ascending central wavelength).
S2_BANDS: Final[tuple[str, ...]] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: Native ground sampling distance of each band, metres.
S2_RESOLUTION_M: Final[dict[str, int]] = {**{b: 10 for b in S2_BANDS_10M}, **{b: 20 for b in S2_BANDS_20M}}
#: Central wavelength of each band (Sentinel-2A), nanometres.
S2_WAVELENGTH_NM: Final[dict[str, float]] = {
    "B2": 492.4,
    "B3": 559.8,
    "B4": 664.6,
    "B5": 704.1,
    "B6": 740.5,
    "B7": 782.8,
    "B8": 832.8,
    "B8A": 864.7,
    "B11": 1613.7,
    "B12": 2202.4,
}
#: L2A digital numbers -> reflectance: ``(DN + S2_L2A_OFFSET) / S2_L2A_SCALE`` (processing baseline >= 04.00).
S2_L2A_SCALE: Final[float] = 10000.0
#: L2A BOA_ADD_OFFSET since processing baseline 04.00 (January 2022).
S2_L2A_OFFSET: Final[int] = -1000
#: L2A nodata value (digital number).
S2_L2A_NODATA: Final[int] = 0

#: The seven input families of the paper, in stack order. Layer importance permutes and drops them by these names.
LAYER_GROUPS: Final[tuple[str, ...]] = ("s2", "indices", "pca", "tasseled_cap", "terrain", "insar", "texture")

#: The paper this project accompanies (Barzegar, Bolch, Kuehtreiber and Ullo, 2026).
PAPER_CITATION: Final[str] = (
    "Barzegar, F., Bolch, T., Kuehtreiber, N. and Ullo, S. L. (2026). CryoNet: A Deep Learning Framework for "
    "Multi-Modal Debris-Covered Glacier Mapping. A Case Study of the Poiqu Basin, Central Himalaya. arXiv:2605.21527"
)
#: Test-set results REPORTED BY THE PAPER for CryoNet on real data in the Poiqu Basin (fractions, from its abstract).
#: Shown beside this project's numbers as the paper's, never as ours; the paper does not define "overall IoU"
#: precisely (see :mod:`cryonet.metrics` for the definitions used here).
PAPER_REPORTED: Final[dict[str, float]] = {
    "overall_iou": 0.9052,
    "mean_recall": 0.9808,
    "mean_precision": 0.9226,
    "debris_iou": 0.9046,
    "debris_recall": 0.9579,
    "debris_precision": 0.9421,
}
