"""Errors a user can cause, each carrying a message that says what to do.

The CLI prints a ``GeosegError`` as one line and exits non-zero; anything else
is a bug in geoseg and keeps its traceback.

Errors raised in Dask tasks travel to the client pickled, with their cause chain (Dask
pickles ``__cause__`` through tblib). Third-party causes do not always survive that (rasterio's
``CPLE_*`` errors cannot be rebuilt: their ``args`` is a read-only property), and Dask then
sends a bare ``Exception(repr(error))`` instead, which the CLI would report as a bug. So a
``GeosegError`` replaces causes that are not its own by an :class:`ErrorCause` (the cause's
type name, message and traceback) when it is pickled: the client gets the same type and message.
"""

from __future__ import annotations

import errno
import os
from typing import Any

#: Depth of the cause/context chain kept when an error is pickled.
_MAX_CHAIN = 8


class ErrorCause(Exception):
    """Stand-in for a cause that may not survive pickling: ``"module.Type: message"``, same traceback."""


def _portable(exc: BaseException | None, depth: int = 0) -> BaseException | None:
    """``exc`` itself if it is a GeosegError or an ErrorCause (already safe), else an ErrorCause for it."""
    if exc is None or depth >= _MAX_CHAIN:
        return None
    if isinstance(exc, (GeosegError, ErrorCause)):
        return exc
    proxy = ErrorCause(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    proxy.__traceback__ = exc.__traceback__
    proxy.__cause__ = _portable(exc.__cause__, depth + 1)
    proxy.__context__ = _portable(exc.__context__, depth + 1)
    proxy.__suppress_context__ = exc.__suppress_context__
    return proxy


class GeosegError(Exception):
    """Base class for every error caused by input, configuration or environment.

    Subclasses take one argument, the message (so pickling and Dask's truncation rebuild them).
    """

    exit_code: int = 2

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Called first by tblib's reducer, which then pickles __cause__/__context__ as they are now.
        self.__cause__ = _portable(self.__cause__)
        self.__context__ = _portable(self.__context__)
        return super().__reduce__()


class InputError(GeosegError):
    """A raster or vector input is missing, unreadable or unsuitable."""


class GridMismatchError(InputError):
    """Inputs that must share one pixel grid do not."""


class MissingFileError(InputError):
    """A file or folder named as an input does not exist."""


class NoCRSError(InputError):
    """A raster or vector input has no coordinate reference system (or no georeferencing at all)."""


class NoOverlapError(InputError):
    """Layers that must cover the same area (labels and reference, regions, inputs and grid) do not meet."""


class BandError(InputError):
    """A band asked for does not exist, or a file's bands cannot be used together."""


class ClassIdError(InputError):
    """A reference holds values that are not class ids (fractions, unnamed classes, unknown ids)."""


class LabelStoreError(InputError):
    """A label store to read is missing, unfinished, or has a missing or corrupt chunk."""


class BandRoleError(BandError):
    """A band an index or expression asks for (``red``, ``nir``, ``layer.band``) cannot be told apart."""


class JobSpecError(GeosegError):
    """A job file is invalid: unknown keys, wrong types, missing values."""


class JobKeyError(JobSpecError):
    """A job file holds a key geoseg does not know (usually a typo); the message names where."""


class OutputError(GeosegError):
    """The output location cannot be used (holds another run, is not writable, ...)."""


class OutputInUseError(OutputError):
    """The output location holds, or is being written by, another run."""


class ModelError(GeosegError):
    """A model or checkpoint does not fit the data it is asked to process."""


class CheckpointError(ModelError):
    """A checkpoint is missing, truncated or damaged, or its weights do not load."""


class ModelInputError(ModelError):
    """The scene's bands or pixel size do not match what a checkpoint was trained on."""


class MissingExtraError(GeosegError):
    """An optional part of geoseg is asked for but its extra is not installed (``pip install 'geoseg[sam]'``)."""


class ClusterError(GeosegError):
    """The Dask cluster could not be started or reached."""


#: errno -> what the user can do about it. These are the environment's doing, not geoseg's bugs.
_FS_ADVICE: dict[int, str] = {
    errno.EACCES: "permission denied; choose a folder you can write to or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write to or fix its permissions",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path or move that file",
    errno.EISDIR: "is a folder where a file was expected; choose another path",
    errno.ENOSPC: "no space left on the device; free space or choose another folder, then rerun to resume",
    errno.EDQUOT: "disk quota exceeded; free space or choose another folder, then rerun to resume",
    errno.EFBIG: "file too large for this file system or limit; choose another folder",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
}


def from_os_error(exc: BaseException) -> OutputError | None:
    """An :class:`OutputError` naming the path and what to do, for file-system errors a user can fix.

    ``None`` for anything else (those stay unexpected errors).

    >>> str(from_os_error(PermissionError(13, "Permission denied", "/data/out")))
    '/data/out: permission denied; choose a folder you can write to or fix its permissions'
    """
    if not isinstance(exc, OSError) or exc.errno not in _FS_ADVICE:
        return None
    path = exc.filename if exc.filename is not None else "(unknown path)"
    return OutputError(f"{os.fsdecode(path)}: {_FS_ADVICE[exc.errno]}")
