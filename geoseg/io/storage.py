"""Outputs on object storage: an fsspec URL (``s3://bucket/prefix``, ``gs://``, ``memory://``) as the output.

Object stores have no rename, so a store cannot be built aside and moved into place. Instead
completion is published by one object written last, which readers and reruns trust:

* a label store (``labels.zarr``) is built in place; its ``.zmetadata`` (consolidated metadata,
  carrying ``geoseg:complete``) is that store's commit object. A rerun deletes it first, so a
  store being rebuilt is never mistaken for a finished one; readers open only consolidated stores.
* the output prefix as a whole is published by :data:`MANIFEST` (``geoseg-manifest.json``): the
  outputs of the finished run with their sizes, written after every one of them. A rerun removes
  it before it writes anything.

Small outputs (GeoPackage, CSV, HTML, ``run.json``) are built on local scratch, as on a local
disk, and uploaded (:func:`upload`); the scratch is emptied when the run claims the prefix and
when it ends (:func:`clear_scratch`). One run at a time per prefix is :mod:`geoseg.run.storelock`'s
(its lock object :data:`LOCK_OBJECT`); while holding it a run removes what killed runs left on the
store (:func:`remove_store_temporaries`). Credentials and endpoints come from the usual fsspec/botocore
sources (``AWS_*`` environment variables, ``AWS_ENDPOINT_URL``), which Dask workers inherit.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from geoseg.errors import OutputError, OutputInUseError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: botocore's errors for credentials that are missing or cannot be read (named, so botocore stays optional).
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "NoAuthTokenError", "ProfileNotFound"}


def credential_error(exc: BaseException, url: str) -> OutputError | None:
    """An :class:`OutputError` saying how to give credentials, for botocore's credential errors, else None."""
    if not any(t.__name__ in _CREDENTIAL_ERRORS for t in type(exc).__mro__):
        return None
    return OutputError(f"no usable credentials for {url} ({type(exc).__name__}: {exc}); set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the environment of geoseg and its workers")


