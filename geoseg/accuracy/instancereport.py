"""The instances section of ``report.html``: per class, the scene's and each region's instance figures.

Rendered from ``instance_metrics.csv`` (so the page and the file cannot disagree) and put into the report
between marker comments by :func:`geoseg.accuracy.sections.put_section`, replacing an earlier run's.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from geoseg.accuracy.sections import put_section

BEGIN, END = "<!-- geoseg:instances -->", "<!-- /geoseg:instances -->"
#: Most regions listed in the report (instance_metrics.csv has every region).
MAX_REGIONS = 50
#: (CSV column, header), in order.
COLUMNS = [
    ("n_pred", "instances"), ("n_ref", "reference"), ("tp", "matched"), ("precision", "precision"),
    ("recall", "recall"), ("f1", "F1"), ("ap50", "AP50"), ("ap", "AP@[.5:.95]"), ("pq", "PQ"), ("sq", "SQ"),
    ("rq", "RQ"), ("count_error", "count error"),
]

_TEMPLATE = """<h2>Instances</h2>
<p class="note">Instances of {{ method }} against the reference instances (one per feature of a vector layer, or
the ids of an instance raster). Precision, recall and F1 of the one-to-one matching at IoU &gt; 0.5 (F1 = RQ);
PQ = SQ × RQ (Kirillov et al. 2019); AP50 and AP@[.5:.95] as COCO computes them (no cap on detections);
count error = instances − reference. An instance belongs to the region of its first pixel (row-major); a region
is scored as a scene of its own instances. {% if n_regions > shown %}The first {{ shown }} of {{ n_regions }}
regions are listed; {% endif %}every region is in <code>instance_metrics.csv</code>.</p>
<table><tr><th class="l">region</th><th class="l">class</th>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in rows %}<tr><td class="l">{{ r.region }}</td><td class="l">{{ r.cls }}</td>
{%- for v in r.cells %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
"""


def _cell(column: str, value: str) -> str:
    if value == "":
        return ""
    v = float(value)
    if math.isnan(v):
        return ""
    if column in ("n_pred", "n_ref", "tp", "count_error"):
        return f"{int(v):,}"
    return f"{v:.3f}"


def instances_section_html(metrics_csv: str | Path, method: str) -> str:
    """The section (autoescaped Jinja2) for the rows of ``metrics_csv``: ``ALL`` first, then regions."""
    import jinja2

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    regions: list[str] = []
    for r in rows:
        if r["region"] != "ALL" and r["region"] not in regions:
            regions.append(r["region"])
    shown = set(regions[:MAX_REGIONS])
    table = [
        {"region": "whole scene" if r["region"] == "ALL" else r["region"], "cls": r["class_name"] or r["class_id"],
         "cells": [_cell(c, r[c]) for c, _ in COLUMNS]}
        for r in rows if r["region"] == "ALL" or r["region"] in shown
    ]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(headers=[h for _, h in COLUMNS], rows=table, method=method,
                                             n_regions=len(regions), shown=min(len(regions), MAX_REGIONS))


def add_instances_to_report(report: str | Path, metrics_csv: str | Path, method: str) -> Path:
    """Put the instances section into ``report`` (before ``</body>``, or in place of an earlier one)."""
    return put_section(report, BEGIN, END, instances_section_html(metrics_csv, method))
