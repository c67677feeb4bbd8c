"""Label raster → GeoPackage polygons, chunk by chunk in parallel, seam-exact.

Why this needs care: a polygoniser run per chunk cuts every region that crosses a chunk
border into pieces. geoseg's result is instead *identical* to one pass of
``rasterio.features.shapes(labels, connectivity=4)`` over the whole raster (same polygons per
class, same areas), however the raster is chunked:

1. Each chunk task polygonises its window in the *pixel* coordinates of the whole raster, with
   geoseg's compiled polygoniser (:mod:`geoseg.vector.polyraster`: labels to flat ring arrays,
   no GeoJSON) or, with ``GEOSEG_POLYGONIZER=gdal``, GDAL's (``rasterio.features.shapes``, the
   oracle it is tested against); both give the same polygons. The coordinates are integers, so
   every geometric step below (unions, comparisons) is exact.
2. A polygon that does not touch a border shared with another chunk is a whole region already:
   the task converts it to map coordinates (the raster CRS and transform) and writes it, with
   its class, area and perimeter, as a row of the output layer to the chunk's part file
   (:mod:`geoseg.vector.parts`); without a cluster the rows come back as arrays instead.
3. A polygon touching a shared border is returned in pixel coordinates, together with, for
   each pixel along each shared border, the index of the polygon that owns it.
4. The client pairs the pixels facing each other across every seam: same class on both sides
   of a pixel *edge* means same region. Connected components of these contacts group the pieces
   of each region; each group becomes one polygon (:mod:`geoseg.vector.gridunion`), as soon as no
   chunk still to come can add to it (:mod:`geoseg.vector.seams`), so the client holds only the pieces
   along the front of finished chunks.

Contacts are pixel edges, never pixel corners: that *is* 4-connectivity, the default and only
connectivity (two same-class regions meeting at a corner point stay two polygons, and a
region's hole may touch its shell at a point). 8-connectivity is refused: GDAL represents an
8-connected region as one polygon whose ring touches itself, which has no valid single-polygon
equivalent, so a seam-exact result could not also be valid.

This module is the chunk side: small pure functions from a chunk's labels to its final polygons,
border pieces and side owners (:class:`ChunkPolygons`). Merging across seams is
:mod:`geoseg.vector.seams`; orchestration and writing the GeoPackage, :mod:`geoseg.vector.vectorize`.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from geoseg.errors import JobSpecError
from geoseg.geo import ChunkGrid, Window, geodesic_area_perimeter, halo_window, metres_per_unit, trim_halo
from geoseg.io.labelstore import read_label_window
from geoseg.legend import NODATA_LABEL
from geoseg.vector.parts import Tally, polygon_batch, tally_of, write_part

#: The only connectivity geoseg vectorises with (rook / edge neighbours).
CONNECTIVITY = 4


Reader = Callable[[Window], np.ndarray]


_SIDES = ("top", "bottom", "left", "right")


def _gdal_at_least(major: int, minor: int) -> bool:
    import rasterio

    parts = [int(p) for p in re.findall(r"\d+", rasterio.__gdal_version__)[:2]]
    return tuple(parts) >= (major, minor)


@cache
def _gdal_polygons_valid() -> bool:
    """GDAL 3.7 replaced the polygoniser with one that emits OGC-valid 4-connected polygons.
    Asked on the GDAL path only: the compiled one never imports rasterio."""
    return _gdal_at_least(3, 7)


@dataclass(frozen=True)
class ChunkSpec:
    """Everything a chunk task needs besides its window: small and picklable."""

    path: str
    grid: ChunkGrid
    skip_classes: tuple[int, ...] = (NODATA_LABEL,)
    min_mapping_unit_px: int = 0
    sieve_halo_px: int = 0
    world: bool = True
    #: With a folder (and ``world``), the task writes its final polygons there as a part file
    #: (:mod:`geoseg.vector.parts`) named after the window, with ``class_names[i]`` as class ``i``'s name.
    parts_dir: str | None = None
    class_names: tuple[str, ...] = ()


@dataclass
class ChunkPolygons:
    """One chunk's polygons, split into final ones and border pieces still to be merged.

    ``final`` holds WKB in map coordinates when the spec asked for ``world`` (an object array of
    ``bytes``, or one ``pyarrow.BinaryArray`` from the compiled polygoniser), otherwise shapely
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
    #: The part file holding the final polygons (then ``final`` is empty), and their tally.
    part: str | None = None
    part_tally: Tally = field(default_factory=dict)
    #: Ellipsoidal areas (m²) of ``final`` on a geographic grid; None: pixel count x pixel area.
    final_area_m2: np.ndarray | None = None


def final_areas(res: ChunkPolygons, grid: ChunkGrid) -> np.ndarray:
    """The ``area_m2`` of a chunk's final polygons."""
    return res.final_area_m2 if res.final_area_m2 is not None else res.final_area_px * grid.pixel_area * metres(grid) ** 2


