"""No large task graphs (issue 14, finding 11).

Before: seam pieces travelled inside the graph of cluster union tasks; an ordinary 3000² run
warned ``Sending large graph of size 9.93 MiB`` (39 MiB on larger runs). Seam groups are now
merged progressively where the pieces are (geoseg.vector.seams), so no union task carries them.
"""

from __future__ import annotations

import logging
import warnings

import pytest

pytestmark = pytest.mark.integration


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
    assert result.extra["n_polygons"] > 1000
