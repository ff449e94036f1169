"""What a training run sees: its split, its normalisation, the tile datasets, the seeded sampler and the loaders."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryonet.datasets import (
    Augmenter,
    Normalizer,
    Split,
    TileDataset,
    class_weights,
    make_split,
    scan_tiles,
    tile_sampling_weights,
)
from cryonet.raster import Grid
from cryonet.stackfile import StackFile
from cryonet.train.checkpoints import load_checkpoint
from cryonet.train.distributed import _Dist


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
# split and normalisation
# --------------------------------------------------------------------------------------------------------------------
def _check_given_split(split: Split, tile: int, stack_path: Path) -> None:
    """A given split must have the profile's tile size and the stack's shape."""
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


def _new_split(stack_path: Path, labels_path: Path, prof: Any, d: _Dist, progress: bool) -> Split:
    """The blocked split of ``profile.split`` over the stack's tiles, with the ``max_train_tiles`` cap."""
    tile = int(prof.tile_size)
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
    return split


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
    layers = StackFile(stack_path).layers
    if resume_split is not None:
        split = Split.load(resume_split)
    elif given_split is not None:
        split = given_split  # used as given: no tile cap, no new blocks
        _check_given_split(split, int(prof.tile_size), stack_path)
    else:
        split = _new_split(stack_path, labels_path, prof, d, progress)
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


# --------------------------------------------------------------------------------------------------------------------
# datasets and loaders
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Data:
    """The tiles a run trains and validates on, and how they are drawn."""

    split: Split
    norm: Normalizer
    layers: list[str]
    weights: np.ndarray
    train_ds: TileDataset
    val_ds: TileDataset
    sampler_gen: torch.Generator
    train_dl: torch.utils.data.DataLoader
    val_dl: torch.utils.data.DataLoader


def _make_loaders(
    stack_path: Path,
    labels_path: Path,
    split: Split,
    norm: Normalizer,
    layers: list[str],
    prof: Any,
    d: _Dist,
    dev: torch.device,
) -> _Data:
    """Class weights, tile datasets, the seeded epoch sampler (this rank's share) and the two loaders."""
    seed = int(prof.seed)
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
    return _Data(split, norm, layers, weights, train_ds, val_ds, sampler_gen, train_dl, val_dl)
