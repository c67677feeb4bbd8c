"""STAC inputs: an Item or ItemCollection (JSON file or URL) read with pystac, assets chosen by name.

An asset is chosen by its key (``B04``) or by the ``common_name`` of its ``eo:bands`` (``red``);
each chosen asset becomes one layer, a mosaic across the items of a collection. Hrefs may be local
(relative to the JSON file) or URLs; GDAL reads URLs itself (credentials from the environment).
What a catalog may name is fenced (:func:`checked_href`): a local item names files in its own folder,
a remote one names URLs, unless the job sets ``allow_gdal_virtual``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from geoseg.errors import InputError


def load_items(href: str) -> list[Any]:
    """The items of a STAC Item or ItemCollection document, each knowing where it was read from."""
    import pystac

    from geoseg.io.opener import check_name

    check_name(href, "STAC document", url_ok=True)  # a /vsi path or a file:// URL is refused before reading
    try:
        data = pystac.StacIO.default().read_json(href)
    except Exception as exc:  # file, network and JSON errors all mean the same to a user
        raise InputError(f"cannot read STAC document {href}: {exc}") from exc
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Feature":
            items = [pystac.Item.from_dict(data)]
        elif kind == "FeatureCollection":
            _refuse_partial_page(href, data)
            items = list(pystac.ItemCollection.from_dict(data, preserve_dict=False).items)
        else:
            raise InputError(f"{href} is not a STAC Item or ItemCollection (type {kind!r})")
    except InputError:
        raise
    except Exception as exc:  # pystac raises several kinds for malformed documents
        raise InputError(f"{href} is not a valid STAC document: {exc}") from exc
    if not items:
        raise InputError(f"STAC ItemCollection {href} holds no items")
    return items


def _refuse_partial_page(href: str, data: dict[str, Any]) -> None:
    """Refuse one page of a STAC API search (a ``next`` link, or fewer features than it says matched): a mosaic
    of its items alone would cover part of the area or period the search asked for, without a word."""
    features = data.get("features")
    returned = len(features) if isinstance(features, list) else 0
    links, context = data.get("links"), data.get("context")
    more = isinstance(links, list) and any(isinstance(link, dict) and link.get("rel") == "next" for link in links)
    matched = data.get("numberMatched", context.get("matched") if isinstance(context, dict) else None)
    if more or (isinstance(matched, int) and matched > returned):
        found = (f"it holds {returned} of the {matched} items that matched" if isinstance(matched, int)
                 else f"it holds {returned} items and links to the next page")
        raise InputError(f"STAC ItemCollection {href} is one page of a search ({found}); geoseg reads no further pages: "
                         "save every page into one ItemCollection (pystac-client's item_collection()) or narrow the "
                         "search, and give that")


def _absolute(href: str, base: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    if "://" in base:
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), href)).replace(":/", "://", 1)
    return str((Path(base).resolve().parent / href).resolve())


def checked_href(target: str, document: str, allow_outside: bool = False) -> str:
    """``target`` (an asset's absolute href) if ``document`` may name it, else an :class:`InputError`.

    A STAC document read from disk names files in its folder or below; one read from a URL names URLs.
    Neither may point GDAL at the machine's other files or at the network from disk.
    """
    from urllib.parse import unquote, urlparse

    from geoseg.io.opener import NETWORK_SCHEMES, is_url

    if allow_outside:
        return target
    if is_url(document):
        if not target.lower().startswith(NETWORK_SCHEMES):
            raise InputError(f"STAC {document}: asset {target!r} is not a URL; a remote catalog may not name local files "
                             "(allow_gdal_virtual: true allows it)")
        host, own = urlparse(target).hostname or "", urlparse(document).hostname or ""
        literal = _internal_host(host)
        web = urlparse(target).scheme.lower() in ("http", "https")  # s3://NAME names a bucket, not a host
        address = "" if literal or not web or host.lower() == own.lower() else _resolves_internal(host)
        if host.lower() != own.lower() and (literal or address):
            resolved = f" (it resolves to {address})" if address else ""
            raise InputError(f"STAC {document}: asset {target!r} is on {host}{resolved}, an address of this machine or "
                             "its network (loopback, link-local, private); a remote catalog names data on its own host "
                             "or public ones (allow_gdal_virtual: true allows it)")
        return target
    if target.lower().startswith("file://"):
        target = unquote(urlparse(target).path)
    folder = Path(document).resolve().parent
    if is_url(target) or target.lower().startswith("/vsi") or not Path(target).resolve().is_relative_to(folder):
        raise InputError(f"STAC item {document}: asset {target!r} lies outside the item's folder {folder}; "
                         "a local item names files beside it (allow_gdal_virtual: true allows others)")
    return target


@lru_cache(maxsize=256)
def _resolves_internal(host: str) -> str:
    """The first address of this machine or its network that ``host`` resolves to, else ``""`` (also when it does
    not resolve: GDAL then fails to read it in its own words).

    A name is checked as its addresses are, so ``printer.lan`` or this machine's own name (often 127.0.1.1) cannot
    stand in for an address a catalog may not name. The check is made once, on the client: a name whose
    answer changes between this check and GDAL's read (DNS rebinding), and a public server that redirects
    GDAL to an internal address, are not caught (GDAL follows redirects).
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return ""
    return next((str(info[4][0]) for info in infos if _internal_host(str(info[4][0]))), "")


def _internal_host(host: str) -> bool:
    """Whether ``host`` is ``localhost``, ``*.internal`` or an IP address that is not public (loopback, link-local such as the
    cloud metadata service 169.254.169.254, private, reserved), in any spelling a URL client accepts
    (``2130706433`` and ``0x7f.1`` are 127.0.0.1 to curl). Names are resolved by :func:`_resolves_internal`.

    >>> [_internal_host(h) for h in ("127.0.0.1", "2130706433", "169.254.169.254", "::ffff:10.0.0.1", "example.org")]
    [True, True, True, True, False]
    """
    import ipaddress
    import socket

    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith((".localhost", ".internal")):  # metadata.google.internal
        return True
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))  # decimal, octal, hex and short forms
        except OSError:
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


