"""The training loop: one :func:`train` call sets a run up, runs its epochs and writes its directory.

The protocol (optimiser, schedule, data, loss, sampling, early stopping, determinism, DDP) is described in
:mod:`cryonet.train`. Set-up happens once, in a fixed order that the random number generators depend on (seeding,
split and normalisation, datasets and the sampler's generator, model initialisation, optimiser; then, when
resuming, the stored states); each epoch trains, validates, updates the early-stopping counters and writes the
checkpoints and the history.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import Normalizer, Split
from cryonet.train.checkpoints import (
    CHECKPOINT_FORMAT,
    _load_init_weights,
    _profile_dict,
    _rng_state,
    _seed_everything,
    _set_rng_state,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from cryonet.train.data import _Data, _given_normalizer, _given_split, _make_loaders, _prepare_data
from cryonet.train.distributed import _all_reduce, _close_distributed, _device_for, _Dist, _init_distributed
from cryonet.train.optim import _make_scheduler, _param_groups
from cryonet.train.rundir import _normalizer_source, _sha256, _write_history, _write_json
from cryonet.train.scoring import _confusion, _summary

logger = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Fit:
    """The model and what trains it."""

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ce: torch.nn.Module
    dice: torch.nn.Module
    dice_w: float
    use_amp: bool
    epochs: int
    steps: int
    ddp_net: torch.nn.Module | None = None


@dataclass
class _Run:
    """Everything one :func:`train` call works with, set up before the first epoch."""

    run_dir: Path
    stack_path: Path
    labels_path: Path
    model: str
    encoder: str
    prof: Any
    dev: torch.device
    d: _Dist
    init_ref: str | None
    data: _Data
    fit: _Fit

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"


@dataclass
class _Progress:
    """Where training stands: epochs done, best score, early-stopping counter, history."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False


def _choose_profile(
    last: Path, resume: bool, model: str, profile: Any, overrides: dict[str, Any]
) -> tuple[dict[str, Any] | None, Any, str]:
    """``(checkpoint to resume or None, profile, model)``: the stored ones when resuming from ``last``."""
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        bad = {k for k in overrides if overrides[k] is not None and k != "epochs"}
        if bad:
            raise ValueError(f"resume uses the stored profile of {last}; cannot override {sorted(bad)}")
        prof = resolve_profile(ckpt["profile"], epochs=overrides.get("epochs"))
        if ckpt["model"] != model:
            logger.warning("resuming %s: stored model %s is used instead of %s", last, ckpt["model"], model)
        return ckpt, prof, ckpt["model"]
    if resume:
        logger.info("%s not found: starting a fresh run", last)
    return None, resolve_profile(profile, **overrides), model


