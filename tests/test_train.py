"""Training package: learning, checkpoints (weights_only), exact resume, determinism, evaluation, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cryonet import train as T
from cryonet.train import checkpoints, data, distributed, loop, optim

#: Tiny profile overrides: 32 px tiles with 50 % overlap, 640 m blocks, 3 epochs, batch 4.
TINY = {
    "tile_size": 32,
    "tile_stride": 16,
    "epochs": 3,
    "batch_size": 4,
    "lr": 5e-3,
    "max_train_tiles": None,
    "split": {"block_size_m": 640.0, "buffer_m": 0.0},
}


@pytest.fixture(scope="module")
def twin(tmp_path_factory, make_stack):
    return make_stack.twin(tmp_path_factory.mktemp("twin"), size=128, seed=0)


@pytest.fixture(scope="module")
def run_a(twin, tmp_path_factory):
    """An uninterrupted 3-epoch CryoNet run (shared by several slow tests)."""
    sp, lp = twin
    out = tmp_path_factory.mktemp("run_a")
    return T.train(sp, lp, out, model="cryonet", profile="ci", progress=False, **TINY)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


# ------------------------------------------------------------------------------------------------------------------
# fast tests
# ------------------------------------------------------------------------------------------------------------------
def test_public_names_are_those_of_the_package():
    """The CLI, the chapters and the other modules import these from ``cryonet.train``."""
    from cryonet.train import (  # noqa: F401
        CHECKPOINT_FORMAT,
        CheckpointError,
        TrainResult,
        checkpoint_path,
        evaluate,
        load_checkpoint,
        load_model,
        resolve_device,
        resolve_profile,
        save_checkpoint,
        train,
        train_or_reuse,
    )

    assert T.train is loop.train and T.load_model is checkpoints.load_model
    assert not hasattr(T, "_summary")  # private helpers live in their modules


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    good = tmp_path / "good.pt"
    T.save_checkpoint(good, {"format": T.CHECKPOINT_FORMAT, "x": torch.arange(1000)})
    assert T.load_checkpoint(good)["x"].sum() == 499500
    data = good.read_bytes()
    bad = tmp_path / "last.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(T.CheckpointError, match=r"last\.pt.*truncated or corrupt"):
        T.load_checkpoint(bad)
    with pytest.raises(T.CheckpointError, match="not found"):
        T.load_checkpoint(tmp_path / "nope.pt")


class _Foreign:
    def __init__(self) -> None:
        self.value = 1


def test_foreign_checkpoints_are_refused(tmp_path):
    custom = tmp_path / "custom.pt"
    torch.save({"format": T.CHECKPOINT_FORMAT, "obj": _Foreign()}, custom)
    with pytest.raises(T.CheckpointError, match=r"custom\.pt.*weights_only"):
        T.load_checkpoint(custom)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(T.CheckpointError, match=r"noise\.pt"):
        T.load_checkpoint(noise)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(T.CheckpointError, match=r"other\.pt.*not a cryonet checkpoint"):
        T.load_checkpoint(other)


def test_rng_state_round_trips_through_weights_only(tmp_path):
    import random

    gen = torch.Generator().manual_seed(3)
    checkpoints._seed_everything(11, torch.device("cpu"))
    state = checkpoints._rng_state(gen)
    T.save_checkpoint(tmp_path / "r.pt", {"format": T.CHECKPOINT_FORMAT, "rng": state})
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0), gen.manual_seed(0)
    checkpoints._set_rng_state(T.load_checkpoint(tmp_path / "r.pt")["rng"], gen)
    got = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    assert got == expected


def test_schedulers_warm_up_and_decay():
    p = torch.nn.Parameter(torch.zeros(1))
    for name in ("onecycle", "cosine"):
        opt = torch.optim.AdamW([p], lr=1.0)
        sched = optim._make_scheduler(name, opt, 1.0, total=100, warmup=0.1)
        lrs = []
        for _ in range(100):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        peak = int(np.argmax(lrs))
        assert 8 <= peak <= 11, (name, peak)
        assert lrs[0] < 0.2 and lrs[-1] < 0.01 and max(lrs) == pytest.approx(1.0, rel=0.02)
    opt = torch.optim.AdamW([p], lr=0.5)
    const = optim._make_scheduler("none", opt, 0.5, total=10, warmup=0.1)
    opt.step()
    const.step()
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="unknown scheduler"):
        optim._make_scheduler("step", opt, 0.5, total=10, warmup=0.1)


def test_head_parameters_keep_their_rate_multiple_through_every_schedule():
    from cryonet import models

    net = models.create("unet", in_channels=3, classes=4, encoder="resnet18", full_res_head=True)
    groups = optim._param_groups(net, 1e-3, 10.0)
    assert len(groups) == 2 and [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-2])
    head = {id(p) for p in net.refine.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    assert {id(p) for p in groups[0]["params"]}.isdisjoint(head)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    for name in ("onecycle", "cosine", "none"):
        opt = torch.optim.AdamW(optim._param_groups(net, 1e-3, 10.0), lr=1e-3)
        sched = optim._make_scheduler(name, opt, 1e-3, total=20, warmup=0.1)
        peak = 0.0
        for _ in range(20):
            base, head_lr = (g["lr"] for g in opt.param_groups)
            assert head_lr == pytest.approx(10.0 * base, rel=1e-9, abs=1e-15), name
            peak = max(peak, head_lr)
            opt.step()
            sched.step()
        assert peak == pytest.approx(1e-2, rel=0.05), name
    # one group without a head or at scale 1: the optimiser state of older runs keeps its layout
    assert len(optim._param_groups(net, 1e-3, 1.0)) == 1
    bare = models.create("unet", in_channels=3, classes=4, encoder="resnet18")
    assert len(optim._param_groups(bare, 1e-3, 10.0)) == 1


def test_epoch_sampler_shards_without_overlap_and_is_seeded():
    w = np.ones(10)
    full = list(data._EpochSampler(10, None, torch.Generator().manual_seed(1), distributed._Dist()))
    assert sorted(full) == list(range(10))
    g0, g1 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r0 = list(data._EpochSampler(10, None, g0, distributed._Dist(0, 2, 0)))
    r1 = list(data._EpochSampler(10, None, g1, distributed._Dist(1, 2, 0)))
    assert sorted(r0 + r1) == list(range(10)) and len(r0) == len(r1) == 5
    heavy = np.array([1.0] * 9 + [30.0])
    draws = list(data._EpochSampler(10, heavy, torch.Generator().manual_seed(0), distributed._Dist()))
    assert len(draws) == 10 and draws.count(9) >= 3
    assert list(data._EpochSampler(10, w, torch.Generator().manual_seed(5), distributed._Dist())) == list(
        data._EpochSampler(10, w, torch.Generator().manual_seed(5), distributed._Dist())
    )


def test_resolve_device_and_profile():
    assert T.resolve_device("cpu").type == "cpu"
    assert T.resolve_device("auto").type in ("cpu", "cuda", "mps")
    prof = T.resolve_profile("ci", epochs=2, split={"buffer_m": 0.0})
    assert prof.epochs == 2 and prof.split.buffer_m == 0.0 and prof.encoder == "resnet18"
    assert T.resolve_profile(prof.to_dict()) == prof


# ------------------------------------------------------------------------------------------------------------------
# training (slow)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_learns_and_writes_a_complete_run(run_a):
    res = run_a
    assert res.finished and res.epochs_run == 3 and res.encoder == "resnet18" and res.model == "cryonet"
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert all(h["encoder"] == "resnet18" for h in res.history)
    d = res.run_dir
    for name in (
        "last.pt",
        "best.pt",
        "history.csv",
        "history.json",
        "split.json",
        "split.gpkg",
        "normalizer.json",
        "run.json",
    ):
        assert (d / name).is_file(), name
    ck = torch.load(d / "last.pt", weights_only=True)  # plain torch.load with weights_only works
    assert ck["epoch"] == 3 and ck["encoder"] == "resnet18" and ck["model"] == "cryonet"
    assert ck["layers"][-2:] == ["aspect_sin", "aspect_cos"]
    assert ck["profile"]["tile_size"] == 32 and ck["split"]["file"] == "split.json"
    assert set(ck["rng"]) >= {"python", "numpy", "torch", "sampler"}
    best = torch.load(d / "best.pt", weights_only=True)
    assert best["epoch"] == res.best_epoch
    assert best["best_score"] == pytest.approx(max(h["val_miou_glacier"] for h in res.history))
    hist = json.loads((d / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert (d / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss,val_loss")
    run = json.loads((d / "run.json").read_text())
    assert run["encoder"] == "resnet18"
    # the validation metrics in the history are those of the stored confusion matrix
    from cryonet import metrics

    last = res.history[-1]
    assert last["val_miou_glacier"] == pytest.approx(metrics.summary(np.array(last["val_confusion"]))["miou_glacier"])
    # load_model gives the trained weights, in eval mode, with the stored statistics
    model, norm, meta = T.load_model(d)
    assert not model.training and meta["encoder"] == "resnet18" and norm.layers == ck["layers"]
    assert all(torch.equal(v, best["model_state"][k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(twin, run_a, tmp_path):
    sp, lp = twin
    part = T.train(sp, lp, tmp_path, model="cryonet", profile="ci", progress=False, stop_after=1, **TINY)
    assert not part.finished and part.epochs_run == 1
    # same seed -> identical metrics (epoch 1 of an independent run)
    assert part.history[0]["val_confusion"] == run_a.history[0]["val_confusion"]
    assert part.history[0]["train_loss"] == run_a.history[0]["train_loss"]
    with pytest.raises(ValueError, match="schedule"):
        T.train(sp, lp, tmp_path, progress=False, resume=True, epochs=5)
    res = T.train(sp, lp, tmp_path, model="cryonet", profile="ci", progress=False, resume=True)
    assert res.finished and res.epochs_run == 3
    for a, b in zip(run_a.history, res.history, strict=True):
        for key in ("train_loss", "val_loss", "val_miou_glacier", "val_confusion", "lr"):
            assert a[key] == b[key], key
    wa, wb = _weights(run_a.run_dir / "last.pt"), _weights(tmp_path / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # resuming a finished run returns at once with the same result
    again = T.train(sp, lp, tmp_path, progress=False, resume=True)
    assert again.epochs_run == 3 and again.history == res.history


@pytest.mark.slow
def test_evaluate_writes_metrics_with_intervals(run_a):
    import rasterio
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    from cryonet import metrics

    out = T.evaluate(run_a.run_dir, "test", n_boot=200, progress=False)
    assert out["encoder"] == "resnet18" and out["model"] == "cryonet" and out["split"] == "test"
    assert {"miou_glacier", "overall_iou_glacier", "overall_iou_all", "pixel_accuracy", "kappa"} <= set(out["summary"])
    assert list(out["classes"].index) == ["background", "clean_ice", "debris", "lake"]
    cm = out["confusion_matrix"]
    split = json.loads((run_a.run_dir / "split.json").read_text())
    n_test = sum(sum(t["class_counts"]) for t in split["tiles"]["test"])
    assert cm.sum() == n_test  # every valid test pixel counted once
    assert out["summary"]["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    ci = out["ci"]["miou_glacier"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    saved = json.loads((run_a.run_dir / "metrics_test.json").read_text())
    assert saved["encoder"] == "resnet18" and saved["confusion_matrix"] == cm.tolist()

    # the per-tile matrices: saved atomically beside the JSON (no temporary left), summing exactly to its matrix
    assert saved["cm_tiles_file"] == "cm_tiles_test.npy"
    assert out["cm_tiles_file"] == run_a.run_dir / "cm_tiles_test.npy"
    assert not list(run_a.run_dir.glob(".cm_tiles*"))
    cms = np.load(run_a.run_dir / "cm_tiles_test.npy")
    assert cms.dtype == np.int64 and cms.shape == (len(split["tiles"]["test"]), 4, 4)
    np.testing.assert_array_equal(cms.sum(axis=0), np.array(saved["confusion_matrix"]))
    np.testing.assert_array_equal(cms, out["cm_tiles"])
    assert [[t.row, t.col] for t in out["tiles"]] == [[t["row"], t["col"]] for t in split["tiles"]["test"]]
    assert out["n_tiles"] == len(out["tiles"]) and out["seconds_predict"] > 0

    # per-class intervals: those of class_intervals of the saved matrices with the run's seed
    info = json.loads((run_a.run_dir / "run.json").read_text())
    seed = info["profile"]["seed"]
    ref = metrics.class_intervals(cms, n_boot=200, seed=seed)
    np.testing.assert_array_equal(out["class_ci"].to_numpy(), ref.to_numpy())
    for c in ref.index:
        for col in ref.columns:
            v = ref.loc[c, col]
            assert saved["class_ci"][c][col] == (None if np.isnan(v) else pytest.approx(v)), (c, col)
    # ... and the summary intervals those of bootstrap_ci with the same seed
    assert (ci["estimate"], ci["low"], ci["high"]) == metrics.bootstrap_ci(
        cms, lambda m: metrics.summary(m)["miou_glacier"], n_boot=200, seed=seed
    )

    # each per-tile matrix = scikit-learn's confusion matrix of an independent prediction of the first batch of
    # tiles (read with rasterio, normalised by hand from normalizer.json, nodata rule written out here)
    norm = json.loads((run_a.run_dir / "normalizer.json").read_text())
    mean, std = np.array(norm["mean"])[:, None, None], np.array(norm["std"])[:, None, None]
    model, _, meta = T.load_model(run_a.run_dir)
    first = split["tiles"]["test"][: int(meta["profile"]["batch_size"])]
    with rasterio.open(info["stack"]) as s_src, rasterio.open(info["labels"]) as l_src:
        wins = [rasterio.windows.Window(t["col"], t["row"], t["size"], t["size"]) for t in first]
        xs = [s_src.read(window=w).astype(np.float64) for w in wins]
        ys = [l_src.read(1, window=w) for w in wins]
    xb = np.stack([np.nan_to_num((x - mean) / std, nan=0.0) for x in xs]).astype(np.float32)
    with torch.no_grad():
        preds = model(torch.from_numpy(xb)).argmax(1).numpy()
    for i, (x, y, p) in enumerate(zip(xs, ys, preds, strict=True)):
        keep = (y != 255) & (np.isnan(x).mean(axis=0) <= 0.5)
        expected = sk_confusion_matrix(y[keep], p[keep], labels=[0, 1, 2, 3])
        np.testing.assert_array_equal(cms[i], expected)


@pytest.mark.slow
def test_cli_train_and_evaluate(twin, tmp_path, capsys, monkeypatch):
    from cryonet import cli, config

    sp, lp = twin
    tiny = config.get_profile("ci").replace(**TINY).replace(epochs=1)
    monkeypatch.setitem(config.PROFILES, "tiny", tiny)
    rc = cli.main(
        [
            "-q",
            "train",
            "--stack",
            str(sp),
            "--labels",
            str(lp),
            "--model",
            "unet",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "unet (encoder resnet18) finished after 1 epochs" in out
    rc = cli.main(["-q", "evaluate", str(tmp_path / "run"), "--n-boot", "50"])
    assert rc == 0
    assert "encoder resnet18" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics_test.json").is_file() and (tmp_path / "run" / "cm_tiles_test.npy").is_file()
    rc = cli.main(["evaluate", str(tmp_path / "missing")])
    assert rc == 1 and "not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes(twin, tmp_path):
    sp, lp = twin
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, os, sys
        from cryonet import train
        tiny = json.loads({json.dumps(json.dumps(TINY))})
        tiny["epochs"] = 2
        res = train.train({str(sp)!r}, {str(lp)!r}, {str(tmp_path / "run")!r}, model="unet", profile="ci",
                          device="cpu", progress=False, **tiny)
        rank = os.environ["RANK"]
        with open({str(tmp_path)!r} + f"/result_{{rank}}.json", "w") as fh:
            json.dump({{"epochs": res.epochs_run, "best": res.best_score, "world": os.environ["WORLD_SIZE"]}}, fh)
    """)
    )
    # the subprocesses import this checkout's cryonet (not whatever an installed copy points at)
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result_{r}.json").read_text()) for r in (0, 1)]
    assert all(r["epochs"] == 2 and r["world"] == "2" for r in results)  # both ranks finished both epochs
    assert results[0]["best"] == results[1]["best"]  # metrics all-reduced: every rank sees the same score
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and ck["epoch"] == 2
    # validation confusion matrices were summed over the ranks: every validation pixel counted once
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    n_val = sum(sum(t["class_counts"]) for t in split["tiles"]["val"])
    assert np.array(ck["history"][-1]["val_confusion"]).sum() == n_val


@pytest.mark.slow
def test_early_stopping_keeps_best_checkpoint(twin, tmp_path, monkeypatch):
    sp, lp = twin
    scores = iter([0.5, 0.6, 0.4, 0.3, 0.9, 0.9])
    real = loop._summary

    def fake_summary(cm):
        out = real(cm)
        out["miou_glacier"] = next(scores)  # validation score sequence: best at epoch 2, then two worse epochs
        return out

    monkeypatch.setattr(loop, "_summary", fake_summary)  # the validation score of each epoch
    tiny = {**TINY, "epochs": 6, "early_stopping_patience": 2}
    res = T.train(sp, lp, tmp_path, model="unet", profile="ci", progress=False, **tiny)
    assert res.stopped_early and res.finished and res.epochs_run == 4
    assert res.best_epoch == 2 and res.best_score == 0.6
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["stopped_early"] and last["bad_epochs"] == 2
    again = T.train(sp, lp, tmp_path, progress=False, resume=True)  # nothing left to do
    assert again.epochs_run == 4 and again.stopped_early
