"""Feature-stack build: wall time and peak memory for two scene sizes 4x apart in pixel count.

The stack is computed block by block (``build_stack(block=512)``), so peak memory should stay roughly flat while the
wall time grows with the pixel count. Each build runs in a fresh subprocess that reports its own peak resident set
size (``VmHWM`` of ``/proc/self/status``: the high-water mark of the child's own address space. Not
``getrusage(...).ru_maxrss``: Linux carries the parent's high-water mark over fork + exec, so a child would report
at least the parent's size). A child that only imports the libraries gives the baseline. Scenes are generated in
subprocesses too, so the parent stays small.

    python benchmarks/bench_stack.py [--sizes 600 1200] [--block 512] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
mode, scene, out, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import numpy, rasterio, sklearn.decomposition, numba  # the libraries every build imports
from cryonet.features import stack, texture, terrain, insar  # noqa: F401
t0 = time.perf_counter()
n_layers = 0
if mode == "build":
    info = stack.build_stack(scene, out, block=block, progress=False, overwrite=True)
    n_layers = len(info.layers)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak, "layers": n_layers}))
"""


def run_child(mode: str, scene: Path, out: Path, block: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(scene), str(out), str(block)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child failed ({mode} {scene})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[600, 1200], help="scene edges, pixels (600 1200)")
    ap.add_argument("--block", type=int, default=512, help="block edge, pixels (512)")
    ap.add_argument("--workdir", type=Path, default=None, help="where scenes and stacks go (default: a temp dir)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench_stack.") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    base = None
    for size in args.sizes:
        scene_dir = work / f"poiqu_{size}"
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import sys; from cryonet.synthetic import generate_scene; "
             "generate_scene('poiqu', sys.argv[1], size=int(sys.argv[2]), seed=0, progress=False)",
             str(scene_dir), str(size)],
            check=True,
        )  # fmt: skip
        gen_s = time.perf_counter() - t0
        if base is None:
            base = run_child("import", scene_dir, work / "none.tif", args.block)
            run_child("build", scene_dir, work / "warmup.tif", args.block)  # fills numba's on-disk cache (JIT)
        res = run_child("build", scene_dir, work / f"stack_{size}.tif", args.block)
        rows.append((size, gen_s, res))
    print(f"feature stack, block {args.block}, {rows[0][2]['layers']} layers; peak RSS of each build's process")
    print(f"baseline (imports only): peak RSS {base['peak_rss_mb']:.0f} MB")
    print(f"{'size':>10} {'pixels':>10} {'build s':>9} {'s/Mpx':>7} {'peak RSS MB':>12} {'above baseline MB':>18}")
    for size, _, r in rows:
        mpx = size * size / 1e6
        print(
            f"{size:>5}x{size:<4} {size * size:>10} {r['seconds']:>9.1f} {r['seconds'] / mpx:>7.1f} "
            f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] - base['peak_rss_mb']:>18.0f}"
        )
    (s0, _, r0), (s1, _, r1) = rows
    print(
        f"ratios {s1}/{s0}: pixels x{(s1 / s0) ** 2:.1f}, build time x{r1['seconds'] / r0['seconds']:.2f}, "
        f"peak RSS x{r1['peak_rss_mb'] / r0['peak_rss_mb']:.2f} "
        f"(above baseline x{(r1['peak_rss_mb'] - base['peak_rss_mb']) / max(r0['peak_rss_mb'] - base['peak_rss_mb'], 1):.2f})"  # noqa: E501
    )
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
