"""Figures of the training and comparison chapters: each returns a Figure with the expected panels; the error
categories and the test-region window are checked against hand-computed values."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from matplotlib.figure import Figure
from rasterio.crs import CRS

from cryonet import plots
from cryonet.constants import LABEL_NODATA
from cryonet.datasets import Split, Tile
from cryonet.raster import Grid, write_raster

SIZE = 64


def _tile(r: int, c: int, size: int = 16) -> Tile:
    return Tile(r, c, size, (1, 1, 1, 1), 0.0)


@pytest.fixture
def split() -> Split:
    # two groups of test tiles: three adjacent tiles at the top left, one isolated tile at the bottom right
    test = [_tile(0, 0), _tile(0, 16), _tile(16, 0), _tile(48, 48)]
    train = [_tile(32, 0), _tile(32, 16)]
    return Split(
        {"train": train, "val": [_tile(0, 48)], "test": test},
        {},
        {"block_size_m": 160.0},
        CRS.from_epsg(32645).to_wkt(),
        (10.0, 0.0, 500_000.0, 0.0, -10.0, 3_130_000.0),
        (SIZE, SIZE),
    )


@pytest.fixture
def rasters(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, (SIZE, SIZE)).astype(np.uint8)
    ref[:, -1] = LABEL_NODATA
    pred = ref.copy()
    pred[:8, :8] = 0
    grid = Grid(CRS.from_epsg(32645), Affine(10, 0, 500_000.0, 0, -10, 3_130_000.0), SIZE, SIZE)
    return (
        write_raster(tmp_path / "ref.tif", ref, grid, nodata=LABEL_NODATA),
        write_raster(tmp_path / "pred.tif", pred, grid, nodata=LABEL_NODATA),
        ref,
        pred,
    )


def test_error_map_categories():
    ref = np.array([[0, 1, 2, 3, 0, 255], [1, 2, 3, 0, 2, 1]], np.uint8)
    pred = np.array([[0, 0, 0, 1, 2, 1], [1, 3, 2, 0, 2, 255]], np.uint8)
    expected = np.array([[0, 1, 1, 3, 2, 255], [0, 3, 3, 0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(plots.error_map(ref, pred), expected)
    with pytest.raises(ValueError, match="shape"):
        plots.error_map(ref, pred[:, :3])


def test_split_region_is_the_largest_group_of_test_tiles(split):
    win = plots.split_region(split, "test")
    assert (win.row_off, win.col_off, win.height, win.width) == (0, 0, 32, 32)
    win = plots.split_region(split, "train")
    assert (win.row_off, win.col_off, win.height, win.width) == (32, 0, 16, 32)


def test_plot_history_one_and_several_runs():
    hist = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.2, 0.9, 0.7],
            "val_loss": [1.1, 0.95, 1.0],
            "val_miou_glacier": [0.3, 0.5, 0.45],
        }
    )
    fig = plots.plot_history(hist, title="one")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2 and fig.axes[1].lines[0].get_ydata().tolist() == [0.3, 0.5, 0.45]
    star = fig.axes[1].lines[1]
    assert star.get_xdata().tolist() == [2]  # best epoch
    plt.close(fig)
    fig = plots.plot_history({"a": hist, "b": hist.to_dict(orient="records")})
    assert len(fig.axes[0].lines) == 4
    plt.close(fig)
    with pytest.raises(ValueError, match="val_miou_glacier"):
        plots.plot_history(hist.drop(columns="val_miou_glacier"))


def test_plot_prediction_and_error_maps(rasters, split):
    ref_path, pred_path, ref, pred = rasters
    win = plots.split_region(split)
    fig = plots.plot_prediction(ref_path, pred_path, window=win, split=split, title="t")
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_visible()]) == 3
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (32, 32)
    # share of correct pixels in the title: 8 x 8 block set to background, of 32 x 32 valid pixels
    errors = plots.error_map(ref[:32, :32], pred[:32, :32])
    share = 100 * (errors[errors != 255] == 0).mean()
    assert f"{share:.1f} %" in fig.axes[2].get_title()
    assert fig.axes[0].get_xlim() == pytest.approx((500.0, 500.32))
    plt.close(fig)
    fig = plots.plot_error_maps(ref_path, {"model a": pred_path, "model b": ref}, window=win, split=split)
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 3 and visible[2].get_title() == "model b: 100.0 % correct"
    plt.close(fig)
    fig = plots.plot_error_maps(ref, {"m": pred})  # arrays, whole raster, pixel coordinates
    assert fig.axes[1].images[0].get_array().shape == (SIZE, SIZE)
    plt.close(fig)


def test_plot_class_scores():
    t = pd.DataFrame(
        {"iou": [0.9, 0.5, 0.2, np.nan], "iou_low": [0.85, 0.4, 0.1, np.nan], "iou_high": [0.95, 0.6, 0.3, np.nan]},
        index=["background", "clean_ice", "debris", "lake"],
    )
    fig = plots.plot_class_scores({"a": t, "b": t})
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.patches) == 6
    assert sorted(round(p.get_height(), 3) for p in ax.patches)[-2:] == [0.5, 0.5]
    plt.close(fig)
