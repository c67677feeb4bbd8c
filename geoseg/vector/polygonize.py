"""Label raster → GeoPackage polygons, chunk by chunk in parallel, seam-exact.

Why this needs care: a polygoniser run per chunk cuts every region that crosses a chunk
border into pieces. geoseg's result is instead *identical* to one pass of
``rasterio.features.shapes(labels, connectivity=4)`` over the whole raster (same polygons per
class, same areas), however the raster is chunked:

1. Each chunk task polygonises its window with GDAL's polygoniser (through rasterio), in the
   *pixel* coordinates of the whole raster. Those are integers, so every geometric step below
   (unions, comparisons) is exact.
2. A polygon that does not touch a border shared with another chunk is a whole region already:
   the task converts it to map coordinates (the raster CRS and transform) and returns it as
   WKB with its class, area and perimeter. Only these small arrays travel to the client.
3. A polygon touching a shared border is returned in pixel coordinates, together with, for
   each pixel along each shared border, the index of the polygon that owns it.
4. The client pairs the pixels facing each other across every seam: same class on both sides
   of a pixel *edge* means same region. Connected components of these contacts group the pieces
   of each region; each group becomes one polygon with ``shapely.union_all``, as soon as no
   chunk still to come can add to it (:mod:`geoseg.vector.seams`), so the client holds only the pieces
   along the front of finished chunks.

Contacts are pixel edges, never pixel corners: that *is* 4-connectivity, the default and only
connectivity (two same-class regions meeting at a corner point stay two polygons, and a
region's hole may touch its shell at a point). 8-connectivity is refused: GDAL represents an
8-connected region as one polygon whose ring touches itself, which has no valid single-polygon
equivalent, so a seam-exact result could not also be valid.

Options: skipped classes (nodata by default) produce no polygons; a minimum mapping unit sieves
small regions before polygonising (see :func:`prepare_chunk` for when that is chunk-independent);
``simplify_tolerance`` applies coverage simplification to all polygons together, so neighbours
keep their shared boundaries (no gaps, no overlaps). Polygons are written as they are produced
(:mod:`geoseg.vector.gpkg`), so writing overlaps computing and the client never holds the whole output
(except with simplification or ``layout="per_class"``, which need everything at once).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import shapely
from affine import Affine

from geoseg.errors import JobSpecError
from geoseg.geo import ChunkGrid, Window, halo_window, trim_halo
from geoseg.io.labelstore import read_label_info, read_label_window
from geoseg.legend import NODATA_LABEL, PALETTE, ClassInfo
from geoseg.vector.gpkg import POLYGON_SCHEMA, atomic_gpkg, class_style, write_arrow_layer, write_layer_styles
from geoseg.vector.seams import ROUND_PIECES as SEAM_ROUND_PIECES
from geoseg.vector.seams import SeamMerger, union_each, union_on_cluster

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

#: The only connectivity geoseg vectorises with (rook / edge neighbours).
CONNECTIVITY = 4
#: Layer name of ``layout="single"``.
DEFAULT_LAYER = "polygons"

Layout = Literal["single", "per_class"]
Reader = Callable[[Window], np.ndarray]

_SIDES = ("top", "bottom", "left", "right")


def _gdal_at_least(major: int, minor: int) -> bool:
    import rasterio

    parts = [int(p) for p in re.findall(r"\d+", rasterio.__gdal_version__)[:2]]
    return tuple(parts) >= (major, minor)


#: GDAL 3.7 replaced the polygoniser with one that emits OGC-valid 4-connected polygons.
_GDAL_POLYGONS_VALID = _gdal_at_least(3, 7)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a chunk task needs besides its window: small and picklable."""

    path: str
    grid: ChunkGrid
    skip_classes: tuple[int, ...] = (NODATA_LABEL,)
    min_mapping_unit_px: int = 0
    sieve_halo_px: int = 0
    world: bool = True