def metres(grid: ChunkGrid) -> float:
    """Metres per CRS unit of a projected (or local) grid, NaN where its unit is unknown: ``area_m2``
    and ``perimeter_m`` are in metres as ``metrics.csv``'s ``area_m2`` is, never in feet (a State Plane
    grid) under a metre name."""
    return metres_per_unit(grid.crs) or math.nan


def world_measures(geoms_px: np.ndarray, mapped: np.ndarray, grid: ChunkGrid) -> tuple[np.ndarray, np.ndarray]:
    """``area_m2`` and ``perimeter_m`` of polygons given in pixel and in map coordinates.

    Projected grids: pixel area x CRS unit² and the planar length, converted to m² and m (a grid in
    feet too). Geographic grids (degrees): area and perimeter on the CRS's ellipsoid (pyproj.Geod).
    """
    if grid.is_geographic:
        t = grid.transform
        return geodesic_area_perimeter(mapped, grid.crs_wkt, min(math.hypot(t.a, t.d), math.hypot(t.b, t.e)))
    m = metres(grid)
    return shapely.area(geoms_px) * grid.pixel_area * m**2, shapely.length(mapped) * m


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


#: GeoJSON items turned into polygons at a time: their nested Python lists cost ~100 bytes per
#: vertex, so they are consumed in batches (24 MiB less at the peak of a fragmented 2048² chunk).
GEOJSON_BATCH = 8_192


