"""The data registry: format, pinned URLs, real checksums, and verified fetching through a loopback mirror."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryonet import manifest
from cryonet.manifest import ChecksumError, FetchError

SMALL = "glacierSMBM-liligo/original_rda/debrisMask_30m.rda"  # 4.4 kB
SMALL_TEXT = "glacierSMBM-liligo/original_rda/DESCRIPTION"  # 635 B
SHAPEFILE = "oggm-sample-data/test-files/Hintereisferner_RGI5.shp"  # 18 kB + 4 sidecars
TIMEOUT_S = 5.0
#: The human-readable pages of the registry (one per source and per region).
PAGES = Path(__file__).resolve().parents[1] / "data_manifest"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- the registry itself --------------------------------------------------------------------------------------------


def test_registry_parses_and_is_well_formed():
    entries = manifest.entries()
    assert len(entries) >= 100
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), "registry names must be unique"
    # every line that is not a comment became exactly one entry
    lines = [ln for ln in manifest.registry_path().read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == len(entries)
    for e in entries:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        assert e.url.startswith("https://"), e.name
        assert not e.name.startswith("/") and ".." not in e.name.split("/"), e.name
        assert Path(e.name).name == Path(e.url).name, f"{e.name}: file name differs from its URL {e.url}"


def test_every_url_is_pinned_to_an_immutable_version():
    for e in manifest.entries():
        pinned_commit = re.search(r"/[0-9a-f]{40}/", e.url) is not None
        pinned_doi = re.search(r"(doi:|doi\.org/|zenodo\.org/records?/)\S*\d", e.url) is not None
        assert pinned_commit or pinned_doi, f"{e.name}: URL {e.url} is not pinned to a commit or a DOI version"
        assert "/main/" not in e.url and "/master/" not in e.url and "/HEAD/" not in e.url, e.url
        if pinned_commit:
            assert e.commit is not None and e.commit in e.url


def test_url_paths_follow_the_source_repositories():
    by_name = {e.name: e for e in manifest.entries()}
    raw = "https://raw.githubusercontent.com"
    assert by_name["oggm-sample-data/test-files/hef_srtm.tif"].url == (
        f"{raw}/OGGM/oggm-sample-data/99651428d84b68735c87001da70983fa369abd59/test-files/hef_srtm.tif"
    )
    smbm = f"{raw}/cran/glacierSMBM/586b4bdc6a3e880d4afb855198b1011b8f8e630f"
    assert by_name[SMALL].url == f"{smbm}/data/debrisMask_30m.rda"
    assert by_name["glacierSMBM-liligo/original_rda/debrisMask_30m.Rd"].url.endswith("/man/debrisMask_30m.Rd")
    assert by_name["hkh-glacial-lakes/HKH_2000.shp"].url == (
        f"{raw}/fidelsteiner/HMAGLOFDB/b47ff193425ad307092c45c32a22995bcfd24a03/Database/Lakes/HKHLAKEDB/HKH_2000.shp"
    )
    assert by_name["hkh-glacial-lakes/HMAGLOFDB.csv"].url == (
        f"{raw}/fidelsteiner/HMAGLOFDB/916fe1e1530a21c09ff0b9bb42642a74d8ab0da2/Database/GLOFs/HMAGLOFDB.csv"
    )
    # every entry's folder is a declared source, with a licence and a README page that exists
    for e in by_name.values():
        assert e.source is not None, e.name
        assert (PAGES / e.source.readme).is_file(), e.source.readme
        assert e.licence and e.licence != "unknown"
    # derived files are documented, never registered with an invented URL
    assert not any(Path(n).name.startswith("derived_") for n in by_name)
    assert not set(manifest.DERIVED) & set(by_name)


def test_every_shapefile_has_its_required_sidecars():
    names = {e.name for e in manifest.entries()}
    shapefiles = [n for n in names if n.endswith(".shp")]
    assert len(shapefiles) >= 15
    for shp in shapefiles:
        sidecars = manifest.companions(shp)
        for suffix in (".shx", ".dbf", ".prj"):
            assert shp[:-4] + suffix in sidecars, f"{shp} lacks {suffix} in the registry"
        assert all(s in names for s in sidecars)


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError) as info:
        manifest.fetch("HKH_2000.shp")
    msg = str(info.value)
    assert "hkh-glacial-lakes/HKH_2000.shp" in msg and "--list" in msg
    with pytest.raises(KeyError, match="hef_srtm.tif"):
        manifest.fetch("oggm-sample-data/test-files/hef_srtm.tiff")


def test_malformed_registry_is_refused_with_line_number(tmp_path, monkeypatch):
    bad = tmp_path / "registry.txt"
    bad.write_text("# comment\na.tif sha256:" + "0" * 63 + " https://example.org/x/" + "a" * 40 + "/a.tif\n")
    monkeypatch.setenv(manifest.ENV_REGISTRY, str(bad))
    with pytest.raises(manifest.ManifestError, match=r"registry.txt:2: .*64 lowercase hex"):
        manifest.entries()
    bad.write_text("a.tif sha256:" + "0" * 64 + "\n")
    with pytest.raises(manifest.ManifestError, match=r":1: expected '<name> sha256:<hex> <url>'"):
        manifest.entries()


# --- against the real files -----------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_registry_sha256_equals_the_real_files(realdata):
    checked = 0
    for e in manifest.entries():
        path = realdata / e.name
        if path.is_file():
            assert e.sha256 == sha256(path), f"{e.name}: registry sha256 differs from the real file"
            checked += 1
    assert checked == len(manifest.entries()), "every registered file should be present in the reference folder"
    # the independent SHA256SUMS list agrees too
    sums = dict(line.split()[::-1] for line in (realdata / "SHA256SUMS").read_text().splitlines())
    for e in manifest.entries():
        if "./" + e.name in sums:
            assert sums["./" + e.name] == e.sha256


@pytest.mark.realdata
def test_every_original_in_realdata_is_registered_or_derived(realdata):
    registered = {e.name for e in manifest.entries()}
    for path in files_under(realdata):
        rel = path.relative_to(realdata).as_posix()
        if "/" not in rel:
            continue
        assert rel in registered or rel in manifest.DERIVED, f"{rel} is neither registered nor documented as derived"


# --- fetching through a loopback mirror -----------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep the test output clean
        pass


@pytest.fixture
def serve() -> Iterator:
    """Factory: serve a directory over HTTP on 127.0.0.1 (free port); returns the base URL. Shut down after."""
    servers = []

    def _serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield _serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=TIMEOUT_S)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(manifest.ENV_DATA_DIR, str(directory))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return directory


@pytest.fixture
def mirror(realdata, serve, cache, monkeypatch) -> str:
    url = serve(realdata)
    monkeypatch.setenv(manifest.ENV_MIRROR, url + "/")
    return url


def test_fetch_small_file_is_verified_and_cached(mirror, cache, realdata, monkeypatch):
    path = manifest.fetch(SMALL, progress=False, timeout=TIMEOUT_S)
    assert path == cache / SMALL
    assert path.read_bytes() == (realdata / SMALL).read_bytes()
    assert sha256(path) == {e.name: e.sha256 for e in manifest.entries()}[SMALL]
    assert manifest.cache_dir() == cache
    # a second call is served from the verified cache: it works with the mirror unreachable
    monkeypatch.setenv(manifest.ENV_MIRROR, "http://127.0.0.1:9")
    assert manifest.fetch(SMALL, progress=False, retries=0, timeout=TIMEOUT_S) == path


def test_fetch_copies_to_dest(mirror, tmp_path, realdata):
    dest = tmp_path / "out" / "nested"
    path = manifest.fetch(SMALL_TEXT, dest=dest, progress=False, timeout=TIMEOUT_S)
    assert path == dest / "DESCRIPTION"
    assert path.read_bytes() == (realdata / SMALL_TEXT).read_bytes()
    assert [p.name for p in dest.iterdir()] == ["DESCRIPTION"]  # no temporary file left behind


def test_fetching_a_shapefile_brings_its_sidecars(mirror, cache, tmp_path):
    import geopandas as gpd

    dest = tmp_path / "vectors"
    path = manifest.fetch(SHAPEFILE, dest=dest, progress=False, timeout=TIMEOUT_S)
    stem = "Hintereisferner_RGI5"
    expected = sorted(f"{stem}{s}" for s in (".cpg", ".dbf", ".prj", ".shp", ".shx"))
    assert sorted(p.name for p in dest.iterdir()) == expected
    for name in [SHAPEFILE, *manifest.companions(SHAPEFILE)]:
        assert (cache / name).is_file()
    outline = gpd.read_file(path)  # readable only with .shx/.dbf beside it; CRS only with .prj
    assert len(outline) == 1 and outline.crs.to_epsg() == 4326
    assert outline.to_crs(32632).area.iloc[0] == pytest.approx(8.036e6, rel=0.01)  # HEF: RGI area 8.036 km2


def test_tampered_file_is_refused_and_nothing_is_cached(realdata, serve, cache, tmp_path, monkeypatch):
    fake = tmp_path / "mirror"
    (fake / SMALL_TEXT).parent.mkdir(parents=True)
    original = (realdata / SMALL_TEXT).read_bytes()
    (fake / SMALL_TEXT).write_bytes(original.replace(b"GPL (>= 3)", b"MIT       "))
    url = serve(fake)
    monkeypatch.setenv(manifest.ENV_MIRROR, url)
    expected = {e.name: e.sha256 for e in manifest.entries()}[SMALL_TEXT]
    found = sha256(fake / SMALL_TEXT)
    assert found != expected

    with pytest.raises(ChecksumError) as info:
        manifest.fetch(SMALL_TEXT, progress=False, retries=0, timeout=TIMEOUT_S)
    msg = str(info.value)
    assert SMALL_TEXT in msg and expected in msg and found in msg
    assert f"{url}/{SMALL_TEXT}" in msg and "CRYONET_DATA_MIRROR" in msg and "mirror or upstream file changed" in msg
    assert files_under(cache) == [], "neither the file nor a temporary download may stay in the cache"

    # a corrupt copy already in the cache is re-downloaded, still refused, and removed
    (cache / SMALL_TEXT).parent.mkdir(parents=True, exist_ok=True)
    (cache / SMALL_TEXT).write_bytes(b"stale")
    with pytest.raises(ChecksumError):
        manifest.fetch(SMALL_TEXT, progress=False, retries=0, timeout=TIMEOUT_S)
    assert files_under(cache) == []

    # the dest folder is not touched either
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError):
        manifest.fetch(SMALL_TEXT, dest=dest, progress=False, retries=0, timeout=TIMEOUT_S)
    assert files_under(dest) == []


def test_missing_file_on_mirror_names_url_and_variable(serve, cache, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    url = serve(empty)
    monkeypatch.setenv(manifest.ENV_MIRROR, url)
    with pytest.raises(FetchError) as info:
        manifest.fetch(SMALL, progress=False, retries=0, timeout=TIMEOUT_S)
    msg = str(info.value)
    assert f"{url}/{SMALL}" in msg and "CRYONET_DATA_MIRROR" in msg and "404" in msg
    assert isinstance(info.value, OSError)
    assert files_under(cache) == []


def test_mirror_must_be_a_url(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(manifest.ENV_MIRROR, str(tmp_path))
    with pytest.raises(manifest.ManifestError, match=r"CRYONET_DATA_MIRROR=.*http.server --directory"):
        manifest.fetch(SMALL, progress=False)
    monkeypatch.setenv(manifest.ENV_MIRROR, "  ")
    assert manifest.mirror() is None


def test_unreachable_mirror_fails_fast_with_clear_error(cache, monkeypatch):
    import socket

    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(manifest.ENV_MIRROR, f"http://127.0.0.1:{port}")
    with pytest.raises(FetchError, match=rf"http://127.0.0.1:{port}/{re.escape(SMALL)}.*CRYONET_DATA_MIRROR"):
        manifest.fetch(SMALL, progress=False, retries=0, timeout=TIMEOUT_S)


# --- command line ---------------------------------------------------------------------------------------------------


def test_cli_fetch_to_dest_through_the_mirror(mirror, tmp_path, capsys, realdata):
    from cryonet.cli import main

    dest = tmp_path / "cli"
    assert main(["-q", "fetch", SMALL, "--dest", str(dest)]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out) == dest / Path(SMALL).name
    assert sha256(Path(out)) == sha256(realdata / SMALL)


def test_cli_fetch_list_shows_every_entry(capsys):
    from cryonet.cli import main

    assert main(["fetch", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    entries = manifest.entries()
    assert len(lines) == len(entries)
    first = lines[0].split("\t")
    assert first[0] == entries[0].name and entries[0].url in first
    assert entries[0].sha256 in lines[0]


def test_cli_fetch_unknown_name_is_one_clear_line(capsys):
    from cryonet.cli import main

    assert main(["fetch", "hef_srtm.tif"]) == 1
    err = capsys.readouterr().err
    assert "oggm-sample-data/test-files/hef_srtm.tif" in err and "Traceback" not in err


# --- derived files --------------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("year", [2000, 2020])
def test_sun_koshi_lakes_re_derive_the_reference_subset(realdata, year):
    import geopandas as gpd

    got = manifest.lakes_in_sub_basin(realdata / f"hkh-glacial-lakes/HKH_{year}.shp")
    ref = gpd.read_file(realdata / f"hkh-glacial-lakes/derived_HKH_{year}_SunKoshi_Poiqu.geojson")
    assert len(got) == len(ref) == {2000: 30, 2020: 31}[year]
    assert got.crs.to_epsg() == 4326
    assert list(got["GLIMS_ID"]) == list(ref["GLIMS_ID"])
    assert got.geometry.geom_equals_exact(ref.geometry, tolerance=1e-9).all()


@pytest.mark.realdata
def test_everest_footprint_lakes_re_derive_the_reference_subset(realdata):
    import geopandas as gpd

    got = manifest.lakes_in_raster_footprint(
        realdata / "hkh-glacial-lakes/HKH_2020.shp",
        realdata / "geoutils-data/data/Everest_Landsat/LE71400412000304SGS00_RGB.tif",
    )
    ref = gpd.read_file(realdata / "hkh-glacial-lakes/derived_HKH_2020_everest_landsat_extent.geojson")
    assert list(got["GLIMS_ID"]) == list(ref["GLIMS_ID"]) and len(ref) == 3
    assert got.geometry.geom_equals_exact(ref.geometry, tolerance=1e-9).all()


def test_derive_end_to_end_through_the_mirror(mirror, tmp_path, realdata):
    import numpy as np
    import rasterio

    name = "glacierSMBM-liligo/derived_baltoro_srtm_on_liligo_grid.tif"
    out = manifest.derive(name, dest=tmp_path / "derived", progress=False)
    assert out == tmp_path / "derived" / Path(name).name
    with rasterio.open(out) as a, rasterio.open(realdata / name) as b:
        got, ref = a.read(1), b.read(1)
        assert a.crs == b.crs and a.transform == b.transform
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert np.isfinite(got).all()


def test_derive_without_recipe_explains_how_it_was_made():
    with pytest.raises(manifest.ManifestError, match=r"rdata.*glacierSMBM\.md"):
        manifest.derive("glacierSMBM-liligo/debrisMask_30m.tif")
    with pytest.raises(KeyError, match="derived_HKH_2000_SunKoshi_Poiqu"):
        manifest.derive("hkh-glacial-lakes/derived_HKH_2000_SunKoshi.geojson")


# --- real inputs of the study regions -------------------------------------------------------------------------------


def test_mgrs_square_matches_published_references():
    # the textbook MGRS example: Washington Monument, 18S UJ 23480 06470 (US Army FM 3-25.26)
    assert manifest.mgrs_square(-77.0353, 38.8895) == "18SUJ"
    # Honolulu, Oahu lies in 4Q FJ
    assert manifest.mgrs_square(-157.858, 21.3069) == "04QFJ"
    # Mont Blanc summit is on Sentinel-2 tile T32TLR
    assert manifest.mgrs_square(6.8652, 45.8326) == "32TLR"
    # southern hemisphere and an even zone: Exploradores glacier (geoutils ASTER DEM, EPSG:32718)
    assert manifest.mgrs_square(-73.2, -46.55).startswith("18G")
    with pytest.raises(ValueError, match="outside"):
        manifest.mgrs_square(10.0, 85.0)


def _tile_cover_brute_force(bounds, zone, tile_xy):
    """Fraction of a lon/lat box inside explicit Sentinel-2 tile extents: (x0, y_top) -> 109.8 km square."""
    import numpy as np
    from pyproj import Transformer

    w, s, e, n = bounds
    lon, lat = np.meshgrid(np.linspace(w, e, 60), np.linspace(s, n, 60))
    x, y = Transformer.from_crs(4326, 32600 + zone, always_xy=True).transform(lon, lat)
    inside = np.zeros(x.shape, bool)
    fractions = []
    for x0, top in tile_xy:
        hit = (x >= x0) & (x <= x0 + 109_800) & (y <= top) & (y >= top - 109_800)
        fractions.append(hit.mean())
        inside |= hit
    return fractions, inside.mean()


def test_sentinel2_tiles_of_the_study_regions():
    poiqu = manifest.sentinel2_tiles(manifest.REGION_BOUNDS["poiqu"], zone=45)
    assert set(poiqu) == {"45RUM", "45RVM", "45RUL", "45RVL"}
    fractions, union = _tile_cover_brute_force(
        manifest.REGION_BOUNDS["poiqu"], 45, [(300_000, 3_200_000), (400_000, 3_200_000)]
    )
    assert poiqu["45RUM"] == pytest.approx(fractions[0]) and poiqu["45RVM"] == pytest.approx(fractions[1])
    assert union == 1.0, "T45RUM + T45RVM must cover the whole Poiqu box"
    montblanc = manifest.sentinel2_tiles(manifest.REGION_BOUNDS["montblanc"], zone=32)
    assert montblanc["32TLR"] == 1.0 and set(montblanc) <= {"32TLR", "32TLS"}


def test_glo30_tile_names():
    assert manifest.glo30_tiles(manifest.REGION_BOUNDS["poiqu"]) == [
        "Copernicus_DSM_COG_10_N28_00_E085_00_DEM",
        "Copernicus_DSM_COG_10_N28_00_E086_00_DEM",
    ]
    assert manifest.glo30_tiles((-73.4, -46.7, -72.9, -46.4)) == [
        "Copernicus_DSM_COG_10_S47_00_W074_00_DEM",
        "Copernicus_DSM_COG_10_S47_00_W073_00_DEM",
    ]


def test_region_bounds_agree_with_presets_and_pages():
    from cryonet.regions import REGIONS

    pages = PAGES
    for name, (w, s, e, n) in manifest.REGION_BOUNDS.items():
        region = REGIONS[name]
        assert w < region.centre_lon < e and s < region.centre_lat < n
        zone = region.epsg - 32600
        assert zone == int((region.centre_lon + 180) // 6) + 1
        text = (pages / f"{name}.md").read_text()
        for tile, share in manifest.sentinel2_tiles((w, s, e, n), zone).items():
            assert f"T{tile}" in text, f"{name}.md does not list tile T{tile}"
            assert f"{round(share * 100)} %" in text, f"{name}.md: share of T{tile} should read {share:.0%}"
        for dem in manifest.glo30_tiles((w, s, e, n)):
            assert dem in text


@pytest.mark.realdata
def test_poiqu_bounds_hold_the_basin_lakes_and_glofs(realdata):
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box

    aoi = box(*manifest.REGION_BOUNDS["poiqu"])
    lakes = gpd.read_file(realdata / "hkh-glacial-lakes/derived_HKH_2020_SunKoshi_Poiqu.geojson")
    assert lakes.geometry.within(aoi).all()
    glofs = pd.read_csv(realdata / "hkh-glacial-lakes/HMAGLOFDB.csv", encoding_errors="replace")
    poiqu = glofs[glofs["River_Basin"] == "Poiqu"]
    assert len(poiqu) == 13
    assert gpd.points_from_xy(poiqu["Lon_lake"], poiqu["Lat_lake"]).within(aoi).all()
