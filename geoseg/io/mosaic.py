"""A layer: one or more files composed onto the job's grid, first valid pixel wins.

A layer is what one ``inputs:`` entry becomes when its files do not share one grid (tiles of
an orthomosaic, scenes of an area of interest, a band file at another resolution): a mosaic.
Where files overlap, the first file in sorted order that has a valid pixel there wins, as with
``gdalbuildvrt``. A task reads only the files whose footprints meet its window; the client
uses a spatial index (:class:`FootprintIndex`, a shapely ``STRtree``) to send each task only
those files, so the payload stays small however many tiles the mosaic has.

Many small tiles (10,000 of 16 x 16 px) cost what opening them costs: their headers are read once,
on the client, by a few threads (:func:`describe_tiles`), and GDAL is told not to list the tiles'
folder on every open (``GDAL_DISABLE_READDIR_ON_OPEN``: listing a folder of N tiles for each of them
made opening a mosaic quadratic; side files are then looked up by name, as GDAL does without a list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TypeVar

import numpy as np

from geoseg.errors import BandError
from geoseg.geo import GeoGrid, Window
from geoseg.io.masks import QARule
from geoseg.io.sources import Source, describe_source, read_source
from geoseg.io.tilevrt import read_tiles
from geoseg.io.units import apply_scaling

#: Threads reading tile headers on the client (opening a file is mostly waiting on the file system).
HEADER_THREADS = 8
#: A task reads a window's files with :data:`READ_THREADS` threads from this many files on: for small
#: tiles, opening a file (~1-5 ms) costs far more than reading its pixels.
PARALLEL_READS_FROM = 16
READ_THREADS = 4
#: From this many files on, a window's tiles are read through one VRT (:mod:`geoseg.io.tilevrt`) where it
#: gives the same pixels: GDAL opens them in C, without the GIL, at half the CPU of the file-by-file reads.
VRT_FROM = 16
#: GDAL settings for opening many files of one folder: look side files up by name, do not list the folder.
MANY_FILES_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE"}

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def many_files_env() -> Iterator[None]:
    """GDAL settings (:data:`MANY_FILES_ENV`) for this thread while many files are opened."""
    import rasterio

    with rasterio.Env(**MANY_FILES_ENV):
        yield


def map_files(fn: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[fn(item) for item in items]`` by up to ``threads`` threads under :func:`many_files_env`.

    An error stops that thread's share; the error of the first failing item (in order) is raised.
    """
    n = min(threads, len(items))
    if n <= 1:
        with many_files_env():
            return [fn(item) for item in items]

    def run_part(k: int) -> list[tuple[bool, Any]]:
        done: list[tuple[bool, Any]] = []
        with many_files_env():
            for item in items[k::n]:  # interleaved: every thread gets a share of each region
                try:
                    done.append((True, fn(item)))
                except Exception as exc:  # re-raised below, the first in order
                    done.append((False, exc))
                    break
        return done

    with ThreadPoolExecutor(n, thread_name_prefix="geoseg-files") as pool:
        parts = list(pool.map(run_part, range(n)))
    out: list[Any] = [None] * len(items)
    failed: tuple[int, BaseException] | None = None
    for k, part in enumerate(parts):
        for j, (ok, value) in enumerate(part):
            i = k + j * n
            if ok:
                out[i] = value
            elif failed is None or i < failed[0]:
                failed = (i, value)
    if failed is not None:
        raise failed[1]
    return out


def describe_tiles(paths: Sequence[str], describe: Callable[[str], Source] = describe_source) -> list[Source]:
    """``describe(path)`` of every path, in order: each header read once, by a few threads at a time."""
    if len(paths) <= 2:
        return [describe(p) for p in paths]
    return map_files(describe, paths, HEADER_THREADS)


