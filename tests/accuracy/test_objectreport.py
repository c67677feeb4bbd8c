"""The objects section of report.html: placed once, replaced on a rerun, escaped, capped at MAX_REGIONS."""

from __future__ import annotations

import csv

from geoseg.accuracy import objectreport
from geoseg.accuracy.objectreport import BEGIN, END, add_objects_to_report


def _write_csv(path, n_regions: int, name: str = "weed") -> None:
    cols = ["region", "class_id", "class_name", "objects", "area_ha", "density_per_ha", "size_mean_m2",
            "size_p10_m2", "size_p25_m2", "size_p50_m2", "size_p75_m2", "size_p90_m2"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for rid in ["ALL"] + [f"plot{i}" for i in range(n_regions)]:
            w.writerow([rid, 3, name, 1234, 2.0, 617.0, 0.01, "", 0.002, 0.005, 0.01, 0.02])


def test_section_is_added_once_replaced_on_rerun_and_escaped(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1>Accuracy report</h1>\n</body></html>\n")
    table = tmp_path / "objects.csv"
    _write_csv(table, 2, name="<b>weed</b>")
    add_objects_to_report(report, table)
    _write_csv(table, 3)
    page = add_objects_to_report(report, table).read_text()
    assert page.count(BEGIN) == page.count(END) == page.count("<h2>Objects</h2>") == 1
    assert page.index(END) < page.index("</body>") and "<b>weed" not in page
    assert page.count("<td class=\"l\">plot") == 3 and "1,234" in page and "617" in page
    assert "precision" not in page  # no reference: no accuracy columns


def test_long_region_lists_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(objectreport, "MAX_REGIONS", 4)
    report = tmp_path / "report.html"
    report.write_text("<html><body>\n</body></html>\n")
    table = tmp_path / "objects.csv"
    _write_csv(table, 10)
    page = add_objects_to_report(report, table).read_text()
    assert page.count("<td class=\"l\">plot") == 4 and "first 4 of 10 regions" in page
