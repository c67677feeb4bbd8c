"""Merging the pieces of regions cut by chunk seams, as soon as they are complete.

A chunk task returns the polygons that touch a seam it shares with another chunk ("border
pieces", in integer pixel coordinates) and, for every pixel along each shared side, the piece
that owns it. Pixels facing each other across a seam with the same class share a pixel *edge*
(4-connectivity), so their pieces belong to one region; connected components of these contacts
group the pieces of each region, and each group is unioned into one polygon (exact: integer
coordinates; linear in its vertices, :mod:`geoseg.vector.gridunion`).

Why progressive: holding every border piece until the last chunk is done makes the client's
memory grow with the whole raster's seams (on the benchmark maps, though, the pieces were at most
1.5 % of the polygons: ``benchmarks/RESULTS-vectorize.md``). :class:`SeamMerger` merges a group as soon as
it is *closed*: none of its pieces owns a pixel on a side whose neighbouring chunk is still to
come. A closed group cannot gain pieces any more (contacts only exist across seams whose two
chunks are done), so merging it early gives exactly the polygon a final merge would give, and
the client holds only the pieces along the open front of finished chunks.

The contacts across a seam are found once, when the second of its two chunks arrives (a round
only gathers those of pieces still waiting), and the groups of a round are unioned together in
batches (:func:`geoseg.vector.gridunion.union_many`), comparing edges only on the seam lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import shapely

from geoseg._kernels.components import pair_components
from geoseg.vector.gridunion import BATCH_VERTICES, union_many

log = logging.getLogger(__name__)

ChunkKey = tuple[int, int]
Unioner = Callable[[list[np.ndarray]], np.ndarray]

#: A merge round runs when this many unmerged border pieces have arrived since the last one (and
#: at least as many as are still waiting), so rounds cost O(pieces · log) over a whole run.
ROUND_PIECES = 1_000



class BorderPieces(Protocol):
    """What merging needs of one chunk: its border pieces (shapely polygons in raster pixel
    coordinates), their classes, and for each shared side the index of the piece owning each
    pixel along it (``-1``: none). :class:`geoseg.vector.polygonize.ChunkPolygons` is one."""

    border: np.ndarray
    border_class: np.ndarray
    sides: dict[str, np.ndarray]


@dataclass
class HeldPieces:
    """What the merger keeps of a chunk: its border pieces alone. Holding the caller's whole
    result would keep its final polygons (the bulk of a chunk) alive until the end of the run."""

    border: np.ndarray
    border_class: np.ndarray
    sides: dict[str, np.ndarray]

    @classmethod
    def of(cls, chunk: BorderPieces) -> HeldPieces:
        # the border array is copied: merged pieces are set to None in it, the caller's stays whole
        return cls(np.array(chunk.border, dtype=object), np.asarray(chunk.border_class), dict(chunk.sides))


_NEIGHBOUR = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def seam_pairs(here: BorderPieces, there: BorderPieces, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Local indices of the pieces of ``here`` and of its neighbour ``there`` (across ``here``'s
    ``side``, "right" or "bottom") that share a pixel edge across the seam, with the same class.

    Pixels are compared one to one along the seam: pixels that face each other diagonally never
    pair, which is 4-connectivity.
    """
    a, b = here.sides[side], there.sides[_OPPOSITE[side]]
    ok = (a >= 0) & (b >= 0)
    a, b = a[ok], b[ok]
    same = here.border_class[a] == there.border_class[b]
    code = np.unique(a[same] * max(1, len(there.border)) + b[same])
    return code // max(1, len(there.border)), code % max(1, len(there.border))


def seam_contacts(pieces: dict[ChunkKey, BorderPieces], offsets: dict[ChunkKey, int],
                  classes: np.ndarray | None = None) -> np.ndarray:
    """Pairs of global border-piece ids (``offsets``: each chunk's first) that share a pixel edge
    across a seam, with the same class, over all seams of ``pieces`` (right and below neighbours)."""
    pairs = []
    for (iy, ix), here in pieces.items():
        for side, key in (("right", (iy, ix + 1)), ("bottom", (iy + 1, ix))):
            there = pieces.get(key)
            if there is not None:
                ia, ib = seam_pairs(here, there, side)
                pairs.append(np.column_stack([ia + offsets[(iy, ix)], ib + offsets[key]]))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def union_each(groups: list[np.ndarray], cell: int = 1, batch_vertices: int = BATCH_VERTICES) -> np.ndarray:
    """Union each group of pieces into one polygon, exactly and without the collinear vertices the
    seams leave behind (:func:`geoseg.vector.gridunion.union_many`; ``cell``: the chunk size, the
    seams being its multiples; ``batch_vertices``: the most vertices one pass holds)."""
    return union_many(groups, cell, batch_vertices)


