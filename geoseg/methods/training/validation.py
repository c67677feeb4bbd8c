"""Validation scored the way inference labels a scene, so the kept checkpoint is chosen on what a run will give.

The held-out rows are cut into blocks; every epoch each block is read with one tile of context around it (the
image's own pixels, or the image mirrored past its edges) and labelled by
:func:`geoseg.methods.deeplab.predict_chunk`: overlapping tiles on the image's global grid, blended, exactly as
a run labels that image. Scoring lone tiles instead (as before) put zeros past an image's bottom and right edges
and left every tile's border pixels without context, which no run ever does.

Memory follows the block: the blocks' context is read again each epoch (as training windows are), only their
targets and their raw pixels for the baselines are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from geoseg.geo import Window, halo_window
from geoseg.legend import NODATA_LABEL
from geoseg.methods.checkpoint import CheckpointMeta
from geoseg.methods.deeplab import predict_chunk, required_halo
from geoseg.methods.training.baselines import Tile
from geoseg.methods.training.data import IGNORE_INDEX, TrainSource

if TYPE_CHECKING:
    import torch

#: A validation block is at most this many tiles on a side: big enough that the tiles blended around its edges
#: (read for context only) are a small part of the work, small enough that a few blocks spread over the image.
BLOCK_TILES = 4


@dataclass(frozen=True)
class ValidationBlock:
    """``window`` of validation source ``source``."""

    source: int
    window: Window


def validation_blocks(sources: list[TrainSource], tile: int, limit: int, rng: np.random.Generator,
                      ) -> list[ValidationBlock]:
    """Blocks covering each source's validation rows; when they hold more than ``limit`` tiles' pixels
    (``limit * tile²``), a random subset of them that does not."""
    side = tile * max(1, min(BLOCK_TILES, math.isqrt(limit)))
    out = [ValidationBlock(si, Window(r, c, min(side, src.row_hi - r), min(side, src.width - c)))
           for si, src in enumerate(sources)
           for r in range(src.row_lo, src.row_hi, side)
           for c in range(0, src.width, side)]
    budget = limit * tile * tile
    if sum(b.window.height * b.window.width for b in out) <= budget:
        return out
    kept: list[int] = []
    px = 0
    for i in rng.permutation(len(out)):
        area = out[i].window.height * out[i].window.width
        if kept and px + area > budget:
            continue
        kept.append(int(i))
        px += area
    return [out[i] for i in sorted(kept)]


@dataclass
class ValidationSet:
    """The validation blocks, each as read (raw bands, validity, and class indexes with :data:`IGNORE_INDEX`
    where nothing counts: what the network and the baselines are scored on), and per block the ``(mean, std)``
    its image is normalised by."""

    blocks: list[ValidationBlock] = field(default_factory=list)
    raw: list[Tile] = field(default_factory=list)
    stats: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def px(self) -> int:
        """Labelled pixels of the blocks (what every validation score is computed on)."""
        return int(sum((target != IGNORE_INDEX).sum() for _, _, target in self.raw))


def read_validation(sources: list[TrainSource], blocks: list[ValidationBlock],
                    stats: list[tuple[np.ndarray, np.ndarray]]) -> ValidationSet:
    """Each block read once; ``stats`` per source."""
    raw = [sources[b.source].read(b.window.row_off, b.window.col_off, b.window.height, b.window.width)
           for b in blocks]
    return ValidationSet(blocks, raw, [stats[b.source] for b in blocks])


def validation_confusion(model: torch.nn.Module, meta: CheckpointMeta, val: ValidationSet,
                         sources: list[TrainSource], device: torch.device, batch_size: int) -> np.ndarray:
    """Confusion matrix (rows = reference, columns = prediction, class indexes) of what a run with ``model`` and
    ``meta`` labels on the validation blocks (ignored pixels left out)."""
    n = meta.n_classes
    index_of = np.full(256, IGNORE_INDEX, dtype=np.int64)
    index_of[[c.id for c in meta.classes]] = np.arange(n)
    index_of[NODATA_LABEL] = IGNORE_INDEX
    conf = np.zeros((n, n), dtype=np.int64)
    model.eval()
    for block, (_, _, target), stats in zip(val.blocks, val.raw, val.stats):
        src = sources[block.source]
        # one tile of context, the image's own pixels; past its edges predict_chunk mirrors it, as in a run
        grown = halo_window(block.window, required_halo(meta), (src.height, src.width))
        img, valid = src.read_bands(grown.outer)
        core = grown.core_in_outer
        labels = predict_chunk(model, meta, img, valid, origin=(grown.outer.row_off, grown.outer.col_off),
                               core=core, device=device, batch_size=batch_size, scene_stats=stats)
        assert isinstance(labels, np.ndarray)  # labels only: no confidence asked for
        pred = index_of[labels[core]]
        m = (target != IGNORE_INDEX) & (pred != IGNORE_INDEX)  # both from the same validity: the same pixels
        conf += np.bincount(target[m].astype(np.int64) * n + pred[m], minlength=n * n).reshape(n, n)
    return conf
