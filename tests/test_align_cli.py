"""`cryonet align`: the CLI adapter over cryonet.raster.align_to_grid / cryonet.prepare.align_scene."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cryonet import raster
from cryonet.cli import main
from cryonet.raster import Grid


def _inputs(make_raster):
    ref = make_raster("R.tif", np.zeros((32, 32), "float32"), epsg=32645, res=10.0, origin=(500_000.0, 3_130_000.0))
    rng = np.random.default_rng(0)
    cont = make_raster(
        "A.tif", rng.random((24, 24)).astype("float32"), epsg=32645, res=20.0, origin=(499_900.0, 3_130_100.0)
    )
    cats = make_raster(
        "C.tif", rng.integers(1, 4, (24, 24)).astype("uint8"), epsg=32645, res=20.0, origin=(499_900.0, 3_130_100.0)
    )
    return ref, cont, cats


def test_align_inputs_onto_reference(make_raster, tmp_path, capsys):
    ref, cont, cats = _inputs(make_raster)
    out = tmp_path / "aligned"
    code = main(
        ["-q", "align", "--inputs", str(cont), "--categorical", str(cats), "--reference", str(ref), "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"A\t{out / 'A.tif'}" in printed and f"C\t{out / 'C.tif'}" in printed
    grid = Grid.from_file(ref)
    assert Grid.from_file(out / "A.tif") == grid and Grid.from_file(out / "C.tif") == grid
    with rasterio.open(out / "A.tif") as a, rasterio.open(out / "C.tif") as c:
        assert a.dtypes[0] == "float32" and c.dtypes[0] == "uint8"
        cls = c.read(1)
    assert set(np.unique(cls)) <= {1, 2, 3}  # nearest neighbour: no interpolated class ids, no nodata (covered)
    # continuous input resampled bilinearly: equal to the library call
    direct = raster.align_to_grid(cont, grid, tmp_path / "direct.tif")
    np.testing.assert_array_equal(raster.read_raster(out / "A.tif"), raster.read_raster(direct))


def test_align_missing_input_exit_1(make_raster, tmp_path, capsys):
    ref, _, _ = _inputs(make_raster)
    missing = tmp_path / "absent.tif"
    code = main(["-q", "align", "--inputs", str(missing), "--reference", str(ref), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err


@pytest.mark.slow
def test_align_synthetic_poiqu_scene(tmp_path, capsys):
    synthetic = pytest.importorskip("cryonet.synthetic")
    if not hasattr(synthetic, "generate_scene"):
        pytest.skip("cryonet.synthetic.generate_scene is not available")
    scene = synthetic.generate_scene("poiqu", tmp_path / "scene", size=300, seed=0, progress=False)
    assert main(["-q", "align", "--scene", str(scene.root), "--out", str(tmp_path / "aligned")]) == 0
    grid = Grid.from_file(scene.reference_band)
    for name in [*scene.s2, "dem", "coherence", "phase", "labels"]:
        assert Grid.from_file(tmp_path / "aligned" / f"{name}.tif") == grid, name
    with rasterio.open(tmp_path / "aligned" / "labels.tif") as ds:
        labels = ds.read(1)
    assert {0, 1, 2, 3} <= set(np.unique(labels).tolist())
    for name in ("B2", "B12", "dem", "coherence"):
        arr = raster.read_raster(tmp_path / "aligned" / f"{name}.tif")
        assert np.isfinite(arr).mean() > 0.9, name
    refl = raster.read_raster(tmp_path / "aligned" / "B2.tif")[0]
    assert np.nanmin(refl) >= 0 and np.nanmax(refl) <= 1.5
    np.testing.assert_array_equal(labels == 255, np.isnan(refl))  # no reference where the scene has no S2 data
    # bilinear resampling cannot leave the source DEM's range
    src_dem = raster.read_raster(scene.dem)[0]
    dem = raster.read_raster(tmp_path / "aligned" / "dem.tif")[0]
    assert np.nanmin(src_dem) - 1e-3 <= np.nanmin(dem) and np.nanmax(dem) <= np.nanmax(src_dem) + 1e-3
