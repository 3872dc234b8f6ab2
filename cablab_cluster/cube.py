"""A small synthetic data cube in the layout Earth System Data Cube (ESDC) users know.

`write_cube(out_dir)` writes ``esdc-8d-2deg-synthetic.zarr``: Zarr format 2 with
consolidated metadata (readable by zarr-python 2 and 3), dims (time, lat, lon),
float32, chunks (46, 45, 90), about 11 MB. The values are closed-form fields plus
seeded noise; ``expected()`` gives the noise-free field, ``REFERENCE_POINTS`` and
``REFERENCE_GLOBAL_MEAN_T2M_T0`` the values (noise included) that tests and the
lab's kernel check compare a cube against.

Grid and time axis, as in ESDC:

- 2° cells: ``lat`` 90 centres 89 … -89 (descending, as ESDC stores it),
  ``lon`` 180 centres -179 … 179; ``lat_bnds``/``lon_bnds`` give the cell edges.
- 8-day periods restarting every 1 January: 46 per year, periods 1–45 eight days
  long, the 46th the rest of the year (5 days, 6 in a leap year). ESDC labels a
  period by its fifth day (its variables say ``reported_day: 5.0``: the label of
  1–8 January is 5 January, the last label of 2021 is 31 December); we do the same,
  and ``time_bnds`` holds each period's [first day, day after its last day).
  2020-01-01 … 2021-12-31 gives 92 steps; a label's day of year is ``8 k + 5`` in
  every year, so ``groupby("time.dayofyear")`` yields the 46 periods.

Variable names follow ESDC (v2 names: ``air_temperature_2m``, ``precipitation``,
``gross_primary_productivity``, ``soil_moisture``) with CF-1.9 attributes. One
departure from ESDC: GPP's ``units`` is ``g m-2 d-1``, not ``g C m^-2 d^-1``, as
"C" is the coulomb in UDUNITS; that the mass is carbon is what its standard_name
(``..._expressed_as_carbon``) says.

Determinism: the noise comes from the raw 64-bit stream of
``numpy.random.default_rng([SEED, k])`` (PCG64 and SeedSequence are stable across
numpy versions; Generator's distribution algorithms are not promised to be, so
they are not used), turned into a zero-mean unit-variance variate by arithmetic
alone. The same generator version gives the same bytes with the same numpy,
numcodecs and zlib; ``cube_tarball()`` is byte-identical on top of that.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
import xarray as xr

from . import __version__
from . import layout

CUBE_NAME = f"{layout.CUBE_NAME}.zarr"
#: Bump when values, attributes or layout change (it is in the cube's attributes).
GENERATOR_VERSION = 1
SEED = 20200101
YEARS = (2020, 2021)
STEPS_PER_YEAR = 46
PERIOD_DAYS = 8
REPORTED_DAY = 5  # a period is labelled by its fifth day, like ESDC
RESOLUTION = 2.0
CHUNKS = {"time": 46, "lat": 45, "lon": 90}
#: Marks a directory as a cube this module wrote (the CLI replaces only those).
MARKER_ATTR = "cablab_cube_generator"

ESDC_REFERENCES = (
    "Mahecha et al. (2020), Earth system data cubes unravel global multivariate dynamics, "
    "Earth Syst. Dynam. 11, 201-234, https://doi.org/10.5194/esd-11-201-2020; "
    "variable names as in the Earth System Data Cube (ESDC), https://www.earthsystemdatalab.net"
)


@dataclass(frozen=True)
class CubeVariable:
    """One data variable: its ESDC name, CF attributes and noise."""

    name: str
    long_name: str
    units: str
    standard_name: str
    land_only: bool
    noise_sd: float
    valid_min: float
    valid_max: float
    comment: str


VARIABLES: tuple[CubeVariable, ...] = (
    CubeVariable("air_temperature_2m", "Mean air temperature at 2 m", "K", "air_temperature",
                 land_only=False, noise_sd=1.0, valid_min=150.0, valid_max=350.0,
                 comment="2 m above the surface; latitude gradient, a seasonal cycle opposite in the two "
                         "hemispheres and stronger over land, a cold Antarctic plateau, +0.5 K per year and "
                         "a warm equatorial Pacific patch in 2021"),
    CubeVariable("precipitation", "Precipitation", "mm d-1", "lwe_precipitation_rate",
                 land_only=False, noise_sd=0.5, valid_min=0.0, valid_max=100.0,
                 comment="liquid water equivalent; an ITCZ following the sun and mid-latitude storm tracks"),
    CubeVariable("gross_primary_productivity", "Gross primary productivity",
                 "g m-2 d-1", "gross_primary_productivity_of_biomass_expressed_as_carbon",
                 land_only=True, noise_sd=0.4, valid_min=0.0, valid_max=50.0,
                 comment="grams of carbon per square metre per day (ESDC: g C m^-2 d^-1); "
                         "limited by temperature and soil moisture; land only (NaN over the ocean)"),
    CubeVariable("soil_moisture", "Volumetric soil moisture", "m3 m-3",
                 "volume_fraction_of_condensed_water_in_soil",
                 land_only=True, noise_sd=0.01, valid_min=0.0, valid_max=1.0,
                 comment="surface layer; follows precipitation; land only (NaN over the ocean)"),
)
VARIABLE_NAMES = tuple(v.name for v in VARIABLES)


@dataclass(frozen=True)
class ReferencePoint:
    """A value of the generated cube (noise included), to check a cube against."""

    variable: str
    time_index: int
    lat: float
    lon: float
    value: float


#: Values of the generated float32 cube at a few points (noise included), by
#: ``ds[variable].isel(time=time_index).sel(lat=lat, lon=lon)`` (NaN: over the ocean).
#: Compare with a relative tolerance of 1e-6: they are float32 values.
REFERENCE_POINTS: tuple[ReferencePoint, ...] = (
    ReferencePoint("air_temperature_2m", 0, 51.0, 11.0, 256.8121032714844),   # 2020-01-05, central Europe
    ReferencePoint("air_temperature_2m", 25, 51.0, 11.0, 286.222900390625),   # 2020-07-23
    ReferencePoint("air_temperature_2m", 71, -1.0, -141.0, 300.83203125),     # 2021-07-24, warm Pacific patch
    ReferencePoint("precipitation", 0, -1.0, -29.0, 3.436018705368042),       # ITCZ over the Atlantic
    ReferencePoint("precipitation", 25, 9.0, -29.0, 6.348903179168701),
    ReferencePoint("gross_primary_productivity", 25, 51.0, 11.0, 2.7755067348480225),
    ReferencePoint("gross_primary_productivity", 0, 1.0, -151.0, float("nan")),  # ocean
    ReferencePoint("soil_moisture", 50, -3.0, -61.0, 0.2586788833141327),     # 2021-02-06, Amazon
)
#: ``float(ds.air_temperature_2m.isel(time=0).mean(dtype="float64"))`` in K
#: (unweighted, accumulated in float64); compare to 1e-3 K.
REFERENCE_GLOBAL_MEAN_T2M_T0 = 273.28302243362236


def _variable(name: str) -> CubeVariable:
    for v in VARIABLES:
        if v.name == name:
            return v
    raise KeyError(f"{name!r} is not a cube variable; known: {', '.join(VARIABLE_NAMES)}")


# --- axes -----------------------------------------------------------------


def latitudes() -> np.ndarray:
    """Cell centres, north to south: 89, 87, …, -89."""
    return np.arange(90.0 - RESOLUTION / 2, -90.0, -RESOLUTION)


def longitudes() -> np.ndarray:
    """Cell centres, west to east: -179, -177, …, 179."""
    return np.arange(-180.0 + RESOLUTION / 2, 180.0, RESOLUTION)


def time_bounds() -> np.ndarray:
    """(92, 2) datetime64[D]: each period's first day and the day after its last day."""
    rows = []
    for year in YEARS:
        jan1 = np.datetime64(f"{year}-01-01", "D")
        next_jan1 = np.datetime64(f"{year + 1}-01-01", "D")
        starts = jan1 + np.arange(STEPS_PER_YEAR) * PERIOD_DAYS
        ends = np.append(starts[1:], next_jan1)
        rows.append(np.stack([starts, ends], axis=1))
    return np.concatenate(rows)


