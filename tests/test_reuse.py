"""The one reuse rule (cryonet.reuse): a key of settings and input contents, recorded beside the artefact; and
cryonet.train.train_or_reuse, the rule applied to a training run."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from cryonet import reuse


@pytest.fixture
def inp(tmp_path):
    path = tmp_path / "in" / "stack.tif"
    path.parent.mkdir()
    path.write_bytes(b"aaaa" * 1000)
    return path


def _made(artefact, k, *, complete=True):
    """Stand-in for the work: the artefact (a directory with a file) and its record."""
    artefact.mkdir(parents=True, exist_ok=True)
    (artefact / "out.txt").write_text("done")
    return reuse.record(artefact, k, complete=complete)


def test_absent_then_reused_and_an_interrupted_run_resumes(tmp_path, inp):
    art = tmp_path / "run"
    k = reuse.key({"model": "unet", "profile": {"epochs": 3}}, {"stack": inp})
    assert reuse.status(art, k) == "absent"
    rec = _made(art, k, complete=False)  # recorded before the work; the work is interrupted
    assert rec == tmp_path / "run.reuse.json" and json.loads(rec.read_text())["complete"] is False
    assert reuse.status(art, k) == "resume"
    _made(art, k)
    assert reuse.status(art, k) == "reuse"
    assert reuse.status(art, reuse.key({"profile": {"epochs": 3}, "model": "unet"}, {"stack": str(inp)})) == "reuse"
    # a file artefact: the record lies beside it
    f = tmp_path / "pred.tif"
    f.write_bytes(b"x")
    assert reuse.status(f, k).startswith("stale: ") and "missing" in reuse.status(f, k)
    assert reuse.record(f, k) == tmp_path / "pred.tif.reuse.json" and reuse.status(f, k) == "reuse"


def test_a_changed_setting_redoes_the_work_and_is_named(tmp_path, inp):
    art = tmp_path / "run"
    _made(art, reuse.key({"model": "unet", "profile": {"epochs": 3, "seed": 0}}, {"stack": inp}))
    state = reuse.status(art, reuse.key({"model": "unet", "profile": {"epochs": 5, "seed": 0}}, {"stack": inp}))
    assert state.startswith("stale: ") and "profile.epochs: 3 -> 5" in state and "seed" not in state
    state = reuse.status(
        art, reuse.key({"model": "unet", "profile": {"epochs": 3, "seed": 0}, "lr": 1}, {"stack": inp})
    )
    assert state.startswith("stale: ") and "lr (not recorded)" in state
    state = reuse.status(art, reuse.key({"model": "unet", "profile": {"epochs": 3, "seed": 0}}, {}))
    assert state.startswith("stale: ") and "stack (no longer an input)" in state


def test_a_changed_input_with_the_same_size_and_mtime_redoes_the_work(tmp_path, inp):
    art = tmp_path / "run"
    _made(art, reuse.key({"a": 1}, {"stack": inp}))
    st = inp.stat()
    inp.write_bytes(b"bbbb" * 1000)  # same size, other content ...
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old modification time
    assert (inp.stat().st_size, inp.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    state = reuse.status(art, reuse.key({"a": 1}, {"stack": inp}, known=art))
    assert state.startswith("stale: ") and f"stack (content of {inp} differs)" in state


def test_a_touched_or_copied_input_with_the_same_content_is_reused(tmp_path, inp):
    art = tmp_path / "run"
    _made(art, reuse.key({"a": 1}, {"stack": inp}))
    st = inp.stat()
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: newer than the artefact
    assert reuse.status(art, reuse.key({"a": 1}, {"stack": inp}, known=art)) == "reuse"
    copy = tmp_path / "elsewhere.tif"
    copy.write_bytes(inp.read_bytes())
    assert reuse.status(art, reuse.key({"a": 1}, {"stack": copy})) == "reuse"


def test_a_missing_or_unreadable_record_beside_an_artefact_is_stale(tmp_path, inp):
    art = tmp_path / "run"
    k = reuse.key({"a": 1}, {"stack": inp})
    art.mkdir()
    assert reuse.status(art, k) == "absent"  # an empty directory holds nothing to reuse
    (art / "last.pt").write_bytes(b"x")
    assert reuse.status(art, k) == "stale: its reuse record run.reuse.json is missing"
    reuse.record_path(art).write_text("{not json")
    assert reuse.status(art, k) == "stale: its reuse record run.reuse.json is unreadable"
    with pytest.raises(FileNotFoundError):
        reuse.key({"a": 1}, {"stack": tmp_path / "nope.tif"})


def test_the_record_vouches_for_an_unchanged_input_so_it_is_not_read_again(tmp_path, inp, monkeypatch):
    art = tmp_path / "run"
    monkeypatch.setattr(reuse, "_settled", lambda identity: True)  # as if the input had not changed for a while
    k = reuse.key({"a": 1}, {"stack": inp})
    _made(art, k)
    assert json.loads(reuse.record_path(art).read_text())["inputs"]["stack"]["identity"] is not None
    reuse._MEMO.clear()  # a new process

    def no_reading(*args, **kwargs):
        raise AssertionError("the input was read again")

    monkeypatch.setattr(reuse.hashlib, "file_digest", no_reading)
    again = reuse.key({"a": 1}, {"stack": inp}, known=art)
    assert again["inputs"]["stack"]["sha256"] == k["inputs"]["stack"]["sha256"]
    assert reuse.status(art, again) == "reuse"
    reuse._MEMO.clear()
    st = inp.stat()
    os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # another identity: the content must be read
    with pytest.raises(AssertionError, match="read again"):
        reuse.key({"a": 1}, {"stack": inp}, known=art)


def test_a_recently_changed_input_is_not_cached(tmp_path, inp):
    reuse._MEMO.clear()
    reuse.digest(inp)  # written a moment ago: its identity could still hide a change within the clock tick
    assert not reuse._MEMO


# ------------------------------------------------------------------------------------------------------------------
# train_or_reuse (slow)
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_or_reuse_trains_reuses_resumes_and_redoes(tmp_path, caplog, make_stack):
    from cryonet import train as T
    from cryonet.config import get_profile

    sp, lp = make_stack.twin(tmp_path / "twin", size=128, seed=0)
    prof = get_profile("ci").replace(
        tile_size=32,
        tile_stride=16,
        epochs=2,
        batch_size=4,
        max_train_tiles=None,
        encoder="resnet18",
        split={"block_size_m": 640.0, "buffer_m": 0.0},
    )
    run = tmp_path / "run"
    first, status = T.train_or_reuse(sp, lp, run, model="unet", profile=prof, device="cpu")
    assert status == "trained" and first.finished and reuse.record_path(run).is_file()
    stamp = (run / "last.pt").stat().st_mtime_ns
    st = sp.stat()
    os.utime(sp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the stack touched, not changed: reused
    again, status = T.train_or_reuse(sp, lp, run, model="unet", profile=prof, device="cpu")
    assert status == "reused" and (run / "last.pt").stat().st_mtime_ns == stamp
    assert again.best_score == first.best_score and again.history == first.history

    # an interrupted run with the same key resumes, to the same weights as the uninterrupted one
    part = tmp_path / "part"
    reuse.record(
        part, reuse.key({"model": "unet", "profile": prof.to_dict()}, {"stack": sp, "labels": lp}), complete=False
    )
    T.train(sp, lp, part, model="unet", profile=prof, device="cpu", progress=False, stop_after=1)
    done, status = T.train_or_reuse(sp, lp, part, model="unet", profile=prof, device="cpu")
    assert status == "resumed" and done.finished and done.epochs_run == 2
    wa = torch.load(run / "last.pt", weights_only=True)["model_state"]
    wb = torch.load(part / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert T.train_or_reuse(sp, lp, part, model="unet", profile=prof, device="cpu")[1] == "reused"

    # another setting, or labels with another content: trained afresh, the log naming what changed
    with caplog.at_level(logging.INFO, logger="cryonet.train.reuse"):
        _, status = T.train_or_reuse(sp, lp, part, model="unet", profile=prof.replace(epochs=1), device="cpu")
    assert status == "trained" and "profile.epochs: 2 -> 1" in caplog.text
    import rasterio

    from cryonet.raster import Grid, write_raster

    with rasterio.open(lp) as src:
        lab = src.read(1)
    lab[40, 40] = 3 if lab[40, 40] != 3 else 0  # one label pixel differs
    write_raster(lp, lab, Grid.from_file(lp), nodata=255)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cryonet.train.reuse"):
        _, status = T.train_or_reuse(sp, lp, part, model="unet", profile=prof.replace(epochs=1), device="cpu")
    assert status == "trained" and "labels (content of" in caplog.text
