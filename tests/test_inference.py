"""Full-scene inference: exact grid, seamless blending bookkeeping, nodata, COG output."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from cryonet.datasets import Normalizer
from cryonet.inference import blend_weights, predict_raster, window_offsets
from cryonet.raster import Grid


class PixelModel(torch.nn.Module):
    """A 1x1 convolution: its output at a pixel depends only on that pixel, so blending must not change it."""

    def __init__(self, layers: int, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(layers, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 3.0


@pytest.fixture
def stack(tmp_path, make_stack):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 70, 93)).astype("float32")
    data[:, :5, :7] = np.nan  # no valid input -> label nodata
    grid = Grid(CRS.from_epsg(32645), from_origin(400_000, 3_100_000, 10, 10), 93, 70)
    path = make_stack(tmp_path / "stack.tif", data, ["a", "b", "c"], grid=grid)
    norm = Normalizer(["a", "b", "c"], np.zeros(3, "float32"), np.ones(3, "float32"))
    return path, data, grid, norm


def test_offsets_cover_and_stay_inside():
    assert window_offsets(10, 32, 24) == [0]
    offs = window_offsets(93, 32, 24)
    assert offs[0] == 0 and offs[-1] == 93 - 32 and all(b - a <= 24 for a, b in zip(offs, offs[1:], strict=False))


def test_blend_weights_positive_and_peaked():
    w = blend_weights(32)
    assert w.min() > 0 and w[15:17, 15:17].min() > 0.99 and w[0, 0] < 0.01


@pytest.mark.parametrize("tile,overlap", [(32, 8), (32, 0), (128, 32)])
def test_pixelwise_model_blends_to_direct_prediction(stack, tmp_path, tile, overlap):
    path, data, grid, norm = stack
    model = PixelModel(3)
    out = tmp_path / "pred.tif"
    probs_out = tmp_path / "probs.tif"
    res = predict_raster(
        path,
        out,
        model=model,
        normalizer=norm,
        tile_size=tile,
        overlap=overlap,
        batch_size=3,
        device="cpu",
        probabilities_path=probs_out,
        progress=False,
    )
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(np.nan_to_num(data, nan=0.0))[None]), 1)[0].numpy()
    with rasterio.open(out) as src:
        assert (src.crs, src.transform, src.shape) == (grid.crs, grid.transform, grid.shape)
        labels = src.read(1)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(probs_out) as src:
        probs = src.read()
        assert src.descriptions[0] == "p_background"
    valid = ~np.isnan(data).all(0)
    np.testing.assert_allclose(probs[:, valid], direct[:, valid], atol=1e-5)
    assert (labels[~valid] == 255).all()
    np.testing.assert_array_equal(labels[valid], direct.argmax(0)[valid])
    assert res.windows == len(window_offsets(70, tile, tile - overlap)) * len(window_offsets(93, tile, tile - overlap))


def test_layer_mismatch_refused(stack, tmp_path):
    path, _, _, _ = stack
    wrong = Normalizer(["x", "b", "c"], np.zeros(3, "float32"), np.ones(3, "float32"))
    with pytest.raises(ValueError, match="layers"):
        predict_raster(path, tmp_path / "p.tif", model=PixelModel(3), normalizer=wrong, tile_size=32, progress=False)
    assert not (tmp_path / "p.tif").exists()
