"""The data registry: declared public files, their sha256, pinned URLs, verified download and mirror override.

The registry (``cryonet/registry.txt``, package data: it travels with an installed wheel) is a pooch registry: one
line per external file, ``<name> sha256:<hex> <url>``, with every URL pinned to an immutable version (a commit in a
``raw.githubusercontent.com`` URL). A file's name is its path relative to the root of a mirror, so that a folder
laid out like the registry can serve every file as ``<mirror>/<name>``.

Downloads go through :func:`pooch.create` and are always checked against the registry's sha256: pooch streams
each file to a temporary file in the cache folder and moves it onto its final name only when the hash matches,
so a corrupt or changed file never lands in the cache. Files that belong together (a shapefile's ``.shx``,
``.dbf``, ``.prj``, ``.cpg`` sidecars; a GeoTIFF's ``.tfw`` world file) are fetched together.

Environment variables:

* ``CRYONET_DATA_DIR``: the cache folder (default: the platform's user cache, ``pooch.os_cache("cryonet")``).
* ``CRYONET_DATA_MIRROR``: a base URL; when set, every file is fetched from ``<mirror>/<name>`` instead of its
  upstream URL, and still verified against the registry's sha256.
* ``CRYONET_REGISTRY``: another registry file to read instead of the packaged ``cryonet/registry.txt``.

Some reference files were *derived* from the registered originals (subsets, reprojections); they have no public
URL. :data:`DERIVED` records how each was made, and :func:`derive` re-makes those that have a recipe.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pooch

from cryonet.errors import CryonetError
from cryonet.raster import Grid, atomic_path

if TYPE_CHECKING:  # imported lazily at run time: fetching must not pay for geopandas
    import geopandas as gpd

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "CRYONET_DATA_DIR"
ENV_MIRROR = "CRYONET_DATA_MIRROR"
ENV_REGISTRY = "CRYONET_REGISTRY"

#: Files that must travel with a main file, by the main file's suffix. A shapefile is unreadable without its
#: ``.shx`` and ``.dbf``; ``.prj`` holds its CRS and ``.cpg`` the attribute encoding.
COMPANION_SUFFIXES: dict[str, tuple[str, ...]] = {
    ".shp": (".shx", ".dbf", ".prj", ".cpg", ".qpj", ".sbn", ".sbx", ".shp.xml"),
    ".tif": (".tfw", ".tif.aux.xml"),
}

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"/([0-9a-f]{40})/")


class ManifestError(CryonetError, ValueError):
    """The registry file is missing or malformed, or a requested operation is not possible for an entry."""


class UnknownEntryError(CryonetError, KeyError):
    """A name is not in the registry (or the list of derived files); the message lists close matches."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class ChecksumError(CryonetError, ValueError):
    """A downloaded file does not match the sha256 declared in the registry (nothing was kept)."""


class FetchError(CryonetError, OSError):
    """A file could not be downloaded (network or HTTP error)."""


@dataclass(frozen=True)
class Source:
    """A public repository that registry entries come from.

    Attributes:
        key: First path component of its entries' names (the folder a mirror holds them in).
        repository: ``owner/name`` on GitHub.
        licence: SPDX identifier (or short statement) of the licence.
        citation: What to cite when using the files.
        readme: The source's page in ``data_manifest/``.
    """

    key: str
    repository: str
    licence: str
    citation: str
    readme: str


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "oggm-sample-data",
            "OGGM/oggm-sample-data",
            "BSD-3-Clause (repository); SRTM public domain; RGI CC-BY-4.0",
            "OGGM Contributors, oggm-sample-data; RGI Consortium (2017, 2023)",
            "oggm-sample-data.md",
        ),
        Source(
            "geoutils-data",
            "GlacioHack/geoutils-data",
            "BSD-3-Clause (repository); Landsat public domain (USGS); RGI 6.0 CC-BY-4.0",
            "GlacioHack geoutils-data; USGS Landsat 7 ETM+; RGI Consortium (2017)",
            "geoutils-data.md",
        ),
        Source(
            "glacierSMBM-liligo",
            "cran/glacierSMBM",
            "GPL-3.0-or-later",
            "Groos, A. R. and Mayer, C.: glacierSMBM 0.1 (R package, CRAN, 2017); "
            "Groos et al., Geografia Fisica e Dinamica Quaternaria (2017)",
            "glacierSMBM.md",
        ),
        Source(
            "hkh-glacial-lakes",
            "fidelsteiner/HMAGLOFDB",
            "CC-BY-4.0",
            "Steiner & Shrestha (2023), HMAGLOFDB, doi:10.5281/zenodo.7271188; Shrestha et al. (2023), ESSD 15:3941",
            "hkh-glacial-lakes.md",
        ),
        Source(
            "kaushik2022-debris",
            "Sk-2103/Automated-mapping-of-debris-covered-glaciers-using-deep-learning-and-multisource-remote-sensing-data",
            "no licence file in the repository (use for validation, cite the article); article CC-BY-4.0",
            "Kaushik, Singh, Bhardwaj, Joshi & Dietz (2022), Remote Sensing 14(6):1352, doi:10.3390/rs14061352",
            "kaushik2022-debris.md",
        ),
    )
}


