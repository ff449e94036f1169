"""Terrain layers against ``gdaldem`` on the same DEM, measured in the same run.

Run: ``python benchmarks/bench_terrain.py [--size 4096] [--repeat 3]``

1. Slope + aspect: ``gdaldem slope`` + ``gdaldem aspect`` (two processes, each reading the DEM file and writing a
   GeoTIFF) against ``terrain_layers(dem, res, layers=("slope", "aspect"))`` on the array in memory, and against
   ``terrain_file(..., layers=("slope", "aspect"))`` file to file (the like-for-like comparison). The ratios
   ``ours / gdaldem`` are printed, and the largest slope difference to gdaldem.
2. All layers, file to file: ``terrain_file`` (ten bands, block-wise with halo, deflate-compressed) against the five
   ``gdaldem`` runs that give its GDAL counterparts (slope, aspect, hillshade, TPI, roughness).

Best of ``--repeat`` wall-clock times. Numbers depend on the machine's load; compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def make_dem(path: Path, size: int) -> Path:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    from cryonet.raster import Grid, write_raster

    rng = np.random.default_rng(0)
    relief = gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), 6.0)
    dem = 4500.0 + 2000.0 * relief / relief.std()
    grid = Grid(CRS.from_epsg(32645), from_origin(400_000, 3_100_000, 10, 10), size, size)
    return write_raster(path, dem.astype(np.float32), grid, nodata=-9999.0)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gdaldem(tmp: Path, dem: Path, *modes: str) -> None:
    for mode in modes:
        subprocess.run(["gdaldem", mode, "-q", str(dem), str(tmp / f"gdal_{mode}.tif")], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="DEM edge, pixels (4096)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept (3)")
    args = parser.parse_args()
    if shutil.which("gdaldem") is None:
        print("gdaldem not found (apt install gdal-bin)", file=sys.stderr)
        return 1

    import rasterio

    from cryonet.features.terrain import terrain_file, terrain_layers

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        dem_path = make_dem(tmp / "dem.tif", args.size)
        with rasterio.open(dem_path) as src:
            dem = np.ma.filled(src.read(1, masked=True).astype(np.float64), np.nan)
            res = src.res

        t_gdal = best_of(args.repeat, lambda: gdaldem(tmp, dem_path, "slope", "aspect"))
        t_ours = best_of(args.repeat, lambda: terrain_layers(dem, res, layers=("slope", "aspect")))
        t_ours_file = best_of(
            args.repeat, lambda: terrain_file(dem_path, tmp / "sa.tif", progress=False, layers=("slope", "aspect"))
        )
        ours = terrain_layers(dem, res, layers=("slope",))["slope"]
        with rasterio.open(tmp / "gdal_slope.tif") as ds:
            ref = ds.read(1)
            valid = ref != ds.nodata
        max_diff = float(np.abs(ours[valid] - ref[valid]).max())

        t_gdal5 = best_of(
            args.repeat, lambda: gdaldem(tmp, dem_path, "slope", "aspect", "hillshade", "TPI", "roughness")
        )
        t_file = best_of(args.repeat, lambda: terrain_file(dem_path, tmp / "terrain.tif", progress=False))

    mpx = args.size * args.size / 1e6
    print(f"DEM {args.size} x {args.size} px ({mpx:.1f} Mpx), best of {args.repeat}")
    print(f"slope+aspect   gdaldem (2 runs, file->file): {t_gdal:7.2f} s")
    print(
        f"slope+aspect   terrain_layers (in memory):   {t_ours:7.2f} s   ratio ours/gdaldem = {t_ours / t_gdal:.2f}"
        f"   (max |slope diff| = {max_diff:.2e} deg)"
    )
    print(
        f"slope+aspect   terrain_file (file->file):    {t_ours_file:7.2f} s   ratio ours/gdaldem = "
        f"{t_ours_file / t_gdal:.2f}"
    )
    print(f"all layers     gdaldem (5 runs, file->file): {t_gdal5:7.2f} s")
    print(f"all layers     terrain_file (10 bands):      {t_file:7.2f} s   ratio ours/gdaldem = {t_file / t_gdal5:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
