"""``geoseg verify OUTPUT`` checks a whole run folder (issue 14, finding 4)."""

from __future__ import annotations

import json

import pytest

from geoseg.cli import main
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import blocky_scene

pytestmark = pytest.mark.integration


def test_verify_passes_a_finished_run_and_names_each_problem(tmp_path, dask_client, capsys):
    scene, _ = blocky_scene(tmp_path)
    out = tmp_path / "out"
    job = parse_job({
        "name": "v", "inputs": [str(scene)], "output": str(out), "chunk_size": 128,
        "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000},
        "vectorize": {"enabled": False}, "export": {"cog": True, "overviews": [2]},
    })
    run_job(job, client=dask_client, show_progress=False)
    assert main(["verify", str(out)]) == 0
    assert ": ok (2 stores" in capsys.readouterr().out  # labels.zarr and its overview level 2

    (out / "labels.zarr" / "labels" / "0.1").unlink()
    overview_chunk = out / "labels.zarr" / "overviews" / "2" / "labels" / "0.0"
    overview_chunk.write_bytes(overview_chunk.read_bytes()[:-3] + b"xyz")
    (out / "labels.tif").unlink()
    record = json.loads((out / "run.json").read_text())
    record["outcome"] = "running"
    (out / "run.json").write_text(json.dumps(record))

    assert main(["verify", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("geoseg: verify: ") for line in lines), lines
    text = "\n".join(lines)
    assert "outcome is 'running'" in text
    assert "output 'cog' listed in run.json is missing" in text
    assert "chunk labels/0.1 of label store" in text and "missing" in text
    assert any("overviews/2" in line and "labels/0.0" in line and "corrupt" in line for line in lines), lines


def test_verify_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run.json is missing" in err and "labels.zarr is missing" in err


def test_verify_accepts_a_moved_run_folder(tmp_path, dask_client, capsys):
    scene, _ = blocky_scene(tmp_path)
    job = parse_job({"name": "m", "inputs": [str(scene)], "output": str(tmp_path / "a"), "chunk_size": 128,
                     "method": {"kind": "kmeans", "n_clusters": 4, "sample_size": 5000},
                     "vectorize": {"enabled": False}})
    run_job(job, client=dask_client, show_progress=False)
    (tmp_path / "a").rename(tmp_path / "b")  # run.json still lists .../a/...
    assert main(["verify", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    (tmp_path / "b" / "model.json").unlink()
    assert main(["verify", str(tmp_path / "b")]) == 2
    assert "output 'model' listed in run.json is missing" in capsys.readouterr().err
