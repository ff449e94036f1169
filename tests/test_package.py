"""The package imports next to the CPU torch, and its constants are consistent."""

from __future__ import annotations

import subprocess
import sys

from cryonet import constants
from cryonet.regions import REGIONS, get_region


def test_import_smp_next_to_cpu_torch():
    import segmentation_models_pytorch as smp
    import torch

    import cryonet._torch_compat  # noqa: F401

    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None, in_channels=5, classes=4)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 5, 64, 64)).shape == (1, 4, 64, 64)


def test_constants_consistent():
    assert set(constants.S2_BANDS) == set(constants.S2_BANDS_10M) | set(constants.S2_BANDS_20M)
    assert constants.CLASS_IDS["lake"] == 3 and constants.CLASSES[0] == "background"
    assert constants.CLASS_PRIORITY[-1] == "lake"
    assert len(constants.LAYER_GROUPS) == 7


def test_regions():
    assert get_region("poiqu").epsg == 32645 and get_region("montblanc").epsg == 32632
    assert set(REGIONS) == {"poiqu", "montblanc"}
    try:
        get_region("nowhere")
    except KeyError as exc:
        assert "poiqu" in str(exc)
    else:
        raise AssertionError("unknown region accepted")


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cryonet.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("synth", "fetch", "align"):
        assert cmd in out.stdout
