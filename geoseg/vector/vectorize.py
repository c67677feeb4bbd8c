"""Label raster → GeoPackage polygons: chunks in parallel, seams merged as they close, written as they come.

How the result is made identical to one polygonising pass over the whole raster is explained in
:mod:`geoseg.vector.polygonize` (chunk side) and :mod:`geoseg.vector.seams` (merging).

Options: skipped classes (nodata by default) produce no polygons; a minimum mapping unit sieves
small regions before polygonising (see :func:`prepare_chunk` for when that is chunk-independent);
``simplify_tolerance`` applies coverage simplification to all polygons together, so neighbours
keep their shared boundaries (no gaps, no overlaps).

Memory: on a cluster the chunk tasks write their finished polygons to part files beside the output
(:mod:`geoseg.vector.parts`), and the client streams those into the one GeoPackage writer in chunk
order, so what the client holds is the seam pieces still waiting for a neighbouring chunk, not
the output. ``layout="per_class"`` spools all rows to one scratch file and reads it once per
class; only simplification needs every polygon in memory at once."""

from __future__ import annotations

import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute
import shapely
from affine import Affine

from geoseg._kernels.compiled import usable_cores
from geoseg.errors import JobSpecError, OutputError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.heap import heap_releaser
from geoseg.io.atomic import remove_path, temporary_name
from geoseg.io.gpkg import POLYGON_SCHEMA, atomic_gpkg, class_style, write_arrow_layer, write_layer_styles
from geoseg.io.labelstore import LabelRasterInfo, read_label_info
from geoseg.legend import NODATA_LABEL, PALETTE, ClassInfo
from geoseg.progress import chunk_progress
from geoseg.vector.gridunion import BATCH_VERTICES
from geoseg.vector.options import VectorizeOptions, sieve_halo
from geoseg.vector.parts import InOrder, Tally, polygon_batch, read_part, tally_of
from geoseg.vector.polygonize import (
    ChunkPolygons,
    ChunkSpec,
    chunk_polygons,
    final_areas,
    prepare_chunk,
    to_map_coords,
    vectorize_chunk,
    world_measures,
)
from geoseg.vector.seams import SeamMerger, warm_up_in_background

if TYPE_CHECKING:
    from distributed import Client


#: CRS text of an in-memory array's grid (:func:`vectorize_array` needs only its pixel geometry).
UNREFERENCED = ""


@dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize_labels` wrote: counts and areas per class, and where time went."""

    out_path: Path
    n_features: int
    layers: tuple[str, ...]
    counts: dict[int, int]
    areas_m2: dict[int, float]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _chunk_index(window: Window, chunk: int) -> tuple[int, int]:
    return window.row_off // chunk, window.col_off // chunk


def vectorize_array(
    labels: np.ndarray,
    chunk: int,
    *,
    transform: Affine = Affine.identity(),
    skip_classes: Sequence[int] = (NODATA_LABEL,),
    min_mapping_unit_px: int = 0,
    sieve_halo_px: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorise an in-memory label array chunk by chunk (no Dask, no files).

    Returns shapely polygons in map coordinates and their classes: the same polygons
    :func:`vectorize_labels` writes, handy in a notebook and for checking seam exactness.
    """
    grid = GeoGrid(labels.shape[0], labels.shape[1], transform, UNREFERENCED).tiles(chunk)
    halo = sieve_halo(min_mapping_unit_px, sieve_halo_px)
    merger = SeamMerger(grid.chunks_shape, cell=chunk)
    finals, final_cls = [], []
    for w in grid.windows():
        arr = prepare_chunk(lambda win: labels[win.slices], w, grid.shape, min_mapping_unit_px=min_mapping_unit_px,
                            halo_px=halo, skip_classes=skip_classes)
        res = chunk_polygons(arr, w, grid, skip_classes=skip_classes, world=False)
        finals.append(res.final)
        final_cls.append(res.final_class)
        merged, merged_cls = merger.add(_chunk_index(w, chunk), res)
        finals.append(merged)
        final_cls.append(merged_cls)
    merged, merged_cls = merger.finish()
    geoms = np.concatenate(finals + [merged])
    return to_map_coords(geoms, transform), np.concatenate(final_cls + [merged_cls])


#: Largest tile polygonised at once in this process (no cluster): a fragmented 2048² tile holds
#: ~80 MiB while it is polygonised, a 512² one ~5 MiB, and ``threads`` are in flight. Smaller
#: tiles mean more seams to merge: on the 8000² benchmark map 512² took 15 s against 13 s at
#: 1024² and peaked ~40 MiB lower (``benchmarks/RESULTS-vectorize.md``).
LOCAL_TILE_PX = 512

#: Seconds between handing the allocator's free pages back while writing (:func:`geoseg.heap.heap_releaser`).
HEAP_RELEASE_S = 1.0

#: Vertices per seam-union pass in this process: the merge's temporary arrays share the one peak
#: with the polygonising threads and the writer here (~30 MiB at 60k against ~130 MiB at 250k), while
#: a cluster's client does nothing else heavy and keeps the faster 250k (:data:`BATCH_VERTICES`).
LOCAL_BATCH_VERTICES = 60_000


def local_tile(store_chunk: int) -> int:
    """The tile side for vectorising in this process: the store's chunk cut into equal parts of at most
    :data:`LOCAL_TILE_PX` (a divisor where there is one, so a tile reads one stored chunk).

    >>> local_tile(256), local_tile(2048), local_tile(3000), local_tile(700)
    (256, 512, 500, 350)
    """
    k = -(-store_chunk // LOCAL_TILE_PX)
    while store_chunk % k and k < store_chunk:
        k += 1
    return max(16, store_chunk // k)


def _tile_grid(grid: GeoGrid, store_chunk: int, tile_px: int | None, on_cluster: bool, halo_px: int) -> ChunkGrid:
    """The tiles polygonised one per task: on a cluster, or with a sieve halo (each tile reads its
    halo too: small tiles would read the raster many times over), the store's chunks; else
    :func:`local_tile`. ``tile_px`` overrides both."""
    if tile_px is None:
        return grid.tiles(store_chunk if on_cluster or halo_px > 0 else local_tile(store_chunk))
    if int(tile_px) < 16:
        raise JobSpecError(f"tile_px must be at least 16 pixels, got {tile_px}")
    return grid.tiles(int(tile_px))


def _run_chunks(spec: ChunkSpec, windows: list[Window], client: Client | None, threads: int) -> Iterator[ChunkPolygons]:
    """Chunk results: on the cluster if given (completion order), else on ``threads`` threads here (in order)."""
    if client is None:
        yield from _run_chunks_here(spec, windows, threads)
        return
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    todo = iter(windows)
    running: set = set()
    done = as_completed()

    def submit_next() -> None:
        w = next(todo, None)
        if w is not None:
            fut = client.submit(vectorize_chunk, w, spec=spec, key=f"geoseg-vectorize-{token}-{w.key}")
            running.add(fut)
            done.add(fut)

    # Back-pressure: only a few chunks ahead of the writer. Results are fetched one at a time, so
    # when writing the GeoPackage is slower than polygonising, neither the client nor the workers
    # pile up finished chunks (memory follows the chunk, not the output).
    for _ in range(2 * _n_threads(client) + 2):
        submit_next()
    try:
        for fut in done:
            res = fut.result()
            running.discard(fut)
            fut.release()
            submit_next()
            yield res
    finally:
        client.cancel(list(running))


def _run_chunks_here(spec: ChunkSpec, windows: list[Window], threads: int) -> Iterator[ChunkPolygons]:
    """Tiles polygonised on a pool of threads in this process, results in window order.

    Why threads and not processes: the compiled loops release the GIL, and one process holds
    the libraries (GDAL, LLVM) once; at most ``threads`` tiles are in flight besides the one
    being written, so memory follows the tile. In order, so the output is the same for any
    number of threads.
    """
    if threads <= 1:
        for w in windows:
            yield vectorize_chunk(w, spec)
        return
    todo = iter(windows)
    with ThreadPoolExecutor(threads, thread_name_prefix="geoseg-vectorize") as pool:
        pending = deque(pool.submit(vectorize_chunk, w, spec) for w in islice(todo, threads))
        try:
            while pending:
                res = pending.popleft().result()
                following = next(todo, None)
                if following is not None:
                    pending.append(pool.submit(vectorize_chunk, following, spec))
                yield res
                del res
        finally:
            for fut in pending:
                fut.cancel()


def _worker_threads(client: Client) -> list[int]:
    """Threads of each worker (``client.nthreads()``: every worker, unlike ``scheduler_info()``).

    Only a hint for batching and for how far ahead to submit, so any failure gives one worker.
    """
    try:
        return list(client.nthreads().values()) or [1]
    except Exception:
        return [1]


def _n_threads(client: Client) -> int:
    return max(1, sum(_worker_threads(client)))


def _legend_for(ids: Iterable[int], legend: Sequence[ClassInfo]) -> tuple[ClassInfo, ...]:
    """Legend entries for ``ids``, inventing name/colour for ids the legend lacks."""
    known = {c.id: c for c in legend}
    out = []
    for i in sorted(set(int(i) for i in ids)):
        if i in known:
            out.append(known[i])
        else:
            name = "nodata" if i == NODATA_LABEL else f"class_{i}"
            out.append(ClassInfo(i, name, PALETTE[i % len(PALETTE)]))
    return tuple(out)


def layer_names(classes: Sequence[ClassInfo]) -> dict[int, str]:
    """One GeoPackage-safe, unique layer name per class (``built-up`` → ``built_up``).

    >>> layer_names([ClassInfo(1, "built-up", "#000000"), ClassInfo(2, "Built up", "#000000")])
    {1: 'built_up', 2: 'built_up_2'}
    """
    out: dict[int, str] = {}
    for c in classes:
        base = re.sub(r"[^0-9a-zA-Z_]+", "_", c.name).strip("_").lower() or f"class_{c.id}"
        if base[0].isdigit():
            base = f"class_{base}"
        name = base if base not in out.values() else f"{base}_{c.id}"
        out[c.id] = name
    return out


class _Tally:
    """Counts and areas per class of everything written."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.areas: dict[int, float] = {}

    def add(self, classes: np.ndarray, areas: np.ndarray) -> None:
        self.merge(tally_of(classes, areas))

    def merge(self, tally: Tally) -> None:
        for i, (n, a) in tally.items():
            self.counts[i] = self.counts.get(i, 0) + n
            self.areas[i] = self.areas.get(i, 0.0) + a


def _pixel_batch(geoms_px: np.ndarray, classes: np.ndarray, grid: ChunkGrid, names: Sequence[str]) -> pa.RecordBatch:
    mapped = to_map_coords(geoms_px, grid.transform)
    area, perimeter = world_measures(geoms_px, mapped, grid)
    return polygon_batch(shapely.to_wkb(mapped), classes, area, perimeter, names)


def _spool(path: Path, batches: Iterable[pa.RecordBatch]) -> Path:
    """Stream batches into one Arrow IPC file (for layouts that read the output more than once)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, POLYGON_SCHEMA) as writer:
        for b in batches:
            writer.write_batch(b)
    return path


def _class_batches(spool: Path, class_id: int) -> Iterator[pa.RecordBatch]:
    for b in read_part(spool):
        sub = b.filter(pa.compute.equal(b.column("class_id"), class_id))
        if sub.num_rows:
            yield sub


def _coverage_simplify(geoms_px: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Simplify polygons as one coverage: shared boundaries are simplified once, for both sides.

    GEOS needs matching vertices on shared edges; a polygoniser emits vertices only where a
    boundary turns, so first every edge is split at each pixel corner (exact: integer coords).
    The coverage's outer boundary (raster edge, edges against skipped classes) is kept as is,
    so the union of all polygons does not change: nothing is lost or gained, only redistributed.
    """
    noded = shapely.segmentize(geoms_px, 1.0)
    return shapely.coverage_simplify(noded, tolerance_px, simplify_boundary=False)


def vectorize_labels(
    labels_path: str | Path,
    out_path: str | Path,
    options: VectorizeOptions | Mapping[str, Any] | None = None,
    *,
    client: Client | None = None,
    **keywords: Any,
) -> VectorizeResult:
    """Vectorise a label store into a GeoPackage of polygons, one per 4-connected region.

    Fields: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (m² and m whatever the CRS's unit: a
    grid in feet is converted, a geographic one measured on its ellipsoid; NaN for a CRS of unknown unit).
    The result equals one ``rasterio.features.shapes(..., connectivity=4)`` pass over the whole
    raster regardless of chunking. With ``client`` the per-chunk work runs as Dask tasks and
    results are written while later chunks compute; without, tiles of at most
    :data:`LOCAL_TILE_PX` run on ``threads`` threads in this process (default: one per core),
    written in tile order, so the output does not depend on the thread count.

    ``options``: a :class:`VectorizeOptions` (skipped classes, minimum mapping unit, simplification,
    layout, threads, tile size, ...) or the same as keywords (``vectorize_labels(store, out, layout="per_class")``),
    checked once, here (see :func:`prepare_chunk` for the sieve's limits). The file appears only once
    complete, with a QGIS default style (categorized on ``class_id``, legend colours) in ``layer_styles``.
    """
    t_start = time.perf_counter()
    opts = VectorizeOptions.coerce(options, **keywords)
    info = read_label_info(labels_path)
    out = Path(out_path)
    if not out.parent.exists():
        raise OutputError(f"output folder {out.parent} does not exist")
    run = _Run.plan(info, out, opts, client)
    try:
        if run.use_parts or opts.layout != "single":
            run.scratch.mkdir()
        with atomic_gpkg(out) as tmp:
            t0 = time.perf_counter()
            layers = run.write(tmp, info)
            run.timings["write_and_wait_s"] = time.perf_counter() - t0
    finally:
        remove_path(run.scratch)
    return VectorizeResult(
        out_path=Path(out_path),
        n_features=sum(run.tally.counts.values()),
        layers=layers,
        counts=dict(sorted(run.tally.counts.items())),
        areas_m2=dict(sorted(run.tally.areas.items())),
        seconds=time.perf_counter() - t_start,
        timings=run.timings,
    )


@dataclass
class _Run:
    """One vectorisation under way: its tiles, what it has written so far, and where time went."""

    opts: VectorizeOptions
    client: Client | None
    grid: ChunkGrid
    spec: ChunkSpec
    windows: list[Window]
    names: tuple[str, ...]
    wanted: list[int]
    scratch: Path
    use_parts: bool
    tally: _Tally = field(default_factory=lambda: _Tally())
    timings: dict[str, float] = field(
        default_factory=lambda: {"chunk_tasks_s": 0.0, "merge_s": 0.0, "merge_cpu_s": 0.0}  # merge: wall and CPU
    )

    @classmethod
    def plan(cls, info: LabelRasterInfo, out: Path, opts: VectorizeOptions, client: Client | None) -> _Run:
        grid = _tile_grid(info.grid, info.chunk, opts.tile_px, client is not None, opts.halo_px)
        simplify = opts.simplify_tolerance > 0
        # Scratch beside the output, named as a geoseg temporary (remove_stale_temporaries finds a killed run's):
        # the workers' part files, and the spooled output of layout="per_class".
        scratch = temporary_name(out.parent / f"{out.stem}-parts")
        # Workers write their finished polygons to part files (memory flat on the client); without a
        # cluster, or with simplification (which needs every polygon at once), they come back here.
        use_parts = client is not None and not simplify
        names = tuple(c.name for c in _legend_for(range(256), info.legend))
        spec = ChunkSpec(str(info.path), grid, tuple(opts.skip_classes), opts.min_mapping_unit_px, opts.halo_px,
                         world=not simplify, parts_dir=str(scratch) if use_parts else None, class_names=names)
        windows = list(grid.windows())
        if len(windows) > 1:
            warm_up_in_background()
        wanted = [c.id for c in info.legend if c.id not in opts.skip_classes]
        return cls(opts, client, grid, spec, windows, names, wanted, scratch, use_parts)

    @property
    def simplify(self) -> bool:
        return self.opts.simplify_tolerance > 0

    def write(self, tmp: Path, info: LabelRasterInfo) -> tuple[str, ...]:
        """Every polygon into the GeoPackage ``tmp`` (one layer, or one per class) with its styles."""
        if self.opts.layout == "single":
            name = self.opts.layer_name
            write_arrow_layer(tmp, name, self.batches(), crs_wkt=info.grid.crs_wkt)
            write_layer_styles(tmp, [class_style(name, _legend_for(set(self.wanted) | set(self.tally.counts), info.legend))])
            return (name,)
        spool = _spool(self.scratch / "all.arrow", self.batches())
        per_class = _legend_for(set(self.wanted) | set(self.tally.counts), info.legend)
        lnames = layer_names(per_class)
        for c in per_class:
            write_arrow_layer(tmp, lnames[c.id], _class_batches(spool, c.id), crs_wkt=info.grid.crs_wkt)
        write_layer_styles(tmp, [class_style(lnames[c.id], (c,)) for c in per_class])
        return tuple(lnames[c.id] for c in per_class)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The polygons as record batches: each chunk's finished ones as it comes, seams as they close."""
        grid, timings, client = self.grid, self.timings, self.client
        release_heap = heap_releaser(HEAP_RELEASE_S)
        merger = SeamMerger(grid.chunks_shape, round_pieces=self.opts.seam_round_pieces, cell=grid.chunk,
                            batch_vertices=BATCH_VERTICES if client is not None else LOCAL_BATCH_VERTICES)
        in_order = InOrder()
        index_of = {(w.row_off, w.col_off): i for i, w in enumerate(self.windows)}
        pixel_polygons: list[tuple[np.ndarray, np.ndarray]] = []  # only with simplification
        run = _run_chunks(self.spec, self.windows, client, self.opts.threads or usable_cores())
        for res in chunk_progress(run, len(self.windows), "vectorising", self.opts.show_progress):
            timings["chunk_tasks_s"] += res.seconds
            if self.use_parts:
                self.tally.merge(res.part_tally)
                for part in in_order.add(index_of[(res.window.row_off, res.window.col_off)], res.part):
                    yield from read_part(part)
                    Path(part).unlink()
            if len(res.final) and self.simplify:
                pixel_polygons.append((res.final, res.final_class))
            elif len(res.final):
                area = final_areas(res, grid)
                self.tally.add(res.final_class, area)
                assert res.final_perimeter_m is not None  # world coordinates (no simplify) carry perimeters
                yield polygon_batch(res.final, res.final_class, area, res.final_perimeter_m, self.names)
            merged = self._timed_merge(partial(merger.add, _chunk_index(res.window, grid.chunk), res))
            del res  # the chunk's seam pieces live on in the merger only
            yield from self._merged_batches(*merged, pixel_polygons)
            release_heap()  # the tiles' transient arrays: give their pages back, do not keep a high-water mark
        merged = self._timed_merge(merger.finish)
        timings["seam_pieces_peak"] = merger.peak_waiting
        timings["merge_rounds"] = merger.rounds
        yield from self._merged_batches(*merged, pixel_polygons)
        if self.simplify and pixel_polygons:
            yield self._simplified(pixel_polygons)

    def _timed_merge(self, merge: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        t0, c0 = time.perf_counter(), time.thread_time()
        merged = merge()
        self.timings["merge_s"] += time.perf_counter() - t0
        self.timings["merge_cpu_s"] += time.thread_time() - c0
        return merged

    def _merged_batches(self, merged: np.ndarray, merged_cls: np.ndarray,
                        pixel_polygons: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[pa.RecordBatch]:
        if self.simplify:
            pixel_polygons.append((merged, merged_cls))
        elif len(merged):
            batch = _pixel_batch(merged, merged_cls, self.grid, self.names)
            self.tally.add(merged_cls, batch.column("area_m2").to_numpy())
            yield batch

    def _simplified(self, pixel_polygons: list[tuple[np.ndarray, np.ndarray]]) -> pa.RecordBatch:
        geoms = np.concatenate([g for g, _ in pixel_polygons])
        classes = np.concatenate([c for _, c in pixel_polygons])
        t0 = time.perf_counter()
        geoms = _coverage_simplify(geoms, self.opts.simplify_tolerance / np.sqrt(self.grid.pixel_area))
        self.timings["simplify_s"] = time.perf_counter() - t0
        batch = _pixel_batch(geoms, classes, self.grid, self.names)
        self.tally.add(classes, batch.column("area_m2").to_numpy())
        return batch
