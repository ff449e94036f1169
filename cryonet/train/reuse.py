"""Reuse of training runs: :func:`train_or_reuse`, the one reuse rule (:mod:`cryonet.reuse`) applied to a run."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cryonet.reuse import ABSENT, RESUME, REUSE, STALE, key, record, status
from cryonet.train.checkpoints import CheckpointError
from cryonet.train.loop import TrainResult, train

logger = logging.getLogger(__name__)


def train_or_reuse(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str,
    profile: Any,
    device: str = "auto",
    retrain: bool = False,
    progress: bool = False,
) -> tuple[TrainResult, str]:
    """Train one model with a given profile, reusing or resuming a run of the same key.

    The book's chapters are re-run often; retraining a finished model each time would waste the CPU budget. The key
    of a run is its model, its profile (every field, seed included) and the contents of the stack and the labels. A
    run in ``out_dir`` with the same key is **reused** when it finished and **resumed** when it was interrupted
    (:func:`cryonet.train.train` with ``resume=True``, which continues bit-for-bit). Otherwise (another key, no
    record, an unreadable checkpoint), or with ``retrain=True``, a fresh run is trained into ``out_dir`` (its files
    are overwritten).

    Args:
        stack_path: Feature stack.
        labels_path: Label raster.
        out_dir: Run directory of this model (its record: ``<out_dir>.reuse.json``).
        model: Model name (:data:`cryonet.models.MODEL_NAMES`).
        profile: A :class:`cryonet.config.Profile` (e.g. ``get_profile("ci").replace(seed=0)``).
        device: Torch device or ``"auto"``.
        retrain: Always train afresh.
        progress: tqdm bars.

    Returns:
        ``(result, status)``: the :class:`cryonet.train.TrainResult` and ``"reused"``, ``"resumed"`` or
        ``"trained"``.
    """
    out = Path(out_dir)
    wanted = json.loads(json.dumps(profile.to_dict()))  # plain JSON values, as the checkpoint holds them
    k = key({"model": model, "profile": wanted}, {"stack": stack_path, "labels": labels_path}, known=out)
    state = ABSENT if retrain else status(out, k)
    t0 = time.perf_counter()
    result = None
    if state in (REUSE, RESUME):
        done = "reused" if state == REUSE and (out / "last.pt").is_file() else "resumed"
        logger.info("%s: same model, profile and inputs: %s", out, done)
        try:
            result = train(
                stack_path, labels_path, out, model=model, profile=wanted, resume=True, device=device,
                progress=progress,
            )  # fmt: skip
        except CheckpointError as exc:
            logger.warning("%s: %s; training afresh", out, exc)
    elif state != ABSENT:
        logger.info("%s: %s; training afresh", out, state.removeprefix(f"{STALE}: "))
    if result is None:
        done = "trained"
        record(out, k, complete=False)
        result = train(stack_path, labels_path, out, model=model, profile=profile, device=device, progress=progress)
    record(out, k, complete=result.finished)
    logger.info("%s %s in %.0f s", model, done, time.perf_counter() - t0)
    return result, done
