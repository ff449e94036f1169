"""One rule for reusing cached work: a key of settings and input contents, recorded beside the artefact.

Every cached artefact of the library goes through it: a training run of the chapters
(:func:`cryonet.train.train_or_reuse`), a feature stack (:func:`cryonet.features.stack.build_stack`), a fine-tuning
run and its prediction (:func:`cryonet.transfer.fewshot_finetune`) and a group of the drop-group ablation
(:func:`cryonet.importance.drop_group_ablation`). The caller says what the work depends on::

    k = reuse.key({"model": "unet", "profile": prof.to_dict()}, {"stack": stack, "labels": labels}, known=out)
    state = reuse.status(out, k)     # "absent" | "reuse" | "resume" | "stale: <what changed>"
    reuse.record(out, k, complete=False)   # before the work (an interruption then resumes)
    ...                                    # the work
    reuse.record(out, k)                   # after it

* **The key** is the settings (plain JSON values) and the sha256 of each input file's *content*. A file that is
  touched or copied without a change of content keeps its key; a file whose content changes, whatever its
  modification time, does not.
* **Digests are cached** by the file's identity (resolved path, size, modification and status-change times in
  nanoseconds, inode): in the process (a 100 MB stack is read once, not on every call), and across processes by the
  record itself (``known=``: an input whose identity equals the one recorded beside the artefact takes the recorded
  digest). The status-change time (``st_ctime_ns``) is set by the kernel on every write and on every change of the
  modification time, so a rewritten file never matches a cached identity. A file changed less than
  :data:`SETTLE_SECONDS` before it was hashed is not cached (it could still change within the same clock tick).
* **The record** ``<artefact>.reuse.json`` lies beside the artefact (a file or a directory): the key, the input
  identities and ``complete``. :func:`status` compares the settings and the digests: an unchanged key of a complete
  record is ``"reuse"``, of an incomplete one (the work was interrupted) ``"resume"``; a changed setting or input,
  a missing or unreadable record beside an existing artefact is ``"stale: <reason>"``, the reason naming what
  changed; no artefact at all is ``"absent"``.

The rule sits low in the package (it needs only :func:`cryonet.raster.atomic_path`) so that the feature stack can
use it as well as the training runs and the analyses above them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cryonet.raster import atomic_path

#: Format tag of a reuse record.
RECORD_FORMAT: Final[str] = "cryonet-reuse/1"
#: Suffix of the record beside an artefact: ``stack.tif`` -> ``stack.tif.reuse.json``, ``RUN/`` -> ``RUN.reuse.json``.
RECORD_SUFFIX: Final[str] = ".reuse.json"
#: A file changed less than this many seconds before it was hashed is not cached (racy clock tick).
SETTLE_SECONDS: Final[float] = 2.0
#: Status of an artefact (``"stale: <reason>"`` too).
ABSENT, REUSE, RESUME, STALE = "absent", "reuse", "resume", "stale"

_MEMO: dict[tuple[Any, ...], str] = {}


# --------------------------------------------------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------------------------------------------------
def _identity(path: Path) -> list[Any]:
    """``[resolved path, size, mtime_ns, ctime_ns, inode]``: changes whenever the file may have changed."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _settled(identity: list[Any]) -> bool:
    """The file's last change is old enough for its identity to stand for its content."""
    return time.time_ns() - int(identity[3]) > SETTLE_SECONDS * 1e9


