"""The labelling pass of a run: the tasks that run on the workers and the client code that drives them.

Sampling (a stratified pixel sample from every chunk, for the methods fitted on it: k-means in
:mod:`geoseg.run.methods.kmeans`, thresholds) and labelling every chunk into the label store (skipping chunks already done): one
task per chunk, or, for a predictor that asks for it (DeepLab), tasks over groups of chunks that
read the next chunk while predicting the current one (:mod:`geoseg.run.prefetch`). Only small
things travel back: sample pixels, each chunk's (or group's) 256-bin label histogram.
:mod:`geoseg.run.workflow` calls these in its stages.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.geo import ChunkGrid, Window, halo_window
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.io.scene import Scene, read_window
from geoseg.legend import NODATA_LABEL
from geoseg.methods.features import ResolvedFeatures
from geoseg.methods.predictors import ChunkPredictor
from geoseg.methods.sampling import (
    block_count,
    chunk_rng,
    sample_block_fraction,
    sample_valid_pixels,
    sample_windows,
    sampling_rate,
)

log = logging.getLogger(__name__)


#: Name of the raster inside ``confidence.zarr`` and its attributes.
CONFIDENCE_ARRAY = "confidence"


CONFIDENCE_ATTRS: dict[str, Any] = {
    "long_name": "probability of the predicted class",
    "units": "percent",
    "valid_range": [0, 100],
    "geoseg:kind": "confidence",
}


def sample_task(scene: Scene, feats: ResolvedFeatures, window: Window, rate: float, seed: int) -> np.ndarray:
    """Draw one chunk's share of the k-means sample from a random subset of its file blocks.

    The rate is scaled up by the fraction actually read, so each chunk still contributes in
    proportion to its valid pixels.
    """
    rng = chunk_rng(seed, window)
    parts = sample_windows(window, scene.block, sample_block_fraction(rate, block_count(scene.grid.shape, scene.block)), rng)
    read_px = sum(w.height * w.width for w in parts)
    scaled = min(1.0, rate * window.height * window.width / read_px)
    out = []
    for data, valid in _read_parts(scene, parts):
        out.append(sample_valid_pixels(data, valid, scaled, rng, feats.compute))
    return np.concatenate(out, axis=0)


def _read_parts(scene: Scene, parts: list[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``read_window`` of each part; by a few threads when the chunk has many files (small tiles, where
    each part opens files of its own). The sample is drawn afterwards, in order: the same pixels."""
    from geoseg.io.mosaic import PARALLEL_READS_FROM, READ_THREADS
    from geoseg.io.scene import read_windows

    n_files = sum(len(layer.sources) for layer in scene.layers + scene.masks)
    threads = READ_THREADS if n_files >= PARALLEL_READS_FROM and len(parts) > 1 else 1
    return read_windows(scene, parts, threads)


