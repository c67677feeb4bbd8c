"""One run per output prefix on object storage: a lock object created with a conditional write.

Object stores have no ``O_EXCL``, but S3 has conditional writes (AWS since 2024, and S3-compatible
servers that implement them): ``PutObject`` with ``If-None-Match: *`` creates an object only if
there is none, ``If-Match: <ETag>`` replaces or deletes one only if it is unchanged. The lock
``<prefix>/.geoseg.lock`` is created with the first and holds JSON ``{host, space, pid, started,
command, token, timeout_s}`` (``space``: boot id and pid namespace, where a pid means something).
A heartbeat thread rewrites it every ``timeout_s / 4`` with ``If-Match``, so its ``LastModified``
says whether its owner is alive; the age is taken on the store's clock (its ``Date`` header), so
the hosts' clocks need not agree. A lock not rewritten for the ``timeout_s`` it states, or one of
a process that no longer runs on this host (same boot and pid namespace), is stale: the next run
takes it over with ``If-Match`` on its ETag (of two runs taking over at once, one wins) and warns
naming the old owner. It is released (a conditional delete) when the run ends, also on errors.

Limits, by design: this is a lease, not a fence. A run that stalls longer than its timeout (a
frozen VM, a network partition) can lose the lock to another run and learns it at its next
heartbeat; it then stops heartbeating and refuses to publish (:meth:`StoreLock.verify`), but
what it wrote meanwhile is not undone. Stores without conditional writes, that is any fsspec
backend but s3fs and S3 servers that ignore ``If-None-Match`` (found by a probe: a second create
must be refused), get one warning and the same-host lock on the local scratch folder, as before:
two hosts writing one such prefix are not kept apart.

``GEOSEG_LOCK_TIMEOUT`` (seconds, default 120) sets the timeout a run states in its lock;
``GEOSEG_STORE_LOCK=local`` skips the lock object and takes the same-host lock (for an S3 server
that rejects conditional writes with an error other than ``NotImplemented``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Self

from geoseg.errors import OutputError, OutputInUseError
from geoseg.io import storage
from geoseg.run.lock import LOCK_FILE, OutputLock, RunLock, _pid_alive

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 120.0
_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNSUPPORTED_CODES = {"NotImplemented", "501"}


class NoConditionalWrites(Exception):
    """The store cannot create an object only if it is absent, so it cannot hold a lock."""


def lock_timeout() -> float:
    """Seconds without a heartbeat after which this run's lock may be taken over."""
    raw = os.environ.get("GEOSEG_LOCK_TIMEOUT", "")
    if not raw:
        return LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value >= 1:
        raise OutputError(f"GEOSEG_LOCK_TIMEOUT={raw!r} is not a number of seconds ≥ 1; unset it or give e.g. 120")
    return value


def _code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs keeps botocore's error as the cause)."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code"))
    return None


