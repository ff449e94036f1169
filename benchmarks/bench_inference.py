"""Full-scene inference vs the bare model forward on the same windows, and peak memory at two scene sizes.

Run: ``python benchmarks/bench_inference.py [--model cryonet --encoder resnet18 --layers 30 --tile 128]``

1. Throughput: ``cryonet.inference.predict_raster`` on a random feature stack, against the bare forward pass of the
   same model over exactly the same windows (already in memory, same batch size), measured in the same run.
   The ratio ``forward time / predict time`` is the fraction of the bare model's throughput that full-scene
   inference keeps (reading, normalising, blending and writing included).
2. Memory: peak RSS of a fresh process predicting a scene of S x S and of 2S x 2S pixels (4x the area).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_stack(path: Path, size: int, layers: int) -> Path:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from cryonet.raster import Grid, write_raster

    rng = np.random.default_rng(0)
    grid = Grid(CRS.from_epsg(32645), from_origin(400_000, 3_100_000, 10, 10), size, size)
    data = rng.normal(size=(layers, size, size)).astype("float32")
    return write_raster(path, data, grid, nodata=float("nan"), descriptions=[f"l{i}" for i in range(layers)])


def build(args: argparse.Namespace):
    import torch

    from cryonet.datasets import Normalizer
    from cryonet.models import create

    torch.manual_seed(0)
    model = create(args.model, in_channels=args.layers, classes=4, encoder=args.encoder).eval()
    norm = Normalizer(
        [f"l{i}" for i in range(args.layers)], np.zeros(args.layers, "float32"), np.ones(args.layers, "float32")
    )
    return model, norm


def child(args: argparse.Namespace) -> None:
    from cryonet.inference import predict_raster

    model, norm = build(args)
    stack = Path(args.stack)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = predict_raster(
        stack,
        stack.with_name("pred.tif"),
        model=model,
        normalizer=norm,
        tile_size=args.tile,
        batch_size=args.batch,
        device="cpu",
        progress=False,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "size": args.child,
                "windows": res.windows,
                "seconds": res.seconds,
                "peak_rss_mb": peak / 1024,
                "rss_before_predict_mb": base / 1024,
            }
        )
    )


def throughput(args: argparse.Namespace) -> tuple[float, float, int]:
    import rasterio
    import torch
    from rasterio.windows import Window

    from cryonet.inference import predict_raster, window_offsets

    model, norm = build(args)
    with tempfile.TemporaryDirectory() as d:
        stack = make_stack(Path(d) / "stack.tif", args.size, args.layers)
        stride = args.tile - args.tile // 4
        offs = window_offsets(args.size, args.tile, stride)
        with rasterio.open(stack) as src:
            tiles = [norm.apply(src.read(window=Window(c, r, args.tile, args.tile))) for r in offs for c in offs]
        x_all = torch.from_numpy(np.stack(tiles))
        with torch.inference_mode():  # warm-up
            model(x_all[: args.batch])
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(x_all), args.batch):
                torch.softmax(model(x_all[i : i + args.batch]), 1)
        t_forward = time.perf_counter() - t0
        res = predict_raster(
            stack,
            Path(d) / "pred.tif",
            model=model,
            normalizer=norm,
            tile_size=args.tile,
            batch_size=args.batch,
            device="cpu",
            progress=False,
        )
    return t_forward, res.seconds, res.windows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cryonet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=512, help="scene edge for the throughput comparison")
    p.add_argument("--rss-size", type=int, default=512, help="smaller scene edge for the memory comparison")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--stack", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    import torch

    print(
        f"model {args.model} / encoder {args.encoder}, {args.layers} layers, tile {args.tile}, batch {args.batch},"
        f" torch threads {torch.get_num_threads()}"
    )
    t_fwd, t_pred, n = throughput(args)
    print(f"\nthroughput on a {args.size}x{args.size} scene ({n} windows):")
    print(f"  bare forward on the same windows  {t_fwd:8.2f} s  ({n / t_fwd:6.2f} windows/s)")
    print(f"  cryonet.inference.predict_raster  {t_pred:8.2f} s  ({n / t_pred:6.2f} windows/s)")
    print(f"  ratio (forward / predict)         {t_fwd / t_pred:8.3f}   (target >= 0.9)")
    rows = []
    for size in (args.rss_size, 2 * args.rss_size):
        with tempfile.TemporaryDirectory() as d:
            stack = make_stack(Path(d) / "stack.tif", size, args.layers)  # made here: the child only predicts
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(size),
                "--stack",
                str(stack),
                "--model",
                args.model,
                "--encoder",
                args.encoder,
                "--layers",
                str(args.layers),
                "--tile",
                str(args.tile),
                "--batch",
                str(args.batch),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print("\npeak memory (fresh process each):")
    print(f"  {'scene':>11} {'pixels':>10} {'windows':>8} {'seconds':>8} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"  {r['size']:>5}x{r['size']:<5} {r['size'] ** 2:>10} {r['windows']:>8} {r['seconds']:>8.1f}"
            f" {r['peak_rss_mb']:>12.0f}"
        )
    print(f"  peak RSS ratio for 4x the area: {rows[1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
