"""The package imports next to the CPU torch, and its constants are consistent."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import cryonet
from cryonet import constants, manifest
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


# --- packaging: version, licence, citation, pins ----------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_cryonet_prints_the_version():
    out = subprocess.run([sys.executable, "-m", "cryonet", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"cryonet {cryonet.__version__}"


def test_licence_file_is_the_licence_pyproject_declares():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_citation_file_cites_the_software_the_paper_and_the_data():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    assert str(cff["version"]) == cryonet.__version__
    assert cff["title"] and cff["authors"] and cff["message"]
    ids = {i["value"] for r in cff["references"] for i in r.get("identifiers", [])}
    dois = {r.get("doi") for r in cff["references"]}
    assert "arXiv:2605.21527" in ids  # the CryoNet paper
    assert "10.3390/rs14061352" in dois  # Kaushik et al. (2022), the real debris tiles
    assert "10.5067/f6jmovy5navz" in dois  # RGI 7.0


def _pins(lines: list[str], sep: str) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip().lstrip("- ").strip()
        if sep in line:
            name, version = line.split(sep, 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def test_environment_yml_pins_the_versions_of_requirements_txt():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines(), "==")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = {**_pins([d for d in conda if "==" not in d], "="), **_pins(pip, "==")}
    unpinned = {d.split("#")[0].strip() for d in conda if "=" not in d}
    assert unpinned <= {"pip", "gdal"}, f"environment.yml has unpinned dependencies: {unpinned - {'pip', 'gdal'}}"
    pinned.pop("python", None)
    assert pinned == req, (
        f"environment.yml and requirements.txt differ: only in environment.yml {set(pinned) - set(req)}, only in "
        f"requirements.txt {set(req) - set(pinned)}, other versions "
        f"{ {k: (pinned[k], req[k]) for k in set(pinned) & set(req) if pinned[k] != req[k]} }"
    )


@pytest.mark.slow
def test_a_wheel_installs_and_works_outside_the_checkout(tmp_path):
    """Build a wheel, install it into a fresh virtual environment outside the checkout, use the console script.

    Offline: the wheel is built without build isolation, and the new environment takes the pinned dependencies of
    the environment running the tests through a ``.pth`` line (that directory's own ``.pth`` files, such as the
    editable install of this checkout, are not processed, so only the installed wheel provides ``cryonet``).
    """
    dist = tmp_path / "dist"
    run = functools.partial(subprocess.run, capture_output=True, text=True, check=True, timeout=600)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT])
    (wheel,) = dist.glob("cryonet-*.whl")
    assert wheel.name.startswith(f"cryonet-{cryonet.__version__}-")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = [p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()]
    (site / "_pinned_deps.pth").write_text("\n".join(map(str, deps)) + "\n")
    run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel])
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRYONET_REGISTRY")}
    env["HF_HUB_OFFLINE"] = "1"
    cli = functools.partial(run, cwd=work, env=env)
    where = cli([py, "-c", "import cryonet; print(cryonet.__file__)"]).stdout.strip()
    assert Path(where).is_relative_to(venv), f"cryonet imported from {where}, not from the installed wheel"
    exe = venv / "bin" / "cryonet"
    assert cli([exe, "--version"]).stdout.strip() == f"cryonet {cryonet.__version__}"
    listed = cli([exe, "fetch", "--list"]).stdout.splitlines()
    assert len(listed) == len(manifest.entries()) and any("kaushik2022-debris" in line for line in listed)
    cli([exe, "-q", "synth", "--region", "poiqu", "--out", "scene", "--size", "96"])
    out = cli([exe, "-q", "features", "--scene", "scene", "--out", "stack.tif"]).stdout
    assert "44 layers" in out and (work / "stack.tif").is_file()


def test_models_import_in_a_fresh_interpreter():
    """``import cryonet.models`` works without the test suite's conftest having loaded the torchvision shim."""
    code = "import cryonet.models, cryonet.inference; print(cryonet.models.MODEL_NAMES[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "cryonet", out.stderr[-2000:]
