"""Checkpoints: saving and reading them (``weights_only``), the RNG state they carry, and loading a trained model.

A checkpoint holds only tensors and plain containers, so that ``torch.load(..., weights_only=True)`` reads it (no
pickled classes): model, optimiser, scheduler, scaler, epoch, best score, early-stopping counter, history, profile
(dict), model and encoder names, layer names, normalisation statistics, split reference and the RNG states.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryonet.constants import CLASSES
from cryonet.datasets import Normalizer
from cryonet.errors import CryonetError
from cryonet.raster import atomic_path

#: Version tag stored in every checkpoint.
CHECKPOINT_FORMAT: str = "cryonet-checkpoint/1"


class CheckpointError(CryonetError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a cryonet checkpoint; the message names the file."""


def _full_res_head(profile: Any) -> bool:
    """Whether a saved profile (dict) trained its model with the full-resolution head (absent: older run, no)."""
    return bool(profile.get("full_res_head", False)) if isinstance(profile, Mapping) else False


def _profile_dict(profile: Any) -> dict[str, Any]:
    d = profile.to_dict()
    return json.loads(json.dumps(d))  # plain JSON types only (checkpoint is weights_only-loadable)


# --------------------------------------------------------------------------------------------------------------------
# RNG state <-> tensors (weights_only-loadable)
# --------------------------------------------------------------------------------------------------------------------
def _rng_state(sampler_gen: torch.Generator) -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "sampler": sampler_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], sampler_gen: torch.Generator) -> None:
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    sampler_gen.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    # warn_only: a few CUDA kernels (e.g. upsampling backward) have no deterministic version; CPU is deterministic
    torch.use_deterministic_algorithms(True, warn_only=True)


# --------------------------------------------------------------------------------------------------------------------
# checkpoint files
# --------------------------------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (``torch.save`` into a temporary file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def checkpoint_path(run_or_ckpt: str | os.PathLike[str]) -> Path:
    """The checkpoint a path stands for: a file as is; a run directory's ``best.pt``, else its ``last.pt``."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: A ``.pt`` file written by :func:`cryonet.train.train`, or a run directory (its ``best.pt``, else
            ``last.pt``).
        map_location: Where tensors are loaded.

    Returns:
        The checkpoint dict (keys ``format, model, encoder, model_state, optimizer_state, ..., layers,
        normalizer, profile, history, rng``).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, holds pickled objects other than tensors and
            plain containers, or is not a cryonet checkpoint.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Train first (`cryonet train ... --out RUN/`).")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True): it holds objects other than tensors and plain "
            f"containers, so it is not a cryonet checkpoint (or was saved by other code). Detail: {exc}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is truncated or corrupt (e.g. a copy that did not "
            f"finish). Re-copy it, or resume/retrain to rewrite it. Detail: {exc}"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a cryonet checkpoint (expected a dict with format {CHECKPOINT_FORMAT!r}, found {found!r})."
        )
    return ckpt


def load_model(
    run_or_ckpt: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Normalizer, dict[str, Any]]:
    """The trained model (eval mode), its normalisation statistics and metadata, for inference.

    Args:
        run_or_ckpt: A run directory (uses ``best.pt``, else ``last.pt``) or a checkpoint file.
        device: Where the model is placed.

    Returns:
        ``(model, normalizer, meta)``; ``meta`` has ``model, encoder, layers, classes, epoch, best_score, profile,
        checkpoint``.
    """
    from cryonet import models

    path = checkpoint_path(run_or_ckpt)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = models.create(
        ckpt["model"],
        in_channels=len(ckpt["layers"]),
        classes=len(CLASSES),
        encoder=ckpt["encoder"],
        full_res_head=_full_res_head(ckpt.get("profile")),
    )
    model.load_state_dict(ckpt["model_state"])
    model.to(device).eval()
    norm = Normalizer.from_dict(ckpt["normalizer"])
    meta = {
        "model": ckpt["model"],
        "encoder": ckpt["encoder"],
        "layers": list(ckpt["layers"]),
        "classes": list(CLASSES),
        "epoch": int(ckpt["epoch"]),
        "best_score": float(ckpt["best_score"]),
        "profile": ckpt["profile"],
        "checkpoint": str(path),
    }
    return model, norm, meta


def _load_init_weights(
    init_checkpoint: str | os.PathLike[str], model: str, encoder: str, layers: list[str], full_res_head: bool
) -> tuple[dict[str, torch.Tensor], Path]:
    """Model weights of a source run to start from; its model, encoder, head and layers must equal this run's."""
    path = checkpoint_path(init_checkpoint)
    src = load_checkpoint(path)
    what = ("model", "encoder", "full_res_head", "layers")
    found = (src["model"], src["encoder"], _full_res_head(src.get("profile")), list(src["layers"]))
    wanted = (model, encoder, bool(full_res_head), list(layers))
    if found != wanted:
        diffs = [
            f"{w}: checkpoint {a!r}, this run {b!r}" for w, a, b in zip(what, found, wanted, strict=True) if a != b
        ]
        raise ValueError(
            f"{path}: cannot initialise from this checkpoint; the architecture or the input layers differ "
            f"({'; '.join(diffs)}). Fine-tune with the source run's model and encoder on a stack built with the "
            "same layers (build_stack(..., like=SOURCE_STACK))."
        )
    return src["model_state"], path
