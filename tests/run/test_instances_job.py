"""A job with ``instances:``: panoptic.zarr, instances.csv, the ``instances`` layer of polygons.gpkg and the
instance scores, on a real 2-process cluster; the same instances at two chunk sizes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geoseg.errors import GeosegError
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from geoseg.samples.crowns import TREE, make_crowns

pytestmark = pytest.mark.integration


def _job(files, out, chunk: int, **extra) -> dict:
    """ExG + Otsu on the crown scene (1 ground, 2 tree), then watershed instances of "tree"."""
    return {"name": "crowns", "inputs": [str(files.image)], "output": str(out), "chunk_size": chunk,
            "method": {"kind": "threshold", "index": "exg", "threshold": "otsu",
                       "classes": [{"id": 1, "name": "ground"}, {"id": 2, "name": "tree"}]},
            "instances": {"method": {"kind": "watershed", "min_distance": 7}, "things": ["tree"]},
            "vectorize": {"enabled": False}, **extra}


@pytest.fixture(scope="module")
def crowns(tmp_path_factory):
    return make_crowns(tmp_path_factory.mktemp("crowns"), width=768, height=512, seed=3)


def _panoptic(out):
    with rasterio.open(f'ZARR:"{out / "panoptic.zarr"}":/semantic') as ds:
        sem, crs, transform = ds.read(1), ds.crs, ds.transform
    with rasterio.open(f'ZARR:"{out / "panoptic.zarr"}":/instances') as ds:
        inst = ds.read(1)
        assert ds.crs == crs and ds.transform == transform and ds.dtypes[0] == "uint32"
    return sem, inst, crs, transform


def _polygons(out) -> list[tuple[int, int, bytes]]:
    df = pyogrio.read_dataframe(out / "polygons.gpkg", layer="instances")
    wkb = shapely.to_wkb(shapely.normalize(df.geometry.values), output_dimension=2)
    return sorted(zip(df["instance_id"].tolist(), df["class_id"].tolist(), wkb))


def test_panoptic_outputs_agree_and_do_not_depend_on_chunk_size(crowns, tmp_path, dask_client):
    results = {}
    for chunk in (256, 512):
        out = tmp_path / f"c{chunk}"
        results[chunk] = run_job(parse_job(_job(crowns, out, chunk, vectorize={"enabled": chunk == 512})),
                                 client=dask_client, show_progress=False)
    a, b = tmp_path / "c256", tmp_path / "c512"
    sem, inst, crs, transform = _panoptic(a)
    with rasterio.open(a / "labels.zarr") as ds:  # the semantic raster is the published labels, on their grid
        assert ds.crs == crs and ds.transform == transform
        np.testing.assert_array_equal(ds.read(1), sem)
    # every instance pixel's class is its instance's class; every tree pixel is in an instance (watershed)
    table = list(csv.DictReader((a / "instances.csv").read_text().splitlines()))
    cls_of = np.zeros(int(inst.max()) + 1, np.int64)
    for row in table:
        cls_of[int(row["instance_id"])] = int(row["class_id"])
    assert np.all(sem[inst > 0] == cls_of[inst[inst > 0]])
    assert np.array_equal(inst > 0, sem == TREE)
    counts = np.bincount(inst.ravel())
    assert [int(r["area_px"]) for r in table] == counts[[int(r["instance_id"]) for r in table]].tolist()
    assert {r["class_name"] for r in table} == {"tree"} and len(table) > 300
    # the same instances, ids, table and polygons at both chunk sizes
    sem_b, inst_b, _, _ = _panoptic(b)
    assert inst.tobytes() == inst_b.tobytes() and sem.tobytes() == sem_b.tobytes()
    assert (a / "instances.csv").read_bytes() == (b / "instances.csv").read_bytes()
    assert _polygons(a) == _polygons(b)
    assert len(_polygons(a)) == len(table)
    layers = [name for name, _ in pyogrio.list_layers(b / "polygons.gpkg")]
    assert "polygons" in layers and "instances" in layers  # the job's GeoPackage holds both
    info = pyogrio.read_info(b / "polygons.gpkg", layer="instances")
    assert list(info["fields"]) == ["instance_id", "class_id", "class_name", "score", "area_m2"]
    record = json.loads((a / "run.json").read_text())
    assert "instances" in record["stage_seconds"] and record["instances"] == len(table)
    assert not (a / ".instances-work").exists()
    assert results[256].outputs["panoptic"] == a / "panoptic.zarr"


def test_xarray_opens_the_panoptic_group(crowns, tmp_path, dask_client):
    import xarray as xr

    from geoseg.io.panopticstore import open_panoptic

    out = tmp_path / "x"
    run_job(parse_job(_job(crowns, out, 256)), client=dask_client, show_progress=False)
    sem, inst, crs, transform = _panoptic(out)
    ds = open_panoptic(out / "panoptic.zarr")
    with rasterio.open(crowns.image) as src:  # the exact affine (GDAL before 3.13 derives it from coordinates)
        assert ds.rio.crs == crs and ds.rio.transform() == src.transform and transform.almost_equals(src.transform)
    np.testing.assert_array_equal(ds["instances"].values, inst)
    plain = xr.open_zarr(out / "panoptic.zarr", mask_and_scale=False)
    assert set(plain.data_vars) == {"semantic", "instances"} and plain["instances"].dtype == np.uint32


def _dense_ids(ids: np.ndarray, keep: set[int]) -> np.ndarray:
    """``ids`` with only ``keep`` left, renumbered 1..n in id order (0 = none)."""
    lut = np.zeros(int(ids.max()) + 1, np.int64)
    for k, i in enumerate(sorted(keep), start=1):
        lut[i] = k
    return lut[ids]


def _first_cells(ids: np.ndarray, cell: int) -> dict[int, tuple[int, int]]:
    """The (row, col) of the grid cell holding each id's first pixel (row-major)."""
    flat = ids.ravel()
    found, at = np.unique(flat, return_index=True)
    return {int(i): (int(a) // ids.shape[1] // cell, int(a) % ids.shape[1] // cell) for i, a in zip(found, at) if i}


def test_instance_scores_per_region_in_the_report(crowns, tmp_path, dask_client):
    """Against the crowns (one instance per feature): the scene's AP equals pycocotools', each grid-cell
    region's PQ/SQ/RQ a brute force over the instances whose first pixel lies in it; the report shows them."""
    from tests.fixtures import brute_force_pq, coco_ap

    out = tmp_path / "ev"
    job = _job(crowns, out, 256, reference={"path": str(crowns.reference)},
               reference_instances={"path": str(crowns.crowns), "field": "class_id"},
               regions={"grid_cell_m": 25.6})
    run_job(parse_job(job), client=dask_client, show_progress=False)
    rows = list(csv.DictReader((out / "instance_metrics.csv").read_text().splitlines()))
    scene = [r for r in rows if r["region"] == "ALL"]
    assert len(scene) == 1 and scene[0]["class_name"] == "tree"
    _, inst, _, _ = _panoptic(out)
    with rasterio.open(crowns.instances) as ds:
        truth = ds.read(1)
    pred_ids, ref_ids = set(np.unique(inst[inst > 0]).tolist()), set(np.unique(truth[truth > 0]).tolist())
    pred, ref = _dense_ids(inst, pred_ids), _dense_ids(truth, ref_ids)
    got = scene[0]
    assert (int(got["n_pred"]), int(got["n_ref"])) == (len(pred_ids), len(ref_ids))
    pytest.importorskip("pycocotools")
    score = np.ones(len(pred_ids))
    ap50, ap = coco_ap(pred, ref, np.full(len(pred_ids), TREE), np.full(len(ref_ids), TREE), score)[TREE]
    assert float(got["ap50"]) == pytest.approx(ap50, abs=1e-4) and float(got["ap"]) == pytest.approx(ap, abs=1e-4)
    assert float(got["recall"]) >= 0.9 and float(got["precision"]) >= 0.9
    # regions: 256 px cells (25.6 m at 0.1 m), 2 rows x 3 columns, listed row by row
    regions = [r for r in rows if r["region"] != "ALL"]
    assert len(regions) == 6
    assert sum(int(r["n_pred"]) for r in regions) == len(pred_ids)
    assert sum(int(r["n_ref"]) for r in regions) == len(ref_ids)
    pred_cell, ref_cell = _first_cells(inst, 256), _first_cells(truth, 256)
    for k, row in enumerate(regions[:2]):  # the brute force is quadratic: two regions suffice
        cell = divmod(k, 3)
        mine_p = {i for i, c in pred_cell.items() if c == cell}
        mine_r = {i for i, c in ref_cell.items() if c == cell}
        box_ = np.s_[cell[0] * 256: cell[0] * 256 + 304, max(cell[1] * 256 - 48, 0): cell[1] * 256 + 304]  # crowns < 48 px
        p, r = _dense_ids(inst, mine_p)[box_], _dense_ids(truth, mine_r)[box_]
        pq, sq, rq = brute_force_pq(p, r, np.full(len(mine_p), TREE), np.full(len(mine_r), TREE), TREE)
        assert (int(row["n_pred"]), int(row["n_ref"])) == (len(mine_p), len(mine_r))
        assert (float(row["pq"]), float(row["sq"]), float(row["rq"])) == (
            pytest.approx(pq, abs=1e-4), pytest.approx(sq, abs=1e-4), pytest.approx(rq, abs=1e-4))
    page = (out / "report.html").read_text()
    assert page.count("<!-- geoseg:instances -->") == 1 and "AP@[.5:.95]" in page
    assert f"<td>{float(got['pq']):.3f}</td>" in page.split("<!-- geoseg:instances -->")[1]


@pytest.mark.parametrize("change, message", [
    ({"instances": {"things": ["oak"]}}, "instances.things: no class is named 'oak'; the published legend can name ground, tree"),
    ({"reference_instances": {"field": "species"}}, "have no field 'species'; fields: crown_id, class_id"),
    ({"instances": {"method": {"kind": "watershed", "min_distance": 30, "halo": 20}}}, "halo 20 px is smaller"),
])
def test_what_cannot_work_is_refused_in_one_line_before_the_cluster_starts(crowns, tmp_path, change, message):
    job = _job(crowns, tmp_path / "bad", 256, reference_instances={"path": str(crowns.crowns), "field": "class_id"})
    for key, part in change.items():
        job[key] = {**job[key], **part}
    job["cluster"] = {"n_workers": 1}
    with pytest.raises(GeosegError, match=message) as info:
        run_job(parse_job(job), scheduler="tcp://127.0.0.1:9", show_progress=False)  # no scheduler is there
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad").exists()


def test_a_rerun_after_a_killed_instance_stage_gives_the_same_outputs(crowns, tmp_path, dask_client):
    """What a kill during the stage leaves (a half-built panoptic.zarr.partial, the method's work folder,
    no panoptic.zarr) is cleared by the rerun, which writes the same instances, table and polygons."""
    import shutil

    out = tmp_path / "k"
    job = parse_job(_job(crowns, out, 256, vectorize={"enabled": True}))
    run_job(job, client=dask_client, show_progress=False)
    _, inst, _, _ = _panoptic(out)
    table, polys = (out / "instances.csv").read_bytes(), _polygons(out)
    shutil.move(out / "panoptic.zarr", out / "panoptic.zarr.partial")  # as a kill before the rename leaves it
    chunk = next((out / "panoptic.zarr.partial" / "instances").glob("0.*"))
    chunk.write_bytes(b"half a chunk")
    (out / ".instances-work" / "instances.zarr.partial").mkdir(parents=True)
    (out / "instances.csv").unlink()
    run_job(job, client=dask_client, show_progress=False)
    _, again, _, _ = _panoptic(out)
    assert again.tobytes() == inst.tobytes() and (out / "instances.csv").read_bytes() == table
    assert _polygons(out) == polys
    assert not (out / "panoptic.zarr.partial").exists() and not (out / ".instances-work").exists()
    layers = [name for name, _ in pyogrio.list_layers(out / "polygons.gpkg")]
    assert sorted(layers) == ["instances", "layer_styles", "polygons"] or sorted(layers) == ["instances", "polygons"]


@pytest.mark.slow
def test_sigkill_during_the_instance_stage_then_rerun_gives_identical_outputs(tmp_path, dask_client):
    """The whole `geoseg run` process group killed while the instances stage runs: nothing looks finished
    (no panoptic.zarr, no instances.csv), and the rerun gives the outputs of an undisturbed run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    files = make_crowns(tmp_path / "scene", width=1024, height=1024, seed=5)
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    run_job(parse_job(_job(files, ref_out, 256)), client=dask_client, show_progress=False)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(_job(files, out, 256, cluster={"n_workers": 2, "memory_limit": "2GiB"})))
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-q", str(job_file)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while time.time() - t0 < 300 and proc.poll() is None:
            try:
                stage = json.loads((out / "run.json").read_text()).get("stage")
            except (OSError, ValueError):
                stage = None
            if stage == "instances" and (out / ".instances-work").exists():
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads((out / "run.json").read_text())["outcome"] == "running", "the job ended before the kill"
    assert not (out / "panoptic.zarr").exists() and not (out / "instances.csv").exists()
    rerun = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert _panoptic(out)[1].tobytes() == _panoptic(ref_out)[1].tobytes()
    assert (out / "instances.csv").read_bytes() == (ref_out / "instances.csv").read_bytes()
    assert _polygons(out) == _polygons(ref_out)


def test_a_registered_instance_method_runs_through_the_job_and_is_clipped_to_its_class(crowns, tmp_path, dask_client):
    """A toy method registered from here (squares of a fixed grid, odd ones "tree", even ones "ground", scored
    by position) is validated strictly in the job file and runs through run_job; panoptic.zarr keeps only
    the tree squares' pixels that are tree in the labels, and the table follows."""
    from typing import Literal

    from geoseg.errors import GeosegError
    from geoseg.io.labelstore import LabelStoreWriter, read_label_info
    from geoseg.run import instanceregistry
    from geoseg.run.instancespec import InstanceContext, InstanceMethodSpec, InstanceOutput
    from geoseg.run.schema import StrictModel

    class SquaresConfig(StrictModel):
        kind: Literal["squares"] = "squares"
        side: int = 40

    def squares(ctx: InstanceContext) -> InstanceOutput:
        info = read_label_info(ctx.labels)
        h, w = info.grid.shape
        side = ctx.config.side
        rows, cols = np.indices((h, w))
        ids = ((rows // side) * -(-w // side) + cols // side + 1).astype(np.uint32)
        grid = info.chunk_grid
        store = ctx.work / "instances.zarr"
        writer = LabelStoreWriter.create(store, grid, (), dtype="uint32", fill_value=0, array="instances")
        for win in grid.windows():
            writer.write(win, ids[win.slices])
        writer.finalize()
        n = int(ids.max())
        classes = np.where(np.arange(1, n + 1) % 2 == 0, 1, ctx.things[0])  # even squares: "ground", not a thing
        return InstanceOutput(store, classes, np.linspace(1.0, 0.5, n), {"squares": n})

    instanceregistry.register(InstanceMethodSpec("squares", SquaresConfig, run=squares))
    try:
        job = _job(crowns, tmp_path / "sq", 256)
        job["instances"]["method"] = {"kind": "squares", "side": 40, "typo": 1}
        with pytest.raises(GeosegError, match="instances.method.squares.typo: unknown key"):
            parse_job(job)
        job["instances"]["method"] = {"kind": "squares", "side": 40}
        result = run_job(parse_job(job), client=dask_client, show_progress=False)
    finally:
        instanceregistry.unregister("squares")
    out = tmp_path / "sq"
    sem, inst, _, _ = _panoptic(out)
    rows, cols = np.indices(sem.shape)
    squares_ = (rows // 40) * -(-sem.shape[1] // 40) + cols // 40 + 1
    # cleared off the tree pixels; the squares of a class that is not a thing dropped whole
    np.testing.assert_array_equal(inst, np.where((sem == TREE) & (squares_ % 2 == 1), squares_, 0))
    table = list(csv.DictReader((out / "instances.csv").read_text().splitlines()))
    assert [int(r["instance_id"]) for r in table] == sorted(set(np.unique(inst[inst > 0]).tolist()))
    n = int(squares_.max())
    scores = np.linspace(1.0, 0.5, n)
    assert all(float(r["score"]) == pytest.approx(scores[int(r["instance_id"]) - 1], rel=1e-5) for r in table)
    record = json.loads((out / "run.json").read_text())
    assert record["instance_pixels_cleared"] == int(((sem != TREE) | (squares_ % 2 == 0)).sum())
    assert record["squares"] == n
    assert result.extra["instances"] == len(table)
    with pytest.raises(GeosegError, match="instances.method: Input tag 'squares' .* expected tags: 'watershed'"):
        parse_job(job)  # unregistered: no longer a kind a job may name
