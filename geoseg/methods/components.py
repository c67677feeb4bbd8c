"""The simplest tile instance model: connected components of one band above (or below) a threshold.

Why: a baseline any scene can run without a trained network (bright objects on a dark background,
dark crowns on bright soil), and a model whose every output is known, so the seam merge of
:mod:`geoseg.methods.tilemerge` can be checked against the scene's own components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.methods.proposals import InstanceProposal

_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


@dataclass(frozen=True)
class ComponentsModel:
    """4-connected regions where band ``band`` (0-based) is above ``threshold`` (``below``: under it).

    Each region of at least ``min_pixels`` is one proposal of class ``class_id``; its score is the
    region's share of pixels beyond the threshold's margin (bigger, cleaner objects score higher),
    a deterministic function of the tile's pixels.
    """

    band: int
    threshold: float
    tile: int = 256
    overlap: int = 32
    below: bool = False
    class_id: int = 1
    min_pixels: int = 4

    def propose(self, image: np.ndarray, valid: np.ndarray) -> list[InstanceProposal]:
        from scipy import ndimage

        x = image[self.band]
        on = ((x < self.threshold) if self.below else (x > self.threshold)) & valid
        regions, n = ndimage.label(on, structure=_FOUR)
        if n == 0:
            return []
        sizes = np.bincount(regions.ravel(), minlength=n + 1)
        margin = np.abs(x - self.threshold)
        strength = np.bincount(regions.ravel(), weights=margin.ravel(), minlength=n + 1)
        out = []
        for k, sl in enumerate(ndimage.find_objects(regions), start=1):
            if sl is None or sizes[k] < self.min_pixels:
                continue
            mask = np.zeros(on.shape, bool)
            mask[sl] = regions[sl] == k
            score = float(strength[k] / sizes[k]) / (float(strength[k] / sizes[k]) + 1.0)
            out.append(InstanceProposal(mask, self.class_id, score))
        return out
