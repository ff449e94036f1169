"""Layer-group importance: joint permutation, permutation importance (hand-built and checkpointed models),
drop-group ablation with retraining, the figure and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cryonet import importance as I
from cryonet.constants import LABEL_NODATA
from cryonet.datasets import scan_tiles
from cryonet.stackfile import StackFile


class SignalModel(torch.nn.Module):
    """Classifies each pixel by the nearest class id of one layer: perfect on the group stack, blind to the rest."""

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, self.layer : self.layer + 1]
        k = torch.arange(4, dtype=x.dtype, device=x.device).view(1, 4, 1, 1)
        return -10.0 * (v - k) ** 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_stack):
    return make_stack.group_stack(tmp_path_factory.mktemp("imp"))


def _table(stack: Path) -> pd.DataFrame:
    return StackFile(stack).table


# ------------------------------------------------------------------------------------------------------------------
class LakeFromS2Model(torch.nn.Module):
    """Lake from layer B2 (s2 group, band 0) alone, the other classes from ``elevation`` (terrain, band ``signal``)."""

    def __init__(self, signal: int) -> None:
        super().__init__()
        self.signal = signal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, b2 = x[:, self.signal : self.signal + 1], x[:, 0:1]
        k = torch.arange(3, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return torch.cat([-10.0 * (v - k) ** 2, 50.0 * (b2 - 0.5)], dim=1)


def test_per_class_drops_name_the_class_that_needs_the_group(tiny, make_stack, make_run):
    sp, lp = tiny
    x, y = I.load_tiles(sp, lp, scan_tiles(sp, lp, 32, 32, progress=False))
    rng = np.random.default_rng(3)
    x[:, 0] = np.where(np.isnan(x[:, 0]), np.nan, (y == 3) + rng.normal(0, 0.05, y.shape)).astype(np.float32)
    df = I.permutation_importance_tiles(
        LakeFromS2Model(make_stack.SIGNAL),
        make_run.identity_normalizer(),
        x,
        y,
        _table(sp),
        repeats=2,
        seed=0,
        progress=False,
    )
    assert df.attrs["baseline_class_iou"] == pytest.approx({"background": 1, "clean_ice": 1, "debris": 1, "lake": 1})
    drops = I.class_drops(df)
    assert list(drops.columns) == ["clean_ice", "debris", "lake"]
    assert list(drops.index) == ["s2", "terrain", "texture"]
    # terrain decides clean ice and debris only: scrambling it cannot touch lakes, decided by B2
    assert drops.loc["terrain", "lake"] == 0.0
    assert drops.loc["terrain", "debris"] > 0.3 and drops.loc["terrain", "clean_ice"] > 0.3
    # s2 decides lakes: permuting it scatters lake predictions (lake IoU falls most)
    assert drops.loc["s2", "lake"] > 0.5 and drops.loc["s2", "lake"] > drops.loc["s2", "debris"]
    assert (drops.loc["texture"] == 0.0).all()
    # the per-class drops come from the same matrices as the summary metric: their glacier mean is the drop
    np.testing.assert_allclose(
        df[[f"drop_iou_{c}" for c in ("clean_ice", "debris", "lake")]].mean(axis=1), df["drop"], atol=1e-12
    )
    with pytest.raises(I.ImportanceError, match="rerun the permutation importance"):
        I.class_drops(df[["group", "drop"]])


def test_joint_permutation_keeps_pixel_tuples_and_nodata():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 8, 8)).astype(np.float32)
    x[0, :, 0, :] = np.nan
    valid = np.ones((3, 8, 8), bool)
    valid[0, 0, :] = False
    valid[2, 5, 5] = False
    layers = np.array([1, 3])
    out = I.permute_pixels(x, valid, layers, np.random.default_rng(1))
    assert out.shape == (3, 2, 8, 8)
    # invalid pixels are not moved (the NaN row stays in place)
    np.testing.assert_array_equal(out[0][:, 0, :], x[0][layers][:, 0, :])
    assert out[2, 0, 5, 5] == x[2, 1, 5, 5] and out[2, 1, 5, 5] == x[2, 3, 5, 5]
    # every valid pixel receives the (layer 1, layer 3) pair of one valid pixel: the pair moves together
    before = {(a, b) for a, b in zip(x[:, 1][valid], x[:, 3][valid], strict=True)}
    after = {(a, b) for a, b in zip(out[:, 0][valid], out[:, 1][valid], strict=True)}
    assert before == after
    # pooled across tiles: values leave their tile
    assert not np.array_equal(np.sort(out[1, 0].ravel()), np.sort(x[1, 1].ravel()))
    assert (out[:, 0][valid] != x[:, 1][valid]).mean() > 0.9


def test_signal_group_is_important_and_ignored_groups_exactly_zero(tiny, make_stack, make_run):
    sp, lp = tiny
    tiles = scan_tiles(sp, lp, 32, 32, progress=False)
    x, y = I.load_tiles(sp, lp, tiles)
    assert x.shape == (len(tiles), len(make_stack.GROUP_LAYERS), 32, 32) and (y[:, :2][:3] == LABEL_NODATA).all()
    x0 = x.copy()
    df = I.permutation_importance_tiles(
        SignalModel(make_stack.SIGNAL),
        make_run.identity_normalizer(),
        x,
        y,
        _table(sp),
        repeats=3,
        seed=0,
        progress=False,
    )
    np.testing.assert_array_equal(x, x0)  # permuted in place, restored
    assert list(df.columns) == [
        "group",
        "repeat",
        "metric",
        "baseline",
        "score",
        "drop",
        "drop_iou_background",
        "drop_iou_clean_ice",
        "drop_iou_debris",
        "drop_iou_lake",
    ]
    assert len(df) == 9 and df.attrs["baseline"] == pytest.approx(1.0)
    summ = df.attrs["summary"]
    assert list(summ.index) == ["s2", "terrain", "texture"]  # stack order of LAYER_GROUPS
    assert summ.loc["terrain", "mean_drop"] > 0.5
    assert (df.loc[df.group != "terrain", "drop"] == 0.0).all()
    assert summ.loc["s2", "low"] == 0.0 and summ.loc["s2", "high"] == 0.0
    t = df.loc[df.group == "terrain", "drop"]
    assert summ.loc["terrain", "low"] < t.mean() < summ.loc["terrain", "high"]
    # deterministic for a seed, different for another
    again = I.permutation_importance_tiles(
        SignalModel(make_stack.SIGNAL),
        make_run.identity_normalizer(),
        x,
        y,
        _table(sp),
        groups=["terrain"],
        repeats=3,
        seed=0,
        progress=False,
    )
    np.testing.assert_array_equal(again["drop"], t)  # a group's draws do not depend on the other groups run
    other = I.permutation_importance_tiles(
        SignalModel(make_stack.SIGNAL),
        make_run.identity_normalizer(),
        x,
        y,
        _table(sp),
        groups=["terrain"],
        repeats=3,
        seed=1,
        progress=False,
    )
    assert not np.array_equal(other["drop"], t)


def test_importance_summary_t_interval():
    df = pd.DataFrame({"group": ["a"] * 4 + ["b"], "drop": [0.1, 0.2, 0.3, 0.4, 0.5]})
    s = I.importance_summary(df)
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * np.std([0.1, 0.2, 0.3, 0.4], ddof=1) / 2
    assert s.loc["a", "mean_drop"] == pytest.approx(0.25)
    assert s.loc["a", "high"] - s.loc["a", "mean_drop"] == pytest.approx(half)
    assert s.loc["b", "n"] == 1 and np.isnan(s.loc["b", "low"])


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    sp, lp = tiny
    with pytest.raises(I.ImportanceError, match="group"):
        I.group_layers(_table(sp), ["insar"])
    with pytest.raises(I.ImportanceError, match="unknown metric"):
        I.permutation_importance(tmp_path, sp, lp, metric="accuracy")
    with pytest.raises(I.ImportanceError, match="split.json"):
        I.permutation_importance(tmp_path, sp, lp)


@pytest.mark.slow
def test_permutation_importance_of_a_checkpointed_run(tiny, tmp_path, make_stack, make_run):
    """Through the run directory: baseline equals cryonet.train.evaluate; blind groups drop by exactly 0."""
    from cryonet.train import evaluate

    sp, lp = tiny
    run = make_run(tmp_path / "run", sp, lp, uses=[make_stack.SIGNAL])
    df = I.permutation_importance(run, sp, lp, repeats=2, device="cpu", progress=False)
    ev = evaluate(run, "test", n_boot=10, device="cpu", progress=False)
    assert df.attrs["baseline"] == pytest.approx(ev["summary"]["overall_iou_glacier"], abs=1e-9)
    assert df.attrs["n_pixels"] == ev["summary"]["n_pixels"]
    assert (df.loc[df.group != "terrain", "drop"] == 0.0).all()
    assert (df.loc[df.group == "terrain", "score"] != df.attrs["baseline"]).all()
    assert df.attrs["model"] == "unet" and df.attrs["split"] == "test"
    sub = I.permutation_importance(
        run, sp, lp, repeats=1, groups=["texture"], max_tiles=1, device="cpu", progress=False
    )
    assert sub.attrs["n_tiles"] == 1 and (sub["drop"] == 0.0).all()


def test_reduced_stack_is_written_window_by_window(tiny, tmp_path):
    import rasterio

    sp, _ = tiny
    out = I.write_reduced_stack(sp, tmp_path / "red" / "stack.tif", ["terrain"], block=40)
    table = StackFile(out).table
    assert list(table["layer"]) == ["B2", "B3", "glcm_contrast"] and list(table["band"]) == [1, 2, 3]
    with rasterio.open(sp) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(b.read(), a.read([1, 2, 5]))
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
    mtime = out.stat().st_mtime_ns
    I.write_reduced_stack(sp, out, ["terrain"])  # resume: kept
    assert out.stat().st_mtime_ns == mtime
    with pytest.raises(I.ImportanceError, match="no layer"):
        I.write_reduced_stack(sp, tmp_path / "x.tif", ["s2", "terrain", "texture"])
    # as a VRT (what the ablation writes): the same layers and pixels, read from the full stack, nothing copied
    vrt = I.write_reduced_stack(sp, tmp_path / "vrt" / "stack.vrt", ["terrain"])
    assert vrt.stat().st_size < 20_000 and list(StackFile(vrt).table["layer"]) == list(table["layer"])
    with rasterio.open(vrt) as v, rasterio.open(out) as b:
        assert v.driver == "VRT" and b.driver == "GTiff"
        np.testing.assert_array_equal(v.read(), b.read())
        assert (v.descriptions, v.tags()) == (b.descriptions, b.tags())
        assert v.tags()["cryonet_dropped_groups"] == "terrain"


def test_ablation_keeps_the_stack_copy_of_an_earlier_version(tmp_path):
    gdir = tmp_path / "texture"
    assert I._reduced_path(gdir) == gdir / I.REDUCED_STACK
    gdir.mkdir()
    (gdir / "stack.tif").write_bytes(b"")
    assert I._reduced_path(gdir) == gdir / "stack.tif"


@pytest.mark.slow
def test_drop_group_ablation_retrains_and_resumes(tmp_path, monkeypatch, make_stack, make_run):
    """Mechanics of the ablation, cross-checked with cryonet.train.evaluate of each run (learning is not asserted:
    a few CPU epochs are too few for a from-scratch U-Net to be reliably better with the signal group)."""
    from cryonet.train import evaluate

    sp, lp = make_stack.group_stack(tmp_path / "scene", size=128)
    over = {**make_run.PROFILE, "epochs": 2, "tile_stride": 16, "split": {"block_size_m": 640.0, "buffer_m": 0.0}}
    df = I.drop_group_ablation(
        sp,
        lp,
        tmp_path / "abl",
        groups=["s2", "terrain"],
        model="unet",
        profile="ci",
        device="cpu",
        progress=False,
        **over,
    )
    assert list(df["group"]) == ["s2", "terrain"]
    assert df["same_split"].all()  # every layer shares the NaN rows, so the tiles and the split are the same
    assert list(df["layers_left"]) == [3, 3]
    assert df.loc[1, "dropped_layers"] == ["elevation", "slope"]
    # scores equal evaluate() of each run on its own (identical) test split: the reduced models were scored on
    # the right layers of the full stack's tiles, and the full model on all of them
    full = evaluate(tmp_path / "abl" / "full" / "run", "test", n_boot=10, device="cpu", progress=False)
    assert df.attrs["full_score"] == pytest.approx(full["summary"]["overall_iou_glacier"], abs=1e-9)
    for row in df.itertuples():
        ev = evaluate(row.run_dir, "test", n_boot=10, device="cpu", progress=False)
        assert row.score == pytest.approx(ev["summary"]["overall_iou_glacier"], abs=1e-9)
        assert row.drop == pytest.approx(df.attrs["full_score"] - row.score)
        assert json.loads((Path(row.run_dir) / "run.json").read_text())["layers"] == [
            n for n in make_stack.GROUP_LAYERS if n not in row.dropped_layers
        ]
    assert (tmp_path / "abl" / "terrain" / I.ABLATION_FILE).is_file()

    import cryonet.train

    def boom(*a, **k):
        raise AssertionError("a finished group must not be retrained")

    monkeypatch.setattr(cryonet.train, "train", boom)
    again = I.drop_group_ablation(
        sp,
        lp,
        tmp_path / "abl",
        groups=["s2", "terrain"],
        base_run=tmp_path / "abl" / "full" / "run",
        device="cpu",
        progress=False,
    )
    np.testing.assert_allclose(again["score"], df["score"])


@pytest.mark.slow
def test_drop_group_ablation_redoes_a_stale_group_and_keeps_a_valid_one(tmp_path, caplog, make_stack, make_run):
    """A group's result is reused only while the reference checkpoint, the profile and the full stack's content are
    unchanged (the one reuse rule, cryonet.reuse).

    Each check puts a file the library never writes into the group's folder: it survives only if the folder was
    kept, and the run's ``last.pt`` keeps its modification time only if nothing was retrained.
    """
    import hashlib
    import logging
    import os

    from cryonet.train import load_checkpoint, save_checkpoint

    sp, lp = make_stack.group_stack(tmp_path / "scene")
    ref = make_run(tmp_path / "ref", sp, lp, uses=[make_stack.SIGNAL])
    gdir = tmp_path / "abl" / "texture"
    last = gdir / "run" / "last.pt"

    def ablate(**over):
        df = I.drop_group_ablation(
            sp,
            lp,
            tmp_path / "abl",
            groups=["texture"],
            base_run=ref,
            device="cpu",
            progress=False,
            **{"epochs": 1, **over},
        )
        return df, json.loads((gdir / I.ABLATION_FILE).read_text())

    def mark() -> int:
        (gdir / "marker").write_text("kept")
        return last.stat().st_mtime_ns

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    df, row = ablate()
    assert row["full_checkpoint_sha256"] == sha(ref / "best.pt")
    assert row["profile"]["epochs"] == 1 and row["profile"]["tile_size"] == 32
    assert (row["stack_size"], row["stack_mtime_ns"]) == (sp.stat().st_size, sp.stat().st_mtime_ns)

    # (a) same inputs: kept, nothing retrained, the same row
    t = mark()
    df_a, row_a = ablate()
    assert (gdir / "marker").is_file() and last.stat().st_mtime_ns == t
    assert row_a == row
    pd.testing.assert_frame_equal(df_a, df)
    # an interrupted group (no ablation.json yet) with the same inputs resumes its finished run: no retraining
    (gdir / I.ABLATION_FILE).unlink()
    _, row_r = ablate()
    assert (gdir / "marker").is_file() and last.stat().st_mtime_ns == t
    assert row_r["score"] == row["score"] and row_r["epochs_run"] == 1

    # (b) the reference checkpoint changes (same weights, other bytes, written by the library's save path)
    ckpt = load_checkpoint(ref / "best.pt")
    ckpt["best_score"] = 0.5
    save_checkpoint(ref / "best.pt", ckpt)
    assert sha(ref / "best.pt") != row["full_checkpoint_sha256"]
    mark()
    with caplog.at_level(logging.WARNING, logger="cryonet.importance"):
        _, row_b = ablate()
    assert not (gdir / "marker").exists()
    assert row_b["full_checkpoint_sha256"] == sha(ref / "best.pt")
    assert any(str(gdir) in r.getMessage() and "full_checkpoint (content of" in r.getMessage() for r in caplog.records)

    # (c) another profile: ablation.json records it ...
    mark()
    _, row_c = ablate(epochs=2)
    assert not (gdir / "marker").exists()
    assert row_c["epochs_run"] == 2 and row_c["profile"]["epochs"] == 2
    # ... and an interrupted run (no ablation.json) trained with another profile is not resumed
    (gdir / I.ABLATION_FILE).unlink()
    mark()
    _, row_c2 = ablate(epochs=1)
    assert not (gdir / "marker").exists()
    assert row_c2["epochs_run"] == 1
    assert json.loads((gdir / "run" / "run.json").read_text())["profile"]["epochs"] == 1

    # (d) the full stack touched, its content unchanged: kept, also when the group was interrupted (resumed)
    st = sp.stat()
    os.utime(sp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    t = mark()
    _, row_d = ablate()
    assert (gdir / "marker").is_file() and last.stat().st_mtime_ns == t and row_d == row_c2
    (gdir / I.ABLATION_FILE).unlink()
    _, row_d2 = ablate()
    assert (gdir / "marker").is_file() and last.stat().st_mtime_ns == t and row_d2["score"] == row_c2["score"]

    # (e) the full stack's content changes, its modification time put back: redone
    import rasterio

    st = sp.stat()
    with rasterio.open(sp, "r+") as dst:
        dst.update_tags(note="rewritten")
    os.utime(sp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha(sp) != json.loads(Path(str(gdir) + ".reuse.json").read_text())["inputs"]["stack"]["sha256"]
    t = mark()
    with caplog.at_level(logging.WARNING, logger="cryonet.importance"):
        _, row_e = ablate()
    assert not (gdir / "marker").exists() and last.stat().st_mtime_ns != t
    assert any("stack (content of" in r.getMessage() for r in caplog.records)
    assert row_e["stack_mtime_ns"] == sp.stat().st_mtime_ns == st.st_mtime_ns


def test_plot_importance(tiny):
    from cryonet.plots import plot_importance

    df = pd.DataFrame(
        {"group": ["s2", "s2", "terrain", "terrain"], "repeat": [0, 1, 0, 1], "drop": [0.01, 0.03, 0.5, 0.6]}
    )
    fig = plot_importance(df, title="t")
    ax = fig.axes[0]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx([0.02, 0.55])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert set(labels) == {"s2", "terrain"}


@pytest.mark.slow
def test_importance_cli(tiny, tmp_path, capsys, make_stack, make_run):
    from cryonet.cli import main

    sp, lp = tiny
    run = make_run(tmp_path / "run", sp, lp, uses=[make_stack.SIGNAL])
    out = tmp_path / "imp.csv"
    rc = main(
        [
            "-q",
            "importance",
            str(run),
            "--stack",
            str(sp),
            "--labels",
            str(lp),
            "--repeats",
            "2",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "terrain" in text and "baseline" in text and "mean drop of each class's IoU" in text
    table = pd.read_csv(out)
    assert len(table) == 6 and (table.loc[table.group != "terrain", "drop"] == 0).all()
    assert (table.loc[table.group != "terrain", "drop_iou_debris"] == 0).all()  # per-class columns are saved
    assert I.class_drops(table).shape == (3, 3)
    assert main(["importance", str(tmp_path), "--stack", str(sp), "--labels", str(lp)]) == 1
