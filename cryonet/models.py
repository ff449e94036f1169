"""One factory for CryoNet and its three baselines, assembled from segmentation-models-pytorch (smp 0.6).

The four models differ only where the paper says they differ (the decoder); encoder, input channels, classes and
initialisation come from the same arguments, so a comparison between them is a comparison of architectures.

=================  ===================================================================  ==========================
name               smp configuration                                                    default encoder (paper)
=================  ===================================================================  ==========================
``cryonet``        ``smp.UnetPlusPlus(decoder_attention_type="scse")``: nested U-Net++   ``resnet101``
                   decoder with concurrent spatial and channel squeeze-and-excitation
                   (scSE) after every decoder block
``unet``           ``smp.Unet()``: plain U-Net decoder, no attention                    ``resnet101``
``deeplabv3plus``  ``smp.DeepLabV3Plus()``: ASPP (atrous rates 12/24/36, output stride   ``resnet101``
                   16) + low-level skip
``segformer``      ``smp.Segformer()``: all-MLP SegFormer decoder                       ``mit_b2`` (Mix Transformer)
=================  ===================================================================  ==========================

Choices that are ours, not the paper's (the paper does not publish them):

* **SegFormer variant.** smp 0.6 offers the SegFormer decoder (``smp.Segformer``) and the Mix Transformer encoders
  ``mit_b0`` ... ``mit_b5`` of the SegFormer paper. We use ``mit_b2`` (24.8 M parameters at 30 input channels),
  the mid-size variant, as the closest to the paper's "SegFormer" baseline whose size the paper does not state.
  The mit encoders accept any number of input channels (smp patches the first patch-embedding convolution,
  ``patch_embed1.proj``) and build offline with ``encoder_weights=None``.
* **One encoder override for all four.** ``encoder=...`` replaces the backbone of every model alike. The ``ci``
  profile uses ``resnet18`` for all four, so its "segformer" is the SegFormer all-MLP decoder over a ResNet-18
  encoder (smp's Segformer decoder accepts any smp encoder), not a Mix Transformer: fast on a CPU and comparable
  with the other three, but not a transformer. ``smp.UnetPlusPlus`` rejects the ``mit_*`` encoders (smp raises
  ``ValueError``), so a mit encoder cannot be used for all four.
* **Full-resolution head** (``full_res_head=True``, on in both profiles; :class:`FullResolutionHead`). smp's U-Net,
  U-Net++ and DeepLabV3+ decoders take their finest skip connection from the encoder's first stage, which a ResNet
  runs at half resolution (its stem convolution has stride 2), and smp drops the full-resolution input itself from
  the skips. The original U-Net and U-Net++ kept a full-resolution path (their first encoder block has no stride),
  and one 10 m pixel is what separates a lake from its moraine dam. The head restores that path for all four models
  alike: two 3 x 3 convolutions over the (normalised) input layers and the model's logits at full resolution, added
  to the logits (a residual, zero-initialised, so an untrained head leaves the model's output unchanged). It adds
  about ``(C+K+32)*32*9`` weights (C input layers, K classes; 23 k at C = 44, K = 4). In the fresh-clone book on the
  2-core CPU it made an 8-epoch ci training 11 % (CryoNet) and 20 to 26 % (the lighter baselines) longer than in the
  previous fresh-clone book. Measured on the Poiqu twin (``cryonet.config``), it raised lake IoU from 0.908 / 0.942
  to 0.951 / 0.979 (two seeds, 24 epochs on a GPU) and did not lower the other classes. ``full_res_head=False``
  gives the bare smp models of the paper's description.
* **Initialisation.** Random (``encoder_weights=None``): nothing is downloaded. ``weights=`` takes a local
  ImageNet state dict of the encoder (see :func:`create`).

Input size: U-Net, U-Net++ and SegFormer need rows and cols divisible by 32 (the encoder's output stride; smp
raises otherwise). DeepLabV3+ contains a BatchNorm after global pooling, so in training mode it needs batches of
at least 2 samples (use ``drop_last=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import cryonet._torch_compat  # noqa: F401  (before smp: makes torchvision importable next to CPU torch)

# isort: split
import segmentation_models_pytorch as smp
import torch

from cryonet.constants import CLASSES

logger = logging.getLogger(__name__)

#: The models the factory builds, in the order tables and figures list them.
MODEL_NAMES: Final[tuple[str, ...]] = ("cryonet", "unet", "deeplabv3plus", "segformer")

#: Encoder used when ``encoder=None`` (the paper configuration).
DEFAULT_ENCODERS: Final[dict[str, str]] = {
    "cryonet": "resnet101",
    "unet": "resnet101",
    "deeplabv3plus": "resnet101",
    "segformer": "mit_b2",
}

#: smp architecture class and fixed keyword arguments of each model.
_ARCHITECTURES: Final[dict[str, tuple[type[torch.nn.Module], dict[str, object]]]] = {
    "cryonet": (smp.UnetPlusPlus, {"decoder_attention_type": "scse"}),
    "unet": (smp.Unet, {}),
    "deeplabv3plus": (smp.DeepLabV3Plus, {}),
    "segformer": (smp.Segformer, {}),
}

#: One line per model, for tables and the book.
MODEL_DESCRIPTIONS: Final[dict[str, str]] = {
    "cryonet": (
        "CryoNet: smp.UnetPlusPlus (nested U-Net++ decoder) with scSE attention "
        "(decoder_attention_type='scse'); paper encoder ResNet-101"
    ),
    "unet": "U-Net baseline: smp.Unet, plain U-Net decoder without attention; paper encoder ResNet-101",
    "deeplabv3plus": (
        "DeepLabV3+ baseline: smp.DeepLabV3Plus, ASPP (rates 12/24/36, output stride 16) + low-level skip; "
        "paper encoder ResNet-101"
    ),
    "segformer": (
        "SegFormer baseline: smp.Segformer, all-MLP decoder; encoder mit_b2 (Mix Transformer B2) in the paper "
        "profile (our choice: the paper does not state the variant); with an encoder override (ci: resnet18) "
        "the same decoder over that CNN encoder"
    ),
}


class FullResolutionHead(torch.nn.Module):
    """A full-resolution refinement of any segmentation model's logits (see the module docstring).

    ``forward(x) = net(x) + refine(concat(x, net(x)))``, where ``refine`` is conv3x3-BN-ReLU, conv3x3-BN-ReLU,
    conv1x1 at the input's resolution. The last convolution starts at zero, so at initialisation the output is
    ``net(x)``. Written here because smp has no such head: its decoders' skip connections are fixed by the
    encoder's stages.

    Args:
        net: The model whose logits are refined (``(N, C, H, W) -> (N, K, H, W)``).
        in_channels: C, the number of input layers.
        classes: K, the number of classes.
        width: Channels of the two hidden convolutions.
    """

    def __init__(self, net: torch.nn.Module, in_channels: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.net = net
        nn = torch.nn
        self.refine = nn.Sequential(
            nn.Conv2d(in_channels + classes, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, classes, 1),
        )
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    @property
    def encoder(self) -> torch.nn.Module:
        """The wrapped model's encoder (as on a bare smp model)."""
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, classes, rows, cols)``: the wrapped model's, plus the head's full-resolution correction."""
        logits = self.net(x)
        return logits + self.refine(torch.cat([x, logits], dim=1))


def _check_name(name: str) -> str:
    key = name.lower()
    if key not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    return key


def resolve_encoder(name: str, encoder: str | None = None) -> str:
    """The encoder a model uses: ``encoder`` if given, else the paper default of :data:`DEFAULT_ENCODERS`.

    Args:
        name: Model name, one of :data:`MODEL_NAMES`.
        encoder: smp encoder name overriding the default, or None.

    Returns:
        The smp encoder name.

    Raises:
        ValueError: Unknown model name.
    """
    return encoder if encoder is not None else DEFAULT_ENCODERS[_check_name(name)]


def _load_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """Read an encoder state dict from a ``.pt``/``.pth`` (torch.save) or ``.safetensors`` file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder weights file {path} does not exist: pass the path of a local state dict of the encoder "
            "(torch.save(encoder.state_dict(), path)) or weights=None for random initialisation"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any reader error becomes one clear message)
        raise ValueError(f"cannot read encoder weights {path}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"encoder weights {path}: expected a state dict (mapping of parameter names to tensors), "
            f"found {type(state).__name__}"
        )
    state = dict(state)
    # A state dict of a whole smp model (or of ``model.encoder`` saved with its prefix): keep the encoder part.
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def _init_encoder_from(model: torch.nn.Module, path: Path, encoder: str, in_channels: int) -> None:
    """Load a 3-channel ImageNet encoder state dict into ``model.encoder``, then adapt the first convolution.

    The model must have been built with ``in_channels=3``. This is the order smp's own ``get_encoder`` follows
    for downloaded weights (load, then ``encoder.set_in_channels(in_channels, pretrained=True)``), so the
    first-conv adaptation is smp's ``patch_first_conv``: for 1 channel the RGB kernels are summed; for ``C >= 2``
    channel ``i`` receives the kernel of RGB channel ``i mod 3`` and all kernels are scaled by ``3 / C`` (the
    layer's response to inputs of similar scale keeps its magnitude).
    """
    enc = model.encoder
    if not hasattr(enc, "set_in_channels"):
        raise ValueError(
            f"encoder {encoder!r} does not support local weights (no set_in_channels); use an smp encoder "
            "such as resnet18/resnet101/mit_b2"
        )
    state = _load_encoder_state(path)
    expected = enc.state_dict()
    problems: list[str] = []
    for key in ("fc.weight", "fc.bias", "head.weight", "head.bias", "last_linear.weight", "last_linear.bias"):
        if key not in expected:
            state.pop(key, None)  # classifier heads of ImageNet checkpoints (smp drops them too)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
    if problems:
        raise ValueError(
            f"encoder weights {path} do not match encoder {encoder!r} with 3 input channels: "
            + "; ".join(problems)
            + ". Expected a state dict of the same smp encoder built for RGB input."
        )
    enc.load_state_dict(state)
    enc.set_in_channels(in_channels, pretrained=True)  # smp's patch_first_conv (see docstring)
    config = getattr(model, "_hub_mixin_config", None)
    if isinstance(config, dict):
        config["in_channels"] = in_channels  # the model was built for 3 channels; record the patched count
    logger.info("initialised encoder %s from %s (first conv adapted to %d channels)", encoder, path, in_channels)


