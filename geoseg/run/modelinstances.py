"""Instances from a tile-level model (Mask R-CNN, SAM, ...) over a scene, chunk by chunk, whatever the chunking.

The rule is :mod:`geoseg.methods.tilemerge`'s; this module runs it on a Dask cluster (or here) in
three passes over the chunks of the processing grid:

1. **propose**: each chunk runs the model on the global tiles whose first core pixel it holds (every
   tile exactly once in the scene, each alone), reading its tiles' windows with their overlap; the
   owned proposals stay on the worker as a future (masks cut to their boxes: small);
2. **paint**: each chunk gathers the proposals of the chunks whose tiles can decide its pixels
   (:meth:`~geoseg.methods.tilemerge.TileLayout.merge_margin`), suppresses and paints its core, and
   returns, per proposal it painted, its first painted pixel, pixel count, class and score; the client numbers the
   instances 1, 2, 3 … by the row-major rank of their first pixel;
3. **write**: each chunk paints again (no model: numpy only) and writes its core of ``instances.zarr``
   as uint32 ids.

The model runs once per tile; memory follows the chunk plus its tiles' overlap, and the proposals
(a few hundred bytes per object) are held on the workers between passes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.geo import ChunkGrid, Window
from geoseg.methods.proposals import TileInstanceModel
from geoseg.methods.tilemerge import (
    IOU_THRESHOLD,
    Proposals,
    TileLayout,
    cut_by_tile,
    first_pixels,
    layout_of,
    merge_window,
    propose_tiles,
)
from geoseg.run.instances import INSTANCE_ARRAY, InstanceTable, write_instance_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Propose:
    """Pass 1: the owned proposals of the tiles a chunk holds."""

    model: TileInstanceModel
    scene: Any  # geoseg.io.scene.Scene
    layout: TileLayout

    def __call__(self, window: Window) -> Proposals:
        from geoseg.io.scene import read_window

        tiles = self.layout.tiles_owned_by(window)
        if not tiles:
            return Proposals.empty()
        L = self.layout
        r0 = max(min(i for i, _ in tiles) * L.tile - L.overlap, 0)
        c0 = max(min(j for _, j in tiles) * L.tile - L.overlap, 0)
        r1 = min((max(i for i, _ in tiles) + 1) * L.tile + L.overlap, L.height)
        c1 = min((max(j for _, j in tiles) + 1) * L.tile + L.overlap, L.width)
        read = Window(r0, c0, r1 - r0, c1 - c0)
        image, valid = read_window(self.scene.for_window(read), read)
        return propose_tiles(self.model, image, valid, (r0, c0), L, tiles)


@dataclass(frozen=True)
class _Paint:
    """Passes 2 and 3: a chunk's core painted from its neighbourhood's proposals; summary or written ids."""

    iou_threshold: float
    scene_width: int
    store: str | None = None
    grid: ChunkGrid | None = None
    layout: TileLayout | None = None  # for the summary's cut flags

    def __call__(self, window: Window, parts: Sequence[Proposals], lut: tuple[np.ndarray, np.ndarray] | None = None):
        near = Proposals.concat(parts)  # sorted by uid
        uids = merge_window(near, window, self.iou_threshold)
        if lut is None:  # per painted proposal: uid, first pixel, pixel count, class, score, cut by its tile
            u, first, count = first_pixels(uids, window, self.scene_width)
            at = np.searchsorted(near.uid, u)
            cut = cut_by_tile(near, self.layout)[at] if self.layout is not None else np.zeros(u.size, bool)
            return u, first, count, near.class_id[at], near.score[at], cut
        from geoseg.io.labelstore import LabelStoreWriter

        known, ids = lut
        flat = uids.ravel() - 1
        out = np.zeros(flat.size, np.uint32)
        hit = flat >= 0
        if hit.any():
            pos = np.searchsorted(known, flat[hit])
            out[hit] = ids[pos]
        assert self.store is not None and self.grid is not None
        LabelStoreWriter(self.store, self.grid, array=INSTANCE_ARRAY).write(window, out.reshape(uids.shape))
        return None


def _neighbours(grid: ChunkGrid, layout: TileLayout) -> list[list[int]]:
    """For each chunk, the chunks holding a tile whose proposals can decide its pixels (indices, row-major)."""
    windows = list(grid.windows())
    owner: dict[tuple[int, int], int] = {}
    for k, w in enumerate(windows):
        for t in layout.tiles_owned_by(w):
            owner[t] = k
    return [sorted({owner[t] for t in layout.tiles_meeting(w, layout.merge_margin()) if t in owner}) for w in windows]


@dataclass(frozen=True)
class ModelInstances:
    """Where the instance raster went, and every instance's class, first pixel, size and score (index id - 1)."""

    store: Path
    table: InstanceTable
    #: Instances whose object reached past the window their tile was read with (maybe several per object).
    cut: int = 0


