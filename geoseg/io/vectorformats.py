"""Polygon output formats chosen by the file's extension, with their limits stated up front.

The vectoriser writes a GeoPackage (streamed, atomic, with a QGIS style). Other formats are
converted from it batch by batch (Arrow streams through pyogrio, or pyarrow for GeoParquet),
so memory follows a batch, not the layer. An extension geoseg cannot write is refused before
any work; so is a multi-layer ``per_class`` layout in a single-layer format.

Shapefile limits (why GeoPackage is the default): at most 2 GB per file, field names of at
most 10 characters (``perimeter_m`` becomes ``perimeter_``), no style, several files
(``.shp .shx .dbf .prj .cpg``), one layer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import JobSpecError


@dataclass(frozen=True)
class VectorFormat:
    name: str
    driver: str  # OGR driver, or "GeoParquet" (written with pyarrow)
    multi_layer: bool
    sidecars: tuple[str, ...] = ()


FORMATS: dict[str, VectorFormat] = {
    ".gpkg": VectorFormat("GeoPackage", "GPKG", True),
    ".fgb": VectorFormat("FlatGeobuf", "FlatGeobuf", False),
    ".parquet": VectorFormat("GeoParquet", "GeoParquet", False),
    ".geoparquet": VectorFormat("GeoParquet", "GeoParquet", False),
    ".shp": VectorFormat("Shapefile (2 GB per file, 10-character field names)", "ESRI Shapefile", False,
                         (".shx", ".dbf", ".prj", ".cpg")),
}


def vector_format(path: str | os.PathLike[str], layout: str = "single") -> VectorFormat:
    """The format for ``path``'s extension; a :class:`JobSpecError` for one geoseg cannot write."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise JobSpecError(f"{path}: cannot write polygons as {suffix or 'a file without extension'!r}; "
                           f"use one of {known} (GeoPackage .gpkg is the default)")
    if layout != "single" and not fmt.multi_layer:
        raise JobSpecError(f"{path}: {fmt.name} holds one layer; --layout {layout} needs a GeoPackage (.gpkg)")
    return fmt


@contextmanager
def write_as(final: str | os.PathLike[str], fmt: VectorFormat) -> Iterator[Path]:
    """Yield where to write the GeoPackage; afterwards ``final`` holds it in ``fmt`` (atomically).

    For a GeoPackage that is ``final`` itself (the vectoriser writes atomically).
    """
    final = Path(final)
    if fmt.driver == "GPKG":
        yield final
        return
    from geoseg.io.atomic import TEMP_TAG

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.stem}.", suffix=TEMP_TAG))
    try:
        gpkg = tmp / "polygons.gpkg"
        yield gpkg
        converted = tmp / f"out{final.suffix}"
        _convert(gpkg, converted, fmt)
        for side in fmt.sidecars:  # sidecars first, the main file last: it appears complete
            if converted.with_suffix(side).exists():
                os.replace(converted.with_suffix(side), final.with_suffix(side))
        os.replace(converted, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert(gpkg: Path, out: Path, fmt: VectorFormat) -> None:
    import pyogrio

    layers = [name for name, _ in pyogrio.list_layers(gpkg) if name != "layer_styles"]
    if len(layers) != 1:
        raise JobSpecError(f"{gpkg}: {len(layers)} polygon layers; {fmt.name} holds one")
    with (
        warnings.catch_warnings(),
        pyogrio.open_arrow(gpkg, layer=layers[0], use_pyarrow=True, batch_size=65_536) as (meta, reader),
    ):
        if fmt.driver == "GeoParquet":
            _write_geoparquet(reader, meta, out)
        else:
            warnings.filterwarnings("ignore", message="Normalized/laundered field name")  # a stated Shapefile limit
            pyogrio.write_arrow(reader, out, driver=fmt.driver, geometry_name=meta["geometry_name"] or "geometry",
                                geometry_type=meta["geometry_type"], crs=meta["crs"], layer=layers[0])


def _write_geoparquet(reader, meta: dict, out: Path) -> None:
    """GeoParquet 1.0 (WKB geometry, PROJJSON CRS) written batch by batch."""
    import pyarrow.parquet as pq
    from pyproj import CRS

    geom = meta["geometry_name"] or "wkb_geometry"
    schema = reader.schema
    columns = {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                            "crs": CRS.from_user_input(meta["crs"]).to_json_dict() if meta["crs"] else None}}
    names = ["geometry" if n == geom else n for n in schema.names]
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": columns}
    writer = None
    try:
        for batch in reader:
            table = batch.rename_columns(names) if hasattr(batch, "rename_columns") else batch
            if writer is None:
                out_schema = table.schema.with_metadata({b"geo": json.dumps(geo).encode()})
                writer = pq.ParquetWriter(out, out_schema, compression="zstd")
            writer.write_batch(table)
        if writer is None:  # no features: an empty file with the schema
            import pyarrow as pa

            empty = pa.schema([schema.field(i).with_name(n) for i, n in enumerate(names)],
                              metadata={b"geo": json.dumps(geo).encode()})
            writer = pq.ParquetWriter(out, empty)
    finally:
        if writer is not None:
            writer.close()
