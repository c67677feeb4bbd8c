"""One way to write a file or folder so that readers see the old version or the new one, never half.

Every writer in geoseg (CSV, JSON, HTML, GeoPackage, GeoTIFF, checkpoints, Zarr stores) goes
through :func:`atomic_path`: the content is written under a hidden temporary name beside the
final one, unique to this process and call, and renamed into place only when writing succeeded.
On any failure (an exception, Ctrl-C) the temporary file and its SQLite side files are removed,
and an older output at the final name is left as it was. A run killed with SIGKILL can still
leave a temporary behind: its name matches :data:`TEMP_GLOB`, so the next run of the job can
find and remove it (:func:`remove_stale_temporaries`).

Temporary names keep the final extension (GDAL and pyogrio choose drivers by it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Marker in every temporary name: ``.<stem>.<pid>-<random>.geoseg-tmp<suffix>``.
TEMP_TAG = ".geoseg-tmp"
#: Glob that matches the temporaries :func:`atomic_path` creates in a folder.
TEMP_GLOB = f".*{TEMP_TAG}*"
#: Files SQLite (GeoPackage) may create beside a database while it is open.
_SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


def temporary_name(final: Path) -> Path:
    """A hidden name beside ``final``, unique to this process and call, with ``final``'s suffix.

    >>> p = temporary_name(Path("out/metrics.csv"))
    >>> p.parent, p.name.startswith(".metrics."), p.name.endswith(".geoseg-tmp.csv")
    (PosixPath('out'), True, True)
    """
    return final.with_name(f".{final.stem}.{os.getpid()}-{uuid.uuid4().hex[:10]}{TEMP_TAG}{final.suffix}")


def remove_path(path: Path) -> None:
    """Remove a file (with its SQLite side files) or a folder; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    for side in _SQLITE_SIDE_FILES:
        Path(f"{path}{side}").unlink(missing_ok=True)


def replace_path(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, replacing a file or a folder there.

    A folder cannot be renamed over a non-empty folder, so an old one is first renamed aside
    (one rename, so ``final`` is missing only between two renames) and removed afterwards.
    """
    if tmp.is_dir() and final.exists():
        aside = temporary_name(final)
        os.replace(final, aside)
        os.replace(tmp, final)
        remove_path(aside)
    else:
        os.replace(tmp, final)


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place when the block succeeds.

    The caller writes a file or a folder at the yielded path. Nothing written means an error
    (a writer that silently wrote nothing must not replace a good output).
    """
    final = Path(final)
    tmp = temporary_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
        replace_path(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        for side in _SQLITE_SIDE_FILES:
            Path(f"{tmp}{side}").unlink(missing_ok=True)


def write_atomic(final: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` to ``final``; returns ``final``."""
    final = Path(final)
    with atomic_path(final) as tmp:
        write(tmp)
    return final


def write_text_atomic(final: str | os.PathLike[str], text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(final: str | os.PathLike[str], data: Any, indent: int = 2) -> Path:
    """Write JSON atomically (values JSON does not know are written with ``str``)."""
    return write_text_atomic(final, json.dumps(data, indent=indent, default=str) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporaries an earlier, killed run left in ``folder`` (not recursive); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(TEMP_GLOB))
    for p in stale:
        remove_path(p)
    return stale
