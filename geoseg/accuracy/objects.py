"""Objects: each 4-connected region of one chosen class is an object with a chunking-independent id.

Why chunk-wise: the label raster may be far larger than memory. Each chunk is labelled with
``scipy.ndimage.label`` per class; only a few numbers per object (class, first pixel, size,
region of the first pixel) and the chunk's four border rows/columns of local ids travel. On the
client, objects touching across a seam (same class, 4-neighbours) are merged with a connected-
components pass over the seam pixel pairs (the union-find), and each merged object gets its id
from the rank of its first pixel in row-major order: 1, 2, 3 … exactly the numbering
``scipy.ndimage.label`` gives the whole raster for one class, whatever the chunk size.
A second pass over the chunks applies the ids (the optional uint32 instance raster, and the
overlaps with the reference's objects for object-level accuracy, :mod:`geoseg.accuracy.objectstats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.geo import ChunkGrid, Window

#: 4-connectivity (rook neighbours), the connectivity of geoseg's polygons.
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass
class ChunkObjects:
    """The objects of one chunk, numbered locally 1..n, and the local ids on its four borders."""

    window: Window
    cls: np.ndarray  # (n,) class id
    first: np.ndarray  # (n,) global row-major index of the first pixel
    size: np.ndarray  # (n,) pixels
    region: np.ndarray  # (n,) region slot of the first pixel (0 = none)
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    region_px: np.ndarray  # mapped pixels (labels >= 0) per region slot in the chunk (for densities)

    @property
    def n(self) -> int:
        return int(self.cls.size)


def label_classes(labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Local ids ``(h, w)`` int64 (0 = background) and the class of each id, classes one after another."""
    from scipy import ndimage

    out = np.zeros(labels.shape, dtype=np.int64)
    cls: list[np.ndarray] = []
    n = 0
    for c in classes:
        lab, k = ndimage.label(labels == c, structure=FOUR)
        if k:
            np.add(lab, n, out=out, where=lab > 0)
            cls.append(np.full(k, c, np.int64))
            n += k
    return out, (np.concatenate(cls) if cls else np.empty(0, np.int64))


def chunk_objects(
    labels: np.ndarray, regions: np.ndarray | None, window: Window, width: int, classes: Sequence[int],
    n_region_slots: int = 1,
) -> ChunkObjects:
    """Label one chunk (``labels`` over ``window`` of a raster ``width`` pixels wide; negative = no data)."""
    ids, cls = label_classes(labels, classes)
    n = cls.size
    flat = ids.ravel()
    nz = np.flatnonzero(flat)
    owner = flat[nz] - 1
    first_local = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_local, owner, nz)
    size = np.bincount(owner, minlength=n).astype(np.int64)
    r, c = np.divmod(first_local, window.width)
    first = (window.row_off + r) * width + (window.col_off + c)
    reg = np.zeros(labels.shape, np.int64) if regions is None else regions.astype(np.int64, copy=False)
    region = reg.ravel()[first_local] if n else np.empty(0, np.int64)
    # densities are per mapped area: a pixel without data (negative label) could hold no object
    region_px = np.bincount(reg.ravel(), weights=(labels >= 0).ravel(), minlength=n_region_slots).astype(np.int64)
    return ChunkObjects(window, cls, first.astype(np.int64), size, region.astype(np.int64),
                        ids[0].copy(), ids[-1].copy(), ids[:, 0].copy(), ids[:, -1].copy(), region_px)


@dataclass
class ObjectTable:
    """Every object of the raster, indexed by id - 1, and how each chunk's local ids map to ids."""

    cls: np.ndarray
    first: np.ndarray
    size: np.ndarray
    region: np.ndarray
    region_px: np.ndarray
    #: per chunk (row-major order), ``lut[k]`` = id of local object ``k`` (``lut[0] = 0``)
    luts: list[np.ndarray]

    @property
    def n(self) -> int:
        return int(self.cls.size)


def _seam_pairs(a: np.ndarray, b: np.ndarray, off_a: int, off_b: int, cls: np.ndarray) -> np.ndarray:
    """Provisional node pairs of same-class objects facing each other across one seam."""
    both = (a > 0) & (b > 0)
    pa, pb = a[both] - 1 + off_a, b[both] - 1 + off_b
    same = cls[pa] == cls[pb]
    return np.stack([pa[same], pb[same]], axis=1)


