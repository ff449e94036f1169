"""Execute the chapters of the CryoNet companion with papermill and write the status page.

``make book`` runs this script, then ``jupyter-book build book/ -W`` on the executed notebooks, then
``book/check_site.py``. For each chapter listed in ``book/_toc.yml`` (``- file: chapters/NN_name``), in that order:

1. the source ``book/src/NN_name.md`` (jupytext MyST) is converted to a notebook;
2. papermill executes it in a ``python3`` kernel running this interpreter, from the repository root, with the
   parameters ``profile``, ``data_dir``, ``run_dir``, ``seed`` and ``device`` injected after the chapter's
   ``parameters`` cell, and writes the executed notebook to ``book/chapters/NN_name.ipynb`` (the page);
3. its wall time is recorded in ``RUN_DIR/book_times.json``.

A failing cell stops the run: the message names the chapter and the executed notebook that holds the traceback,
and the exit status is 1. Later chapters read what earlier ones wrote in ``RUN_DIR``, so run them in order (a
chapter whose inputs are missing says which chapter to run first). Finally ``book/status.md`` is written: the
profile, the environment (git commit, Python and package versions) and the execution time of every chapter.

Examples (from the repository root)::

    .venv/bin/python book/execute.py                              # every chapter, ci profile, synthetic scenes
    .venv/bin/python book/execute.py --chapters 1,2               # chapters 1 and 2 only
    .venv/bin/python book/execute.py --profile paper --data-dir /path/to/real/data --device cuda
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
SRC = BOOK / "src"
CHAPTERS = BOOK / "chapters"
TOC = BOOK / "_toc.yml"
STATUS = BOOK / "status.md"
TIMES_FILE = "book_times.json"
KERNEL = "python3"
#: Source formats jupytext reads for a chapter, in order of preference.
SOURCE_SUFFIXES = (".md", ".py")
#: Packages whose versions the status page lists.
PACKAGES = (
    "cryonet", "numpy", "scipy", "pandas", "rasterio", "geopandas", "shapely", "pyproj", "scikit-image",
    "scikit-learn", "numba", "dask", "torch", "torchvision", "segmentation_models_pytorch", "matplotlib", "pooch",
    "papermill", "jupytext", "jupyter-book", "myst-nb", "sphinx", "ipykernel",
)  # fmt: skip
_TOC_CHAPTER = re.compile(r"^\s*-\s*file:\s*chapters/(\S+?)\s*(#.*)?$")


@dataclass(frozen=True)
class Chapter:
    """One chapter: its number, stem (``01_data_preparation``), title, source and executed notebook."""

    number: int
    stem: str
    title: str
    source: Path
    notebook: Path


def chapter_stems(toc: Path = TOC) -> list[str]:
    """The chapter stems listed in the table of contents (``- file: chapters/<stem>``), in book order."""
    stems = [m.group(1) for line in toc.read_text().splitlines() if (m := _TOC_CHAPTER.match(line))]
    return [s.removesuffix(".ipynb") for s in stems]


def _title(source: Path) -> str:
    for line in source.read_text().splitlines():
        if line.startswith("# ") and not line.startswith("# %%"):
            return line[2:].strip()
    return source.stem


def chapters(toc: Path = TOC, src: Path = SRC) -> list[Chapter]:
    """The chapters of the book, from the table of contents.

    Raises:
        SystemExit: a chapter listed in the toc has no source in ``book/src`` or its stem does not start with a number.
    """
    out = []
    for stem in chapter_stems(toc):
        sources = [src / f"{stem}{suffix}" for suffix in SOURCE_SUFFIXES if (src / f"{stem}{suffix}").is_file()]
        if not sources:
            raise SystemExit(f"{toc}: lists chapters/{stem}, but there is no {src}/{stem}.md (or .py); add the source.")
        number = re.match(r"(\d+)_", stem)
        if not number:
            raise SystemExit(f"{toc}: chapter stem {stem!r} must start with its number, e.g. 03_training.")
        out.append(Chapter(int(number.group(1)), stem, _title(sources[0]), sources[0], CHAPTERS / f"{stem}.ipynb"))
    return out


def select(all_chapters: list[Chapter], spec: str | None) -> list[Chapter]:
    """The chapters named by ``spec`` in book order.

    ``spec`` is ``"1,2"``, ``"3-6"`` or ``"02_feature_engineering"``; None means all.
    """
    if not spec:
        return all_chapters
    wanted: set[int] = set()
    by_stem = {c.stem: c.number for c in all_chapters}
    for part in spec.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = map(int, part.split("-"))
            wanted.update(range(lo, hi + 1))
        elif part.isdigit():
            wanted.add(int(part))
        elif part in by_stem:
            wanted.add(by_stem[part])
        else:
            raise SystemExit(f"--chapters: {part!r} is neither a chapter number nor one of {sorted(by_stem)}")
    unknown = wanted - {c.number for c in all_chapters}
    if unknown:
        raise SystemExit(
            f"--chapters: no chapter numbered {sorted(unknown)}; the book has {[c.number for c in all_chapters]}"
        )
    return [c for c in all_chapters if c.number in wanted]


def check_kernel() -> str:
    """Make sure the ``python3`` kernel runs this interpreter (the project's .venv); return its command.

    jupyter_client replaces a bare ``python`` in a kernel's argv by ``sys.executable``, so the kernelspec that
    ipykernel installs into the venv runs the venv's Python. A user-level ``python3`` kernelspec pointing at another
    interpreter would shadow it; that is refused with the command that fixes it.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise SystemExit(
            f"no Jupyter kernel named {KERNEL!r}; install one for this environment: "
            f"{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}"
        ) from None
    exe = spec.argv[0]
    major, minor = sys.version_info[:2]
    if exe in ("python", f"python{major}", f"python{major}.{minor}"):
        return sys.executable
    if Path(exe).resolve() != Path(sys.executable).resolve():
        raise SystemExit(
            f"the {KERNEL!r} kernel ({spec.resource_dir}) runs {exe}, not this environment's {sys.executable}; "
            f"run `{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}` and remove the other "
            "kernelspec (`jupyter kernelspec list` shows where it is)."
        )
    return exe


def to_notebook(chapter: Chapter, path: Path) -> Path:
    """Convert the chapter's jupytext source to an ``.ipynb`` at ``path`` (papermill reads only notebooks)."""
    import jupytext

    nb = jupytext.read(chapter.source)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)  # the executed notebook is a build output, not a paired file
    path.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(nb, path, fmt="ipynb")
    return path


