"""Errors a user can cause, each carrying a message that says what to do.

The CLI prints a ``GeosegError`` as one line and exits non-zero; anything else
is a bug in geoseg and keeps its traceback.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class for every error caused by input, configuration or environment."""

    exit_code: int = 2


class InputError(GeosegError):
    """A raster or vector input is missing, unreadable or unsuitable."""


class GridMismatchError(InputError):
    """Inputs that must share one pixel grid do not."""


class JobSpecError(GeosegError):
    """A job file is invalid: unknown keys, wrong types, missing values."""


class OutputError(GeosegError):
    """The output location cannot be used (holds another run, is not writable, ...)."""


class ModelError(GeosegError):
    """A model or checkpoint does not fit the data it is asked to process."""


class ClusterError(GeosegError):
    """The Dask cluster could not be started or reached."""