def segment_model_instances(
    scene: Any,
    model: TileInstanceModel,
    out_dir: str | Path,
    *,
    chunk_size: int = 1024,
    iou_threshold: float = IOU_THRESHOLD,
    client: Any = None,
    resources: dict[str, float] | None = None,
    attrs: dict[str, Any] | None = None,
    method: str = "model",
) -> ModelInstances:
    """Instances of ``model`` over ``scene`` (a :class:`~geoseg.io.scene.Scene` or image path(s)); ``instances.zarr``.

    ``model`` is small and picklable (heavy weights load once per worker process, as DeepLab's do).
    ``client``: a Dask client (each pass one ``client.map``, proposals kept on the workers); without,
    the chunks run here one by one. ``resources`` (e.g. ``{"GPU": 1}``) go to the model's tasks only.
    """
    from geoseg.errors import JobSpecError
    from geoseg.io.labelstore import LabelStoreWriter
    from geoseg.io.scene import Scene, open_scene

    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    if not 0.0 < iou_threshold <= 1.0:
        raise JobSpecError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    grid = scene.chunk_grid(chunk_size)
    layout = layout_of(model, scene.height, scene.width)
    windows = list(grid.windows())
    near = _neighbours(grid, layout)
    propose = _Propose(model, scene, layout)
    paint = _Paint(iou_threshold, scene.width, layout=layout)
    run: Callable[..., list[Any]]
    if client is not None:
        props = client.map(propose, windows, pure=False, resources=resources)
        run = lambda fn, *seqs: client.gather(client.map(fn, *seqs, pure=False))  # noqa: E731
    else:
        props = [propose(w) for w in windows]
        run = lambda fn, *seqs: list(map(fn, *seqs))  # noqa: E731
    parts = [[props[k] for k in ks] for ks in near]
    summaries = run(paint, windows, parts)
    uid, first, count, cls_of, score_of, cut_of = (np.concatenate([s[k] for s in summaries]) for k in range(6))
    known, at = np.unique(uid, return_index=True)
    cut = int(cut_of[at].sum())
    if cut:
        log.warning("%d instance(s) reach past the %d px window their tile was read with: the model saw part of "
                    "each, so one object may be counted as several; raise the tile overlap (at most tile/2) or the "
                    "tile", cut, layout.side)
    pos = np.searchsorted(known, uid)
    first_of = np.full(known.size, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_of, pos, first)
    size = np.zeros(known.size, np.int64)
    np.add.at(size, pos, count)
    rank = np.argsort(first_of, kind="stable")  # ids: the row-major rank of each instance's first pixel
    ids = np.empty(known.size, np.uint32)
    ids[rank] = np.arange(1, known.size + 1, dtype=np.uint32)
    cls, score = cls_of[at], score_of[at]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "instances.zarr"
    extra = {**(attrs or {}), "geoseg:kind": "instances", "geoseg:instance_method": method,
             "geoseg:tiles": {"tile": layout.tile, "overlap": layout.overlap, "iou_threshold": iou_threshold}}
    writer = LabelStoreWriter.create(store, grid, (), attrs=extra, dtype="uint32", fill_value=0, array=INSTANCE_ARRAY)
    write = _Paint(iou_threshold, scene.width, str(store), grid)
    # each chunk gets the ids of the proposals it painted in pass 2 (the same ones: painting is deterministic)
    luts = [(u, ids[np.searchsorted(known, u)]) for u in (s[0] for s in summaries)]
    run(write, windows, parts, luts)
    writer.finalize()
    table = InstanceTable(cls[rank], first_of[rank] // scene.width, first_of[rank] % scene.width, size[rank],
                          score=score[rank])
    return ModelInstances(store, table, cut)


@dataclass(frozen=True)
class ModelInstanceRun:
    """What :func:`run_model_instances` wrote, the instance table and, with a reference, the scores per class."""

    outputs: dict[str, Path]
    table: InstanceTable
    scores: list[Any]


def run_model_instances(
    image: Any,
    model: TileInstanceModel,
    out_dir: str | Path,
    *,
    names: dict[int, str] | None = None,
    reference: str | Path | None = None,
    reference_field: str | None = None,
    reference_value: int | None = None,
    polygons: bool = True,
    chunk_size: int = 1024,
    iou_threshold: float = IOU_THRESHOLD,
    client: Any = None,
    resources: dict[str, float] | None = None,
    method: str = "model",
) -> ModelInstanceRun:
    """Instances of a model over an image, their table and polygons, and (with a reference) their accuracy.

    Writes ``instances.zarr``, ``instances.csv`` (first pixel instead of a marker, and each score),
    ``instances.gpkg`` and, with ``reference``, ``instance_metrics.csv``; the reference is opened
    and checked before the model runs.
    """
    from geoseg.accuracy.instanceeval import (
        evaluate_instances,
        open_reference_instances,
        write_instance_metrics,
    )
    from geoseg.io.scene import Scene, open_scene
    from geoseg.vector.instancepolygons import instance_polygons, write_instance_polygons

    scene = image if isinstance(image, Scene) else open_scene(image)
    grid = scene.chunk_grid(chunk_size)
    ref = None
    if reference is not None:
        ref = open_reference_instances(reference, scene.grid, field=reference_field, value=reference_value)
    out = Path(out_dir)
    res = segment_model_instances(scene, model, out, chunk_size=chunk_size, iou_threshold=iou_threshold,
                                  client=client, resources=resources, method=method)
    names = names or {}
    table = res.table
    outputs = {"instances": res.store,
               "instances_table": write_instance_table(table, out / "instances.csv", scene.grid, names)}
    if polygons:
        ids, geoms = instance_polygons(res.store, grid, INSTANCE_ARRAY, client)
        outputs["instance_polygons"] = write_instance_polygons(out / "instances.gpkg", ids, geoms, table.cls,
                                                               table.size, scene.grid, names, scores=table.score)
    scores: list[Any] = []
    if ref is not None:
        scores, _ = evaluate_instances(res.store, table.cls, table.size, grid, ref, pred_score=table.score,
                                       client=client)
        outputs["instance_metrics"] = write_instance_metrics(scores, out / "instance_metrics.csv", names)
    return ModelInstanceRun(outputs, table, scores)