def _write_run_files(
    run_dir: Path,
    info: dict[str, Any],
    split: Split,
    norm: Normalizer,
    *,
    fresh: bool,
    given_norm: bool,
) -> None:
    """``split.json``, ``split.gpkg`` and ``normalizer.json`` of a fresh run, and ``run.json`` (rank 0 only)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        split.save(run_dir / "split.json")
        split.save_gpkg(run_dir / "split.gpkg")
        norm.save(run_dir / "normalizer.json")
    _write_json(
        run_dir / "run.json",
        {
            "model": info["model"],
            "encoder": info["encoder"],
            "profile": _profile_dict(info["prof"]),
            "stack": str(info["stack_path"].resolve()),
            "labels": str(info["labels_path"].resolve()),
            "layers": info["layers"],
            "split": "split.json",
            "split_sha256": _sha256(run_dir / "split.json"),
            "split_summary": split.summary(),
            "device": str(info["dev"]),
            "world_size": info["world"],
            "torch": torch.__version__,
            "init_checkpoint": info["init_ref"],
            "normalizer_source": _normalizer_source(run_dir, not fresh, given_norm),
        },
    )


def _make_fit(
    model: str,
    encoder: str,
    prof: Any,
    data: _Data,
    dev: torch.device,
    *,
    init_checkpoint: str | os.PathLike[str] | None,
    run_dir: Path,
) -> _Fit:
    """The model (initialised from ``init_checkpoint`` when given), AdamW, the schedule, the scaler and the losses."""
    import segmentation_models_pytorch as smp

    from cryonet import models

    net = models.create(
        model,
        in_channels=len(data.layers),
        classes=len(CLASSES),
        encoder=encoder,
        full_res_head=bool(prof.full_res_head),
    )
    if init_checkpoint is not None:
        init_state, init_path = _load_init_weights(
            init_checkpoint, model, encoder, data.layers, bool(prof.full_res_head)
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
    steps = max(1, len(data.train_dl))
    sched = _make_scheduler(str(prof.scheduler), opt, float(prof.lr), epochs * steps, float(prof.warmup_fraction))
    use_amp = dev.type == "cuda" and bool(prof.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ce = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(data.weights, device=dev), ignore_index=LABEL_NODATA)
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=LABEL_NODATA)
    return _Fit(net, opt, sched, scaler, ce, dice, float(prof.dice_weight), use_amp, epochs, steps)


def _restore(ckpt: dict[str, Any], last: Path, fit: _Fit, data: _Data) -> _Progress:
    """Model, optimiser, schedule, scaler, counters, history and RNG states of the checkpoint being resumed."""
    fit.net.load_state_dict(ckpt["model_state"])
    fit.opt.load_state_dict(ckpt["optimizer_state"])
    if int(ckpt["total_steps"]) != fit.epochs * fit.steps:
        raise ValueError(
            f"{last}: the learning-rate schedule of this run was fixed at {ckpt['total_steps']} steps "
            f"({ckpt['profile'].get('epochs')} epochs); resuming with {fit.epochs} epochs would change it. "
            "Resume without --epochs, or start a new run."
        )
    fit.sched.load_state_dict(ckpt["scheduler_state"])
    fit.scaler.load_state_dict(ckpt["scaler_state"])
    st = _Progress(int(ckpt["epoch"]), float(ckpt["best_score"]), int(ckpt["best_epoch"]), int(ckpt["bad_epochs"]))
    st.history = list(ckpt["history"])
    st.finished = bool(ckpt["finished"])
    st.stopped_early = bool(ckpt.get("stopped_early"))
    _set_rng_state(ckpt["rng"], data.sampler_gen)
    logger.info("resumed %s at epoch %d (best %.4f)", last, st.epoch, st.best)
    return st


def _open_run(
    stack_path: Path,
    labels_path: Path,
    run_dir: Path,
    d: _Dist,
    device: str,
    opts: dict[str, Any],
) -> tuple[_Run, _Progress]:
    """Set a run up (see the module docstring for the order) and restore its progress when resuming."""
    from cryonet import models

    dev = _device_for(d, device)
    ckpt, prof, model = _choose_profile(
        run_dir / "last.pt", opts["resume"], opts["model"], opts["profile"], opts["overrides"]
    )
    seed = int(prof.seed)
    encoder = models.resolve_encoder(model, getattr(prof, "encoder", None))
    _seed_everything(seed, dev)

    given_norm = _given_normalizer(opts["normalizer"]) if ckpt is None else None
    split, norm, layers = _prepare_data(
        stack_path,
        labels_path,
        prof,
        d,
        run_dir / "split.json" if ckpt is not None else None,
        ckpt["normalizer"] if ckpt is not None else (given_norm.to_dict() if given_norm is not None else None),
        opts["progress"],
        given_split=_given_split(opts["tile_split"]) if ckpt is None else None,
    )
    init_checkpoint = opts["init_checkpoint"]
    if ckpt is not None:
        init_ref = ckpt.get("init_checkpoint")  # a resumed run keeps its own weights (last.pt)
    else:
        init_ref = str(checkpoint_path(init_checkpoint)) if init_checkpoint is not None else None
    if d.main:
        info = {"model": model, "encoder": encoder, "prof": prof, "stack_path": stack_path, "labels_path": labels_path}
        info.update(layers=layers, dev=dev, world=d.world, init_ref=init_ref)
        _write_run_files(run_dir, info, split, norm, fresh=ckpt is None, given_norm=given_norm is not None)

    data = _make_loaders(stack_path, labels_path, split, norm, layers, prof, d, dev)
    fit = _make_fit(
        model, encoder, prof, data, dev, init_checkpoint=init_checkpoint if ckpt is None else None, run_dir=run_dir
    )
    st = _restore(ckpt, run_dir / "last.pt", fit, data) if ckpt is not None else _Progress()
    fit.ddp_net = fit.net
    if d.enabled:
        fit.ddp_net = torch.nn.parallel.DistributedDataParallel(
            fit.net, device_ids=[d.local_rank] if dev.type == "cuda" else None
        )
    run = _Run(run_dir, stack_path, labels_path, model, encoder, prof, dev, d, init_ref, data, fit)
    return run, st


# --------------------------------------------------------------------------------------------------------------------
# one epoch
# --------------------------------------------------------------------------------------------------------------------
def _train_epoch(run: _Run, epoch: int, progress: bool) -> float:
    """One pass over this rank's training tiles; the mean batch loss over all ranks."""
    from tqdm.auto import tqdm

    f, dev = run.fit, run.dev
    run.data.train_ds.set_epoch(epoch)
    f.ddp_net.train()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=dev)  # (sum of batch losses, batches)
    bar = tqdm(
        run.data.train_dl,
        desc=f"epoch {epoch + 1}/{f.epochs} [{run.model}/{run.encoder}]",
        disable=not (progress and run.d.main),
        leave=False,
    )
    for x, y in bar:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        f.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=f.use_amp):
            logits = f.ddp_net(x)
            loss = f.ce(logits.float(), y) + f.dice_w * f.dice(logits.float(), y)
        f.scaler.scale(loss).backward()
        f.scaler.step(f.opt)
        f.scaler.update()
        f.sched.step()
        loss_sum += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=dev)])
        bar.set_postfix(loss=f"{loss.item():.4f}")
    _all_reduce(loss_sum, run.d)
    return float(loss_sum[0] / max(loss_sum[1].item(), 1))