@dataclass
class ChunkPolygons:
    """One chunk's polygons, split into final ones and border pieces still to be merged.

    ``final`` holds WKB in map coordinates when the spec asked for ``world``, otherwise shapely
    polygons in raster pixel coordinates. ``border`` is always shapely polygons in pixel
    coordinates; ``sides[s][i]`` is the index in ``border`` of the polygon owning the ``i``-th
    pixel along shared side ``s`` (``-1``: a skipped pixel).
    """

    window: Window
    final: np.ndarray
    final_class: np.ndarray
    final_area_px: np.ndarray
    final_perimeter_m: np.ndarray | None
    border: np.ndarray
    border_class: np.ndarray
    sides: dict[str, np.ndarray]
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Chunk side: small pure functions
# ---------------------------------------------------------------------------------------------


def prepare_chunk(
    read: Reader,
    window: Window,
    shape: tuple[int, int],
    *,
    min_mapping_unit_px: int = 0,
    halo_px: int = 0,
    skip_classes: Sequence[int] = (NODATA_LABEL,),
) -> np.ndarray:
    """Read a chunk's labels, sieved to the minimum mapping unit if one is set.

    The sieve (GDAL's, 4-connected: regions of fewer than ``min_mapping_unit_px`` pixels are
    merged into their largest neighbour; skipped classes are neither removed nor absorb) runs on
    the chunk grown by ``halo_px`` and is then trimmed back. With ``halo_px >= min_mapping_unit_px``
    every region smaller than the unit lies wholly inside the read, and no larger region can
    look small, so *which* regions are removed never depends on chunk borders. Limit: the
    neighbour a small region merges into is decided from neighbour sizes seen inside the halo,
    so it can differ from a whole-raster sieve when two candidate neighbours both extend beyond
    the halo, or when chains of adjacent small regions reach beyond it.
    """
    if min_mapping_unit_px <= 1:
        return read(window)
    from rasterio.features import sieve

    hw = halo_window(window, halo_px, shape)
    arr = read(hw.outer)
    valid = ~np.isin(arr, np.asarray(skip_classes, dtype=arr.dtype)) if skip_classes else None
    sieved = sieve(arr, size=int(min_mapping_unit_px), mask=valid, connectivity=CONNECTIVITY)
    return np.ascontiguousarray(trim_halo(sieved, hw))


def isolated_pixels(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Valid pixels whose 4 neighbours (inside the array) all differ: single-pixel regions.

    They are the bulk of the polygons of a noisy map and need no tracing: a unit square each.

    >>> isolated_pixels(np.array([[1, 2], [2, 2]]), np.ones((2, 2), bool)).astype(int).tolist()
    [[1, 0], [0, 0]]
    """
    same = np.zeros(labels.shape, dtype=bool)
    vert = labels[1:, :] == labels[:-1, :]
    horiz = labels[:, 1:] == labels[:, :-1]
    same[1:, :] |= vert
    same[:-1, :] |= vert
    same[:, 1:] |= horiz
    same[:, :-1] |= horiz
    return valid & ~same


def polygons_from_geojson(items: Iterable[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Build shapely polygons from ``rasterio.features.shapes`` output in a few vectorised calls.

    Calling ``shapely.geometry.shape`` per item costs more than the polygonising itself; here the
    coordinates are flattened once and rings and polygons are made in bulk.
    """
    rings: list = []
    owner: list[int] = []
    values: list[float] = []
    for i, (geom, value) in enumerate(items):
        values.append(value)
        coords = geom["coordinates"]
        rings.extend(coords)
        owner.extend([i] * len(coords))
    if not values:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
    n_pts = np.fromiter(map(len, rings), dtype=np.intp, count=len(rings))
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain.from_iterable(rings)), dtype=np.float64, count=2 * int(n_pts.sum())
    ).reshape(-1, 2)
    linear = shapely.linearrings(flat, indices=np.repeat(np.arange(len(rings)), n_pts))
    polys = shapely.polygons(linear, indices=np.asarray(owner, dtype=np.intp))
    return polys, np.asarray(values).astype(np.int32)


