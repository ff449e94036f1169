"""Training loop, checkpoints, resume and distributed data parallel (DDP) for CryoNet and the baselines.

One call, :func:`train`, turns a feature stack and a label raster into a run directory::

    RUN/
      run.json            what was trained: model, encoder, profile, stack/labels paths, layers, split sha256
      split.json          the spatially blocked split (tile windows per split, blocks, parameters)
      split.gpkg          tile polygons with a ``split`` column (stack CRS), for maps
      normalizer.json     per-layer mean/std from the training tiles (reused at inference and transfer)
      last.pt             checkpoint after the latest epoch (everything needed to resume)
      best.pt             checkpoint of the epoch with the best validation mean glacier IoU
      history.csv/.json   one row per epoch: losses, learning rate, validation metrics, seconds
      metrics_test.json   written by :func:`evaluate`
      cm_tiles_test.npy   per-tile confusion matrices (T, C, C), written by :func:`evaluate`

Every file is written atomically. The recipe:

* **Optimiser** AdamW (``profile.lr``, ``profile.weight_decay``); **schedule** per ``profile.scheduler``, stepped
  once per batch: ``onecycle`` (torch ``OneCycleLR``: warm-up over the first 10 % of the steps to ``lr``, then
  cosine annealing), ``cosine`` (linear warm-up over 10 %, cosine decay to 0) or ``none``. Its length is fixed by
  ``profile.epochs`` so that early stopping does not change the schedule of the epochs that run (and resuming
  with another number of epochs is refused). The parameters of the full-resolution head
  (:class:`cryonet.models.FullResolutionHead`, ``profile.full_res_head``) form a second group whose rate is
  ``profile.head_lr_scale`` times the model's at every step of the schedule.
* **Data** tiles of ``profile.tile_size`` px every ``profile.tile_stride`` px (tiles with a larger nodata share
  than ``profile.max_nodata_fraction`` skipped), the blocked split of ``profile.split``, at most
  ``profile.max_train_tiles`` training tiles (seeded subset), normalisation fitted on the training tiles,
  flips/rotations with consistent aspect layers (:class:`cryonet.datasets.Augmenter`, mode ``profile.augment``).
* **Fine-tuning** (transfer, :mod:`cryonet.transfer`): ``init_checkpoint=`` starts from a source run's weights
  (same model, encoder and layers), ``normalizer=`` reuses given statistics instead of fitting them,
  ``tile_split=`` uses a given split (e.g. a small labelled block of the target region) instead of making one.
  Resume works as for any run: ``last.pt`` holds the weights, ``split.json`` and ``normalizer.json`` the stored
  data choices.
* **Loss** cross-entropy with class weights = frequency ** -``profile.class_weight_power`` from the training tiles
  (:func:`cryonet.datasets.class_weights`), ``ignore_index=255``, plus ``profile.dice_weight`` times smp's
  multiclass Dice loss (``ignore_index=255``).
* **Sampling** a weighted sampler that draws tiles with rare classes (lakes) more often
  (:func:`cryonet.datasets.tile_sampling_weights`; ``profile.weighted_sampler``), else a seeded shuffle.
* **Mixed precision** (``torch.autocast`` float16 + ``GradScaler``) on CUDA only when ``profile.amp``; CPU and MPS
  train in float32.
* **Early stopping** on the validation mean IoU of the glacier classes (clean ice, debris, lake; classes absent
  from both reference and prediction are left out of the mean) after ``profile.early_stopping_patience`` epochs
  without improvement.
* **Determinism** seeds for Python, NumPy, torch and the sampler's generator; ``torch.use_deterministic_algorithms``
  (warn-only; the previous setting is restored when :func:`train` returns); augmentation drawn per
  (seed, epoch, tile). :func:`train` reseeds the global Python, NumPy and torch generators. On CPU the same seed
  gives the same metrics, and a run resumed from ``last.pt`` ends with the same metrics and weights as an
  uninterrupted one.
* **Checkpoints** hold only tensors and plain containers, so that ``torch.load(..., weights_only=True)`` reads
  them (no pickled classes): model, optimiser, scheduler, scaler, epoch, best score, early-stopping counter,
  history, profile (dict), model and encoder names, layer names, normalisation statistics, split reference and the
  RNG states.
* **DDP** under ``torchrun``: when ``WORLD_SIZE > 1`` the process group is initialised (gloo on CPU, nccl on
  CUDA), each rank trains on its share of the sampled tiles, gradients are averaged by
  ``DistributedDataParallel``, validation confusion matrices and losses are summed over ranks, and only rank 0
  writes files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import pickle
import random
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import (
    Augmenter,
    Normalizer,
    Split,
    TileDataset,
    class_weights,
    layer_names,
    make_split,
    scan_tiles,
    tile_sampling_weights,
)
from cryonet.raster import Grid, atomic_path

logger = logging.getLogger(__name__)

#: Version tag stored in every checkpoint.
CHECKPOINT_FORMAT: str = "cryonet-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a cryonet checkpoint; the message names the file."""