def _common_name(asset: Any) -> str | None:
    """The asset's common name when it describes exactly one band (STAC 1.0 ``eo:bands`` or 1.1 ``bands``)."""
    names = _band_fields(asset).common_names
    return names[0] if len(names) == 1 else None


def _describes_bands(asset: Any) -> bool:
    """Whether the asset holds spectral bands (what ``assets:`` left out takes): STAC 1.0 ``eo:bands``, or a
    common name in 1.1 (whose generic ``bands`` also lists a scene classification or an aerosol layer)."""
    return bool(asset.extra_fields.get("eo:bands")) or any(n is not None for n in _band_fields(asset).common_names)


@dataclass(frozen=True)
class BandFields:
    """What an asset says of its bands, one entry per band (``None``: not given).

    ``asset_wide``: the values were given for the asset as a whole (STAC 1.1 fields on the asset and no
    ``bands`` list): they hold for every band of its file, however many it has.
    """

    common_names: tuple[str | None, ...] = ()
    scales: tuple[float | None, ...] = ()
    offsets: tuple[float | None, ...] = ()
    nodata: tuple[float | None, ...] = ()
    asset_wide: bool = False


def _number(value: Any) -> float | None:
    """A STAC number; nodata may also be the strings ``nan``, ``inf``, ``-inf``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [b if isinstance(b, dict) else {} for b in value] if isinstance(value, list) else []


def _band_fields(asset: Any) -> BandFields:
    """The asset's bands as STAC 1.0 (``eo:bands`` / ``raster:bands``) or STAC 1.1 writes them.

    STAC 1.1 puts every band's fields in one ``bands`` list (``eo:common_name``, ``raster:scale``,
    ``raster:offset``, ``nodata``), and a field on the asset itself holds for all its bands; a band's own
    value wins over the asset's, a 1.1 value over a 1.0 one.
    """
    extra = asset.extra_fields
    eo, raster, unified = _dicts(extra.get("eo:bands")), _dicts(extra.get("raster:bands")), _dicts(extra.get("bands"))
    wide_name = extra.get("eo:common_name") if isinstance(extra.get("eo:common_name"), str) else None
    wide = {key: _number(extra.get(key)) for key in ("raster:scale", "raster:offset", "nodata")}
    n = max(len(eo), len(raster), len(unified))
    if n == 0 and wide_name is None and all(v is None for v in wide.values()):
        return BandFields()

    def at(bands: list[dict[str, Any]], k: int, key: str) -> Any:
        return bands[k].get(key) if k < len(bands) else None

    def name(k: int) -> str | None:
        return next((v for v in (at(unified, k, "eo:common_name"), wide_name, at(eo, k, "common_name"))
                     if isinstance(v, str)), None)

    def number(k: int, key: str, legacy: str) -> float | None:
        return next((v for v in (_number(at(unified, k, key)), wide[key], _number(at(raster, k, legacy)))
                     if v is not None), None)

    bands = range(max(n, 1))
    return BandFields(
        common_names=tuple(name(k) for k in bands),
        scales=tuple(number(k, "raster:scale", "scale") for k in bands),
        offsets=tuple(number(k, "raster:offset", "offset") for k in bands),
        nodata=tuple(number(k, "nodata", "nodata") for k in bands),
        asset_wide=n == 0,
    )


def find_asset(item: Any, wanted: str) -> tuple[str, Any]:
    """The asset of ``item`` whose key is ``wanted``, else whose single common name (``eo:bands``, or STAC
    1.1's ``bands`` and ``eo:common_name``) is.

    Refused where the name is ambiguous: a common name that several assets have (Sentinel-2's ``rededge``:
    ``B05``, ``B06``, ``B07``; a band in two formats) would silently take the first, and a key whose asset
    has another common name while a second asset has that name as its common name (key ``nir`` holding
    ``nir08``, ``B08`` holding ``nir``) could be either.
    """
    named = [k for k, a in item.assets.items() if _common_name(a) == wanted]
    if wanted in item.assets:
        own, others = _common_name(item.assets[wanted]), [k for k in named if k != wanted]
        if own is not None and own != wanted and others:
            raise InputError(f"STAC item {item.id!r}: {wanted!r} is the key of an asset whose eo:bands common name is "
                             f"{own!r} and the common name of asset {others[0]!r}; name the asset you mean by its "
                             f"other name ({own!r} or {others[0]!r})")
        return wanted, item.assets[wanted]
    if len(named) > 1:
        raise InputError(f"STAC item {item.id!r}: assets {', '.join(named)} all have the eo:bands common name "
                         f"{wanted!r}; name the one you mean by its key (assets: [{named[0]}, ...])")
    if named:
        return named[0], item.assets[named[0]]
    choices = ", ".join(f"{k} ({_common_name(a)})" if _common_name(a) else k for k, a in item.assets.items())
    raise InputError(f"STAC item {item.id!r} has no asset {wanted!r} (by key or eo:bands common name); it has {choices}")


def stac_asset_hrefs(
    href: str, wanted: Sequence[str], allow_outside: bool = False
) -> list[tuple[str, list[str], str | None]]:
    """For each wanted asset: (layer name = asset key, file hrefs across the items, band name).

    Without ``wanted``: every asset that describes ``eo:bands``, in the first item's order. The band
    name is the asset's common name when it has one, so indices (``ndvi``) find their bands.
    """
    return [(a.key, [f.href for f in a.files], a.band) for a in stac_assets(href, wanted, allow_outside)]


@dataclass(frozen=True)
class StacFile:
    """One asset file of one item and what the catalog says of its bands (one entry per band, or empty).

    ``common_names``: ``eo:bands`` common names; ``scales``/``offsets``/``nodata``: ``raster:bands``
    (``None`` where not given), STAC 1.1's ``bands`` and asset fields alike (:func:`_band_fields`);
    ``sensor``: the sensor table of the item's ``platform``/``constellation``; ``asset_wide``: the values
    hold for each band of the file (:meth:`for_bands` spreads them).
    """

    href: str
    common_names: tuple[str | None, ...] = ()
    scales: tuple[float | None, ...] = ()
    offsets: tuple[float | None, ...] = ()
    nodata: tuple[float | None, ...] = ()
    sensor: str | None = None
    asset_wide: bool = False
    #: The item's Sentinel-2 processing baseline (``05.10``) where it is 04.00 or later, when its numbers still
    #: carry the baseline's +1000 (not an item that says it removed it); empty otherwise.
    shifted_numbers: str = ""
    #: The units are the Landsat Collection 2 Level-2 collection's, from the file's name (the catalog gives none):
    #: they hold for the stored uint16 numbers only (:func:`_landsat_l2_units`).
    units_from_name: bool = False
    #: A Sentinel-2 item whose numbers are reflectance × 10000 without the +1000: a baseline before 04.00 stated,
    #: or the offset said removed (``earthsearch:boa_offset_applied``).
    unshifted_numbers: bool = False

    def for_bands(self, count: int, strict: bool = True) -> StacFile:
        """These fields for a file of ``count`` bands: asset-wide values repeated for each band.

        Raises :class:`InputError` (unless not ``strict``: the input keeps its stored numbers) when the catalog
        gives a scale or offset for another number of bands than the file has: which band it belongs to would
        be a guess, and ignoring it would leave stored numbers where the catalog says they are not values.
        """
        if self.asset_wide and count != len(self.scales):
            return replace(self, common_names=(None,) * count, scales=self.scales[:1] * count,
                           offsets=self.offsets[:1] * count, nodata=self.nodata[:1] * count, asset_wide=False)
        units = [v for v in self.scales + self.offsets if v is not None]
        if strict and len(self.scales) != count and any(v not in (0.0, 1.0) for v in units):
            raise InputError(f"STAC asset {self.href}: the catalog gives scale/offset for {len(self.scales)} band(s) "
                             f"but the file has {count}; fix the item's raster:bands (or bands), or set "
                             "apply_scale: false on the input to read its stored numbers")
        return self


@dataclass(frozen=True)
class StacAsset:
    """A wanted asset across the items: its key (the layer's name), band name and files."""

    key: str
    band: str | None
    files: tuple[StacFile, ...]


def stac_assets(href: str, wanted: Sequence[str], allow_outside: bool = False) -> list[StacAsset]:
    """The wanted assets (all with ``eo:bands`` when none is named) with their bands' common names,
    ``raster:bands`` scale/offset/nodata and the items' sensors. Hrefs pass :func:`checked_href`
    (``allow_outside``: the job's ``allow_gdal_virtual``)."""
    items = load_items(href)
    if not wanted:
        wanted = [k for k, a in items[0].assets.items() if _describes_bands(a)]
        if not wanted:
            raise InputError(f"STAC {href}: no asset has eo:bands; name the assets to use (assets: [...])")
        _refuse_repeated_bands(href, items[0], wanted)
    out = []
    for name in wanted:
        files, band, layer = [], None, None
        for item in items:
            key, asset = find_asset(item, name)
            files.append(_stac_file(item, asset, checked_href(_absolute(asset.href, href), href, allow_outside)))
            band = band or _common_name(asset) or key
            layer = layer or key
        out.append(StacAsset(layer or name, band, tuple(files)))
    return out


def _refuse_repeated_bands(href: str, item: Any, keys: Sequence[str]) -> None:
    """Refuse taking every asset with bands where two of them describe one band (the same ``eo:bands`` name and
    common name): Earth Search's ``red`` and ``red-jp2``, the ``visual`` true-colour image beside ``B04``...
    Both would become features, the band counted twice and the second in other units."""
    seen: dict[tuple[Any, Any], str] = {}
    for key in keys:
        for band in _dicts(item.assets[key].extra_fields.get("eo:bands")) + _dicts(item.assets[key].extra_fields.get("bands")):
            ident = (band.get("name"), band.get("common_name", band.get("eo:common_name")))
            if ident == (None, None):
                continue
            first = seen.setdefault(ident, key)
            if first != key:
                raise InputError(f"STAC {href}: assets {first} and {key} both hold band {ident[0] or ident[1]!r}, so "
                                 "taking every asset with eo:bands would use it twice; name the assets to use "
                                 f"(assets: [...], e.g. {first})")


def _stac_file(item: Any, asset: Any, href: str) -> StacFile:
    from geoseg.io.bandroles import sensor_of

    props = item.properties or {}
    sensor = sensor_of(props.get("platform")) or sensor_of(props.get("constellation"))
    stated = _band_fields(asset)
    bands = _landsat_l2_units(stated, href)
    return StacFile(href=href, common_names=bands.common_names, scales=bands.scales, offsets=bands.offsets,
                    nodata=bands.nodata, sensor=sensor, asset_wide=bands.asset_wide,
                    shifted_numbers=_shifted_baseline(props) if sensor == "sentinel2" else "",
                    units_from_name=bands is not stated,
                    unshifted_numbers=sensor == "sentinel2" and _unshifted_baseline(props))


def _file_name(href: str) -> str:
    """The file name of an href, without a URL's query or fragment (a signed ``?st=...&sig=...``)."""
    from urllib.parse import urlparse

    return posixpath.basename(urlparse(href).path if "://" in href else href.split("?")[0])


def _landsat_l2_units(bands: BandFields, href: str) -> BandFields:
    """``bands`` with Landsat Collection 2 Level-2 units where the asset is such an SR or ST band file and its
    catalog gives no scale or offset (USGS's LandsatLook items write no ``raster:bands``): read as stored,
    its digital numbers would pass for reflectance. The collection's units are fixed, so they are the item's
    word as the MTL's would be; an input's ``scale:``/``offset:`` or ``apply_scale: false`` still wins."""
    from geoseg.io.productunits import LANDSAT_C2_L2, LANDSAT_C2_L2_UNITS

    match = LANDSAT_C2_L2.match(_file_name(href))
    if match is None or any(v is not None for v in bands.scales + bands.offsets) or len(bands.scales) > 1:
        return bands
    scale, offset = LANDSAT_C2_L2_UNITS[match["kind"].upper()]
    if not bands.scales:  # no band fields at all: the units hold for the file's one band
        return BandFields(common_names=(None,), scales=(scale,), offsets=(offset,), nodata=(None,), asset_wide=True)
    return replace(bands, scales=(scale,), offsets=(offset,))


def _shifted_baseline(props: dict[str, Any]) -> str:
    """The ``s2:processing_baseline`` of a Sentinel-2 item whose stored numbers are reflectance × 10000 + 1000
    (baseline 04.00 or later, from January 2022), unless the item says the offset was removed."""
    baseline = props.get("s2:processing_baseline")
    if props.get("earthsearch:boa_offset_applied") is True or not isinstance(baseline, (str, int, float)):
        return ""
    try:
        return str(baseline) if float(baseline) >= 4.0 else ""
    except ValueError:
        return ""


def _unshifted_baseline(props: dict[str, Any]) -> bool:
    """Whether a Sentinel-2 item says its numbers carry no +1000: a baseline before 04.00, or the offset removed."""
    if props.get("earthsearch:boa_offset_applied") is True:
        return True
    baseline = props.get("s2:processing_baseline")
    try:
        return isinstance(baseline, (str, int, float)) and float(baseline) < 4.0
    except ValueError:
        return False


def item_period(href: str) -> str | None:
    """The date (``YYYY-MM-DD``, UTC) of a STAC document: its item's ``datetime``, else ``start_datetime``.

    For an ItemCollection the earliest item's date, so one document is one monitoring period.
    None when no item says when it was taken (the caller falls back to the file name).
    """
    from datetime import UTC

    dates = []
    for item in load_items(href):
        when = item.datetime or item.common_metadata.start_datetime
        if when is not None:
            dates.append((when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).date())
    return min(dates).isoformat() if dates else None