def digest(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's content, cached in the process by the file's identity (see the module docstring)."""
    return _digest(Path(path))[0]


def _digest(path: Path, recorded: Mapping[str, Any] | None = None) -> tuple[str, list[Any] | None]:
    """``(sha256, identity or None)``; the identity is None when the file changed too recently to be cached."""
    ident = _identity(path)
    memo = _MEMO.get(tuple(ident))
    if memo is not None:
        return memo, ident
    if recorded is not None and recorded.get("identity") == ident:
        sha = str(recorded["sha256"])
    else:
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
    if not _settled(ident):
        return sha, None
    _MEMO[tuple(ident)] = sha
    return sha, ident


# --------------------------------------------------------------------------------------------------------------------
# key, status, record
# --------------------------------------------------------------------------------------------------------------------
def record_path(artefact: str | os.PathLike[str]) -> Path:
    """Where the record of ``artefact`` lies: ``<artefact>.reuse.json`` beside it."""
    path = Path(os.path.abspath(artefact))
    return path.with_name(path.name + RECORD_SUFFIX)


def _plain(obj: Any) -> Any:
    """JSON values only, as they read back from the record (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(obj, default=str))


def _read_record(artefact: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = record_path(artefact)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == RECORD_FORMAT else None


def key(
    settings: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike[str]],
    *,
    known: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The reuse key of some work: its settings and the content digests of its input files.

    Args:
        settings: What the work depends on besides the inputs' contents (profile, model, parameters); stored as
            plain JSON values (tuples become lists, paths strings).
        inputs: Name -> input file. A file's path does not enter the key, its content does.
        known: The artefact whose record may vouch for an input's digest (same identity as recorded, see the module
            docstring), so that an unchanged large input is not read again in a new process.

    Returns:
        ``{"settings": ..., "inputs": {name: {"sha256": ..., "path": ..., "identity": ...}}}``.

    Raises:
        FileNotFoundError: an input does not exist.
    """
    old = (_read_record(known) or {}).get("inputs", {}) if known is not None else {}
    files = {}
    for name, p in inputs.items():
        sha, ident = _digest(Path(p), old.get(name) if isinstance(old, dict) else None)
        files[str(name)] = {"sha256": sha, "path": str(Path(p).resolve()), "identity": ident}
    return {"settings": _plain(dict(settings)), "inputs": files}


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _changed_settings(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ, with the recorded and the wanted value."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{name} (not recorded)")
            elif k not in new:
                out.append(f"{name} (no longer set)")
            else:
                out += _changed_settings(old[k], new[k], name)
        return out
    return [] if old == new else [f"{prefix or 'settings'}: {_short(old)} -> {_short(new)}"]


def _changed_inputs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"{name} (not recorded)")
        elif name not in new:
            out.append(f"{name} (no longer an input)")
        elif old[name].get("sha256") != new[name]["sha256"]:
            out.append(f"{name} (content of {new[name]['path']} differs)")
    return out


def _listed(items: list[str], most: int = 4) -> str:
    more = f", and {len(items) - most} more" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def _exists(artefact: Path) -> bool:
    """A file, or a directory with something in it."""
    return artefact.is_file() or (artefact.is_dir() and any(artefact.iterdir()))


def status(artefact: str | os.PathLike[str], k: Mapping[str, Any]) -> str:
    """Whether ``artefact`` (a file or a directory) can be reused with key ``k``.

    Returns:
        ``"absent"`` (nothing there), ``"reuse"`` (complete, same key), ``"resume"`` (interrupted, same key) or
        ``"stale: <reason>"`` (another key, or no readable record), the reason naming the settings and inputs that
        changed.
    """
    path = Path(artefact)
    if not _exists(path):
        return ABSENT
    rec = _read_record(path)
    if rec is None:
        what = "unreadable" if record_path(path).is_file() else "missing"
        return f"{STALE}: its reuse record {record_path(path).name} is {what}"
    reasons = []
    settings = _changed_settings(rec.get("settings"), k["settings"])
    if settings:
        reasons.append(f"settings changed ({_listed(settings)})")
    inputs = _changed_inputs(rec.get("inputs") or {}, k["inputs"])
    if inputs:
        reasons.append(f"inputs changed ({_listed(inputs)})")
    if reasons:
        return f"{STALE}: " + "; ".join(reasons)
    return REUSE if rec.get("complete") else RESUME


def record(artefact: str | os.PathLike[str], k: Mapping[str, Any], *, complete: bool = True) -> Path:
    """Write the record of ``artefact`` with key ``k`` (atomically); ``complete=False`` before the work starts.

    Returns:
        The record's path.
    """
    doc = {"format": RECORD_FORMAT, "complete": bool(complete), **k}
    path = record_path(artefact)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return path
