"""Job-file keys for inputs as delivered: mapping entries, masks:, grid: (validated, paths resolved)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoseg.errors import JobSpecError
from geoseg.io.entries import InputEntry
from geoseg.run.jobspec import load_job, parse_job


def test_relative_paths_of_new_keys_are_taken_from_the_job_folder(tmp_path):
    job = {"name": "j", "output": "out",
           "inputs": ["a.tif", {"path": ["t/*.tif", "u.tif"], "kind": "mosaic", "resampling": "nearest"},
                      {"stac": "item.json", "assets": ["red"]}],
           "masks": [{"path": "scl.tif", "drop_values": [8, 9]}, {"stac": "item.json", "asset": "SCL", "drop_bits": [3]}],
           "grid": {"like": "ref.tif"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    spec = load_job(tmp_path / "job.yaml")
    base = tmp_path.resolve()
    assert spec.inputs[0] == str(base / "a.tif")
    assert isinstance(spec.inputs[1], InputEntry) and spec.inputs[1].path == [str(base / "t/*.tif"), str(base / "u.tif")]
    assert spec.inputs[2].stac == str(base / "item.json")
    assert spec.masks[0].path == str(base / "scl.tif") and spec.masks[1].stac == str(base / "item.json")
    assert Path(spec.grid.like) == base / "ref.tif"


@pytest.mark.parametrize(
    "over, message",
    [({"inputs": [{"path": "a.tif", "stac": "i.json"}]}, "exactly one of path or stac"),
     ({"inputs": [{"path": "a.tif", "kind": "tiles"}]}, "inputs.0"),
     ({"masks": [{"path": "q.tif"}]}, "drops something"),
     ({"masks": [{"stac": "i.json", "drop_values": [1]}]}, "names its asset"),
     ({"grid": {"like": "a.tif", "crs": "EPSG:4326"}}, "give it alone"),
     ({"grid": {"bounds": [0, 0, 1]}}, "grid.bounds")],
)
def test_bad_new_keys_name_the_problem(over, message):
    with pytest.raises(JobSpecError, match=message):
        parse_job({"name": "j", "output": "o", "inputs": ["a.tif"], **over})
