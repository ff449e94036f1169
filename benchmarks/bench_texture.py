"""GLCM texture benchmark: cryonet's numba sliding-window kernel against a per-window scikit-image loop.

Usage::

    python benchmarks/bench_texture.py            # 512² comparison + full 10,980² Sentinel-2 tile
    python benchmarks/bench_texture.py --quick    # 256² comparison + 2,048² "full" band (a minute or so)
    python benchmarks/bench_texture.py --file     # also time texture_file (GeoTIFF in -> GeoTIFF out) on the big band

(a) scikit-image: ``graycomatrix(patch, [1], 4 angles, 32, symmetric=True, normed=True)`` + ``graycoprops`` for all
nine features, for a random sample of windows; the time per window is extrapolated to every pixel of the image.
(b) cryonet: ``glcm_features`` on the whole image (after a warm-up call that JIT-compiles the kernel); its values
are checked against (a) on the sampled windows. Then the full band is processed in row blocks with a halo, as a
windowed caller would, reporting wall time and peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import psutil
from skimage.feature import graycomatrix, graycoprops

from cryonet.features.texture import ALL_FEATURES, glcm_features, halo, quantization_limits, texture_file

WINDOW, LEVELS, ANGLES = 7, 32, (0.0, 45.0, 90.0, 135.0)


def cpu_s() -> float:
    """CPU seconds (user + system, all threads) used by this process so far: a contention-robust measure."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def skimage_windows(q: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    r = WINDOW // 2
    rad = np.deg2rad(ANGLES)
    ref = np.empty((len(ALL_FEATURES), len(centres)))
    t0 = time.perf_counter()
    for n, (y, x) in enumerate(centres):
        P = graycomatrix(q[y - r : y + r + 1, x - r : x + r + 1], [1], rad, LEVELS, symmetric=True, normed=True)
        for f, name in enumerate(ALL_FEATURES):
            ref[f, n] = graycoprops(P, name).mean()
    return ref, time.perf_counter() - t0


