"""Typed run configuration: the named profiles ``ci`` and ``paper`` that chapters, training and the CLI share.

A :class:`Profile` holds every setting that changes between a quick CPU run and a full GPU run: tiling, the
spatially blocked split, optimisation, how much of the importance / ablation / few-shot work is done. Sweeps are
loops over profiles in code (``profile.replace(encoder="resnet34")``), not copies of config files. A run saves
``profile.to_dict()`` next to its checkpoint and reads it back with :meth:`Profile.from_dict`.

What comes from the paper and what is ours
-------------------------------------------
From the paper: the architecture (U-Net++ decoder, ResNet-101 encoder, scSE attention; the U-Net, DeepLabV3+ and
SegFormer baselines, see :mod:`cryonet.models`), the four classes and the input families. The paper does **not**
publish its training hyper-parameters (tile size, batch size, epochs, optimiser, learning rate, schedule, loss
weights, split geometry); every such value below is our choice: for ``paper`` common values for this model family
on a GPU (AdamW, lr 1e-4, weight decay 1e-4, cosine schedule, 256 px tiles, batch 16, 100 epochs, CE + Dice), for
``ci`` values that make all four models train within the CPU budget. None of them should be cited as the paper's.

The ``ci`` budget (measured)
----------------------------
Target: training all four models at the ``ci`` settings takes at most ~15 min on the project's 2-core CPU, i.e.
about 3 min per model on average. One AdamW train step (forward + cross-entropy + backward + step), batch
8 x 30 x 128 x 128, ResNet-18 encoder, 2 threads, measured 2026-11-24 on this machine while other engineers
shared the 2 cores (load average 1.3 in the first run, ~4 in the second; the minima are the closest to a quiet
machine, the medians of the busy run an upper side)::

    model                  fastest step   median, busy run (load ~4)   parameters
    cryonet (UNet++ scSE)  1.27 s         2.59 s                        16.3 M
    unet                   0.38 s         0.81 s                        14.4 M
    deeplabv3plus          0.31 s         4.36 s (contention)           12.4 M
    segformer (R18)        0.36 s         2.56 s (contention)           11.9 M

On the Poiqu twin the blocked split (:func:`cryonet.datasets.make_split`) keeps about 210 training tiles, capped at
``max_train_tiles=192``: 24 steps of batch 8 per epoch. A quiet CryoNet epoch (train steps + validation) measured
about 40 s (2026-11-24); the three baselines together cost a little more. ``epochs=8`` keeps the four trainings
within the budget: a fresh-clone ``make book`` took 21.5 min, chapters 3 and 4 (all four trainings, evaluation,
prediction) 388 + 416 s. (Early stopping, patience 3 then, could end a run sooner; ``ci`` has none since session 5,
see below.) With the full-resolution head on all four
models (commit 5c29799, twin 1.2), the four 8-epoch trainings took 390 + 145 + 129 + 137 s = 13.4 min of epoch time
(11.4 min without the head), chapters 3 and 4 took 453 + 534 s and ``make book`` 25 min 49 s.

What the training length gave on the Poiqu twin's test tiles (seed 0; the per-pixel random forest on the S2 bands of
:mod:`cryonet.baseline` for reference), measured 2026-11-24 on twin generator 1.1::

    IoU                     8 epochs (ci)   24 epochs*    pixel RF (S2 only)
    clean ice               0.964           0.969         0.987
    debris                  0.804           0.668         0.165
    lake                    0.820           0.869         0.981
    mean, glacier classes   0.863           0.835         0.711

    * the one-cycle schedule planned for 24 epochs; early stopping ended the run after epoch 10 (best: 7)

With the split before its buffer-aware refinement, 12 epochs gave 0.960 / 0.529 / 0.910 (RF 0.969 / 0.063 / 0.991),
and dropping the class weights of the cross-entropy (``class_weight_power=0``, 10 epochs) 0.909 / 0.543 / 0.904.
On twin 1.1, clean ice and lakes were separable pixel by pixel from reflectance alone, so the random forest was a
hard reference for them. Generator 1.2 (:mod:`cryonet.synthetic.optics`, :mod:`cryonet.synthetic.glaciers`) gave
off-glacier snow the spectrum of the accumulation areas' snow (one late-summer snowpack, as in real imagery) and
added meltwater streams on the valley floors (water, but background). On twin 1.2, chapter 3 of a fresh-clone
``make book`` (ci, 8 epochs, 48 test tiles, commit 0017d9e) gave, with 95 % paired-bootstrap intervals of the
difference::

    IoU                     CryoNet (ci)   pixel RF (S2 only)   difference
    clean ice               0.959          0.898                +0.061 [+0.039, +0.083]
    debris                  0.804          0.221                +0.583 [+0.463, +0.685]
    lake                    0.867          0.965                -0.098 [-0.144, -0.061]
    mean, glacier classes   0.877          0.695                +0.182 [+0.137, +0.230]

Lakes stay separable per pixel (ice-free, darker than everything but shadow in the NIR and SWIR). On a draft of 1.2
(streams 5 m narrower at their source; CryoNet lake IoU 0.850, RF 0.968) every wrong lake pixel of CryoNet on the test
tiles lay within 1 px of the reference lake outline: its lakes are one pixel too wide or too narrow, a rim that the
decoder (its finest skip connection is at half resolution) and the class weights (lake weight 3.7 on that split,
which tips mixed boundary pixels towards lake) both favour. Removing the class weights' prior from the logits at
prediction (``logits - log w``, a logit adjustment) raised lake IoU to 0.896 (precision = recall = 0.945) but lowered
debris IoU from 0.831 to 0.790; it is not applied. Dropping the weighted sampler on that draft gave clean ice / debris
/ lake 0.965 / 0.845 / 0.827 against 0.952 / 0.831 / 0.850 with it, no gain beyond run-to-run spread; it stays.

The full-resolution head and the training length (measured on a GPU)
--------------------------------------------------------------------
On 2026-11-24 a GPU was lent (one NVIDIA H100 80GB, torch 2.11 + CUDA 13, 16 cores). The Poiqu twin 1.2 was built
there from the same code and seed; its labels are not byte-identical to those built here (numpy 2.5.2 there, 2.4.6
here), so its numbers compare with each other, not with the CPU tables above. CryoNet, ci settings (ResNet-18, 128 px
tiles, batch 8, one-cycle lr 1e-3), test-tile IoU, with and without :class:`cryonet.models.FullResolutionHead`::

    clean ice / debris / lake IoU (mean of the three)      bare smp model              with the head
    8 epochs (ci), seed 0, GPU                             .960 / .836 / .887 (.894)   .965 / .804 / .848 (.872)
    8 epochs (ci), seed 0, this CPU, twin of table above   .959 / .804 / .867 (.877)   .967 / .800 / .883 (.884)
    24 epochs, seed 0, GPU, no early stop                  .970 / .847 / .908 (.909)   .974 / .859 / .951 (.928)
    24 epochs, seed 1, GPU, no early stop                  .980 / .908 / .942 (.943)   .986 / .925 / .979 (.963)

(the CPU "bare" entry is chapter 3 of the fresh clone above, the others single runs.) Chapter 3 of a fresh-clone
``make book`` with the head (commit 5c29799; same twin and split as the CPU table above) gave, against the same random
forest, clean ice 0.967 (+0.069 [+0.046, +0.091]), debris 0.800 (+0.579 [+0.459, +0.685]), lake 0.883 (-0.082 [-0.114,
-0.065]) and mean 0.884 (+0.189 [+0.147, +0.225]); in chapter 4 the baselines gained more from the head at 8 epochs
than CryoNet (mean glacier IoU U-Net 0.920, DeepLabV3+ 0.915, SegFormer/R18 0.895). At 8 epochs the head is within the
run-to-run spread; trained to the end of a longer schedule it raised lake IoU by 0.04 on both seeds and lowered no
class, so both profiles use it, for all four models. Lakes still come out a little too large (precision 0.96 / 0.99
against recall 0.99 / 0.99); the logit adjustment above then moved lake IoU to 0.958 / 0.983 and debris to 0.856 /
0.912, which is within the spread; it stays unapplied. On the per-pixel random forest's lake IoU of this twin (0.965
on the CPU build): the longer runs with the head reach it, the 8-epoch ci runs do not.

Early stopping: with ``early_stopping_patience=3`` a one-cycle schedule planned for 30 epochs stopped at epochs 8 to
11 in three runs of four (validation mean IoU is noisy around the peak learning rate), with lake IoU 0.80 to 0.91;
the fourth ran to epoch 26 and gave .988 / .908 / .988. Set the patience long against the schedule when raising
``epochs``. (``train.resolve_profile`` drops overrides that are None, so ``early_stopping_patience=None`` there keeps
the profile's patience; pass ``Profile.replace(early_stopping_patience=None)`` to switch it off.)
In the 8-epoch ``ci`` schedule a patience of 3 cut runs short as well: in the fresh-clone book of commit 1e574f0,
SegFormer stopped after epoch 5 (best epoch 2; test mean glacier IoU 0.777, lake 0.685) and U-Net after epoch 7
(best 4), where the previous build's SegFormer, which ran all 8 epochs, reached 0.895. Since session 5 the ``ci``
profile has no early stopping (``early_stopping_patience=None``): every model runs the whole one-cycle schedule and
the checkpoint of the best validation epoch is kept, as before. ``paper`` keeps a patience of 15 against 100 epochs
of a cosine schedule. In the fresh-clone book of commit ac28701 (no early stopping, head at 10 x the rate) chapter 4
gave mean glacier IoU (clean ice / debris / lake): CryoNet 0.903 (.962 / .825 / .922), U-Net 0.904 (.963 / .822 /
.928; best epoch 4), DeepLabV3+ 0.909 (.967 / .820 / .941), SegFormer/R18 0.913 (.971 / .818 / .948); the four
trainings took 389 + 146 + 138 + 148 s = 13.7 min of epoch time.

The head's learning rate (measured on this CPU)
----------------------------------------------
On 2026-11-24 (session 5) the lake rim of the 8-epoch ``ci`` runs was traced further. Every wrong lake pixel of
chapter 3's CryoNet on the test tiles still lay within 1 px of the reference lake outline, and most input layers are
soft there: in the first ring of pixels outside a lake, the 20 m bands, PCA, tasseled cap, coherence and GLCM layers
are still 0.3 to 0.5 of the way from their background to their lake value (the 10 m reflectances too, through the
simulated instrument blur), while the band ratios NDWI and NDVI (10 m bands only) are at 0.07 to 0.09.
Single 8-epoch CryoNet runs (seed 0, twin 1.2, same split as chapter 3; one change each against chapter 3's run;
"val" is the validation split the trainer selects on, "test" the held-out tiles), IoU of clean ice / debris / lake::

    run                                   val                       val mean   test
    chapter 3 (head at the common rate)   .964 / .830 / .929        .908       .967 / .800 / .883
    batch 4 (twice the steps)             .967 / .821 / .935        .908       .970 / .799 / .881
    class_weight_power 0.25               .965 / .739 / .890        .864       .972 / .809 / .852
    lr 2e-3                               .965 / .772 / .927        .888       (not evaluated)
    head at 10 x the rate                 .966 / .814 / .950        .910       .962 / .825 / .922
    head at 30 x the rate                 .957 / .765 / .923        .882       .892 / .791 / .906 (stopped, epoch 6)

More steps, a smaller class-weight prior and a higher overall rate did not help. The head at 10 times the model's
rate did, on validation (lake .929 -> .950) as on the test tiles (.883 -> .922, lake false positives 1244 -> 693
pixels, now half of them in the first pixel of the meltwater streams leaving a lake); at 30 times training became
unstable. Both profiles therefore use ``head_lr_scale=10``. These are single runs: the spread between seeds at this
length is of the same order (see the GPU table above), so read the 10 x row as a consistent gain on two splits, not a
measured effect size. Chapter 3 of a fresh-clone ``make book`` with the change (commit 1e574f0; the same run
reproduced bit for bit) gave against the random forest, with 95 % paired-bootstrap intervals of the difference: clean
ice 0.962 (+0.064 [+0.042, +0.085]), debris 0.825 (+0.604 [+0.503, +0.693]), mean 0.903 (+0.208 [+0.174, +0.236]) and
lake 0.922 (-0.043 [-0.071, -0.031], precision 0.94, recall 0.98): the lake IoU of the per-pixel random forest
(0.965) is still not reached at 8 epochs.

Where the lake gap lies, and what did not close it (session 6, CPU)
----------------------------------------------------------------------
On the test tiles of chapter 3's split, the random forest's scene-wide lake errors (refitted with the same seed and
predicted over the test tiles) are 255 false-positive and 126 false-negative pixels (precision 0.97, recall 0.985);
CryoNet's full-scene prediction has 693 and 172 (precision 0.92, recall 0.98). The gap is the false positives, all
within 1 px of a lake: 361 on meltwater streams (the random forest: 197), 175 on debris beside supraglacial ponds
(9), 77 on bedrock and 40 on ice cliffs. More attempts, single 8-epoch runs (one change each against chapter 3's
settings) or evaluations of chapter 3's run (IoU of clean ice / debris / lake)::

    chapter 3's run, for reference                                val  .966 / .814 / .950   test .962 / .825 / .922
    boundary-weighted cross-entropy (pixels with another class    val  .966 / .811 / .952   test .964 / .841 / .915
      among their 8 neighbours weigh 5 x; U-Net's weight map)
    no class weights (class_weight_power 0)                       val  .964 / .749 / .930   test .968 / .780 / .859
    cross-entropy alone (dice_weight 0)                           val  .968 / .748 / .941   test .966 / .801 / .902
    chapter 3's run, flips at test time (4 flips, aspect turned)  val  .966 / .813 / .953   test .962 / .839 / .924
      the same with logit offsets fitted on validation            val  .965 / .833 / .963   test .957 / .841 / .941

The boundary weight raised lake recall, not precision, and was left out. Without class weights, or without the Dice
term, lake precision fell further (0.88 and 0.92 on the test tiles) and debris lost 0.02 to 0.07 on both splits: the
class weights are not what makes the rim too wide. Flips and offsets together add 0.019 to the lake IoU of the test
tiles, not the 0.04 that separates it from the random forest, and are not part of the evaluation. (An earlier try
of the boundary weight on the stale twin of a development checkout gave .983 / .953 / .979, which did not reproduce
on twin 1.2: compare runs only on the same data.)

Three seeds and a linear baseline (session 7, CPU)
---------------------------------------------------
On 2026-11-25 chapter 3's CryoNet was trained with two more seeds on its split (``tile_split`` = chapter 3's run;
the seed changes the initialisation, the sampler and the augmentation). Test-tile IoU of clean ice / debris / lake::

    seed 0 (chapter 3)    .962 / .825 / .922
    seed 1                .971 / .811 / .917
    seed 2                .969 / .839 / .926

The per-pixel classifiers of :mod:`cryonet.baseline` on the same ten bands, 100,000 training pixels, seeds 0 / 1 / 2:
the random forest (50 trees) reached lake IoU .965 / .967 / .970 (clean ice .898, debris .22), a standardised
logistic regression .888 / .894 / .897 (clean ice .890, debris .15). The lake gap to the random forest, 0.04 to 0.05,
is well outside the spread between seeds (about 0.005 here), and CryoNet is above the linear classifier in every
class. Chapter 3 therefore reports both: the logistic regression as the trivial baseline, the random forest as the
strongest per-pixel reference. Against the logistic regression (chapter 3's run, 95 % paired-bootstrap intervals of
the difference): clean ice +0.072 [+0.048, +0.096], debris +0.671 [+0.543, +0.759], lake +0.034 [+0.006, +0.096].

The same forest on more layers, same sample and seed: on the ten bands plus the indices it gave lake IoU .966 (the
ratios add nothing to a forest), on all 44 layers of the stack .976 / .734 / .986 (clean ice / debris / lake; mean
.899). Chapter 4 now fits that all-layer forest as the classical reference. Against it, chapter 3's CryoNet is
+0.004 [-0.019, +0.021] in mean glacier IoU, i.e. not distinguishable. Per class it is -0.015 [-0.019, -0.011] on
clean ice, +0.091 [+0.055, +0.133] on debris and -0.064 [-0.133, -0.041] on lake. At 8 CPU epochs, what the network
adds beyond the engineered layers (texture, terrain position) is in debris, the class its neighbourhood defines.

Three more single 8-epoch runs on chapter 3's settings, with one change each, did not help. Test IoU is given as clean
ice / debris / lake:

* An exponential moving average of the weights (decay 0.98, batch-norm buffers averaged as well;
  ``torch.optim.swa_utils.AveragedModel``) gave a validation mean of 0.60 against 0.91, and test .954 / .826 /
  .879. Weights averaged over the high-rate phase do not match averaged batch-norm statistics. Making it work would
  need another pass to recompute them, so it was dropped.
* The head also fed the decoder's last feature map (16 channels of UNet++) gave validation .964 / .794 / .949 and
  test .966 / .823 / .921. No change.
* Batch 4 (48 steps per epoch) with the head at 10 x the rate gave validation .963 / .781 / .935 and test .961 /
  .783 / .881.

Speed of one CryoNet training step (batch 8 x 44 x 128 x 128, 2 threads, this CPU):

* 1.60 s in float32.
* 1.49 s in the ``channels_last`` memory format (-7 %).
* 1.89 s with bfloat16 autocast. The CPU has AVX-512 BF16 but no AMX, so this is slower.

Neither is used: the 7 % would buy half an epoch.

``paper`` profile on the same GPU: CryoNet with the ResNet-101 encoder (UNet++ scSE, 256 px tiles, batch 16, AMP with
a gradient scaler, 8 loader workers) trained its first two epochs on the Poiqu twin in 8.8 s and 5.7 s (train and
validation), peak GPU memory 8.9 GiB (``torch.cuda.max_memory_allocated``). The twin is small (1500 x 1500 px; its
paper-profile split here has 47 training, 14 validation and 12 test tiles of 256 px, i.e. 3 steps of batch 16 per
epoch), so these seconds are mostly loader start-up and validation: they bound the twin's 100 epochs at about 10
minutes but do not time an epoch of a real Sentinel-2 scene, which is not measured. Mixed precision on CUDA ran
without a non-finite loss; PyTorch warned once that the scheduler stepped before the optimiser, which is the gradient
scaler skipping its first step, as it does by design.
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
        batch_size: Tiles per optimisation step (>= 2: DeepLabV3+ needs two samples for its BatchNorm).
        epochs: Maximum number of passes over the training tiles.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        scheduler: Learning-rate schedule, one of :data:`SCHEDULERS`.
        early_stopping_patience: Epochs without improvement of the validation mean IoU before stopping; None
            disables early stopping.
        dice_weight: Loss = cross-entropy + ``dice_weight`` x multi-class Dice loss (0 = cross-entropy only).
        num_workers: DataLoader worker processes (0 = load in the main process).
        max_train_tiles: Cap on the number of training tiles (a seeded random subset); None = all.
        importance_repeats: Permutations per layer group in permutation importance.
        ablation: Also retrain without each layer group (drop-group ablation, one training per group).
        fewshot_tiles: Numbers of labelled target-region (Mont Blanc) tiles used to fine-tune in the transfer
            experiment; 0 = zero-shot transfer.
        finetune_epochs: Epochs of few-shot fine-tuning.
        amp: Mixed precision (used on CUDA only; ignored on CPU).
        full_res_head: Give every model the full-resolution refinement head of
            :class:`cryonet.models.FullResolutionHead` (our addition, see :mod:`cryonet.models`).
        head_lr_scale: Learning-rate multiplier for the parameters of that head (1 = the same rate as the rest of
            the model). The head is small, zero-initialised and sits after the network, so it starts learning only
            once the logits carry information; a higher rate lets it learn pixel-scale detail within a short
            schedule (measured in the module docstring).
        split: Spatial split geometry.
        seed: Seed of every random choice of a run (tile subset, split, initialisation, shuffling).
        max_nodata_fraction: Training tiles with a larger share of nodata pixels are skipped, in [0, 1].
        augment: Training augmentation, a mode of :class:`cryonet.datasets.Augmenter` (``"full"``, ``"sun_safe"``,
            ``"none"``).
        weighted_sampler: Draw training tiles holding rare classes more often.
        class_weight_power: Cross-entropy class weights = class frequency ** -power (0 = unweighted, 0.5 = inverse
            square root of the frequency).
        warmup_fraction: Share of the optimisation steps spent warming up (``onecycle`` and ``cosine``), in [0, 1).
        n_boot: Bootstrap replicates (whole tiles resampled) of every confidence interval.
        baseline_pixels: Training pixels of the per-pixel baselines (a seeded sample of the training tiles).
        baseline_trees: Trees of the per-pixel random forests.
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


#: ``ci``: all four models on a 2-core CPU within ~15 min (see the module docstring for the measured step times).
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
    # settles, and a patience of 3 stopped SegFormer after epoch 5 of 8 (see the module docstring)
    early_stopping_patience=None,
    dice_weight=1.0,
    num_workers=0,  # 2 cores: loader workers would compete with torch's two threads
    max_train_tiles=192,
    importance_repeats=2,
    ablation=False,  # one retraining per layer group is beyond the CPU budget
    fewshot_tiles=(0, 16),
    finetune_epochs=2,
    amp=False,
    full_res_head=True,
    head_lr_scale=10.0,
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
