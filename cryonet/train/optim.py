"""The optimiser's parameter groups and the per-step learning-rate schedule of a training run."""

from __future__ import annotations

import math
from typing import Any

import torch


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
