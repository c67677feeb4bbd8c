"""``panoptic.zarr`` from the published labels and an instance method's store, chunk by chunk.

Why a pass of its own: every instance method (watershed, Mask R-CNN, SAM) gives a raster of ids and a
class per id, but only the watershed agrees with the semantic labels by construction. Here each chunk's
instance pixels whose semantic class is not their instance's class are cleared, so in ``panoptic.zarr``
every instance pixel's class (``semantic``) is its instance's class, whatever the method. Each chunk
returns, per id, its pixels kept, its first pixel (row-major) and how many pixels were cleared; ids stay
as the method numbered them (an id left with no pixel is simply absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.geo import ChunkGrid, Window


@dataclass(frozen=True)
class PanopticTable:
    """Per id (index = id - 1): its pixels in ``panoptic.zarr`` and its first pixel (row-major global index;
    -1 for an id with no pixel); ``cleared``: instance pixels dropped for disagreeing with the labels."""

    size: np.ndarray
    first: np.ndarray
    cleared: int


@dataclass(frozen=True)
class _Assemble:
    labels: str
    instances: str
    out: str
    grid: ChunkGrid

    def __call__(self, window: Window, cls_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        from geoseg.io.labelstore import read_label_window
        from geoseg.io.panopticstore import PanopticWriter

        sem = read_label_window(self.labels, window)
        ids = read_label_window(self.instances, window, "instances").astype(np.uint32, copy=False)
        has = ids > 0
        agree = has & (sem.astype(np.int64) == cls_of[ids.astype(np.int64)])
        cleared = int(np.count_nonzero(has & ~agree))
        ids = np.where(agree, ids, 0).astype(np.uint32)
        PanopticWriter(self.out, self.grid).write(window, sem, ids)
        rows, cols = np.nonzero(ids)  # row-major order: the first occurrence of an id is its first pixel
        vals = ids[rows, cols].astype(np.int64)
        found, first_at, count = np.unique(vals, return_index=True, return_counts=True)
        first = (rows[first_at] + window.row_off).astype(np.int64) * self.grid.width + cols[first_at] + window.col_off
        return found, count.astype(np.int64), first, cleared


def assemble_panoptic(
    labels: str | Path, instances: str | Path, classes: np.ndarray, out: str | Path, *,
    client: Any = None, attrs: dict[str, Any] | None = None,
) -> tuple[Path, PanopticTable]:
    """Write ``out`` (``panoptic.zarr``) from the label store and an instance store on the same grid.

    ``classes``: the class of instance id k at index k - 1 (-1: drop the instance). Runs on ``client``'s
    workers when given.
    """
    import zarr

    from geoseg.errors import OutputError
    from geoseg.io.labelstore import read_label_info
    from geoseg.io.panopticstore import PanopticWriter

    info = read_label_info(labels)
    shape = zarr.open_array(str(Path(instances) / "instances"), mode="r", zarr_format=2).shape
    if tuple(shape) != info.grid.shape:
        raise OutputError(f"instance store {instances} ({shape}) is not on the grid of {labels} ({info.grid.shape})")
    grid = info.chunk_grid
    writer = PanopticWriter.create(out, grid, info.legend, attrs=attrs)
    cls_of = np.concatenate([[-1], np.asarray(classes, np.int64)])  # id 0 (none) has no class
    windows = list(grid.windows())
    task = _Assemble(str(info.path), str(instances), str(out), grid)
    if client is not None:
        shared = client.scatter(cls_of, broadcast=True)
        parts = client.gather(client.map(task, windows, [shared] * len(windows), pure=False))
    else:
        parts = [task(w, cls_of) for w in windows]
    n = int(np.asarray(classes).size)
    size = np.zeros(n, np.int64)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    for found, count, at, _ in parts:
        np.add.at(size, found - 1, count)
        np.minimum.at(first, found - 1, at)
    first[size == 0] = -1
    path = writer.finalize()
    return path, PanopticTable(size, first, sum(p[3] for p in parts))
