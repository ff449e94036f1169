"""The book's structure, its driver and its site checker (fast: nothing is executed, no browser is started).

``make book`` runs the chapters and the browser check for real; these tests keep the pieces consistent so that a new
chapter needs only its source file and one toc line.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
#: Parameters every chapter's ``parameters`` cell must define (the driver passes all of them).
COMMON_PARAMETERS = {"profile": str, "data_dir": str, "run_dir": str, "seed": int, "device": str}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"book_{name}", BOOK / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


execute = _load("execute")
check_site = _load("check_site")
SOURCES = sorted(p for p in (BOOK / "src").iterdir() if p.suffix in execute.SOURCE_SUFFIXES)


def _parameters_cell(path: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cell"
    return code[0]


# ------------------------------------------------------------------------------------------------------------------
# Structure
# ------------------------------------------------------------------------------------------------------------------
def test_toc_lists_exactly_the_chapter_sources_in_order():
    stems = execute.chapter_stems()
    assert stems == sorted(p.stem for p in SOURCES), "book/_toc.yml and book/src/ disagree"
    numbers = [int(s.split("_", 1)[0]) for s in stems]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    assert toc["root"] == "intro" and (BOOK / "intro.md").is_file()
    files = [entry["file"] for entry in toc["chapters"]]
    assert files == [f"chapters/{s}" for s in stems] + ["status"]


def test_chapters_are_read_from_the_toc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_a.md").write_text("# Alpha\n")
    (src / "03_c.md").write_text("text\n# Gamma chapter\n")
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "root: intro\nchapters:\n  - file: chapters/01_a\n  - file: chapters/03_c  # note\n  - file: status\n"
    )
    chs = execute.chapters(toc, src)
    assert [(c.number, c.stem, c.title) for c in chs] == [(1, "01_a", "Alpha"), (3, "03_c", "Gamma chapter")]
    toc.write_text("root: intro\nchapters:\n  - file: chapters/02_missing\n")
    with pytest.raises(SystemExit, match="02_missing"):
        execute.chapters(toc, src)


def test_select_chapters_by_number_range_and_stem():
    chs = [execute.Chapter(n, f"0{n}_x{n}", "", Path(), Path()) for n in (1, 2, 3, 4)]
    assert [c.number for c in execute.select(chs, None)] == [1, 2, 3, 4]
    assert [c.number for c in execute.select(chs, "3,1")] == [1, 3]  # always in book order
    assert [c.number for c in execute.select(chs, "2-4")] == [2, 3, 4]
    assert [c.number for c in execute.select(chs, "02_x2")] == [2]
    with pytest.raises(SystemExit, match="no chapter numbered"):
        execute.select(chs, "7")
    with pytest.raises(SystemExit, match="neither"):
        execute.select(chs, "intro")


def test_no_two_pages_share_a_stem_in_one_folder():
    # myst-nb refuses ch.md next to ch.ipynb (a -W build fails); sources live in book/src, outputs in book/chapters.
    for folder in [BOOK, *[p for p in BOOK.rglob("*") if p.is_dir() and "_build" not in p.parts]]:
        stems = [p.stem for p in folder.iterdir() if p.suffix in (".md", ".ipynb", ".py") and p.is_file()]
        dupes = {s for s in stems if stems.count(s) > 1}
        assert not dupes, f"{folder}: {dupes}"


def test_config_renders_executed_notebooks_only():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"  # papermill executes; the build only renders
    assert cfg["only_build_toc_files"] is True
    assert "src" in cfg["exclude_patterns"]
    for bib in cfg["bibtex_bibfiles"]:
        assert (BOOK / bib).is_file()
    assert not (BOOK / "_config.yml").exists(), "a book/_config.yml would shadow the root one"


def test_cited_keys_exist_in_the_bibliography():
    bib = (BOOK / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    cited = set()
    for page in [BOOK / "intro.md", *SOURCES]:
        for group in re.findall(r"\{cite:[pt]\}`([^`]+)`", page.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citations found"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


# ------------------------------------------------------------------------------------------------------------------
# Chapter sources
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_chapter_has_a_parameters_cell_with_the_common_parameters(source):
    cell = _parameters_cell(source)
    assert "parameters" in cell.metadata.get("tags", []), (
        f"{source.name}: the first code cell must be tagged parameters"
    )
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign), f"{source.name}: the parameters cell holds only assignments"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    for name, kind in COMMON_PARAMETERS.items():
        assert name in values, f"{source.name}: parameter {name!r} missing"
        assert isinstance(values[name], kind), f"{source.name}: {name} should be a {kind.__name__}"
    assert values["profile"] == "ci" and values["run_dir"] == "runs/ci"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_chapter_converts_to_a_valid_notebook_with_the_house_sections(source, tmp_path):
    chapter = execute.Chapter(1, source.stem, execute._title(source), source, tmp_path / "x.ipynb")
    out = execute.to_notebook(chapter, tmp_path / f"{source.stem}.ipynb")
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert text.lstrip().startswith("# "), "the chapter title comes first"
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[:2] == ["Overview", "Prerequisites"] and headings[-1] == "Summary", headings
    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(cell.source, source.name, "exec")  # no syntax errors


def test_feature_chapter_names_the_chapter_to_run_when_its_inputs_are_missing(tmp_path):
    cells = [c for c in jupytext.read(BOOK / "src" / "02_feature_engineering.md").cells if c.cell_type == "code"]
    namespace: dict = {}
    exec(cells[0].source, namespace)  # parameters
    namespace["run_dir"] = str(tmp_path / "empty-run")
    with pytest.raises(FileNotFoundError, match=r"chapter 1 \(01_data_preparation\)"):
        exec(cells[1].source, namespace)


# ------------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------------
def test_driver_help_and_list():
    run = subprocess.run([sys.executable, str(BOOK / "execute.py"), "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--chapters" in run.stdout and "--profile" in run.stdout
    run = subprocess.run([sys.executable, str(BOOK / "execute.py"), "--list"], capture_output=True, text=True)
    assert run.returncode == 0
    listed = [line.split()[1] for line in run.stdout.splitlines()]
    assert listed == execute.chapter_stems()


def test_a_second_driver_in_the_same_checkout_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "CHAPTERS", tmp_path / "chapters")
    monkeypatch.setattr(execute, "_LOCK_HANDLE", None)
    execute._lock_or_exit()
    first = execute._LOCK_HANDLE
    try:
        with pytest.raises(SystemExit, match=r"another book/execute.py .* \(pid \d+\)"):
            execute._lock_or_exit()  # flock: a second open file description conflicts, even in one process
    finally:
        first.close()
    execute._lock_or_exit()  # free again once the first holder is gone
    execute._LOCK_HANDLE.close()


def test_status_page_lists_profile_versions_and_times():
    chs = execute.chapters()
    args = execute.parse_args(["--profile", "ci"])
    times = {chs[0].stem: {"seconds": 123.4, "finished": "2026-01-01 00:00", "profile": "ci"}}
    page = execute.status_page(times, chs, args)
    assert page.startswith("# Status of this build")
    assert "| 1 | " + chs[0].title + " | 2.1 min (123 s) |" in page
    if len(chs) > 1:
        assert "not executed" in page
    assert "| papermill | " in page and "| torch | " in page
    from cryonet.config import get_profile

    assert "Profile `ci`" in page and f"| epochs | `{get_profile('ci').epochs}` |" in page


# ------------------------------------------------------------------------------------------------------------------
# Site checker (static part; the browser part runs in `make book`)
# ------------------------------------------------------------------------------------------------------------------
def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    site = tmp_path / "html"
    for rel, body in pages.items():
        p = site / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"<html><body>{body}</body></html>")
    (site / "_images").mkdir(exist_ok=True)
    (site / "_images" / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return site


def test_check_static_accepts_a_sound_site(tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<h1 id="top">x</h1><a href="chapters/a.html#sec">a</a><a href="#top">up</a>'
            '<a href="https://example.org/missing">ext</a><a href="mailto:x@y">m</a><img src="_images/fig.png">'
            '<img src="data:image/png;base64,AAAA">',
            "chapters/a.html": '<section id="sec"><a href="../index.html">home</a><a href="../sub/">dir</a>'
            '<a name="old"></a><a href="#old">o</a><img src="../_images/fig.png"></section>',
            "sub/index.html": "<p>sub</p>",
            "_static/ignored.html": '<a href="nowhere.html">not a page</a>',
        },
    )
    assert check_site.check_static(site) == []
    assert [p.relative_to(site).as_posix() for p in check_site.html_pages(site)] == [
        "chapters/a.html", "index.html", "sub/index.html",
    ]  # fmt: skip


def test_check_static_reports_broken_links_anchors_and_images(tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<a href="chapters/gone.html">x</a><a href="chapters/a.html#nope">y</a>'
            '<a href="#missing-here">z</a><img src="_images/absent.png">',
            "chapters/a.html": '<p id="sec">a</p><img src="/_images/fig.png">',
        },
    )
    problems = check_site.check_static(site)
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "chapters/gone.html" in joined and "missing file" in joined
    assert "no element with id 'nope' in a.html" in joined
    assert "no element with id 'missing-here' in index.html" in joined
    assert "image '_images/absent.png'" in joined


def test_check_site_without_index_fails(tmp_path):
    assert check_site.main([str(tmp_path), "--static-only"]) == 1


@pytest.mark.slow
@pytest.mark.skipif(
    not (
        check_site._find(check_site.CHROMIUM_CANDIDATES, "chromium")
        and check_site._find(check_site.CHROMEDRIVER_CANDIDATES, "chromedriver")
    ),
    reason="Debian chromium + chromium-driver not installed",
)
def test_browser_pass_reports_an_image_that_does_not_load_and_saves_screenshots(tmp_path):
    site = _site(
        tmp_path,
        {
            "index.html": '<h1>ok</h1><img src="_images/fig.png">',  # exists but is not a decodable PNG
            "chapters/a.html": '<img src="../_images/gone.png"><link rel="stylesheet" href="../_static/x.css">',
        },
    )
    (site / "_images" / "good.png").write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    (site / "good.html").write_text('<html><body><img src="_images/good.png"></body></html>')
    chromium = check_site._find(check_site.CHROMIUM_CANDIDATES, "chromium")
    chromedriver = check_site._find(check_site.CHROMEDRIVER_CANDIDATES, "chromedriver")
    problems, n = check_site.check_browser(site, site / "_screenshots", chromium, chromedriver)
    assert n == 3
    shots = sorted(p.name for p in (site / "_screenshots").iterdir())
    assert shots == ["chapters__a.png", "good.png", "index.png"]
    assert all((site / "_screenshots" / s).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for s in shots)
    joined = "\n".join(problems)
    assert "index.html: image '_images/fig.png' did not load" in joined
    assert "chapters/a.html: image '../_images/gone.png' did not load" in joined
    assert "chapters/a.html: HTTP 404 for /_static/x.css" in joined
    assert "good.html" not in joined