def label_task(
    scene: Scene, chunk: int, store: str, predictor: ChunkPredictor, window: Window,
    confidence_store: str | None = None, prefetched: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Label one chunk of the scene's grid cut into ``chunk`` pixels and write it to the store; a
    chunk already written is only counted. (The chunk size travels, not a second copy of the grid.)
    ``prefetched``: the chunk's ``read_window`` over its halo window, already read
    (:func:`label_group_task`); without it the chunk is read here.

    With ``confidence_store`` the predictor's confidence of the same chunk is written there
    too; a chunk counts as done only when both stores have it (the confidence is written
    first, so a crash between the two writes redoes the chunk). Returns the chunk's label
    histogram (256 counts), which is all that travels back.
    """
    from geoseg.io.labelstore import read_partial_window

    grid = scene.grid.tiles(chunk)
    writer = LabelStoreWriter(store, grid)
    conf_writer = LabelStoreWriter(confidence_store, grid, array=CONFIDENCE_ARRAY) if confidence_store else None
    if writer.is_done(window) and (conf_writer is None or conf_writer.is_done(window)):
        labels = read_partial_window(store, window)
    else:
        hw = halo_window(window, predictor.halo, grid.shape)
        data, valid = prefetched if prefetched is not None else read_window(scene, hw.outer)
        prefetched = None
        if conf_writer is not None:
            labels, confidence = predictor.predict_with_confidence(data, valid, hw)
            del data, valid
            conf_writer.write(window, confidence)
        else:
            labels = predictor.predict(data, valid, hw)
        writer.write(window, labels)
    from geoseg._kernels.labelcount import label_counts  # np.bincount's counts, 5x faster on uint8

    return label_counts(labels)


def label_group_task(
    scenes: list[Scene], chunk: int, store: str, predictor: ChunkPredictor, windows: list[Window],
    confidence_store: str | None = None,
) -> np.ndarray:
    """Label consecutive chunks in one task, reading chunk i+1 while chunk i is predicted
    (:mod:`geoseg.run.prefetch`); returns the sum of their label histograms.

    Each chunk goes through :func:`label_task`, so it is written and marked done on its own; chunks
    already done (by an earlier run, or by this group's attempt on a worker that was lost) are
    only counted and not read.
    """
    from geoseg.run.prefetch import read_ahead

    grid = scenes[0].grid.tiles(chunk)
    writer = LabelStoreWriter(store, grid)
    conf_writer = LabelStoreWriter(confidence_store, grid, array=CONFIDENCE_ARRAY) if confidence_store else None
    todo = [i for i, w in enumerate(windows)
            if not (writer.is_done(w) and (conf_writer is None or conf_writer.is_done(w)))]

    def read(i: int) -> tuple[np.ndarray, np.ndarray]:
        return read_window(scenes[i], halo_window(windows[i], predictor.halo, grid.shape).outer)

    hist = np.zeros(256, dtype=np.int64)
    for i in sorted(set(range(len(windows))) - set(todo)):
        hist += label_task(scenes[i], chunk, store, predictor, windows[i], confidence_store)
    for i, data in read_ahead(todo, read):
        hist += label_task(scenes[i], chunk, store, predictor, windows[i], confidence_store, prefetched=data)
        del data  # released before the next read starts: at most one chunk read ahead
    return hist


def _gather(client, futures: list, label: str, show_progress: bool) -> list:
    """Wait for futures with a progress bar on a terminal; results in submission order."""
    if show_progress and sys.stderr.isatty():
        _progress_bar(futures, label)
    return client.gather(futures)


def wait_futures(futures: list, label: str, show_progress: bool) -> None:
    """Wait until ``futures`` are finished (or failed: a later gather raises), with a progress bar on a terminal."""
    if show_progress and sys.stderr.isatty():
        _progress_bar(futures, label)
    else:
        from distributed import wait

        wait(futures)


def _progress_bar(futures: list, label: str) -> None:
    from distributed import progress

    print(f"{label}:", file=sys.stderr)
    progress(futures)


def warm_in_background(modules: tuple[str, ...] = (), then: Callable[[], object] | None = None) -> None:
    """Import ``modules``, then call ``then``, in a daemon thread of this process; return at once.

    Why: what the fit and a worker's first label task need takes a while to load (zarr, numba's CPU
    target and compiled loops, ~0.5 CPU s: :func:`geoseg.run.methods.kmeans.warm_kmeans`) and would otherwise load on the critical
    path, once the last sample part has arrived. :func:`geoseg.run.methods.kmeans.fit_kmeans_on_cluster` runs it (``client.run``)
    on the fit's worker while the sample is drawn, and on the other workers once their sample parts
    are drawn, when they would only wait for the fit.
    A task that needs a module meanwhile waits for the import in progress (Python's import lock), and
    numba's compiler lock does the same for a loop. Best effort: a failure is only logged; the real call
    raises it where it belongs. The client uses it too, for the label store's zarr while the cluster fits.
    """
    import importlib
    import threading

    def run() -> None:
        try:
            for module in modules:
                importlib.import_module(module)
            if then is not None:
                then()
        except Exception as exc:  # a warm-up; the task that needs it reports the error
            log.debug("warm-up of %s failed: %s", modules or then, exc)

    threading.Thread(target=run, daemon=True, name=f"geoseg warm-up {' '.join(modules)}".strip()).start()


def sample_group_task(
    scenes: list[Scene], feats: ResolvedFeatures, windows: list[Window], rate: float, seed: int
) -> np.ndarray:
    """:func:`sample_task` for consecutive chunks, their parts concatenated in chunk order."""
    return np.concatenate([sample_task(s, feats, w, rate, seed) for s, w in zip(scenes, windows, strict=True)])


def sample_futures(client, scene: Scene, grid: ChunkGrid, feats: Any, sample_size: int, seed: int) -> list:
    """Sampling tasks over groups of consecutive chunks of ``grid`` (each chunk gets only the files
    meeting it); their results, concatenated in order, are the chunk-by-chunk sample.

    Why groups: a chunk's share is one file block or a few (~10 ms), about what a Dask task costs
    around it; groups sized by :func:`geoseg.run.prefetch.group_sizes` (at most 8 chunks, single
    chunks at the end) drew the 400 Mpx benchmark's sample in 0.74 s instead of 0.86-0.92 s.
    """
    from geoseg.run.prefetch import group_sizes, prediction_slots, split

    rate = sampling_rate(sample_size, grid.height * grid.width)
    windows = list(grid.windows())
    groups = split(windows, group_sizes(len(windows), prediction_slots(client, None)))
    return client.map(sample_group_task, [[scene.for_window(w) for w in g] for g in groups],
                      [feats] * len(groups), groups, [rate] * len(groups), [seed] * len(groups), pure=False)


def draw_sample(
    client, scene: Scene, grid: ChunkGrid, feats: Any, sample_size: int, seed: int,
    show_progress: bool = True,
) -> np.ndarray:
    """The stratified sample ``(n, features)`` drawn chunk by chunk of ``grid`` on the workers.

    ``feats`` is anything with ``compute(data) -> (f, h, w)`` (``ResolvedFeatures``, a threshold index).
    """
    futures = sample_futures(client, scene, grid, feats, sample_size, seed)
    sample = np.concatenate(_gather(client, futures, "sampling", show_progress), axis=0)
    if sample.shape[0] == 0:
        raise InputError("the input has no valid pixels (all nodata or NaN); nothing to fit")
    return sample


def write_labels(
    client, scene: Scene, grid: ChunkGrid, predictor: ChunkPredictor, store: Path | str,
    resume_key: str, attrs: dict[str, Any], show_progress: bool = True, reused: list[int] | None = None,
    confidence_store: Path | str | None = None,
) -> dict[int, int]:
    """Predict every chunk into ``store`` (skipping chunks already done) and finalise it.

    ``reused``, when given, receives the number of chunks found already done.
    ``confidence_store``: also write the predictor's per-pixel confidence there (uint8 percent,
    255 = nodata, same grid and georeferencing); it is finalised before the labels, so a
    ``labels.zarr`` that exists always has its finished ``confidence.zarr`` next to it.
    """
    if grid.grid != scene.grid:
        raise ValueError("write_labels needs the scene's own grid cut into chunks (scene.chunk_grid)")
    reused = reused if reused is not None else [0]
    writer = LabelStoreWriter.create(store, grid, predictor.legend(), attrs=attrs, resume_key=resume_key)
    done = writer.done_windows()
    conf_writer = None
    if confidence_store is not None:
        conf_writer = LabelStoreWriter.create(
            confidence_store, grid, (), attrs={**attrs, **CONFIDENCE_ATTRS}, resume_key=resume_key,
            dtype="uint8", fill_value=NODATA_LABEL, array=CONFIDENCE_ARRAY,
        )
        done &= conf_writer.done_windows()
    if done:
        log.info("resuming: %d of %d chunks already written", len(done), grid.n_chunks)
    reused[0] = len(done)
    windows = list(grid.windows())
    n = len(windows)
    annotations = {"resources": predictor.resources} if predictor.resources else {}
    conf = str(confidence_store) if confidence_store is not None else None
    scenes = [scene.for_window(halo_window(w, predictor.halo, grid.shape).outer) for w in windows]
    if predictor.prefetch:
        futures = _grouped_futures(client, scenes, windows, done, grid.chunk, str(store), predictor, conf, annotations)
    else:
        futures = client.map(label_task, scenes, [grid.chunk] * n, [str(store)] * n, [predictor] * n, windows,
                             [conf] * n, pure=False, **annotations)
    hist = np.sum(_gather(client, futures, "labelling", show_progress), axis=0)
    if conf_writer is not None:
        conf_writer.finalize()
    writer.finalize()
    return {int(i): int(c) for i, c in enumerate(hist) if c}


def _grouped_futures(
    client, scenes: list[Scene], windows: list[Window], done: set[str], chunk: int, store: str,
    predictor: ChunkPredictor, conf: str | None, annotations: dict[str, Any],
) -> list:
    """Chunks already done: one counting task each; the rest: :func:`label_group_task` over groups of
    consecutive chunks sized by :func:`geoseg.run.prefetch.group_sizes` for the cluster's slots."""
    from geoseg.run.prefetch import group_sizes, prediction_slots, split

    old = [i for i, w in enumerate(windows) if w.key in done]
    new = [i for i, w in enumerate(windows) if w.key not in done]
    futures = []
    if old:
        futures += client.map(label_task, [scenes[i] for i in old], [chunk] * len(old), [store] * len(old),
                              [predictor] * len(old), [windows[i] for i in old], [conf] * len(old), pure=False,
                              **annotations)
    groups = split(new, group_sizes(len(new), prediction_slots(client, predictor.resources)))
    if groups:
        futures += client.map(label_group_task, [[scenes[i] for i in g] for g in groups], [chunk] * len(groups),
                              [store] * len(groups), [predictor] * len(groups), [[windows[i] for i in g] for g in groups],
                              [conf] * len(groups), pure=False, **annotations)
    return futures