@dataclass(frozen=True)
class Entry:
    """One registered file.

    Attributes:
        name: Path relative to a mirror's root, e.g. ``oggm-sample-data/test-files/hef_srtm.tif``.
        sha256: Expected sha256 of the file (64 lowercase hex digits).
        url: Upstream URL, pinned to an immutable version (a commit).
    """

    name: str
    sha256: str
    url: str

    @property
    def source(self) -> Source | None:
        """The repository the file comes from (None if its folder is not in :data:`SOURCES`)."""
        return SOURCES.get(self.name.split("/", 1)[0])

    @property
    def licence(self) -> str:
        """Licence of the file, from its source (``"unknown"`` if the source is not declared)."""
        return self.source.licence if self.source else "unknown"

    @property
    def commit(self) -> str | None:
        """The 40-hex commit the URL is pinned to, or None (e.g. for a DOI URL)."""
        match = _COMMIT.search(self.url)
        return match.group(1) if match else None


def registry_path() -> Path:
    """The registry file: ``$CRYONET_REGISTRY`` if set, else ``registry.txt`` shipped inside the package."""
    override = os.environ.get(ENV_REGISTRY)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "registry.txt"


def entries() -> list[Entry]:
    """All registry entries, in file order.

    Raises:
        ManifestError: the registry file is missing, a line is malformed, a hash is not sha256, a URL is
            missing, or a name is declared twice; the message names the file and line.
    """
    path = registry_path()
    if not path.is_file():
        raise ManifestError(
            f"{path}: data registry not found. It is package data of cryonet (cryonet/registry.txt); reinstall the "
            f"package (pip install cryonet, or pip install -e . in a checkout) or point {ENV_REGISTRY} at a registry "
            "file."
        )
    # Parsed here rather than with Pooch.load_registry because the entries need line-numbered checks (sha256
    # only, a URL on every line, unique names) that pooch does not make.
    found: dict[str, Entry] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) != 3:
            raise ManifestError(f"{where}: expected '<name> sha256:<hex> <url>', found {len(parts)} fields: {line!r}")
        name, digest, url = parts
        alg, _, hexdigest = digest.partition(":")
        if alg != "sha256" or not _SHA256.match(hexdigest):
            raise ManifestError(f"{where}: expected 'sha256:' and 64 lowercase hex digits for {name}, found {digest!r}")
        if name in found:
            raise ManifestError(f"{where}: {name} is declared twice; keep one line per file.")
        found[name] = Entry(name=name, sha256=hexdigest, url=url)
    return list(found.values())


def _registry() -> dict[str, Entry]:
    return {e.name: e for e in entries()}


def _lookup(name: str, known: Mapping[str, object], what: str = "registry") -> None:
    """Raise KeyError with close matches when ``name`` is not in ``known``."""
    if name in known:
        return
    names = list(known)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    base = Path(name).name
    close += [n for n in names if Path(n).name == base and n not in close]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownEntryError(f"{name!r} is not in the {what}.{hint} List the entries with `cryonet fetch --list`.")


def companions(name: str) -> list[str]:
    """Registry names of the files that must travel with ``name`` (e.g. a shapefile's sidecars), in fetch order."""
    reg = _registry()
    _lookup(name, reg)
    for suffix, extra in COMPANION_SUFFIXES.items():
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return [stem + s for s in extra if stem + s in reg]
    return []


