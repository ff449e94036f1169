"""PCA: equals sklearn, exact save/load round trip, transfer applies the source components unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from cryonet.features.pca import PCATransform

BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def _scene(seed, shape=(24, 20), mix=None):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(3, *shape))
    mix = rng.normal(size=(len(BANDS), 3)) if mix is None else mix
    x = 0.3 + 0.05 * np.tensordot(mix, latent, axes=(1, 0)) + 0.005 * rng.normal(size=(len(BANDS), *shape))
    return x


def test_equals_sklearn_transform():
    x = _scene(0)
    x[:, 0, :3] = np.nan  # nodata pixels are left out of the fit and stay NaN
    t = PCATransform.fit(x, bands=BANDS, n_components=3, sample=None, seed=0)
    valid = np.isfinite(x).all(axis=0)
    ref = PCA(n_components=3, svd_solver="full").fit(x[:, valid].T)
    expected = ref.transform(x[:, valid].T).T
    # sklearn's own sign convention (svd_flip on V) is the one we enforce; compare directly.
    got = t.transform(x)
    np.testing.assert_allclose(got[:, valid], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[:, 0, :3]).all()
    np.testing.assert_allclose(t.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-10)
    # Sign convention: largest-magnitude loading of each component is positive.
    for row in t.components:
        assert row[np.abs(row).argmax()] > 0


def test_sign_convention_reproducible_under_sample_order():
    x = _scene(1)
    a = PCATransform.fit(x, bands=BANDS, sample=300, seed=3)
    b = PCATransform.fit(x[:, ::-1, ::-1].copy(), bands=BANDS, sample=None, seed=3)
    # Different samples of the same population: same axes, same signs (close, not equal).
    assert np.all(np.sum(a.components * b.components, axis=1) > 0.99)


def test_standardised_matches_sklearn_on_scaled_data():
    x = _scene(2)
    t = PCATransform.fit(x, bands=BANDS, sample=None, standardize=True)
    flat = x.reshape(len(BANDS), -1).T
    z = (flat - flat.mean(0)) / flat.std(0)
    ref = PCA(n_components=3, svd_solver="full").fit(z)
    np.testing.assert_allclose(t.transform(x).reshape(3, -1).T, ref.transform(z), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_exact(tmp_path):
    t = PCATransform.fit(_scene(3), bands=BANDS, sample=200, seed=7, standardize=True, meta={"region": "poiqu"})
    path = t.save(tmp_path / "stack.pca.json")
    back = PCATransform.load(path)
    assert back == t
    for name in ("mean", "scale", "components", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))
    assert back.bands == BANDS and back.meta == {"region": "poiqu"} and back.seed == 7
    x = _scene(4)
    np.testing.assert_array_equal(back.transform(x), t.transform(x))


def test_transfer_applies_source_components_not_a_refit(tmp_path):
    source = _scene(5)
    target = _scene(6, mix=np.random.default_rng(99).normal(size=(len(BANDS), 3)))  # another region
    src = PCATransform.fit(source, bands=BANDS, sample=None)
    loaded = PCATransform.load(src.save(tmp_path / "src.pca.json"))
    applied = loaded.transform(target)
    refit = PCATransform.fit(target, bands=BANDS, sample=None).transform(target)
    # Applying the loaded transform is exactly components @ (x - source mean) ...
    expected = np.tensordot(src.components, target - src.mean[:, None, None], axes=(1, 0))
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=1e-6)
    # ... and differs from what a refit on the target would give.
    assert not np.allclose(applied, refit, atol=1e-3)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="band names"):
        PCATransform.fit(np.zeros((3, 4, 4)), bands=BANDS)
    with pytest.raises(ValueError, match="valid pixels"):
        PCATransform.fit(np.full((10, 2, 2), np.nan), bands=BANDS)
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format"):
        PCATransform.load(bad)
    with pytest.raises(FileNotFoundError, match="cryonet features"):
        PCATransform.load(tmp_path / "missing.json")