def create(
    name: str,
    in_channels: int,
    classes: int = len(CLASSES),
    encoder: str | None = None,
    weights: str | Path | None = None,
    full_res_head: bool = False,
) -> torch.nn.Module:
    """Build one of the four models; nothing is downloaded.

    Args:
        name: One of :data:`MODEL_NAMES` (case-insensitive).
        in_channels: Number of input layers of the stack (any positive number).
        classes: Number of output classes (logits channels); default 4 (:data:`cryonet.constants.CLASSES`).
        encoder: smp encoder name replacing the default backbone (:data:`DEFAULT_ENCODERS`: ``resnet101``, and
            ``mit_b2`` for segformer) of every model alike, e.g. ``"resnet18"`` in the ci profile.
        weights: Optional path to a local state dict of the encoder pretrained on 3-channel (ImageNet) input,
            as written by ``torch.save(encoder.state_dict(), path)`` (``.pt``/``.pth``) or a ``.safetensors``
            file; a torchvision-style ResNet checkpoint with a ``fc`` head also works (the head is dropped), and
            keys prefixed ``encoder.`` (a whole smp model) are reduced to the encoder's. The first convolution is
            adapted to ``in_channels`` with smp's ``patch_first_conv``: channel ``i`` gets the ImageNet kernel of
            RGB channel ``i mod 3``, all scaled by ``3 / in_channels``. None (default): random initialisation.
        full_res_head: Wrap the model in a :class:`FullResolutionHead` (both profiles do; default False: the bare
            smp model).

    Returns:
        The model (training mode). Input ``(N, in_channels, H, W)``, output logits ``(N, classes, H, W)``.

    Raises:
        ValueError: Unknown model name (the valid names are listed), bad ``in_channels``/``classes``, an
            encoder smp does not know or that the architecture rejects, or a weights file that does not match.
        FileNotFoundError: ``weights`` does not exist.
    """
    key = _check_name(name)
    if int(in_channels) < 1 or int(classes) < 1:
        raise ValueError(f"in_channels and classes must be >= 1, got in_channels={in_channels}, classes={classes}")
    enc = resolve_encoder(key, encoder)
    if enc not in smp.encoders.get_encoder_names() and not enc.startswith("tu-"):
        raise ValueError(
            f"unknown encoder {enc!r} for model {key!r}: use an smp encoder name such as resnet18, resnet34, "
            "resnet50, resnet101, mit_b0 ... mit_b5 (segmentation_models_pytorch.encoders.get_encoder_names())"
        )
    cls, fixed = _ARCHITECTURES[key]
    build_channels = 3 if weights is not None else int(in_channels)
    try:
        model = cls(encoder_name=enc, encoder_weights=None, in_channels=build_channels, classes=int(classes), **fixed)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"cannot build model {key!r} with encoder {enc!r}: {exc}") from exc
    if weights is not None:
        _init_encoder_from(model, Path(weights), enc, int(in_channels))
    if full_res_head:
        model = FullResolutionHead(model, int(in_channels), int(classes))
    logger.debug(
        "built %s (%s, %d -> %d channels, full-resolution head %s)", key, enc, in_channels, classes, full_res_head
    )
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of a model.

    Args:
        model: Any torch module.
        trainable_only: Count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(name: str, encoder: str | None = None, full_res_head: bool = False) -> str:
    """One line naming the model, its smp configuration and its encoder.

    Args:
        name: One of :data:`MODEL_NAMES`.
        encoder: Encoder override, as for :func:`create`; None gives the paper default.
        full_res_head: Whether the model carries the :class:`FullResolutionHead`.

    Returns:
        E.g. ``"cryonet: smp.UnetPlusPlus(encoder_name='resnet18', decoder_attention_type='scse')"``.
    """
    key = _check_name(name)
    cls, fixed = _ARCHITECTURES[key]
    enc = resolve_encoder(key, encoder)
    args = ", ".join([f"encoder_name={enc!r}"] + [f"{k}={v!r}" for k, v in fixed.items()])
    default = "" if encoder is None or encoder == DEFAULT_ENCODERS[key] else f" (paper: {DEFAULT_ENCODERS[key]})"
    head = " + full-resolution head" if full_res_head else ""
    return f"{key}: smp.{cls.__name__}({args}){head}{default}"
