"""Spectral indices: formulas on hand-computed values, zero denominators, nodata."""

from __future__ import annotations

import numpy as np
import pytest

from cryonet.features.indices import (
    INDEX_LAYERS,
    INDEX_UNITS,
    RATIO_EPS,
    band_ratio,
    normalized_difference,
    spectral_indices,
)


def _bands(**values):
    base = {"B3": 0.0, "B4": 0.0, "B8": 0.0, "B11": 0.0}
    base.update(values)
    return {k: np.atleast_1d(np.asarray(v, dtype=np.float32)) for k, v in base.items()}


def test_hand_computed_values():
    # Clean-ice-like pixel: B3=0.6, B4=0.5, B8=0.4, B11=0.1
    out = spectral_indices(_bands(B3=0.6, B4=0.5, B8=0.4, B11=0.1))
    assert out["ndsi"][0] == pytest.approx((0.6 - 0.1) / 0.7, rel=1e-6)  # 0.714286
    assert out["ndwi"][0] == pytest.approx(0.2 / 1.0, rel=1e-6)
    assert out["ndvi"][0] == pytest.approx(-0.1 / 0.9, rel=1e-6)
    assert out["ndgi"][0] == pytest.approx(0.1 / 1.1, rel=1e-6)
    assert out["ratio_red_swir"][0] == pytest.approx(0.5 / 0.101, rel=1e-6)
    assert out["ratio_nir_swir"][0] == pytest.approx(0.4 / 0.101, rel=1e-6)
    assert list(out) == list(INDEX_LAYERS) and set(INDEX_UNITS) == set(INDEX_LAYERS)
    assert all(v.dtype == np.float32 for v in out.values())


def test_vegetation_and_water_signs():
    veg = spectral_indices(_bands(B3=0.08, B4=0.04, B8=0.45, B11=0.2))
    water = spectral_indices(_bands(B3=0.08, B4=0.05, B8=0.02, B11=0.01))
    assert veg["ndvi"][0] > 0.8 and veg["ndwi"][0] < 0
    assert water["ndwi"][0] > 0.5


def test_zero_denominators_are_finite():
    out = spectral_indices(_bands())  # all bands zero
    for name in INDEX_LAYERS:
        assert np.isfinite(out[name]).all(), name
        assert out[name][0] == 0.0, name  # nd: defined 0; ratio: 0 / eps = 0
    # Non-zero numerator over a zero denominator: ratio is a / eps, finite
    assert band_ratio(np.array([0.5]), np.array([0.0]))[0] == pytest.approx(0.5 / RATIO_EPS)
    # Negative reflectance (L2A offset) must not produce a zero or negative denominator
    r = band_ratio(np.array([0.2]), np.array([-0.001]))
    assert np.isfinite(r).all() and r[0] == pytest.approx(0.2 / RATIO_EPS)
    nd = normalized_difference(np.array([0.3, 0.0]), np.array([-0.3, 0.0]))
    np.testing.assert_array_equal(nd, [0.0, 0.0])


def test_nodata_propagates():
    b = _bands(B3=[0.5, np.nan], B4=[0.2, 0.2], B8=[0.3, 0.3], B11=[0.0, 0.1])
    out = spectral_indices(b)
    for name in ("ndsi", "ndwi", "ndgi"):
        assert np.isfinite(out[name][0]) and np.isnan(out[name][1]), name
    assert np.isfinite(out["ndvi"]).all()  # does not use B3
    b = _bands(B3=0.5, B4=0.2, B8=0.3, B11=np.nan)
    out = spectral_indices(b)
    assert np.isnan(out["ratio_red_swir"][0]) and np.isnan(out["ratio_nir_swir"][0])


def test_missing_band_refused():
    b = _bands()
    del b["B11"]
    with pytest.raises(KeyError, match="B11"):
        spectral_indices(b)