def blocked_features(band: np.ndarray, vmin: float, vmax: float, block: int, keep: bool) -> tuple[float, np.ndarray]:
    """glcm_features over row blocks with a halo; returns wall time and (if keep) the assembled result."""
    h = halo(WINDOW, (1,))
    rows = band.shape[0]
    out = np.empty((len(ALL_FEATURES), *band.shape), np.float32) if keep else np.empty(0, np.float32)
    checksum = np.zeros(len(ALL_FEATURES))
    t0 = time.perf_counter()
    for r0 in range(0, rows, block):
        r1 = min(r0 + block, rows)
        ra, rb = max(r0 - h, 0), min(r1 + h, rows)
        feats = glcm_features(band[ra:rb], window=WINDOW, levels=LEVELS, angles=ANGLES, vmin=vmin, vmax=vmax)
        core = feats[:, r0 - ra : r0 - ra + (r1 - r0)]
        checksum += np.nansum(core, axis=(1, 2))
        if keep:
            out[:, r0:r1] = core
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="scaled down: 256² comparison, 2,048² full band")
    ap.add_argument("--size", type=int, default=None, help="comparison image edge (512; 256 with --quick)")
    ap.add_argument("--sample", type=int, default=None, help="windows timed with scikit-image (2000; 500 --quick)")
    ap.add_argument("--full", type=int, default=None, help="full band edge (10980; 2048 with --quick)")
    ap.add_argument("--block", type=int, default=512, help="rows per block for the full band (512)")
    ap.add_argument("--file", action="store_true", help="also time texture_file on the full band as a GeoTIFF")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    size = args.size or (256 if args.quick else 512)
    n_sample = args.sample or (500 if args.quick else 2000)
    full = args.full or (2048 if args.quick else 10980)
    rng = np.random.default_rng(args.seed)
    r = WINDOW // 2

    print(
        f"machine: {os.cpu_count()} logical CPUs, numba threads {numba.get_num_threads()} "
        f"({numba.config.THREADING_LAYER} layer), load average {os.getloadavg()[0]:.2f} at start "
        "(the machine is shared: timings are taken under contention)"
    )
    print(
        f"parameters: window {WINDOW}, levels {LEVELS}, distance 1, angles {ANGLES}, all {len(ALL_FEATURES)} features"
    )

    # ---- (a) + (b): scikit-image per-window loop vs the numba kernel on size² ----
    q = rng.integers(0, LEVELS, size=(size, size), dtype=np.uint8)
    ys = rng.integers(r, size - r, n_sample)
    xs = rng.integers(r, size - r, n_sample)
    centres = np.stack([ys, xs], axis=1)
    c0 = cpu_s()
    ref, t_sk = skimage_windows(q, centres)
    c_sk = (cpu_s() - c0) / n_sample * size * size
    t_sk_full = t_sk / n_sample * size * size

    t0 = time.perf_counter()
    glcm_features(q[:32, :32], window=WINDOW, levels=LEVELS, angles=ANGLES)  # JIT compile (or load from cache)
    t_jit = time.perf_counter() - t0
    times, cpus = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), cpu_s()
        ours = glcm_features(q, window=WINDOW, levels=LEVELS, angles=ANGLES)
        times.append(time.perf_counter() - t0)
        cpus.append(cpu_s() - c0)
    t_nb, c_nb = min(times), min(cpus)
    got = ours[:, ys, xs].astype(np.float64)
    err = np.abs(got - ref)
    rel = err / np.maximum(np.abs(ref), 1.0)
    ok = bool(np.all(rel <= 1e-5))

    print()
    print(
        f"(a) scikit-image: {n_sample} random windows in {t_sk:.2f} s = {t_sk / n_sample * 1e6:.0f} µs/window; "
        f"extrapolated to all {size}² pixels: {t_sk_full:.1f} s"
    )
    print(
        f"(b) cryonet numba on the full {size}²: best of 3 = {t_nb * 1e3:.1f} ms "
        f"({t_nb / size**2 * 1e9:.0f} ns/pixel; first call incl. JIT/cache load {t_jit:.2f} s)"
    )
    print(
        f"    agreement on the {n_sample} sampled windows: max |diff| {err.max():.2e}, "
        f"max relative {rel.max():.2e} -> {'OK' if ok else 'MISMATCH'} (tolerance 1e-5)"
    )
    speedup = t_sk_full / t_nb
    print(f"    speed-up: {speedup:,.0f}x (target >= 500x)")

    # ---- full band in row blocks ----
    band = rng.integers(0, 10000, size=(full, full), dtype=np.uint16)  # Sentinel-2 L2A-like digital numbers
    step = max(1, int(np.ceil(np.sqrt(band.size / 4_000_000))))
    limits = quantization_limits(band[::step, ::step], LEVELS)
    assert limits is not None
    vmin, vmax = limits
    check = full <= 4096
    rss_before = psutil.Process().memory_info().rss / 2**20
    c0 = cpu_s()
    t_full, assembled = blocked_features(band, vmin, vmax, args.block, keep=check)
    c_full = cpu_s() - c0
    peak = peak_rss_mib()
    print()
    print(
        f"(c) full {full} x {full} band ({band.nbytes / 2**20:.0f} MiB uint16), all features, row blocks of "
        f"{args.block} + halo {halo(WINDOW, (1,))}: {t_full:.1f} s "
        f"({t_full / full**2 * 1e9:.0f} ns/pixel; target <= 120 s for 10,980² on 2 cores), CPU time {c_full:.1f} s; "
        f"RSS before {rss_before:.0f} MiB, peak RSS {peak:.0f} MiB"
    )
    if check:
        whole = glcm_features(band, window=WINDOW, levels=LEVELS, angles=ANGLES, vmin=vmin, vmax=vmax)
        same = np.array_equal(whole, assembled, equal_nan=True)
        print(f"    blocked result equals one glcm_features call on the whole band: {same}")
        del whole
    del assembled

    t_file = c_file = None
    if args.file:
        import rasterio
        from rasterio.transform import from_origin

        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
            src = Path(tmp) / "band.tif"
            with rasterio.open(
                src,
                "w",
                driver="GTiff",
                width=full,
                height=full,
                count=1,
                dtype="uint16",
                crs="EPSG:32645",
                transform=from_origin(500000, 3130000, 10, 10),
                tiled=True,
                blockxsize=256,
                blockysize=256,
            ) as dst:
                dst.write(band, 1)
            del band
            t0, c0 = time.perf_counter(), cpu_s()
            texture_file(
                src, Path(tmp) / "texture.tif", window=WINDOW, levels=LEVELS, angles=ANGLES, block=1024, progress=False
            )
            t_file = time.perf_counter() - t0
            c_file = cpu_s() - c0
            out_mib = (Path(tmp) / "texture.tif").stat().st_size / 2**20
        print(
            f"(d) texture_file GeoTIFF -> 9-band float32 deflate GeoTIFF ({out_mib:.0f} MiB): {t_file:.1f} s, "
            f"peak RSS so far {peak_rss_mib():.0f} MiB"
        )

    print()
    print("| step | pixels | wall time | wall per pixel | CPU time (all threads) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| scikit-image loop (extrapolated from {n_sample} windows) | {size}² | {t_sk_full:.1f} s | "
        f"{t_sk / n_sample * 1e9:,.0f} ns | {c_sk:.1f} s |"
    )
    print(f"| cryonet numba | {size}² | {t_nb * 1e3:.1f} ms | {t_nb / size**2 * 1e9:.0f} ns | {c_nb * 1e3:.1f} ms |")
    print(f"| speed-up (wall; CPU) | | {speedup:,.0f}x | | {c_sk / max(c_nb, 1e-9):,.0f}x |")
    print(
        f"| cryonet, row blocks (peak RSS {peak:.0f} MiB) | {full}² | {t_full:.1f} s | "
        f"{t_full / full**2 * 1e9:.0f} ns | {c_full:.1f} s |"
    )
    if t_file is not None:
        print(
            f"| texture_file (read + compute + deflate write) | {full}² | {t_file:.1f} s | "
            f"{t_file / full**2 * 1e9:.0f} ns | {c_file:.1f} s |"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
