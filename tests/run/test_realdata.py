"""The k-means workflow on the real Sentinel-2 sample (Slovenia, 1 km²) with real parcels as regions.

Everything the run reports is recomputed here from the files it wrote, with independent tools
(xarray, rasterio, scikit-learn), so a wrong count, a shifted grid or a mislabelled region fails.
The data live in ``../shared/realdata/slovenia`` (next to the repository, or ``GEOSEG_REALDATA``);
without them the module is skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.fixtures import REALDATA

if not (REALDATA / "s2_l1c_reference_scene_0.tif").exists():
    pytest.skip(f"real data not present at {REALDATA}", allow_module_level=True)

import geopandas as gpd
import pyogrio
import rasterio
import shapely
import xarray as xr
from rasterio.features import rasterize
from sklearn.metrics import jaccard_score

from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job

pytestmark = pytest.mark.integration

SCENE = REALDATA / "s2_l1c_reference_scene_0.tif"
REFERENCE = REALDATA / "lulc_reference.tif"
PARCELS = REALDATA / "raba_parcels.gpkg"
NODATA_LABEL = 255


@pytest.fixture(scope="module")
def run(tmp_path_factory, dask_client):
    """One k-means run on one real date: 13 float bands, 100 x 101 px, chunks of 64 px (4 chunks)."""
    out = tmp_path_factory.mktemp("realdata") / "out"
    job = parse_job(
        {
            "name": "realdata-kmeans",
            "inputs": [str(SCENE)],
            "output": str(out),
            "chunk_size": 64,
            "method": {"kind": "kmeans", "n_clusters": 5, "sample_size": 5000, "seed": 0,
                       "features": {"indices": ["ndvi", "ndwi"]}},
            "reference": {"path": str(REFERENCE)},
            # no field: one region per parcel, keyed by feature id (RABA_ID has only 7 values)
            "regions": {"path": str(PARCELS)},
            "evaluate": {"mapping": "hungarian"},
        }
    )  # fmt: skip
    result = run_job(job, client=dask_client, show_progress=False)
    with rasterio.open(SCENE) as src:
        profile = {"crs": src.crs, "transform": src.transform, "shape": (src.height, src.width)}
    with rasterio.open(REFERENCE) as src:
        ref = src.read(1).astype(np.int64)
        ref_nodata = int(src.nodata)
    # the run publishes class ids in labels.zarr and keeps the clusters in labels.zarr/method_labels
    clusters = xr.open_zarr(str(out / "labels.zarr" / "method_labels"), mask_and_scale=False)
    labels = np.asarray(clusters["labels"].values).astype(np.int64)
    published = np.asarray(xr.open_zarr(str(out / "labels.zarr"), mask_and_scale=False)["labels"].values)
    parcels = gpd.read_file(PARCELS, fid_as_index=True).sort_index()
    # pixel-centre rule, later features win where parcels overlap (as geoseg does)
    owner = rasterize(list(zip(parcels.geometry, parcels.index)), out_shape=profile["shape"],
                      transform=profile["transform"], fill=0, dtype="int32")  # fmt: skip
    mapping = pd.read_csv(out / "class_mapping.csv")
    lut = np.full(256, -1, np.int64)  # -1: unassigned cluster
    for row in mapping.dropna(subset=["class_id"]).itertuples():
        lut[int(row.label_id)] = int(row.class_id)
    metrics = pd.read_csv(out / "metrics.csv", dtype={"region_id": str})
    return dict(out=out, result=result, profile=profile, ref=ref, ref_nodata=ref_nodata, labels=labels,
                published=published, parcels=parcels, owner=owner, mapping=mapping, lut=lut, metrics=metrics)


def test_run_completes_on_the_real_grid(run) -> None:
    labels, ref = run["labels"], run["ref"]
    assert labels.shape == run["profile"]["shape"] == ref.shape == (101, 100)
    assert set(np.unique(labels).tolist()) <= set(range(5)) | {NODATA_LABEL}
    assert len(np.unique(labels[labels != NODATA_LABEL])) == 5  # real imagery, 5 clusters all used
    csv_mapping = {str(int(r.label_id)): int(r.class_id) for r in run["mapping"].itertuples()}
    assert run["result"].extra["mapping"] == csv_mapping  # class_mapping.csv = Evaluation.mapping
    # the published raster is each cluster's value as class_mapping.csv states it (its class id)
    raster_value = np.arange(256)
    for r in run["mapping"].itertuples():
        raster_value[int(r.label_id)] = int(r.raster_value)
    assert np.array_equal(run["published"], raster_value[labels])
    assert {int(r.raster_value) for r in run["mapping"].itertuples()} == {int(r.class_id) for r in run["mapping"].itertuples()}


def test_metrics_have_one_row_set_per_overlapping_parcel(run) -> None:
    m, owner, parcels = run["metrics"], run["owner"], run["parcels"]
    classes = sorted(m.loc[m["kind"] == "class", "class_id"].dropna().astype(int).unique())
    assert {1, 2, 3, 4, 8} <= set(classes)
    per_region = m.groupby("region_id")["kind"].value_counts().unstack(fill_value=0)
    assert (per_region["region"] == 1).all()
    assert (per_region["class"] == len(classes)).all()

    fids, px = np.unique(owner[owner > 0], return_counts=True)
    overlapping = dict(zip(fids.tolist(), px.tolist()))
    assert len(overlapping) >= 40  # most of the 88 parcels reach into the 1 km² scene
    region_rows = m[m["kind"] == "region"].set_index("region_id")
    assert {str(f) for f in overlapping} <= set(region_rows.index)
    assert set(region_rows.index) <= {"ALL"} | {str(f) for f in parcels.index}
    for fid in parcels.index:
        row = region_rows.loc[str(fid)] if str(fid) in region_rows.index else None
        n = 0 if row is None else int(row["valid_px"]) + int(row["excluded_px"])
        want = overlapping.get(fid, 0)
        assert n == want, f"parcel {fid}: {n} px in metrics.csv, {want} rasterised"
    scene = region_rows.loc["ALL"]
    assert int(scene["valid_px"]) + int(scene["excluded_px"]) == owner.size
    assert int(scene["nodata_reference_px"]) == int((run["ref"] == run["ref_nodata"]).sum()) > 0


def test_per_parcel_counts_equal_a_direct_recount(run) -> None:
    """tp / fp / fn per parcel and class from labels.zarr + reference + rasterised parcels."""
    m, owner, ref, labels = run["metrics"], run["owner"], run["ref"], run["labels"]
    pred = run["lut"][labels]
    valid = (labels != NODATA_LABEL) & (ref != run["ref_nodata"])
    cls = m[m["kind"] == "class"]
    fids, px = np.unique(owner[owner > 0], return_counts=True)
    # the five largest parcels and five small ones: every class occurs in some of them
    order = np.argsort(px)
    chosen = sorted(set(fids[order[-5:]].tolist()) | set(fids[order[:5]].tolist()))
    checked = 0
    for fid in chosen:
        rows = cls[cls["region_id"] == str(fid)].set_index("class_id")
        inside = (owner == fid) & valid
        for c, r in rows.iterrows():
            c = int(c)
            tp = int((inside & (ref == c) & (pred == c)).sum())
            fp = int((inside & (ref != c) & (pred == c)).sum())
            fn = int((inside & (ref == c) & (pred != c)).sum())
            assert (int(r["tp"]), int(r["fp"]), int(r["fn"])) == (tp, fp, fn), f"parcel {fid}, class {c}"
            checked += tp + fp + fn > 0
    assert checked >= 10


def test_scene_iou_equals_sklearn_jaccard(run) -> None:
    m, ref, labels = run["metrics"], run["ref"], run["labels"]
    valid = (labels != NODATA_LABEL) & (ref != run["ref_nodata"])
    y_true, y_pred = ref[valid], run["lut"][labels][valid]
    scene = m[(m["region_id"] == "ALL") & (m["kind"] == "class")].set_index("class_id")
    present = sorted((set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist())) - {-1})
    expected = jaccard_score(y_true, y_pred, labels=present, average=None)
    got = scene.loc[present, "iou"].to_numpy(float)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    assert scene.drop(index=present)["iou"].isna().all()  # classes absent from both: NaN, not 0
    top = m[(m["region_id"] == "ALL") & (m["kind"] == "region")].iloc[0]
    assert top["miou"] == pytest.approx(float(np.mean(expected)), rel=1e-12)
    assert top["overall_accuracy"] == pytest.approx(float(np.mean(y_true == y_pred)), rel=1e-12)


def test_gdal_opens_labels_with_the_input_grid(run) -> None:
    with rasterio.open(run["out"] / "labels.zarr") as ds:
        assert ds.crs == run["profile"]["crs"]
        assert ds.crs.to_epsg() == 32633
        assert ds.transform.almost_equals(run["profile"]["transform"], precision=1e-9)
        assert (ds.height, ds.width) == run["profile"]["shape"]
        assert ds.nodata == NODATA_LABEL
        np.testing.assert_array_equal(ds.read(1), run["published"])


def test_polygons_are_valid_in_the_input_crs_and_cover_the_labels(run) -> None:
    path = run["out"] / "polygons.gpkg"
    info = pyogrio.read_info(path, layer="polygons")
    assert info["crs"] == "EPSG:32633"
    gdf = gpd.read_file(path, layer="polygons")
    assert gdf.crs.to_epsg() == 32633 and len(gdf) > 0
    assert shapely.is_valid(gdf.geometry.values).all()
    labels = run["published"].astype(np.int64)  # polygons carry the published class ids
    t = run["profile"]["transform"]
    px_area = abs(t.a * t.e)  # real pixels are not square: 9.9948 m x 9.9974 m
    ids, counts = np.unique(labels[labels != NODATA_LABEL], return_counts=True)
    area = gdf.groupby("class_id")["area_m2"].sum()
    assert sorted(area.index.tolist()) == ids.tolist()
    np.testing.assert_allclose(area.loc[ids].to_numpy(), counts * px_area, rtol=1e-9)
    np.testing.assert_allclose(gdf.geometry.area.to_numpy(), gdf["area_m2"].to_numpy(), rtol=1e-9)
