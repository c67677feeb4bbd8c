"""Job files: strict validation and path resolution."""

from __future__ import annotations

import pytest

from geoseg.errors import JobKeyError, JobSpecError
from geoseg.run.jobspec import DeepLabConfig, KMeansConfig, load_job, parse_job

MINIMAL = {"name": "j", "inputs": ["a.tif"], "output": "out"}


def test_defaults_are_kmeans():
    job = parse_job(MINIMAL)
    assert isinstance(job.method, KMeansConfig)
    assert job.chunk_size == 2048 and job.cluster.n_workers == 2


def test_unknown_keys_are_named():
    with pytest.raises(JobKeyError, match=r"method\.kmeans\.n_clustrs: unknown key"):
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
    assert job.output == (tmp_path / "out").resolve()  # not jobs/../out: messages and run.json say where


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo hi']\ninputs: [a]\noutput: o\n")
    with pytest.raises(JobSpecError, match="not valid YAML"):
        load_job(f)


ALIAS_BOMB = """\
name: bomb
inputs: [a.tif]
output: out
classes:
  - &a [x, x, x, x, x, x, x, x, x, x]
  - &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  - &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  - &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
  - &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
  - &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_fast_with_bounded_memory(tmp_path):
    """Finding 2: 1 kB that expands to 10⁹ values was accepted and blew up when run.json was written."""
    import time
    import tracemalloc

    f = tmp_path / "bomb.yaml"
    f.write_text(ALIAS_BOMB)
    assert f.stat().st_size < 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(JobSpecError, match="expands to more than"):
        load_job(f)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 20 * 2**20


def test_recursive_and_deep_yaml_is_refused(tmp_path):
    f = tmp_path / "rec.yaml"
    f.write_text("name: r\ninputs: &x [a, *x]\noutput: o\n")
    with pytest.raises(JobSpecError, match="refers to itself|not valid YAML"):
        load_job(f)
    f.write_text("name: r\ninputs: [a]\noutput: o\nclasses: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(JobSpecError, match="nested"):
        load_job(f)


def test_an_oversized_job_file_is_refused(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("name: b\ninputs: [a]\noutput: o\n# " + "x" * (1 << 20) + "\n")
    with pytest.raises(JobSpecError, match="more than the 1,048,576 a job file may have"):
        load_job(f)


def test_plain_anchors_still_work(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("name: a\ninputs: &in [a.tif]\noutput: o\nmonitor: {date_pattern: '(\\\\d{8})'}\n"
                 "classes:\n  - &c {id: 1, name: water, color: '#0000ff'}\n  - {<<: *c, id: 2, name: lake}\n")
    job = load_job(f)
    assert [(c.id, c.name, c.color) for c in job.classes] == [(1, "water", "#0000ff"), (2, "lake", "#0000ff")]


@pytest.mark.parametrize("classes, message", [
    ([{"id": 255, "name": "x", "color": "#000000"}], r"classes\.0\.id"),
    ([{"id": "one", "name": "x", "color": "#000000"}], r"classes\.0\.id"),
    ([{"id": 1, "name": "x", "color": "blue"}], r"classes\.0\.color"),
    ([{"id": 1, "name": "x", "colour": "#000000"}], r"classes\.0\.colour: unknown key"),
    ([{"id": 1, "name": "x"}, {"id": 1, "name": "y"}], "unique"),
    ([[1, 2]], r"classes\.0"),
])
def test_classes_are_validated(classes, message):
    with pytest.raises(JobSpecError, match=message):
        parse_job({**MINIMAL, "classes": classes})


def test_the_job_classes_give_the_reference_names():
    from geoseg.run.workflow import reference_class_names

    job = parse_job({**MINIMAL, "classes": [{"id": 1, "name": "soil", "color": "#8c6d46"}, {"id": 3, "name": "weed"}]})
    assert reference_class_names(job) == {1: "soil", 3: "weed"}
    assert job.model_dump(mode="json")["classes"][1] == {"id": 3, "name": "weed", "color": None}
    # a class without a colour takes the reference's or a palette colour, not a default grey
    from geoseg.run.workflow import evaluation_options

    job = parse_job({**MINIMAL, "classes": [{"id": 1, "name": "soil", "color": "#8c6d46"}, {"id": 3, "name": "weed"}],
                     "reference": {"path": "ref.tif"}})
    assert evaluation_options(job)["class_colors"] == {1: "#8c6d46"}