class _StopTraining(Exception):
    """Raised internally to stop after a given epoch (``stop_after``), as if the job had been killed."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run directory.
        model: Model name.
        encoder: Encoder name.
        best_score: Best validation mean glacier IoU (0-1).
        best_epoch: Epoch (1-based) of the best score.
        best_metrics: Validation metrics of the best epoch.
        history: One dict per epoch.
        epochs_run: Epochs completed so far (all runs of this directory).
        finished: True when training ended (all epochs or early stop), False when stopped by ``stop_after``.
        stopped_early: True when early stopping ended training.
    """

    run_dir: Path
    model: str
    encoder: str
    best_score: float
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    epochs_run: int
    finished: bool
    stopped_early: bool = False
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def final_metrics(self) -> dict[str, Any]:
        """Metrics of the last epoch run."""
        return self.history[-1] if self.history else {}


# --------------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------------
def resolve_profile(profile: Any = "ci", **overrides: Any) -> Any:
    """A :class:`cryonet.config.Profile` from a name, a dict or a profile, with ``overrides`` applied.

    An override that is None counts as not given (callers pass optional arguments through): to set a field to
    None, e.g. ``early_stopping_patience=None`` (no early stopping), pass ``profile.replace(...)`` instead.
    """
    from cryonet import config

    if isinstance(profile, str):
        prof = config.get_profile(profile)
    elif isinstance(profile, dict):
        prof = config.Profile.from_dict(profile)
    else:
        prof = profile
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return prof.replace(**overrides) if overrides else prof


def _full_res_head(profile: Any) -> bool:
    """Whether a saved profile (dict) trained its model with the full-resolution head (absent: older run, no)."""
    return bool(profile.get("full_res_head", False)) if isinstance(profile, Mapping) else False


def _profile_dict(profile: Any) -> dict[str, Any]:
    d = profile.to_dict()
    return json.loads(json.dumps(d))  # plain JSON types only (checkpoint is weights_only-loadable)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
# checkpoints
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
        path: A ``.pt`` file written by :func:`train`, or a run directory (its ``best.pt``, else ``last.pt``).
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


# --------------------------------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> tuple[_Dist, bool]:
    """Initialise the process group under torchrun; returns (dist info, whether we initialised it)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), False
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(rank, world, local), False
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    logger.info("DDP: rank %d of %d (%s)", rank, world, backend)
    return _Dist(rank, world, local), True


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Seeded tile order for one epoch: weighted draws with replacement or a permutation, sharded over ranks.

    The generator is persistent (its state is saved in checkpoints); every rank draws the same full order and
    takes every ``world``-th index, padded by wrapping so that all ranks run the same number of steps.
    """

    def __init__(self, n: int, weights: np.ndarray | None, generator: torch.Generator, dist_: _Dist) -> None:
        self.n = n
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.generator = generator
        self.dist = dist_
        self.per_rank = math.ceil(n / dist_.world)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator).tolist()
        else:
            order = torch.randperm(self.n, generator=self.generator).tolist()
        total = self.per_rank * self.dist.world
        order = (order * math.ceil(total / max(len(order), 1)))[:total]
        return iter(order[self.dist.rank :: self.dist.world])


# --------------------------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------------------------
def _confusion(pred: torch.Tensor, target: torch.Tensor, n: int) -> torch.Tensor:
    """Confusion matrix ``cm[true, pred]`` of one batch on the device, ignoring label 255."""
    valid = target != LABEL_NODATA
    idx = target[valid] * n + pred[valid]
    return torch.bincount(idx, minlength=n * n).reshape(n, n)


def _summary(cm: np.ndarray) -> dict[str, Any]:
    """Validation metrics (:func:`cryonet.metrics.summary`; ``miou_glacier`` is the early-stopping score)."""
    from cryonet import metrics

    return {k: (int(v) if k == "n_pixels" else float(v)) for k, v in metrics.summary(cm).items()}


