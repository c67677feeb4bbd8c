"""The objects section of ``report.html``: counts, densities, sizes and object-level accuracy.

Why a separate step: the objects stage runs after evaluation (it reads the label legend that
evaluation settles), so ``report.html`` already exists when ``objects.csv`` is written. This
module renders ``objects.csv`` as one HTML table (a row per region and class) and puts it into
the report between two marker comments, replacing an earlier run's section, so the page stays
one self-contained file and a rerun never repeats the section.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from geoseg.accuracy.figures import plain_number
from geoseg.accuracy.sections import put_section

#: Marker comments around the section inside report.html.
BEGIN, END = "<!-- geoseg:objects -->", "<!-- /geoseg:objects -->"
#: Most regions listed in the report (objects.csv has every region).
MAX_REGIONS = 50

#: (CSV column, header) of the table, in order; accuracy columns only where objects.csv has them.
COLUMNS = [
    ("objects", "objects"), ("reference_objects", "reference objects"), ("matched", "matched"),
    ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
    ("density_per_ha", "per ha"), ("size_mean_m2", "mean m²"), ("size_p10_m2", "p10 m²"),
    ("size_p25_m2", "p25 m²"), ("size_p50_m2", "median m²"), ("size_p75_m2", "p75 m²"), ("size_p90_m2", "p90 m²"),
]

_TEMPLATE = """<h2>Objects</h2>
<p class="note">Each connected region of a class is one object (4-connected); its id is its value in
<code>instances.zarr</code> (the same whatever the chunking). <code>polygons.gpkg</code> numbers its polygons on its own.
{% if scored %}Against the reference, a predicted and a reference object of the same class match one to one when
their IoU is at least 0.5: precision = matched / objects, recall = matched reference objects / reference objects.
{% endif %}Sizes are quantiles of object area; an object belongs to the region of its first pixel; "per ha" is
per mapped hectare of the region (its pixels with data: none could be found under nodata).
{% if n_regions > shown %}The first {{ shown }} of {{ n_regions }} regions are listed; {% endif %}every region is in
<code>objects.csv</code>.</p>
<table><tr><th class="l">region</th><th class="l">class</th>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td class="l">{{ r.region }}</td><td class="l">{{ r.cls }}</td>
{%- for v in r.cells %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
"""


def _cell(column: str, value: str) -> str:
    """Counts as integers, rates with 3 decimals, densities and sizes with 4 significant digits, no exponent."""
    if value in ("", None):
        return ""
    v = float(value)
    if math.isnan(v):
        return ""
    if column in ("objects", "reference_objects", "matched"):
        return f"{int(v):,}"
    if column in ("precision", "recall", "f1"):
        return f"{v:.3f}"
    return plain_number(v)  # plain digits: 48,610 per ha, not 4.861e+04


def objects_section_html(objects_csv: str | Path) -> str:
    """The section (autoescaped Jinja2) for the rows of ``objects_csv``: ``ALL`` first, then regions."""
    import jinja2

    with open(objects_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [(c, h) for c, h in COLUMNS if rows and c in rows[0]]
    regions: list[str] = []
    for r in rows:
        if r["region"] != "ALL" and r["region"] not in regions:
            regions.append(r["region"])
    shown = set(regions[:MAX_REGIONS])
    table: list[dict[str, Any]] = [
        {"region": "whole scene" if r["region"] == "ALL" else r["region"], "cls": r["class_name"],
         "cells": [_cell(c, r[c]) for c, _ in columns]}
        for r in rows if r["region"] == "ALL" or r["region"] in shown
    ]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(
        headers=[h for _, h in columns], rows=table, scored="precision" in dict(columns),
        n_regions=len(regions), shown=min(len(regions), MAX_REGIONS),
    )


def add_objects_to_report(report: str | Path, objects_csv: str | Path) -> Path:
    """Put the objects section into ``report`` (before ``</body>``, or in place of an earlier one)."""
    return put_section(report, BEGIN, END, objects_section_html(objects_csv))
