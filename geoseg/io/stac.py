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
from dataclasses import dataclass
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
        return target
    if target.lower().startswith("file://"):
        target = unquote(urlparse(target).path)
    folder = Path(document).resolve().parent
    if is_url(target) or target.lower().startswith("/vsi") or not Path(target).resolve().is_relative_to(folder):
        raise InputError(f"STAC item {document}: asset {target!r} lies outside the item's folder {folder}; "
                         "a local item names files beside it (allow_gdal_virtual: true allows others)")
    return target


def _common_name(asset: Any) -> str | None:
    bands = asset.extra_fields.get("eo:bands") or []
    names = [b.get("common_name") for b in bands if isinstance(b, dict)]
    return names[0] if len(names) == 1 else None


def find_asset(item: Any, wanted: str) -> tuple[str, Any]:
    """The asset of ``item`` whose key is ``wanted``, else whose single ``eo:bands`` common name is."""
    if wanted in item.assets:
        return wanted, item.assets[wanted]
    for key, asset in item.assets.items():
        if _common_name(asset) == wanted:
            return key, asset
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
    (``None`` where not given); ``sensor``: the sensor table of the item's ``platform``/``constellation``.
    """

    href: str
    common_names: tuple[str | None, ...] = ()
    scales: tuple[float | None, ...] = ()
    offsets: tuple[float | None, ...] = ()
    nodata: tuple[float | None, ...] = ()
    sensor: str | None = None


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
        wanted = [k for k, a in items[0].assets.items() if a.extra_fields.get("eo:bands")]
        if not wanted:
            raise InputError(f"STAC {href}: no asset has eo:bands; name the assets to use (assets: [...])")
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


def _stac_file(item: Any, asset: Any, href: str) -> StacFile:
    from geoseg.io.bandroles import sensor_of

    def dicts(key: str) -> list[dict[str, Any]]:
        value = asset.extra_fields.get(key) or []
        return [b if isinstance(b, dict) else {} for b in value] if isinstance(value, list) else []

    def number(d: dict[str, Any], key: str) -> float | None:
        v = d.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    eo, raster = dicts("eo:bands"), dicts("raster:bands")
    props = item.properties or {}
    sensor = sensor_of(props.get("platform")) or sensor_of(props.get("constellation"))
    return StacFile(
        href=href,
        common_names=tuple(b.get("common_name") if isinstance(b.get("common_name"), str) else None for b in eo),
        scales=tuple(number(b, "scale") for b in raster),
        offsets=tuple(number(b, "offset") for b in raster),
        nodata=tuple(number(b, "nodata") for b in raster),
        sensor=sensor,
    )


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
