"""Chunk predictors: the one interface every method offers to the chunk task.

A predictor is small and picklable (a k-means model, or just a checkpoint path). It says how
much halo it needs and turns a chunk read with that halo into labels for the chunk's core.
Heavy state (a DeepLab network) is loaded lazily, once per worker process, never shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .classes import ClassInfo, cluster_legend
from .features import ResolvedFeatures
from .grid import HaloWindow, trim_halo
from .models.kmeans import KMeansModel


class ChunkPredictor(Protocol):
    """What the chunk task needs from a method."""

    #: Pixels of context to read around each chunk.
    halo: int
    #: Dask resources each prediction task needs (e.g. ``{"GPU": 1}``), or ``None``.
    resources: dict[str, float] | None

    def legend(self) -> tuple[ClassInfo, ...]: ...

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        """Labels for ``hw.core`` from bands ``data`` and mask ``valid`` read over ``hw.outer``."""
        ...


@dataclass(frozen=True)
class KMeansPredictor:
    """Per-pixel k-means: needs no halo and no GPU."""

    model: KMeansModel
    features: ResolvedFeatures
    halo: int = 0
    resources: dict[str, float] | None = None

    def legend(self) -> tuple[ClassInfo, ...]:
        return cluster_legend(self.model.n_clusters)

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow, rows_per_block: int = 128) -> np.ndarray:
        """Features and labels row block by row block: small temporaries that stay in cache."""
        data, valid = trim_halo(data, hw), trim_halo(valid, hw)
        labels = np.empty(valid.shape, dtype=np.uint8)
        for r0 in range(0, valid.shape[0], rows_per_block):
            rows = slice(r0, r0 + rows_per_block)
            labels[rows] = self.model.predict(self.features.compute(data[:, rows]), valid[rows])
        return labels


@dataclass(frozen=True)
class DeepLabPredictor:
    """DeepLabV3+ from a checkpoint; the network is cached per worker process."""

    checkpoint: Path
    halo: int
    batch_size: int = 8
    device: str = "auto"
    resources: dict[str, float] | None = None
    classes: tuple[ClassInfo, ...] = ()

    def legend(self) -> tuple[ClassInfo, ...]:
        return self.classes

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        from .models.deeplab import get_worker_model, predict_chunk

        model, meta = get_worker_model(self.checkpoint, self.device)
        labels = predict_chunk(
            model,
            meta,
            data,
            valid,
            origin=(hw.outer.row_off, hw.outer.col_off),
            device=_device_of(model),
            batch_size=self.batch_size,
        )
        return trim_halo(labels, hw)


def _device_of(model) -> str:  # noqa: ANN001
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"
