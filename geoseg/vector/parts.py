"""Per-chunk part files: finished polygons go from the workers to the GeoPackage without the client holding them.

Why: gathering every chunk's polygons on the client made its memory grow with the output
(about 1.2 KiB per polygon on a fragmented map: Python objects of the chunk results while they
were converted, and a heap that never shrank). Instead each chunk task writes its finished
polygons, already as the GeoPackage's rows (:data:`geoseg.io.gpkg.POLYGON_SCHEMA`), to an
Arrow IPC file in a scratch folder beside the output, and returns only its seam pieces and a
per-class tally. The client then streams the part files into the one GeoPackage writer in chunk
order, one record batch at a time, and deletes each once written.

A part file is written under a temporary name and renamed into place, so a file that exists is
complete: a retried task (its worker killed) simply writes it again, and nothing is lost with a
worker, because the files live on the shared file system the label store is read from.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from geoseg.io.gpkg import POLYGON_SCHEMA

#: Rows per record batch in a part file: the most the client holds of a part at once.
BATCH_ROWS = 32_768

#: Counts and areas per class of some polygons: ``{class_id: (count, area_m2)}``.
Tally = dict[int, tuple[int, float]]


def polygon_batch(wkb: np.ndarray | pa.BinaryArray, classes: np.ndarray, area_m2: np.ndarray, perimeter_m: np.ndarray,
                  names: Sequence[str]) -> pa.RecordBatch:
    """Rows of the polygon layer; ``names[i]`` is class ``i``'s name (looked up in Arrow, not per row).
    ``wkb`` may already be an Arrow array (the compiled polygoniser writes one), used as it is."""
    cls = pa.array(np.asarray(classes, dtype=np.int32), pa.int32())
    name_col = pa.array(list(names), pa.string()).take(cls) if len(cls) else pa.array([], pa.string())
    return pa.record_batch(
        [wkb if isinstance(wkb, pa.BinaryArray) else pa.array(wkb, pa.binary()), cls, name_col, pa.array(area_m2, pa.float64()),
         pa.array(perimeter_m, pa.float64())],
        schema=POLYGON_SCHEMA,
    )


def tally_of(classes: np.ndarray, areas: np.ndarray) -> Tally:
    """Count and area sum per class."""
    if len(classes) == 0:
        return {}
    ids, inv = np.unique(classes, return_inverse=True)
    counts = np.bincount(inv)
    sums = np.bincount(inv, weights=areas)
    return {int(i): (int(n), float(a)) for i, n, a in zip(ids.tolist(), counts.tolist(), sums.tolist())}


def write_part(path: str | Path, batch: pa.RecordBatch) -> None:
    """Write one part file atomically (a temporary name beside it, renamed when complete)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, POLYGON_SCHEMA) as writer:
            writer.write_table(pa.Table.from_batches([batch], schema=POLYGON_SCHEMA), max_chunksize=BATCH_ROWS)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_part(path: str | Path) -> Iterator[pa.RecordBatch]:
    """The record batches of a part file, read one at a time (each is freed once the writer drops it)."""
    with pa.OSFile(str(path), "rb") as src:
        reader = pa.ipc.open_file(src)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class InOrder:
    """Releases items in the order of their index, whatever order they arrive in.

    The chunks' part files are written to the GeoPackage in chunk order (row-major), so the
    features' order does not depend on which worker finished first; early ones wait on disk.
    """

    def __init__(self) -> None:
        self.next = 0
        self.waiting: dict[int, str | None] = {}

    def add(self, index: int, item: str | None) -> list[str]:
        """Register item ``index`` (``None``: nothing to write); return the items now in order."""
        self.waiting[index] = item
        out = []
        while self.next in self.waiting:
            got = self.waiting.pop(self.next)
            if got is not None:
                out.append(got)
            self.next += 1
        return out