def _make_scheduler(
    name: str, opt: torch.optim.Optimizer, lr: float, total: int, warmup: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step learning-rate schedule.

    ``onecycle`` (torch OneCycleLR, cosine), ``cosine`` (linear warm-up, cosine decay to 0), ``none`` (constant).
    """
    if name == "onecycle":
        # each parameter group peaks at its own rate (the head's group at lr x head_lr_scale, see _param_groups)
        peaks = [lr * float(g.get("lr_scale", 1.0)) for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peaks, total_steps=total, pct_start=warmup, anneal_strategy="cos"
        )
    if name == "cosine":
        n_warm = max(1, int(round(warmup * total)))

        def factor(step: int) -> float:
            if step < n_warm:
                return (step + 1) / n_warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - n_warm) / max(1, total - n_warm))))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    if name == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    raise ValueError(f"unknown scheduler {name!r}: expected onecycle, cosine or none")


def _param_groups(net: torch.nn.Module, lr: float, head_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW parameter groups.

    One for the model, and one at ``lr * head_lr_scale`` for the parameters of a
    :class:`cryonet.models.FullResolutionHead`'s refinement block (a single group when there is no head or the scale
    is 1, so that runs saved before the scale existed resume with the same optimiser state layout).
    """
    from cryonet.models import FullResolutionHead

    if not isinstance(net, FullResolutionHead) or float(head_lr_scale) == 1.0:
        return [{"params": list(net.parameters()), "lr": lr, "lr_scale": 1.0}]
    head = {id(p) for p in net.refine.parameters()}
    return [
        {"params": [p for p in net.parameters() if id(p) not in head], "lr": lr, "lr_scale": 1.0},
        {"params": list(net.refine.parameters()), "lr": lr * float(head_lr_scale), "lr_scale": float(head_lr_scale)},
    ]


def _prepare_data(
    stack_path: Path,
    labels_path: Path,
    prof: Any,
    d: _Dist,
    resume_split: Path | None,
    stored_norm: dict[str, Any] | None,
    progress: bool,
    given_split: Split | None = None,
) -> tuple[Split, Normalizer, list[str]]:
    layers = layer_names(stack_path)
    tile = int(prof.tile_size)
    if resume_split is not None:
        split = Split.load(resume_split)
    elif given_split is not None:
        split = given_split  # used as given: no tile cap, no new blocks
        sizes = {t.size for s in split.tiles.values() for t in s}
        if sizes - {tile}:
            raise ValueError(
                f"the given split has tiles of {sorted(sizes)} px but the profile's tile_size is {tile}; "
                "make the split with the profile's tile size."
            )
        if tuple(split.shape) != Grid.from_file(stack_path).shape:
            raise ValueError(
                f"the given split was made on a {tuple(split.shape)} raster, but {stack_path} has "
                f"shape {Grid.from_file(stack_path).shape}; make the split on this stack."
            )
    else:
        stride = int(prof.tile_stride)
        grid = Grid.from_file(stack_path)
        tiles = scan_tiles(
            stack_path,
            labels_path,
            tile,
            stride,
            max_nodata_fraction=float(prof.max_nodata_fraction),
            progress=progress and d.main,
        )
        sc = prof.split
        val_f, test_f = float(sc.val_fraction), float(sc.test_fraction)
        split = make_split(
            tiles,
            grid,
            block_size_m=float(sc.block_size_m),
            buffer_m=float(sc.buffer_m),
            fractions={"train": 1.0 - val_f - test_f, "val": val_f, "test": test_f},
            seed=int(prof.seed),
            extra_params={
                "tile_size": tile,
                "stride": int(stride),
                "max_nodata_fraction": float(prof.max_nodata_fraction),
                "stack": stack_path.name,
                "labels": labels_path.name,
            },
        )
        cap = prof.max_train_tiles
        if cap is not None and len(split.tiles["train"]) > cap:
            # a seeded random subset of the training tiles (profile.max_train_tiles); val/test stay complete
            rng = np.random.default_rng(int(prof.seed))
            keep = np.sort(rng.choice(len(split.tiles["train"]), size=int(cap), replace=False))
            split.params["train_tiles_before_cap"] = len(split.tiles["train"])
            split.params["max_train_tiles"] = int(cap)
            split.tiles["train"] = [split.tiles["train"][i] for i in keep]
    for s in ("train", "val"):
        if not split.get(s):
            raise ValueError(
                f"{stack_path}: the split has no {s} tiles ({split.summary()}); use a larger scene, smaller tiles "
                "or smaller blocks (profile.tile_size, block_size_m)."
            )
    if stored_norm is not None:
        norm = Normalizer.from_dict(stored_norm)
        norm.check_layers(layers, str(stack_path))
    else:
        norm = Normalizer.fit(
            stack_path, split.windows("train"), layers=layers, seed=int(prof.seed), progress=progress and d.main
        )
    return split, norm, layers


def _given_split(split: Split | str | os.PathLike[str] | None) -> Split | None:
    """A :class:`Split` from itself or the path of a ``split.json`` (or of a run directory holding one)."""
    if split is None or isinstance(split, Split):
        return split
    path = Path(split)
    return Split.load(path / "split.json" if path.is_dir() else path)


def _given_normalizer(normalizer: Normalizer | str | os.PathLike[str] | None) -> Normalizer | None:
    """A :class:`Normalizer` from itself, a ``normalizer.json``, a run directory or a checkpoint file."""
    if normalizer is None or isinstance(normalizer, Normalizer):
        return normalizer
    path = Path(normalizer)
    if path.is_dir() and (path / "normalizer.json").is_file():
        return Normalizer.load(path / "normalizer.json")
    if path.suffix == ".json":
        return Normalizer.load(path)
    return Normalizer.from_dict(load_checkpoint(path)["normalizer"])


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


def _normalizer_source(run_dir: Path, resumed: bool, given: bool) -> str:
    """Where the run's normalisation statistics came from (kept from ``run.json`` when resuming)."""
    if resumed and (run_dir / "run.json").is_file():
        return str(json.loads((run_dir / "run.json").read_text()).get("normalizer_source", "stored"))
    return "given" if given else "fitted on the training tiles"


def train(
    stack_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str = "cryonet",
    profile: Any = "ci",
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    init_checkpoint: str | os.PathLike[str] | None = None,
    normalizer: Normalizer | str | os.PathLike[str] | None = None,
    tile_split: Split | str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a model on a stack + labels; write the run directory (see module docstring).

    Args:
        stack_path: Feature stack (float32 GeoTIFF, band descriptions = layer names, NaN = nodata).
        labels_path: Label raster on the stack's grid (uint8, 0..3, 255 = nodata).
        out_dir: Run directory.
        model: One of :data:`cryonet.models.MODEL_NAMES`.
        profile: Profile name (``"ci"``, ``"paper"``), a :class:`cryonet.config.Profile` or its dict.
        resume: Continue from ``out_dir/last.pt`` (a fresh start if it does not exist). The stored profile, split
            and normalisation are used; overrides other than ``epochs`` are not allowed with resume.
        device: ``"auto"`` (CUDA, MPS, CPU), or a torch device string.
        progress: Show tqdm bars.
        stop_after: Stop (without marking the run finished) after this epoch (1-based), as if the job had been
            killed then; resume later with ``resume=True``.
        callback: Called as ``callback(epoch, row)`` after each epoch's checkpoint is written (rank 0).
        init_checkpoint: Start from the model weights of this checkpoint (a run directory: its ``best.pt``, else
            ``last.pt``), e.g. to fine-tune a source region's model on a target region. Its model, encoder and
            layer names must equal this run's (``ValueError`` otherwise). Only the weights are taken: optimiser,
            schedule and epoch counter start afresh. Ignored when resuming (``last.pt`` holds the weights).
        normalizer: Use these normalisation statistics (a :class:`~cryonet.datasets.Normalizer`, a
            ``normalizer.json``, a run directory or a checkpoint) instead of fitting them on the training tiles;
            e.g. the source run's statistics when fine-tuning on a target region. Written to the run's
            ``normalizer.json`` unchanged.
        tile_split: Use this split (a :class:`~cryonet.datasets.Split`, a ``split.json`` or a run directory)
            instead of making one from ``profile.split``; its tiles are used as given (no ``max_train_tiles``
            cap). Its tile size must equal ``profile.tile_size``; ``train`` and ``val`` must not be empty (``test``
            may be). (Named ``tile_split`` because ``split=`` is the profile override of the split geometry.)
        **overrides: Profile fields to replace (e.g. ``epochs=3, encoder="resnet18"``).

    Returns:
        A :class:`TrainResult` (also on rank 0 under DDP; other ranks return theirs with the same metrics).
    """
    from tqdm.auto import tqdm

    from cryonet import models

    stack_path, labels_path, run_dir = Path(stack_path), Path(labels_path), Path(out_dir)
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    d, own_group = _init_distributed(device)
    try:
        dev = (
            torch.device("cuda", d.local_rank)
            if d.enabled and torch.cuda.is_available() and device in ("auto", "cuda")
            else resolve_device(device)
        )
        ckpt: dict[str, Any] | None = None
        last = run_dir / "last.pt"
        if resume and last.is_file():
            ckpt = load_checkpoint(last)
            bad = {k for k in overrides if overrides[k] is not None and k != "epochs"}
            if bad:
                raise ValueError(f"resume uses the stored profile of {last}; cannot override {sorted(bad)}")
            prof = resolve_profile(ckpt["profile"], epochs=overrides.get("epochs"))
            if ckpt["model"] != model:
                logger.warning("resuming %s: stored model %s is used instead of %s", last, ckpt["model"], model)
            model = ckpt["model"]
        else:
            if resume:
                logger.info("%s not found: starting a fresh run", last)
            prof = resolve_profile(profile, **overrides)
        seed = int(prof.seed)
        encoder = models.resolve_encoder(model, getattr(prof, "encoder", None))
        _seed_everything(seed, dev)

        given_norm = _given_normalizer(normalizer) if ckpt is None else None
        split, norm, layers = _prepare_data(
            stack_path,
            labels_path,
            prof,
            d,
            run_dir / "split.json" if ckpt is not None else None,
            ckpt["normalizer"] if ckpt is not None else (given_norm.to_dict() if given_norm is not None else None),
            progress,
            given_split=_given_split(tile_split) if ckpt is None else None,
        )
        if ckpt is not None:
            init_ref = ckpt.get("init_checkpoint")  # a resumed run keeps its own weights (last.pt)
        else:
            init_ref = str(checkpoint_path(init_checkpoint)) if init_checkpoint is not None else None
        if d.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if ckpt is None:
                split.save(run_dir / "split.json")
                split.save_gpkg(run_dir / "split.gpkg")
                norm.save(run_dir / "normalizer.json")
            _write_json(
                run_dir / "run.json",
                {
                    "model": model,
                    "encoder": encoder,
                    "profile": _profile_dict(prof),
                    "stack": str(stack_path.resolve()),
                    "labels": str(labels_path.resolve()),
                    "layers": layers,
                    "split": "split.json",
                    "split_sha256": _sha256(run_dir / "split.json"),
                    "split_summary": split.summary(),
                    "device": str(dev),
                    "world_size": d.world,
                    "torch": torch.__version__,
                    "init_checkpoint": init_ref,
                    "normalizer_source": _normalizer_source(run_dir, ckpt is not None, given_norm is not None),
                },
            )

        weights = class_weights(split.class_counts("train"), power=float(prof.class_weight_power))
        augmenter = Augmenter(layers, mode=str(prof.augment))
        train_ds = TileDataset(stack_path, labels_path, split.get("train"), norm, augmenter, seed=seed)
        val_ds = TileDataset(stack_path, labels_path, split.get("val"), norm, None, seed=seed)
        sampler_gen = torch.Generator().manual_seed(seed)
        tile_w = tile_sampling_weights(split.get("train"), weights) if prof.weighted_sampler else None
        sampler = _EpochSampler(len(train_ds), tile_w, sampler_gen, d)
        bs = int(prof.batch_size)
        workers = int(prof.num_workers)
        train_dl = torch.utils.data.DataLoader(
            train_ds,
            batch_size=bs,
            sampler=sampler,
            num_workers=workers,
            drop_last=len(sampler) >= bs,
            pin_memory=dev.type == "cuda",
            persistent_workers=False,
        )
        val_idx = list(range(d.rank, len(val_ds), d.world))
        val_dl = torch.utils.data.DataLoader(
            torch.utils.data.Subset(val_ds, val_idx), batch_size=bs, shuffle=False, num_workers=workers
        )

        net = models.create(
            model,
            in_channels=len(layers),
            classes=len(CLASSES),
            encoder=encoder,
            full_res_head=bool(prof.full_res_head),
        )
        if ckpt is None and init_checkpoint is not None:
            init_state, init_path = _load_init_weights(
                init_checkpoint, model, encoder, layers, bool(prof.full_res_head)
            )
            net.load_state_dict(init_state)
            logger.info("initialised %s from %s", run_dir, init_path)
        net = net.to(dev)
        opt = torch.optim.AdamW(
            _param_groups(net, float(prof.lr), float(prof.head_lr_scale)),
            lr=float(prof.lr),
            weight_decay=float(prof.weight_decay),
        )
        epochs = int(prof.epochs)
        steps = max(1, len(train_dl))
        sched = _make_scheduler(str(prof.scheduler), opt, float(prof.lr), epochs * steps, float(prof.warmup_fraction))
        use_amp = dev.type == "cuda" and bool(prof.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        import segmentation_models_pytorch as smp

        ce = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(weights, device=dev), ignore_index=LABEL_NODATA)
        dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=LABEL_NODATA)
        dice_w = float(prof.dice_weight)

        start_epoch, best, best_epoch, bad_epochs = 0, -math.inf, 0, 0
        history: list[dict[str, Any]] = []
        finished = stopped_early = False
        if ckpt is not None:
            net.load_state_dict(ckpt["model_state"])
            opt.load_state_dict(ckpt["optimizer_state"])
            if int(ckpt["total_steps"]) != epochs * steps:
                raise ValueError(
                    f"{last}: the learning-rate schedule of this run was fixed at {ckpt['total_steps']} steps "
                    f"({ckpt['profile'].get('epochs')} epochs); resuming with {epochs} epochs would change it. "
                    "Resume without --epochs, or start a new run."
                )
            sched.load_state_dict(ckpt["scheduler_state"])
            scaler.load_state_dict(ckpt["scaler_state"])
            start_epoch, best, best_epoch = int(ckpt["epoch"]), float(ckpt["best_score"]), int(ckpt["best_epoch"])
            bad_epochs = int(ckpt["bad_epochs"])
            history = list(ckpt["history"])
            finished = bool(ckpt["finished"])
            stopped_early = bool(ckpt.get("stopped_early"))
            _set_rng_state(ckpt["rng"], sampler_gen)
            logger.info("resumed %s at epoch %d (best %.4f)", last, start_epoch, best)
        ddp_net: torch.nn.Module = net
        if d.enabled:
            ddp_net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[d.local_rank] if dev.type == "cuda" else None
            )
        patience = prof.early_stopping_patience  # None: no early stopping
        n_cls = len(CLASSES)
        logger.info(
            "training %s (encoder %s) on %s: %d epochs, %d train / %d val tiles",
            model,
            encoder,
            dev,
            epochs,
            len(train_ds),
            len(val_ds),
        )

        epoch = start_epoch
        while not finished and epoch < epochs:
            t0 = time.perf_counter()
            train_ds.set_epoch(epoch)
            ddp_net.train()
            loss_sum = torch.zeros(2, dtype=torch.float64, device=dev)  # (sum of batch losses, batches)
            bar = tqdm(
                train_dl,
                desc=f"epoch {epoch + 1}/{epochs} [{model}/{encoder}]",
                disable=not (progress and d.main),
                leave=False,
            )
            for x, y in bar:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                    logits = ddp_net(x)
                    loss = ce(logits.float(), y) + dice_w * dice(logits.float(), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                loss_sum += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=dev)])
                bar.set_postfix(loss=f"{loss.item():.4f}")
            _all_reduce(loss_sum, d)
            train_loss = float(loss_sum[0] / max(loss_sum[1].item(), 1))

            ddp_net.eval()
            cm = torch.zeros(n_cls, n_cls, dtype=torch.int64, device=dev)
            vloss = torch.zeros(2, dtype=torch.float64, device=dev)
            with torch.no_grad():
                for x, y in val_dl:
                    x, y = x.to(dev), y.to(dev)
                    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                        logits = net(x).float()
                    vl = ce(logits, y) + dice_w * dice(logits, y)
                    vloss += torch.stack([vl.double() * len(x), torch.tensor(len(x), dtype=torch.float64, device=dev)])
                    cm += _confusion(logits.argmax(1), y, n_cls)
            _all_reduce(cm, d)
            _all_reduce(vloss, d)
            cm_np = cm.cpu().numpy()
            val = _summary(cm_np)
            score = val["miou_glacier"]
            epoch += 1
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": float(vloss[0] / max(vloss[1].item(), 1)),
                "lr": float(sched.get_last_lr()[0]),
                "seconds": round(time.perf_counter() - t0, 3),
                "model": model,
                "encoder": encoder,
                **{f"val_{k}": v for k, v in val.items()},
                "val_confusion": cm_np.tolist(),
            }
            history.append(row)
            improved = not math.isnan(score) and score > best
            if improved:
                best, best_epoch, bad_epochs = score, epoch, 0
            else:
                bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                stopped_early = True
            finished = stopped_early or epoch >= epochs
            state = {
                "format": CHECKPOINT_FORMAT,
                "model": model,
                "encoder": encoder,
                "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer_state": opt.state_dict(),
                "scheduler_state": sched.state_dict(),
                "total_steps": epochs * steps,
                "scaler_state": scaler.state_dict(),
                "epoch": epoch,
                "best_score": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "finished": finished,
                "stopped_early": stopped_early,
                "history": history,
                "profile": _profile_dict(prof),
                "layers": layers,
                "normalizer": norm.to_dict(),
                "class_weights": weights.tolist(),
                "split": {"file": "split.json", "sha256": _sha256(run_dir / "split.json") if d.main else ""},
                "stack": str(stack_path.resolve()),
                "labels": str(labels_path.resolve()),
                "rng": _rng_state(sampler_gen),
                "world_size": d.world,
                "init_checkpoint": init_ref,
            }
            if d.main:
                save_checkpoint(last, state)
                if improved:
                    save_checkpoint(run_dir / "best.pt", state)
                _write_history(run_dir, history)
                if callback is not None:
                    callback(epoch, row)
            logger.info(
                "epoch %d: train loss %.4f, val mIoU(glacier) %.4f%s",
                epoch,
                train_loss,
                score,
                " (best)" if improved else "",
            )
            if stop_after is not None and epoch >= stop_after and not finished:
                break
        if d.main and not (run_dir / "best.pt").is_file() and last.is_file():
            save_checkpoint(run_dir / "best.pt", load_checkpoint(last))  # no epoch scored (NaN): keep the last
        best_row = next((r for r in history if r["epoch"] == best_epoch), history[-1] if history else {})
        return TrainResult(
            run_dir=run_dir,
            model=model,
            encoder=encoder,
            best_score=best,
            best_epoch=best_epoch,
            best_metrics=best_row,
            history=history,
            epochs_run=epoch,
            finished=finished,
            stopped_early=stopped_early,
            files={
                k: run_dir / v
                for k, v in {
                    "last": "last.pt",
                    "best": "best.pt",
                    "history": "history.csv",
                    "split": "split.json",
                    "normalizer": "normalizer.json",
                }.items()
            },
        )
    finally:
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
        if own_group:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------------------------
#: Summary metrics that :func:`evaluate` gives bootstrap intervals for (the same as
#: :func:`cryonet.baseline.evaluate_pixel_classifier`, so that the two results can stand side by side).
CI_METRICS: tuple[str, ...] = (
    "miou_glacier",
    "miou_all",
    "glacier_union_iou",
    "pixel_accuracy",
    "mean_f1_glacier",
    "mean_precision_glacier",
    "mean_recall_glacier",
)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) atomically."""
    # through a file handle: np.save given a name not ending in .npy (the temporary one) would append ".npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def evaluate(
    run_dir: str | os.PathLike[str],
    split: str = "test",
    *,
    stack_path: str | os.PathLike[str] | None = None,
    labels_path: str | os.PathLike[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Score the run's best model on one split; write ``RUN/metrics_<split>.json`` and ``RUN/cm_tiles_<split>.npy``.

    This is the one scorer of a trained run. One confusion matrix is made per tile of the split, in the order of
    ``split.json`` (label 255 and pixels with more than half their layers NaN ignored, as in training:
    :func:`cryonet.datasets.invalid_pixels`); the per-tile matrices are saved as ``cm_tiles_<split>.npy``
    ``(T, C, C)`` int64 and summed into one matrix, from which :func:`cryonet.metrics.summary` and
    :func:`cryonet.metrics.class_metrics` are computed. Percentile bootstrap intervals resample whole tiles with the
    run's seed: :func:`cryonet.metrics.bootstrap_ci` for the summary metrics of :data:`CI_METRICS` and
    :func:`cryonet.metrics.class_intervals` (same replicates) for the per-class scores. Overlapping tiles count
    their shared pixels once per tile. Both files are written atomically.

    The returned dict carries the keys of :func:`cryonet.baseline.evaluate_pixel_classifier`'s result, so it can go
    wherever that goes (:func:`cryonet.baseline.comparison_table`, :func:`cryonet.baseline.paired_difference` of
    two ``cm_tiles``).

    Args:
        run_dir: Run directory written by :func:`train`.
        split: ``"test"``, ``"val"`` or ``"train"``.
        stack_path: Feature stack (default: the one recorded in ``run.json``).
        labels_path: Label raster (default: the one recorded in ``run.json``).
        n_boot: Bootstrap replicates.
        alpha: Two-sided level of the intervals (0.05: 95 % intervals).
        device: ``"auto"`` or a torch device string.
        progress: Show a tqdm bar.

    Returns:
        Dict with ``model, encoder, checkpoint, epoch, split, n_tiles, stack, labels, summary`` (headline metrics),
        ``classes`` (:func:`cryonet.metrics.class_metrics` DataFrame: per-class iou/precision/recall/f1/support/
        predicted), ``class_ci`` (:func:`cryonet.metrics.class_intervals` DataFrame), ``confusion_matrix``
        ``(C, C)`` int64 array (rows = reference), ``cm_tiles`` ``(T, C, C)`` int64 array, ``tiles`` (the scored
        :class:`~cryonet.datasets.Tile` list, in the order of ``cm_tiles``), ``ci`` (metric -> estimate, low,
        high), ``ci_level``, ``n_boot``, ``seconds_predict`` (seconds in the model's forward pass), ``file`` (the
        JSON written) and ``cm_tiles_file`` (the ``.npy`` written). The JSON holds the same without ``cm_tiles``,
        ``tiles`` and ``seconds_predict``, with the tables as ``{class: {column: value}}``, the matrix as nested
        lists, NaN as null and ``cm_tiles_file`` as a name relative to the run directory.
    """
    from tqdm.auto import tqdm

    from cryonet import metrics

    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no run.json). Train with `cryonet train --out RUN/`.")
    info = json.loads(info_path.read_text())
    stack = Path(stack_path) if stack_path is not None else Path(info["stack"])
    labels = Path(labels_path) if labels_path is not None else Path(info["labels"])
    dev = resolve_device(device)
    model, norm, meta = load_model(run_dir, device=dev)
    sp = Split.load(run_dir / "split.json")
    tiles = sp.get(split)
    if not tiles:
        raise ValueError(f"{run_dir / 'split.json'}: split {split!r} has no tiles to evaluate.")
    ds = TileDataset(stack, labels, tiles, norm, None)
    prof = meta["profile"]
    seed = int(prof.get("seed", 0))
    dl = torch.utils.data.DataLoader(ds, batch_size=int(prof.get("batch_size", 8)), shuffle=False)
    n_cls = len(CLASSES)
    cms: list[np.ndarray] = []
    seconds = 0.0
    with torch.no_grad():
        for x, y in tqdm(
            dl, desc=f"evaluate {split} [{meta['model']}/{meta['encoder']}]", disable=not progress, leave=False
        ):
            t0 = time.perf_counter()
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                pred = model(x.to(dev)).float().argmax(1).cpu().numpy()
            seconds += time.perf_counter() - t0
            yn = y.numpy()
            cms += [metrics.confusion_matrix(yn[i], pred[i], num_classes=n_cls) for i in range(len(yn))]
    ds.close()
    cm_tiles = np.stack(cms).astype(np.int64, copy=False)
    cm = cm_tiles.sum(axis=0)
    summ = _summary(cm)
    table = metrics.class_metrics(cm)
    class_ci = metrics.class_intervals(cm_tiles, n_boot=n_boot, alpha=alpha, seed=seed)
    ci = {}
    for key in CI_METRICS:
        est, lo, hi = metrics.bootstrap_ci(
            cm_tiles, lambda m, k=key: metrics.summary(m)[k], n_boot=n_boot, alpha=alpha, seed=seed
        )
        ci[key] = {"estimate": est, "low": lo, "high": hi}
    npy_path = run_dir / f"cm_tiles_{split}.npy"
    out: dict[str, Any] = {
        "model": meta["model"],
        "encoder": meta["encoder"],
        "checkpoint": meta["checkpoint"],
        "epoch": meta["epoch"],
        "split": split,
        "n_tiles": len(tiles),
        "stack": str(stack),
        "labels": str(labels),
        "summary": summ,
        "classes": table.to_dict(orient="index"),
        "class_ci": class_ci.to_dict(orient="index"),
        "confusion_matrix": cm.tolist(),
        "class_names": list(CLASSES),
        "ci": ci,
        "ci_level": 1 - alpha,
        "n_boot": n_boot,
        "bootstrap_unit": "tile",
        "bootstrap_seed": seed,
        "cm_tiles_file": npy_path.name,
    }
    path = run_dir / f"metrics_{split}.json"
    _save_npy(npy_path, cm_tiles)  # first: the JSON names it
    _write_json(path, _nan_to_none(out))
    logger.info(
        "%s %s: mIoU(glacier) %.4f [%s/%s]", run_dir, split, summ["miou_glacier"], meta["model"], meta["encoder"]
    )
    return {
        **out,
        "classes": table,
        "class_ci": class_ci,
        "confusion_matrix": cm,
        "cm_tiles": cm_tiles,
        "tiles": list(tiles),
        "seconds_predict": seconds,
        "file": path,
        "cm_tiles_file": npy_path,
    }


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: undefined metrics are written as null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj
