"""Augmentations that matter when few images train a network: zoom (crop-resize) and brightness/contrast.

Flips and rotations (:func:`geoseg.methods.training.data._augment`) make the network blind to
orientation; these two make it less sensitive to the ground sampling distance (plants or fields a
little bigger or smaller) and to illumination and sensor gain (another date, another flight). Zoom
moves image and reference together: bilinear for the bands and nearest for the class ids, on the
same pixel-centre convention, so a label stays on its pixel. Jitter changes the bands only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def resize_pair(x: np.ndarray, target: np.ndarray, out_h: int, out_w: int) -> tuple[np.ndarray, np.ndarray]:
    """Bands ``(b, h, w)`` resized bilinearly and class ids ``(h, w)`` by nearest to ``(out_h, out_w)``.

    Both sample output pixel ``i`` at input coordinate ``(i + 0.5) * h / out_h - 0.5`` (torch's
    ``align_corners=False``): the nearest class id is the one of the input pixel holding that point.
    """
    import torch

    h, w = target.shape
    if (h, w) == (out_h, out_w):
        return x, target
    xt = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(x))[None], size=(out_h, out_w),
                                         mode="bilinear", align_corners=False, antialias=out_h < h)
    rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
    return xt[0].numpy(), np.ascontiguousarray(target[rows[:, None], cols[None, :]])


@dataclass(frozen=True)
class Augment:
    """Zoom by up to ``scale`` (a window of side ``tile * z``, ``z`` in ``[1 - scale, 1 + scale]``,
    resized to ``tile * (1 ± …)`` so the output is at most one tile) and per-band gain ``1 ± jitter``
    and shift ``± jitter`` (in band standard deviations, as the bands are normalised)."""

    tile: int
    scale: float = 0.0
    jitter: float = 0.0

    @property
    def read_side(self) -> int:
        """Side of the window read around a sampled tile, so a zoomed-out crop finds its pixels."""
        return math.ceil(self.tile * (1 + self.scale)) if self.scale > 0 else self.tile

    def grow(self, r: int, c: int, h: int, w: int, row_lo: int, row_hi: int, width: int) -> tuple[int, int, int, int]:
        """The window ``(r, c, h, w)`` grown to :attr:`read_side` around its centre, inside rows ``[row_lo, row_hi)``."""
        side = self.read_side
        if side == self.tile:
            return r, c, h, w
        nh, nw = min(side, row_hi - row_lo), min(side, width)
        nr = int(np.clip(r + h // 2 - nh // 2, row_lo, row_hi - nh))
        nc = int(np.clip(c + w // 2 - nw // 2, 0, width - nw))
        return nr, nc, nh, nw

    def zoom(self, x: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random crop of side ``tile * z`` resized by ``1 / z``: at most ``tile`` per side afterwards."""
        h, w = target.shape
        if self.scale <= 0:
            return x[:, : self.tile, : self.tile], target[: self.tile, : self.tile]
        z = float(rng.uniform(1 - self.scale, 1 + self.scale))
        side = max(1, round(self.tile * z))
        ch, cw = min(side, h), min(side, w)
        r0, c0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out_h = max(1, min(self.tile, round(ch * self.tile / side)))
        out_w = max(1, min(self.tile, round(cw * self.tile / side)))
        return resize_pair(x[:, r0 : r0 + ch, c0 : c0 + cw], target[r0 : r0 + ch, c0 : c0 + cw], out_h, out_w)

    def colour(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per-band ``x * gain + shift`` (brightness and contrast; band by band, so colour too)."""
        if self.jitter <= 0:
            return x
        b = x.shape[0]
        gain = np.asarray(rng.uniform(1 - self.jitter, 1 + self.jitter, b), np.float32)[:, None, None]
        shift = np.asarray(rng.uniform(-self.jitter, self.jitter, b), np.float32)[:, None, None]
        return x * gain + shift
