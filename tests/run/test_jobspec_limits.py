"""Job-file values that used to end as "unexpected error" or be read silently: refused in one line."""

from __future__ import annotations

from datetime import date

import pytest

from geoseg.errors import JobSpecError
from geoseg.run.jobspec import MAX_SEED, check_date_pattern, load_yaml_text, match_date, parse_job
from geoseg.run.monitor import period_of

BASE = {"name": "j", "inputs": ["a.tif"], "output": "o"}


@pytest.mark.parametrize("seed", [-1, 2**40])
@pytest.mark.parametrize("kind", ["kmeans", "threshold"])
def test_seeds_outside_32_bits_are_refused_by_the_schema(kind, seed):
    with pytest.raises(JobSpecError, match="method.*seed"):
        parse_job({**BASE, "method": {"kind": kind, "seed": seed}})
    assert parse_job({**BASE, "method": {"kind": kind, "seed": MAX_SEED}}).method.seed == MAX_SEED


def test_a_key_given_twice_is_refused_with_both_lines():
    text = "name: j\nmethod: {kind: kmeans}\ninputs: [a.tif]\noutput: o\nmethod: {kind: threshold}\n"
    with pytest.raises(JobSpecError, match=r"^job.yaml: key 'method' is given twice \(lines 2 and 5\); keep one$"):
        load_yaml_text(text, "job.yaml")
    with pytest.raises(JobSpecError, match="key 'seed' is given twice"):
        load_yaml_text("method:\n  seed: 1\n  seed: 2\n")


def test_merge_keys_may_still_be_overridden():
    text = "defaults: &d {n_clusters: 4, seed: 1}\nmethod:\n  <<: *d\n  seed: 7\n"
    assert load_yaml_text(text)["method"] == {"n_clusters": 4, "seed": 7}


def test_date_patterns_with_one_group_of_eight_digits_or_named_groups_read_dates():
    assert period_of("/data/scene_20240612.tif", r"scene_(\d{8})") == "2024-06-12"
    named = r"(?P<day>\d{2})\.(?P<month>\d{2})\.(?P<year>\d{4})"
    assert match_date(named, "ortho_12.06.2024.tif") == date(2024, 6, 12)
    assert match_date(r"(\d{4})(\d{2})(\d{2})", "x_20240230.tif") is None  # no such day: the file's time is used
    assert match_date(r"scene_(\d+)", "scene_2024.tif") is None  # one group, not 8 digits
    job = parse_job({**BASE, "monitor": {"date_pattern": r"scene_(\d{8})"}})
    assert job.monitor.date_pattern == r"scene_(\d{8})"


@pytest.mark.parametrize("pattern", [r"(\d{4})_(\d{2})", r"(\d{4}", r"\d{8}"])
def test_date_patterns_that_cannot_give_a_date_are_refused_with_what_is_expected(pattern):
    with pytest.raises(JobSpecError, match="monitor.date_pattern"):
        parse_job({**BASE, "monitor": {"date_pattern": pattern}})
    with pytest.raises(JobSpecError):
        check_date_pattern(pattern)


def test_memory_limits_that_are_not_sizes_are_refused_by_the_schema():
    with pytest.raises(JobSpecError, match="cluster.memory_limit.*not a size"):
        parse_job({**BASE, "cluster": {"memory_limit": "lots"}})
    assert parse_job(BASE).cluster.memory_limit is None  # default: 4 GiB within the machine's RAM