def _conflict(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or _code(exc) in _CONFLICT_CODES


def _unsupported(exc: BaseException) -> bool:
    return isinstance(exc, NotImplementedError) or _code(exc) in _UNSUPPORTED_CODES


def _process_space() -> str:
    """This machine's boot and pid namespace: a pid can be checked only in the space it belongs to
    (two containers or VMs may share a host name); empty where the system does not say."""
    parts = []
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
        except OSError:
            parts.append("")
    return "/".join(parts).strip("/")


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Held:
    """The lock object as found: its ETag, its content and how long ago it was last written."""

    etag: str
    owner: dict[str, Any]
    age_s: float

    def stale(self) -> str | None:
        """Why its owner is gone (a dead pid on this host, or no heartbeat for the timeout it
        states), or None while it may be alive."""
        o = self.owner
        here = o.get("host") == socket.gethostname() and o.get("space", "") == _process_space()
        if here and isinstance(o.get("pid"), int) and not _pid_alive(o["pid"]):
            return "no longer running"
        if self.age_s > self.timeout_s():
            return f"no heartbeat for {self.age_s:.0f} s"
        return None

    def timeout_s(self) -> float:
        timeout = self.owner.get("timeout_s")
        return float(timeout) if isinstance(timeout, int | float) and timeout > 0 else lock_timeout()

    def who(self) -> str:
        o = self.owner
        cmd = f" ({o['command']})" if o.get("command") else ""
        return f"pid {o.get('pid')} on host {o.get('host')}, started {o.get('started')}{cmd}"


class StoreLock:
    """The held lock of an output prefix on S3; :meth:`release` (or ``with``) gives it back."""

    def __init__(self, url: str, timeout_s: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.lock_url = storage.join(self.url, storage.LOCK_OBJECT)
        self.fs, path = storage.filesystem(self.lock_url)
        if "s3" not in storage.protocols(self.fs):
            raise NoConditionalWrites(f"{type(self.fs).__name__} has no conditional writes geoseg can rely on")
        self.bucket, self.key, _ = self.fs.split_path(path)
        self.timeout_s = float(timeout_s or lock_timeout())
        self.owner: dict[str, Any] = {
            "geoseg_lock": 1, "host": socket.gethostname(), "space": _process_space(), "pid": os.getpid(),
            "started": _utc_now(),
            "command": " ".join(sys.argv)[:300], "token": uuid.uuid4().hex, "timeout_s": self.timeout_s,
        }
        self.etag: str | None = None
        self.lost: str | None = None
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, url: str, timeout_s: float | None = None) -> StoreLock:
        """Take the prefix's lock, or raise :class:`OutputError` naming the run that holds it
        (:class:`NoConditionalWrites` where the store cannot hold a lock)."""
        lock = cls(url, timeout_s)
        lock._take()
        lock._thread = threading.Thread(target=lock._beat_loop, name="geoseg-lock-heartbeat", daemon=True)
        lock._thread.start()
        return lock

    # -- the store's operations ------------------------------------------------------------------
    def _put(self, **condition: str) -> str:
        body = json.dumps({**self.owner, "heartbeat": _utc_now(), "beats": self.beats}).encode()
        reply = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body,
                                ContentType="application/json", **condition)
        return str(reply["ETag"])

    def _inspect(self) -> Held | None:
        """The lock as it is on the store now, or None when there is none."""
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            data = self.fs.cat_file(f"{self.bucket}/{self.key}")
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(data)
        except ValueError:
            owner = {}
        date = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date) if date else datetime.now(UTC)
        age = (now - head["LastModified"]).total_seconds()
        return Held(str(head["ETag"]), owner if isinstance(owner, dict) else {}, age)

    def _ours(self, held: Held | None) -> bool:
        return held is not None and held.owner.get("token") == self.owner["token"]

    # -- taking it -------------------------------------------------------------------------------
    def _take(self) -> None:
        for _ in range(4):  # at most: held, stale and taken over, raced by another taker, refused
            try:
                self.etag = self._put(IfNoneMatch="*")
            except Exception as exc:  # sorted below; anything else is re-raised
                if _unsupported(exc):
                    raise NoConditionalWrites(f"the store refused a conditional write: {exc}") from exc
                if not _conflict(exc):
                    raise OutputError(f"{self.url}: cannot write the lock {self.lock_url}: {exc} (a server without "
                                      "conditional writes: set GEOSEG_STORE_LOCK=local to lock on this host only)"
                                      ) from exc
            else:
                self._probe()
                return
            held = self._inspect()
            if held is None:
                continue  # released meanwhile
            if self._ours(held):  # our create went through, its reply was lost and the retry refused
                self.etag = held.etag
                return
            reason = held.stale()
            if reason is None:
                raise OutputInUseError(_refusal(self.lock_url, held))
            log.warning("taking over the stale lock of %s: %s (%s)", held.who(), reason, self.lock_url)
            try:
                self.etag = self._put(IfMatch=held.etag)
                return
            except Exception as exc:
                if _unsupported(exc):
                    raise OutputError(f"{self.url}: the store cannot replace the stale lock {self.lock_url} "
                                      f"conditionally; delete it if {held.who()} is no longer running") from exc
                if not _conflict(exc) and not isinstance(exc, FileNotFoundError):
                    raise
        raise OutputInUseError(f"{self.url}: could not take the lock {self.lock_url}; another run may be starting: "
                          "try again")

    def _probe(self) -> None:
        """A second create must be refused: a server that ignores ``If-None-Match`` accepts it."""
        try:
            self.etag = self._put(IfNoneMatch="*")
        except Exception as exc:
            if _conflict(exc):
                return
            self._delete()
            raise NoConditionalWrites(f"the store failed a conditional write: {exc}") from exc
        self._delete()
        raise NoConditionalWrites("the store ignores If-None-Match (a second create of the lock succeeded)")

    def _delete(self, **condition: str) -> None:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, **condition)
        except FileNotFoundError:
            pass

    # -- keeping it ------------------------------------------------------------------------------
    def _beat_loop(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            self._beat()

    def _beat(self) -> None:
        """Rewrite the lock if it is still ours; otherwise note that it was lost and stop."""
        self.beats += 1
        try:
            self.etag = self._put(IfMatch=str(self.etag))
            return
        except Exception as exc:
            if not (_conflict(exc) or isinstance(exc, FileNotFoundError)):
                log.warning("could not refresh the lock %s (%s); trying again in %.0f s", self.lock_url, exc,
                            self.timeout_s / 4)
                return
        held = self._inspect()
        if self._ours(held):  # a retried write of ours changed the ETag
            assert held is not None
            self.etag = held.etag
            return
        self.lost = f"taken over by {held.who()}" if held else "deleted"
        self._stop.set()
        log.error("%s: this run's lock %s was %s; this run will not publish its outputs", self.url, self.lock_url,
                  self.lost)

    def verify(self) -> None:
        """Raise :class:`OutputError` unless the lock on the store is still this run's."""
        if self.lost is None and not self._ours(self._inspect()):
            self.lost = "deleted or taken over"
        if self.lost is not None:
            raise OutputError(f"{self.url}: this run's lock was {self.lost} (no heartbeat for over "
                              f"{self.timeout_s:.0f} s?), so nothing was published; rerun the job alone")

    # -- giving it back --------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still ours (safe to call twice)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        etag, self.etag = self.etag, None
        if self.lost is not None or etag is None:
            return
        try:
            self._delete(IfMatch=etag)
            return
        except Exception as exc:
            if not (_conflict(exc) or _unsupported(exc)):
                log.warning("could not remove the lock %s (%s); the next run takes it over after %.0f s",
                            self.lock_url, exc, self.timeout_s)
                return
        held = self._inspect()  # no conditional delete, or the ETag moved under a retried heartbeat
        if self._ours(held):
            self._delete()
        elif held is not None:
            log.warning("the lock %s is no longer this run's (%s); left in place", self.lock_url, held.who())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refusal(lock_url: str, held: Held) -> str:
    url, timeout = lock_url.rsplit("/", 1)[0], held.timeout_s()
    return (f"{url} is in use by another geoseg run: {held.who()}, last heartbeat {held.age_s:.0f} s ago; "
            f"wait for it to finish or stop it (its lock is taken over once it has no heartbeat for {timeout:.0f} s), "
            f"or, if it is surely gone, delete {lock_url}")


@dataclass
class StoreClaim:
    """An output prefix claimed by one run: its lock (on the store, or, where the store has no
    conditional writes, on the local scratch folder) and the scratch folder, emptied on release."""

    url: str
    scratch: Path
    lock: StoreLock | OutputLock

    def verify(self) -> None:
        self.lock.verify()

    def release(self) -> None:
        """Empty the scratch (its files are uploaded or worthless), then give the lock back. A lost
        lock leaves the scratch alone: it is the new holder's now."""
        try:
            if isinstance(self.lock, StoreLock):
                if self.lock.lost is None and self.scratch.is_dir():
                    storage.clear_scratch(self.scratch)
                    self.scratch.rmdir()  # before the release: the next holder re-creates it after
            else:
                storage.clear_scratch(self.scratch, keep=(LOCK_FILE,))
        except OSError as exc:
            log.warning("could not empty the scratch folder %s: %s", self.scratch, exc)
        finally:
            self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_store_output(url: str) -> RunLock:
    """Lock an output prefix, then remove what killed runs left: temporaries on the store and
    the local scratch folder's content (only the lock holder may)."""
    scratch = storage.scratch_dir(url.rstrip("/"))
    lock: StoreLock | OutputLock
    try:
        if os.environ.get("GEOSEG_STORE_LOCK", "").lower() == "local":
            raise NoConditionalWrites("GEOSEG_STORE_LOCK=local")
        lock = StoreLock.acquire(url)
    except NoConditionalWrites as exc:
        log.warning("%s: %s; one run at a time is enforced on this host only (lock %s); do not write this prefix "
                    "from two hosts at once", url, exc, scratch / LOCK_FILE)
        lock = OutputLock.acquire(scratch)
    claim = StoreClaim(url.rstrip("/"), scratch, lock)
    try:
        scratch.mkdir(parents=True, exist_ok=True)  # a run that just ended may have removed it
        storage.clear_scratch(scratch, keep=(LOCK_FILE,))
        for name in storage.remove_store_temporaries(url):
            log.info("removed %s, left by an earlier run that was killed", name)
    except BaseException:
        lock.release()
        raise
    return claim
