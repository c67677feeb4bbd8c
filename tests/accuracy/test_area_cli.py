"""``geoseg sample`` -> reference -> ``geoseg estimate``, end to end on generated land-cover scenes: the
95 % intervals of the estimated areas contain the reference's true class areas (a bincount of the
reference raster, computed here independently)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from geoseg.cli import main
from geoseg.samples.synthetic import make_scene
from tests.fixtures import write_store


def _true_areas_ha(reference: Path, valid: np.ndarray | None = None) -> pd.Series:
    with rasterio.open(reference) as ds:
        ref, nodata, px_ha = ds.read(1), ds.nodata, abs(ds.res[0] * ds.res[1]) / 1e4
    keep = ref != nodata if valid is None else valid & (ref != nodata)
    counts = np.bincount(ref[keep].ravel())
    return pd.Series(counts * px_ha, index=np.arange(len(counts)))[counts > 0]


def _check_intervals(table: pd.DataFrame, truth: pd.Series) -> None:
    per_class = table[table["class_id"].notna()].set_index("class_id")
    assert sorted(per_class.index.astype(int)) == sorted(truth.index.astype(int))
    for cid, true_ha in truth.items():
        row = per_class.loc[cid]
        assert row["ci95_low_ha"] <= true_ha <= row["ci95_high_ha"], (cid, true_ha, row.to_dict())
    assert per_class["estimated_area_ha"].sum() == pytest.approx(truth.sum(), abs=0.01 * len(truth))  # CSV: 0.01 ha


def test_sample_reference_estimate_on_a_generated_scene(tmp_path, capsys) -> None:
    """The map: the scene's reference with a tenth of its 8-px blocks given another class (a classifier's
    errors); strata = map classes as stored; the reference raster labels the points."""
    files = make_scene("landcover", tmp_path / "data", width=400, height=400, seed=3)
    with rasterio.open(files.reference) as ds:
        ref, nodata, transform, crs = ds.read(1), ds.nodata, ds.transform, ds.crs
    rng = np.random.default_rng(0)
    blocks = rng.random((50, 50)) < 0.1
    noise = np.kron(blocks * rng.integers(1, 6, (50, 50)), np.ones((8, 8), int))
    labels = np.where(ref == nodata, 255, (ref - 1 + noise) % 6 + 1).astype(np.uint8)
    store = write_store(tmp_path / "labels.zarr", labels, 128, transform=transform, crs=crs)
    sample = tmp_path / "sample" / "sample.gpkg"
    assert main(["sample", str(store), "--out", str(sample), "--target-se", "0.015", "--min-per-stratum", "60",
                 "--reference", str(files.reference), "--seed", "1"]) == 0
    assert "points labelled from" in capsys.readouterr().out
    assert main(["estimate", str(sample), "--out", str(tmp_path / "areas")]) == 0
    out = capsys.readouterr().out
    assert "overall accuracy" in out and "forest" in out
    table = pd.read_csv(tmp_path / "areas" / "area_estimates.csv")
    _check_intervals(table, _true_areas_ha(files.reference, labels != 255))
    html = (tmp_path / "areas" / "area_report.html").read_text()
    assert "95 % confidence interval" in html and "cropland" in html
    assert "<th>1 cropland</th>" in html  # the matrices' rows and columns carry the legends' names
    confusion = pd.read_csv(tmp_path / "areas" / "area_confusion.csv", index_col=0)
    points = pd.read_csv(tmp_path / "sample" / "sample.csv")
    assert confusion.to_numpy().sum() == len(points)
    assert int(confusion.loc[2, "2"]) == int(((points["map_class"] == 2) & (points["reference"] == 2)).sum())
    # the map's own pixel counts are the mapped areas
    mapped = table.dropna(subset=["class_id"]).set_index("class_id")["mapped_px"]
    assert mapped.to_dict() == {k: int((labels == k).sum()) for k in mapped.index}



def test_a_run_class_mapping_maps_a_sample_of_either_store_once(tmp_path, capsys) -> None:
    """A mapped run publishes labels.zarr in class ids and keeps the clusters in method_labels; its
    class_mapping.csv (label_id -> class_id) must map a sample of the clusters, and leave a sample of the
    published class ids as they are (read by raster_value), not map them a second time. Oracle: the
    census overall accuracy of the published raster against the reference (numpy), which the estimate's
    95 % interval contains, and the same points give the same figures from either store."""
    from geoseg.accuracy.evaluate import evaluate
    from geoseg.accuracy.report import write_outputs
    from geoseg.legend import ClassInfo
    from geoseg.run.workflow import apply_evaluation_legend

    files = make_scene("landcover", tmp_path / "data", width=240, height=240, seed=4)
    with rasterio.open(files.reference) as ds:
        ref, nodata, transform, crs = ds.read(1), ds.nodata, ds.transform, ds.crs
    rng = np.random.default_rng(1)
    noise = np.kron(rng.random((30, 30)) < 0.15, np.ones((8, 8), bool)) * rng.integers(1, 6, (240, 240))
    clusters = np.where(ref == nodata, 255, (ref + 2 + noise) % 6).astype(np.uint8)  # cluster c = class c-2 mod 6
    legend = [ClassInfo(i, f"cluster_{i}", "#808080") for i in range(6)]
    store = write_store(tmp_path / "out" / "labels.zarr", clusters, 64, legend=legend, transform=transform, crs=crs)
    evaluation = evaluate(store, files.reference, mapping="hungarian", show_progress=False)
    write_outputs(evaluation, tmp_path / "out")
    apply_evaluation_legend(store, evaluation)
    table = pd.read_csv(tmp_path / "out" / "class_mapping.csv")
    assert (table["label_id"] != table["raster_value"]).all()  # the test means something: ids differ
    with rasterio.open(store) as ds:
        published = ds.read(1)
    valid = (published != 255) & (ref != nodata)
    census = float((published[valid] == ref[valid]).mean())
    figures = []
    for name, raster in (("classes", store), ("clusters", store / "method_labels")):
        sample = tmp_path / name / "sample.gpkg"
        assert main(["sample", str(raster), "--out", str(sample), "--n", "400", "--seed", "2", "-q",
                     "--reference", str(files.reference)]) == 0
        assert main(["estimate", str(sample), "--out", str(tmp_path / name),
                     "--mapping", str(tmp_path / "out" / "class_mapping.csv")]) == 0
        assert ("raster_value" if name == "classes" else "label_id") in capsys.readouterr().out
        est = pd.read_csv(tmp_path / name / "area_estimates.csv")
        overall = pd.read_csv(tmp_path / name / "area_summary.csv").iloc[0]
        low, high = (overall["overall_accuracy"] + s * overall["overall_accuracy_ci95"] for s in (-1, 1))
        assert low <= census <= high, (name, census, overall.to_dict())
        per_class = est.dropna(subset=["class_id"]).set_index("class_id")
        assert per_class["mapped_px"].to_dict() == {k: int((published == k).sum()) for k in per_class.index}
        figures.append(est)
    pd.testing.assert_frame_equal(figures[0].drop(columns="class_name"), figures[1].drop(columns="class_name"))
    # without a mapping the clusters' ids would be scored as the reference classes of those ids: refused
    assert main(["estimate", str(tmp_path / "clusters" / "sample.gpkg"), "--out", str(tmp_path / "u")]) == 2
    assert "are k-means clusters (cluster_0, cluster_1" in capsys.readouterr().err
    assert not (tmp_path / "u" / "area_estimates.csv").exists()
    # a sample of labels this mapping never described is refused, not mapped by coincidence of ids
    other = write_store(tmp_path / "other.zarr", np.full((64, 64), 7, np.uint8), 64,
                        legend=[ClassInfo(7, "water", "#0000ff")])
    assert main(["sample", str(other), "--out", str(tmp_path / "o.gpkg"), "--n", "5", "-q"]) == 0
    csv = pd.read_csv(tmp_path / "o.csv")
    csv["reference"] = 3
    csv.to_csv(tmp_path / "o.csv", index=False)
    capsys.readouterr()
    assert main(["estimate", str(tmp_path / "o.csv"), "--out", str(tmp_path / "oa"),
                 "--mapping", str(tmp_path / "out" / "class_mapping.csv")]) == 2
    assert "neither the label ids nor the raster values" in capsys.readouterr().err

def test_the_area_section_joins_an_evaluation_report(tmp_path, capsys) -> None:
    labels = np.kron(np.arange(1, 5).reshape(2, 2), np.ones((40, 40), int)).astype(np.uint8)
    store = write_store(tmp_path / "labels.zarr", labels, 32)
    sample = tmp_path / "s.gpkg"
    assert main(["sample", str(store), "--out", str(sample), "--n", "20", "--min-per-stratum", "5", "-q"]) == 0
    csv = pd.read_csv(tmp_path / "s.csv")
    csv["reference"] = csv["map_class"]
    csv.to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.html").write_text("<html><body><h1>Per-class IoU</h1></body></html>")
    for _ in range(2):
        assert main(["estimate", str(tmp_path / "s.csv"), "--out", str(tmp_path / "eval")]) == 0
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.count("Area estimates (stratified sample)") == 1 and page.index("Per-class IoU") < page.index("Area est")
    assert "no sample point disagrees" in capsys.readouterr().out  # a perfect sample: zero-width intervals


def test_estimate_names_the_rows_without_reference(tmp_path, capsys) -> None:
    labels = np.kron(np.arange(1, 5).reshape(2, 2), np.ones((40, 40), int)).astype(np.uint8)
    store = write_store(tmp_path / "labels.zarr", labels, 32)
    sample = tmp_path / "s.gpkg"
    assert main(["sample", str(store), "--out", str(sample), "--n", "20", "--min-per-stratum", "5", "-q"]) == 0
    capsys.readouterr()
    assert main(["estimate", str(sample), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geoseg: error: the 'reference' column is empty for point_id 1, 2, 3") and "Traceback" not in err
    # a spreadsheet's CSV: one cell left empty, one holding a name
    csv = pd.read_csv(tmp_path / "s.csv")
    csv["reference"] = csv["map_class"].astype(object)
    csv.loc[csv["point_id"] == 4, "reference"] = ""
    csv.loc[csv["point_id"] == 9, "reference"] = "forest"
    csv.to_csv(tmp_path / "s.csv", index=False)
    assert main(["estimate", str(tmp_path / "s.csv"), "--out", str(tmp_path / "a")]) == 2
    assert "empty for point_id 4;" in capsys.readouterr().err
    csv.loc[csv["point_id"] == 4, "reference"] = 2
    csv.to_csv(tmp_path / "s.csv", index=False)
    assert main(["estimate", str(tmp_path / "s.csv"), "--out", str(tmp_path / "a")]) == 2
    assert "not a whole-number class id for point_id 9 (e.g. 'forest')" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: one way of sizing the sample
        main(["sample", str(store), "--out", str(tmp_path / "x.gpkg"), "--n", "5", "--target-se", "0.1"])
    assert exc.value.code == 2
    assert main(["sample", str(store), "--out", str(tmp_path / "x.gpkg"), "--target-se", "0.7"]) == 2
    assert "target standard error must lie between 0 and 0.5" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_sample_reference_estimate(tmp_path, capsys) -> None:
    """``geoseg demo`` (k-means clusters mapped to classes by its evaluation) -> sample its labels.zarr ->
    reference from the demo's reference raster -> estimate with the run's class_mapping.csv.

    At 256 px (65,536 px, 600 points) the 50 water points were all water and no other point was: the
    water area's standard error is 0 and its interval (the mapped area) missed the 7 % of water the
    map omitted (README, Limits). The demo's default 512 px is used here."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "512", "--workers", "1", "-q"]) == 0
    out = tmp_path / "demo" / "output"
    reference = tmp_path / "demo" / "data" / "landcover_reference.tif"
    sample = tmp_path / "sample.gpkg"
    assert main(["sample", str(out / "labels.zarr"), "--out", str(sample), "--n", "600",
                 "--reference", str(reference)]) == 0
    assert main(["estimate", str(sample), "--out", str(tmp_path / "areas"),
                 "--mapping", str(out / "class_mapping.csv")]) == 0
    with rasterio.open(out / "labels.zarr") as ds:
        valid = ds.read(1) != 255
    _check_intervals(pd.read_csv(tmp_path / "areas" / "area_estimates.csv"), _true_areas_ha(reference, valid))
    # estimated into the run's folder: the run's report.html gains the section (once, however often)
    for _ in range(2):
        assert main(["estimate", str(sample), "--out", str(out), "--mapping", str(out / "class_mapping.csv")]) == 0
    page = (out / "report.html").read_text()
    assert page.count("Area estimates (stratified sample)") == 1 and "Per-class IoU" in page


def test_a_disguised_vrt_sample_is_refused_and_fetches_nothing(tmp_path, capsys) -> None:
    """By the library (no CLI fence around it) and by the CLI: refused by content, never parsed by GDAL."""
    from geoseg.accuracy.sampledesign import read_sample
    from geoseg.errors import InputError
    from tests.fixtures import Listener

    with Listener() as server:
        sample = tmp_path / "sample.gpkg"  # an OGR VRT whose layer GDAL would read from the listener
        sample.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="points"><SrcDataSource>/vsicurl/'
                          f'{server.url("points.geojson")}</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>')
        with pytest.raises(InputError):
            read_sample(sample)
        code = main(["estimate", str(sample), "--out", str(tmp_path / "areas")])
        assert server.hits == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("geoseg: error:")
    assert not (tmp_path / "areas" / "area_estimates.csv").exists()
