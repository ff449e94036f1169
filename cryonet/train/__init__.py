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

The package's modules: :mod:`~cryonet.train.loop` (set-up, one epoch, validation, :func:`train`),
:mod:`~cryonet.train.data` (split, normalisation, datasets, the seeded sampler), :mod:`~cryonet.train.optim`
(parameter groups, schedule), :mod:`~cryonet.train.checkpoints` (checkpoint files, RNG state, :func:`load_model`),
:mod:`~cryonet.train.distributed` (device, DDP process group), :mod:`~cryonet.train.rundir` (the run directory's
JSON and history files), :mod:`~cryonet.train.scoring` (:func:`evaluate`) and :mod:`~cryonet.train.reuse`
(:func:`train_or_reuse`: the library's one reuse rule, :mod:`cryonet.reuse`, applied to a training run).
"""

from cryonet.train.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from cryonet.train.distributed import resolve_device
from cryonet.train.loop import TrainResult, resolve_profile, train
from cryonet.train.reuse import train_or_reuse
from cryonet.train.scoring import evaluate

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrainResult",
    "checkpoint_path",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "resolve_device",
    "resolve_profile",
    "save_checkpoint",
    "train",
    "train_or_reuse",
]
