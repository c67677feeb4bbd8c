"""A STAC Item describing a run's outputs (``item.json``), and a Collection of monitoring periods.

Catalogue tools, odc-stac and stackstac find a run through it: one asset per output (labels as
Zarr and, when exported, as COG; polygons; metrics; report ...) with the ``proj`` fields of the
label grid (CRS, shape, transform: enough to load the labels without opening them), ``raster``
(data type, nodata, pixel size), ``classification`` (the legend: value, name, title, colour) and
``file`` (size and SHA-256 multihash of every plain file, so a copy can be checked). Hrefs are
relative, so the folder can be moved or uploaded whole. Chips on a local (engineering) CRS have
no place on Earth: their item has no geometry and states the CRS as WKT only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from geoseg.io import storage
from geoseg.io.atomic import write_text_atomic
from geoseg.io.checksum import sha256_file
from geoseg.legend import NODATA_LABEL, ClassInfo

ITEM_FILE = "item.json"
COLLECTION_FILE = "collection.json"
#: Zarr has no registered media type; this one is what odc-stac recognises as raster data.
ZARR_MEDIA_TYPE = "application/x-zarr"
#: Media type and roles by file extension; outputs not listed are described as plain data.
_KINDS: dict[str, tuple[str, list[str]]] = {
    ".zarr": (ZARR_MEDIA_TYPE, ["data"]),
    ".tif": ("image/tiff; application=geotiff; profile=cloud-optimized", ["data"]),
    ".gpkg": ("application/geopackage+sqlite3", ["data"]),
    ".csv": ("text/csv", ["metadata"]),
    ".html": ("text/html", ["overview"]),
    ".json": ("application/json", ["metadata"]),
    ".qml": ("text/xml", ["style"]),
}
_SHA256_MULTIHASH = "1220"  # multihash prefix: sha2-256, 32 bytes


def multihash_sha256(path: str | Path) -> str:
    """A file's SHA-256 as the multihash hex string ``file:checksum`` expects (``1220`` + digest)."""
    return _SHA256_MULTIHASH + sha256_file(path)


def classification_classes(legend: Iterable[ClassInfo], nodata: int = NODATA_LABEL) -> list[dict[str, Any]]:
    """The legend as ``classification:classes``: machine name, title as written, colour, and nodata.

    >>> classification_classes([ClassInfo(1, "bare soil", "#a0522d")])  # doctest: +NORMALIZE_WHITESPACE
    [{'value': 1, 'name': 'bare_soil', 'title': 'bare soil', 'color_hint': 'A0522D'},
     {'value': 255, 'name': 'nodata', 'title': 'no data', 'nodata': True}]
    """
    out: list[dict[str, Any]] = []
    for c in sorted(legend, key=lambda c: c.id):
        name = re.sub(r"[^0-9A-Za-z_-]+", "_", c.name.strip()).strip("_") or f"class_{c.id}"
        out.append({"value": int(c.id), "name": name, "title": c.name, "color_hint": c.color.lstrip("#").upper()})
    out.append({"value": int(nodata), "name": "nodata", "title": "no data", "nodata": True})
    return out


def _proj_fields(grid: Any) -> dict[str, Any]:
    """``proj:*`` of a grid: the EPSG code when the CRS has one, else its WKT2; shape, transform, bbox."""
    crs = grid.crs
    epsg = crs.to_epsg()
    fields: dict[str, Any] = {"proj:code": f"EPSG:{epsg}" if epsg else None}
    if not epsg:
        fields["proj:wkt2"] = crs.to_wkt()
    t = grid.transform
    fields.update({"proj:shape": [int(grid.height), int(grid.width)],
                   "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f, 0.0, 0.0, 1.0],
                   "proj:bbox": list(grid.bounds)})  # fmt: skip
    return fields


def _footprint(grid: Any) -> tuple[dict[str, Any] | None, list[float] | None]:
    """The grid's outline in WGS 84 (GeoJSON, bbox); none for a CRS with no place on Earth (chips)."""
    from rasterio.warp import transform_bounds, transform_geom
    from shapely.geometry import box, mapping

    crs = grid.crs
    if not (crs.is_projected or crs.is_geographic):
        return None, None
    outline = mapping(box(*grid.bounds))
    geometry = transform_geom(crs, "EPSG:4326", outline, antimeridian_cutting=True)
    return geometry, list(transform_bounds(crs, "EPSG:4326", *grid.bounds, densify_pts=21))


