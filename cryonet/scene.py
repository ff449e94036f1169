"""The scene contract: which raw input files make up one scene, described by a ``scene.json`` beside them.

A scene directory holds the inputs as a real workflow receives them (Sentinel-2 L2A band files at native
resolution, a DEM in geographic coordinates, InSAR coherence and wrapped phase on their own grid, reference polygons
in a GeoPackage). The synthetic generator writes such a directory; a researcher with real data writes the same
``scene.json`` by hand (see ``data_manifest/README.md``) and every later step works unchanged.

Example ``scene.json``::

    {
      "region": "poiqu",
      "synthetic": true,
      "s2": {"B2": "s2/B02_10m.tif", ..., "B12": "s2/B12_20m.tif"},
      "dem": "dem/dem_glo30.tif",
      "coherence": "insar/coherence.tif",
      "phase": "insar/phase.tif",
      "labels": "labels/reference.gpkg",
      "sun_azimuth_deg": 152.0,
      "sun_elevation_deg": 48.0
    }

Paths are relative to the directory holding ``scene.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryonet.constants import S2_BANDS
from cryonet.errors import CryonetError
from cryonet.raster import atomic_path

SCENE_FILE = "scene.json"

#: Layers of the reference GeoPackage and the class each one is rasterised as.
LABEL_LAYERS: dict[str, str] = {"glaciers": "clean_ice", "debris": "debris", "lakes": "lake"}


class SceneError(CryonetError, ValueError):
    """A scene directory is incomplete or its ``scene.json`` is malformed."""


@dataclass(frozen=True)
class Scene:
    """The raw inputs of one scene.

    Attributes:
        root: Directory holding ``scene.json``.
        region: Region preset name (see :mod:`cryonet.regions`).
        s2: Sentinel-2 band name -> file (L2A digital numbers, native resolution).
        dem: Digital elevation model (metres).
        coherence: InSAR coherence raster (0-1).
        phase: Wrapped interferometric phase raster (radians, -pi..pi).
        labels: Reference polygons (GeoPackage with layers ``glaciers``, ``debris``, ``lakes``), or None.
        sun_azimuth_deg: Sun azimuth at acquisition, degrees clockwise from north.
        sun_elevation_deg: Sun elevation at acquisition, degrees.
        synthetic: True for a generated twin scene: every number derived from it is synthetic.
        meta: Any further metadata (seed, size, generator version, acquisition dates, ...).
    """

    root: Path
    region: str
    s2: dict[str, Path]
    dem: Path
    coherence: Path
    phase: Path
    labels: Path | None
    sun_azimuth_deg: float
    sun_elevation_deg: float
    synthetic: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reference_band(self) -> Path:
        """The file whose grid is the scene's reference grid (Sentinel-2 B2, 10 m)."""
        return self.s2["B2"]

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Scene:
        """Read ``root/scene.json`` and check that every file it names exists.

        Raises:
            SceneError: naming the directory, the missing key or file, and what to do.
        """
        root = Path(root)
        path = root / SCENE_FILE
        if not path.is_file():
            raise SceneError(
                f"{path}: no scene description found. Expected a {SCENE_FILE} naming the scene's input files; "
                f"generate a synthetic scene with `cryonet synth --region poiqu --out {root}` or write one by hand "
                "(see data_manifest/README.md)."
            )
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SceneError(f"{path}: not valid JSON ({exc}); fix or regenerate the file.") from exc
        required = ("region", "s2", "dem", "coherence", "phase", "sun_azimuth_deg", "sun_elevation_deg")
        missing = [k for k in required if k not in doc]
        if missing:
            raise SceneError(f"{path}: missing keys {missing}; expected all of {list(required)}.")
        bands = doc["s2"]
        absent = [b for b in S2_BANDS if b not in bands]
        if absent:
            raise SceneError(f"{path}: Sentinel-2 bands {absent} are not listed under 's2'; expected {list(S2_BANDS)}.")

        def resolve(rel: str, key: str) -> Path:
            p = (root / rel).resolve()
            if not p.exists():
                raise SceneError(f"{path}: {key} file {p} does not exist; check the path in {SCENE_FILE}.")
            return p

        known = set(required) | {"labels", "synthetic"}
        return cls(
            root=root,
            region=str(doc["region"]),
            s2={b: resolve(bands[b], f"s2.{b}") for b in S2_BANDS},
            dem=resolve(doc["dem"], "dem"),
            coherence=resolve(doc["coherence"], "coherence"),
            phase=resolve(doc["phase"], "phase"),
            labels=resolve(doc["labels"], "labels") if doc.get("labels") else None,
            sun_azimuth_deg=float(doc["sun_azimuth_deg"]),
            sun_elevation_deg=float(doc["sun_elevation_deg"]),
            synthetic=bool(doc.get("synthetic", False)),
            meta={k: v for k, v in doc.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``scene.json`` document, with paths relative to :attr:`root`."""

        def rel(p: Path) -> str:
            return os.path.relpath(p, self.root)

        doc: dict[str, Any] = {
            "region": self.region,
            "synthetic": self.synthetic,
            "s2": {b: rel(p) for b, p in self.s2.items()},
            "dem": rel(self.dem),
            "coherence": rel(self.coherence),
            "phase": rel(self.phase),
            "labels": rel(self.labels) if self.labels else None,
            "sun_azimuth_deg": self.sun_azimuth_deg,
            "sun_elevation_deg": self.sun_elevation_deg,
        }
        doc.update(self.meta)
        return doc

    def save(self) -> Path:
        """Write ``scene.json`` atomically and return its path."""
        path = Path(self.root) / SCENE_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path