def mirror() -> str | None:
    """The mirror base URL from ``$CRYONET_DATA_MIRROR`` (without a trailing slash), or None.

    Raises:
        ManifestError: the variable is set to something that is not an http(s) or ftp URL (e.g. a local folder).
    """
    value = os.environ.get(ENV_MIRROR, "").strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://", "ftp://")):
        raise ManifestError(
            f"{ENV_MIRROR}={value!r}: expected the base URL of a mirror (http://, https:// or ftp://). To use a local "
            f"folder laid out like the registry, serve it: `python -m http.server --directory {value} 8000` and set "
            f"{ENV_MIRROR}=http://127.0.0.1:8000."
        )
    return value


def _pooch(reg: dict[str, Entry], mirror_url: str | None, retries: int) -> pooch.Pooch:
    """The pooch that fetches the registry's files from their pinned URLs, or from ``mirror_url/<name>``."""
    return pooch.create(
        path=pooch.os_cache("cryonet"),
        # Without a mirror every entry has its own pinned URL (``urls``), so base_url is never used for a download.
        base_url=(mirror_url + "/") if mirror_url else "https://raw.githubusercontent.com/",
        registry={n: f"sha256:{e.sha256}" for n, e in reg.items()},
        urls=None if mirror_url else {n: e.url for n, e in reg.items()},
        env=ENV_DATA_DIR,
        retry_if_failed=retries,
        allow_updates=True,
    )


def cache_dir() -> Path:
    """The folder verified files are kept in (``$CRYONET_DATA_DIR`` or the user cache)."""
    return Path(_pooch({}, None, 0).abspath)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """Silence pooch's own logger, which writes INFO lines to stderr whatever the caller configured.

    The same information goes to this module's logger instead, so the application decides what is shown.
    """
    plog = pooch.get_logger()
    level = plog.level
    plog.setLevel(logging.WARNING)
    try:
        yield
    finally:
        plog.setLevel(level)


def _fetch_one(pup: pooch.Pooch, entry: Entry, mirror_url: str | None, progress: bool, timeout: float) -> Path:
    """Fetch one registered file into the cache, verified; translate pooch's errors into clear ones."""
    import requests  # pooch's HTTP transport; imported lazily as pooch does

    url = pup.get_url(entry.name)
    if url.startswith(("http://", "https://")):
        inner: Callable[..., object] = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    else:
        inner = pooch.choose_downloader(url, progressbar=progress)
    seen: dict[str, str] = {}

    def downloader(url: str, output_file: str, pup_: pooch.Pooch) -> None:
        # Records the sha256 of what arrived, so that a mismatch can be reported with the hash that was found.
        inner(url, output_file, pup_)
        seen["sha256"] = pooch.file_hash(str(output_file), alg="sha256")

    target = Path(pup.abspath) / entry.name
    try:
        with _quiet_pooch():
            path = Path(pup.fetch(entry.name, downloader=downloader, progressbar=progress))
    except requests.exceptions.RequestException as exc:
        via = (
            f"It was requested from the mirror set by {ENV_MIRROR}={mirror_url}: check that the mirror is reachable "
            f"and serves <mirror>/{entry.name}, or unset {ENV_MIRROR} to download from the pinned upstream URL "
            f"({entry.url})."
            if mirror_url
            else f"Check the network connection, or set {ENV_MIRROR} to the base URL of a mirror that serves "
            f"<mirror>/{entry.name}."
        )
        raise FetchError(f"{entry.name}: could not download {url} ({type(exc).__name__}: {exc}). {via}") from exc
    except ValueError as exc:
        found = seen.get("sha256")
        if found is None or found == entry.sha256:
            raise
        # pooch deleted its temporary download; a stale cached copy (which already failed the hash, or pooch would
        # not have re-downloaded it) is removed too, so that nothing unverified stays in the cache. The hash is
        # checked again first, in case another process has meanwhile put the right file there.
        if target.is_file() and pooch.file_hash(str(target), alg="sha256") != entry.sha256:
            target.unlink(missing_ok=True)
        raise ChecksumError(
            f"{entry.name}: checksum mismatch for the file downloaded from {url}: expected sha256 {entry.sha256}, "
            f"found sha256 {found}. The mirror or upstream file changed; check {ENV_MIRROR} "
            f"({'set to ' + mirror_url if mirror_url else 'not set'}) or report it. Nothing was kept in the cache "
            f"({pup.abspath})."
        ) from exc
    logger.info("%s: verified sha256 %s (%s)", entry.name, entry.sha256[:12], path)
    return path


