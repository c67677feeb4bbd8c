"""Seam unions on a cluster send their pieces once, outside the task graph (issue 14, finding 11).

Before: the pieces travelled inside the graph; an ordinary 3000² run warned ``Sending large graph
of size 9.93 MiB`` (39 MiB on larger runs) from ``union_on_cluster``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import shapely

from geoseg.vector.seams import MIN_GROUPS_FOR_CLUSTER, union_on_cluster

pytestmark = pytest.mark.integration


def _groups(n: int) -> list[np.ndarray]:
    """``n`` pairs of touching unit squares with dense edges (about 20 MiB of coordinates in all)."""
    out = []
    for i in range(n):
        x = 3.0 * i
        pair = shapely.segmentize(np.array([shapely.box(x, 0, x + 1, 1), shapely.box(x + 1, 0, x + 2, 1)]), 0.0015)
        out.append(pair)
    return out


def test_union_on_cluster_sends_no_large_graph_and_unions_exactly(dask_client, caplog):
    groups = _groups(max(MIN_GROUPS_FOR_CLUSTER, 240))
    size = sum(len(b) for g in groups for b in shapely.to_wkb(g))
    assert size > 12 * 2**20  # above Dask's 10 MiB warning threshold
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="distributed"):
        warnings.simplefilter("always")
        merged = union_on_cluster(dask_client, 4)(groups)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "large graph" in m], messages
    assert len(merged) == len(groups)
    for i, geom in enumerate(merged):  # oracle: the rectangle the two squares make
        assert shapely.equals(geom, shapely.box(3.0 * i, 0, 3.0 * i + 2, 1))
        assert shapely.get_num_coordinates(geom) == 5  # collinear seam and edge vertices dropped


@pytest.mark.slow
def test_a_3000_px_demo_run_sends_no_large_graph(tmp_path, dask_client, caplog):
    """The issue's case end to end: the 3000² demo job (k-means, vectorise, evaluate) warned 9.93 MiB."""
    from geoseg.run.demo import demo_job
    from geoseg.run.jobspec import parse_job
    from geoseg.run.workflow import run_job
    from geoseg.samples.synthetic import make_scene

    make_scene("landcover", tmp_path / "data", width=3000, height=3000, seed=0)
    job = parse_job(demo_job(tmp_path / "data", tmp_path / "out"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="distributed"):
        warnings.simplefilter("always")
        result = run_job(job, client=dask_client, show_progress=False)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "large graph" in m], messages
    assert result.extra["n_polygons"] > 1000  # the seams were merged on the cluster
