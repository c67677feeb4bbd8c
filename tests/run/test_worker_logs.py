"""The local workers' report of a failed task: kept for faults, dropped for geoseg's own (user) errors."""

from __future__ import annotations

import logging

import pytest

from geoseg.errors import GridMismatchError, InputError
from geoseg.run.worker_logs import UserErrorReportFilter


def _dask_report(exc: BaseException) -> logging.LogRecord:
    """The record ``distributed.worker`` logs for a failed task (its format and arguments, as Dask builds them)."""
    return logging.LogRecord(
        "distributed.worker", logging.ERROR, "worker.py", 2262,
        "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\nTraceback: %r\n",
        ("fit_task-1", "executing", "<Task 'fit_task-1' fit_task(...)>", repr(exc), '  File "x.py", line 1\n'),
        None,
    )


@pytest.mark.parametrize("exc", [InputError("no valid pixels"), GridMismatchError("grids differ")])
def test_reports_of_geoseg_errors_are_dropped(exc):
    assert UserErrorReportFilter().filter(_dask_report(exc)) is False


@pytest.mark.parametrize("exc", [ValueError("a bug"), MemoryError(), KeyError("InputError(")])
def test_reports_of_faults_and_other_messages_are_kept(exc):
    f = UserErrorReportFilter()
    assert f.filter(_dask_report(exc)) is True
    other = logging.LogRecord("distributed.worker", logging.ERROR, "w.py", 1, "Worker stream died %s", ("x",), None)
    assert f.filter(other) is True


def _heartbeat_report() -> logging.LogRecord:
    """The record ``distributed.worker`` logs when a heartbeat does not reach the scheduler (``logger.exception``)."""
    return logging.LogRecord("distributed.worker", logging.ERROR, "worker.py", 1206,
                             "Failed to communicate with scheduler during heartbeat.", (), None)


def _worker_keeps_heartbeat_report() -> bool:
    """In a worker process: whether the filters installed on Dask's worker logger let the report through."""
    return bool(logging.getLogger("distributed.worker").filter(_heartbeat_report()))


def test_a_lost_scheduler_is_reported_until_geoseg_closes_its_own_cluster():
    """On the real workers of geoseg's local cluster: the lost-scheduler report stays during the run (the scheduler
    was lost) and is dropped once the client announced the teardown; other reports stay either way."""
    from geoseg.run.cluster import connect
    from geoseg.run.worker_logs import announce_teardown

    with connect(n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard=False) as (client, _):
        assert set(client.run(_worker_keeps_heartbeat_report).values()) == {True}
        announce_teardown(client)
        assert set(client.run(_worker_keeps_heartbeat_report).values()) == {False}
        other = client.run(lambda: logging.getLogger("distributed.worker").filter(
            logging.LogRecord("distributed.worker", logging.ERROR, "w.py", 1, "Worker stream died %s", ("x",), None)))
        assert set(map(bool, other.values())) == {True}