def _validate(run: _Run) -> tuple[np.ndarray, float]:
    """``(confusion matrix, mean loss)`` of the validation tiles, summed over all ranks."""
    f, dev = run.fit, run.dev
    f.ddp_net.eval()
    n_cls = len(CLASSES)
    cm = torch.zeros(n_cls, n_cls, dtype=torch.int64, device=dev)
    vloss = torch.zeros(2, dtype=torch.float64, device=dev)
    with torch.no_grad():
        for x, y in run.data.val_dl:
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=f.use_amp):
                logits = f.net(x).float()
            vl = f.ce(logits, y) + f.dice_w * f.dice(logits, y)
            vloss += torch.stack([vl.double() * len(x), torch.tensor(len(x), dtype=torch.float64, device=dev)])
            cm += _confusion(logits.argmax(1), y, n_cls)
    _all_reduce(cm, run.d)
    _all_reduce(vloss, run.d)
    return cm.cpu().numpy(), float(vloss[0] / max(vloss[1].item(), 1))


def _update_progress(st: _Progress, row: dict[str, Any], score: float, patience: int | None, epochs: int) -> bool:
    """Append the epoch's row, update the best score and the early-stopping counter; whether the epoch improved."""
    st.history.append(row)
    improved = not math.isnan(score) and score > st.best
    if improved:
        st.best, st.best_epoch, st.bad_epochs = score, st.epoch, 0
    else:
        st.bad_epochs += 1
    if patience is not None and st.bad_epochs >= patience:
        st.stopped_early = True
    st.finished = st.stopped_early or st.epoch >= epochs
    return improved


def _epoch_state(run: _Run, st: _Progress) -> dict[str, Any]:
    """The checkpoint after an epoch: everything needed to resume (see :mod:`cryonet.train.checkpoints`)."""
    f, d = run.fit, run.d
    return {
        "format": CHECKPOINT_FORMAT,
        "model": run.model,
        "encoder": run.encoder,
        "model_state": {k: v.detach().cpu() for k, v in f.net.state_dict().items()},
        "optimizer_state": f.opt.state_dict(),
        "scheduler_state": f.sched.state_dict(),
        "total_steps": f.epochs * f.steps,
        "scaler_state": f.scaler.state_dict(),
        "epoch": st.epoch,
        "best_score": st.best,
        "best_epoch": st.best_epoch,
        "bad_epochs": st.bad_epochs,
        "finished": st.finished,
        "stopped_early": st.stopped_early,
        "history": st.history,
        "profile": _profile_dict(run.prof),
        "layers": run.data.layers,
        "normalizer": run.data.norm.to_dict(),
        "class_weights": run.data.weights.tolist(),
        "split": {"file": "split.json", "sha256": _sha256(run.run_dir / "split.json") if d.main else ""},
        "stack": str(run.stack_path.resolve()),
        "labels": str(run.labels_path.resolve()),
        "rng": _rng_state(run.data.sampler_gen),
        "world_size": d.world,
        "init_checkpoint": run.init_ref,
    }