def time_labels() -> np.ndarray:
    """(92,) datetime64[D]: each period's fifth day (ESDC's ``reported_day``)."""
    return time_bounds()[:, 0] + np.timedelta64(REPORTED_DAY - 1, "D")


def _day_of_year(time_index: np.ndarray) -> np.ndarray:
    """Day of year (1-based) of a time index's label: 8 k + 5 whatever the year."""
    return (np.asarray(time_index) % STEPS_PER_YEAR) * PERIOD_DAYS + REPORTED_DAY


def _years_since_start(time_index: np.ndarray) -> np.ndarray:
    """Whole years since the cube's first year (0 for 2020, 1 for 2021)."""
    return np.asarray(time_index) // STEPS_PER_YEAR


# --- the closed-form fields -------------------------------------------------

# Continents as Gaussian blobs: (centre lat, centre lon, lat half-width, lon half-width).
_CONTINENTS = (
    (50.0, -100.0, 28.0, 40.0),   # North America
    (-15.0, -60.0, 32.0, 18.0),   # South America
    (52.0, 15.0, 16.0, 30.0),     # Europe
    (5.0, 20.0, 36.0, 28.0),      # Africa
    (58.0, 95.0, 22.0, 70.0),     # northern Asia
    (28.0, 85.0, 16.0, 32.0),     # southern Asia
    (-25.0, 135.0, 14.0, 22.0),   # Australia
)


