"""The one door to GDAL: every raster and vector a job names is opened here, and only as what it is.

A job file or a STAC catalog must not make geoseg read a file or fetch a URL it did not name. GDAL
picks a driver by a file's *content*, so a file named ``.tif`` that holds VRT XML would be parsed
as a VRT and its sources (any local file, raw bytes of ``/etc/passwd``, ``http://`` URLs, the cloud
metadata endpoint) read. Hence three checks, before and after GDAL:

* **the name**: ``/vsi...`` virtual file systems, ``vrt://``, ``DRIVER:...`` connection strings and
  ``.vrt`` files are refused unless the job sets ``allow_gdal_virtual``; URLs only where the use
  admits them (inputs and a STAC document the job names);
* **the drivers**: GDAL may try only the drivers the use needs (:data:`RASTER_DRIVERS`), so a VRT
  is never parsed; the driver of the opened dataset is checked again. Vector layers (pyogrio cannot
  restrict drivers) are identified by their leading bytes first (:func:`check_vector`), and a GeoJSON
  ``crs`` link (fetched by GDAL's own HTTP client, which the fence below does not cover) is refused;
* **the sidecars** GDAL opens by itself next to a raster (``.ovr``, ``.msk``: any driver; ``.aux``)
  must be TIFFs, or absent; neither an ``.aux.xml`` nor the raster's own metadata may name an
  ``OVERVIEW_FILE`` (GDAL opens it with any driver).

The second fence is GDAL's own configuration (:func:`gdal_fence`): raw VRT bands and Python pixel
functions off, and no ``/vsicurl/``-family request at all when the job names no URL. :func:`fenced`
applies it in this process; :class:`geoseg.run.fence.TrustFence` on every Dask worker.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import InputError

__all__ = ["Trust", "UnreadableRaster", "RASTER_DRIVERS", "VECTOR_DRIVERS", "open_raster", "open_env", "check_name",
           "check_vector", "check_vector_driver", "fenced", "allowing", "gdal_fence", "current_trust", "is_url", "job_trust"]

#: Raster drivers per use. COG is GTiff to a reader; Zarr only for geoseg's own label stores.
RASTER_DRIVERS: dict[str, tuple[str, ...]] = {
    "input": ("GTiff", "JP2OpenJPEG"),
    "reference": ("GTiff", "JP2OpenJPEG"),
    "chip": ("GTiff", "JP2OpenJPEG", "PNG", "JPEG"),
    "label": ("GTiff", "Zarr"),
}
#: Vector drivers geoseg reads (references, regions, training polygons), by the bytes that start them.
VECTOR_DRIVERS: tuple[str, ...] = ("GPKG", "ESRI Shapefile", "FlatGeobuf", "GeoJSON", "GeoJSONSeq", "Parquet")

_VIRTUAL_PREFIXES = ("/vsi", "vrt://")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: URL schemes GDAL reads over the network that a job may name as an input (README: s3://, https://).
NETWORK_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")
#: GDAL connection strings such as ``GPKG:file:table``, ``NETCDF:...``, ``ZARR:...`` (two letters at
#: least, so a Windows drive ``C:`` is a path).
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: The application ids (SQLite header bytes 68-71) of GeoPackage 1.2+ and 1.0/1.1: what GDAL opens with its
#: GPKG driver only, which has no ``VirtualOGR`` tables (its SQLite driver would open them over any file or URL).
_GPKG_APPLICATION_IDS = (b"GPKG", b"GP10", b"GP11")
#: What GDAL opens next to a raster by itself: overviews and masks with any driver, Erdas .aux files.
_SIDECARS = (".ovr", ".OVR", ".msk", ".MSK")
#: How deep side-cars of side-cars (``x.tif.ovr.ovr``) are followed before geoseg refuses them.
_SIDECAR_DEPTH = 3
_AUX = (".aux", ".AUX")
#: The ``/vsicurl/`` family (``/vsis3/``, ``/vsigs/``, ``/vsiaz/``, http URLs...) may open only this
#: name, which exists nowhere: no request at all (GDAL's ``CPL_VSIL_CURL_ALLOWED_FILENAME``).
NO_NETWORK = "/vsicurl/geoseg-network-reads-are-off"


class UnreadableRaster(InputError):
    """No allowed driver opens the file: it may still be a vector layer (references are either)."""


@dataclass(frozen=True)
class Trust:
    """What a job lets GDAL do: ``allow_gdal_virtual`` (VRTs, ``/vsi`` paths, URLs inside files and
    local STAC items); ``network``: the job names URLs itself (inputs, a STAC document)."""

    allow_gdal_virtual: bool = False
    network: bool = False


#: The ``allowing`` and ``fenced`` blocks open in this process, oldest first, each with its token. Blocks may
#: close out of order (a notebook's in-process Dask worker applies the fence in its own thread while the client
#: applies it in the main thread): the newest open block rules, and when the last one closes the process is
#: back to strict trust and the environment it had before the first.
_lock = threading.Lock()
_trusts: list[tuple[object, Trust]] = []
_fences: list[tuple[object, dict[str, str]]] = []
_env_before: dict[str, str | None] = {}


def job_trust(allow_gdal_virtual: bool, named: list[str]) -> Trust:
    """The trust of a job that names the paths ``named`` (inputs, STAC documents): network reads only
    when one of them is a URL."""
    return Trust(allow_gdal_virtual, network=any(str(p).lower().startswith(NETWORK_SCHEMES) for p in named))


def current_trust() -> Trust:
    """The trust reads in this process are opened under (strict unless a job said otherwise)."""
    with _lock:
        return _trusts[-1][1] if _trusts else Trust()


@contextlib.contextmanager
def allowing(trust: Trust) -> Iterator[Trust]:
    """Open with ``trust`` inside the block (this process, not thread-local: one job at a time)."""
    token = object()
    with _lock:
        _trusts.append((token, trust))
    try:
        yield trust
    finally:
        with _lock:
            _trusts[:] = [t for t in _trusts if t[0] is not token]


def gdal_fence(trust: Trust) -> dict[str, str]:
    """GDAL configuration for reads under ``trust``: the second fence, behind the opener's checks.

    ``GDAL_VRT_ENABLE_RAWRASTERBAND=NO`` is honoured by GDAL 3.12 and later (pyogrio's); the GDAL in
    rasterio's wheels (3.10) ignores it, so there the driver check is what keeps raw bands out.
    """
    opts = {"GDAL_VRT_ENABLE_PYTHON": "NO"}
    if not trust.allow_gdal_virtual:
        opts["GDAL_VRT_ENABLE_RAWRASTERBAND"] = "NO"
        if not trust.network:
            opts["CPL_VSIL_CURL_ALLOWED_FILENAME"] = NO_NETWORK
    return opts


@contextlib.contextmanager
def fenced(trust: Trust) -> Iterator[Trust]:
    """Run the block under ``trust``: the opener's policy and GDAL's fence (as environment variables,
    which rasterio's and pyogrio's GDAL both read), restored afterwards."""
    token = object()
    with _lock:
        if not _fences:
            _env_before.clear()
            _env_before.update({k: os.environ.get(k) for k in _FENCE_KEYS})
        _fences.append((token, gdal_fence(trust)))
        _set_env(_fences[-1][1])
    try:
        with allowing(trust):
            yield trust
    finally:
        with _lock:
            _fences[:] = [f for f in _fences if f[0] is not token]
            _set_env(_fences[-1][1] if _fences else {k: v for k, v in _env_before.items() if v is not None})


#: Every variable a fence may set (the strict fence sets them all).
_FENCE_KEYS = tuple(gdal_fence(Trust()))


def _set_env(values: dict[str, str]) -> None:
    """The fence's variables exactly as ``values`` says (absent ones removed)."""
    for k in _FENCE_KEYS:
        os.environ.pop(k, None)
    os.environ.update(values)


def is_url(path: str) -> bool:
    """A ``scheme://`` name (GDAL reads it through a virtual file system), not a local path."""
    return bool(_URL.match(path))


def check_name(path: str, what: str, *, url_ok: bool = False, trust: Trust | None = None) -> None:
    """Refuse, by its name alone, what GDAL would read as something other than a plain file."""
    allow = (trust or current_trust()).allow_gdal_virtual
    if allow:
        return
    lowered = path.lower()
    if lowered.startswith(_VIRTUAL_PREFIXES) or lowered.endswith(".vrt") or ".vrt?" in lowered:
        raise InputError(f"{what} {path!r} is a GDAL virtual path; set allow_gdal_virtual: true in the job to use it")
    if is_url(path):
        if not (url_ok and lowered.startswith(NETWORK_SCHEMES)):
            raise InputError(f"{what} {path!r} is a URL; only inputs and STAC documents may be URLs "
                             "(allow_gdal_virtual: true allows it)")
        return
    if _DRIVER_PREFIX.match(path) and not Path(path).exists():
        raise InputError(f"{what} {path!r} is a GDAL connection string, not a file; name the file itself")


def _head(path: str, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _content_kind(head: bytes) -> str:
    """What the leading bytes say a file is, for a refusal that names it."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<VRTDataset") or text.startswith(b"<OGRVRTDataSource"):
        return "a GDAL VRT (XML), whatever its name"
    if text.startswith(b"<"):
        return "an XML document"
    return "a file of another format"


def check_sidecars(path: str, depth: int = 0) -> None:
    """Refuse a raster whose overview, mask or .aux sidecar GDAL would open with any driver.

    A TIFF ``.ovr``/``.msk`` is a dataset of its own, with sidecars and metadata of its own that GDAL follows
    when it reads the overviews (``x.tif.ovr.ovr``, an ``OVERVIEW_FILE`` in the ``.ovr``): checked alike, to
    :data:`_SIDECAR_DEPTH` levels.
    """
    base = Path(path)
    for suffix in _SIDECARS:
        side = base.with_name(base.name + suffix)
        if not side.is_file():
            continue
        if not _head(str(side), 4).startswith(_TIFF_MAGIC):
            raise InputError(f"{side} (which GDAL opens with {path}) is not a TIFF but {_content_kind(_head(str(side)))}; "
                             "remove it, or set allow_gdal_virtual: true")
        if depth >= _SIDECAR_DEPTH:
            raise InputError(f"{side} (which GDAL opens with {path}) is a side-car of a side-car {depth + 1} levels deep; "
                             "remove it, or set allow_gdal_virtual: true")
        check_sidecars(str(side), depth + 1)
        if _tiff_names_overview_file(side):
            raise InputError(f"{side} (which GDAL opens with {path}) names an OVERVIEW_FILE in its metadata, which GDAL "
                             "would open with any driver; remove it, or set allow_gdal_virtual: true")
    for side in {base.with_name(base.name + s) for s in _AUX} | {base.with_suffix(s) for s in _AUX}:
        if side.is_file():
            raise InputError(f"{side} (an Erdas .aux GDAL opens with {path}) may point GDAL at other files; "
                             "remove it, or set allow_gdal_virtual: true")
    pam = base.with_name(base.name + ".aux.xml")
    if pam.is_file() and (why := _pam_points_elsewhere(pam)):
        raise InputError(f"{pam} (GDAL's side-car for {path}) {why}; remove it, or set allow_gdal_virtual: true")


def _tiff_names_overview_file(side: Path) -> bool:
    """Whether a TIFF side-car's own metadata names an ``OVERVIEW_FILE`` (one GDAL cannot open names nothing)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # an .ovr or .msk has no georeference
            with rasterio.open(side, driver="GTiff") as ds:
                return _names_overview_file(ds)
    except RasterioError:
        return False


def _pam_points_elsewhere(pam: Path) -> str | None:
    """Why GDAL would open another file on the say of this ``.aux.xml``, or ``None``.

    Its ``OVERVIEW_FILE`` (domain ``OVERVIEWS``) names a dataset GDAL opens as the overviews with any driver
    (a VRT over ``/etc/passwd`` or a URL) whenever overviews are listed or read. GDAL parses the XML leniently,
    so a side-car Python cannot parse is refused too: what GDAL would make of it is unknown.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(pam.read_bytes())
    except (OSError, ET.ParseError):
        return "is not well-formed XML"
    for el in root.iter():  # GDAL's XML reader matches names regardless of case
        attrs = {k.lower(): v.strip().upper() for k, v in el.attrib.items()}
        if attrs.get("domain") == "OVERVIEWS" or attrs.get("key") == "OVERVIEW_FILE":
            return "names a file GDAL would open as its overviews (OVERVIEW_FILE)"
    return None


def open_env(path: str) -> dict[str, str]:
    """GDAL settings to open ``path`` with: for a URL, its folder is taken to be empty.

    GDAL otherwise asks the server for ``x.tif.ovr``, ``.msk``, ``.aux`` and ``.aux.xml`` and opens what it gets
    with any driver: a VRT served as ``x.tif.ovr`` would read local files (a raw band over ``/etc/passwd``)
    as the overviews. Side-cars cannot be checked on a server before GDAL opens them, so none is fetched
    (a remote file's overviews and masks are internal ones, as a COG's are). The setting is taken at open.
    """
    return {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"} if is_url(path) else {}


def _names_overview_file(ds: Any) -> bool:
    """Whether an opened dataset's metadata has an ``OVERVIEW_FILE`` (domain ``OVERVIEWS``).

    GDAL opens that file, with any driver, as the dataset's overviews when they are first listed or read; a
    GeoTIFF carries it in its own ``GDAL_METADATA`` tag (a JPEG 2000 in its XML box, any raster in its
    ``.aux.xml``), so it is looked for after the open, before anything asks for overviews.
    """
    domains = {"OVERVIEWS", *(d for d in (ds.tag_namespaces() or []) if str(d).upper() == "OVERVIEWS")}
    return any(str(k).upper() == "OVERVIEW_FILE" for d in domains for k in ds.tags(ns=d))


def open_raster(path: str | Path, use: str = "input", *, url_ok: bool = False, what: str | None = None,
                driver: str | None = None, trust: Trust | None = None) -> Any:
    """Open a raster with only the drivers ``use`` needs (:data:`RASTER_DRIVERS`), or raise :class:`InputError`.

    ``url_ok``: the job named this URL itself (an input). ``driver``: the one driver an earlier,
    checked open found (workers reopen a file as exactly what the client accepted).
    """
    import rasterio
    from rasterio.errors import RasterioError

    path, what = str(path), what or use
    trust = trust or current_trust()
    check_name(path, what, url_ok=url_ok, trust=trust)
    allowed = RASTER_DRIVERS[use] + (("VRT",) if trust.allow_gdal_virtual else ())
    tried = (driver,) if driver in allowed else allowed
    if not trust.allow_gdal_virtual and not is_url(path):
        check_sidecars(path)
    first: Exception | None = None
    for name in tried:
        try:
            with rasterio.Env(**open_env(path)):
                ds = rasterio.open(path, driver=name)
        except (RasterioError, ValueError) as exc:
            first = first or exc
            continue
        if ds.driver not in allowed:  # GDAL may hand over another driver's dataset (e.g. COG -> GTiff is fine)
            ds.close()
            raise InputError(f"{what} {path} opened as {ds.driver}, which geoseg does not read here")
        if not trust.allow_gdal_virtual and _names_overview_file(ds):
            ds.close()
            raise InputError(f"{what} {path} names an OVERVIEW_FILE in its metadata (or its .aux.xml), which GDAL "
                             "would open as its overviews with any driver; remove it, or set allow_gdal_virtual: true")
        return ds
    if not is_url(path) and Path(path).is_file():
        kind = _content_kind(_head(path))
        if "VRT" in kind or kind == "an XML document":
            raise InputError(f"{what} {path} is {kind}; geoseg reads {'/'.join(allowed)} here "
                             "(allow_gdal_virtual: true in the job reads VRTs)")
    raise UnreadableRaster(f"cannot open {path} as a raster ({'/'.join(allowed)}): {first}. Is it a complete GeoTIFF?")


def check_vector(path: str | Path, what: str = "vector layer", *, trust: Trust | None = None) -> str | None:
    """The driver a vector file's leading bytes call for, refusing anything else before GDAL opens it.

    pyogrio offers no list of allowed drivers, and merely listing the layers of an OGR VRT fetches its
    sources; so a local file is identified here by content, and :func:`check_vector_driver` checks
    what GDAL then opened. ``None`` when the job allows GDAL virtual sources (anything goes).
    """
    path = str(path)
    trust = trust or current_trust()
    check_name(path, what, trust=trust)
    if trust.allow_gdal_virtual:
        return None
    if Path(path).is_dir():
        raise InputError(f"{what} {path} is a folder; name the vector file itself (.gpkg, .shp, .fgb, .geojson, .parquet)")
    head = _head(path, 100)  # an SQLite header is 100 bytes; its application id at 68
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"SQLite format 3\x00"):
        if head[68:72] not in _GPKG_APPLICATION_IDS:
            raise InputError(f"{what} {path} is an SQLite database but not a GeoPackage (no GeoPackage application id); "
                             "GDAL's SQLite driver would run its virtual tables, which read other files and URLs. "
                             "Convert it: ogr2ogr -f GPKG out.gpkg in.sqlite")
        return "GPKG"
    if head.startswith(b"fgb\x03"):
        return "FlatGeobuf"
    if head.startswith(b"PAR1"):
        if not _gdal_reads_parquet():
            raise InputError(f"{what} {path} is GeoParquet, which this GDAL (pyogrio's) cannot read: it has no Parquet "
                             "driver. Convert it: ogr2ogr -f GPKG out.gpkg in.parquet, or in Python "
                             "geopandas.read_parquet(in).to_file(out.gpkg)")
        return "Parquet"
    if len(head) >= 4 and int.from_bytes(head[:4], "big") == 9994:
        return "ESRI Shapefile"
    if text.startswith(b"{"):
        stat = Path(path).stat()
        if (why := _geojson_crs_link(path, stat.st_mtime_ns, stat.st_size)) is not None:
            raise InputError(f"{what} {path} {why}; give the CRS by name (EPSG:XXXX) or drop the member "
                             "(allow_gdal_virtual: true lets GDAL fetch it)")
        return "GeoJSON"
    if not head and not Path(path).exists():
        raise InputError(f"{what} {path} does not exist")
    kind = _content_kind(head)
    if "VRT" in kind:
        raise InputError(f"{what} {path} is {kind}; geoseg reads VRTs only with allow_gdal_virtual: true in the job")
    raise InputError(f"{what} {path} is neither a raster nor a vector layer geoseg reads (by its content: "
                     "GeoPackage, Shapefile, FlatGeobuf, GeoJSON, GeoParquet; allow_gdal_virtual: true reads others)")


@functools.lru_cache(maxsize=1)
def _gdal_reads_parquet() -> bool:
    """Whether the GDAL that reads vector layers (pyogrio's) has its Parquet driver: the wheels' GDAL has
    none, and would hand the file to its ADBC driver, which fails on a missing DuckDB library."""
    import pyogrio

    return "Parquet" in pyogrio.list_drivers()


@functools.lru_cache(maxsize=256)
def _geojson_crs_link(path: str, mtime_ns: int, size: int) -> str | None:
    """Why GDAL would fetch a URL a GeoJSON file names as its CRS, or ``None`` (once per file version: each
    task that reads a layer checks it again).

    GDAL's GeoJSON reader fetches a ``{"type": "link"|"url", "properties": {"href"|"url": ...}}`` CRS (on the
    collection, a lone feature or any geometry) with its own HTTP client, which GDAL's
    ``CPL_VSIL_CURL_ALLOWED_FILENAME`` fence does not cover. Files that cannot hold one (no such words and no
    ``\\u`` escape, which JSON decodes) are not parsed.
    """
    import json

    if not _may_hold_crs_link(path):
        return None
    try:  # every member, duplicates too: GDAL's JSON reader may keep another duplicate than Python's
        with open(path, "rb") as f:
            doc = json.load(f, object_pairs_hook=_Members)
    except (OSError, ValueError, RecursionError):  # GDAL's JSON reader is more lenient (comments...)
        return "spells a link/url 'crs' that geoseg cannot check (it is not strict JSON)"
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _Members):
            for key, value in node:
                here = f"{where}.{key}" if where else key
                if key.lower() == "crs" and isinstance(value, _Members) and _is_link_crs(value):
                    return f"has a 'crs' of type link/url ({here}), whose address GDAL would fetch"
                stack.append((value, here))
        elif isinstance(node, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(node))
    return None


class _Members(list[tuple[str, Any]]):
    """A JSON object as all its (name, value) pairs, in order."""


def _is_link_crs(crs: _Members) -> bool:
    """A GeoJSON ``crs`` object GDAL would fetch: its type is link or url, or its properties give an address."""
    kinds = {str(v).strip().lower() for k, v in crs if k.lower() == "type"}
    keys = {k.lower() for name, props in crs if name.lower() == "properties" and isinstance(props, _Members)
            for k, _ in props}
    return bool(kinds & {"link", "url"}) or bool(keys & {"href", "url"})


def _may_hold_crs_link(path: str, chunk: int = 1 << 20) -> bool:
    """Whether the bytes of ``path`` could spell a link CRS (``crs`` and ``link``/``url``, or a ``\\u`` escape)."""
    seen: set[bytes] = set()
    tail = b""
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                window = (tail + block).lower()
                seen.update(w for w in (b"crs", b"link", b"url", b"\\u") if w in window)
                if b"\\u" in seen or (b"crs" in seen and seen & {b"link", b"url"}):
                    return True
                tail = window[-8:]
    except OSError:
        return False
    return False


def check_vector_driver(path: str, info: dict[str, Any], what: str = "vector layer", *,
                        trust: Trust | None = None) -> None:
    """Refuse a vector dataset GDAL opened with a driver geoseg does not read (``info``: pyogrio's)."""
    trust = trust or current_trust()
    driver = info.get("driver")
    if not trust.allow_gdal_virtual and driver not in VECTOR_DRIVERS:
        raise InputError(f"{what} {path} opened as {driver}; geoseg reads {', '.join(VECTOR_DRIVERS)}")
