"""The ``cryonet`` command: thin adapters over the library's public functions.

Each subcommand parses its arguments, calls one library function and reports where the result went. Errors that
the library raises for bad input (missing files, wrong grids, corrupt downloads) are shown as one clear line and a
non-zero exit status, without a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cryonet import __version__
from cryonet.errors import CryonetError

logger = logging.getLogger("cryonet.cli")

#: (name, help, add-arguments function, run function), in the order ``--help`` lists them.
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


# --- synth -------------------------------------------------------------------------------------------------------
def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", required=True, choices=["poiqu", "montblanc"], help="region preset")
    p.add_argument("--out", required=True, type=Path, help="output scene directory")
    p.add_argument("--size", type=int, default=None, help="scene edge length in 10 m pixels (default: preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete scene is already there")


def _run_synth(args: argparse.Namespace) -> int:
    from cryonet.synthetic import generate_scene

    scene = generate_scene(
        args.region, args.out, size=args.size, seed=args.seed, progress=not args.quiet, overwrite=args.force
    )
    print(f"synthetic {scene.region} scene written to {scene.root} (scene.json describes its files)")
    return 0


# --- fetch -------------------------------------------------------------------------------------------------------
def _add_fetch(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="registry entry to download (see --list)")
    p.add_argument("--dest", type=Path, default=None, help="copy the verified file into this directory")
    p.add_argument("--list", action="store_true", help="list the registry entries and exit")


def _run_fetch(args: argparse.Namespace) -> int:
    from cryonet import manifest

    if args.list or not args.name:
        # name, sha256, licence, pinned URL: tab-separated so that the list can be filtered with cut/awk
        for entry in manifest.entries():
            print(f"{entry.name}\t{entry.sha256}\t{entry.licence}\t{entry.url}")
        return 0
    path = manifest.fetch(args.name, dest=args.dest, progress=not args.quiet)
    print(path)
    return 0


# --- align -------------------------------------------------------------------------------------------------------
def _add_align(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene", type=Path, help="scene directory (scene.json): align all its inputs + labels")
    src.add_argument("--inputs", type=Path, nargs="+", help="rasters to align onto --reference")
    p.add_argument("--reference", type=Path, help="raster whose grid is the target (with --inputs)")
    p.add_argument("--categorical", type=Path, nargs="*", default=[], help="inputs resampled by nearest neighbour")
    p.add_argument("--out", type=Path, required=True, help="output directory")


def _run_align(args: argparse.Namespace) -> int:
    from cryonet import raster

    if args.scene is not None:
        from cryonet.prepare import align_scene
        from cryonet.scene import Scene

        outputs = align_scene(Scene.load(args.scene), args.out, progress=not args.quiet)
    else:
        if args.reference is None:
            raise SystemExit("cryonet align: --inputs needs --reference (the raster whose grid to align onto)")
        grid = raster.Grid.from_file(args.reference)
        categorical = {p.resolve() for p in args.categorical}
        outputs = {}
        for path in [*args.inputs, *args.categorical]:
            dst = args.out / path.name
            outputs[path.stem] = raster.align_to_grid(path, grid, dst, categorical=path.resolve() in categorical)
    for name, path in outputs.items():
        print(f"{name}\t{path}")
    return 0


# --- commands: issue 3 (features) ---------------------------------------------------------------------------------
def _add_features(p: argparse.ArgumentParser) -> None:
    from cryonet.constants import LAYER_GROUPS

    p.add_argument("--scene", type=Path, required=True, help="scene directory (scene.json)")
    p.add_argument("--out", type=Path, required=True, help="output stack GeoTIFF (STACK.layers.csv written beside)")
    p.add_argument(
        "--groups",
        nargs="+",
        choices=LAYER_GROUPS,
        default=list(LAYER_GROUPS),
        metavar="GROUP",
        help=f"layer groups to include (default all: {' '.join(LAYER_GROUPS)})",
    )
    p.add_argument("--block", type=int, default=512, help="processing block edge, pixels (512)")
    p.add_argument("--texture-base", choices=["pc1", "B8"], default="pc1", help="image the GLCM is computed on (pc1)")
    p.add_argument(
        "--like",
        type=Path,
        default=None,
        help="source-region stack whose PCA and texture grey levels are reused (transfer)",
    )
    p.add_argument("--pca", type=Path, default=None, help="PCA transform JSON to apply instead of fitting one")
    p.add_argument("--seed", type=int, default=0, help="seed of the PCA pixel sample (0)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if an up-to-date stack exists")


def _run_features(args: argparse.Namespace) -> int:
    from cryonet.features.pca import PCATransform
    from cryonet.features.stack import build_stack

    info = build_stack(
        args.scene,
        args.out,
        groups=args.groups,
        pca=PCATransform.load(args.pca) if args.pca else None,
        texture_base=args.texture_base,
        like=args.like,
        block=args.block,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    state = "up to date, kept" if info.skipped else f"written in {info.seconds:.1f} s"
    print(f"feature stack {info.path} ({len(info.layers)} layers, {state}); layer table {info.layers_csv}")
    if info.pca_path:
        print(f"PCA transform {info.pca_path}")
    return 0


def _add_texture(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="input raster (one band is used, see --band)")
    p.add_argument("out", type=Path, help="output float32 GeoTIFF, one band per GLCM feature (glcm_<feature>)")
    p.add_argument("--band", type=int, default=1, help="1-based band of the input (1)")
    p.add_argument("--window", type=int, default=7, help="odd sliding-window edge, pixels (7)")
    p.add_argument("--levels", type=int, default=32, help="grey levels the band is quantised to (32)")
    p.add_argument("--distance", type=int, default=1, help="pixel-pair distance, pixels (1)")
    p.add_argument("--angles", default="0,45,90,135", help="comma-separated pair angles, degrees (0,45,90,135)")
    p.add_argument("--vmin", type=float, default=None, help="lower quantisation limit (default: 2nd percentile)")
    p.add_argument("--vmax", type=float, default=None, help="upper quantisation limit (default: 98th percentile)")
    p.add_argument("--block", type=int, default=1024, help="processing tile edge, pixels (1024)")


def _run_texture(args: argparse.Namespace) -> int:
    from cryonet.features.texture import texture_file

    try:
        angles = tuple(float(a) for a in args.angles.split(",") if a.strip())
    except ValueError as exc:
        raise ValueError(f"--angles expects comma-separated degrees such as 0,45,90,135, got {args.angles!r}") from exc
    out = texture_file(
        args.input,
        args.out,
        band=args.band,
        window=args.window,
        levels=args.levels,
        distance=args.distance,
        angles=angles,
        vmin=args.vmin,
        vmax=args.vmax,
        block=args.block,
        progress=not args.quiet,
    )
    print(f"GLCM texture features written to {out}")
    return 0


def _add_terrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("dem", type=Path, help="DEM GeoTIFF on a projected metric grid (run `cryonet align` first)")
    p.add_argument("out", type=Path, help="output multi-band float32 GeoTIFF (one band per terrain layer)")
    p.add_argument("--sun-azimuth", type=float, default=315.0, help="hillshade sun azimuth, degrees from north (315)")
    p.add_argument("--sun-elevation", type=float, default=45.0, help="hillshade sun elevation, degrees (45)")
    p.add_argument("--block", type=int, default=2048, help="processing block edge in pixels (2048)")
    p.add_argument("--tpi-radius", type=float, nargs="*", default=[], help="extra multi-scale TPI radii, metres")


def _run_terrain(args: argparse.Namespace) -> int:
    from cryonet.features.terrain import terrain_file

    out = terrain_file(
        args.dem,
        args.out,
        sun_azimuth=args.sun_azimuth,
        sun_elevation=args.sun_elevation,
        block=args.block,
        progress=not args.quiet,
        tpi_radii=args.tpi_radius,
    )
    print(f"terrain layers written to {out}")
    return 0


# --- commands: issue 4 (models, training, inference) --------------------------------------------------------------
def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="RUN/best.pt (or a run directory)")
    p.add_argument("--stack", required=True, type=Path, help="feature stack GeoTIFF with the training layers")
    p.add_argument("--out", required=True, type=Path, help="class raster to write (uint8 COG, 255 = no input)")
    p.add_argument("--probabilities", type=Path, default=None, help="also write per-class probabilities here")
    p.add_argument("--tile", type=int, default=None, help="window edge in pixels (default: training tile size)")
    p.add_argument("--overlap", type=int, default=None, help="overlap between windows (default: tile / 4)")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, mps")


def _run_predict(args: argparse.Namespace) -> int:
    from cryonet.inference import predict_checkpoint

    kw = {"tile_size": args.tile} if args.tile is not None else {}
    res = predict_checkpoint(
        args.checkpoint,
        args.stack,
        args.out,
        overlap=args.overlap,
        batch_size=args.batch,
        device=args.device,
        probabilities_path=args.probabilities,
        progress=not args.quiet,
        **kw,
    )
    extra = f" and {res.probabilities}" if res.probabilities else ""
    print(
        f"predicted {res.grid.height} x {res.grid.width} px ({res.windows} windows, {res.seconds:.1f} s): "
        f"{res.labels}{extra}"
    )
    return 0


def _add_outlines(p: argparse.ArgumentParser) -> None:
    p.add_argument("prediction", type=Path, help="class raster (e.g. from `cryonet predict`)")
    p.add_argument("out", type=Path, help="GeoPackage to write (layers outlines, glaciers, debris, lakes)")
    p.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this, m² (default 0)")
    p.add_argument("--simplify", type=float, default=None, help="coverage simplification tolerance, metres")
    p.add_argument("--reference", type=Path, default=None, help="reference GeoPackage (glaciers, debris, lakes)")


def _run_outlines(args: argparse.Namespace) -> int:
    import pandas as pd

    from cryonet import vector

    gdf = vector.polygonize_classes(args.prediction, min_area_m2=args.min_area, simplify_m=args.simplify)
    vector.write_outlines(gdf, args.out)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(f"{len(gdf)} polygons written to {args.out}")
        print(vector.area_table(gdf).to_string())
        if args.reference is not None:
            cmp = vector.compare_with_reference(gdf, args.reference)
            print(f"\narea IoU per class against {args.reference}:")
            print(cmp["classes"].to_string())
            g = cmp["glaciers"]
            if len(g):
                print(
                    f"\nper reference glacier ({len(g)}): median relative area difference "
                    f"{g['rel_diff'].median():+.3f}; the 10 largest:"
                )
                print(g.sort_values("ref_km2", ascending=False).head(10).to_string())
    return 0


def _add_importance(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory written by `cryonet train` (or a checkpoint in it)")
    p.add_argument("--stack", required=True, type=Path, help="the feature stack the run was trained on")
    p.add_argument("--labels", required=True, type=Path, help="its label raster")
    p.add_argument("--repeats", type=int, default=5, help="permutations per layer group (default 5)")
    p.add_argument("--groups", nargs="+", default=None, help="layer groups to permute (default all)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"], help="tiles to score")
    p.add_argument("--metric", default="overall_iou_glacier", help="key of cryonet.metrics.summary")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, mps")
    p.add_argument("--max-tiles", type=int, default=None, help="score a seeded subset of this many tiles")
    p.add_argument("--out", type=Path, default=None, help="write the table (one row per group and repeat) as CSV")


def _run_importance(args: argparse.Namespace) -> int:
    import pandas as pd

    from cryonet.importance import class_drops, permutation_importance
    from cryonet.raster import atomic_path

    df = permutation_importance(
        args.run,
        args.stack,
        args.labels,
        split=args.split,
        groups=args.groups,
        repeats=args.repeats,
        metric=args.metric,
        seed=args.seed,
        device=args.device,
        max_tiles=args.max_tiles,
        progress=not args.quiet,
    )
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            df.to_csv(tmp, index=False)
    summ = df.attrs["summary"].sort_values("mean_drop", ascending=False)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(
            f"{args.metric}: baseline {df.attrs['baseline']:.4f} on {df.attrs['n_tiles']} {args.split} tiles; "
            f"drop when a group is permuted ({args.repeats} repeats, 95 % t interval):"
        )
        print(summ.to_string())
        print("mean drop of each class's IoU:")
        print(class_drops(df).reindex(summ.index).to_string())
    if args.out is not None:
        print(f"table written to {args.out}")
    return 0


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", required=True, type=Path, help="feature stack GeoTIFF (band descriptions = layers)")
    p.add_argument("--labels", required=True, type=Path, help="label raster on the stack's grid (0..3, 255 nodata)")
    p.add_argument("--model", default="cryonet", help="cryonet, unet, deeplabv3plus or segformer (default cryonet)")
    p.add_argument("--profile", default="ci", help="ci or paper (default ci)")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, split, history)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    p.add_argument("--encoder", default=None, help="override the profile's encoder (e.g. resnet18)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")


def _run_train(args: argparse.Namespace) -> int:
    from cryonet.train import train

    overrides = {k: v for k, v in {"epochs": args.epochs, "encoder": args.encoder}.items() if v is not None}
    res = train(
        args.stack,
        args.labels,
        args.out,
        model=args.model,
        profile=args.profile,
        resume=args.resume,
        device=args.device,
        progress=not args.quiet,
        **overrides,
    )
    state = "finished" if res.finished else "stopped"
    print(
        f"{res.model} (encoder {res.encoder}) {state} after {res.epochs_run} epochs; best validation mIoU "
        f"(glacier classes) {res.best_score:.4f} at epoch {res.best_epoch}; run in {res.run_dir}"
    )
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run directory written by `cryonet train`")
    p.add_argument("--split", default="test", choices=["test", "val", "train"], help="tiles to score (default test)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over tiles (default 1000)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, mps")


def _run_evaluate(args: argparse.Namespace) -> int:
    from cryonet.train import evaluate

    res = evaluate(args.run, args.split, n_boot=args.n_boot, device=args.device, progress=not args.quiet)
    s, ci = res["summary"], res["ci"]["miou_glacier"]
    print(
        f"{res['model']} (encoder {res['encoder']}), {res['split']} split, {res['n_tiles']} tiles: "
        f"mIoU glacier {s['miou_glacier']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}], mIoU all "
        f"{s['miou_all']:.4f}, pixel accuracy {s['pixel_accuracy']:.4f}; written to {res['file']}"
    )
    return 0


COMMANDS: list[Command] = [
    ("synth", "generate a synthetic twin scene (offline default data)", _add_synth, _run_synth),
    ("fetch", "download a registered data file, verified by sha256", _add_fetch, _run_fetch),
    ("align", "co-register rasters onto one grid (and rasterise a scene's labels)", _add_align, _run_align),
    # --- registered commands: issue 3 ---
    ("features", "build the feature stack of a scene (all seven layer groups)", _add_features, _run_features),
    ("texture", "GLCM texture features of one band over a sliding window", _add_texture, _run_texture),
    (
        "terrain",
        "terrain layers of a DEM (slope, aspect, curvature, hillshade, TPI, roughness)",
        _add_terrain,
        _run_terrain,
    ),
    # --- registered commands: issue 4 ---
    (
        "train",
        "train a model on a feature stack + labels (checkpoints, resume, DDP via torchrun)",
        _add_train,
        _run_train,
    ),
    ("evaluate", "score a trained run on its test tiles (metrics + bootstrap intervals)", _add_evaluate, _run_evaluate),
    (
        "predict",
        "predict a whole feature stack with a trained model (class COG on the stack's grid)",
        _add_predict,
        _run_predict,
    ),
    (
        "outlines",
        "polygonise a class raster into a GeoPackage, with areas and a reference comparison",
        _add_outlines,
        _run_outlines,
    ),
    (
        "importance",
        "grouped permutation importance of a trained run on its test tiles",
        _add_importance,
        _run_importance,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cryonet`` command."""
    parser = argparse.ArgumentParser(
        prog="cryonet",
        description="CryoNet companion: multi-modal debris-covered glacier mapping, from raw inputs to outlines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on error")
    parser.add_argument("--version", action="version", version=f"cryonet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cryonet`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (CryonetError, OSError, ValueError, KeyError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"cryonet {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