def _copy_atomic(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s folder, renamed on success."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def fetch(
    name: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    retries: int = 1,
    timeout: float = 60.0,
) -> Path:
    """Download a registered file (and its companions), verify its sha256 and return its local path.

    A file already in the cache with the right sha256 is not downloaded again. With ``$CRYONET_DATA_MIRROR`` set
    the file comes from ``<mirror>/<name>``; it is verified against the registry all the same.

    Args:
        name: Registry name, e.g. ``hkh-glacial-lakes/HKH_2000.shp`` (a shapefile brings its sidecars).
        dest: If given, a folder into which the verified file and its companions are copied (atomically), under
            their base names so that a shapefile's sidecars sit beside it.
        progress: Show pooch's download progress bar (tqdm).
        retries: How many times to retry a failed download (network error or checksum mismatch).
        timeout: Seconds to wait for the server before giving up on one HTTP request.

    Returns:
        The path of the main file: in ``dest`` if given, otherwise in the cache.

    Raises:
        KeyError: ``name`` is not in the registry (the message lists close matches).
        ChecksumError: the downloaded bytes do not match the registry; nothing is left in the cache.
        FetchError: a network or HTTP error; the message names the URL and the mirror variable.
    """
    reg = _registry()
    _lookup(name, reg)
    mirror_url = mirror()
    pup = _pooch(reg, mirror_url, retries)
    group = [name, *companions(name)]
    paths = [_fetch_one(pup, reg[n], mirror_url, progress, timeout) for n in group]
    if dest is None:
        return paths[0]
    dest = Path(dest)
    copies = [_copy_atomic(p, dest / Path(n).name) for p, n in zip(paths, group, strict=True)]
    logger.info("copied %s to %s", ", ".join(Path(n).name for n in group), dest)
    return copies[0]


# --- real inputs of the study regions -----------------------------------------------------------------------------

#: Areas of interest for the real-data inputs of each region, ``(west, south, east, north)`` in degrees (WGS 84).
#: Poiqu: the Poiqu / Bhote Koshi basin; Mont Blanc: the glaciated massif. See ``data_manifest/poiqu.md`` and
#: ``data_manifest/montblanc.md``.
REGION_BOUNDS: dict[str, tuple[float, float, float, float]] = {
    "poiqu": (85.6, 28.0, 86.3, 28.5),
    "montblanc": (6.75, 45.8, 7.05, 45.95),
}

# MGRS lettering (WGS 84, "AA" scheme used by Sentinel-2). Hand-written because no MGRS library is a dependency;
# checked in the tests against published MGRS references.
_MGRS_COLUMNS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # by zone % 3 (0, 1, 2); 100 km columns 1..8
_MGRS_ROWS = "ABCDEFGHJKLMNPQRSTUV"  # 20 row letters, repeating every 2000 km; even zones start 5 letters later
_MGRS_BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8-degree latitude bands from 80 S (X spans 72-84 N)
#: Sentinel-2 L1C/L2A tiles are 109.8 km squares whose upper-left corner is that of their MGRS 100 km square.
S2_TILE_SIZE_M = 109_800.0