def polygonize_window(
    labels: np.ndarray, window: Window, skip_classes: Sequence[int] = (NODATA_LABEL,)
) -> tuple[np.ndarray, np.ndarray]:
    """All polygons of one window (4-connected regions, clipped to it) in raster pixel coordinates.

    Single pixels become unit squares directly; the rest go through GDAL's polygoniser.
    GDAL ≥ 3.7's polygoniser (two-arm chains) emits valid 4-connected polygons (holes may touch
    the shell at a point, which is valid); with an older GDAL, invalid ones are repaired.
    """
    from rasterio.features import shapes

    valid = ~np.isin(labels, np.asarray(skip_classes, dtype=labels.dtype)) if skip_classes else np.ones(labels.shape, bool)
    single = isolated_pixels(labels, valid)
    traced = valid & ~single
    offset = Affine.translation(window.col_off, window.row_off)
    if traced.any():
        polys, cls = polygons_from_geojson(shapes(labels, mask=traced, connectivity=CONNECTIVITY, transform=offset))
    else:
        polys, cls = np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
    rows, cols = np.nonzero(single)
    x0 = (cols + window.col_off).astype(np.float64)
    y0 = (rows + window.row_off).astype(np.float64)
    boxes = shapely.box(x0, y0, x0 + 1, y0 + 1)
    geoms = np.concatenate([polys, boxes])
    classes = np.concatenate([cls, labels[rows, cols].astype(np.int32)])
    if not _GDAL_POLYGONS_VALID:
        bad = ~shapely.is_valid(geoms)
        if bad.any():
            geoms[bad] = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
    return geoms, classes


def shared_sides(window: Window, shape: tuple[int, int]) -> tuple[str, ...]:
    """The sides of ``window`` that face another chunk (not the raster's edge).

    >>> shared_sides(Window(0, 4, 4, 3), (5, 7))
    ('bottom', 'left')
    """
    h, w = shape
    present = {
        "top": window.row_off > 0,
        "bottom": window.row_off + window.height < h,
        "left": window.col_off > 0,
        "right": window.col_off + window.width < w,
    }
    return tuple(s for s in _SIDES if present[s])


def touches_sides(geoms: np.ndarray, window: Window, sides: Sequence[str]) -> np.ndarray:
    """Which polygons reach any of ``sides`` of the window (polygons are unions of its pixels,
    so reaching a side means sharing at least one pixel edge with it)."""
    if len(geoms) == 0 or not sides:
        return np.zeros(len(geoms), dtype=bool)
    b = shapely.bounds(geoms)
    limits = {
        "top": b[:, 1] <= window.row_off,
        "bottom": b[:, 3] >= window.row_off + window.height,
        "left": b[:, 0] <= window.col_off,
        "right": b[:, 2] >= window.col_off + window.width,
    }
    out = np.zeros(len(geoms), dtype=bool)
    for s in sides:
        out |= limits[s]
    return out


def side_owners(geoms: np.ndarray, window: Window, sides: Sequence[str]) -> dict[str, np.ndarray]:
    """For each side, the index of the polygon owning each pixel along it (``-1``: none).

    Read straight off the rings: a polygon owns exactly the pixels under its boundary segments
    that lie on the side's line (coordinates are integers, so this is exact and cheap).
    """
    r0, c0, h, w = window.row_off, window.col_off, window.height, window.width
    line = {"top": (1, r0, 0, c0, w), "bottom": (1, r0 + h, 0, c0, w),
            "left": (0, c0, 1, r0, h), "right": (0, c0 + w, 1, r0, h)}
    out = {s: np.full(line[s][4], -1, dtype=np.int64) for s in sides}
    if len(geoms) == 0 or not sides:
        return out
    rings, ring_poly = shapely.get_rings(geoms, return_index=True)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    same_ring = ring_of[1:] == ring_of[:-1]
    a, b, owner = xy[:-1][same_ring], xy[1:][same_ring], ring_poly[ring_of[:-1][same_ring]]
    for side in sides:
        fixed_axis, value, run_axis, start, length = line[side]
        on = (a[:, fixed_axis] == value) & (b[:, fixed_axis] == value)
        lo = np.minimum(a[on, run_axis], b[on, run_axis]).astype(np.int64) - start
        hi = np.maximum(a[on, run_axis], b[on, run_axis]).astype(np.int64) - start
        seg_len = hi - lo
        keep = seg_len > 0
        lo, seg_len, who = lo[keep], seg_len[keep], owner[on][keep]
        pos = np.repeat(lo - np.cumsum(np.r_[0, seg_len[:-1]]), seg_len) + np.arange(seg_len.sum())
        out[side][pos] = np.repeat(who, seg_len)
    return out


