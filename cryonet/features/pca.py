"""Principal components of the Sentinel-2 bands, fitted once and reused unchanged (for transfer).

The ``pca`` layer group holds the first principal components of the ten reflectance bands. The transform is fitted on
a random sample of valid pixels of the **source** scene (Poiqu) with :class:`sklearn.decomposition.PCA` and saved as a
small JSON file beside the stack. Transfer to another region (Mont Blanc) loads that file and applies the source
components unchanged: refitting on the target would give the model differently-defined inputs (other axes, other
signs) under the same layer names.

Sign convention: a principal axis is only defined up to its sign. Each component is oriented so that its
largest-magnitude loading is positive (the convention of :func:`sklearn.utils.extmath.svd_flip` with
``u_based_decision=False``), and :meth:`PCATransform.fit` enforces it explicitly, so a refit on the same sample gives
the same components whatever the solver does.

Files are JSON (no pickle): readable, diffable, and floats are written with ``repr`` precision, so a save -> load
round trip is exact.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Format tag written into the JSON file.
PCA_FORMAT = "cryonet.pca/1"
#: Units of the component layers.
PCA_UNITS = "reflectance (projected)"
PCA_UNITS_STANDARDISED = "standard deviations (projected)"


def pca_layer_names(n_components: int) -> tuple[str, ...]:
    """``("pc1", "pc2", ...)``."""
    return tuple(f"pc{i + 1}" for i in range(n_components))


@dataclass(frozen=True)
class PCATransform:
    """A fitted principal-component transform of named bands.

    ``transform(x) = components @ ((x - mean) / scale)`` per pixel.

    Attributes:
        bands: Band names, in the order of the input's first axis.
        mean: ``(n_bands,)`` per-band mean of the fitting sample.
        scale: ``(n_bands,)`` per-band standard deviation when standardised, or None (covariance PCA).
        components: ``(n_components, n_bands)`` principal axes (unit rows), largest-magnitude loading positive.
        explained_variance_ratio: ``(n_components,)`` share of the total variance of each component.
        n_samples: Number of pixels the transform was fitted on.
        seed: Random seed of the pixel sample.
        meta: Free-form provenance (source scene, region, ...), stored in the JSON file.
    """

    bands: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray | None
    components: np.ndarray
    explained_variance_ratio: np.ndarray
    n_samples: int = 0
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        """Number of components."""
        return int(self.components.shape[0])

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the output layers, ``pc1 ...``."""
        return pca_layer_names(self.n_components)

    @property
    def units(self) -> str:
        """Units of the output layers."""
        return PCA_UNITS if self.scale is None else PCA_UNITS_STANDARDISED

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        bands_array: np.ndarray,
        *,
        bands: Sequence[str],
        n_components: int = 3,
        sample: int | None = 100_000,
        seed: int = 0,
        standardize: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> PCATransform:
        """Fit on a random sample of the valid pixels of ``bands_array``.

        Args:
            bands_array: ``(n_bands, rows, cols)`` or ``(n_bands, n_pixels)`` reflectance, NaN for nodata. A pixel is
                valid when all its bands are finite.
            bands: Names of the bands along the first axis.
            n_components: Number of components kept.
            sample: Number of valid pixels drawn at random (without replacement) for the fit; None uses all.
            seed: Seed of the pixel sample.
            standardize: Scale each band to unit variance before the PCA (correlation PCA). Off by default: the
                bands share one unit (reflectance), so the covariance PCA keeps their natural weights.
            meta: Provenance stored with the transform.

        Returns:
            The fitted transform.

        Raises:
            ValueError: shapes disagree, or fewer valid pixels than ``n_components + 1``.
        """
        from sklearn.decomposition import PCA

        x = np.asarray(bands_array, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        if x.shape[0] != len(bands):
            raise ValueError(f"bands_array has {x.shape[0]} bands but {len(bands)} band names were given")
        if not 1 <= n_components <= x.shape[0]:
            raise ValueError(f"n_components must be 1..{x.shape[0]}, got {n_components}")
        valid = np.flatnonzero(np.isfinite(x).all(axis=0))
        if valid.size <= n_components:
            raise ValueError(
                f"PCA needs more than {n_components} valid pixels (all bands finite), found {valid.size}; "
                "check the inputs' nodata"
            )
        rng = np.random.default_rng(seed)
        if sample is not None and valid.size > sample:
            valid = np.sort(rng.choice(valid, size=sample, replace=False))
        samples = x[:, valid].T  # (n, bands)
        mean = samples.mean(axis=0)
        scale = None
        if standardize:
            scale = samples.std(axis=0)
            scale[scale == 0] = 1.0
        z = (samples - mean) / (scale if scale is not None else 1.0)
        model = PCA(n_components=n_components, svd_solver="full").fit(z)
        comps = model.components_.copy()
        # Fixed sign convention (see module docstring): largest-|loading| positive.
        signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
        signs[signs == 0] = 1.0
        comps *= signs[:, None]
        logger.debug("PCA fitted on %d pixels; explained variance %s", valid.size, model.explained_variance_ratio_)
        return cls(
            bands=tuple(bands),
            # PCA centred z, whose mean is 0 up to rounding; fold sklearn's mean_ back in so transform() is exact.
            mean=mean + (model.mean_ * (scale if scale is not None else 1.0)),
            scale=scale,
            components=comps,
            explained_variance_ratio=np.asarray(model.explained_variance_ratio_, dtype=np.float64),
            n_samples=int(valid.size),
            seed=seed,
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ applying
    def transform(self, bands_array: np.ndarray) -> np.ndarray:
        """Project onto the components.

        Args:
            bands_array: ``(n_bands, ...)`` reflectance in the order of :attr:`bands`, NaN for nodata.

        Returns:
            ``(n_components, ...)`` float32; NaN wherever any band is NaN.
        """
        x = np.asarray(bands_array, dtype=np.float64)
        if x.shape[0] != len(self.bands):
            raise ValueError(f"expected {len(self.bands)} bands {self.bands} along the first axis, got shape {x.shape}")
        shape = x.shape[1:]
        flat = x.reshape(x.shape[0], -1)
        z = (flat - self.mean[:, None]) / (self.scale[:, None] if self.scale is not None else 1.0)
        out = self.components @ z  # NaN propagates
        return out.reshape((self.n_components, *shape)).astype(np.float32)

    def transform_bands(self, bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Like :meth:`transform`, from a band-name -> array mapping; returns layer name -> array."""
        missing = [b for b in self.bands if b not in bands]
        if missing:
            raise KeyError(f"PCA transform needs bands {missing}; got {sorted(bands)}")
        out = self.transform(np.stack([np.asarray(bands[b]) for b in self.bands]))
        return dict(zip(self.layer_names, out, strict=True))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable document."""
        return {
            "format": PCA_FORMAT,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "scale": None if self.scale is None else [float(v) for v in self.scale],
            "components": [[float(v) for v in row] for row in self.components],
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
            "n_samples": self.n_samples,
            "seed": self.seed,
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the transform as JSON, atomically; returns ``path``."""
        from cryonet.raster import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCATransform:
        """Read a transform written by :meth:`save`.

        Raises:
            ValueError: the file is not a CryoNet PCA file (the message names it and says what to do).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: PCA transform not found. It is written beside the source stack by `cryonet features` "
                "(STACK.pca.json); build the source region's stack first."
            )
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); rebuild the source stack to rewrite it") from exc
        if not isinstance(doc, dict) or doc.get("format") != PCA_FORMAT:
            raise ValueError(
                f"{path}: expected a PCA transform with format {PCA_FORMAT!r}, found "
                f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r}"
            )
        return cls(
            bands=tuple(doc["bands"]),
            mean=np.asarray(doc["mean"], dtype=np.float64),
            scale=None if doc["scale"] is None else np.asarray(doc["scale"], dtype=np.float64),
            components=np.asarray(doc["components"], dtype=np.float64),
            explained_variance_ratio=np.asarray(doc["explained_variance_ratio"], dtype=np.float64),
            n_samples=int(doc.get("n_samples", 0)),
            seed=doc.get("seed"),
            meta=dict(doc.get("meta") or {}),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PCATransform):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
