"""Tasseled cap: the published Nedkov (2017) table, applied as written."""

from __future__ import annotations

import numpy as np
import pytest

from cryonet.features.tasseled_cap import NEDKOV_2017, TC_LAYERS, coefficient_matrix, tasseled_cap

# Nedkov (2017), Comptes rendus Acad. bulg. Sci. 70(5):687-692, typed again here independently of the module, as
# (band, brightness, greenness, wetness) rows. Cross-checked against GRASS GIS i.tasscap (sensor=sentinel2).
PUBLISHED = {
    "B1": (0.0356, -0.0635, 0.0649),
    "B2": (0.0822, -0.1128, 0.1363),
    "B3": (0.1360, -0.1680, 0.2802),
    "B4": (0.2611, -0.3480, 0.3072),
    "B5": (0.2964, -0.3303, 0.5288),
    "B6": (0.3338, 0.0852, 0.1379),
    "B7": (0.3877, 0.3302, -0.0001),
    "B8": (0.3895, 0.3165, -0.0807),
    "B9": (0.0949, 0.0467, -0.0302),
    "B10": (0.0009, -0.0009, 0.0003),
    "B11": (0.3882, -0.4578, -0.4064),
    "B12": (0.1366, -0.4064, -0.5602),
    "B8A": (0.4750, 0.3625, -0.1389),
}


def test_table_matches_publication():
    for band, weights in PUBLISHED.items():
        np.testing.assert_array_equal(coefficient_matrix((band,))[:, 0], weights)
    assert len(NEDKOV_2017["tc_brightness"]) == 13


def _bands(rng, shape=(5, 6), names=PUBLISHED):
    return {b: rng.uniform(0, 0.8, shape) for b in names}


def test_all_13_bands_equal_published_sum():
    rng = np.random.default_rng(1)
    bands = _bands(rng)
    out = tasseled_cap(bands)
    for k, name in enumerate(TC_LAYERS):
        expected = sum(PUBLISHED[b][k] * bands[b] for b in PUBLISHED)
        np.testing.assert_allclose(out[name], expected, rtol=1e-6, atol=1e-6)


def test_ten_band_stack_leaves_out_b1_b9_b10():
    rng = np.random.default_rng(2)
    ten = [b for b in PUBLISHED if b not in ("B1", "B9", "B10")]
    bands = _bands(rng, names=ten)
    out = tasseled_cap(bands)
    expected = sum(PUBLISHED[b][2] * bands[b] for b in ten)
    np.testing.assert_allclose(out["tc_wetness"], expected, rtol=1e-6, atol=1e-6)


def test_nan_propagates_and_missing_band_refused():
    rng = np.random.default_rng(3)
    bands = _bands(rng, names=[b for b in PUBLISHED if b not in ("B1", "B9", "B10")])
    bands["B4"][0, 0] = np.nan
    out = tasseled_cap(bands)
    assert np.isnan(out["tc_brightness"][0, 0]) and np.isfinite(out["tc_brightness"][1, 1])
    del bands["B11"]
    with pytest.raises(KeyError, match="B11"):
        tasseled_cap(bands)


def test_snow_brighter_than_rock_and_vegetation_greener():
    """Physical sanity: snow is the brightest surface; vegetation has positive greenness, bare rock negative."""
    snow = dict(zip(PUBLISHED, [0.9] * 10 + [0.1, 0.05, 0.8], strict=False))
    rock = {b: np.array(0.2) for b in PUBLISHED}
    veg = {
        b: np.array(v)
        for b, v in zip(
            PUBLISHED, [0.03, 0.03, 0.06, 0.03, 0.1, 0.3, 0.4, 0.42, 0.4, 0.01, 0.2, 0.1, 0.43], strict=False
        )
    }
    snow = {b: np.array(v) for b, v in snow.items()}
    assert tasseled_cap(snow)["tc_brightness"] > tasseled_cap(rock)["tc_brightness"]
    assert tasseled_cap(veg)["tc_greenness"] > 0 > tasseled_cap(rock)["tc_greenness"]