@dataclass(frozen=True)
class Layer:
    """Files composed into one set of bands (``role="features"``) or one QA mask (``role="mask"``)."""

    name: str
    sources: tuple[Source, ...]
    band_names: tuple[str, ...]
    resampling: str = "bilinear"
    role: str = "features"
    rule: QARule | None = None

    @property
    def count(self) -> int:
        return len(self.band_names) if self.role == "features" else 0

    def subset(self, window: Window) -> Layer:
        """The same layer with only the files meeting ``window`` (for a task's payload)."""
        return replace(self, sources=tuple(s for s in self.sources if s.meets(window)))

    @cached_property
    def _boxes(self) -> np.ndarray:
        return np.array([s.box for s in self.sources], dtype=np.float64).reshape(-1, 4)

    def meeting(self, window: Window) -> list[Source]:
        """The files whose footprints meet ``window``, in order (one vectorised test, not one per file)."""
        if len(self.sources) <= 8:
            return [s for s in self.sources if s.meets(window)]
        b = self._boxes
        hit = ((b[:, 0] < window.row_off + window.height) & (b[:, 2] > window.row_off)
               & (b[:, 1] < window.col_off + window.width) & (b[:, 3] > window.col_off))
        return [self.sources[i] for i in np.flatnonzero(hit)]

    def meeting_any(self, windows: Sequence[Window]) -> Layer:
        """The same layer with only the files meeting one of ``windows`` (in order)."""
        b = self._boxes
        hit = np.zeros(len(self.sources), dtype=bool)
        for w in windows:
            hit |= ((b[:, 0] < w.row_off + w.height) & (b[:, 2] > w.row_off)
                    & (b[:, 1] < w.col_off + w.width) & (b[:, 3] > w.col_off))
        return replace(self, sources=tuple(self.sources[i] for i in np.flatnonzero(hit)))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_boxes"}  # rebuilt where needed


def check_tiles_agree(name: str, sources: Sequence[Source]) -> None:
    """Tiles of one mosaic must have the same bands and type; refuse it before any work."""
    first = sources[0]
    for s in sources[1:]:
        if s.count != first.count:
            raise BandError(
                f"mosaic {name!r}: {s.path} has {s.count} value band(s) but {first.path} has {first.count}; "
                "tiles of one mosaic must have the same bands"
            )
        if s.dtype != first.dtype:
            raise BandError(
                f"mosaic {name!r}: {s.path} is {s.dtype} but {first.path} is {first.dtype}; "
                "tiles of one mosaic must have one data type"
            )


