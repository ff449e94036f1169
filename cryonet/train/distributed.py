"""Where a training process runs: the torch device, and the process group and rank under ``torchrun`` (DDP)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def _device_for(d: _Dist, device: str) -> torch.device:
    """The device of this rank: its own GPU under DDP on CUDA, else :func:`resolve_device`."""
    if d.enabled and torch.cuda.is_available() and device in ("auto", "cuda"):
        return torch.device("cuda", d.local_rank)
    return resolve_device(device)


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


def _close_distributed(own_group: bool) -> None:
    """Wait for every rank and destroy the process group, if :func:`_init_distributed` made it."""
    if own_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    if d.enabled:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
