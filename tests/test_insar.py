"""InSAR layers and the boxcar coherence estimator, on simulated circular-Gaussian pairs of known coherence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from cryonet.features.insar import INSAR_LAYERS, estimate_coherence, insar_layers

SHAPE = (256, 256)


def _circular_gaussian(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-variance circular complex Gaussian samples."""
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2.0)


def _pair(gamma: float, seed: int, ramp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """s2 = (γ s1 + sqrt(1-γ²) n) e^{-iφ}: true coherence γ, interferometric phase arg(s1 s2*) = φ."""
    rng = np.random.default_rng(seed)
    s1 = _circular_gaussian(rng, SHAPE)
    s2 = gamma * s1 + np.sqrt(1.0 - gamma**2) * _circular_gaussian(rng, SHAPE)
    if ramp is not None:
        s2 = s2 * np.exp(-1j * ramp)
    return s1, s2


def _ramp(cols_per_cycle: float = 256.0, rows_per_cycle: float = 512.0) -> np.ndarray:
    """A linear phase ramp, radians (default 0.025 rad per column, 0.012 rad per row)."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return 2 * np.pi * (cols / cols_per_cycle + rows / rows_per_cycle)


def _ramp_factor(step: float, n: int) -> float:
    """|mean of e^{i k step}| over n pixels (a Dirichlet kernel): how much a ramp lowers a window's coherence."""
    return float(abs(np.sin(n * step / 2) / (n * np.sin(step / 2))))


def _expected_sample_coherence(gamma: float, looks: int) -> float:
    """E[γ̂] for ``looks`` independent samples (Touzi et al. 1999, eq. 9):

    Γ(L) Γ(3/2) / Γ(L + 1/2) · ₃F₂(3/2, L, L; L + 1/2, 1; γ²) · (1 - γ²)^L, the series summed in log space.
    """
    z = gamma * gamma
    log_pre = gammaln(looks) + gammaln(1.5) - gammaln(looks + 0.5)
    if z == 0.0:
        return float(np.exp(log_pre))
    k = np.arange(50_000)
    log_terms = (
        gammaln(1.5 + k)
        - gammaln(1.5)
        + 2.0 * (gammaln(looks + k) - gammaln(looks))
        - (gammaln(looks + 0.5 + k) - gammaln(looks + 0.5))
        - 2.0 * gammaln(k + 1.0)
        + k * np.log(z)
    )
    return float(np.exp(log_pre + logsumexp(log_terms) + looks * np.log1p(-z)))


@pytest.mark.parametrize("gamma", [0.2, 0.5, 0.8, 0.95])
def test_recovers_known_coherence_with_15x15_window(gamma: float) -> None:
    s1, s2 = _pair(gamma, seed=int(gamma * 100), ramp=_ramp(2048.0, 4096.0))
    coh, _ = estimate_coherence(s1, s2, window=15)
    mean = float(np.nanmean(coh))
    assert abs(mean - gamma) < 0.03
    # And the mean equals the theoretical expectation of the estimator for 225 looks (bias included); ~1100
    # independent windows give a standard error of about 0.001. The gentle ramp lowers the coherence within a
    # window by the Dirichlet factor (< 0.02 %).
    factor = _ramp_factor(2 * np.pi / 2048, 15) * _ramp_factor(2 * np.pi / 4096, 15)
    assert abs(mean - _expected_sample_coherence(gamma * factor, 225)) < 0.006


def test_bias_is_positive_and_shrinks_with_window() -> None:
    for gamma in (0.0, 0.2):
        s1, s2 = _pair(gamma, seed=7)
        means = [float(np.nanmean(estimate_coherence(s1, s2, window=w)[0])) for w in (3, 5, 9, 15)]
        assert all(m > gamma for m in means)
        assert means == sorted(means, reverse=True), means
        for w, m in zip((3, 5, 9, 15), means, strict=True):
            assert m == pytest.approx(_expected_sample_coherence(gamma, w * w), abs=0.006)
    # Pure noise, 3 × 3 window: E[γ̂] = Γ(9)Γ(3/2)/Γ(9.5) ≈ 0.30, far from the true 0.
    assert _expected_sample_coherence(0.0, 9) == pytest.approx(0.2995, abs=1e-3)


def test_recovers_phase_ramp() -> None:
    ramp = _ramp()
    s1, s2 = _pair(0.8, seed=3, ramp=ramp)
    coh, phase = estimate_coherence(s1, s2, window=(9, 7))
    valid = ~np.isnan(phase)
    err = np.angle(np.exp(1j * (phase[valid] - ramp[valid])))  # circular difference, wrapped to (-π, π]
    assert abs(np.angle(np.mean(np.exp(1j * err)))) < 0.01  # no systematic offset
    assert np.median(np.abs(err)) < 0.1
    assert np.all((phase[valid] > -np.pi - 1e-6) & (phase[valid] <= np.pi + 1e-6))


def test_exact_cases_and_edges() -> None:
    rng = np.random.default_rng(11)
    s1 = _circular_gaussian(rng, (20, 24))
    coh, phase = estimate_coherence(s1, s1 * np.exp(-0.7j), window=5)
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(coh[inner], 1.0, atol=1e-6)
    np.testing.assert_allclose(phase[inner], 0.7, atol=1e-6)
    edge = np.ones(coh.shape, dtype=bool)
    edge[inner] = False
    assert np.isnan(coh[edge]).all() and not np.isnan(coh[inner]).any()
    # A nodata sample spoils exactly the windows that contain it.
    s2 = s1.copy()
    s2[10, 12] = np.nan
    coh, phase = estimate_coherence(s1, s2, window=(3, 5))
    bad = np.isnan(coh)
    expected = np.zeros(coh.shape, dtype=bool)
    expected[9:12, 10:15] = True
    expected[[0, -1], :] = True
    expected[:, [0, 1, -2, -1]] = True
    np.testing.assert_array_equal(bad, expected)
    np.testing.assert_array_equal(np.isnan(phase), expected)


def test_estimator_input_errors() -> None:
    a = np.ones((8, 8), dtype=np.complex64)
    with pytest.raises(ValueError, match="differ"):
        estimate_coherence(a, np.ones((8, 9), dtype=np.complex64))
    with pytest.raises(ValueError, match="slc2 must be a complex"):
        estimate_coherence(a, np.ones((8, 8)))
    with pytest.raises(ValueError, match="odd"):
        estimate_coherence(a, a, window=4)
    with pytest.raises(ValueError, match="rows, cols"):
        estimate_coherence(a[None], a[None])


def test_insar_layers_round_trip_and_clip() -> None:
    rng = np.random.default_rng(5)
    phase = rng.uniform(-3 * np.pi, 3 * np.pi, size=(16, 16))  # unwrapped values too
    phase[0, :3] = [np.pi, -np.pi, 0.0]
    coherence = rng.uniform(-0.1, 1.1, size=(16, 16))
    coherence[4, 4] = np.nan
    phase[5, 5] = np.nan
    out = insar_layers(coherence, phase)
    assert tuple(out) == INSAR_LAYERS and all(a.dtype == np.float32 for a in out.values())
    wrapped = np.angle(np.exp(1j * phase))
    back = np.arctan2(out["phase_sin"].astype(np.float64), out["phase_cos"].astype(np.float64))
    diff = np.angle(np.exp(1j * (back - wrapped)))
    np.testing.assert_allclose(np.nan_to_num(diff), 0.0, atol=1e-6)
    assert np.isnan(out["phase_sin"][5, 5]) and np.isnan(out["phase_cos"][5, 5])
    assert not np.isnan(out["coherence"][5, 5])
    np.testing.assert_array_equal(np.isnan(out["coherence"]), np.isnan(coherence))
    valid = ~np.isnan(coherence)
    np.testing.assert_allclose(out["coherence"][valid], np.clip(coherence[valid], 0, 1), rtol=1e-7)
    assert np.nanmin(out["coherence"]) == 0.0 and np.nanmax(out["coherence"]) == 1.0
    with pytest.raises(ValueError, match="differ"):
        insar_layers(coherence, phase[:, :-1])
    with pytest.raises(ValueError, match="real-valued"):
        insar_layers(coherence.astype(complex), phase)
