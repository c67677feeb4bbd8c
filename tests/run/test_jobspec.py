"""Job files: strict validation and path resolution."""

from __future__ import annotations

import pytest

from geoseg.errors import JobSpecError
from geoseg.run.jobspec import DeepLabConfig, KMeansConfig, load_job, parse_job

MINIMAL = {"name": "j", "inputs": ["a.tif"], "output": "out"}


def test_defaults_are_kmeans():
    job = parse_job(MINIMAL)
    assert isinstance(job.method, KMeansConfig)
    assert job.chunk_size == 2048 and job.cluster.n_workers == 2


def test_unknown_keys_are_named():
    with pytest.raises(JobSpecError, match=r"method\.kmeans\.n_clustrs: unknown key"):
        parse_job({**MINIMAL, "method": {"kind": "kmeans", "n_clustrs": 5}})


def test_wrong_types_are_named():
    with pytest.raises(JobSpecError, match="chunk_size"):
        parse_job({**MINIMAL, "chunk_size": "big"})


def test_method_is_chosen_by_kind():
    job = parse_job({**MINIMAL, "method": {"kind": "deeplab", "checkpoint": "m/ckpt"}})
    assert isinstance(job.method, DeepLabConfig)


def test_relative_paths_are_from_the_job_file(tmp_path):
    (tmp_path / "jobs").mkdir()
    f = tmp_path / "jobs" / "j.yaml"
    f.write_text("name: j\ninputs: [../data/*.tif]\noutput: ../out\nreference: {path: ref.tif}\n")
    job = load_job(f)
    assert job.inputs == [str(tmp_path / "jobs" / "../data/*.tif")]
    assert job.reference.path == tmp_path / "jobs" / "ref.tif"


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo hi']\ninputs: [a]\noutput: o\n")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job(f)