def build_run_item(
    out: Path, outputs: Mapping[str, Any], *, item_id: str, labels: Any,
    when: dt.datetime | None = None, properties: Mapping[str, Any] | None = None,
) -> Any:
    """A ``pystac.Item`` for the run in ``out``: one asset per output that lies in the folder.

    ``labels``: the store's :class:`~geoseg.io.labelstore.LabelRasterInfo` (grid, legend, nodata).
    ``when``: the scene's date when known (a monitoring period), else now.
    """
    import pystac
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.file import FileExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    geometry, bbox = _footprint(labels.grid)
    props = {"created": now.isoformat().replace("+00:00", "Z"), **dict(properties or {})}
    item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=when or now, properties=props)
    for ext in (ProjectionExtension, RasterExtension, ClassificationExtension, FileExtension):
        ext.add_to(item)
    item.properties.update(_proj_fields(labels.grid))
    classes = classification_classes(labels.legend, labels.nodata)
    band = {"nodata": int(labels.nodata), "data_type": "uint8", "spatial_resolution": float(labels.grid.resolution)}
    for key, target in outputs.items():
        name = Path(str(target)).name
        local = None if storage.is_url(target) else Path(target)
        if local is not None and local.parent.resolve() != Path(out).resolve():
            continue  # not part of this folder (e.g. an input); hrefs stay relative
        media, roles = _KINDS.get(Path(name).suffix.lower(), ("application/octet-stream", ["data"]))
        asset = pystac.Asset(href=f"./{name}", media_type=media, roles=list(roles), title=key.replace("_", " "))
        if key in ("labels", "cog", "instances") or name in ("labels.zarr", "labels.tif"):
            asset.extra_fields["raster:bands"] = [dict(band, data_type="uint32", nodata=0)
                                                  if key == "instances" else band]  # fmt: skip
            if key != "instances":
                asset.extra_fields["classification:classes"] = classes
        if key == "confidence":  # a percentage (0-100), not classes; written with the labels' nodata value
            asset.extra_fields["raster:bands"] = [dict(band, nodata=NODATA_LABEL, unit="percent")]
        if key == "polygons":
            asset.extra_fields["classification:classes"] = classes
        if local is not None and local.is_file() and key != "run":
            asset.extra_fields["file:size"] = local.stat().st_size
            asset.extra_fields["file:checksum"] = multihash_sha256(local)
        item.add_asset(key, asset)
    return item


def write_run_item(out: Path, outputs: Mapping[str, Any], **kwargs: Any) -> Path:
    """Write :func:`build_run_item` to ``out/item.json`` atomically; returns its path."""
    import json

    item = build_run_item(out, outputs, **kwargs)
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    return write_text_atomic(Path(out) / ITEM_FILE, json.dumps(data, indent=1) + "\n")


def set_item_datetime(item_path: Path, when: dt.datetime, item_id: str | None = None) -> None:
    """Give a written item the scene's date (a monitoring period) and an id, keeping everything else."""
    import json

    data = json.loads(Path(item_path).read_text())
    data["properties"]["datetime"] = when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if item_id is not None:
        data["id"] = item_id
    write_text_atomic(item_path, json.dumps(data, indent=1) + "\n")


def write_periods_collection(root: Path, periods: Iterable[str], *, collection_id: str, description: str) -> Path:
    """``root/collection.json``: a STAC Collection whose items are the periods' ``item.json``.

    Its extent spans the periods' footprints and dates; item links are relative (``2026-06-01/item.json``).
    """
    import json

    import pystac

    items = []
    for period in sorted(periods):
        path = Path(root) / period / ITEM_FILE
        if path.is_file():
            items.append((period, pystac.Item.from_dict(json.loads(path.read_text()), preserve_dict=False)))
    boxes = [i.bbox for _, i in items if i.bbox]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)] \
        if boxes else [-180.0, -90.0, 180.0, 90.0]  # fmt: skip
    dates = [i.datetime for _, i in items if i.datetime is not None]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]),
                           pystac.TemporalExtent([[min(dates) if dates else None, max(dates) if dates else None]]))
    collection = pystac.Collection(id=collection_id, description=description, extent=extent, license="other")
    data = collection.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] = [link for link in data["links"] if link.get("rel") != "root"]
    data["links"] += [{"rel": "item", "href": f"./{period}/{ITEM_FILE}", "type": "application/geo+json",
                       "title": period} for period, _ in items]  # fmt: skip
    return write_text_atomic(Path(root) / COLLECTION_FILE, json.dumps(data, indent=1) + "\n")


__all__ = [
    "COLLECTION_FILE", "ITEM_FILE", "build_run_item", "classification_classes", "multihash_sha256",
    "set_item_datetime", "write_periods_collection", "write_run_item",
]
