"""Time the synthetic twin-scene generator: both presets, a small size and the default size.

Prints wall-clock seconds for `generate_scene` (simulation + writing every file), the throughput in megapixels
(10 m) per second, and the ratio to the one-minute budget for a default scene.
Run: `python benchmarks/bench_synthetic.py` (optionally `--sizes 256 1000`, `--threads N`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="scene sizes (default: 500 and preset's)")
    parser.add_argument("--threads", type=int, default=2, help="numba / BLAS threads (default 2)")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from cryonet.regions import REGIONS
    from cryonet.synthetic import generate_scene

    # Warm-up: compile the numba shadow kernel once, outside the timings.
    with tempfile.TemporaryDirectory() as tmp:
        generate_scene("poiqu", tmp, size=64, progress=False)

    print(f"{'region':10s} {'size':>6s} {'seconds':>8s} {'Mpx/s':>7s} {'/ 60 s budget':>14s}")
    for name, region in REGIONS.items():
        sizes = args.sizes or [500, region.default_size_px]
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                generate_scene(name, tmp, size=size, seed=0, progress=False, overwrite=True)
                dt = time.perf_counter() - t0
            mpx = size * size / 1e6
            print(f"{name:10s} {size:6d} {dt:8.2f} {mpx / dt:7.3f} {dt / 60:14.2f}")


if __name__ == "__main__":
    main()
