"""Class names and colours a raster carries in GDAL's side-car ``.aux.xml`` (PAM).

Land-cover maps exported from ArcGIS, QGIS or ERDAS name their classes in a *raster attribute
table* (RAT) or in GDAL *category names*; for GeoTIFFs GDAL keeps both in ``FILE.aux.xml``.
rasterio exposes neither, so the documented PAM format is read here directly:

* ``<CategoryNames><Category>name</Category>...``: the name of value 0, 1, 2, ... in order;
* ``<GDALRasterAttributeTable>``: fields with a *usage* (``Name`` = 2, ``Min`` = 3,
  ``MinMax`` = 5, ``Red``/``Green``/``Blue`` = 6/7/8) and rows of values; the class value is the
  ``MinMax``/``Min`` field (or a field called ``value``), else the row's place in the table's linear
  binning (``Row0Min`` + row × ``BinSize``, GDAL's rule; the row number when the table states none).
  The name is the ``Name`` field; tables converted from ESRI's ``.vat.dbf`` mark none (USDA CDL's
  ``Class_Names``, CORINE's ``LABEL3``, NLCD's ``NLCD Land Cover Class``), so a text field called so,
  else the only text field, names the classes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

_USAGE_NAME, _USAGE_MIN, _USAGE_MINMAX, _RED, _GREEN, _BLUE = 2, 3, 5, 6, 7, 8

#: Text fields that name the classes when no field has the ``Name`` usage (lower case, as in the table).
_NAME_FIELDS = ("class_name", "class_names", "classname", "class", "name", "label", "label3", "land cover class",
                "nlcd land cover class", "description", "descriptio")


@dataclass(frozen=True)
class PamLegend:
    """Names and colours by class value, as found in the side-car (empty when there is none)."""

    names_by_value: tuple[tuple[int, str], ...] = ()
    colors_by_value: tuple[tuple[int, str], ...] = ()

    def names(self, nodata: float | None) -> tuple[tuple[int, str], ...]:
        return tuple((v, n) for v, n in self.names_by_value if v != nodata and n.strip())

    def colors(self, nodata: float | None) -> tuple[tuple[int, str], ...]:
        return tuple((v, c) for v, c in self.colors_by_value if v != nodata)


def read_pam_legend(path: str) -> PamLegend:
    """The RAT (preferred: it can hold colours) or category names of band 1 in ``path.aux.xml``."""
    aux = Path(str(path) + ".aux.xml")
    if "://" in str(path) or not aux.is_file():
        return PamLegend()
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return PamLegend()
    band = next((b for b in root.iter("PAMRasterBand") if b.get("band", "1") == "1"), None)
    if band is None:
        return PamLegend()
    rat = band.find("GDALRasterAttributeTable")
    if rat is not None:
        legend = _rat_legend(rat)
        if legend.names_by_value:
            return legend
    cats = band.find("CategoryNames")
    if cats is not None:
        return PamLegend(tuple((i, (c.text or "").strip()) for i, c in enumerate(cats.findall("Category"))))
    return PamLegend()


def _rat_legend(rat: ET.Element) -> PamLegend:
    fields = []
    for f in rat.findall("FieldDefn"):
        fields.append(((f.findtext("Name") or "").strip().lower(), int(f.findtext("Usage") or 0), int(f.findtext("Type") or 0)))
    usage = {u: i for i, (_, u, _) in reversed(list(enumerate(fields)))}
    by_name = {n: i for i, (n, _, _) in enumerate(fields)}
    value_i = usage.get(_USAGE_MINMAX, usage.get(_USAGE_MIN, by_name.get("value")))
    name_i = usage.get(_USAGE_NAME)
    texts = [i for i, (n, u, t) in enumerate(fields) if t == 2 and u not in (_USAGE_MIN, _USAGE_MINMAX)]
    if name_i is None:  # a string field with a telling name, else the only string field
        name_i = next((i for i in texts if fields[i][0] in _NAME_FIELDS), texts[0] if len(texts) == 1 else None)
    row0, size = _binning(rat)
    rgb = [usage.get(u) for u in (_RED, _GREEN, _BLUE)]
    names, colors = [], []
    for k, row in enumerate(rat.findall("Row")):
        cells = [c.text or "" for c in row.findall("F")]
        try:
            value = int(float(cells[value_i])) if value_i is not None else _binned(int(row.get("index", k)), row0, size)
        except (ValueError, IndexError):
            continue
        if name_i is not None and name_i < len(cells):
            names.append((value, cells[name_i].strip()))
        if all(i is not None and i < len(cells) for i in rgb):
            try:
                r, g, b = (float(cells[i]) for i in rgb)  # type: ignore[index]
            except ValueError:
                continue
            if max(r, g, b) <= 1.0 and fields[rgb[0]][2] == 1:  # type: ignore[index]  # reals in 0..1
                r, g, b = r * 255, g * 255, b * 255
            colors.append((value, f"#{round(r):02x}{round(g):02x}{round(b):02x}"))
    return PamLegend(tuple(names), tuple(colors))


def _binning(rat: ET.Element) -> tuple[float, float]:
    """The table's linear binning (``Row0Min``, ``BinSize``): row k holds the value ``Row0Min + k * BinSize``."""
    try:
        return float(rat.get("Row0Min", 0)), float(rat.get("BinSize", 1))
    except ValueError:
        return 0.0, 1.0


def _binned(k: int, row0: float, size: float) -> int:
    value = row0 + k * size
    if not float(value).is_integer():
        raise ValueError(f"row {k} holds no whole class value")
    return int(value)
