"""Typed profiles: validity, round trip through JSON, overrides, errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cryonet import config
from cryonet.config import PROFILES, Profile, SplitConfig, get_profile


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_are_valid_and_round_trip(name):
    profile = get_profile(name)
    assert profile.name == name
    assert profile.tile_size % 32 == 0 and 0 < profile.tile_stride <= profile.tile_size
    assert profile.tile_overlap == profile.tile_size - profile.tile_stride
    data = json.loads(json.dumps(profile.to_dict()))  # what a run writes next to its checkpoint
    assert set(data) == {f.name for f in dataclasses.fields(Profile)}
    back = Profile.from_dict(data)
    assert back == profile and isinstance(back.split, SplitConfig) and isinstance(back.fewshot_tiles, tuple)
    assert hash(back) == hash(profile)


def test_ci_and_paper_differ_where_they_should():
    ci, paper = get_profile("ci"), get_profile("paper")
    assert ci.encoder == "resnet18" and paper.encoder is None  # None = paper default (ResNet-101)
    assert ci.tile_size < paper.tile_size and ci.epochs < paper.epochs
    assert ci.max_train_tiles is not None and paper.max_train_tiles is None
    assert not ci.amp and not ci.ablation and paper.ablation
    # ci budget: at most 8 epochs x 24 steps = 192 train steps per model (see the module docstring)
    assert ci.epochs * ci.max_train_tiles // ci.batch_size <= 192


def test_model_names_match_the_factory():
    from cryonet.models import MODEL_NAMES

    assert config._MODEL_NAMES == MODEL_NAMES
    assert all(set(p.models) <= set(MODEL_NAMES) for p in PROFILES.values())


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(KeyError, match="ci.*paper"):
        get_profile("fast")


def test_replace_validates_and_keeps_the_original():
    ci = get_profile("ci")
    changed = ci.replace(epochs=2, split={"buffer_m": 0.0})
    assert changed.epochs == 2 and changed.split.buffer_m == 0.0 and changed.split.block_size_m == 2560.0
    assert ci.epochs == 8 and ci.split.buffer_m == 320.0  # frozen: the named profile is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        ci.replace(epoch=3)
    with pytest.raises(ValueError, match="tile_size"):
        ci.replace(tile_size=100)
    with pytest.raises(ValueError, match="scheduler"):
        ci.replace(scheduler="step")
    with pytest.raises(ValueError, match="models"):
        ci.replace(models=("cryonet", "fcn"))
    with pytest.raises(ValueError, match="val_fraction"):
        ci.replace(split={"val_fraction": 0.6, "test_fraction": 0.5})


def test_from_dict_names_unknown_and_missing_fields():
    data = get_profile("ci").to_dict()
    data["colour"] = "blue"
    del data["lr"]
    with pytest.raises(ValueError, match=r"unknown fields \['colour'\], missing fields \['lr'\]"):
        Profile.from_dict(data)


def test_profiles_written_before_the_full_resolution_head_read_as_bare_models():
    data = get_profile("ci").to_dict()
    assert data["full_res_head"] is True and get_profile("paper").full_res_head is True
    del data["full_res_head"]
    assert Profile.from_dict(data).full_res_head is False


def test_head_learning_rate_scale_defaults_to_one_for_older_runs_and_must_be_positive():
    data = get_profile("ci").to_dict()
    assert data["head_lr_scale"] == 10.0 and get_profile("paper").head_lr_scale == 10.0
    del data["head_lr_scale"]
    assert Profile.from_dict(data).head_lr_scale == 1.0  # older runs trained the head at the common rate
    with pytest.raises(ValueError, match="head_lr_scale must be > 0"):
        get_profile("ci").replace(head_lr_scale=0.0)


def test_every_former_fixed_setting_is_a_profile_field_that_replace_accepts():
    ci = get_profile("ci")
    # A recorded experiment (e.g. class_weight_power 0.25) is redone through the API.
    assert ci.replace(class_weight_power=0.25).class_weight_power == 0.25
    assert ci.replace(augment="none", weighted_sampler=False, warmup_fraction=0.0).augment == "none"
    with pytest.raises(ValueError, match="augment must be one of"):
        ci.replace(augment="rotate")
    with pytest.raises(ValueError, match="these counts must be >= 1"):
        ci.replace(n_boot=0)
    with pytest.raises(ValueError, match="ablation_train_tiles"):
        ci.replace(ablation_train_tiles=1)


def test_augment_modes_match_the_augmenter():
    from cryonet.datasets import Augmenter

    for mode in config.AUGMENT_MODES:
        assert Augmenter(["B2"], mode=mode).mode == mode
    with pytest.raises(ValueError):
        Augmenter(["B2"], mode="rotate")


def test_profiles_saved_before_the_settings_were_fields_read_with_the_values_used_then():
    data = get_profile("ci").to_dict()
    for key in config.LEGACY_DEFAULTS:
        del data[key]
    old = Profile.from_dict(data)
    assert {k: getattr(old, k) for k in config.LEGACY_DEFAULTS} == config.LEGACY_DEFAULTS
    assert old.class_weight_power == 0.5 and old.warmup_fraction == 0.1 and old.n_boot == 1000