def _wrap(dlon: np.ndarray) -> np.ndarray:
    """Longitude difference folded into [-180, 180)."""
    return (dlon + 180.0) % 360.0 - 180.0


def land_fraction(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    """A smooth 0..1 "how continental" function of position; land where it is >= 0.5."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    frac = _antarctica(lat) + 0.0 * lon
    for clat, clon, hlat, hlon in _CONTINENTS:
        blob = np.exp(-(((lat - clat) / hlat) ** 2 + (_wrap(lon - clon) / hlon) ** 2))
        frac = np.maximum(frac, blob)
    return frac


def _antarctica(lat: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp((lat + 68.0) / 2.0))


def is_land(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    """The land mask of the land-only variables."""
    return land_fraction(lat, lon) >= 0.5


def _season(time_index: np.ndarray) -> np.ndarray:
    """+1 in mid-July, -1 in mid-January (northern summer positive)."""
    return -np.cos(2.0 * np.pi * (_day_of_year(time_index) - 15.0) / 365.25)


def _air_temperature(t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    s = np.sin(np.deg2rad(lat))
    land = land_fraction(lat, lon)
    years = _years_since_start(t)
    warm_pool = 1.5 * np.exp(-((lat / 10.0) ** 2 + (_wrap(lon + 140.0) / 30.0) ** 2)) * (years >= 1)
    return (300.0 - 48.0 * s**2 + _season(t) * s * (6.0 + 14.0 * land)
            - 25.0 * _antarctica(lat) + 0.5 * years + warm_pool)


def _precipitation(t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    season = _season(t)
    itcz = 0.4 + 7.0 * np.exp(-(((lat - 8.0 * season) / 8.0) ** 2))
    winter = 1.0 - 0.3 * season * np.sign(lat)  # storm tracks stronger in winter
    storms = 2.5 * np.exp(-(((np.abs(lat) - 45.0) / 12.0) ** 2)) * winter
    return (itcz + storms) * (1.0 - 0.3 * land_fraction(lat, lon))


def _soil_moisture(t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return np.clip(0.06 + 0.045 * _precipitation(t, lat, lon), 0.05, 0.45)


def _gpp(t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    warmth = np.clip((_air_temperature(t, lat, lon) - 273.15) / 25.0, 0.0, 1.0)
    water = np.clip(_soil_moisture(t, lat, lon) / 0.3, 0.0, 1.0)
    return 14.0 * warmth * water


_FIELDS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "air_temperature_2m": _air_temperature,
    "precipitation": _precipitation,
    "gross_primary_productivity": _gpp,
    "soil_moisture": _soil_moisture,
}


def expected(variable: str, time_index: np.ndarray | int, lat: np.ndarray | float,
             lon: np.ndarray | float) -> np.ndarray:
    """The noise-free field (float64), broadcast over the arguments; NaN over the ocean for land-only variables.

    ``time_index`` counts the cube's time steps (0 … 91); ``lat``/``lon`` in degrees.
    The cube's values are this plus noise of ``noise_sd`` (at most 3.5 × noise_sd),
    clipped at the variable's ``valid_min``.
    """
    spec = _variable(variable)
    t = np.asarray(time_index)
    la = np.asarray(lat, dtype=np.float64)
    lo = np.asarray(lon, dtype=np.float64)
    field = _FIELDS[variable](t, la, lo)  # computed on the arguments' own shapes, broadcast once at the end
    if spec.land_only:
        field = np.where(is_land(la, lo), field, np.nan)
    return np.array(np.broadcast_to(field, np.broadcast_shapes(t.shape, la.shape, lo.shape)), dtype=np.float64)


def _noise(k: int, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise from the raw PCG64 stream (sum of 4 uniforms, scaled)."""
    n = int(np.prod(shape))
    raw = np.random.default_rng([SEED, k]).bit_generator.random_raw(4 * n).reshape(4, n)
    u = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # 53-bit uniforms in [0, 1)
    return ((u[0] + u[1] + u[2] + u[3] - 2.0) * np.sqrt(3.0)).reshape(shape)


def generate(variable: str) -> np.ndarray:
    """The variable's (time, lat, lon) float32 values as written to the cube."""
    spec = _variable(variable)
    t = np.arange(len(time_labels()))[:, None, None]
    lat = latitudes()[None, :, None]
    lon = longitudes()[None, None, :]
    field = expected(variable, t, lat, lon)
    noisy = field + spec.noise_sd * _noise(VARIABLE_NAMES.index(variable), field.shape)
    return np.clip(noisy, spec.valid_min, spec.valid_max).astype(np.float32)  # NaN stays NaN


# --- the dataset ------------------------------------------------------------


def _bounds(centres: np.ndarray) -> np.ndarray:
    half = RESOLUTION / 2 * np.sign(centres[1] - centres[0])
    return np.stack([centres - half, centres + half], axis=1)


def build_dataset(progress: Callable[[str], None] | None = None) -> xr.Dataset:
    """The cube in memory (numpy-backed), with CF attributes."""
    bounds = time_bounds()
    coords = {
        "time": ("time", time_labels().astype("datetime64[ns]"),
                 {"standard_name": "time", "long_name": "time (fifth day of the 8-day period)",
                  "axis": "T", "bounds": "time_bnds"}),
        "lat": ("lat", latitudes(), {"standard_name": "latitude", "long_name": "latitude",
                                     "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"}),
        "lon": ("lon", longitudes(), {"standard_name": "longitude", "long_name": "longitude",
                                      "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"}),
    }
    data_vars: dict[str, tuple] = {
        "time_bnds": (("time", "bnds"), bounds.astype("datetime64[ns]")),
        "lat_bnds": (("lat", "bnds"), _bounds(latitudes())),
        "lon_bnds": (("lon", "bnds"), _bounds(longitudes())),
    }
    for v in VARIABLES:
        if progress:
            progress(v.name)
        data_vars[v.name] = (("time", "lat", "lon"), generate(v.name), {
            "standard_name": v.standard_name, "long_name": v.long_name, "units": v.units,
            "cell_methods": "time: mean", "valid_min": np.float32(v.valid_min),
            "valid_max": np.float32(v.valid_max), "comment": v.comment,
        })
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.set_coords(["time_bnds", "lat_bnds", "lon_bnds"])
    ds.attrs = {
        "Conventions": "CF-1.9",
        "title": "Synthetic Earth System Data Cube, 8-day, 2 degrees, 2020-2021",
        "source": f"synthetic, generated by cablab-cluster {__version__}; not observations",
        "institution": "cablab-cluster",
        "history": f"generated by cablab_cluster.cube (generator {GENERATOR_VERSION}, seed {SEED})",
        "references": ESDC_REFERENCES,
        "comment": "Closed-form fields plus seeded noise, for exploring the cube with xarray; "
                   "8-day periods restart on 1 January (46 per year, the last one 5 or 6 days) "
                   "and are labelled by their fifth day, as in the ESDC.",
        "time_coverage_start": "2020-01-01",
        "time_coverage_end": "2021-12-31",
        "time_period": "8D",
        "geospatial_lat_resolution": RESOLUTION,
        "geospatial_lon_resolution": RESOLUTION,
        MARKER_ATTR: GENERATOR_VERSION,
    }
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict]:
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    time_enc = {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32"}
    enc: dict[str, dict] = {"time": dict(time_enc), "time_bnds": dict(time_enc)}
    for v in VARIABLES:
        enc[v.name] = {"chunks": tuple(CHUNKS[d] for d in ds[v.name].dims), "compressors": [compressor],
                       "_FillValue": np.float32("nan"), "dtype": "float32"}
    return enc


# --- on disk ------------------------------------------------------------------


def is_cube(path: Path) -> bool:
    """True if ``path`` is a cube this module wrote (its consolidated metadata carries the marker)."""
    try:
        meta = json.loads((Path(path) / ".zmetadata").read_text(encoding="utf-8"))
        return MARKER_ATTR in meta["metadata"][".zattrs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def is_cube_tarball(path: Path | str) -> bool:
    """True if ``path`` is a gzipped tar holding only ``esdc-8d-2deg-synthetic.zarr/`` (one ``cube_tarball`` wrote)."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            names = tar.getnames()
    except (OSError, tarfile.TarError, EOFError):
        return False
    return bool(names) and all(n == CUBE_NAME or n.startswith(CUBE_NAME + "/") for n in names)


def write_cube(out_dir: Path | str, progress: Callable[[str], None] | None = None) -> Path:
    """Write ``out_dir/esdc-8d-2deg-synthetic.zarr`` and return its path.

    Built beside the target and renamed into place; an existing cube written by this
    module is replaced, anything else there raises ``FileExistsError`` (nothing is deleted).
    """
    out_dir = Path(out_dir)
    target = out_dir / CUBE_NAME
    if target.exists() and not is_cube(target) and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not a cube written by cablab-cluster; "
                              "move it away or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = build_dataset(progress)
    if progress:
        progress("write zarr")
    tmp = Path(tempfile.mkdtemp(prefix=f".{CUBE_NAME}.", dir=out_dir))
    try:
        ds.to_zarr(tmp / CUBE_NAME, mode="w", zarr_format=2, consolidated=True, encoding=_encoding(ds))
        if target.exists():
            old = tmp / "old"
            target.rename(old)
        (tmp / CUBE_NAME).rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _walk(root: Path) -> Iterator[Path]:
    """Every path under root (root included), sorted by relative path."""
    paths = [root, *root.rglob("*")]
    return iter(sorted(paths, key=lambda p: p.relative_to(root.parent).as_posix()))


def cube_tarball(out_path: Path | str, cube: Path | str | None = None) -> Path:
    """A deterministic ``.tar.gz`` of the cube (one top-level directory, ``esdc-8d-2deg-synthetic.zarr/``).

    Members sorted, mtime 0, uid/gid 0 (root), modes 0755/0644, gzip header mtime 0
    and no file name: the same cube gives the same bytes. ``cube`` defaults to a
    freshly generated one (in a temporary directory).
    """
    out_path = Path(out_path)
    if cube is None:
        with tempfile.TemporaryDirectory() as tmp:
            return cube_tarball(out_path, write_cube(tmp))
    cube = Path(cube)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        with partial.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _walk(cube):
                rel = path.relative_to(cube).as_posix()
                info = tar.gettarinfo(str(path), arcname=CUBE_NAME if path == cube else f"{CUBE_NAME}/{rel}")
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isfile():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path


def content_key(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes, or of a directory's sorted (relative path, file sha256) list."""
    path = Path(path)
    if path.is_file():
        return _sha256_file(path)
    digest = hashlib.sha256()
    for p in _walk(path):
        if p.is_file():
            rel = p.relative_to(path).as_posix()
            digest.update(f"{rel}\0{_sha256_file(p)}\n".encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