def mgrs_square(lon: float, lat: float, zone: int | None = None) -> str:
    """The MGRS 100 km square (``zone + band + 2 letters``, e.g. ``32TLR``) holding a point.

    Args:
        lon: Longitude, degrees east.
        lat: Latitude, degrees north (-80..84).
        zone: UTM zone to express the point in (default: the standard zone of ``lon``; the Norway/Svalbard
            exceptions are not applied).
    """
    from pyproj import Transformer

    if not -80.0 <= lat <= 84.0:
        raise ValueError(f"latitude {lat} is outside the UTM/MGRS range -80..84 degrees")
    zone = zone or int((lon + 180.0) // 6.0) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return _mgrs_letters(zone, lat, x, y)


def _mgrs_letters(zone: int, lat: float, x: float, y: float) -> str:
    band = _MGRS_BANDS[min(int((lat + 80.0) // 8.0), len(_MGRS_BANDS) - 1)]
    column = _MGRS_COLUMNS[zone % 3][int(x // 100_000) - 1]
    row = _MGRS_ROWS[(int(y // 100_000) + (0 if zone % 2 else 5)) % 20]
    return f"{zone:02d}{band}{column}{row}"


def sentinel2_tiles(bounds: tuple[float, float, float, float], zone: int, *, samples: int = 60) -> dict[str, float]:
    """Sentinel-2 tiles of one UTM zone that cover a lon/lat box, with the fraction of the box each covers.

    A tile is the 109.8 km square that starts at the upper-left corner of its MGRS 100 km square, so it also
    covers the westmost and northmost 9.8 km of its eastern and southern neighbours. The box is sampled on a
    ``samples x samples`` grid of points.

    Args:
        bounds: ``(west, south, east, north)`` in degrees.
        zone: UTM zone (northern hemisphere) in which the tiles are wanted, e.g. 45 for Poiqu, 32 for Mont Blanc.
        samples: Points per side of the sampling grid.

    Returns:
        Tile id (e.g. ``45RUM``) -> fraction (0-1] of the sample points it covers, largest first.
    """
    from pyproj import Transformer

    west, south, east, north = bounds
    lon, lat = np.meshgrid(np.linspace(west, east, samples), np.linspace(south, north, samples))
    fwd = Transformer.from_crs(4326, 32600 + zone, always_xy=True)
    inv = Transformer.from_crs(32600 + zone, 4326, always_xy=True)
    x, y = fwd.transform(lon.ravel(), lat.ravel())
    overlap = S2_TILE_SIZE_M - 100_000.0
    hits: dict[str, int] = {}
    for i in range(x.size):
        tiles = set()
        for dx, dy in ((0.0, 0.0), (-overlap, 0.0), (0.0, overlap), (-overlap, overlap)):
            # the 100 km square of the shifted point names a tile whose 109.8 km extent reaches the point itself
            sx, sy = x[i] + dx, y[i] + dy
            _, slat = inv.transform(sx, sy)
            tiles.add(_mgrs_letters(zone, float(slat), sx, sy))
        for t in tiles:
            hits[t] = hits.get(t, 0) + 1
    return {t: n / x.size for t, n in sorted(hits.items(), key=lambda kv: (-kv[1], kv[0]))}


def glo30_tiles(bounds: tuple[float, float, float, float]) -> list[str]:
    """Names of the Copernicus DEM GLO-30 1 x 1 degree tiles that cover a lon/lat box.

    The names follow the distribution's scheme ``Copernicus_DSM_COG_10_<N|S>yy_00_<E|W>xxx_00_DEM``, where the
    tile's south-west corner is (xxx, yy) degrees and ``10`` is the 1-arc-second (30 m) resolution code.

    Args:
        bounds: ``(west, south, east, north)`` in degrees.
    """
    import math

    west, south, east, north = bounds
    names = []
    for lat in range(math.floor(south), math.ceil(north)):
        for lon in range(math.floor(west), math.ceil(east)):
            ns = f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}"
            ew = f"{'E' if lon >= 0 else 'W'}{abs(lon):03d}"
            names.append(f"Copernicus_DSM_COG_10_{ns}_00_{ew}_00_DEM")
    return names


# --- derived files ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derivation:
    """How a derived reference file was made from registered originals.

    Attributes:
        name: The derived file's name (relative path in the reference folder; not in the registry).
        inputs: Registry names it was made from (companions are fetched with them).
        recipe: What was done, in one or two sentences.
        make: Function ``make(inputs, out)`` that re-derives it from the fetched inputs into ``out``, or None when
            re-deriving needs a tool this package does not use (then ``recipe`` says which).
    """

    name: str
    inputs: tuple[str, ...]
    recipe: str
    make: Callable[[Sequence[Path], Path], None] | None


#: The Liligo grid of the glacierSMBM rasters: EPSG:32643, 30 m, 346 x 480 px, upper-left (606975, 3953505) m.
LILIGO_GRID_SPEC = {"epsg": 32643, "res": 30.0, "width": 346, "height": 480, "left": 606975.0, "top": 3953505.0}


def liligo_grid() -> Grid:
    """The pixel grid of the glacierSMBM Liligo rasters (:data:`LILIGO_GRID_SPEC`)."""
    from affine import Affine
    from rasterio.crs import CRS

    s = LILIGO_GRID_SPEC
    return Grid(
        crs=CRS.from_epsg(int(s["epsg"])),
        transform=Affine(s["res"], 0.0, s["left"], 0.0, -s["res"], s["top"]),
        width=int(s["width"]),
        height=int(s["height"]),
    )


def lakes_in_sub_basin(shapefile: str | os.PathLike[str], sub_basin: str = "Sun Koshi") -> gpd.GeoDataFrame:
    """HKH lake polygons of one sub-basin, in EPSG:4326 (the ``derived_HKH_*_SunKoshi_Poiqu`` recipe).

    Args:
        shapefile: An ICIMOD HKH lake inventory shapefile (``HKH_2000.shp`` / ``HKH_2020.shp``).
        sub_basin: Value of the ``Sub_basin`` attribute to keep. HMAGLOFDB notes *Poiqu (China) = Sun Koshi
            (Nepal)*, so ``"Sun Koshi"`` selects the lakes of the Poiqu / Bhote Koshi basin.

    Returns:
        The selected lakes with all attributes, reprojected to WGS 84 longitude/latitude.
    """
    import geopandas as gpd

    lakes = gpd.read_file(shapefile)
    if "Sub_basin" not in lakes.columns:
        raise ManifestError(f"{shapefile}: no 'Sub_basin' attribute; expected an ICIMOD HKH lake shapefile.")
    return lakes[lakes["Sub_basin"] == sub_basin].to_crs(4326).reset_index(drop=True)


def lakes_in_raster_footprint(shapefile: str | os.PathLike[str], raster: str | os.PathLike[str]) -> gpd.GeoDataFrame:
    """HKH lake polygons that intersect a raster's bounding box, in EPSG:4326 (the ``*_everest_landsat_extent`` recipe).

    Args:
        shapefile: An ICIMOD HKH lake inventory shapefile.
        raster: Any georeferenced raster; its bounds (in its own CRS) define the footprint.
    """
    import geopandas as gpd
    from shapely.geometry import box

    grid = Grid.from_file(raster)
    lakes = gpd.read_file(shapefile)
    hit = lakes.to_crs(grid.crs).intersects(box(*grid.bounds))
    return lakes[hit].to_crs(4326).reset_index(drop=True)


def resample_onto_grid(src_path: str | os.PathLike[str], grid: Grid) -> np.ndarray:
    """Bilinearly reproject band 1 of a raster onto ``grid``; float32, NaN where the source has no data.

    Returns:
        ``(rows, cols)`` float32 array on ``grid``.
    """
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.full(grid.shape, np.nan, dtype=np.float32)
    with rasterio.open(src_path) as src:
        reproject(
            rasterio.band(src, 1),
            out,
            src_nodata=src.nodata,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    return out


def _write_geojson(gdf: gpd.GeoDataFrame, out: Path, layer: str) -> None:
    with atomic_path(out) as tmp:
        tmp.unlink()  # the GeoJSON driver creates the file itself
        gdf.to_file(tmp, driver="GeoJSON", layer=layer)


def _make_sub_basin(inputs: Sequence[Path], out: Path) -> None:
    _write_geojson(lakes_in_sub_basin(inputs[0], "Sun Koshi"), out, Path(out).stem)


def _make_footprint(inputs: Sequence[Path], out: Path) -> None:
    _write_geojson(lakes_in_raster_footprint(inputs[0], inputs[1]), out, Path(out).stem)


def _make_baltoro(inputs: Sequence[Path], out: Path) -> None:
    from cryonet.raster import write_raster

    grid = liligo_grid()
    write_raster(out, resample_onto_grid(inputs[0], grid), grid, nodata=float("nan"), dtype="float32")


_EVEREST_RGB = "geoutils-data/data/Everest_Landsat/LE71400412000304SGS00_RGB.tif"
_RDA_RECIPE = (
    "GeoTIFF written from the R RasterLayer in {rda} (glacierSMBM 0.1) with a reader of R raster objects based on "
    "the Python `rdata` package: values, extent (606975-617355 E, 3939105-3953505 N), size 346 x 480 and CRS "
    "(+proj=utm +zone=43 +datum=WGS84, written as EPSG:32643) taken from the R object; no row flip. Re-deriving "
    "needs `rdata` (not a cryonet dependency)."
)

DERIVED: dict[str, Derivation] = {
    d.name: d
    for d in (
        *(
            Derivation(
                f"hkh-glacial-lakes/derived_HKH_{yr}_SunKoshi_Poiqu.geojson",
                (f"hkh-glacial-lakes/HKH_{yr}.shp",),
                f"Lakes of HKH_{yr}.shp with Sub_basin == 'Sun Koshi' (= Poiqu), reprojected to EPSG:4326.",
                _make_sub_basin,
            )
            for yr in (2000, 2020)
        ),
        *(
            Derivation(
                f"hkh-glacial-lakes/derived_HKH_{yr}_everest_landsat_extent.geojson",
                (f"hkh-glacial-lakes/HKH_{yr}.shp", _EVEREST_RGB),
                f"Lakes of HKH_{yr}.shp intersecting the bounding box of the geoutils Everest Landsat 7 scene "
                "(EPSG:32645), reprojected to EPSG:4326.",
                _make_footprint,
            )
            for yr in (2000, 2020)
        ),
        Derivation(
            "glacierSMBM-liligo/derived_baltoro_srtm_on_liligo_grid.tif",
            ("oggm-sample-data/test-files/baltoro_srtm_clip.tif",),
            "OGGM baltoro_srtm_clip.tif (EPSG:4326, nodata -32768) bilinearly reprojected onto the Liligo grid "
            "(EPSG:32643, 30 m, 346 x 480), float32, NaN nodata.",
            _make_baltoro,
        ),
        *(
            Derivation(
                f"glacierSMBM-liligo/{stem}.tif",
                (f"glacierSMBM-liligo/original_rda/{stem}.rda",),
                _RDA_RECIPE.format(rda=f"data/{stem}.rda"),
                None,
            )
            for stem in (
                "glacierMask_30m",
                "debrisMask_30m",
                "iceMask_30m",
                "firnMask_30m",
                "srtm_dem_30m",
                "debrisThickness_30m",
            )
        ),
        Derivation(
            "glacierSMBM-liligo/labels_clean1_debris2_bg0.tif",
            tuple(f"glacierSMBM-liligo/original_rda/{s}_30m.rda" for s in ("glacierMask", "debrisMask")),
            "Class raster on the Liligo grid: 0 outside glacierMask, 1 = glacier and not debris (clean ice + firn), "
            "2 = debrisMask == 1; uint8, no nodata. Made from the GeoTIFFs converted from the .rda files (see above).",
            None,
        ),
    )
}


def derive(
    name: str, dest: str | os.PathLike[str] | None = None, *, progress: bool = True, overwrite: bool = False
) -> Path:
    """Re-make a derived reference file from its fetched, verified originals.

    Args:
        name: Key of :data:`DERIVED`, e.g. ``hkh-glacial-lakes/derived_HKH_2020_SunKoshi_Poiqu.geojson``.
        dest: Folder to write it into (under its base name); default: ``<cache>/derived/<name>``.
        progress: Show download progress bars.
        overwrite: Re-make the file even if it already exists.

    Returns:
        Path of the derived file (written atomically).

    Raises:
        KeyError: ``name`` is not a known derived file (with close matches).
        ManifestError: the file has no automatic recipe here; the message gives the recipe and the page to read.
    """
    _lookup(name, DERIVED, what="list of derived files")
    spec = DERIVED[name]
    if spec.make is None:
        page = SOURCES[name.split("/", 1)[0]].readme
        raise ManifestError(
            f"{name}: no automatic recipe in cryonet. How it was made: {spec.recipe} See data_manifest/{page}."
        )
    out = Path(dest) / Path(name).name if dest is not None else cache_dir() / "derived" / name
    if out.exists() and not overwrite:
        logger.info("%s: already derived at %s", name, out)
        return out
    inputs = [fetch(n, progress=progress) for n in spec.inputs]
    out.parent.mkdir(parents=True, exist_ok=True)
    spec.make(inputs, out)
    logger.info("%s: derived from %s -> %s", name, ", ".join(spec.inputs), out)
    return out