def merge_objects(chunks: Sequence[ChunkObjects], grid: ChunkGrid) -> ObjectTable:
    """Merge objects across seams and number them by first pixel (row-major): chunking-independent ids."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ny, nx = grid.chunks_shape
    if len(chunks) != ny * nx:
        raise ValueError(f"expected {ny * nx} chunks, got {len(chunks)}")
    counts = np.array([ch.n for ch in chunks], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    cls = np.concatenate([ch.cls for ch in chunks]) if total else np.empty(0, np.int64)
    first = np.concatenate([ch.first for ch in chunks]) if total else np.empty(0, np.int64)
    size = np.concatenate([ch.size for ch in chunks]) if total else np.empty(0, np.int64)
    region = np.concatenate([ch.region for ch in chunks]) if total else np.empty(0, np.int64)
    n_slots = max(len(ch.region_px) for ch in chunks)
    region_px = np.zeros(n_slots, np.int64)
    for ch in chunks:
        region_px[: len(ch.region_px)] += ch.region_px
    pairs = [np.empty((0, 2), np.int64)]
    for iy in range(ny):
        for ix in range(nx):
            k = iy * nx + ix
            if ix + 1 < nx:
                pairs.append(_seam_pairs(chunks[k].right, chunks[k + 1].left, offsets[k], offsets[k + 1], cls))
            if iy + 1 < ny:
                pairs.append(_seam_pairs(chunks[k].bottom, chunks[k + nx].top, offsets[k], offsets[k + nx], cls))
    if total == 0:
        return ObjectTable(cls, first, size, region, region_px, [np.zeros(1, np.int64) for _ in chunks])
    edges = np.concatenate(pairs)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False)
    # the node with the smallest first pixel anchors its object: its first pixel and region
    order = np.argsort(first, kind="stable")
    _, at = np.unique(comp[order], return_index=True)
    anchor = order[at]  # per component
    rank = np.empty(n_comp, np.int64)
    rank[np.argsort(first[anchor], kind="stable")] = np.arange(1, n_comp + 1)
    node_id = rank[comp]
    anchor_sorted = anchor[np.argsort(rank)]
    obj_size = np.bincount(node_id - 1, weights=size, minlength=n_comp).astype(np.int64)
    luts = [np.concatenate([[0], node_id[offsets[k]:offsets[k + 1]]]).astype(np.int64) for k in range(len(chunks))]
    return ObjectTable(cls[anchor_sorted], first[anchor_sorted], obj_size, region[anchor_sorted], region_px, luts)


def find_objects(
    read: Callable[[Window], tuple[np.ndarray, np.ndarray | None]], grid: ChunkGrid, classes: Sequence[int],
    n_region_slots: int = 1, mapper: Callable | None = None,
) -> ObjectTable:
    """Label every chunk (``read(window) -> (labels, region slots | None)``) and merge.

    ``mapper(fn, windows)`` runs the chunks (e.g. on a Dask cluster); plain ``map`` by default.
    """
    windows = list(grid.windows())
    run = mapper or (lambda fn, ws: list(map(fn, ws)))
    parts = run(_ChunkTask(read, grid.width, tuple(classes), n_region_slots), windows)
    return merge_objects(parts, grid)


@dataclass(frozen=True)
class _ChunkTask:
    """Picklable ``window -> ChunkObjects`` (the reader must be picklable too)."""

    read: Callable
    width: int
    classes: tuple[int, ...]
    n_region_slots: int

    def __call__(self, window: Window) -> ChunkObjects:
        labels, regions = self.read(window)
        return chunk_objects(labels, regions, window, self.width, self.classes, self.n_region_slots)


def instance_chunk(labels: np.ndarray, classes: Sequence[int], lut: np.ndarray) -> np.ndarray:
    """The uint32 instance ids of one chunk (0 = no object), from its local labelling and ``lut``."""
    ids, _ = label_classes(labels, classes)
    return lut[ids].astype(np.uint32)
