"""Instances of a label raster by marker-controlled watershed, chunk by chunk, with chunking-independent ids.

Two passes over the label store's chunks, each chunk read with a halo (:mod:`geoseg.methods.watershed`):

1. every chunk finds the markers in its core (a few numbers per object travel to the client);
   the client numbers them 1, 2, 3 … by the row-major rank of their pixel, so ids do not depend
   on the chunk size;
2. every chunk floods from the markers inside its halo window, with their global ids, and writes
   the core of the uint32 instance raster (0 = no instance) into ``instances.zarr``; it returns the
   pixel count of each id in its core.

The instance raster agrees with the semantic labels by construction: an instance's pixels are pixels
of its class. ``instances.csv`` lists each instance: id, class, marker position, area.
Memory follows the chunk (plus its halo); the client holds one position per instance.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.geo import ChunkGrid, Window, halo_window
from geoseg.io.atomic import write_text_atomic
from geoseg.methods.watershed import WatershedParams, distance_surface, find_markers, flood

#: Name of the raster inside ``instances.zarr`` (the objects stage writes the same layout).
INSTANCE_ARRAY = "instances"


@dataclass(frozen=True)
class InstanceTable:
    """Every instance, indexed by id - 1: its class, its marker's row and column, its pixel count.

    A model's instances (:mod:`geoseg.run.modelinstances`) have no marker: ``row``/``col`` are the
    instance's first pixel (row-major), and ``score`` holds the model's score of each.
    """

    cls: np.ndarray
    row: np.ndarray
    col: np.ndarray
    size: np.ndarray
    score: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.cls.size)


@dataclass(frozen=True)
class _Surfaces:
    """Reads one chunk's labels with the halo and gives each class's mask and distance surface."""

    labels: str
    grid: ChunkGrid
    classes: tuple[int, ...]
    params: WatershedParams

    def __call__(self, window: Window) -> tuple[Any, list[tuple[int, np.ndarray, np.ndarray]]]:
        from geoseg.io.labelstore import read_label_window

        hw = halo_window(window, self.params.halo, (self.grid.height, self.grid.width))
        labels = read_label_window(self.labels, hw.outer)
        out = []
        for c in self.classes:
            mask = labels == c
            surface = distance_surface(mask, hw.outer.row_off, hw.outer.col_off, self.grid.width, self.params.sigma)
            out.append((c, mask, surface))
        return hw, out


@dataclass(frozen=True)
class _MarkerTask:
    """Pass 1: the markers in one chunk's core, as global row-major pixel indices and their classes."""

    surfaces: _Surfaces

    def __call__(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        hw, per_class = self.surfaces(window)
        rs, cs = hw.core_in_outer
        idx, cls = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        width = self.surfaces.grid.width
        for c, mask, surface in per_class:
            r, col = find_markers(surface, mask, self.surfaces.params)
            keep = (r >= rs.start) & (r < rs.stop) & (col >= cs.start) & (col < cs.stop)
            g = (r[keep] + hw.outer.row_off).astype(np.int64) * width + (col[keep] + hw.outer.col_off)
            idx.append(g)
            cls.append(np.full(g.size, c, np.int64))
        return np.concatenate(idx), np.concatenate(cls)


@dataclass(frozen=True)
class _FloodTask:
    """Pass 2: flood one chunk from the markers in its halo window; write its core; count pixels per id."""

    surfaces: _Surfaces
    store: str | None

    def __call__(
        self, window: Window, markers: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx, ids, cls = markers
        hw, per_class = self.surfaces(window)
        width = self.surfaces.grid.width
        rows = idx // width - hw.outer.row_off
        cols = idx % width - hw.outer.col_off
        core = np.zeros((window.height, window.width), np.uint32)
        rs, cs = hw.core_in_outer
        cut: list[np.ndarray] = []
        for c, mask, surface in per_class:
            mine = cls == c
            flooded = flood(surface, mask, rows[mine], cols[mine], ids[mine])
            core |= flooded[rs, cs]
            cut.append(_cut_by_halo(flooded, hw.outer, self.surfaces.grid))
        if self.store is not None:
            from geoseg.io.labelstore import LabelStoreWriter

            LabelStoreWriter(self.store, self.surfaces.grid, array=INSTANCE_ARRAY).write(window, core)
        found, count = np.unique(core[core > 0], return_counts=True)
        beyond = np.intersect1d(found, np.concatenate(cut))  # instances of this core the window did not hold whole
        return found.astype(np.int64), count.astype(np.int64), beyond.astype(np.int64)


def _cut_by_halo(flooded: np.ndarray, outer: Window, grid: ChunkGrid) -> np.ndarray:
    """Ids on the halo window's edges that are not the raster's: their flood went on past what the window
    read, so where it stopped, and which pixels it took, depend on where the chunk lies."""
    edges = [flooded[0] if outer.row_off > 0 else None, flooded[:, 0] if outer.col_off > 0 else None,
             flooded[-1] if outer.row_off + outer.height < grid.height else None,
             flooded[:, -1] if outer.col_off + outer.width < grid.width else None]
    on = [e for e in edges if e is not None]
    return np.unique(np.concatenate(on)) if on else np.empty(0, np.uint32)


def _markers_near(
    sorted_idx: np.ndarray, ids: np.ndarray, cls: np.ndarray, window: Window, halo: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The markers inside ``window`` grown by ``halo`` (``sorted_idx`` ascending: rows are sorted too)."""
    lo = np.searchsorted(sorted_idx, max(window.row_off - halo, 0) * width)
    hi = np.searchsorted(sorted_idx, (window.row_off + window.height + halo) * width)
    sub = sorted_idx[lo:hi]
    col = sub % width
    keep = (col >= window.col_off - halo) & (col < window.col_off + window.width + halo)
    return sub[keep], ids[lo:hi][keep], cls[lo:hi][keep]


def segment_instances(
    labels_path: str | Path,
    classes: Sequence[int],
    out_dir: str | Path,
    params: WatershedParams = WatershedParams(),
    *,
    client: Any = None,
    chunk_size: int | None = None,
    attrs: dict[str, Any] | None = None,
) -> tuple[Path, InstanceTable]:
    """Split the regions of ``classes`` in a label store into instances; write ``instances.zarr``.

    Returns the store's path and the instance table. ``client``: a Dask client to run the chunks on
    (each pass is one ``client.map`` over the chunks); without, the chunks run here one by one.
    ``chunk_size``: process and store in chunks of this side (default: the label store's chunks).
    """
    from geoseg.errors import JobSpecError
    from geoseg.io.labelstore import LabelStoreWriter, read_label_info
    from geoseg.legend import NODATA_LABEL

    if not classes:
        raise JobSpecError("name at least one class to split into instances")
    if any(int(c) == NODATA_LABEL for c in classes):
        raise JobSpecError(f"{NODATA_LABEL} is the nodata label, not a class to split into instances")
    info = read_label_info(labels_path)
    grid = info.grid.tiles(chunk_size) if chunk_size else info.chunk_grid
    surfaces = _Surfaces(str(info.path), grid, tuple(int(c) for c in classes), params)
    windows = list(grid.windows())
    run: Callable[..., list[Any]] = (
        (lambda fn, *seqs: client.gather(client.map(fn, *seqs, pure=False))) if client is not None
        else (lambda fn, *seqs: list(map(fn, *seqs)))
    )
    parts = run(_MarkerTask(surfaces), windows)
    idx = np.concatenate([p[0] for p in parts])
    cls = np.concatenate([p[1] for p in parts])
    order = np.argsort(idx, kind="stable")
    idx, cls = idx[order], cls[order]
    if idx.size >= np.iinfo(np.uint32).max:
        raise JobSpecError(f"{idx.size} instances do not fit uint32 ids; raise min_distance or split the scene")
    ids = np.arange(1, idx.size + 1, dtype=np.int64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "instances.zarr"
    extra = {**(attrs or {}), "geoseg:kind": "instances", "geoseg:instance_method": "watershed",
             "geoseg:instance_classes": [int(c) for c in classes],
             "geoseg:watershed": {"min_distance": params.min_distance, "min_radius": params.min_radius,
                                  "sigma": params.sigma, "halo": params.halo}}
    writer = LabelStoreWriter.create(store, grid, (), attrs=extra, dtype="uint32", fill_value=0, array=INSTANCE_ARRAY)
    near = [_markers_near(idx, ids, cls, w, params.halo, grid.width) for w in windows]
    counts = run(_FloodTask(surfaces, str(store)), windows, near)
    # before the store is finished: a refused stage leaves no instances.zarr that looks complete
    _refuse_cut_instances(np.unique(np.concatenate([b for *_, b in counts])), idx, grid.width, params.halo)
    writer.finalize()
    size = np.zeros(idx.size, np.int64)
    for found, n, _ in counts:
        np.add.at(size, found - 1, n)
    table = InstanceTable(cls, idx // grid.width, idx % grid.width, size)
    return store, table


def _refuse_cut_instances(beyond: np.ndarray, idx: np.ndarray, width: int, halo: int) -> None:
    """Refuse instances that reached past a chunk's halo: their ids and shapes would depend on the chunking."""
    if beyond.size == 0:
        return
    from geoseg.errors import InputError

    r, c = divmod(int(idx[beyond[0] - 1]), width)
    raise InputError(f"{beyond.size} watershed instance(s) reach past the {halo} px halo (the first with its marker at "
                     f"row {r}, col {c}): objects that long (a forest block, a field) would be split by the chunking; "
                     "raise the halo above the largest object's length, or leave that class out of the things")


def write_instance_table(table: InstanceTable, path: str | Path, grid: Any, names: dict[int, str]) -> Path:
    """``instances.csv``: one row per instance with its class, marker position (pixel and map) and area.

    A model's instances: the position is the first pixel's (``first_row`` ...) and a ``score`` column follows.
    Positions keep 12 significant digits (degrees to 1e-9), areas 6 (a weed of 40 drone pixels is 0.001 m², not 0).
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    at = "marker" if table.score is None else "first"
    w.writerow(["instance_id", "class_id", "class_name", f"{at}_row", f"{at}_col", f"{at}_x", f"{at}_y",
                "area_px", "area_m2"] + ([] if table.score is None else ["score"]))
    px = grid.pixel_area_m2 if math.isfinite(grid.pixel_area_m2) else math.nan
    t = grid.transform
    for i in range(table.n):
        r, c = int(table.row[i]), int(table.col[i])
        x, y = t * (c + 0.5, r + 0.5)
        w.writerow([i + 1, int(table.cls[i]), names.get(int(table.cls[i]), ""), r, c, f"{x:.12g}", f"{y:.12g}",
                    int(table.size[i]), f"{table.size[i] * px:.6g}"]
                   + ([] if table.score is None else [f"{float(table.score[i]):.4f}"]))
    return write_text_atomic(path, buf.getvalue())


@dataclass(frozen=True)
class InstanceRun:
    """What :func:`run_instances` wrote, the instance table and, with a reference, the scores per class."""

    outputs: dict[str, Path]
    table: InstanceTable
    scores: list[Any]


def run_instances(
    labels_path: str | Path,
    classes: Sequence[int],
    out_dir: str | Path,
    params: WatershedParams = WatershedParams(),
    *,
    reference: str | Path | None = None,
    reference_field: str | None = None,
    reference_value: int | None = None,
    polygons: bool = True,
    chunk_size: int | None = None,
    client: Any = None,
) -> InstanceRun:
    """Instances of a label raster, their table and polygons, and (with a reference) their accuracy.

    Writes ``instances.zarr``, ``instances.csv``, ``instances.gpkg`` and, with ``reference``
    (a vector layer, one instance per feature, or an instance raster), ``instance_metrics.csv``.
    The reference is opened and checked before any chunk is read.
    """
    from geoseg.accuracy.instanceeval import (
        evaluate_instances,
        open_reference_instances,
        write_instance_metrics,
    )
    from geoseg.io.labelstore import ARRAY_NAME, read_label_info
    from geoseg.vector.instancepolygons import instance_polygons, write_instance_polygons

    info = read_label_info(labels_path)
    grid = info.grid.tiles(chunk_size) if chunk_size else info.chunk_grid
    ref = None
    if reference is not None:
        ref = open_reference_instances(reference, info.grid, field=reference_field, value=reference_value)
    out = Path(out_dir)
    store, table = segment_instances(labels_path, classes, out, params, client=client, chunk_size=chunk_size)
    names = {c.id: c.name for c in info.legend}
    outputs = {"instances": store,
               "instances_table": write_instance_table(table, out / "instances.csv", info.grid, names)}
    if polygons:
        ids, geoms = instance_polygons(store, grid, INSTANCE_ARRAY, client)
        outputs["instance_polygons"] = write_instance_polygons(out / "instances.gpkg", ids, geoms, table.cls,
                                                               table.size, info.grid, names)
    scores: list[Any] = []
    if ref is not None:
        scores, _ = evaluate_instances(store, table.cls, table.size, grid, ref, client=client,
                                       map_valid=(info.path, ARRAY_NAME))
        outputs["instance_metrics"] = write_instance_metrics(scores, out / "instance_metrics.csv", names)
    return InstanceRun(outputs, table, scores)
