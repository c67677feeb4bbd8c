"""Chunk predictors: the one interface every method offers to the chunk task.

A predictor is small and picklable (a k-means model, or just a checkpoint path). It says how
much halo it needs and turns a chunk read with that halo into labels for the chunk's core.
Heavy state (a DeepLab network) is loaded lazily, once per worker process, never shipped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from geoseg.geo import HaloWindow, trim_halo
from geoseg.io.labelstore import KMEANS_MODEL_ATTR
from geoseg.legend import NODATA_LABEL, ClassInfo, cluster_legend
from geoseg.methods.features import ResolvedFeatures
from geoseg.methods.kmeans import KMeansModel


class ChunkPredictor(Protocol):
    """What the chunk task needs from a method, its optional capabilities included.

    ``halo``: pixels of context read around each chunk (trimmed from the labels). ``confidence``: the
    predictor also gives a per-pixel confidence (:meth:`predict_with_confidence`), which the workflow
    writes to ``confidence.zarr``. ``prefetch``: read ahead, i.e. run over groups of chunks, each task
    reading the next chunk while it predicts the current one (:mod:`geoseg.run.prefetch`); otherwise
    one task per chunk. ``provenance``: what the label store records of what numbered its labels (none by
    default). A predictor without the optional ones inherits :class:`PlainPredictor`.
    """

    @property
    def halo(self) -> int:
        """Pixels of context to read around each chunk."""
        ...

    @property
    def resources(self) -> dict[str, float] | None:
        """Dask resources each prediction task needs (e.g. ``{"GPU": 1}``), or ``None``."""
        ...

    @property
    def confidence(self) -> bool:
        """Whether :meth:`predict_with_confidence` is offered (and asked for)."""
        ...

    @property
    def prefetch(self) -> bool:
        """Whether chunks are read ahead, in groups per task."""
        ...

    def legend(self) -> tuple[ClassInfo, ...]: ...

    def provenance(self) -> dict[str, str]:
        """Attributes the label store keeps of what numbered its labels, where the legend alone does not say
        (k-means: which model's clusters), so later comparisons can tell two numberings apart."""
        ...

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        """Labels for ``hw.core`` from bands ``data`` and mask ``valid`` read over ``hw.outer``."""
        ...

    def predict_with_confidence(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> tuple[np.ndarray, np.ndarray]:
        """Labels and their confidence for ``hw.core`` (uint8 percent, 255 = nodata); only when ``confidence``."""
        ...


class PlainPredictor:
    """The optional capabilities' defaults: no confidence, no read-ahead."""

    confidence = False
    prefetch = False

    def provenance(self) -> dict[str, str]:
        return {}

    def predict_with_confidence(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} gives no confidence")


#: Pixels per block of k-means prediction: float32 temporaries of 64 KiB, under glibc's 128 KiB mmap
#: threshold. Larger ones are each a fresh mmap under Dask's worker environment (its
#: MALLOC_TRIM_THRESHOLD_ pins that threshold), page-faulted again on every block: 3-5x slower.
BLOCK_PIXELS = 16_384


@dataclass(frozen=True)
class KMeansPredictor(PlainPredictor):
    """Per-pixel k-means: needs no halo and no GPU."""

    model: KMeansModel
    features: ResolvedFeatures
    halo: int = 0
    resources: dict[str, float] | None = None

    def legend(self) -> tuple[ClassInfo, ...]:
        return cluster_legend(self.model.n_clusters)

    def provenance(self) -> dict[str, str]:
        """The model's digest: cluster N of two runs is one cluster only when one model numbered both."""
        return {KMEANS_MODEL_ATTR: self.model.identity()}

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow, block_pixels: int = BLOCK_PIXELS) -> np.ndarray:
        """Features and labels a few rows at a time: small temporaries that stay in cache and on the heap."""
        data, valid = trim_halo(data, hw), trim_halo(valid, hw)
        if self.model.fused_plan(self.features) is not None:  # one compiled pass, the same labels
            return self.model.predict_bands(data, valid, self.features)
        labels = np.empty(valid.shape, dtype=np.uint8)
        rows_per_block = max(1, block_pixels // max(1, valid.shape[1]))
        for r0 in range(0, valid.shape[0], rows_per_block):
            rows = slice(r0, r0 + rows_per_block)
            labels[rows] = self.model.predict(self.features.compute(data[:, rows]), valid[rows])
        return labels


@dataclass(frozen=True)
class DeepLabPredictor:
    """A segmentation network from a checkpoint (any architecture); cached per worker process.

    With ``confidence`` the workflow also asks for :meth:`predict_with_confidence` and writes
    the blended probability of the chosen class as a second raster. ``prefetch``: chunks are
    read while the previous one is predicted (:mod:`geoseg.run.prefetch`); the labels are the same.
    """

    checkpoint: Path
    halo: int
    batch_size: int = 8
    device: str = "auto"
    resources: dict[str, float] | None = None
    classes: tuple[ClassInfo, ...] = ()
    confidence: bool = False
    tta: str = "none"
    prefetch: bool = True
    #: the scene's ``(mean, std)`` per network channel, for a checkpoint with ``normalisation: scene``
    scene_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def legend(self) -> tuple[ClassInfo, ...]:
        return self.classes

    def provenance(self) -> dict[str, str]:
        return {}  # the checkpoint's classes are named: the legend says what each id is

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        return self._run(data, valid, hw, False)

    def predict_with_confidence(
        self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence for ``hw.core``: uint8 percent (0-100) of the chosen class, 255 on nodata."""
        labels, prob = self._run(data, valid, hw, True)
        return labels, confidence_percent(prob, labels)

    def _run(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow, with_confidence: bool):
        from geoseg.methods.deeplab import get_worker_model, predict_chunk

        match_worker_threads()
        model, meta = get_worker_model(self.checkpoint, self.device)
        # ``core`` limits the work to the tiles that touch the chunk; tiles stay on the global grid
        # (``origin``), so a pixel gets the same tiles and the same blend whatever the chunking.
        out = predict_chunk(
            model,
            meta,
            data,
            valid,
            origin=(hw.outer.row_off, hw.outer.col_off),
            device=_device_of(model),
            batch_size=self.batch_size,
            return_confidence=with_confidence,
            core=hw.core_in_outer,
            tta=self.tta,
            scene_stats=self.scene_stats,
        )
        if with_confidence:
            labels, prob = out
            return trim_halo(labels, hw), trim_halo(prob, hw)
        return trim_halo(out, hw)


def confidence_percent(prob: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 percent, rounded; ``NODATA_LABEL`` where ``labels`` is nodata.

    >>> confidence_percent(np.array([[0.994, 0.5], [0.0, 1.0]]), np.array([[1, 2], [255, 3]], np.uint8)).tolist()
    [[99, 50], [255, 100]]
    """
    pct = np.rint(np.clip(prob, 0.0, 1.0) * 100.0).astype(np.uint8)
    pct[labels == NODATA_LABEL] = NODATA_LABEL
    return pct


_THREADS_LOCK = threading.Lock()
_THREADS_SET_FOR: int | None = None


def match_worker_threads() -> int | None:
    """In a Dask worker, give torch as many intra-op threads as the worker has task threads.

    torch defaults to every core of the machine, so several worker processes on one host would
    each start that many threads and oversubscribe the CPU; a worker with ``nthreads`` slots
    was given that share. Done once per process; outside a worker nothing changes.
    Returns the thread count set (or already set), ``None`` outside a worker.
    """
    global _THREADS_SET_FOR
    if _THREADS_SET_FOR is not None:
        return _THREADS_SET_FOR
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    state = getattr(worker, "state", None)
    n = getattr(state, "nthreads", None) or getattr(worker, "nthreads", None)
    if not n:
        return None
    with _THREADS_LOCK:
        if _THREADS_SET_FOR is None:
            import torch

            torch.set_num_threads(max(1, int(n)))
            _THREADS_SET_FOR = int(n)
    return _THREADS_SET_FOR


def _device_of(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"
