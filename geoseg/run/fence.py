"""The job's trust on every Dask worker: the opener's policy and GDAL's fence, set in the worker process.

Workers read inputs, references and regions themselves, so the client's :func:`geoseg.io.opener.fenced`
is not enough: this plugin applies the same settings (:func:`geoseg.io.opener.gdal_fence`) on each worker,
restarted ones and those of a remote scheduler included, and restores them when it is replaced.
"""

from __future__ import annotations

import contextlib
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from geoseg.io.opener import Trust, fenced


class TrustFence(WorkerPlugin):
    """Opens every dataset on the worker under ``trust`` (registered once per job; one name, so it replaces)."""

    name = "geoseg-trust-fence"

    def __init__(self, trust: Trust | None = None) -> None:
        self.trust = trust or Trust()
        self._stack: contextlib.ExitStack | None = None

    def setup(self, worker: Any) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(fenced(self.trust))

    def teardown(self, worker: Any) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def fence_workers(client: Any, trust: Trust | None = None) -> None:
    """Register :class:`TrustFence` with ``trust`` on the workers of ``client``."""
    client.register_plugin(TrustFence(trust), name=TrustFence.name)
