"""SIGTERM and SIGINT as a clean stop: the run unwinds, records ``interrupted`` and exits 143 / 130.

Kubernetes and Slurm stop a job with SIGTERM, a terminal with SIGINT (Ctrl-C, sent to the
whole process group, so to local Dask workers too). Both become :class:`Interrupted` in the
main thread, so the ``finally`` blocks run: the client stops waiting, its futures are
released (the scheduler cancels them), the local cluster is closed and ``run.json`` says
``interrupted``. Dask's own shutdown chatter is silenced from then on, so the user sees one
line. A second signal while shutting down ends the process at once with the same status.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: Loggers that report the cancellations a stop causes (not errors of the run).
_NOISY_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number (SIGTERM 143, SIGINT 130)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def quiet_shutdown() -> None:
    """Silence Dask's loggers: what it reports while a stopped run unwinds is the stop itself."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, the first of ``signals`` raises :class:`Interrupted` in the main thread.

    Outside the main thread (a notebook's worker thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:  # a second signal during the shutdown: stop now
            os._exit(128 + signum)
        fired.append(signum)
        quiet_shutdown()
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def workers_ignore_sigint() -> Iterator[None]:
    """Processes started in the block ignore SIGINT (inherited), so Ctrl-C stops only the client.

    The client then closes the cluster in order; before, every worker printed its own
    KeyboardInterrupt traceback. Only in the main thread (signal dispositions are per process).
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGINT"):
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def print_interrupted(exc: KeyboardInterrupt) -> int:
    """The one line a stopped command prints; returns its exit status."""
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    code = exc.exit_code if isinstance(exc, Interrupted) else 130
    print(f"geoseg: interrupted ({name}); rerun the same command to resume", file=sys.stderr)
    return code
