"""Make ``import torchvision`` (and so ``segmentation_models_pytorch``) work next to a CPU-only torch.

Why this exists: PyPI has no CPU build of torchvision 0.28.0; its CUDA build's ``_C.so`` cannot be loaded next to
the CPU torch wheel. ``torchvision/_meta_registrations.py`` then registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms``, whose schemas were never defined, and the import fails with
``RuntimeError: operator torchvision::nms does not exist``. Defining the two schemas first (and only when the
compiled extension cannot be loaded) lets the import succeed. Nothing here uses those operators; every other
torchvision op stays unregistered and raises if called.

Import this module before torchvision; :mod:`cryonet.models` does.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_LIBRARY = None  # keeps the torch.library.Library object alive


def ensure_torchvision_importable() -> None:
    """Define the ``torchvision::nms`` / ``qnms`` op schemas if torchvision's compiled extension cannot load."""
    global _LIBRARY
    if _LIBRARY is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    so_files = list(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    try:
        for so in so_files:
            torch.ops.load_library(str(so))
        if so_files:
            return  # the real extension works: nothing to patch
    except OSError:
        pass
    try:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError as exc:  # already defined by someone else
        logger.debug("torchvision op schemas not defined: %s", exc)
        return
    _LIBRARY = lib
    logger.debug("torchvision's compiled extension is unavailable; defined nms/qnms schemas so it imports")


ensure_torchvision_importable()
