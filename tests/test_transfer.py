"""Transfer: source model applied unchanged, shift diagnostics, few-shot block and fine-tuning (train() additions)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from cryonet import metrics, models, transfer
from cryonet import train as T
from cryonet.constants import CLASSES, LABEL_NODATA
from cryonet.datasets import Normalizer, Split, Tile, invalid_pixels, scan_tiles
from cryonet.inference import predict_raster
from cryonet.raster import Grid, write_raster

#: Tiny run: U-Net with a ResNet-18 encoder, 32 px tiles, 1 epoch.
TINY = {
    "tile_size": 32,
    "tile_stride": 16,
    "epochs": 1,
    "batch_size": 4,
    "lr": 5e-3,
    "max_train_tiles": None,
    "encoder": "resnet18",
    "split": {"block_size_m": 640.0, "buffer_m": 0.0},
}


def _shifted_copy(make_stack, stack: Path, labels: Path, root: Path, shift: dict[str, float]) -> tuple[Path, Path]:
    """A copy of a twin stack (with its layer table) with ``shift`` added to some layers (same grid, same labels)."""
    layers = make_stack.TWIN_LAYERS
    root.mkdir(parents=True, exist_ok=True)
    with rasterio.open(stack) as src:
        x = src.read()
    for name, delta in shift.items():
        x[layers.index(name)] += delta
    grid = Grid.from_file(stack)
    sp = make_stack(root / "stack.tif", x, layers, [make_stack.TWIN_GROUPS[n] for n in layers], grid=grid)
    with rasterio.open(labels) as src:
        lab = src.read(1)
    lp = write_raster(root / "labels.tif", lab, grid, nodata=LABEL_NODATA)
    return sp, lp


@pytest.fixture(scope="module")
def regions(tmp_path_factory, make_stack):
    """A source twin (seed 0) and a target twin (seed 1) whose spectral layers are shifted; both with layer tables."""
    root = tmp_path_factory.mktemp("regions")
    s_stack, s_lab = make_stack.twin(root / "source", size=128, seed=0, table=True)
    t0_stack, t0_lab = make_stack.twin(root / "target0", size=128, seed=1)
    shift = {"B2": 0.25, "B3": 0.25, "B8": 0.3}
    t_stack, t_lab = _shifted_copy(make_stack, t0_stack, t0_lab, root / "target", shift)
    return (s_stack, s_lab), (t_stack, t_lab)


@pytest.fixture(scope="module")
def source_run(regions, tmp_path_factory):
    (sp, lp), _ = regions
    out = tmp_path_factory.mktemp("source_run")
    T.train(sp, lp, out, model="unet", profile="ci", progress=False, **TINY)
    T.evaluate(out, "test", n_boot=50, progress=False)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# fast tests
# ------------------------------------------------------------------------------------------------------------------
def test_block_shape_is_the_squarest_factor_pair():
    assert transfer.block_shape(16) == (4, 4)
    assert transfer.block_shape(10) == (2, 5)
    assert transfer.block_shape(7) == (1, 7)
    assert transfer.block_shape(1) == (1, 1)
    assert transfer.block_shape(50) == (5, 10)
    with pytest.raises(ValueError):
        transfer.block_shape(0)


def test_recovered_fraction_and_small_drop():
    assert transfer.recovered_fraction(0.8, 0.5, 0.65) == pytest.approx(0.5)
    assert transfer.recovered_fraction(0.8, 0.5, 0.45) == pytest.approx(-1 / 6)
    assert transfer.recovered_fraction(0.8, 0.5, 0.8) == pytest.approx(1.0)
    assert np.isnan(transfer.recovered_fraction(0.6, 0.59, 0.7))  # drop 0.01 < MIN_DROP: undefined
    assert np.isnan(transfer.recovered_fraction(0.5, 0.6, 0.7))  # no drop at all


def _grid_tiles(n: int, size: int, stride: int, counts_at) -> list[Tile]:
    return [Tile(r * stride, c * stride, size, tuple(counts_at(r, c)), 0.0) for r in range(n) for c in range(n)]


def test_fewshot_block_holds_every_class_and_leaves_them_to_the_rest():
    # 8 x 8 grid of 32 px tiles every 16 px (144 px raster); lakes in two places, debris in one corner
    def counts(r, c):
        lake = 10 if (r, c) in ((1, 1), (5, 3)) else 0
        debris = 20 if r >= 4 and c <= 3 else 0
        ice = 30 if c >= 2 else 0
        return (1000 - lake - debris - ice, ice, debris, lake)

    tiles = _grid_tiles(8, 32, 16, counts)
    block = transfer.choose_fewshot_block(tiles, (144, 144), 4, stride=16, buffer_px=8)
    assert block.shape == (2, 2) and len(block.tiles) == 4
    assert set(block.block_classes) == set(CLASSES) and set(block.rest_classes) == set(CLASSES)
    rows = sorted({t.row for t in block.tiles})
    cols = sorted({t.col for t in block.tiles})
    assert rows == [rows[0], rows[0] + 16] and cols == [cols[0], cols[0] + 16]  # contiguous on the tile grid
    w, e = block.window, block.exclusion
    assert (w.row_off, w.col_off, w.height, w.width) == (rows[0], cols[0], 48, 48)
    assert e.row_off == max(0, w.row_off - 8) and e.col_off == max(0, w.col_off - 8)
    assert e.row_off + e.height == min(144, w.row_off + 48 + 8)
    # deterministic; the lake at (1, 1) has no debris near it, so the block holds the lake at (5, 3)
    again = transfer.choose_fewshot_block(tiles, (144, 144), 4, stride=16, buffer_px=8)
    assert again == block
    assert (5 * 16, 3 * 16) in {(t.row, t.col) for t in block.tiles}
    with pytest.raises(Exception, match="no complete block"):
        transfer.choose_fewshot_block(tiles, (144, 144), 81, stride=16, buffer_px=8)


def test_score_prediction_excludes_window_and_matches_numpy(regions, tmp_path):
    _, (sp, lp) = regions
    with rasterio.open(lp) as src:
        lab = src.read(1)
    with rasterio.open(sp) as src:
        x = src.read()
    rng = np.random.default_rng(3)
    pred = lab.copy()
    flip = rng.random(lab.shape) < 0.2
    pred[flip] = rng.integers(0, 4, flip.sum())
    pred[lab == LABEL_NODATA] = 0
    pp = write_raster(tmp_path / "pred.tif", pred.astype(np.uint8), Grid.from_file(sp), nodata=LABEL_NODATA)
    excl = Window(20, 30, 40, 25)
    res = transfer.score_prediction(pp, sp, lp, tile_size=32, exclude=excl, n_boot=50, progress=False)
    valid = ~invalid_pixels(x, lab)
    valid[30:55, 20:60] = False
    expected = metrics.confusion_matrix(np.where(valid, lab, LABEL_NODATA), pred)
    np.testing.assert_array_equal(res["confusion_matrix"], expected)
    assert res["n_pixels"] == valid.sum()
    assert res["cm_tiles"].sum(axis=0).tolist() == expected.tolist()
    assert res["summary"]["miou_glacier"] == pytest.approx(metrics.summary(expected)["miou_glacier"])
    assert all(v["low"] <= v["estimate"] <= v["high"] for v in res["ci"].values())
    # the keys (and their order: metrics.json) from before the scorer moved to cryonet.metrics.score_cm_tiles
    assert list(res) == [
        "summary",
        "classes",
        "class_ci",
        "ci",
        "ci_level",
        "confusion_matrix",
        "cm_tiles",
        "tiles",
        "n_tiles",
        "n_pixels",
        "exclude",
        "tile_size",
    ]
    assert list(res["ci"]) == list(metrics.CI_METRICS) and res["n_tiles"] == len(res["cm_tiles"])
    ref = metrics.bootstrap_ci(res["cm_tiles"], lambda m: metrics.summary(m)["miou_all"], n_boot=50, seed=0)
    assert tuple(res["ci"]["miou_all"].values()) == ref
    np.testing.assert_array_equal(
        res["class_ci"].to_numpy(), metrics.class_intervals(res["cm_tiles"], n_boot=50, seed=0).to_numpy()
    )


def test_shift_diagnostics_zero_for_identical_and_exact_for_a_translation(regions, make_stack):
    (sp, _), _ = regions
    a = transfer.sample_layers(sp, sample=4000, seed=0)
    assert a.attrs["groups"]["slope"] == "terrain" and not a.isna().all(axis=1).any()
    same = transfer.shift_diagnostics(a, a.copy())
    assert np.allclose(same[["smd", "wasserstein", "ks"]].to_numpy(), 0.0)
    assert (same["outside_source_range"] <= 0.011).all()  # 1 % by construction (0.5-99.5 % range)
    # a translation of B8 by 0.3: SMD and W = 0.3 / scale exactly, other layers 0
    b = a.copy()
    b["B8"] = b["B8"] + 0.3
    d = transfer.shift_diagnostics(a, b).set_index("layer")
    scale = d.loc["B8", "scale"]
    assert scale == pytest.approx(a["B8"].dropna().std(ddof=0))
    assert d.loc["B8", "smd"] == pytest.approx(0.3 / scale)
    assert d.loc["B8", "wasserstein"] == pytest.approx(0.3 / scale, rel=1e-6)
    assert d.loc["B8", "ks"] > 0.5
    assert np.allclose(d.drop(index="B8")[["smd", "wasserstein", "ks"]].to_numpy(), 0.0)
    # with the source normaliser the scale is its std (source-normalised units)
    norm = Normalizer(list(make_stack.TWIN_LAYERS), np.zeros(8, np.float32), np.full(8, 0.5, np.float32))
    dn = transfer.shift_diagnostics(a, b, normalizer=norm).set_index("layer")
    assert dn.loc["B8", "smd"] == pytest.approx(0.6, rel=1e-5)
    g = transfer.shift_by_group(transfer.shift_diagnostics(a, b))
    assert g.index[0] == "s2" and g.loc["s2", "most_shifted"] == "B8"
    assert g.loc["s2", "mean_wasserstein"] == pytest.approx(0.3 / scale / 4, rel=1e-6)
    assert g.loc["terrain", "mean_wasserstein"] == pytest.approx(0.0, abs=1e-12)


def test_shift_diagnostics_from_stacks_large_for_shifted_and_per_class(regions):
    (sp, lp), (tp, tl) = regions
    d = transfer.shift_diagnostics(sp, tp, sample=3000, seed=0, labels=(lp, tl))
    assert set(d["class"]) == {"all", *CLASSES}
    alld = d[d["class"] == "all"].set_index("layer")
    assert alld.loc["B8", "wasserstein"] > 1.0 and alld.loc["slope", "wasserstein"] < 0.5
    near = transfer.shift_diagnostics(sp, sp, sample=3000, seed=0).set_index("layer")
    assert (near["wasserstein"] < 0.15).all() and (near["smd"].abs() < 0.1).all()


def test_check_feature_settings_refuses_other_pca_and_layers(regions, tmp_path, make_stack):
    (sp, lp), (tp, _) = regions
    assert transfer.check_feature_settings(sp, tp)["pca"] == "absent"
    a, b = tmp_path / "a", tmp_path / "b"
    sa, _ = _shifted_copy(make_stack, sp, lp, a, {})
    sb, _ = _shifted_copy(make_stack, sp, lp, b, {})
    sa.with_suffix(".pca.json").write_text(json.dumps({"components": [[1.0, 0.0]], "mean": [0.0, 0.0]}))
    sb.with_suffix(".pca.json").write_text(json.dumps({"components": [[0.0, 1.0]], "mean": [0.0, 0.0]}))
    with pytest.raises(transfer.TransferError, match="PCA transform differs.*like="):
        transfer.check_feature_settings(sa, sb)
    sb.with_suffix(".pca.json").write_text(sa.with_suffix(".pca.json").read_text())
    assert transfer.check_feature_settings(sa, sb)["pca"] == "same"
    with rasterio.open(sp) as src:
        x = src.read()[:7]
    other = make_stack(tmp_path / "seven.tif", x, make_stack.TWIN_LAYERS[:7], grid=Grid.from_file(sp))
    with pytest.raises(transfer.TransferError, match="layers"):
        transfer.check_feature_settings(sp, other)


def test_plots_of_the_transfer_chapter(regions):
    import matplotlib

    matplotlib.use("Agg")
    from cryonet import plots

    (sp, lp), (tp, tl) = regions
    a = transfer.sample_layers(sp, sample=2000, seed=0)
    b = transfer.sample_layers(tp, sample=2000, seed=1)
    d = transfer.shift_diagnostics(a, b)
    fig = plots.plot_layer_shift(a, b, d, layers=("B8", "slope", "nope"), names=("Poiqu", "Mont Blanc"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("B8") and titles[1].startswith("slope") and len(fig.axes) == 3
    w = d.set_index("layer").loc["B8", "wasserstein"]
    assert f"{w:.2f}" in titles[0]
    fig2 = plots.plot_fewshot(tl, {"a": tl, "b": tl}, block=Window(10, 20, 30, 30), exclusion=Window(0, 10, 50, 50))
    assert sum(len(ax.patches) for ax in fig2.axes) >= 6


# ------------------------------------------------------------------------------------------------------------------
# with a trained source run (slow)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_apply_source_model_uses_source_normaliser_unchanged(regions, source_run, tmp_path, make_stack):
    _, (tp, tl) = regions
    norm_file = source_run / "normalizer.json"
    before = _sha(norm_file)
    out = tmp_path / "transfer"
    res = transfer.apply_source_model(source_run, tp, tl, out, device="cpu", progress=False, n_boot=50)
    assert _sha(norm_file) == before  # the source statistics were not touched
    assert not list(out.glob("*normal*")) and not list(tp.parent.glob("*normal*"))  # none written for the target
    src_norm = Normalizer.load(norm_file)
    assert res["normalizer"]["mean"] == pytest.approx(src_norm.mean.tolist())
    # the prediction is that of the source statistics, and not that of statistics refitted on the target
    model, _, _ = T.load_model(source_run)
    same = predict_raster(
        tp,
        tmp_path / "same.tif",
        model=model,
        normalizer=src_norm,
        tile_size=32,
        batch_size=4,
        device="cpu",
        cog=False,
        progress=False,
    )
    tiles = scan_tiles(tp, tl, 32, 32, progress=False)
    refit = Normalizer.fit(tp, [t.window for t in tiles], seed=0, progress=False)
    b8 = make_stack.TWIN_LAYERS.index("B8")
    assert abs(refit.mean[b8] - src_norm.mean[b8]) > 0.2
    other = predict_raster(
        tp,
        tmp_path / "refit.tif",
        model=model,
        normalizer=refit,
        tile_size=32,
        batch_size=4,
        device="cpu",
        cog=False,
        progress=False,
    )
    with rasterio.open(res["prediction"]) as a, rasterio.open(same.labels) as b, rasterio.open(other.labels) as c:
        pa, pb, pc = a.read(1), b.read(1), c.read(1)
    np.testing.assert_array_equal(pa, pb)
    assert (pa != pc).any()
    # metrics: the whole scene, every valid pixel once
    with rasterio.open(tl) as src:
        lab = src.read(1)
    with rasterio.open(tp) as src:
        x = src.read()
    ref = np.where(invalid_pixels(x, lab) | (pa == LABEL_NODATA), LABEL_NODATA, lab)
    np.testing.assert_array_equal(res["confusion_matrix"], metrics.confusion_matrix(ref, np.minimum(pa, 3)))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["confusion_matrix"] == res["confusion_matrix"].tolist()


@pytest.mark.slow
def test_init_checkpoint_loads_the_source_weights(regions, source_run, tmp_path, monkeypatch):
    _, (tp, tl) = regions
    src = torch.load(source_run / "best.pt", weights_only=True)["model_state"]
    # no optimiser step: after one epoch the parameters are still the initial ones (BatchNorm buffers move)
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    res = T.train(
        tp,
        tl,
        tmp_path / "ft",
        model="unet",
        profile="ci",
        progress=False,
        init_checkpoint=source_run,
        normalizer=source_run,
        **TINY,
    )
    ft = torch.load(res.run_dir / "last.pt", weights_only=True)
    params = {
        n for n, _ in models.create("unet", in_channels=8, encoder="resnet18", full_res_head=True).named_parameters()
    }  # as the ci profile builds it
    assert all(torch.equal(ft["model_state"][k], src[k]) for k in params)
    assert ft["init_checkpoint"] == str(source_run / "best.pt")
    assert json.loads((res.run_dir / "run.json").read_text())["normalizer_source"] == "given"
    assert json.loads((res.run_dir / "normalizer.json").read_text()) == json.loads(
        (source_run / "normalizer.json").read_text()
    )
    # without init_checkpoint the weights are a fresh initialisation
    fresh = T.train(tp, tl, tmp_path / "fresh", model="unet", profile="ci", progress=False, **TINY)
    fw = torch.load(fresh.run_dir / "last.pt", weights_only=True)["model_state"]
    assert not all(torch.equal(fw[k], src[k]) for k in params)
    # another architecture cannot be initialised from it
    with pytest.raises(ValueError, match="architecture or the input layers differ.*model"):
        T.train(
            tp, tl, tmp_path / "bad", model="cryonet", profile="ci", progress=False, init_checkpoint=source_run, **TINY
        )
    with pytest.raises(ValueError, match="full_res_head: checkpoint True, this run False"):
        T.train(
            tp,
            tl,
            tmp_path / "bare",
            model="unet",
            profile="ci",
            progress=False,
            init_checkpoint=source_run,
            full_res_head=False,
            **TINY,
        )


@pytest.mark.slow
def test_fewshot_finetune_scores_outside_block_and_resumes(regions, source_run, tmp_path):
    _, (tp, tl) = regions
    out = tmp_path / "fewshot"
    run_dir, res = transfer.fewshot_finetune(
        source_run, tp, tl, out, n_tiles=4, epochs=2, profile="ci", seed=0, device="cpu", progress=False, n_boot=50
    )
    assert res["status"] == "trained" and run_dir == out
    blk = res["block"]
    w, e = blk["window"], blk["exclusion"]
    assert blk["n_tiles"] == 4 and blk["buffer_px"] == 0  # TINY: buffer 0 m
    split = Split.load(out / "split.json")
    for t in split.get("train"):  # fine-tuning tiles lie inside the block
        assert w["row_off"] <= t.row and t.row + t.size <= w["row_off"] + w["height"]
        assert w["col_off"] <= t.col and t.col + t.size <= w["col_off"] + w["width"]
    # the evaluation pixels: every valid pixel outside the exclusion window, for both predictions
    with rasterio.open(tl) as src:
        lab = src.read(1)
    with rasterio.open(tp) as src:
        x = src.read()
    with rasterio.open(res["prediction"]) as src:
        pf = src.read(1)
    keep = ~invalid_pixels(x, lab) & (pf != LABEL_NODATA)
    keep[e["row_off"] : e["row_off"] + e["height"], e["col_off"] : e["col_off"] + e["width"]] = False
    cm = metrics.confusion_matrix(np.where(keep, lab, LABEL_NODATA), np.minimum(pf, 3))
    np.testing.assert_array_equal(res["finetuned"]["confusion_matrix"], cm)
    assert res["transferred"]["n_pixels"] == res["finetuned"]["n_pixels"] == keep.sum()
    for r0, c0, h, wd in res["finetuned"]["tiles"]:  # no scored tile lies inside the exclusion window
        inside = (
            e["row_off"] <= r0
            and r0 + h <= e["row_off"] + e["height"]
            and e["col_off"] <= c0
            and c0 + wd <= e["col_off"] + e["width"]
        )
        assert not inside
    src_test = json.loads((source_run / "metrics_test.json").read_text())["summary"]["miou_glacier"]
    expected = transfer.recovered_fraction(
        src_test, res["transferred"]["summary"]["miou_glacier"], res["finetuned"]["summary"]["miou_glacier"]
    )
    assert (np.isnan(res["recovered"]) and np.isnan(expected)) or res["recovered"] == pytest.approx(expected)
    assert res["gain"]["estimate"] == pytest.approx(
        res["finetuned"]["summary"]["miou_glacier"] - res["transferred"]["summary"]["miou_glacier"]
    )
    # the run used the source statistics and weights, the source profile with the fine-tuning changes
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["normalizer"] == torch.load(source_run / "best.pt", weights_only=True)["normalizer"]
    assert ck["profile"]["epochs"] == 2 and ck["profile"]["early_stopping_patience"] is None
    assert ck["profile"]["lr"] == pytest.approx(TINY["lr"] * transfer.FINETUNE_LR_FACTOR)
    # same settings again: reused (the run and its prediction), same numbers
    assert (out.parent / "fewshot.reuse.json").is_file() and (out / "prediction.tif.reuse.json").is_file()
    pred_stamp = res["prediction"].stat().st_mtime_ns
    _, again = transfer.fewshot_finetune(
        source_run, tp, tl, out, n_tiles=4, epochs=2, profile="ci", seed=0, device="cpu", progress=False, n_boot=50
    )
    assert again["status"] == "reused" and again["prediction"].stat().st_mtime_ns == pred_stamp
    np.testing.assert_array_equal(again["finetuned"]["confusion_matrix"], res["finetuned"]["confusion_matrix"])
    # an interrupted fine-tuning run resumes to the same weights as the uninterrupted one
    part = tmp_path / "part"
    kw = {
        "model": "unet",
        "profile": ck["profile"],
        "progress": False,
        "init_checkpoint": source_run / "best.pt",
        "normalizer": source_run / "best.pt",
        "tile_split": split,
    }
    first = T.train(tp, tl, part, stop_after=1, **kw)
    assert not first.finished
    done = T.train(tp, tl, part, resume=True, model="unet", progress=False)
    assert done.finished and done.epochs_run == 2
    wa = torch.load(out / "last.pt", weights_only=True)["model_state"]
    wb = torch.load(part / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((part / "run.json").read_text())["init_checkpoint"] == str(source_run / "best.pt")
