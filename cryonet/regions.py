"""Region presets: the two study areas of the paper, as typed configuration.

The numbers describe each region's setting (projection, relief, snow line, sun geometry at the Sentinel-2 overpass)
and drive the synthetic twin scenes; the real-data manifest (``data_manifest/``) lists the matching real inputs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A study region.

    Attributes:
        name: Short identifier used on the command line (``poiqu``, ``montblanc``).
        title: Human-readable name.
        epsg: EPSG code of the projected (UTM) CRS in which Sentinel-2 tiles of the region are delivered.
        centre_lon: Longitude of the scene centre, degrees east.
        centre_lat: Latitude of the scene centre, degrees north.
        elevation_range_m: (lowest, highest) terrain elevation of the scene, metres a.s.l.
        ela_m: Equilibrium-line altitude (snow line at the end of the ablation season), metres.
        treeline_m: Upper limit of vegetation, metres.
        sun_azimuth_deg: Sun azimuth at the Sentinel-2 overpass, degrees clockwise from north.
        sun_elevation_deg: Sun elevation above the horizon at the overpass, degrees.
        relief_steepness: Dimensionless factor for how steep and incised the terrain is (1 = Himalayan valley).
        debris_propensity: Relative supply of rock debris onto glacier tongues (1 = strongly debris-covered).
        lake_propensity: Relative likelihood of proglacial / supraglacial lakes at debris-covered termini.
        default_size_px: Default edge length of the synthetic scene at 10 m, pixels.
        acquisition: Date of the reference acquisition the preset imitates (ISO 8601), for the scene metadata.
    """

    name: str
    title: str
    epsg: int
    centre_lon: float
    centre_lat: float
    elevation_range_m: tuple[float, float]
    ela_m: float
    treeline_m: float
    sun_azimuth_deg: float
    sun_elevation_deg: float
    relief_steepness: float
    debris_propensity: float
    lake_propensity: float
    default_size_px: int
    acquisition: str


POIQU = Region(
    name="poiqu",
    title="Poiqu Basin (Bhote Koshi / Sun Koshi), central Himalaya",
    epsg=32645,
    centre_lon=85.95,
    centre_lat=28.25,
    elevation_range_m=(4000.0, 7500.0),
    ela_m=5750.0,
    treeline_m=4300.0,
    sun_azimuth_deg=152.0,
    sun_elevation_deg=48.0,
    relief_steepness=1.0,
    debris_propensity=1.0,
    lake_propensity=1.0,
    default_size_px=1500,
    acquisition="2021-10-20",
)

MONTBLANC = Region(
    name="montblanc",
    title="Mont Blanc massif, western Alps",
    epsg=32632,
    centre_lon=6.88,
    centre_lat=45.88,
    elevation_range_m=(1000.0, 4800.0),
    ela_m=3000.0,
    treeline_m=2200.0,
    sun_azimuth_deg=158.0,
    sun_elevation_deg=42.0,
    relief_steepness=1.35,
    debris_propensity=0.35,
    lake_propensity=0.25,
    default_size_px=1000,
    acquisition="2021-09-12",
)

#: All presets by name.
REGIONS: dict[str, Region] = {r.name: r for r in (POIQU, MONTBLANC)}


def get_region(name: str) -> Region:
    """Return the preset called ``name``.

    Raises:
        KeyError: with the list of known presets when ``name`` is not one of them.
    """
    try:
        return REGIONS[name]
    except KeyError:
        raise KeyError(f"unknown region {name!r}; expected one of {sorted(REGIONS)}") from None
