"""What the local workers log about a task that failed on bad input: nothing, the client says it.

A task that raises :class:`geoseg.errors.GeosegError` (an all-nodata scene found while sampling, an
unreadable file met by a worker...) reaches the client, which reports it as one line and exit 2. Dask's
worker logs the same failure first ("Compute Failed", the task, its exception and a traceback), and the
workers of geoseg's local cluster write to the CLI's terminal or the scheduled job's log. The filter here
drops those reports for geoseg's own errors only: any other exception is a fault, and its report stays.

The same workers, when geoseg closes its own cluster, may find the scheduler gone before they stop (on a loaded
machine a heartbeat is in flight as the scheduler closes) and log "Failed to communicate with scheduler during
heartbeat" with a traceback after the run's outcome was printed. That report is dropped too, but only once the
client has told each worker that the cluster is being torn down (:func:`announce_teardown`): the same line in
the middle of a run means the scheduler was lost, and stays.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from geoseg.errors import GeosegError

#: Dask's worker logger, which reports failed tasks.
WORKER_LOGGER = "distributed.worker"
#: How Dask's worker begins its report of a heartbeat that did not reach the scheduler.
LOST_SCHEDULER_REPORT = "Failed to communicate with scheduler"

#: Set in a worker process when geoseg is about to close the local cluster it belongs to.
_TEARDOWN = threading.Event()


class UserErrorReportFilter(logging.Filter):
    """Drops a "Compute Failed" report whose exception is a geoseg error."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not str(record.msg).startswith("Compute Failed") or not isinstance(args, tuple) or len(args) < 4:
            return True
        return not str(args[3]).startswith(user_error_prefixes())  # args: key, state, task, exception, traceback


class TeardownReportFilter(logging.Filter):
    """Drops a worker's report that it lost the scheduler, once the cluster is being torn down."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_TEARDOWN.is_set() and str(record.msg).startswith(LOST_SCHEDULER_REPORT))


def expect_teardown() -> bool:
    """Run in each worker process just before geoseg closes the cluster (see :func:`announce_teardown`)."""
    _TEARDOWN.set()
    return True


def announce_teardown(client: Any) -> None:
    """Tell the workers of geoseg's own local cluster that it is closing, so a heartbeat lost on the way out
    is not reported; a worker that does not answer is left as it is (the cluster closes regardless)."""
    if getattr(client, "status", None) != "running":
        return
    try:
        client.run(expect_teardown, on_error="ignore")
    except Exception:  # only quietens logs: the cluster must close whatever happens here
        pass


def user_error_prefixes() -> tuple[str, ...]:
    """How Dask's report begins the exception text of each geoseg error class: ``"InputError("``...

    >>> "InputError(" in user_error_prefixes() and "GridMismatchError(" in user_error_prefixes()
    True
    """
    names, todo = [], [GeosegError]
    while todo:
        cls = todo.pop()
        names.append(f"{cls.__name__}(")
        todo.extend(cls.__subclasses__())
    return tuple(names)


class QuietUserErrors(WorkerPlugin):
    """Installs :class:`UserErrorReportFilter` and :class:`TeardownReportFilter` on every worker, restarted
    ones included."""

    name = "geoseg-quiet-user-errors"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger(WORKER_LOGGER)
        for kind in (UserErrorReportFilter, TeardownReportFilter):
            if not any(isinstance(f, kind) for f in logger.filters):
                logger.addFilter(kind())