def union_groups(geoms: np.ndarray, classes: np.ndarray, group: np.ndarray,
                 union: Unioner = union_each) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per group id in ``group``: single pieces pass through, others are unioned."""
    if len(geoms) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
    _, dense = np.unique(group, return_inverse=True)
    sizes = np.bincount(dense)
    alone = sizes[dense] == 1
    multi = np.flatnonzero(~alone)
    order = multi[np.argsort(dense[multi], kind="stable")]
    members = np.split(order, np.flatnonzero(np.diff(dense[order])) + 1) if len(order) else []
    merged = union([geoms[idx] for idx in members])
    merged_cls = np.asarray([classes[idx[0]] for idx in members], dtype=np.int32)
    parts, part_idx = shapely.get_parts(merged, return_index=True)
    if len(parts) != len(merged):  # cannot happen for edge-connected pieces; keep the data, say so
        log.warning("seam merge produced %d extra parts", len(parts) - len(merged))
    return (np.concatenate([geoms[alone], parts]),
            np.concatenate([classes[alone], merged_cls[part_idx]]).astype(np.int32))


def warm_up_in_background() -> None:
    """Load the merge's compiled loops in a daemon thread while the first chunks are polygonised.

    Why: loading them (numba's cache, LLVM) costs ~0.3 CPU s at the first merge round, on the
    thread that writes the output; done early it overlaps with the chunk tasks instead.
    """
    import threading

    def warm() -> None:
        a, b = shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)
        union_many([np.array([a, b], dtype=object)], cell=1)
        pair_components(2, np.array([0]), np.array([1]))

    threading.Thread(target=warm, daemon=True, name="geoseg-warm-merge").start()


class SeamMerger:
    """Collects chunks' border pieces and merges each region once no pending chunk can extend it.

    ``add`` takes one chunk's result (in any order) and returns the regions it completed, if a
    merge round ran; ``finish`` (after the last chunk) returns all the rest. Every region comes out
    exactly once. ``round_pieces`` sets how many new pieces trigger a round (1: after every chunk).
    ``cell``: the chunk size in pixels (the seams are its multiples; 1 assumes nothing, slower) and
    ``batch_vertices`` (temporary memory against numpy's fixed costs): used by the default ``union``.
    """

    def __init__(self, chunks_shape: tuple[int, int], union: Unioner | None = None,
                 round_pieces: int = ROUND_PIECES, cell: int = 1, batch_vertices: int = BATCH_VERTICES) -> None:
        self.chunks_shape = chunks_shape
        self.union = union if union is not None else partial(union_each, cell=cell, batch_vertices=batch_vertices)
        self.round_pieces = max(1, int(round_pieces))
        self.pieces: dict[ChunkKey, HeldPieces] = {}  # chunks with pieces still waiting (or just added)
        self.arrived: set[ChunkKey] = set()
        self.merged: dict[ChunkKey, np.ndarray] = {}  # per chunk: which of its pieces are already out
        # contacts across each seam whose two chunks are here (upper/left chunk, lower/right chunk):
        # found once, when the second of them arrives; pairs of merged pieces are dropped after a round
        self.contacts: dict[tuple[ChunkKey, ChunkKey], tuple[np.ndarray, np.ndarray]] = {}
        self.waiting = 0  # pieces not yet merged
        self.since_round = 0
        self.rounds = 0
        self.peak_waiting = 0

    def add(self, key: ChunkKey, chunk: BorderPieces) -> tuple[np.ndarray, np.ndarray]:
        """Take one chunk's border pieces; return the regions completed now (possibly none)."""
        if key in self.arrived:
            raise ValueError(f"chunk {key} was added twice")
        self.arrived.add(key)
        self.pieces[key] = chunk = HeldPieces.of(chunk)
        self.merged[key] = np.zeros(len(chunk.border), dtype=bool)
        iy, ix = key
        for side, (dy, dx) in _NEIGHBOUR.items():
            other = (iy + dy, ix + dx)
            if other in self.pieces and side in chunk.sides:
                if side in ("right", "bottom"):
                    self.contacts[(key, other)] = seam_pairs(chunk, self.pieces[other], side)
                else:
                    self.contacts[(other, key)] = seam_pairs(self.pieces[other], chunk, _OPPOSITE[side])
        self.waiting += len(chunk.border)
        self.since_round += len(chunk.border)
        self.peak_waiting = max(self.peak_waiting, self.waiting)
        if self.since_round >= max(self.round_pieces, self.waiting - self.since_round):
            return self._round(final=False)
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Every region still waiting (call after the last chunk was added)."""
        expected = self.chunks_shape[0] * self.chunks_shape[1]
        if len(self.arrived) != expected:
            log.warning("seam merge finished with %d of %d chunks", len(self.arrived), expected)
        return self._round(final=True)

    def _round(self, final: bool) -> tuple[np.ndarray, np.ndarray]:
        self.since_round = 0
        self.rounds += 1
        keys = sorted(self.pieces)
        offsets, n = {}, 0
        for k in keys:
            offsets[k] = n
            n += len(self.pieces[k].border)
        if n == 0:
            self._forget_finished(keys)
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
        classes = np.concatenate([self.pieces[k].border_class for k in keys]).astype(np.int32)
        done = np.concatenate([self.merged[k] for k in keys])
        pairs = self._pairs(offsets)
        group = pair_components(n, pairs[:, 0], pairs[:, 1])
        ready = ~done
        if not final:
            ready &= ~np.isin(group, group[self._open_pieces(keys, offsets, n)])
        idx = np.flatnonzero(ready)
        if len(idx) == 0:
            return np.empty(0, dtype=object), np.empty(0, dtype=np.int32)
        geoms = np.concatenate([self.pieces[k].border for k in keys])[idx]
        out = union_groups(geoms, classes[idx], group[idx], self.union)
        for k in keys:  # mark them merged, and let their geometries go
            sel = idx[(idx >= offsets[k]) & (idx < offsets[k] + len(self.pieces[k].border))] - offsets[k]
            if len(sel):
                self.merged[k][sel] = True
                self.pieces[k].border[sel] = None
        self.waiting -= len(idx)
        for seam, (ia, ib) in list(self.contacts.items()):  # a merged piece only touches merged ones
            live = ~self.merged[seam[0]][ia]
            if not live.any():
                del self.contacts[seam]
            elif not live.all():
                self.contacts[seam] = ia[live], ib[live]
        self._forget_finished(keys)
        return out

    def _forget_finished(self, keys: list[ChunkKey]) -> None:
        """Let go of chunks all of whose pieces are out, so rounds and memory follow the open front.

        Safe: a merged piece never owns a pixel facing a chunk still to come (it would have been
        open), so a later neighbour of such a chunk has no contact with it; every contact it had
        was with merged pieces and was dropped above."""
        for k in keys:
            if self.merged[k].all():
                del self.pieces[k], self.merged[k]

    def _pairs(self, offsets: dict[ChunkKey, int]) -> np.ndarray:
        """The contacts of the pieces not merged yet, as pairs of ids numbered by ``offsets``."""
        if not self.contacts:
            return np.empty((0, 2), dtype=np.int64)
        return np.concatenate([np.column_stack([ia + offsets[a], ib + offsets[b]])
                               for (a, b), (ia, ib) in self.contacts.items()])

    def _open_pieces(self, keys: list[ChunkKey], offsets: dict[ChunkKey, int], n: int) -> np.ndarray:
        """Pieces owning a pixel on a side whose neighbouring chunk has not arrived yet."""
        open_ = np.zeros(n, dtype=bool)
        for k in keys:
            for side, owners in self.pieces[k].sides.items():
                dy, dx = _NEIGHBOUR[side]
                if (k[0] + dy, k[1] + dx) not in self.arrived:
                    o = owners[owners >= 0]
                    open_[offsets[k] + o] = True
        return open_

