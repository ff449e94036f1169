"""The plain files of a run directory: JSON written atomically, the epoch history, the sha256 of a file."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from cryonet.raster import atomic_path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    _write_json(run_dir / "history.json", history)
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_path(run_dir / "history.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow(row)


def _normalizer_source(run_dir: Path, resumed: bool, given: bool) -> str:
    """Where the run's normalisation statistics came from (kept from ``run.json`` when resuming)."""
    if resumed and (run_dir / "run.json").is_file():
        return str(json.loads((run_dir / "run.json").read_text()).get("normalizer_source", "stored"))
    return "given" if given else "fitted on the training tiles"
