"""What the local workers log about a task that failed on bad input: nothing, the client says it.

A task that raises :class:`geoseg.errors.GeosegError` (an all-nodata scene found while sampling, an
unreadable file met by a worker...) reaches the client, which reports it as one line and exit 2. Dask's
worker logs the same failure first ("Compute Failed", the task, its exception and a traceback), and the
workers of geoseg's local cluster write to the CLI's terminal or the scheduled job's log. The filter here
drops those reports for geoseg's own errors only: any other exception is a fault, and its report stays.
"""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from geoseg.errors import GeosegError

#: Dask's worker logger, which reports failed tasks.
WORKER_LOGGER = "distributed.worker"


class UserErrorReportFilter(logging.Filter):
    """Drops a "Compute Failed" report whose exception is a geoseg error."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not str(record.msg).startswith("Compute Failed") or not isinstance(args, tuple) or len(args) < 4:
            return True
        return not str(args[3]).startswith(user_error_prefixes())  # args: key, state, task, exception, traceback


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
    """Installs :class:`UserErrorReportFilter` on every worker, restarted ones included."""

    name = "geoseg-quiet-user-errors"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger(WORKER_LOGGER)
        if not any(isinstance(f, UserErrorReportFilter) for f in logger.filters):
            logger.addFilter(UserErrorReportFilter())
