"""The chunk manifest of a finished label store: which chunk objects exist and their CRC-32.

A finished ``labels.zarr`` (or ``confidence.zarr``, or an overview level) carries
``geoseg-manifest.json`` at its root, written by :meth:`LabelStoreWriter.finalize` just before
the store is renamed into place::

    {"format": 1, "algorithm": "crc32",
     "arrays": {"labels": {"chunk_grid": [rows, cols], "chunks": {"0.0": 1234567, ...}}}}

Zarr does not write a chunk that is all fill value, so a chunk of the grid that is *not* listed
is legitimately absent (all nodata); a listed chunk that is missing, or whose bytes give another
CRC, is damage. Readers open the store through :class:`VerifyingStore`, which checks each chunk
object's CRC when Zarr fetches its bytes (the bytes are already in memory: one ``zlib.crc32``
per chunk read, far cheaper than the zstd decode that follows) and raises an
:class:`~geoseg.errors.LabelStoreError` naming the chunk and the store. Stores written before the
manifest existed have none and are read unverified. :func:`verify_store` checks a whole store
at once (``geoseg verify``).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from geoseg.errors import LabelStoreError
from geoseg.io.atomic import write_json_atomic

MANIFEST_FILE = "geoseg-manifest.json"
FORMAT = 1
ALGORITHM = "crc32"
_CHUNK_NAME = re.compile(r"^\d+\.\d+$")  # Zarr v2 chunk keys with the "." separator


def crc32(data: bytes) -> int:
    """The manifest's checksum of one chunk object's bytes (unsigned CRC-32).

    >>> crc32(b"geoseg")
    189742137
    """
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest: per array, the chunk grid and the CRC of each chunk object written."""

    store: Path
    arrays: dict[str, tuple[tuple[int, int], dict[str, int]]]

    def expected(self, array: str, chunk: str) -> int | None:
        """The CRC a chunk object must have, or ``None`` when the chunk is absent by design (all fill)."""
        return self.arrays[array][1].get(chunk)


def build_manifest(store: str | Path, array: str | Sequence[str], chunk_grid: tuple[int, int]) -> dict[str, Any]:
    """Checksum every chunk object of ``array`` (or of several arrays on one chunk grid, e.g. the two
    rasters of ``panoptic.zarr``) in ``store`` (run once, at finalise)."""
    arrays = {}
    for name in [array] if isinstance(array, str) else array:
        folder = Path(store) / name
        chunks = {
            p.name: crc32(p.read_bytes())
            for p in sorted(folder.iterdir())
            if p.is_file() and _CHUNK_NAME.match(p.name)
        } if folder.is_dir() else {}
        arrays[name] = {"chunk_grid": list(chunk_grid), "chunks": chunks}
    return {"format": FORMAT, "algorithm": ALGORITHM, "arrays": arrays}


def write_manifest(store: str | Path, array: str | Sequence[str], chunk_grid: tuple[int, int]) -> Path:
    """Write ``geoseg-manifest.json`` into ``store`` (atomically) and return its path."""
    path = Path(store) / MANIFEST_FILE
    write_json_atomic(path, build_manifest(store, array, chunk_grid))
    return path


def read_manifest(store: str | Path) -> Manifest | None:
    """The store's manifest (cached per file version), or ``None`` for a store without one."""
    path = Path(store) / MANIFEST_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabelStoreError(f"cannot read the chunk manifest {path}: {exc.strerror or exc}") from exc
    return _load(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _load(path: str, mtime_ns: int, size: int) -> Manifest:
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT or data.get("algorithm") != ALGORITHM:
            raise ValueError(f"unknown manifest format {data.get('format')!r}/{data.get('algorithm')!r}")
        arrays = {
            name: ((int(a["chunk_grid"][0]), int(a["chunk_grid"][1])), {str(k): int(v) for k, v in a["chunks"].items()})
            for name, a in data["arrays"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise LabelStoreError(f"the chunk manifest {path} is damaged ({exc}); rerun the job that wrote the store") from exc
    return Manifest(Path(path).parent, arrays)


def check_chunk(manifest: Manifest, array: str, chunk: str, data: bytes | None) -> None:
    """Raise ``LabelStoreError`` when a chunk object is missing, unexpected or has another CRC."""
    if array not in manifest.arrays or not _CHUNK_NAME.match(chunk):
        return
    want = manifest.expected(array, chunk)
    where = f"chunk {array}/{chunk} of label store {manifest.store}"
    if data is None:
        if want is not None:
            raise LabelStoreError(f"{where} is missing; restore the store or rerun the job that wrote it")
        return
    if want is None:
        raise LabelStoreError(f"{where} is not in the store's manifest; restore the store or rerun the job")
    got = crc32(data)
    if got != want:
        raise LabelStoreError(
            f"{where} is corrupt (CRC-32 {got:08x}, manifest {want:08x}); restore the store or rerun the job"
        )


def verify_store(store: str | Path) -> list[str]:
    """Every problem of a finished store's chunks, one line each (empty: it matches its manifest)."""
    store = Path(store)
    manifest = read_manifest(store)
    if manifest is None:
        return [f"{store}: no {MANIFEST_FILE} (written by an older geoseg, or not a finished store)"]
    problems = []
    for array, ((rows, cols), chunks) in manifest.arrays.items():
        folder = store / array
        present = {p.name for p in folder.iterdir() if _CHUNK_NAME.match(p.name)} if folder.is_dir() else set()
        for name in sorted(set(chunks) | present):
            i, j = (int(v) for v in name.split("."))
            if not (i < rows and j < cols):
                problems.append(f"chunk {array}/{name} of label store {store} lies outside its {rows}x{cols} grid")
                continue
            try:
                check_chunk(manifest, array, name, (folder / name).read_bytes() if name in present else None)
            except LabelStoreError as exc:
                problems.append(str(exc))
    return problems


def verifying_store(store: str | Path):
    """A read-only Zarr store on ``store`` that checks chunks against its manifest (a plain one without)."""
    from zarr.storage import LocalStore

    local = LocalStore(str(store), read_only=True)
    manifest = read_manifest(store)
    return local if manifest is None else VerifyingStore(local, manifest)


def _verifying_class():
    from zarr.storage import WrapperStore

    class _VerifyingStore(WrapperStore):
        """Checks each chunk object it returns against the manifest (see the module docstring)."""

        def __init__(self, store: Any, manifest: Manifest) -> None:
            super().__init__(store)
            self.manifest = manifest

        def _with_store(self, store: Any) -> _VerifyingStore:
            return type(self)(store, self.manifest)

        def __reduce__(self):
            return (VerifyingStore, (self._store, self.manifest))

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            buf = await self._store.get(key, prototype, byte_range)
            array, _, chunk = key.rpartition("/")
            if byte_range is None and array in self.manifest.arrays:
                check_chunk(self.manifest, array, chunk, None if buf is None else buf.to_bytes())
            return buf

    return _VerifyingStore


def VerifyingStore(store: Any, manifest: Manifest) -> Any:
    """Wrap a Zarr ``store`` so chunk reads are checked against ``manifest``."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _verifying_class()
    return _CLASS(store, manifest)


_CLASS: Any = None
