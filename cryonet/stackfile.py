"""The one owner of a feature stack file: ``STACK.tif`` with its sidecars ``STACK.layers.csv`` and ``STACK.pca.json``.

A feature stack (written by :func:`cryonet.features.stack.build_stack`, ``cryonet features``) is a float32 GeoTIFF
with one band per layer (band descriptions = layer names, NaN = nodata) and, beside it,

- ``STACK.layers.csv``, the layer table: columns ``layer, group, units, source, band``, one row per band in band
  order, ``band`` the 1-based GDAL band number;
- ``STACK.pca.json``, the fitted PCA transform, when the stack has a ``pca`` group
  (:class:`cryonet.features.pca.PCATransform`).

:class:`StackFile` reads all three and is the only code that knows where the sidecars lie and how the table is
checked; every module that needs a stack's layer names, groups or band indexes asks it. Layers are picked by group
with :meth:`StackFile.select` / :meth:`StackFile.without`, which return a :class:`Selection` holding **both** index
conventions under explicit names: :attr:`Selection.index0` (0-based, for numpy arrays ``(bands, rows, cols)``) and
:attr:`Selection.bands` (1-based, for rasterio's ``read(bands)``).

A :class:`StackFile` holds only the path: every property reads the files again, so it never returns a stale view
of a stack that was rebuilt in the meantime.

This module sits low in the package: it imports only :mod:`cryonet.raster` (and numpy, pandas), so that
``datasets``, ``features``, ``baseline``, ``importance``, ``inference``, ``transfer`` and ``train`` can all use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import pandas as pd

from cryonet.errors import CryonetError
from cryonet.raster import open_raster

#: Columns of the layer table ``STACK.layers.csv``, in file order.
TABLE_COLUMNS: Final[tuple[str, ...]] = ("layer", "group", "units", "source", "band")
#: What to do about a missing or mismatched stack or sidecar.
REBUILD: Final[str] = "Rebuild the stack with `cryonet features` (cryonet.features.stack.build_stack)."


class StackFileError(CryonetError, ValueError):
    """A stack's layer table is missing, malformed or does not fit the raster, or a selection does not fit the stack.

    The message names the file and says what to do.
    """


class Sidecars(NamedTuple):
    """Where the sidecars of ``STACK.tif`` lie (whether or not they exist)."""

    layers_csv: Path
    pca_json: Path


@dataclass(frozen=True, eq=False)
class Selection:
    """Layers picked from a stack, in band order.

    Attributes:
        names: Layer names, in band order.
        index0: 0-based band indexes, sorted int64 ``(k,)``: index a ``(bands, rows, cols)`` array with these.
        reduced_table: The layer table of a stack made of these layers alone (rows in band order, ``band``
            renumbered ``1..k``): what a writer of such a stack puts beside it.
    """

    names: tuple[str, ...]
    index0: np.ndarray
    reduced_table: pd.DataFrame

    @property
    def bands(self) -> tuple[int, ...]:
        """1-based band numbers (``index0 + 1``): pass these to rasterio's ``read``."""
        return tuple(int(i) + 1 for i in self.index0)

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_table(
        cls,
        table: pd.DataFrame,
        groups: Sequence[str] | None = None,
        drop: Sequence[str] | None = None,
        *,
        source: str = "this stack",
    ) -> Selection:
        """The layers of ``groups`` minus those of ``drop``, from a layer table (columns ``layer, group, band``).

        Prefer :meth:`StackFile.select`; this is for a table held in memory (e.g. one passed to
        :func:`cryonet.importance.permutation_importance_tiles`).

        Args:
            table: Layer table, one row per band (``band`` 1-based).
            groups: Groups to keep (default: every group of the table); must not be empty.
            drop: Groups to leave out.
            source: What to call the stack in error messages.

        Raises:
            StackFileError: ``groups`` is empty, or a group of ``groups`` or ``drop`` is not in the table.
        """
        if groups is not None and len(groups) == 0:
            raise StackFileError(f"{source}: no layer group requested; name at least one of {_groups_of(table)}")
        known = set(table["group"])
        for name, gs in (("groups", groups), ("drop", drop)):
            unknown = sorted(set(gs or ()) - known)
            if unknown:
                raise StackFileError(
                    f"{source}: {name}: group(s) {unknown} not in this stack; it has {_groups_of(table)}"
                )
        keep = table["group"].isin(groups) if groups is not None else pd.Series(True, index=table.index)
        if drop:
            keep &= ~table["group"].isin(drop)
        rows = table.loc[keep]
        reduced = rows.reset_index(drop=True).copy()
        reduced["band"] = np.arange(1, len(reduced) + 1)
        return cls(tuple(str(n) for n in rows["layer"]), rows["band"].to_numpy(dtype=np.int64) - 1, reduced)


def _groups_of(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["group"]))


