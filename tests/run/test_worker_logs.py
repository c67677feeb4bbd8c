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
