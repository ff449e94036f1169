"""Typed run configuration: the named profiles ``ci`` and ``paper`` that chapters, training and the CLI share.

A :class:`Profile` (frozen, validated when built) holds every setting that changes between a quick CPU run and a
full GPU run: tiling, the spatially blocked split (:class:`SplitConfig`), optimisation, loss and sampling, and how
much of the baseline / importance / ablation / few-shot work is done.

* ``ci`` (:data:`CI`): ResNet-18 for all four models, 128 px tiles, 8 epochs: all four models train within about
  15 min on a 2-core CPU.
* ``paper`` (:data:`PAPER`): the paper's architecture (ResNet-101; ``mit_b2`` for SegFormer), our GPU settings.

:func:`get_profile` returns a profile by name. A variant is derived, never copied:
``get_profile("ci").replace(encoder="resnet34", split={"buffer_m": 640.0})`` is a validated copy (``split`` takes a
dict of the split fields to change); sweeps are loops over such copies. A run saves ``profile.to_dict()`` next to
its checkpoint and reads it back with :meth:`Profile.from_dict` (a field added after the run was saved reads as the
value the code used before it existed, :data:`LEGACY_DEFAULTS`).

From the paper: the architecture (U-Net++ decoder, ResNet-101 encoder, scSE attention; the U-Net, DeepLabV3+ and
SegFormer baselines, see :mod:`cryonet.models`), the four classes and the input families. The paper publishes no
training hyper-parameters: tile size, batch size, epochs, optimiser, learning rate, schedule, loss weights and split
geometry are our choices (``paper``: AdamW, lr 1e-4, weight decay 1e-4, cosine schedule, 256 px tiles, batch 16, 100
epochs, CE + Dice), never to be cited as the paper's.

The measurements behind the settings are in ``docs/experiments/``, one file per question (the question, the profile
diff, the measured tables, the decision); the field descriptions of :class:`Profile` name the records.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

logger = logging.getLogger(__name__)

#: Augmentation modes of :class:`cryonet.datasets.Augmenter` (repeated here so that reading a profile does not import
#: torch; ``tests/test_config.py`` checks that they agree).
AUGMENT_MODES: Final[tuple[str, ...]] = ("full", "sun_safe", "none")

#: Values of the settings that became profile fields, for profiles saved before they existed (the values the code
#: and the chapters used then).
LEGACY_DEFAULTS: Final[dict[str, Any]] = {
    "max_nodata_fraction": 0.5,
    "augment": "full",
    "weighted_sampler": True,
    "class_weight_power": 0.5,
    "warmup_fraction": 0.1,
    "n_boot": 1000,
    "baseline_pixels": 100_000,
    "baseline_trees": 50,
    "ablation_epochs": None,
    "ablation_train_tiles": None,
    "stats_pixels": 200_000,
    "redundancy_pixels": 50_000,
    "shift_pixels": 20_000,
}

#: Learning-rate schedules the trainer understands.
SCHEDULERS: Final[tuple[str, ...]] = ("onecycle", "cosine", "none")
#: The models of :data:`cryonet.models.MODEL_NAMES` (repeated here so that reading a profile does not import
#: torch; ``tests/test_config.py`` checks that the two tuples are equal).
_MODEL_NAMES: Final[tuple[str, ...]] = ("cryonet", "unet", "deeplabv3plus", "segformer")


@dataclass(frozen=True)
class SplitConfig:
    """Spatially blocked train / validation / test split.

    The scene is cut into square blocks; whole blocks are assigned to one subset, and pixels closer than
    ``buffer_m`` to a block of another subset are left out, so that neighbouring (spatially autocorrelated)
    pixels do not leak between training and testing.

    Attributes:
        block_size_m: Edge length of a block, metres.
        buffer_m: Width of the buffer left out between blocks of different subsets, metres.
        val_fraction: Fraction of blocks for validation, in (0, 1).
        test_fraction: Fraction of blocks for testing, in (0, 1); ``val_fraction + test_fraction < 1``.
    """

    block_size_m: float
    buffer_m: float
    val_fraction: float
    test_fraction: float

    def __post_init__(self) -> None:
        if not self.block_size_m > 0:
            raise ValueError(f"split.block_size_m must be > 0 metres, got {self.block_size_m}")
        if not 0 <= self.buffer_m < self.block_size_m:
            raise ValueError(f"split.buffer_m must be in [0, block_size_m), got {self.buffer_m}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"split.{name} must be in (0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"split.val_fraction + split.test_fraction must be < 1 (some blocks must be left for training), "
                f"got {self.val_fraction} + {self.test_fraction}"
            )


@dataclass(frozen=True)
class Profile:
    """All settings of one kind of run.

    Attributes:
        name: Profile name (``"ci"``, ``"paper"``, or a derived name).
        encoder: smp encoder for all four models; None = each model's paper default (ResNet-101; ``mit_b2`` for
            SegFormer), see :data:`cryonet.models.DEFAULT_ENCODERS`.
        models: Models to train, a subset of :data:`cryonet.models.MODEL_NAMES`.
        tile_size: Edge length of a training tile, pixels (multiple of 32, the encoders' output stride).
        tile_stride: Step between neighbouring tiles, pixels (``<= tile_size``; overlap = size - stride).
        batch_size: Tiles per optimisation step (>= 2: DeepLabV3+ needs two samples for its BatchNorm)
            (docs/experiments/007-ci-training-budget.md, 002-head-learning-rate.md, 009-other-ci-training-changes.md).
        epochs: Maximum number of passes over the training tiles (docs/experiments/007-ci-training-budget.md,
            008-training-length.md).
        lr: Peak learning rate of AdamW (docs/experiments/002-head-learning-rate.md).
        weight_decay: AdamW weight decay.
        scheduler: Learning-rate schedule, one of :data:`SCHEDULERS`.
        early_stopping_patience: Epochs without improvement of the validation mean IoU before stopping; None
            disables early stopping (docs/experiments/003-early-stopping-in-ci.md).
        dice_weight: Loss = cross-entropy + ``dice_weight`` x multi-class Dice loss (0 = cross-entropy only)
            (docs/experiments/004-lake-rim-false-positives.md).
        num_workers: DataLoader worker processes (0 = load in the main process).
        max_train_tiles: Cap on the number of training tiles (a seeded random subset); None = all
            (docs/experiments/007-ci-training-budget.md).
        importance_repeats: Permutations per layer group in permutation importance.
        ablation: Also retrain without each layer group (drop-group ablation, one training per group).
        fewshot_tiles: Numbers of labelled target-region (Mont Blanc) tiles used to fine-tune in the transfer
            experiment; 0 = zero-shot transfer.
        finetune_epochs: Epochs of few-shot fine-tuning.
        amp: Mixed precision (used on CUDA only; ignored on CPU) (docs/experiments/006-gpu-timings.md,
            010-cpu-step-speed.md).
        full_res_head: Give every model the full-resolution refinement head of
            :class:`cryonet.models.FullResolutionHead` (our addition, see :mod:`cryonet.models`;
            docs/experiments/001-full-resolution-head.md).
        head_lr_scale: Learning-rate multiplier for the parameters of that head (1 = the same rate as the rest of
            the model). The head is small, zero-initialised and sits after the network, so it starts learning only
            once the logits carry information; a higher rate lets it learn pixel-scale detail within a short
            schedule (docs/experiments/002-head-learning-rate.md).
        split: Spatial split geometry.
        seed: Seed of every random choice of a run (tile subset, split, initialisation, shuffling)
            (docs/experiments/005-per-pixel-baselines-and-seeds.md).
        max_nodata_fraction: Training tiles with a larger share of nodata pixels are skipped, in [0, 1].
        augment: Training augmentation, a mode of :class:`cryonet.datasets.Augmenter` (``"full"``, ``"sun_safe"``,
            ``"none"``).
        weighted_sampler: Draw training tiles holding rare classes more often
            (docs/experiments/004-lake-rim-false-positives.md).
        class_weight_power: Cross-entropy class weights = class frequency ** -power (0 = unweighted, 0.5 = inverse
            square root of the frequency) (docs/experiments/002-head-learning-rate.md,
            004-lake-rim-false-positives.md, 008-training-length.md).
        warmup_fraction: Share of the optimisation steps spent warming up (``onecycle`` and ``cosine``), in [0, 1).
        n_boot: Bootstrap replicates (whole tiles resampled) of every confidence interval.
        baseline_pixels: Training pixels of the per-pixel baselines (a seeded sample of the training tiles)
            (docs/experiments/005-per-pixel-baselines-and-seeds.md).
        baseline_trees: Trees of the per-pixel random forests (docs/experiments/005-per-pixel-baselines-and-seeds.md).
        ablation_epochs: Epochs of each drop-group ablation training; None = the profile's ``epochs``.
        ablation_train_tiles: Training tiles of each ablation training; None = the profile's ``max_train_tiles``.
        stats_pixels: Pixels sampled per region for per-class layer statistics (feature-engineering chapter).
        redundancy_pixels: Labelled pixels sampled to measure how much the layer groups overlap.
        shift_pixels: Pixels sampled per region for the domain-shift diagnostics of the transfer.
    """

    name: str
    encoder: str | None
    models: tuple[str, ...]
    tile_size: int
    tile_stride: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float
    scheduler: str
    early_stopping_patience: int | None
    dice_weight: float
    num_workers: int
    max_train_tiles: int | None
    importance_repeats: int
    ablation: bool
    fewshot_tiles: tuple[int, ...]
    finetune_epochs: int
    amp: bool
    full_res_head: bool
    head_lr_scale: float
    split: SplitConfig
    seed: int
    max_nodata_fraction: float
    augment: str
    weighted_sampler: bool
    class_weight_power: float
    warmup_fraction: float
    n_boot: int
    baseline_pixels: int
    baseline_trees: int
    ablation_epochs: int | None
    ablation_train_tiles: int | None
    stats_pixels: int
    redundancy_pixels: int
    shift_pixels: int

    def __post_init__(self) -> None:
        # Normalise sequences given as lists (e.g. by hand) so that the frozen profile stays hashable.
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "fewshot_tiles", tuple(int(n) for n in self.fewshot_tiles))
        if isinstance(self.split, Mapping):
            object.__setattr__(self, "split", SplitConfig(**self.split))
        errors: list[str] = []
        unknown = [m for m in self.models if m not in _MODEL_NAMES]
        if unknown or not self.models:
            errors.append(f"models must be a non-empty subset of {_MODEL_NAMES}, got {self.models}")
        if self.tile_size < 32 or self.tile_size % 32:
            errors.append(f"tile_size must be a positive multiple of 32 pixels, got {self.tile_size}")
        if not 0 < self.tile_stride <= self.tile_size:
            errors.append(f"tile_stride must be in (0, tile_size={self.tile_size}], got {self.tile_stride}")
        if self.batch_size < 2:
            errors.append(f"batch_size must be >= 2 (BatchNorm of DeepLabV3+), got {self.batch_size}")
        if self.epochs < 1 or self.finetune_epochs < 0:
            errors.append(f"epochs must be >= 1 and finetune_epochs >= 0, got {self.epochs}, {self.finetune_epochs}")
        if not self.lr > 0 or self.weight_decay < 0:
            errors.append(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not self.head_lr_scale > 0:
            errors.append(f"head_lr_scale must be > 0, got {self.head_lr_scale}")
        if self.scheduler not in SCHEDULERS:
            errors.append(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            errors.append(f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}")
        if self.dice_weight < 0 or self.num_workers < 0 or self.importance_repeats < 1:
            errors.append(
                "dice_weight and num_workers must be >= 0 and importance_repeats >= 1, got "
                f"{self.dice_weight}, {self.num_workers}, {self.importance_repeats}"
            )
        if self.max_train_tiles is not None and self.max_train_tiles < self.batch_size:
            errors.append(f"max_train_tiles must be None or >= batch_size, got {self.max_train_tiles}")
        if any(n < 0 for n in self.fewshot_tiles):
            errors.append(f"fewshot_tiles must be >= 0, got {self.fewshot_tiles}")
        if not 0 <= self.max_nodata_fraction <= 1 or not 0 <= self.warmup_fraction < 1:
            errors.append(
                "max_nodata_fraction must be in [0, 1] and warmup_fraction in [0, 1), got "
                f"{self.max_nodata_fraction}, {self.warmup_fraction}"
            )
        if self.augment not in AUGMENT_MODES:
            errors.append(f"augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if self.class_weight_power < 0:
            errors.append(f"class_weight_power must be >= 0, got {self.class_weight_power}")
        counts = {
            "n_boot": self.n_boot,
            "baseline_pixels": self.baseline_pixels,
            "baseline_trees": self.baseline_trees,
            "stats_pixels": self.stats_pixels,
            "redundancy_pixels": self.redundancy_pixels,
            "shift_pixels": self.shift_pixels,
        }
        low = {k: v for k, v in counts.items() if v < 1}
        if low:
            errors.append(f"these counts must be >= 1: {low}")
        if self.ablation_epochs is not None and self.ablation_epochs < 1:
            errors.append(f"ablation_epochs must be None or >= 1, got {self.ablation_epochs}")
        if self.ablation_train_tiles is not None and self.ablation_train_tiles < self.batch_size:
            errors.append(f"ablation_train_tiles must be None or >= batch_size, got {self.ablation_train_tiles}")
        if errors:
            raise ValueError(f"invalid profile {self.name!r}: " + "; ".join(errors))

    @property
    def tile_overlap(self) -> int:
        """Overlap between neighbouring tiles, pixels (``tile_size - tile_stride``)."""
        return self.tile_size - self.tile_stride

    def replace(self, **overrides: Any) -> Profile:
        """A copy with some fields changed (validated again); ``split`` may be a dict of split fields to change.

        Raises:
            TypeError: An override names no field of :class:`Profile`.
        """
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"Profile has no field(s) {unknown}; fields: {[f.name for f in dataclasses.fields(self)]}")
        split = overrides.get("split")
        if isinstance(split, Mapping):
            overrides["split"] = dataclasses.replace(self.split, **split)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (tuples become lists, ``split`` a nested dict)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict` output (e.g. read from a run's JSON).

        Raises:
            ValueError: Unknown or missing fields (listed), or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        data = dict(data)
        # Runs written before the full-resolution head existed trained bare smp models.
        data.setdefault("full_res_head", False)
        # ... and runs written before head_lr_scale existed trained the head at the common rate.
        data.setdefault("head_lr_scale", 1.0)
        # Settings that were fixed choices of the code (or chapter parameters) before they were profile fields.
        for key, value in LEGACY_DEFAULTS.items():
            data.setdefault(key, value)
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise ValueError(f"cannot read profile: unknown fields {unknown}, missing fields {missing}")
        values = dict(data)
        if "split" in values and isinstance(values["split"], Mapping):
            values["split"] = SplitConfig(**values["split"])
        return cls(**values)


#: ``ci``: all four models on a 2-core CPU within ~15 min (measured: docs/experiments/007-ci-training-budget.md).
CI: Final[Profile] = Profile(
    name="ci",
    encoder="resnet18",  # smallest ResNet in smp; same encoder for all four models
    models=_MODEL_NAMES,
    tile_size=128,
    tile_stride=64,  # 50 % overlap: more distinct training tiles from a small scene
    batch_size=8,
    epochs=8,  # x 24 steps (192 training tiles of the Poiqu twin / batch 8) = 192 steps per model
    lr=1e-3,  # random init + few steps: a higher peak rate with a one-cycle schedule
    weight_decay=1e-4,
    scheduler="onecycle",
    # no early stopping in the 8-epoch one-cycle schedule: its last epochs, at the lowest rates, are where a model
    # settles, and a patience of 3 stopped SegFormer after epoch 5 of 8 (docs/experiments/003-early-stopping-in-ci.md)
    early_stopping_patience=None,
    dice_weight=1.0,
    num_workers=0,  # 2 cores: loader workers would compete with torch's two threads
    max_train_tiles=192,
    importance_repeats=2,
    ablation=False,  # one retraining per layer group is beyond the CPU budget
    fewshot_tiles=(0, 16),
    finetune_epochs=2,
    amp=False,
    full_res_head=True,  # docs/experiments/001-full-resolution-head.md
    head_lr_scale=10.0,  # docs/experiments/002-head-learning-rate.md
    split=SplitConfig(block_size_m=2560.0, buffer_m=320.0, val_fraction=0.15, test_fraction=0.15),
    seed=0,
    max_nodata_fraction=0.5,
    augment="full",
    weighted_sampler=True,
    class_weight_power=0.5,
    warmup_fraction=0.1,
    n_boot=1000,
    baseline_pixels=100_000,
    baseline_trees=50,  # keeps the ci build within its CPU budget
    ablation_epochs=2,  # the ci book retrains a reduced ablation (two groups, short runs)
    ablation_train_tiles=96,
    stats_pixels=200_000,
    redundancy_pixels=50_000,
    shift_pixels=20_000,
)

#: ``paper``: the paper's architecture (ResNet-101; mit_b2 for SegFormer) with our GPU training settings.
PAPER: Final[Profile] = Profile(
    name="paper",
    encoder=None,  # paper: ResNet-101 (SegFormer: mit_b2, our choice)
    models=_MODEL_NAMES,
    tile_size=256,
    tile_stride=128,
    batch_size=16,
    epochs=100,
    lr=1e-4,
    weight_decay=1e-4,
    scheduler="cosine",
    early_stopping_patience=15,
    dice_weight=1.0,
    num_workers=8,
    max_train_tiles=None,
    importance_repeats=10,
    ablation=True,
    fewshot_tiles=(0, 10, 25, 50, 100),
    finetune_epochs=20,
    amp=True,
    full_res_head=True,
    head_lr_scale=10.0,
    split=SplitConfig(block_size_m=5120.0, buffer_m=640.0, val_fraction=0.15, test_fraction=0.15),
    seed=0,
    max_nodata_fraction=0.5,
    augment="full",
    weighted_sampler=True,
    class_weight_power=0.5,
    warmup_fraction=0.1,
    n_boot=1000,
    baseline_pixels=100_000,
    baseline_trees=50,
    ablation_epochs=None,  # each ablation retrains with the full schedule
    ablation_train_tiles=None,
    stats_pixels=200_000,
    redundancy_pixels=50_000,
    shift_pixels=20_000,
)

#: All named profiles.
PROFILES: Final[dict[str, Profile]] = {"ci": CI, "paper": PAPER}


def get_profile(name: str) -> Profile:
    """The named profile.

    Args:
        name: ``"ci"`` or ``"paper"``.

    Raises:
        KeyError: With the list of known profiles when ``name`` is not one of them.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}: expected one of {sorted(PROFILES)}") from None