def _run_epochs(
    run: _Run,
    st: _Progress,
    *,
    progress: bool,
    stop_after: int | None,
    callback: Callable[[int, dict[str, Any]], None] | None,
) -> None:
    """Train until finished (all epochs or early stop) or ``stop_after``; checkpoint and history after each epoch."""
    f = run.fit
    patience = run.prof.early_stopping_patience  # None: no early stopping
    logger.info(
        "training %s (encoder %s) on %s: %d epochs, %d train / %d val tiles",
        run.model,
        run.encoder,
        run.dev,
        f.epochs,
        len(run.data.train_ds),
        len(run.data.val_ds),
    )
    while not st.finished and st.epoch < f.epochs:
        t0 = time.perf_counter()
        train_loss = _train_epoch(run, st.epoch, progress)
        cm_np, val_loss = _validate(run)
        val = _summary(cm_np)
        score = val["miou_glacier"]
        st.epoch += 1
        row: dict[str, Any] = {
            "epoch": st.epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": float(f.sched.get_last_lr()[0]),
            "seconds": round(time.perf_counter() - t0, 3),
            "model": run.model,
            "encoder": run.encoder,
            **{f"val_{k}": v for k, v in val.items()},
            "val_confusion": cm_np.tolist(),
        }
        improved = _update_progress(st, row, score, patience, f.epochs)
        state = _epoch_state(run, st)
        if run.d.main:
            save_checkpoint(run.last, state)
            if improved:
                save_checkpoint(run.run_dir / "best.pt", state)
            _write_history(run.run_dir, st.history)
            if callback is not None:
                callback(st.epoch, row)
        logger.info(
            "epoch %d: train loss %.4f, val mIoU(glacier) %.4f%s",
            st.epoch,
            train_loss,
            score,
            " (best)" if improved else "",
        )
        if stop_after is not None and st.epoch >= stop_after and not st.finished:
            break


def _result(run: _Run, st: _Progress) -> TrainResult:
    """The :class:`TrainResult`; ``best.pt`` is the last checkpoint when no epoch was scored (NaN)."""
    run_dir = run.run_dir
    if run.d.main and not (run_dir / "best.pt").is_file() and run.last.is_file():
        save_checkpoint(run_dir / "best.pt", load_checkpoint(run.last))  # no epoch scored (NaN): keep the last
    best_row = next((r for r in st.history if r["epoch"] == st.best_epoch), st.history[-1] if st.history else {})
    names = {
        "last": "last.pt",
        "best": "best.pt",
        "history": "history.csv",
        "split": "split.json",
        "normalizer": "normalizer.json",
    }
    return TrainResult(
        run_dir=run_dir,
        model=run.model,
        encoder=run.encoder,
        best_score=st.best,
        best_epoch=st.best_epoch,
        best_metrics=best_row,
        history=st.history,
        epochs_run=st.epoch,
        finished=st.finished,
        stopped_early=st.stopped_early,
        files={k: run_dir / v for k, v in names.items()},
    )


# --------------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------------
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
    """Train a model on a stack + labels; write the run directory (see :mod:`cryonet.train`).

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
    stack_path, labels_path, run_dir = Path(stack_path), Path(labels_path), Path(out_dir)
    det_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    d, own_group = _init_distributed(device)
    opts = {
        "model": model,
        "profile": profile,
        "resume": resume,
        "progress": progress,
        "overrides": overrides,
        "init_checkpoint": init_checkpoint,
        "normalizer": normalizer,
        "tile_split": tile_split,
    }
    try:
        run, st = _open_run(stack_path, labels_path, run_dir, d, device, opts)
        _run_epochs(run, st, progress=progress, stop_after=stop_after, callback=callback)
        return _result(run, st)
    finally:
        torch.use_deterministic_algorithms(det_before[0], warn_only=det_before[1])
        _close_distributed(own_group)
