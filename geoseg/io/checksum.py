"""Content checksums of input files, computed once and cached by what the file system says of them.

A resume key built from (path, size, mtime) is fooled by a file rewritten with the same size
and modification time (``cp -p``, ``rsync -a``, a restore from backup): the next run reused
stale chunks. The key now holds a SHA-256 of each input's bytes. Hashing reads the whole file
(measured in README's limits), so the digest is cached by ``(device, inode, size, mtime_ns,
ctime_ns)``: ``ctime`` changes on every write or rename and cannot be set back by ``cp -p`` or
``touch``, so a rewritten file misses the cache even when its size and mtime are kept.

A run's inputs are looked up together (:func:`content_digests`): the cache is read and written once
per run, not once per file (a mosaic of 10,000 tiles rewrote it 10,000 times), and it keeps at least
one run's inputs. The cache is a small JSON file in the user's cache folder (``$GEOSEG_CACHE_DIR``, else
``$XDG_CACHE_HOME/geoseg``, else ``~/.cache/geoseg``), rewritten atomically; when it cannot be
written the digest is simply computed each time. Remote inputs (URLs) are not hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_FILE = "checksums.json"
#: Entries kept in the cache (the most recently used).
MAX_ENTRIES = 2000
_BLOCK = 8 << 20


def cache_dir() -> Path:
    if os.environ.get("GEOSEG_CACHE_DIR"):
        return Path(os.environ["GEOSEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoseg"


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 8 MiB blocks (memory stays flat)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _load(cache: Path) -> dict[str, dict]:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def content_digest(path: str) -> str | None:
    """The SHA-256 of a local file (cached), or ``None`` for a URL or a path that is not a file."""
    return content_digests([path])[0]


def content_digests(paths: Sequence[str]) -> list[str | None]:
    """:func:`content_digest` of each path, the cache read once and written at most once."""
    cache = cache_dir() / CACHE_FILE
    entries: dict[str, dict] | None = None
    out: list[str | None] = []
    changed = False
    for path in paths:
        if "://" in path or path.startswith("/vsi"):
            out.append(None)
            continue
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            out.append(None)
            continue
        if not p.is_file():
            out.append(None)
            continue
        if entries is None:
            entries = _load(cache)
        key = str(p.resolve())
        hit = entries.get(key)
        if hit and hit.get("stamp") == _stamp(st):
            entries[key] = entries.pop(key)  # most recently used last
            out.append(str(hit["sha256"]))
            continue
        digest = sha256_file(p)
        out.append(digest)
        if _stamp(p.stat()) != _stamp(st):  # changed while it was read: do not cache a digest of half of each
            continue
        entries.pop(key, None)
        entries[key] = {"stamp": _stamp(st), "sha256": digest}
        changed = True
    if changed and entries is not None:
        _save(cache, dict(list(entries.items())[-max(MAX_ENTRIES, len(paths)):]))
    return out


def _save(cache: Path, entries: dict[str, dict]) -> None:
    from geoseg.io.atomic import write_json_atomic

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, entries, indent=0)
    except OSError as exc:
        log.debug("checksum cache %s not written: %s", cache, exc)