def to_map_coords(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel coordinates → map coordinates, with GDAL's formula (so values match its polygoniser)."""
    t = transform

    def apply(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([t.c + col * t.a + row * t.b, t.f + col * t.d + row * t.e])

    return shapely.orient_polygons(shapely.transform(geoms, apply), exterior_cw=False)


def chunk_polygons(labels: np.ndarray, window: Window, grid: ChunkGrid, *, skip_classes: Sequence[int],
                   world: bool = True) -> ChunkPolygons:
    """Polygonise one chunk and split its polygons into final ones and border pieces."""
    t0 = time.perf_counter()
    geoms, classes = polygonize_window(labels, window, skip_classes)
    sides = shared_sides(window, grid.shape)
    on_border = touches_sides(geoms, window, sides)
    final, final_class = geoms[~on_border], classes[~on_border]
    border, border_class = geoms[on_border], classes[on_border]
    area_px = shapely.area(final)
    perimeter = None
    if world:
        mapped = to_map_coords(final, grid.transform)
        perimeter = shapely.length(mapped)
        final = shapely.to_wkb(mapped)
    return ChunkPolygons(
        window=window,
        final=final,
        final_class=final_class,
        final_area_px=area_px,
        final_perimeter_m=perimeter,
        border=border,
        border_class=border_class,
        sides=side_owners(border, window, sides),
        seconds=time.perf_counter() - t0,
    )


def vectorize_chunk(window: Window, spec: ChunkSpec) -> ChunkPolygons:
    """The Dask task: read (and sieve) one chunk of the store, polygonise it."""
    t0 = time.perf_counter()
    labels = prepare_chunk(
        lambda w: read_label_window(spec.path, w),
        window,
        spec.grid.shape,
        min_mapping_unit_px=spec.min_mapping_unit_px,
        halo_px=spec.sieve_halo_px,
        skip_classes=spec.skip_classes,
    )
    res = chunk_polygons(labels, window, spec.grid, skip_classes=spec.skip_classes, world=spec.world)
    res.seconds = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------------
# Client side: merging across seams
# ---------------------------------------------------------------------------------------------


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
    grid = ChunkGrid(labels.shape[0], labels.shape[1], chunk, transform)
    halo = _halo(min_mapping_unit_px, sieve_halo_px)
    merger = SeamMerger(grid.chunks_shape)
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


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def _halo(min_mapping_unit_px: int, sieve_halo_px: int | None) -> int:
    if min_mapping_unit_px <= 1:
        return 0
    return int(min_mapping_unit_px if sieve_halo_px is None else sieve_halo_px)


def _check_options(connectivity: int, layout: str, min_mapping_unit_px: int, simplify_tolerance: float) -> None:
    if connectivity == 8:
        raise JobSpecError(
            "connectivity=8 is not supported: geoseg vectorises 4-connected regions (pixels sharing an edge), "
            "which gives valid polygons identical to a single pass; use connectivity=4"
        )
    if connectivity != CONNECTIVITY:
        raise JobSpecError(f"connectivity must be 4, got {connectivity!r}")
    if layout not in ("single", "per_class"):
        raise JobSpecError(f"layout must be 'single' or 'per_class', got {layout!r}")
    if min_mapping_unit_px < 0:
        raise JobSpecError(f"min_mapping_unit_px must be >= 0, got {min_mapping_unit_px}")
    if not simplify_tolerance >= 0:
        raise JobSpecError(f"simplify_tolerance must be >= 0, got {simplify_tolerance}")


def _run_chunks(spec: ChunkSpec, windows: list[Window], client: Client | None) -> Iterator[ChunkPolygons]:
    """Chunk results in completion order: on the cluster if given, else one by one here."""
    if client is None:
        for w in windows:
            yield vectorize_chunk(w, spec)
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


def _worker_threads(client: Client) -> list[int]:
    """Threads of each worker (``client.nthreads()``: every worker, unlike ``scheduler_info()``).

    Only a hint for batching and for how far ahead to submit, so any failure gives one worker.
    """
    try:
        return list(client.nthreads().values()) or [1]
    except Exception:  # noqa: BLE001
        return [1]


def _n_threads(client: Client) -> int:
    return max(1, sum(_worker_threads(client)))


def _n_workers(client: Client) -> int:
    return len(_worker_threads(client))


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
        if len(classes) == 0:
            return
        ids, inv = np.unique(classes, return_inverse=True)
        counts = np.bincount(inv)
        sums = np.bincount(inv, weights=areas)
        for i, n, a in zip(ids.tolist(), counts.tolist(), sums.tolist()):
            self.counts[i] = self.counts.get(i, 0) + n
            self.areas[i] = self.areas.get(i, 0.0) + a


def _batch(wkb: np.ndarray, classes: np.ndarray, area_m2: np.ndarray, perimeter_m: np.ndarray,
           names: dict[int, str]) -> pa.RecordBatch:
    name_col = [names[c] for c in classes.tolist()]
    return pa.record_batch(
        [pa.array(wkb, pa.binary()), pa.array(classes, pa.int32()), pa.array(name_col, pa.string()),
         pa.array(area_m2, pa.float64()), pa.array(perimeter_m, pa.float64())],
        schema=POLYGON_SCHEMA,
    )


def _pixel_batch(geoms_px: np.ndarray, classes: np.ndarray, grid: ChunkGrid, names: dict[int, str]) -> pa.RecordBatch:
    mapped = to_map_coords(geoms_px, grid.transform)
    area = shapely.area(geoms_px) * grid.pixel_area
    return _batch(shapely.to_wkb(mapped), classes, area, shapely.length(mapped), names)


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
    *,
    client: Client | None = None,
    connectivity: int = CONNECTIVITY,
    skip_classes: Sequence[int] = (NODATA_LABEL,),
    min_mapping_unit_px: int = 0,
    simplify_tolerance: float = 0.0,
    layout: Layout = "single",
    layer_name: str = DEFAULT_LAYER,
    sieve_halo_px: int | None = None,
    seam_round_pieces: int = SEAM_ROUND_PIECES,
) -> VectorizeResult:
    """Vectorise a label store into a GeoPackage of polygons, one per 4-connected region.

    Fields: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` (CRS units of the raster).
    The result equals one ``rasterio.features.shapes(..., connectivity=4)`` pass over the whole
    raster regardless of chunking. With ``client`` the per-chunk work runs as Dask tasks and
    results are written while later chunks compute; without, chunks run here one by one.

    ``min_mapping_unit_px``: sieve regions smaller than this many pixels first (halo =
    ``sieve_halo_px``, default the unit itself; see :func:`prepare_chunk` for the limits).
    ``simplify_tolerance`` (CRS units): coverage-preserving simplification of all polygons
    together on the client (memory ∝ output size). ``layout``: one layer ``layer_name``, or one
    layer per class named after the class. The file appears only once complete, with a QGIS
    default style (categorized on ``class_id``, legend colours) in ``layer_styles``.
    ``seam_round_pieces``: how many new seam pieces start a merge round (see :class:`SeamMerger`).
    """
    t_start = time.perf_counter()
    _check_options(connectivity, layout, min_mapping_unit_px, simplify_tolerance)
    info = read_label_info(labels_path)
    grid = info.grid
    skip = tuple(sorted({int(c) for c in skip_classes}))
    wanted = [c.id for c in info.legend if c.id not in skip]
    names = {c.id: c.name for c in _legend_for(range(256), info.legend)}
    simplify = simplify_tolerance > 0
    spec = ChunkSpec(str(info.path), grid, skip, int(min_mapping_unit_px), _halo(min_mapping_unit_px, sieve_halo_px),
                     world=not simplify)
    windows = list(grid.windows())
    tally = _Tally()
    timings = {"chunk_tasks_s": 0.0, "merge_s": 0.0}

    def batches() -> Iterator[pa.RecordBatch]:
        unioner = union_each if client is None else union_on_cluster(client, 4 * _n_workers(client))
        merger = SeamMerger(grid.chunks_shape, unioner, round_pieces=seam_round_pieces)
        pixel_polygons: list[tuple[np.ndarray, np.ndarray]] = []  # only with simplification

        def merged_batches(merged: np.ndarray, merged_cls: np.ndarray) -> Iterator[pa.RecordBatch]:
            if simplify:
                pixel_polygons.append((merged, merged_cls))
            elif len(merged):
                batch = _pixel_batch(merged, merged_cls, grid, names)
                tally.add(merged_cls, batch.column("area_m2").to_numpy())
                yield batch

        for res in _run_chunks(spec, windows, client):
            timings["chunk_tasks_s"] += res.seconds
            if len(res.final) and simplify:
                pixel_polygons.append((res.final, res.final_class))
            elif len(res.final):
                area = res.final_area_px * grid.pixel_area
                tally.add(res.final_class, area)
                assert res.final_perimeter_m is not None  # computed whenever coordinates are the map's
                yield _batch(res.final, res.final_class, area, res.final_perimeter_m, names)
            t0 = time.perf_counter()
            merged = merger.add(_chunk_index(res.window, grid.chunk), res)
            timings["merge_s"] += time.perf_counter() - t0
            yield from merged_batches(*merged)
        t0 = time.perf_counter()
        merged = merger.finish()
        timings["merge_s"] += time.perf_counter() - t0
        timings["seam_pieces_peak"] = merger.peak_waiting
        timings["merge_rounds"] = merger.rounds
        yield from merged_batches(*merged)
        if simplify and pixel_polygons:
            geoms = np.concatenate([g for g, _ in pixel_polygons])
            classes = np.concatenate([c for _, c in pixel_polygons])
            t0 = time.perf_counter()
            geoms = _coverage_simplify(geoms, simplify_tolerance / np.sqrt(grid.pixel_area))
            timings["simplify_s"] = time.perf_counter() - t0
            batch = _pixel_batch(geoms, classes, grid, names)
            tally.add(classes, batch.column("area_m2").to_numpy())
            yield batch

    with atomic_gpkg(out_path) as tmp:
        t0 = time.perf_counter()
        if layout == "single":
            write_arrow_layer(tmp, layer_name, batches(), crs_wkt=info.crs.to_wkt())
            styles = [class_style(layer_name, _legend_for(set(wanted) | set(tally.counts), info.legend))]
            layers: tuple[str, ...] = (layer_name,)
        else:
            table = pa.Table.from_batches(list(batches()), schema=POLYGON_SCHEMA)
            per_class = _legend_for(set(wanted) | set(tally.counts), info.legend)
            lnames = layer_names(per_class)
            styles = []
            class_col = table.column("class_id").to_numpy()
            for c in per_class:
                sub = table.filter(pa.array(class_col == c.id))
                write_arrow_layer(tmp, lnames[c.id], sub.to_batches(), crs_wkt=info.crs.to_wkt())
                styles.append(class_style(lnames[c.id], (c,)))
            layers = tuple(lnames[c.id] for c in per_class)
        write_layer_styles(tmp, styles)
        timings["write_and_wait_s"] = time.perf_counter() - t0
    return VectorizeResult(
        out_path=Path(out_path),
        n_features=sum(tally.counts.values()),
        layers=layers,
        counts=dict(sorted(tally.counts.items())),
        areas_m2=dict(sorted(tally.areas.items())),
        seconds=time.perf_counter() - t_start,
        timings=timings,
    )

