"""Merging a tile-level instance model's proposals into one instance raster that does not depend on the chunking.

A :class:`~geoseg.methods.proposals.TileInstanceModel` (Mask R-CNN, SAM, or a plain threshold) sees one
tile at a time. This module holds the rule that turns its proposals into instances, written so that
every quantity is a function of the scene alone, never of where a chunk starts or how big it is:

1. **Tiles on a scene-anchored grid.** Tile ``(i, j)`` has the core ``[i·tile, (i+1)·tile) ×
   [j·tile, (j+1)·tile)`` and is read with ``overlap`` px around it (``tile + 2·overlap`` px a side;
   pixels beyond the scene are zeros and not valid), so the model always sees the same pixels for it.
   Every tile is run alone (one forward pass per tile), so no batch composition can change a float.
2. **Ownership.** A tile keeps only the proposals whose mask centroid lies in its core: every object
   is decided by exactly one tile, which sees it whole when it reaches at most ``overlap`` px from its
   centroid. A proposal's mask is cut to valid pixels; its *uid* is
   ``(tile index) · MAX_PER_TILE + rank in the tile`` (rank by score, then first pixel).
3. **Suppression, not chained.** Owned proposals of neighbouring tiles can be the same object seen
   twice (a centroid close to the core's edge). A proposal is dropped when a better one (higher
   score; equal scores: smaller uid) overlaps it with mask IoU above ``iou_threshold``, whether or not
   that better one is itself dropped: each decision depends on the proposals overlapping it only, so
   any chunk that sees those decides alike (greedy NMS would chain decisions across the scene).
4. **Painting.** A pixel belongs to the best kept proposal covering it (same order as above).
5. **Ids.** The client numbers the painted instances 1, 2, 3 … by the row-major rank of each one's
   first painted pixel (:mod:`geoseg.run.modelinstances` does the two passes), as the watershed does.

The proposals a chunk's pixels depend on come from the tiles whose read window meets the chunk grown
by :func:`merge_margin` (the covering proposals and those that could suppress them), so a chunk gathers
the proposals of those tiles and decides its core exactly as the whole scene would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import JobSpecError
from geoseg.geo import Window
from geoseg.methods.proposals import InstanceProposal, TileInstanceModel

#: Most proposals one tile may keep (uids leave this many slots per tile).
MAX_PER_TILE = 4096
#: Default mask IoU above which the lower-ranked of two proposals is dropped.
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class TileLayout:
    """The scene-anchored tile grid of a model: ``tile`` px cores, read with ``overlap`` px around."""

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile < 16:
            raise JobSpecError(f"instance tiles must be at least 16 px, got {self.tile}")
        if not 0 <= self.overlap <= self.tile // 2:
            raise JobSpecError(f"instance tile overlap must be in [0, tile/2 = {self.tile // 2}] px, got {self.overlap}")

    @property
    def n_rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def n_cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def side(self) -> int:
        """Pixels a side of what the model sees."""
        return self.tile + 2 * self.overlap

    def core(self, i: int, j: int) -> Window:
        r, c = i * self.tile, j * self.tile
        return Window(r, c, min(self.tile, self.height - r), min(self.tile, self.width - c))

    def read_window(self, i: int, j: int) -> Window:
        """The tile's read window in scene pixels (may reach past the scene: those pixels are padding)."""
        return Window(i * self.tile - self.overlap, j * self.tile - self.overlap, self.side, self.side)

    def tiles_meeting(self, window: Window, margin: int = 0) -> list[tuple[int, int]]:
        """Tiles whose read window meets ``window`` grown by ``margin`` px, row-major."""
        lo_r, hi_r = window.row_off - margin, window.row_off + window.height + margin
        lo_c, hi_c = window.col_off - margin, window.col_off + window.width + margin
        # read window of row i: [i·tile - overlap, (i+1)·tile + overlap)
        i0 = max(0, (lo_r - self.overlap) // self.tile)
        i1 = min(self.n_rows - 1, (hi_r - 1 + self.overlap) // self.tile)
        j0 = max(0, (lo_c - self.overlap) // self.tile)
        j1 = min(self.n_cols - 1, (hi_c - 1 + self.overlap) // self.tile)
        return [(i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]

    def tiles_owned_by(self, window: Window) -> list[tuple[int, int]]:
        """Tiles whose core's first pixel lies in ``window`` (each tile falls to exactly one chunk)."""
        i0 = -(-window.row_off // self.tile)
        i1 = (window.row_off + window.height - 1) // self.tile
        j0 = -(-window.col_off // self.tile)
        j1 = (window.col_off + window.width - 1) // self.tile
        return [(i, j) for i in range(i0, min(i1, self.n_rows - 1) + 1) for j in range(j0, min(j1, self.n_cols - 1) + 1)]

    def merge_margin(self) -> int:
        """Px around a chunk whose tiles' proposals can decide its pixels (covering ones and their rivals)."""
        return self.side


def layout_of(model: TileInstanceModel, height: int, width: int) -> TileLayout:
    return TileLayout(height, width, int(model.tile), int(model.overlap))


@dataclass(frozen=True)
class Proposals:
    """Owned proposals of some tiles, in scene pixels: masks cut to their boxes.

    ``box`` rows are ``(row0, col0, row1, col1)`` (end exclusive); ``masks[k]`` is bool of the box's shape.
    """

    uid: np.ndarray  # int64
    class_id: np.ndarray  # int64
    score: np.ndarray  # float32
    box: np.ndarray  # int64 (n, 4)
    masks: tuple[np.ndarray, ...]

    @property
    def n(self) -> int:
        return int(self.uid.size)

    @staticmethod
    def empty() -> Proposals:
        return Proposals(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32),
                         np.empty((0, 4), np.int64), ())

    @staticmethod
    def concat(parts: Sequence[Proposals]) -> Proposals:
        """The union of several sets, each uid once (a tile's proposals may arrive through two neighbours)."""
        parts = [p for p in parts if p.n]
        if not parts:
            return Proposals.empty()
        uid = np.concatenate([p.uid for p in parts])
        _, first = np.unique(uid, return_index=True)
        masks = [m for p in parts for m in p.masks]
        return Proposals(uid[first], np.concatenate([p.class_id for p in parts])[first],
                         np.concatenate([p.score for p in parts])[first], np.concatenate([p.box for p in parts])[first],
                         tuple(masks[k] for k in first))

    def meeting(self, window: Window) -> Proposals:
        """The proposals whose box meets ``window``."""
        b = self.box
        hit = ((b[:, 0] < window.row_off + window.height) & (b[:, 2] > window.row_off)
               & (b[:, 1] < window.col_off + window.width) & (b[:, 3] > window.col_off))
        idx = np.flatnonzero(hit)
        return Proposals(self.uid[idx], self.class_id[idx], self.score[idx], self.box[idx],
                         tuple(self.masks[k] for k in idx))


def cut_by_tile(props: Proposals, layout: TileLayout) -> np.ndarray:
    """Per proposal: whether its mask reaches an edge of the window its tile was read with, other than the
    scene's. The model saw only part of such an object; the rest is proposed by other tiles, so one object
    may become several instances (it reaches more than ``overlap`` px from its centroid)."""
    if props.n == 0:
        return np.zeros(0, bool)
    i, j = np.divmod(props.uid // MAX_PER_TILE, layout.n_cols)
    top, left = i * layout.tile - layout.overlap, j * layout.tile - layout.overlap
    bottom, right = top + layout.side, left + layout.side
    b = props.box
    return (((b[:, 0] <= top) & (top > 0)) | ((b[:, 1] <= left) & (left > 0))
            | ((b[:, 2] >= bottom) & (bottom < layout.height)) | ((b[:, 3] >= right) & (right < layout.width)))


def owned_proposals(
    found: Sequence[InstanceProposal], valid: np.ndarray, layout: TileLayout, i: int, j: int
) -> Proposals:
    """The proposals of tile ``(i, j)`` (masks in its read window's pixels) that the tile owns, in scene pixels."""
    read, core = layout.read_window(i, j), layout.core(i, j)
    kept: list[tuple[float, int, int, int, int, int, int, np.ndarray]] = []
    for p in found:
        mask = np.asarray(p.mask, bool) & valid
        if mask.shape != valid.shape:
            raise ValueError(f"a proposal's mask is {mask.shape}, the tile is {valid.shape}")
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        cr, cc = int(np.floor(rows.mean())) + read.row_off, int(np.floor(cols.mean())) + read.col_off
        if not (core.row_off <= cr < core.row_off + core.height and core.col_off <= cc < core.col_off + core.width):
            continue
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        first = (int(rows[0]) + read.row_off) * layout.width + int(cols[0]) + read.col_off
        kept.append((-float(p.score), first, int(p.class_id), r0 + read.row_off, c0 + read.col_off,
                     r1 + read.row_off, c1 + read.col_off, mask[r0:r1, c0:c1].copy()))
    if len(kept) > MAX_PER_TILE:
        raise JobSpecError(f"tile ({i}, {j}) holds {len(kept)} instances, more than {MAX_PER_TILE}; use smaller tiles")
    kept.sort(key=lambda k: (k[0], k[1]))
    base = (i * layout.n_cols + j) * MAX_PER_TILE
    return Proposals(
        np.arange(base, base + len(kept), dtype=np.int64),
        np.array([k[2] for k in kept], np.int64),
        np.array([-k[0] for k in kept], np.float32),
        np.array([k[3:7] for k in kept], np.int64).reshape(-1, 4),
        tuple(k[7] for k in kept),
    )


def tile_input(image: np.ndarray, valid: np.ndarray, origin: tuple[int, int], read: Window) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``read`` out of arrays that start at scene pixel ``origin``; what they lack is zeros, not valid."""
    side_h, side_w = read.height, read.width
    out = np.zeros((image.shape[0], side_h, side_w), np.float32)
    ok = np.zeros((side_h, side_w), bool)
    r0, c0 = read.row_off - origin[0], read.col_off - origin[1]
    a0, b0 = max(r0, 0), max(c0, 0)
    a1, b1 = min(r0 + side_h, valid.shape[0]), min(c0 + side_w, valid.shape[1])
    if a1 > a0 and b1 > b0:
        out[:, a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = image[:, a0:a1, b0:b1]
        ok[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = valid[a0:a1, b0:b1]
    out[:, ~ok] = 0.0
    return out, ok


def propose_tiles(
    model: TileInstanceModel, image: np.ndarray, valid: np.ndarray, origin: tuple[int, int], layout: TileLayout,
    tiles: Sequence[tuple[int, int]],
) -> Proposals:
    """Run ``model`` on each of ``tiles`` alone (arrays start at scene pixel ``origin``); their owned proposals."""
    parts = []
    for i, j in tiles:
        x, ok = tile_input(image, valid, origin, layout.read_window(i, j))
        if not ok.any():
            continue
        parts.append(owned_proposals(model.propose(x, ok), ok, layout, i, j))
    return Proposals.concat(parts)


def _rank(p: Proposals) -> np.ndarray:
    """Indices best first: higher score, then smaller uid."""
    return np.lexsort((p.uid, -p.score.astype(np.float64)))


def _overlap(p: Proposals, a: int, b: int) -> int:
    ba, bb = p.box[a], p.box[b]
    r0, c0 = max(ba[0], bb[0]), max(ba[1], bb[1])
    r1, c1 = min(ba[2], bb[2]), min(ba[3], bb[3])
    if r1 <= r0 or c1 <= c0:
        return 0
    ma = p.masks[a][r0 - ba[0] : r1 - ba[0], c0 - ba[1] : c1 - ba[1]]
    mb = p.masks[b][r0 - bb[0] : r1 - bb[0], c0 - bb[1] : c1 - bb[1]]
    return int(np.count_nonzero(ma & mb))


def suppressed(p: Proposals, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Bool per proposal: a better one overlaps it with mask IoU above ``iou_threshold`` (not chained)."""
    out = np.zeros(p.n, bool)
    if p.n < 2:
        return out
    order = _rank(p)
    pos = np.empty(p.n, np.int64)
    pos[order] = np.arange(p.n)
    area = np.array([np.count_nonzero(m) for m in p.masks], np.int64)
    b = p.box
    for k in range(p.n):
        cand = np.flatnonzero((b[:, 0] < b[k, 2]) & (b[:, 2] > b[k, 0]) & (b[:, 1] < b[k, 3]) & (b[:, 3] > b[k, 1])
                              & (pos < pos[k]))
        for q in cand:
            inter = _overlap(p, k, int(q))
            if inter and inter / (area[k] + area[q] - inter) > iou_threshold:
                out[k] = True
                break
    return out


def paint(p: Proposals, drop: np.ndarray, window: Window) -> np.ndarray:
    """``(h, w)`` int64 raster of ``window``: the uid + 1 of the best kept proposal covering each pixel, 0 if none."""
    out = np.zeros((window.height, window.width), np.int64)
    for k in _rank(p)[::-1]:  # worst first: better ones paint over
        if drop[k]:
            continue
        r0, c0, r1, c1 = (int(v) for v in p.box[k])
        a0, b0 = max(r0, window.row_off), max(c0, window.col_off)
        a1, b1 = min(r1, window.row_off + window.height), min(c1, window.col_off + window.width)
        if a1 <= a0 or b1 <= b0:
            continue
        m = p.masks[k][a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
        view = out[a0 - window.row_off : a1 - window.row_off, b0 - window.col_off : b1 - window.col_off]
        view[m] = p.uid[k] + 1
    return out


def merge_window(p: Proposals, window: Window, iou_threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """The uid raster (uid + 1, 0 = none) of ``window`` from every proposal that can decide its pixels.

    ``p`` must hold every owned proposal of the tiles :meth:`TileLayout.tiles_meeting` gives for
    ``window`` and :meth:`TileLayout.merge_margin`; the result is then the whole scene's, cut to ``window``.
    """
    near = p.meeting(window)
    if near.n == 0:
        return np.zeros((window.height, window.width), np.int64)
    # the rivals of the proposals covering the window: every proposal meeting their boxes
    lo = near.box.min(axis=0)
    hi = near.box.max(axis=0)
    rivals = p.meeting(Window(int(lo[0]), int(lo[1]), int(hi[2] - lo[0]), int(hi[3] - lo[1])))
    drop = suppressed(rivals, iou_threshold)
    return paint(rivals, drop, window)


def first_pixels(uids: np.ndarray, window: Window, scene_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per uid present in a painted window (uid + 1 values): uid, first pixel's scene index, pixel count."""
    flat = uids.ravel()
    present = flat > 0
    if not present.any():
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    vals = flat[present]
    pix = np.flatnonzero(present)
    u, first, count = np.unique(vals, return_index=True, return_counts=True)
    rows, cols = np.divmod(pix[first], window.width)
    return u - 1, (rows + window.row_off) * scene_width + cols + window.col_off, count