def execute(chapter: Chapter, parameters: dict[str, object], *, progress: bool) -> float:
    """Execute one chapter with papermill; return its wall time in seconds.

    Raises:
        SystemExit: a cell failed (the message names the notebook holding the traceback).
    """
    import tempfile

    import papermill

    chapter.notebook.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cryonet-book-") as tmp:
        source_nb = to_notebook(chapter, Path(tmp) / f"{chapter.stem}.ipynb")
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source_nb),
                str(chapter.notebook),
                parameters=parameters,
                kernel_name=KERNEL,
                cwd=str(ROOT),
                progress_bar=progress,
                report_mode=False,
                log_output=False,
            )
        except papermill.PapermillExecutionError as exc:
            raise SystemExit(
                f"chapter {chapter.number} ({chapter.stem}) failed in cell {exc.exec_count}: "
                f"{exc.ename}: {exc.evalue}\n"
                f"The executed notebook with the traceback is {chapter.notebook.relative_to(ROOT)}."
            ) from None
    return time.perf_counter() - t0


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def status_page(times: dict[str, dict[str, object]], all_chapters: list[Chapter], args: argparse.Namespace) -> str:
    """The status page (MyST Markdown): profile, environment, package versions, execution time per chapter."""
    from cryonet.config import get_profile

    profile = get_profile(args.profile)
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit != "unknown" else False
    rows = []
    total = 0.0
    for c in all_chapters:
        t = times.get(c.stem)
        if t is None:
            rows.append([c.number, c.title, "not executed", "", ""])
            continue
        total += float(t["seconds"])  # type: ignore[arg-type]
        rows.append([c.number, c.title, _format_seconds(float(t["seconds"])), t["finished"], t["profile"]])  # type: ignore[arg-type]
    settings = profile.to_dict()
    split = settings.pop("split")
    settings.update({f"split.{k}": v for k, v in split.items()})
    try:
        import torch

        torch_threads = torch.get_num_threads()
        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        torch_threads, cuda = "n/a", False
    env_rows = [
        ["date (UTC)", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")],
        ["git commit", f"`{commit}`" + (" (with uncommitted changes)" if dirty else "")],
        ["Python", f"{platform.python_version()} ({platform.python_implementation()})"],
        ["platform", platform.platform()],
        ["CPU cores visible", os.cpu_count()],
        ["torch threads", torch_threads],
        ["CUDA available", cuda],
        ["data directory", f"`{args.data_dir}`"],
        ["run directory", f"`{args.run_dir}`"],
        ["seed", args.seed],
        ["device", args.device],
    ]
    return (
        "\n\n".join(
            [
                "# Status of this build",
                "This page is written by `book/execute.py` after it has executed the chapters; nothing on it is typed "
                "in by hand. Results in the chapters come from the data and profile named here: with the `ci` profile "
                "and synthetic twin scenes every result is **synthetic**.",
                "## Execution time per chapter",
                "Wall time of executing each chapter's notebook with papermill (kernel start-up included), on the "
                "machine below.",
                _md_table(["chapter", "title", "wall time", "finished (UTC)", "profile"], rows),
                f"Total over the executed chapters: {_format_seconds(total)}.",
                "## Environment",
                _md_table(["", ""], env_rows),
                "## Package versions",
                _md_table(["package", "version"], [[p, _version(p)] for p in PACKAGES]),
                f"## Profile `{profile.name}`",
                "The settings of the run profile (`cryonet.config`); the paper does not publish its training settings, "
                "so these are this project's choices (see the `cryonet.config` module docstring).",
                _md_table(["setting", "value"], [[k, f"`{v}`"] for k, v in settings.items()]),
            ]
        )
        + "\n"
    )


def _load_times(run_dir: Path) -> dict[str, dict[str, object]]:
    path = run_dir / TIMES_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def _save_json(path: Path, doc: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


_LOCK_HANDLE = None


def _lock_or_exit() -> None:
    """Refuse to run while another driver executes chapters in this checkout (both would write book/chapters)."""
    import fcntl

    global _LOCK_HANDLE
    CHAPTERS.mkdir(parents=True, exist_ok=True)
    handle = (CHAPTERS / ".execute.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise SystemExit(
            f"another book/execute.py is executing chapters in this checkout (pid {handle.read().strip() or '?'}); "
            "wait for it to finish: two runs would overwrite each other's notebooks in book/chapters."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _LOCK_HANDLE = handle  # held until the process exits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``book/execute.py``."""
    ap = argparse.ArgumentParser(
        description="Execute the book's chapters with papermill (in toc order) and write book/status.md.",
        epilog="Then: jupyter-book build book/ -W && python book/check_site.py (make book does all three).",
    )
    ap.add_argument("--profile", default="ci", help="run profile of cryonet.config: ci (default) or paper")
    ap.add_argument("--data-dir", default="data", help="folder with <region>/scene.json inputs (default: data)")
    ap.add_argument("--run-dir", default=None, help="where chapters write their outputs (default: runs/<profile>)")
    ap.add_argument("--seed", type=int, default=0, help="random seed passed to every chapter (default 0)")
    ap.add_argument(
        "--device", default="auto", help="torch device for training chapters: auto, cpu, cuda (default auto)"
    )
    ap.add_argument("--chapters", default=None, help="subset to run, e.g. 1,2 or 3-6 (default: all, in toc order)")
    ap.add_argument("--list", action="store_true", help="list the chapters and exit")
    ap.add_argument("--status-only", action="store_true", help="only rewrite book/status.md from the recorded times")
    ap.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    args = ap.parse_args(argv)
    if args.run_dir is None:
        args.run_dir = f"runs/{args.profile}"
    return args


def main(argv: list[str] | None = None) -> int:
    """Execute the selected chapters and write the status page; the exit status."""
    args = parse_args(argv)
    all_chapters = chapters()
    if args.list:
        for c in all_chapters:
            print(f"{c.number}  {c.stem:32s} {c.title}  ({c.source.relative_to(ROOT)})")
        return 0
    from cryonet.config import get_profile

    try:
        get_profile(args.profile)
    except KeyError as exc:
        raise SystemExit(str(exc.args[0])) from None
    run_dir = ROOT / args.run_dir if not Path(args.run_dir).is_absolute() else Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    times = _load_times(run_dir)
    if not args.status_only:
        _lock_or_exit()
        kernel = check_kernel()
        # The kernel shows figures inline; `MPLBACKEND=Agg` (set by the Makefile for tests) would hide them.
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        parameters = {
            "profile": args.profile,
            "data_dir": args.data_dir,
            "run_dir": args.run_dir,
            "seed": args.seed,
            "device": args.device,
        }
        todo = select(all_chapters, args.chapters)
        print(f"kernel {KERNEL!r} runs {kernel}; parameters {parameters}", flush=True)
        for c in todo:
            print(f"== chapter {c.number}: {c.title} ({c.source.relative_to(ROOT)})", flush=True)
            times.pop(c.stem, None)
            _save_json(run_dir / TIMES_FILE, times)
            seconds = execute(c, parameters, progress=not args.no_progress and sys.stderr.isatty())
            times[c.stem] = {
                "seconds": round(seconds, 1),
                "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
                "profile": args.profile,
            }
            _save_json(run_dir / TIMES_FILE, times)
            print(f"   done in {seconds:.1f} s -> {c.notebook.relative_to(ROOT)}", flush=True)
    STATUS.write_text(status_page(times, all_chapters, args))
    print(f"status page written: {STATUS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