def read_layer(layer: Layer, grid: GeoGrid, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The layer on ``window``: float32 ``(bands, h, w)`` (0 where no file is valid) and validity.

    Files are visited in order; each fills only pixels still empty where it is valid, and the
    loop stops once every pixel is filled. From :data:`VRT_FROM` files on, tiles that allow it are read
    through one VRT (:func:`geoseg.io.tilevrt.read_tiles`); otherwise from :data:`PARALLEL_READS_FROM`
    files on, they are read ahead by a few threads (:func:`_read_ahead`) and composed in the same order.
    """
    meeting = layer.meeting(window)
    if len(layer.sources) > 1:  # tiles of one folder, even when one meets the window
        with many_files_env():
            return _compose(layer, meeting, grid, window)
    return _compose(layer, meeting, grid, window)


def _compose(layer: Layer, meeting: list[Source], grid: GeoGrid, window: Window) -> tuple[np.ndarray, np.ndarray]:
    h, w = window.height, window.width
    n = len(layer.sources[0].bands) if layer.sources else 1
    if len(meeting) >= VRT_FROM:  # many tiles: through a VRT, where that gives the same pixels
        tiled = read_tiles(meeting, grid, window, MANY_FILES_ENV)
        if tiled is not None:
            return tiled
    out: np.ndarray | None = None
    filled = np.zeros((h, w), dtype=bool)
    ahead = _read_ahead(layer, meeting, grid, window) if len(meeting) >= PARALLEL_READS_FROM else None
    for i, src in enumerate(meeting):
        if ahead is not None:
            sub, got = ahead[i]
        else:
            sub = window if out is None else _still_empty(filled, src, window)
            got = None if sub is None else read_source(src, grid, sub, layer.resampling)
        if sub is None or got is None:
            continue
        data, valid, (rows, cols) = got
        if src.scales:  # stored numbers to physical values, per file (items of a collection may differ)
            data = apply_scaling(data, src.scales, src.offsets)
        dr, dc = sub.row_off - window.row_off, sub.col_off - window.col_off
        rows, cols = slice(rows.start + dr, rows.stop + dr), slice(cols.start + dc, cols.stop + dc)
        if out is None and data.shape[1:] == (h, w) and (len(meeting) == 1 or valid.all()):
            return data.astype(np.float32, copy=False), valid  # the common case: one file covers the window
        if out is None:  # the first file: taken whole (cast once); its invalid pixels are refilled or zeroed
            out = np.empty((n, h, w), dtype=np.float32)
            if data.shape[1:] != (h, w):
                out[:] = 0
            out[:, rows, cols] = data
        else:
            take = valid & ~filled[rows, cols]
            if take.all():
                out[:, rows, cols] = data
            else:
                np.copyto(out[:, rows, cols], data, where=take[None], casting="unsafe")
        filled[rows, cols] |= valid
        if filled.all():
            break
    if out is None:
        return np.zeros((n, h, w), dtype=np.float32), filled
    if not filled.all():
        out[:, ~filled] = 0  # no file is valid there: no garbage from masked pixels
    return out, filled


def _read_ahead(layer: Layer, meeting: Sequence[Source], grid: GeoGrid, window: Window) -> list[tuple[Window | None, Any]]:
    """Each file's part of ``window`` (its footprint there), read by a few threads: many small tiles.

    Unlike the one-by-one reads, overlaps are read from every file that has them; the pixels kept are the same.
    """
    def read(src: Source) -> tuple[Window | None, Any]:
        sub = _footprint(src, window)
        return sub, (None if sub is None else read_source(src, grid, sub, layer.resampling))

    return map_files(read, meeting, READ_THREADS)


def _footprint(src: Source, window: Window) -> Window | None:
    """The part of ``window`` the file's footprint covers (whole pixels), or None."""
    r0, c0, r1, c1 = src.box
    r0 = max(int(np.floor(r0)), window.row_off)
    c0 = max(int(np.floor(c0)), window.col_off)
    r1 = min(int(np.ceil(r1)), window.row_off + window.height)
    c1 = min(int(np.ceil(c1)), window.col_off + window.width)
    if r1 <= r0 or c1 <= c0:
        return None
    return Window(r0, c0, r1 - r0, c1 - c0)


def _still_empty(filled: np.ndarray, src: Source, window: Window) -> Window | None:
    """The part of ``window`` a later file still has to fill: the bounding box of empty pixels in its footprint.

    Later files of a mosaic are read only there, so overlaps are not read twice.
    """
    r0, c0, r1, c1 = src.box
    r0 = max(int(np.floor(r0)) - window.row_off, 0)
    c0 = max(int(np.floor(c0)) - window.col_off, 0)
    r1 = min(int(np.ceil(r1)) - window.row_off, window.height)
    c1 = min(int(np.ceil(c1)) - window.col_off, window.width)
    if r1 <= r0 or c1 <= c0:
        return None
    empty = ~filled[r0:r1, c0:c1]
    rows = np.flatnonzero(empty.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(empty[rows[0]:rows[-1] + 1].any(axis=0))
    return Window(window.row_off + r0 + int(rows[0]), window.col_off + c0 + int(cols[0]),
                  int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


class FootprintIndex:
    """Which files of each layer meet a window: an ``STRtree`` of footprints in the grid's pixels.

    Built once on the client; :meth:`subset` gives the (small) list of files one task needs.
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        from shapely import STRtree, box

        self._trees = [STRtree([box(s.box[1], s.box[0], s.box[3], s.box[2]) for s in layer.sources])
                       for layer in layers]

    def subset(self, layers: Sequence[Layer], window: Window) -> tuple[Layer, ...]:
        from shapely import box

        w = box(window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height)
        out = []
        for layer, tree in zip(layers, self._trees):
            hits = sorted(int(i) for i in tree.query(w))  # sorted: the mosaic's order decides overlaps
            out.append(replace(layer, sources=tuple(layer.sources[i] for i in hits if layer.sources[i].meets(window))))
        return tuple(out)
