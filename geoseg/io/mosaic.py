"""A layer: one or more files composed onto the job's grid, first valid pixel wins.

A layer is what one ``inputs:`` entry becomes when its files do not share one grid (tiles of
an orthomosaic, scenes of an area of interest, a band file at another resolution): a mosaic.
Where files overlap, the first file in sorted order that has a valid pixel there wins, as with
``gdalbuildvrt``. A task reads only the files whose footprints meet its window; the client
uses a spatial index (:class:`FootprintIndex`, a shapely ``STRtree``) to send each task only
those files, so the payload stays small however many tiles the mosaic has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from geoseg.errors import InputError
from geoseg.geo import GeoGrid, Window
from geoseg.io.masks import QARule
from geoseg.io.sources import Source, read_source
from geoseg.io.units import apply_scaling


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


def check_tiles_agree(name: str, sources: Sequence[Source]) -> None:
    """Tiles of one mosaic must have the same bands and type; refuse it before any work."""
    first = sources[0]
    for s in sources[1:]:
        if s.count != first.count:
            raise InputError(
                f"mosaic {name!r}: {s.path} has {s.count} value band(s) but {first.path} has {first.count}; "
                "tiles of one mosaic must have the same bands"
            )
        if s.dtype != first.dtype:
            raise InputError(
                f"mosaic {name!r}: {s.path} is {s.dtype} but {first.path} is {first.dtype}; "
                "tiles of one mosaic must have one data type"
            )


def read_layer(layer: Layer, grid: GeoGrid, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The layer on ``window``: float32 ``(bands, h, w)`` (0 where no file is valid) and validity.

    Files are visited in order; each fills only pixels still empty where it is valid, and the
    loop stops once every pixel is filled.
    """
    h, w = window.height, window.width
    n = len(layer.sources[0].bands) if layer.sources else 1
    meeting = [s for s in layer.sources if s.meets(window)]
    out: np.ndarray | None = None
    filled = np.zeros((h, w), dtype=bool)
    for src in meeting:
        sub = window if out is None else _still_empty(filled, src, window)
        if sub is None:
            continue
        got = read_source(src, grid, sub, layer.resampling)
        if got is None:
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
