"""What a tile-level instance model (Mask R-CNN, SAM) proposes, so the seam merge need not know the model.

A model sees one tile of a fixed, scene-anchored tile grid and returns proposals in that tile's
pixels. Everything chunk-independent (which tile owns an object, how overlapping proposals merge,
how ids are numbered) is decided downstream from proposals alone, so a new model only has to
implement :class:`TileInstanceModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class InstanceProposal:
    """One object a model found in one tile: its pixels, its class id (0 if the model has none), its score."""

    mask: np.ndarray  # bool (h, w), in the tile's pixels
    class_id: int
    score: float


class TileInstanceModel(Protocol):
    """A model that proposes instances in one tile; tiles are ``tile`` px, read with ``overlap`` px around.

    ``tile`` and ``overlap`` are read-only here, so a frozen dataclass (small, picklable: what a Dask
    task carries) implements the protocol with plain fields. The merge is :mod:`geoseg.methods.tilemerge`.
    """

    @property
    def tile(self) -> int: ...

    @property
    def overlap(self) -> int: ...

    def propose(self, image: np.ndarray, valid: np.ndarray) -> list[InstanceProposal]:
        """Proposals for ``image`` ``(bands, h, w)`` float32 (``valid`` bool ``(h, w)``), deterministic."""
        ...
