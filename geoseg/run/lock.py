"""One run per output folder: an exclusive lock file with the owner's pid and host.

Two runs writing one folder would interleave chunks, markers and renames (a second
``geoseg run`` of a job crashed with ``FileNotFoundError``). The lock is a file created with
``O_EXCL`` (atomic on local and NFSv3+ file systems), holding JSON ``{pid, host, started,
command}`` so a refusal can name the run that holds it. A lock whose pid no longer exists on
this host is stale (a killed run) and is taken over; a lock from another host cannot be
checked and is refused with the command to remove it.

Claiming the folder also removes what killed runs left there (:func:`claim_output`): hidden
temporaries of :mod:`geoseg.io.atomic`, which only the lock holder may safely delete.

An output on object storage (an fsspec URL) has no ``O_EXCL``: :func:`claim_output` hands it to
:mod:`geoseg.run.storelock` (a lock object created with a conditional write, kept alive by a
heartbeat). Both kinds of lock have the one interface :class:`RunLock`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from geoseg.errors import OutputInUseError, from_os_error

log = logging.getLogger(__name__)

LOCK_FILE = ".geoseg.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock(Protocol):
    """What a run holds while it writes its output: local folder or object-storage prefix alike."""

    def verify(self) -> None:
        """Raise :class:`OutputError` if the lock is no longer this run's (before publishing)."""

    def release(self) -> None:
        """Give the output back; safe to call twice."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class OutputLock:
    """The held lock of one output folder; :meth:`release` (or ``with``) gives it back."""

    path: Path
    owner: dict[str, Any]

    @classmethod
    def acquire(cls, folder: str | os.PathLike[str]) -> OutputLock:
        """Take the folder's lock, or raise :class:`OutputError` naming the run that holds it."""
        path = Path(folder) / LOCK_FILE
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "command": " ".join(sys.argv)[:300]}
        for _ in range(3):  # at most: stale lock found, taken over, raced by another taker
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = _read(path)
                if not _is_stale(held) or (not held and _age(path) < 10):  # empty: its owner is writing it
                    raise OutputInUseError(_refusal(path, held)) from None
                log.warning("taking over the stale lock of pid %s (no longer running) in %s", held.get("pid"),
                            path.parent)
                _remove_if_unchanged(path, held)
                continue
            except OSError as exc:
                raise (from_os_error(exc) or exc) from exc
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            return cls(path, owner)
        raise OutputInUseError(f"{path.parent}: could not take the output folder's lock {path}; another run may be starting")

    def _ours(self) -> bool:
        held = _read(self.path)
        return held.get("pid") == self.owner["pid"] and held.get("host") == self.owner["host"]

    def verify(self) -> None:
        """Raise if the lock file was removed or replaced behind this run's back."""
        if not self._ours():
            raise OutputInUseError(f"{self.path.parent}: this run's lock {self.path} was removed or taken by another run; "
                              "its outputs may be mixed with that run's: rerun the job alone")

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self._ours():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _is_stale(held: dict[str, Any]) -> bool:
    """A lock of a process that no longer runs on this host (an empty or unreadable file is stale too:
    a run killed between creating and writing it)."""
    if not held:
        return True
    if held.get("host") != socket.gethostname():
        return False
    pid = held.get("pid")
    return not isinstance(pid, int) or not _pid_alive(pid)


def _remove_if_unchanged(path: Path, held: dict[str, Any]) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile (then the next O_EXCL decides)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != held and _read(aside):  # we moved a fresh lock: put it back
        os.replace(aside, path)
        return
    aside.unlink(missing_ok=True)


def _refusal(path: Path, held: dict[str, Any]) -> str:
    who = f"pid {held.get('pid')} on host {held.get('host')}, started {held.get('started')}"
    cmd = f" ({held['command']})" if held.get("command") else ""
    if held.get("host") == socket.gethostname():
        return (f"{path.parent} is in use by another geoseg run: {who}{cmd}; wait for it to finish or stop it, "
                "or choose another output folder")
    return (f"{path.parent} is in use by a geoseg run on another host: {who}{cmd}; if that run is no longer "
            f"running, delete {path}")


def claim_output(folder: str | os.PathLike[str]) -> RunLock:
    """Create the output folder, lock it and remove temporaries killed runs left in it.

    For an object-storage URL: lock the prefix, remove its stale temporaries and empty the local
    scratch folder (:func:`geoseg.run.storelock.claim_store_output`)."""
    from geoseg.io import storage
    from geoseg.io.atomic import remove_stale_temporaries

    if storage.is_url(folder):
        from geoseg.run.storelock import claim_store_output

        return claim_store_output(str(folder))
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (from_os_error(exc) or exc) from exc
    lock = OutputLock.acquire(folder)
    try:
        for p in [*remove_stale_temporaries(folder), *_remove_legacy_temporaries(folder)]:
            log.info("removed %s, left by an earlier run that was killed", p)
    except BaseException:
        lock.release()
        raise
    return lock


#: Hidden temporaries of writers that do not (yet) name them through geoseg.io.atomic: GeoPackages
#: and COGs being written (``.polygons.<hex>.partial.gpkg``, ``.labels.<hex>.staging.tif``), report
#: files (``.metrics.tmp-<pid>.csv``) and ``.run.json.tmp``. Only hidden names, only in the output folder.
LEGACY_TEMP_GLOBS = (".*.*.partial.*", ".*.*.staging.*", ".*.tmp-*", ".*.tmp")


def _remove_legacy_temporaries(folder: Path) -> list[Path]:
    from geoseg.io.atomic import remove_path

    stale = sorted({p for pattern in LEGACY_TEMP_GLOBS for p in folder.glob(pattern) if p.name != LOCK_FILE})
    for p in stale:
        remove_path(p)
    return stale
