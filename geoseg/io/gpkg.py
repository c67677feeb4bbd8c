"""GeoPackage writing that GIS users can open straight away, and that is never half-written.

* Every output is built under a temporary name in the destination folder and renamed into
  place only once complete (:func:`atomic_gpkg`), so a ``polygons.gpkg`` that exists is whole.
* Features are streamed into GDAL's GPKG driver as Arrow record batches (:func:`write_arrow_layer`):
  one open dataset, one transaction per layer and the R-tree spatial index
  (``rtree_<layer>_geom``) built in bulk when the layer is closed, rather than row by row.
* A default QGIS style is stored in the ``layer_styles`` table (the table QGIS itself reads
  and writes), so QGIS draws each class in its legend colour on first open
  (:func:`write_layer_styles`).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pyarrow as pa

from geoseg.errors import OutputError
from geoseg.io.atomic import atomic_path
from geoseg.legend import ClassInfo

#: Geometry column name; GDAL names the spatial index ``rtree_<layer>_<GEOMETRY_COLUMN>``.
GEOMETRY_COLUMN = "geom"
#: The table QGIS reads default styles from.
STYLE_TABLE = "layer_styles"

#: RAM GDAL may use to build a layer's R-tree in memory before it falls back to building it in the
#: file (``OGR_GPKG_MAX_RAM_USAGE_RTREE``; GDAL's own default is a share of the machine's RAM). Why
#: capped: the in-memory build holds every feature's box until the layer closes, ~65 bytes a
#: polygon (180 MiB for 2.7 M polygons), so the writer's memory grew with the output. The file
#: build costs ~25 % more write time on the benchmark map. A value set in the environment wins.
RTREE_RAM_BYTES = 16 * 2**20

#: Arrow schema of the polygon layers written by :mod:`geoseg.vector.vectorize`.
POLYGON_SCHEMA = pa.schema(
    [
        (GEOMETRY_COLUMN, pa.binary()),
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("area_m2", pa.float64()),
        ("perimeter_m", pa.float64()),
    ]
)


@contextmanager
def atomic_gpkg(out_path: str | Path) -> Iterator[Path]:
    """Yield a temporary ``.gpkg`` path next to ``out_path``; rename it into place on success.

    :func:`geoseg.io.atomic.atomic_path` with the checks a GeoPackage needs first: on any
    exception the temporary file (and SQLite side files) are removed and ``out_path`` is left as
    it was, so an existing older output survives a failed run untouched.
    """
    out = Path(out_path)
    if not out.parent.exists():
        raise OutputError(f"output folder {out.parent} does not exist")
    if out.exists() and out.is_dir():
        raise OutputError(f"{out} is a folder; give a .gpkg file name")
    with atomic_path(out) as tmp:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written to {tmp}")


def write_arrow_layer(
    path: Path,
    layer: str,
    batches: Iterable[pa.RecordBatch],
    *,
    crs_wkt: str,
    schema: pa.Schema = POLYGON_SCHEMA,
    geometry_type: str = "Polygon",
) -> None:
    """Stream ``batches`` (WKB in :data:`GEOMETRY_COLUMN`) into a new layer of the GeoPackage ``path``.

    The batches may be produced lazily (e.g. as Dask tasks finish): GDAL pulls them one by one
    inside a single transaction, so writing overlaps with computing and memory stays bounded.
    """
    from pyogrio.raw import write_arrow

    failed: list[BaseException] = []

    def pulled() -> Iterator[pa.RecordBatch]:  # GDAL turns an error raised here into a bare RuntimeError
        try:
            yield from batches
        except BaseException as exc:
            failed.append(exc)
            raise

    reader = pa.RecordBatchReader.from_batches(schema, pulled())
    try:
        _write_arrow(write_arrow, reader, path, layer, crs_wkt, geometry_type)
    except Exception:
        if failed:  # the producer's error (e.g. a damaged label chunk), not "Error while accessing batch"
            raise failed[0] from None
        raise


def _write_arrow(write_arrow, reader, path: Path, layer: str, crs_wkt: str, geometry_type: str) -> None:
    _cap_rtree_ram()
    write_arrow(
        reader,
        str(path),
        layer=layer,
        driver="GPKG",
        geometry_name=GEOMETRY_COLUMN,
        geometry_type=geometry_type,
        crs=crs_wkt,
        append=path.exists(),
        layer_options={"SPATIAL_INDEX": "YES", "FID": "fid", "GEOMETRY_NAME": GEOMETRY_COLUMN},
    )


def _cap_rtree_ram() -> None:
    import pyogrio

    # set every time: GDAL's config options outlive a call, and a value from the environment must win
    cap = os.environ.get("OGR_GPKG_MAX_RAM_USAGE_RTREE", str(RTREE_RAM_BYTES))
    pyogrio.set_gdal_config_options({"OGR_GPKG_MAX_RAM_USAGE_RTREE": cap})


# ---------------------------------------------------------------------------------------------
# QGIS default style
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerStyle:
    """One row of ``layer_styles``: the default style of one layer."""

    layer: str
    name: str
    qml: str
    sld: str
    description: str = "geoseg default style: classes in their legend colours"


def _hex_to_qgis(color: str, alpha: int = 255) -> str:
    h = color.lstrip("#")
    return f"{int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha}"


def _fill_symbol_xml(name: str, color: str) -> str:
    """A QGIS simple-fill symbol, written both as ``<Option>`` (QGIS ≥ 3.26) and ``<prop>`` (older)."""
    props = {
        "color": _hex_to_qgis(color),
        "outline_color": "35,35,35,255",
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "bevel",
    }
    options = "".join(f'<Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>' for k, v in props.items())
    legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" enabled="1" pass="0" locked="0">'
        f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>'
    )


def categorized_qml(legend: Sequence[ClassInfo], field: str = "class_id") -> str:
    """QGIS QML for a categorized renderer on ``field``: one category per class, in its colour.

    >>> qml = categorized_qml([ClassInfo(1, "water", "#2166ac")])
    >>> 'type="categorizedSymbol"' in qml and 'value="1"' in qml and "33,102,172,255" in qml
    True
    """
    cats = "".join(
        f'<category symbol="{i}" value="{c.id}" label={quoteattr(c.name)} render="true" type="integer"/>'
        for i, c in enumerate(legend)
    )
    symbols = "".join(_fill_symbol_xml(str(i), c.color) for i, c in enumerate(legend))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        'enableorderby="0" forceraster="0" referencescale="-1">'
        f"<categories>{cats}</categories><symbols>{symbols}</symbols>"
        f"<source-symbol>{_fill_symbol_xml('0', '#bebebe')}</source-symbol>"
        "</renderer-v2><blendMode>0</blendMode><featureBlendMode>0</featureBlendMode></qgis>\n"
    )


def categorized_sld(layer: str, legend: Sequence[ClassInfo], field: str = "class_id") -> str:
    """The same styling as an OGC SLD 1.1 document (for other clients reading ``styleSLD``)."""
    rules = "".join(
        "<se:Rule>"
        f"<se:Name>{escape(c.name)}</se:Name>"
        "<ogc:Filter><ogc:PropertyIsEqualTo>"
        f"<ogc:PropertyName>{escape(field)}</ogc:PropertyName><ogc:Literal>{c.id}</ogc:Literal>"
        "</ogc:PropertyIsEqualTo></ogc:Filter>"
        "<se:PolygonSymbolizer><se:Fill>"
        f'<se:SvgParameter name="fill">{c.color}</se:SvgParameter></se:Fill>'
        '<se:Stroke><se:SvgParameter name="stroke">#232323</se:SvgParameter>'
        '<se:SvgParameter name="stroke-width">0.25</se:SvgParameter></se:Stroke>'
        "</se:PolygonSymbolizer></se:Rule>"
        for c in legend
    )
    return _sld_document(layer, rules)


def class_style(layer: str, legend: Sequence[ClassInfo], field: str = "class_id") -> LayerStyle:
    """The default style of one polygon layer: categorized on ``field`` with the legend colours."""
    return LayerStyle(layer=layer, name=f"{layer}_classes", qml=categorized_qml(legend, field),
                      sld=categorized_sld(layer, legend, field))


#: mIoU classes of the regions style: equal steps from red (poor) to green (good).
MIOU_RANGES: tuple[tuple[float, float, str], ...] = (
    (0.0, 0.2, "#d7191c"), (0.2, 0.4, "#fdae61"), (0.4, 0.6, "#ffffbf"), (0.6, 0.8, "#a6d96a"), (0.8, 1.0, "#1a9641"),
)


def graduated_qml(field: str = "miou", ranges: Sequence[tuple[float, float, str]] = MIOU_RANGES) -> str:
    """QGIS QML for a graduated renderer on ``field`` (red to green); regions without a value
    (no scored pixel) fall in no range and are drawn by the NULL rule QGIS adds: not at all.

    >>> q = graduated_qml()
    >>> 'type="graduatedSymbol"' in q and 'attr="miou"' in q and "215,25,28,255" in q
    True
    """
    rs = "".join(
        f'<range symbol="{i}" lower="{lo:.6f}" upper="{hi:.6f}" label="{lo:.1f} - {hi:.1f}" render="true"/>'
        for i, (lo, hi, _) in enumerate(ranges)
    )
    symbols = "".join(_fill_symbol_xml(str(i), c) for i, (_, _, c) in enumerate(ranges))
    ramp = (
        '<colorramp type="gradient" name="[source]"><Option type="Map">'
        f'<Option type="QString" name="color1" value="{_hex_to_qgis(ranges[0][2])}"/>'
        f'<Option type="QString" name="color2" value="{_hex_to_qgis(ranges[-1][2])}"/>'
        '<Option type="QString" name="discrete" value="0"/><Option type="QString" name="rampType" value="gradient"/>'
        "</Option></colorramp>"
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        f'<renderer-v2 type="graduatedSymbol" attr={quoteattr(field)} graduatedMethod="GraduatedColor" '
        'symbollevels="0" enableorderby="0" forceraster="0" referencescale="-1">'
        f"<ranges>{rs}</ranges><symbols>{symbols}</symbols>"
        f"<source-symbol>{_fill_symbol_xml('0', '#bebebe')}</source-symbol>{ramp}"
        '<mode name="equal"/><rotation/><sizescale/>'
        "</renderer-v2><blendMode>0</blendMode><featureBlendMode>0</featureBlendMode></qgis>\n"
    )


def graduated_sld(layer: str, field: str = "miou", ranges: Sequence[tuple[float, float, str]] = MIOU_RANGES) -> str:
    """The same graduated styling as OGC SLD 1.1."""
    rules = "".join(
        "<se:Rule>"
        f"<se:Name>{lo:.1f} - {hi:.1f}</se:Name>"
        "<ogc:Filter><ogc:And>"
        f"<ogc:PropertyIsGreaterThanOrEqualTo><ogc:PropertyName>{escape(field)}</ogc:PropertyName><ogc:Literal>{lo}</ogc:Literal></ogc:PropertyIsGreaterThanOrEqualTo>"
        f"<ogc:PropertyIs{'LessThanOrEqualTo' if i == len(ranges) - 1 else 'LessThan'}>"
        f"<ogc:PropertyName>{escape(field)}</ogc:PropertyName>"
        f"<ogc:Literal>{hi}</ogc:Literal></ogc:PropertyIs{'LessThanOrEqualTo' if i == len(ranges) - 1 else 'LessThan'}>"
        "</ogc:And></ogc:Filter>"
        f'<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">{c}</se:SvgParameter></se:Fill>'
        '<se:Stroke><se:SvgParameter name="stroke">#232323</se:SvgParameter></se:Stroke></se:PolygonSymbolizer></se:Rule>'
        for i, (lo, hi, c) in enumerate(ranges)
    )
    return _sld_document(layer, rules)


def miou_style(layer: str) -> LayerStyle:
    """The default style of the regions layer: mIoU from red (0) to green (1)."""
    return LayerStyle(layer=layer, name=f"{layer}_miou", qml=graduated_qml(), sld=graduated_sld(layer),
                      description="geoseg default style: regions by mIoU, red (0) to green (1)")


_STYLE_SCHEMA = pa.schema(
    [
        ("f_table_catalog", pa.string()),
        ("f_table_schema", pa.string()),
        ("f_table_name", pa.string()),
        ("f_geometry_column", pa.string()),
        ("styleName", pa.string()),
        ("styleQML", pa.string()),
        ("styleSLD", pa.string()),
        ("useAsDefault", pa.bool_()),
        ("description", pa.string()),
        ("owner", pa.string()),
        ("ui", pa.string()),
        ("update_time", pa.timestamp("ms", tz="UTC")),
    ]
)


def write_layer_styles(path: Path, styles: Sequence[LayerStyle]) -> None:
    """Add the ``layer_styles`` table (as QGIS creates it: attributes table, FID ``id``).

    Written through GDAL so the table is registered in ``gpkg_contents`` like QGIS's own.
    """
    from pyogrio.raw import write_arrow

    if not styles:
        return
    now = _dt.datetime.now(_dt.UTC)
    n = len(styles)
    table = pa.table(
        {
            "f_table_catalog": [""] * n,
            "f_table_schema": [""] * n,
            "f_table_name": [s.layer for s in styles],
            "f_geometry_column": [GEOMETRY_COLUMN] * n,
            "styleName": [s.name for s in styles],
            "styleQML": [s.qml for s in styles],
            "styleSLD": [s.sld for s in styles],
            "useAsDefault": [True] * n,
            "description": [s.description for s in styles],
            "owner": [""] * n,
            "ui": [None] * n,
            "update_time": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
        },
        schema=_STYLE_SCHEMA,
    )
    write_arrow(table, str(path), layer=STYLE_TABLE, driver="GPKG", append=path.exists(),
                layer_options={"FID": "id"})


def _sld_document(layer: str, rules: str) -> str:
    """An SLD 1.1 document styling ``layer`` with the given ``<se:Rule>`` elements (one shared envelope)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<StyledLayerDescriptor xmlns="http://www.opengis.net/sld" xmlns:ogc="http://www.opengis.net/ogc" '
        'xmlns:se="http://www.opengis.net/se" version="1.1.0">'
        f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle><se:Name>{escape(layer)}</se:Name>"
        f"<se:FeatureTypeStyle>{rules}</se:FeatureTypeStyle></UserStyle></NamedLayer>"
        "</StyledLayerDescriptor>"
    )
