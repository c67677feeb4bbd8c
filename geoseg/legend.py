"""Class legends: ids, names and colours that travel with every label output."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: Label value written where the input has no data. Never a class id.
NODATA_LABEL: int = 255


@dataclass(frozen=True)
class ClassInfo:
    """One class of a legend. ``color`` is ``#rrggbb``."""

    id: int
    name: str
    color: str

    def rgb(self) -> tuple[int, int, int]:
        """The colour as an ``(r, g, b)`` tuple of 0-255 ints.

        >>> ClassInfo(1, "water", "#1f78b4").rgb()
        (31, 120, 180)
        """
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


Legend = Sequence[ClassInfo]

#: The land-cover legend used by the synthetic landcover scene and the land-cover workflows.
LANDCOVER_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "cropland", "#e6c84f"),
    ClassInfo(2, "forest", "#1b7837"),
    ClassInfo(3, "water", "#2166ac"),
    ClassInfo(4, "grassland", "#a6d96a"),
    ClassInfo(5, "built-up", "#d73027"),
    ClassInfo(6, "bare", "#bfa68a"),
)

#: The crop-versus-weed legend used by the synthetic cropweed scene and its workflows.
CROPWEED_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "soil", "#8c6d46"),
    ClassInfo(2, "crop", "#33a02c"),
    ClassInfo(3, "weed", "#e31a1c"),
)

#: A qualitative palette for legends without colours (k-means clusters).
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
    "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
    "#756bb1", "#636363",
)


def cluster_legend(n: int) -> tuple[ClassInfo, ...]:
    """A legend for ``n`` unnamed clusters, ids 0..n-1.

    >>> [c.name for c in cluster_legend(3)]
    ['cluster_0', 'cluster_1', 'cluster_2']
    """
    return tuple(ClassInfo(i, f"cluster_{i}", PALETTE[i % len(PALETTE)]) for i in range(n))


def legend_to_json(legend: Iterable[ClassInfo]) -> list[dict]:
    return [asdict(c) for c in legend]


def legend_from_json(items: Iterable[dict]) -> tuple[ClassInfo, ...]:
    return tuple(ClassInfo(int(d["id"]), str(d["name"]), str(d["color"])) for d in items)


def legend_from_attrs(attrs: Mapping[str, Any]) -> tuple[ClassInfo, ...]:
    """The legend stored in a label raster's attributes (``geoseg:classes``, a list or its JSON text).

    >>> legend_from_attrs({"geoseg:classes": '[{"id": 3, "name": "water", "color": "#2166ac"}]'})
    (ClassInfo(id=3, name='water', color='#2166ac'),)
    """
    items = attrs.get("geoseg:classes", [])
    return legend_from_json(json.loads(items) if isinstance(items, str) else items)


def class_names(legend: Iterable[ClassInfo]) -> dict[int, str]:
    return {c.id: c.name for c in legend}


def paletted_qml(legend: Sequence[ClassInfo], nodata: int = NODATA_LABEL) -> str:
    """A QGIS style (``labels.qml``, loaded by QGIS as the raster's default style): a paletted
    renderer with each class's colour and name; nodata (255, a change map's 65535) stays transparent."""
    from xml.sax.saxutils import quoteattr  # with urllib.request: not on every import of the legend

    entries = "".join(
        f'<paletteEntry value="{c.id}" color="{c.color}" alpha="255" label={quoteattr(c.name)}/>'
        for c in legend if 0 <= c.id < nodata
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology"><pipe>'
        '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">'
        f"<rastertransparency/><colorPalette>{entries}</colorPalette></rasterrenderer>"
        '<brightnesscontrast brightness="0" contrast="0"/><huesaturation saturation="0" grayscaleMode="0"/>'
        '<rasterresampler maxOversampling="2"/></pipe><blendMode>0</blendMode></qgis>\n'
    )
