"""Area estimates of an interpreted sample, as files: ``area_estimates.csv``, ``area_summary.csv``, ``area_report.html``.

:func:`estimate_sample` reads a sample written by ``geoseg sample`` (GeoPackage or CSV, as the
interpreter left it) and estimates (:mod:`geoseg.accuracy.areaestimate`); :func:`write_area_outputs`
writes the table, the sample's confusion matrix (``area_confusion.csv``: counts, map class x
reference class), the estimated area proportions of its cells (``area_proportions.csv``) and a
self-contained HTML page; :func:`area_section_html` is that page's body, for other reports.

Figures on the page and the terminal are rounded to what their standard error supports
(:func:`geoseg.accuracy.areaestimate.round_to_se`); the CSV keeps six significant digits.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from geoseg.accuracy.areaestimate import Z95, AreaEstimate, estimate_areas, round_to_se
from geoseg.accuracy.figures import plain_number
from geoseg.accuracy.sections import put_section
from geoseg.io.atomic import write_atomic, write_text_atomic

#: What the 95 % interval means, in words (the report and the README say it alike).
CI_MEANING = (
    "The 95 % confidence interval is the estimate ± 1.96 standard errors: if the sample were drawn "
    "again and again with this design and labelled the same way, about 95 % of the intervals so "
    "computed would contain the area a complete census with the same reference would give. It "
    "accounts for sampling error only, not for mistakes of the reference labels."
)


def estimate_sample(
    path: str | Path,
    *,
    mapping: Mapping[int, int] | pd.DataFrame | None = None,
    class_names: Mapping[int, str] | None = None,
) -> AreaEstimate:
    """Estimate areas and accuracies from an interpreted sample file (``.gpkg`` or ``.csv``).

    ``mapping``: map class → reference class, or a run's ``class_mapping.csv`` as a table, read by
    the column the sample's map classes are in (:mod:`geoseg.accuracy.samplemapping`: cluster ids
    of ``method_labels`` or the class ids of the published ``labels.zarr``).
    Class names: ``class_names``, else the reference's legend recorded with the sample, else the
    map's (when a map class is a reference class: no ``mapping``).
    """
    from geoseg.accuracy.sampledesign import read_sample
    from geoseg.accuracy.samplemapping import mapping_for_sample, refuse_unmapped_clusters

    points, strata, classes = read_sample(path)
    read_by = None
    if mapping is None or (not isinstance(mapping, pd.DataFrame) and not mapping):
        refuse_unmapped_clusters(_map_names(points, strata, classes), {
            int(r.class_id): str(r.name) for r in classes[classes["kind"] == "reference"].itertuples()})
    if isinstance(mapping, pd.DataFrame):
        mapping, key = mapping_for_sample(mapping, _map_names(points, strata, classes))
        read_by = ("raster_value: the sample was drawn on the published class ids" if key == "raster_value"
                   else "label_id: the sample was drawn on the method's own labels")
    names: dict[int, str] = {}
    if len(classes) and not mapping:
        names |= {int(r.class_id): str(r.name) for r in classes[classes["kind"] == "map"].itertuples()}
    if len(classes):
        names |= {int(r.class_id): str(r.name) for r in classes[classes["kind"] == "reference"].itertuples()}
    names |= dict(class_names or {})
    est = estimate_areas(points, strata, mapping=mapping, class_names=names)
    if len(classes):
        est.map_class_names = {int(r.class_id): str(r.name) for r in classes[classes["kind"] == "map"].itertuples()}
    if mapping:
        map_names = {int(r.class_id): str(r.name) for r in classes[classes["kind"] == "map"].itertuples()}
        est.notes.append("map classes counted as reference classes: " + ", ".join(
            f"{map_names.get(k, k)} → {names.get(v, v)}" for k, v in sorted(mapping.items())))
    if read_by:
        est.notes.append(f"class_mapping.csv read by {read_by}")
    return est


def _map_names(points: pd.DataFrame, strata: pd.DataFrame, classes: pd.DataFrame) -> dict[int, str]:
    """The sample's map classes (id → name; those of its strata): its classes table, else its points'
    ``map_class_name``. Empty when the sample names none of them."""
    names = {int(r.class_id): str(r.name) for r in classes[classes["kind"] == "map"].itertuples()}
    if "map_class_name" in points.columns:
        names |= {int(m): str(n) for m, n in zip(points["map_class"], points["map_class_name"]) if not pd.isna(n)}
    used = {int(m) for m in strata["map_class"]}
    return {m: n for m, n in names.items() if m in used} if used <= names.keys() else {}


#: Markers around the area section in an evaluation's ``report.html`` (replaced when estimated again).
BEGIN, END = "<!-- geoseg:area-estimates -->", "<!-- /geoseg:area-estimates -->"


def write_area_outputs(est: AreaEstimate, out_dir: str | Path, title: str = "Area estimates") -> dict[str, Path]:
    """Write ``area_estimates.csv`` (per class), ``area_summary.csv`` (overall accuracy, map and sample sizes),
    ``area_confusion.csv``, ``area_proportions.csv`` and ``area_report.html``;
    when ``out_dir`` holds an evaluation's ``report.html`` (a run's output folder), the estimates
    become a section of it too."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"report": add_area_section(out / "report.html", est)} if (out / "report.html").exists() else {}
    table = est.table()
    rounded = table.copy()
    for col in ("mapped_area_ha", "estimated_area_ha", "se_ha", "ci95_low_ha", "ci95_high_ha"):
        rounded[col] = [_significant(v) for v in rounded[col].astype(float)]
    return {
        "area estimates": write_atomic(out / "area_estimates.csv", lambda p: rounded.to_csv(p, index=False)),
        "area summary": write_atomic(out / "area_summary.csv", lambda p: est.summary().to_csv(p, index=False)),
        "sample confusion": write_atomic(out / "area_confusion.csv", lambda p: est.confusion.to_csv(p)),
        "area proportions": write_atomic(out / "area_proportions.csv", lambda p: est.proportions.to_csv(p)),
        "area report": write_text_atomic(out / "area_report.html", render_area_page(est, title)),
        **extra,
    }


def _significant(v: float, digits: int = 6) -> float:
    """``v`` to ``digits`` significant digits: never 0.01 ha steps, which made a drone map's SEs 0.

    >>> _significant(21158.2468), _significant(0.000123456789), _significant(0.0)
    (21158.2, 0.000123457, 0.0)
    """
    if not math.isfinite(v) or v == 0:
        return v
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


def add_area_section(report: str | Path, est: AreaEstimate) -> Path:
    """Put the area section into an existing ``report`` page (before ``</body>``, or in place of an earlier one)."""
    return put_section(report, BEGIN, END, area_section_html(est))


def _pm(value: float, se: float, unit: str = "", digits: int = 2) -> str:
    if pd.isna(value):
        return "-"
    v, half = round_to_se(float(value), Z95 * float(se), digits)
    if pd.isna(se) or float(se) == 0:  # no spread in the sample (or one point): no interval to round to
        return f"{value:,.3f} ± {0 if float(se) == 0 else '?'}{unit}"
    decimals = max(0, -int(f"{half:e}".split("e")[1]) + digits - 1) if half else 0
    return f"{v:,.{decimals}f} ± {half:,.{decimals}f}{unit}"


def _ha(v: float) -> str:
    """Hectares to four significant digits, never rounded to 0 (a drone map's 0.05 ha class).

    >>> _ha(18000.0), _ha(0.05), _ha(1.23456), _ha(0.0)
    ('18,000', '0.05', '1.235', '0')
    """
    text = plain_number(float(v))
    return text.rstrip("0").rstrip(".") if "." in text else text


def summary_table(est: AreaEstimate) -> pd.DataFrame:
    """The per-class figures as text, rounded to their standard errors (terminal and HTML)."""
    c = est.classes
    return pd.DataFrame({
        "class": [f"{i} {n}" for i, n in zip(c["class_id"], c["class_name"])],
        "mapped ha": [_ha(v) for v in c["mapped_area_ha"]],
        "estimated ha (95 % CI)": [_pm(v, s) for v, s in zip(c["area_ha"], c["area_se_ha"])],
        "user's acc.": [_pm(v, s) for v, s in zip(c["users_accuracy"], c["users_accuracy_se"])],
        "producer's acc.": [_pm(v, s) for v, s in zip(c["producers_accuracy"], c["producers_accuracy_se"])],
        "n mapped": c["n_mapped"], "n reference": c["n_reference"],
    })  # fmt: skip


def overall_line(est: AreaEstimate) -> str:
    n = int(est.strata["n_sample"].sum())
    return (f"overall accuracy {_pm(est.overall_accuracy, est.overall_accuracy_se)} (95 % CI); "
            f"{n} points in {len(est.strata)} strata; map {_ha(est.total_area_ha)} ha "
            f"({est.total_px:,} px of {est.pixel_area_m2:g} m²)")


def area_section_html(est: AreaEstimate) -> str:
    """The estimates as an HTML section (tables and the meaning of the interval)."""
    def table(df: pd.DataFrame, index: bool = False) -> str:
        return df.to_html(index=index, border=0, classes="t", escape=True)

    strata = est.strata[[c for c in ("stratum", "region", "map_class", "map_class_name", "mapped_px", "n_sample")
                         if c in est.strata]]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in est.notes)
    return (
        "<section><h2>Area estimates (stratified sample)</h2>"
        f"<p>{html.escape(overall_line(est))}</p>"
        f"{table(summary_table(est))}"
        f"<p class='note'>{html.escape(CI_MEANING)} Estimated areas are of the reference classes; "
        "user's accuracy: share of the points mapped as a class that the reference confirms; producer's: "
        "share of a reference class that the map shows as that class (stratified ratio estimators, "
        "Olofsson et al. 2014; Stehman 2014).</p>"
        f"{'<ul>' + notes + '</ul>' if notes else ''}"
        "<h3>Sample counts (rows: map class as stored, columns: reference class)</h3>"
        f"{table(_named(est, est.confusion), index=True)}"
        "<h3>Estimated area proportions of the same cells</h3>"
        f"{table(_named(est, est.proportions.round(4)), index=True)}"
        f"<h3>Strata</h3>{table(strata)}</section>"
    )


def _named(est: AreaEstimate, matrix: pd.DataFrame) -> pd.DataFrame:
    """A map class x reference class matrix with ``id name`` labels (the store's and the reference's legends)."""
    ref_names = dict(zip(est.classes["class_id"], est.classes["class_name"]))
    out = matrix.copy()
    out.index = [f"{i} {est.map_class_names.get(int(i), '')}".strip() for i in matrix.index]
    out.columns = [f"{c} {ref_names.get(int(c), '')}".strip() for c in matrix.columns]
    out.index.name, out.columns.name = "map class", "reference"
    return out


def render_area_page(est: AreaEstimate, title: str = "Area estimates") -> str:
    """A self-contained page holding :func:`area_section_html`."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table.t{border-collapse:collapse;margin:.5em 0}"
             "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
             ".note{color:#444;font-size:90%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{area_section_html(est)}</body></html>\n")