class StackFile:
    """A feature stack on disk: the GeoTIFF, its layer table and its PCA transform.

    Args:
        path: The stack raster (``STACK.tif``, or a VRT over one).

    Example:
        >>> stack = StackFile("poiqu.tif")  # doctest: +SKIP
        >>> sel = stack.select(groups=["s2"])  # doctest: +SKIP
        >>> x = src.read(list(sel.bands))  # rasterio, 1-based  # doctest: +SKIP
        >>> x = array[sel.index0]  # numpy, 0-based  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    def __repr__(self) -> str:
        return f"StackFile({str(self._path)!r})"

    @staticmethod
    def sidecar_paths(path: str | os.PathLike[str]) -> Sidecars:
        """``(STACK.layers.csv, STACK.pca.json)`` beside ``STACK.tif`` (for writers; the files may not exist yet)."""
        p = Path(path)
        return Sidecars(p.with_suffix(".layers.csv"), p.with_suffix(".pca.json"))

    @property
    def path(self) -> Path:
        """The stack raster."""
        return self._path

    @property
    def layers_csv(self) -> Path:
        """The layer table's path (``STACK.layers.csv``), whether or not it exists."""
        return self.sidecar_paths(self._path).layers_csv

    @property
    def pca_path(self) -> Path | None:
        """The PCA transform beside the stack (``STACK.pca.json``), or None when there is none."""
        pca = self.sidecar_paths(self._path).pca_json
        return pca if pca.is_file() else None

    def _bands(self) -> tuple[int, list[str | None]]:
        """Band count and band descriptions of the raster (:class:`~cryonet.raster.RasterError` if unreadable)."""
        with open_raster(self._path) as src:
            return src.count, list(src.descriptions)

    @property
    def layers(self) -> list[str]:
        """Layer names in band order: the band descriptions, or, where those are incomplete, the layer table's.

        Raises:
            StackFileError: Neither does every band carry a unique description nor is there a layer table with one
                row per band.
        """
        count, names = self._bands()
        if all(names) and len(set(names)) == count:
            return [str(n) for n in names]
        side = self.layers_csv
        if side.is_file():
            table = self._read_table()
            if len(table) == count:
                return [str(n) for n in table["layer"]]
        raise StackFileError(
            f"{self._path}: expected one unique band description (layer name) per band, found {names}, and no layer "
            f"table {side.name} with {count} rows. {REBUILD}"
        )

    def _read_table(self) -> pd.DataFrame:
        side = self.layers_csv
        if not side.is_file():
            raise StackFileError(f"{side}: layer table not found beside {self._path.name}. {REBUILD}")
        table = pd.read_csv(side, keep_default_na=False)
        if list(table.columns) != list(TABLE_COLUMNS):
            raise StackFileError(
                f"{side}: expected columns {list(TABLE_COLUMNS)}, found {list(table.columns)}. {REBUILD}"
            )
        return table

    @property
    def table(self) -> pd.DataFrame:
        """The layer table ``STACK.layers.csv``, checked against the raster.

        Returns:
            DataFrame with columns ``layer, group, units, source, band`` (``band`` 1-based), one row per band.

        Raises:
            StackFileError: The table is missing or malformed, its row count differs from the raster's band count,
                its ``band`` column is not ``1..n``, or its layer names differ from the raster's band descriptions
                (the two files come from different builds).
        """
        table = self._read_table()
        count, desc = self._bands()
        side = self.layers_csv
        if len(table) != count:
            raise StackFileError(
                f"{side}: {len(table)} layers but {self._path.name} has {count} bands; the two files are from "
                f"different builds. {REBUILD}"
            )
        if list(table["band"]) != list(range(1, count + 1)):
            raise StackFileError(f"{side}: column 'band' must be 1..{count} in order, found {list(table['band'])}")
        if any(desc) and desc != list(table["layer"]):
            raise StackFileError(
                f"{side} lists layers {list(table['layer'])} but {self._path.name} has bands {desc}; the two files "
                f"are from different builds. {REBUILD}"
            )
        return table

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> its layer names, groups in stack order (from :attr:`table`)."""
        table = self.table
        out: dict[str, list[str]] = {}
        for layer, group in zip(table["layer"], table["group"], strict=True):
            out.setdefault(str(group), []).append(str(layer))
        return out

    def select(self, groups: Sequence[str] | None = None, drop: Sequence[str] | None = None) -> Selection:
        """The layers of ``groups`` (default: all) minus those of ``drop``, in band order.

        Raises:
            StackFileError: The table is missing or does not fit the raster (see :attr:`table`), ``groups`` is
                empty, or a named group is not in this stack.
        """
        return Selection.from_table(self.table, groups, drop, source=str(self._path))

    def without(self, groups: Sequence[str]) -> Selection:
        """Every layer except those of ``groups`` (``select(drop=groups)``): the layers of a reduced stack."""
        return self.select(drop=groups)


__all__ = ["REBUILD", "TABLE_COLUMNS", "Selection", "Sidecars", "StackFile", "StackFileError"]