def polygons_from_geojson(items: Iterable[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Build shapely polygons from ``rasterio.features.shapes`` output in a few vectorised calls.

    Calling ``shapely.geometry.shape`` per item costs more than the polygonising itself; here the
    coordinates are flattened once per batch of items and rings and polygons are made in bulk.
    """
    it = iter(items)
    parts = []
    while batch := list(itertools.islice(it, GEOJSON_BATCH)):
        parts.append(_polygons_from_geojson(batch))
    if not parts:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])


def _polygons_from_geojson(items: list[tuple[dict, float]]) -> tuple[np.ndarray, np.ndarray]:
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


#: Environment variable choosing the chunk tasks' polygoniser (read by each task, so a Dask worker
#: sees the value it was started with): ``compiled`` (default) or ``gdal``.
POLYGONIZER_ENV = "GEOSEG_POLYGONIZER"
POLYGONIZERS = ("compiled", "gdal")


def polygonizer(method: str | None = None) -> str:
    """The polygoniser to use: ``method`` if given, else :data:`POLYGONIZER_ENV`, else ``compiled``.

    ``compiled`` is :mod:`geoseg.vector.polyraster` (numba; same polygons, a fraction of the memory
    and time); ``gdal`` is ``rasterio.features.shapes``, kept as the oracle and the fallback.
    """
    choice = (method or os.environ.get(POLYGONIZER_ENV) or "compiled").strip().lower()
    if choice not in POLYGONIZERS:
        raise JobSpecError(f"{POLYGONIZER_ENV}={choice!r} is not a polygoniser; use one of {', '.join(POLYGONIZERS)}")
    return choice


#: The compiled polygoniser indexes a window's pixels with int32: larger windows use GDAL's.
_COMPILED_MAX_PIXELS = 2**31 - 1


def _compiled_for(labels: np.ndarray, method: str | None) -> bool:
    return polygonizer(method) == "compiled" and labels.size <= _COMPILED_MAX_PIXELS


def polygonize_window(
    labels: np.ndarray, window: Window, skip_classes: Sequence[int] = (NODATA_LABEL,), *, method: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All polygons of one window (4-connected regions, clipped to it) in raster pixel coordinates.

    Pixels of ``skip_classes`` belong to no polygon. ``method`` (see :func:`polygonizer`): the
    compiled polygoniser, or GDAL's (single pixels become unit squares directly, the rest go
    through ``rasterio.features.shapes``; GDAL ≥ 3.7 emits valid 4-connected polygons, holes may
    touch the shell at a point; with an older GDAL, invalid ones are repaired).
    """
    valid = ~np.isin(labels, np.asarray(skip_classes, dtype=labels.dtype)) if skip_classes else np.ones(labels.shape, bool)
    if _compiled_for(labels, method):
        from geoseg.vector.polyraster import polygonize_regions

        return polygonize_regions(labels, valid, window.col_off, window.row_off)
    return _polygonize_window_gdal(labels, window, valid)


def _polygonize_window_gdal(labels: np.ndarray, window: Window, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from rasterio.features import shapes

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
    if not _gdal_polygons_valid():
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
    return bounds_touch_sides(shapely.bounds(geoms), window, sides)


def bounds_touch_sides(b: np.ndarray, window: Window, sides: Sequence[str]) -> np.ndarray:
    """:func:`touches_sides` from the polygons' bounds ``(xmin, ymin, xmax, ymax)``."""
    out = np.zeros(len(b), dtype=bool)
    if len(b) == 0 or not sides:
        return out
    limits = {
        "top": b[:, 1] <= window.row_off,
        "bottom": b[:, 3] >= window.row_off + window.height,
        "left": b[:, 0] <= window.col_off,
        "right": b[:, 2] >= window.col_off + window.width,
    }
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
                   world: bool = True, method: str | None = None, arrow_wkb: bool = False) -> ChunkPolygons:
    """Polygonise one chunk and split its polygons into final ones and border pieces.

    ``arrow_wkb`` (with ``world``): ``final`` may be one ``pyarrow.BinaryArray`` instead of an
    object array of ``bytes`` (the compiled polygoniser then writes the WKB itself, never making a
    shapely geometry of a final polygon on a projected grid).
    """
    t0 = time.perf_counter()
    sides = shared_sides(window, grid.shape)
    if _compiled_for(labels, method):
        res = _chunk_polygons_compiled(labels, window, grid, sides, skip_classes, world, arrow_wkb)
        res.seconds = time.perf_counter() - t0
        return res
    geoms, classes = polygonize_window(labels, window, skip_classes, method="gdal")
    on_border = touches_sides(geoms, window, sides)
    final, final_class = geoms[~on_border], classes[~on_border]
    border, border_class = geoms[on_border], classes[on_border]
    area_px = shapely.area(final)
    perimeter, area_m2 = None, None
    if world:
        mapped = to_map_coords(final, grid.transform)
        if grid.is_geographic:
            area_m2, perimeter = world_measures(final, mapped, grid)
        else:
            perimeter = shapely.length(mapped) * metres(grid)
        final = shapely.to_wkb(mapped)
    return ChunkPolygons(
        window=window,
        final=final,
        final_class=final_class,
        final_area_px=area_px,
        final_perimeter_m=perimeter,
        final_area_m2=area_m2,
        border=border,
        border_class=border_class,
        sides=side_owners(border, window, sides),
        seconds=time.perf_counter() - t0,
    )


def _chunk_polygons_compiled(labels: np.ndarray, window: Window, grid: ChunkGrid, sides: Sequence[str],
                             skip_classes: Sequence[int], world: bool, arrow_wkb: bool) -> ChunkPolygons:
    """:func:`chunk_polygons` from flat rings: border pieces become shapely polygons (the seams need
    them), final ones go straight to WKB in map coordinates (geographic grids: through shapely, for
    the ellipsoidal measures)."""
    from geoseg.vector.polyraster import window_rings

    valid = ~np.isin(labels, np.asarray(skip_classes, dtype=labels.dtype)) if skip_classes else np.ones(labels.shape, bool)
    rings = window_rings(labels, valid, window.col_off, window.row_off)
    on_border = bounds_touch_sides(rings.bounds(), window, sides)
    is_final = ~on_border
    border = rings.geometries(on_border)
    area_px = rings.area_px()[is_final]
    perimeter, area_m2 = None, None
    if not world:
        final = rings.geometries(is_final)
    elif grid.is_geographic:
        final_px = rings.geometries(is_final)
        mapped = to_map_coords(final_px, grid.transform)
        area_m2, perimeter = world_measures(final_px, mapped, grid)
        final = shapely.to_wkb(mapped)
    else:
        wkb, perimeter = rings.map_wkb(is_final, grid.transform)
        perimeter = perimeter * metres(grid)
        final = wkb if arrow_wkb else wkb.to_numpy(zero_copy_only=False)
    return ChunkPolygons(
        window=window,
        final=final,
        final_class=rings.classes[is_final],
        final_area_px=area_px,
        final_perimeter_m=perimeter,
        final_area_m2=area_m2,
        border=border,
        border_class=rings.classes[on_border],
        sides=side_owners(border, window, sides),
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
    to_part = spec.parts_dir is not None and spec.world and Path(spec.parts_dir).is_dir()
    res = chunk_polygons(labels, window, spec.grid, skip_classes=spec.skip_classes, world=spec.world,
                         arrow_wkb=spec.world)
    if to_part:
        _to_part(res, spec)  # a worker that cannot see the folder returns its rows instead
    res.seconds = time.perf_counter() - t0
    return res


def part_path(parts_dir: str | Path, window: Window) -> Path:
    """Where the task for ``window`` writes its part file."""
    return Path(parts_dir) / f"part-{window.row_off}-{window.col_off}.arrow"


def _to_part(res: ChunkPolygons, spec: ChunkSpec) -> None:
    """Move the final polygons into their part file; only the tally stays in the result."""
    assert spec.parts_dir is not None and res.final_perimeter_m is not None
    area = final_areas(res, spec.grid)
    res.part_tally = tally_of(res.final_class, area)
    if len(res.final):
        path = part_path(spec.parts_dir, res.window)
        write_part(path, polygon_batch(res.final, res.final_class, area, res.final_perimeter_m, spec.class_names))
        res.part = str(path)
    res.final = np.empty(0, dtype=object)
    res.final_class = np.empty(0, dtype=np.int32)
    res.final_area_px = np.empty(0, dtype=np.float64)
    res.final_area_m2 = None
    res.final_perimeter_m = np.empty(0, dtype=np.float64)