def _store_errors(fn: F) -> F:
    """Credential errors of the store become an OutputError naming the URL (the first argument)."""

    @functools.wraps(fn)
    def wrapper(url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(url, *args, **kwargs)
        except Exception as exc:
            mapped = credential_error(exc, str(url))
            if mapped is None:
                raise
            raise mapped from exc

    return wrapper  # type: ignore[return-value]


MANIFEST = "geoseg-manifest.json"
#: The run lock's object directly under an output prefix (the name of the local lock file).
LOCK_OBJECT = ".geoseg.lock"


def is_url(path: str | os.PathLike[str] | None) -> bool:
    """True for an fsspec URL (``scheme://...``); local paths, ``/vsi...`` and ``file`` paths are not."""
    if path is None or isinstance(path, Path):
        return False
    s = str(path)
    return "://" in s and not s.startswith("file://")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a URL (no ``os.path`` rules, no normalisation of the scheme)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


#: The first import of fsspec in a process, one thread at a time: a Dask worker's task threads all reach
#: :func:`filesystem` at once when a stage starts, and two threads importing fsspec's modules concurrently
#: failed with Python's ``_DeadlockError`` on ``fsspec.mapping`` (the S3 resume test, after a sampling stage).
_FSSPEC_IMPORT = threading.Lock()


def _fsspec() -> Any:
    with _FSSPEC_IMPORT:
        import fsspec
        import fsspec.core
    return fsspec


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it (raises ``OutputError`` if unknown)."""
    fsspec = _fsspec()
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise OutputError(f"cannot use {url}: {exc} (for s3:// install geoseg[s3])") from exc


@_store_errors
def exists(url: str) -> bool:
    fs, p = filesystem(url)
    fs.invalidate_cache(p)  # another process may have written it since this one listed
    return bool(fs.exists(p))


@_store_errors
def read_text(url: str) -> str | None:
    """The object's text, or None when there is none."""
    fs, p = filesystem(url)
    try:
        with fs.open(p, "rb") as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


@_store_errors
def write_bytes(url: str, data: bytes) -> None:
    """One PUT: an object appears whole or not at all (what object stores guarantee)."""
    fs, p = filesystem(url)
    fs.pipe_file(p, data)


@_store_errors
def remove(url: str) -> None:
    """Remove an object or a whole prefix; nothing there is fine."""
    fs, p = filesystem(url)
    try:
        if fs.exists(p):
            fs.rm(p, recursive=True)
    except FileNotFoundError:
        pass
    fs.invalidate_cache()


@_store_errors
def listdir(url: str) -> list[str]:
    """Names directly under ``url`` (empty when there is nothing)."""
    fs, p = filesystem(url)
    fs.invalidate_cache(p)
    try:
        return [name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(p, detail=False)]
    except FileNotFoundError:
        return []


def upload(local: Path, url: str) -> None:
    """Copy a local file (or folder) to ``url``, replacing what is there."""
    _store_errors(lambda u: _upload(local, u))(url)


def _upload(local: Path, url: str) -> None:
    fs, p = filesystem(url)
    if local.is_dir():
        remove(url)
        fs.put(str(local), p, recursive=True)
    else:
        fs.put_file(str(local), p)


def scratch_dir(url: str) -> Path:
    """A local folder for the outputs built before upload; the same URL gets the same folder,
    so a killed run's scratch (its lock, model, partial files) is found again by the rerun.
    ``GEOSEG_SCRATCH`` chooses the parent (default: the system temporary folder)."""
    parent = Path(os.environ.get("GEOSEG_SCRATCH") or tempfile.gettempdir()) / "geoseg-scratch"
    folder = parent / hashlib.sha256(url.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def clear_scratch(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove everything in a scratch folder but the names in ``keep`` (only the lock holder may:
    another run of the same URL on this host uses the same folder)."""
    from geoseg.io.atomic import remove_path

    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name not in keep:
            remove_path(p)


@_store_errors
def remove_store_temporaries(url: str) -> list[str]:
    """Remove what killed runs left under ``url``; returns what was removed.

    Two kinds: objects named like :mod:`geoseg.io.atomic`'s temporaries (``TEMP_GLOB``, at any depth:
    a folder uploaded from scratch may carry one), and on S3 unfinished multipart uploads (a large
    file whose upload was killed: invisible to listings, but stored and billed until aborted).
    Call only while holding the prefix's lock: a live run's uploads would be aborted too."""
    from geoseg.io.atomic import TEMP_GLOB

    fs, p = filesystem(url)
    fs.invalidate_cache()
    try:
        keys = fs.find(p)
    except FileNotFoundError:
        keys = []
    stale = [k for k in keys if fnmatch.fnmatchcase(k.rsplit("/", 1)[-1], TEMP_GLOB)]
    if stale:
        fs.rm(stale)
    removed = [f"{url.split('://', 1)[0]}://{k}" for k in stale]
    if "s3" in protocols(fs):
        try:
            removed += _abort_unfinished_uploads(fs, p)
        except PermissionError as exc:  # a policy without s3:ListBucketMultipartUploads: the run still may write
            log.warning("could not list unfinished uploads under %s (%s); a bucket lifecycle rule "
                        "(AbortIncompleteMultipartUpload) removes them", url, exc)
    fs.invalidate_cache()
    return removed


def _abort_unfinished_uploads(fs: Any, path: str) -> list[str]:
    bucket, key, _ = fs.split_path(path)
    removed: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key.rstrip("/") + "/", **marker)
        for upload in page.get("Uploads", []):
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            removed.append(f"s3://{bucket}/{upload['Key']} (unfinished upload {upload['UploadId'][:12]})")
        if not page.get("IsTruncated"):
            return removed
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


def protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


@_store_errors
def read_manifest(url: str) -> dict[str, Any] | None:
    """The published manifest of an output prefix, or None when no finished run is published."""
    text = read_text(join(url, MANIFEST))
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def unpublish(url: str) -> None:
    """Withdraw a published run before anything under ``url`` is rewritten."""
    remove(join(url, MANIFEST))


@_store_errors
def publish(url: str, outputs: dict[str, str]) -> dict[str, Any]:
    """Write the manifest last: ``outputs`` (name → URL under ``url``) with their sizes in bytes."""
    fs, _ = filesystem(url)
    fs.invalidate_cache()
    entries = {}
    for name, target in sorted(outputs.items()):
        _, p = filesystem(target)
        if not fs.exists(p):
            raise OutputError(f"output {target} is missing on the store; rerun the job")
        size = fs.du(p) if fs.isdir(p) else fs.size(p)
        entries[name] = {"url": target, "bytes": int(size)}
    manifest = {"geoseg_manifest": 1, "outputs": entries}
    write_bytes(join(url, MANIFEST), json.dumps(manifest, indent=1).encode())
    return manifest


class RemoteOutput:
    """A run's output prefix on object storage, with the local scratch folder its small files are built in.

    The run writes as on a local disk into :attr:`scratch` (lock, ``model.json``, GeoPackage, CSV,
    HTML, ``run.json``); label stores go straight to :meth:`target`. :meth:`upload_outputs` copies
    the built files up and :meth:`close` uploads ``run.json`` and, for a complete run, publishes.
    The prefix's lock (:mod:`geoseg.run.storelock`) is taken before any of this.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.scratch = scratch_dir(self.url)

    @classmethod
    def of(cls, output: str | os.PathLike[str]) -> RemoteOutput | None:
        return cls(str(output)) if is_url(output) else None

    def target(self, name: str) -> str:
        return join(self.url, name)

    def check(self, job_name: str) -> None:
        """Refuse a prefix that holds another job's run (the store-side twin of a local folder check)."""
        text = read_text(self.target("run.json"))
        if text is not None:
            try:
                previous = json.loads(text).get("job", {}).get("name")
            except (ValueError, AttributeError):
                previous = None
            if previous != job_name:
                raise OutputInUseError(f"{self.url} holds the output of another run ({previous or 'unknown'!r}); "
                                  "choose another output prefix or delete it")
        elif [n for n in listdir(self.url) if n != LOCK_OBJECT]:  # a run that just took the lock: its refusal says so
            raise OutputError(f"{self.url} is not empty and is not a geoseg output; choose an empty or new prefix")

    def begin(self, record: Path) -> None:
        """Withdraw the published run, then put the ``running`` record on the store."""
        unpublish(self.url)
        upload(record, self.target(record.name))

    def upload_outputs(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Upload every output built on scratch; returns the outputs as URLs."""
        mapped: dict[str, Any] = {}
        for name, value in outputs.items():
            if isinstance(value, str) and is_url(value):
                mapped[name] = value
                continue
            rel = Path(value).resolve().relative_to(self.scratch.resolve()).as_posix()
            upload(Path(value), self.target(rel))
            mapped[name] = self.target(rel)
        return mapped

    def close(self, record: Path, outputs: dict[str, Any] | None,
              before_publish: Callable[[], None] | None = None) -> None:
        """Upload the final ``run.json``; with ``outputs`` (a complete run) publish the manifest last,
        after ``before_publish`` (the lock's check that the prefix is still this run's) passed."""
        upload(record, self.target(record.name))
        if outputs is not None:
            if before_publish is not None:
                before_publish()
            publish(self.url, {**{k: str(v) for k, v in outputs.items()}, "run": self.target(record.name)})
