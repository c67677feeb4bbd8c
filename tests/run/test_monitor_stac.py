"""`geoseg monitor` dates a STAC input by its item datetime, not by its file name."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pystac
import pytest

from geoseg.run.jobspec import parse_job
from geoseg.run.monitor import discover_scenes, run_monitor
from geoseg.samples.products import make_band_files
from geoseg.samples.synthetic import make_scene
from tests.fixtures import validate_stac_offline

ASSETS = ["blue", "green", "red", "nir08"]
JUNE = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)
# 23:30 at UTC+2 is still 15 July in UTC: the period is the UTC date
JULY = dt.datetime(2026, 7, 16, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    root = tmp_path_factory.mktemp("monstac")
    files = make_scene("landcover", root / "scene", width=160, height=128, block=128)
    june = make_band_files(files.image, root / "p1", when=JUNE)
    july = make_band_files(files.image, root / "p2", when=JULY)
    return root, files, june, july


def _job(root, inputs):
    return parse_job({"name": "mon", "inputs": inputs, "output": str(root / "out"), "chunk_size": 128,
                      "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 2000},
                      "vectorize": {"enabled": False}})


def test_periods_come_from_item_datetime_with_file_name_fallback(products, tmp_path):
    root, files, june, july = products
    # every document is called item.json: only the item datetime can tell the periods apart
    assert june.item.name == july.item.name == "item.json"
    # a third item with only a start_datetime (datetime null), read the same way
    ranged = tmp_path / "p3" / "item.json"
    ranged.parent.mkdir()
    doc = json.loads(june.item.read_text())
    doc["properties"].update(datetime=None, start_datetime="2026-08-03T09:00:00Z", end_datetime="2026-08-03T09:10:00Z")
    ranged.write_text(json.dumps(doc))
    # a plain file keeps today's rule: the date in its name
    plain = tmp_path / "S2_2026-05-20.tif"
    shutil.copy(files.image, plain)
    job = _job(root, [{"stac": str(root / "p*" / "item.json"), "assets": ASSETS}, {"stac": str(ranged)}, str(plain)])
    got = discover_scenes(job)
    expected = {str(june.item): pystac.Item.from_file(str(june.item)).datetime.date().isoformat(),
                str(july.item): JULY.astimezone(dt.UTC).date().isoformat(), str(ranged): "2026-08-03",
                str(plain): "2026-05-20"}
    assert [(p, path) for p, path, _ in got] == sorted((v, k) for k, v in expected.items())
    assert expected[str(july.item)] == "2026-07-15"
    entries = {path: entry for _, path, entry in got}
    assert entries[str(june.item)].stac == str(june.item) and entries[str(june.item)].assets == ASSETS
    assert entries[str(plain)] == str(plain)


@pytest.mark.integration
def test_monitor_runs_stac_items_period_by_period(products, dask_client):
    root, _, june, july = products
    job = _job(root, [{"stac": str(root / "p*" / "item.json"), "assets": ASSETS}])
    summary = run_monitor(job, client=dask_client)
    assert summary.exit_code == 0, summary.failed
    assert [p["period"] for p in summary.processed] == ["2026-06-01", "2026-07-15"]
    assert [c["to"] for c in summary.changes] == ["2026-07-15"]
    assert (root / "out" / "2026-07-15" / "labels.zarr").is_dir()
    collection = json.loads((root / "out" / "collection.json").read_text())
    validate_stac_offline(collection)
    items = [link["href"] for link in collection["links"] if link["rel"] == "item"]
    assert items == ["./2026-06-01/item.json", "./2026-07-15/item.json"]
    for href, day in zip(items, ["2026-06-01", "2026-07-15"]):
        item = json.loads((root / "out" / href).read_text())
        validate_stac_offline(item)
        assert item["id"] == f"mon-{day}" and item["properties"]["datetime"] == f"{day}T00:00:00Z"
    assert collection["extent"]["temporal"]["interval"] == [["2026-06-01T00:00:00Z", "2026-07-15T00:00:00Z"]]
    again = run_monitor(job, client=dask_client)
    assert again.processed == [] and again.skipped == [str(june.item), str(july.item)]
