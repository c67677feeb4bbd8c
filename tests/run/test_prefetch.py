"""The next chunk's read overlapped with compute (issue 15, item 6): geoseg.run.prefetch and the group tasks.

Timing tests use an instrumented reader and a predictor that takes a known time, and record when each
read and each prediction starts and ends: the read of chunk i+1 must start before the prediction of
chunk i ends (it cannot, read after read), and the read of chunk i+2 not before chunk i is released.
The DeepLab job runs with and without overlap on a real cluster and must give the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.geo import HaloWindow, trim_halo
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.io.scene import open_scene
from geoseg.legend import NODATA_LABEL, ClassInfo, cluster_legend
from geoseg.run import labelling
from geoseg.run.labelling import label_group_task, label_task
from geoseg.run.prefetch import group_sizes, read_ahead, split
from tests.fixtures import blocky_scene

# --------------------------------------------------------------------------- read_ahead on its own


class Clock:
    """Events ``(kind, item, seconds)`` recorded from several threads."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[str, object, float]] = []
        self.lock = threading.Lock()

    def mark(self, kind: str, item: object) -> None:
        with self.lock:
            self.events.append((kind, item, time.perf_counter() - self.t0))

    def at(self, kind: str, item: object) -> float:
        (t,) = [t for k, i, t in self.events if k == kind and i == item]
        return t

    def most_alive(self) -> int:
        """Most items read and not yet released at once (a release sorts before a read end at a tie)."""
        order = sorted((t, kind == "read_end") for kind, _, t in self.events if kind in ("read_end", "release"))
        alive = peak = 0
        for _, is_read in order:
            alive += 1 if is_read else -1
            peak = max(peak, alive)
        return peak


def _consume(items, clock: Clock, read_s: float, work_s: float) -> list:
    def read(i):
        clock.mark("read_start", i)
        time.sleep(read_s)
        clock.mark("read_end", i)
        return np.full(4, i)

    got = []
    for i, data in read_ahead(items, read):
        clock.mark("work_start", i)
        time.sleep(work_s)
        got.append((i, int(data[0])))
        clock.mark("work_end", i)
        del data
        clock.mark("release", i)
    return got


def test_read_ahead_overlaps_the_next_read_with_the_current_work():
    clock = Clock()
    items = list(range(5))
    assert _consume(items, clock, read_s=0.15, work_s=0.3) == [(i, i) for i in items]
    for i in items[:-1]:
        # the read of item i+1 began while item i was being worked on ...
        assert clock.at("read_start", i + 1) < clock.at("work_end", i)
    for i in items[:-2]:
        # ... but the read of item i+2 only after item i was released: one read ahead, no more
        assert clock.at("read_start", i + 2) >= clock.at("release", i)
    assert clock.most_alive() <= 2
    # the reads after the first are hidden behind the work: the whole takes clearly less than the sum of
    # all reads and works as measured (a loaded machine stretches both alike); read after read it would not
    reads = sum(clock.at("read_end", i) - clock.at("read_start", i) for i in items)
    works = sum(clock.at("work_end", i) - clock.at("work_start", i) for i in items)
    hidden = reads - (clock.at("read_end", 0) - clock.at("read_start", 0))
    assert clock.at("work_end", 4) < reads + works - 0.5 * hidden


def test_read_ahead_with_slow_reads_never_holds_more_than_one_ahead():
    clock = Clock()
    _consume(list(range(4)), clock, read_s=0.2, work_s=0.02)
    assert clock.most_alive() <= 2
    for i in range(2):
        assert clock.at("read_start", i + 2) >= clock.at("release", i)


def test_read_ahead_raises_a_read_error_at_its_item_and_stops_cleanly():
    seen = []

    def read(i):
        if i == 2:
            raise OSError("damaged block")
        return i

    with pytest.raises(OSError, match="damaged block"):
        for i, _ in read_ahead([0, 1, 2, 3], read):
            seen.append(i)
    assert seen == [0, 1]
    assert list(read_ahead([], read)) == []


def test_read_ahead_closed_early_leaves_no_read_behind():
    started, finished = [], []

    def read(i):
        started.append(i)
        time.sleep(0.1)
        finished.append(i)
        return i

    it = read_ahead([0, 1, 2], read)
    assert next(it) == (0, 0)
    it.close()  # item 1 is queued (cancelled) or being read (waited for); item 2 is never read
    assert finished == started and started in ([0], [0, 1])
    time.sleep(0.15)
    assert finished == started
    assert not [t for t in threading.enumerate() if t.name.startswith("geoseg-read-ahead")]


@pytest.mark.parametrize(("n", "slots"), [(1, 1), (7, 1), (16, 1), (9, 2), (100, 2), (37, 5), (3, 8)])
def test_group_sizes_cover_the_chunks_and_end_in_single_chunks(n, slots):
    sizes = group_sizes(n, slots)
    assert sum(sizes) == n and all(1 <= s <= 8 for s in sizes)
    if slots == 1:
        assert sizes[:-1] == [8] * (len(sizes) - 1)  # nothing to balance: as long as allowed
    else:
        assert sizes == sorted(sizes, reverse=True)  # large first, shrinking to the tail
        assert sizes[-1] == 1
    assert [x for g in split(list(range(n)), sizes) for x in g] == list(range(n))


# --------------------------------------------------------------------------- the group task, in process


@dataclasses.dataclass(frozen=True)
class SlowThreshold:
    """A predictor that takes ``seconds`` per chunk and records when: nir > 1000 → class 1, else 0."""

    seconds: float
    clock: Clock
    fail_at: int | None = None  # row offset of a chunk on which it "crashes"
    halo: int = 8
    resources: dict[str, float] | None = None
    prefetch: bool = True

    def legend(self) -> tuple[ClassInfo, ...]:
        return cluster_legend(2)

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        key = (hw.core.row_off, hw.core.col_off)
        if self.fail_at is not None and key[0] == self.fail_at:
            raise RuntimeError("worker lost")
        self.clock.mark("work_start", key)
        time.sleep(self.seconds)
        labels = np.where(trim_halo(data, hw)[3] > 1000, 1, 0).astype(np.uint8)
        labels[~trim_halo(valid, hw)] = NODATA_LABEL
        self.clock.mark("work_end", key)
        return labels


@pytest.fixture()
def small(tmp_path):
    path, _ = blocky_scene(tmp_path, height=256, width=192)
    scene = open_scene(str(path))
    grid = scene.grid.tiles(64)  # 4 x 3 chunks (reads need not follow the file's 128 px blocks)
    with rasterio.open(path) as ds:
        nir, ok = ds.read(4), ds.read_masks(1) > 0
    oracle = np.where(nir > 1000, 1, 0).astype(np.uint8)
    oracle[~ok] = NODATA_LABEL
    return scene, grid, oracle, tmp_path


def _instrument_reads(monkeypatch, clock: Clock) -> None:
    real = labelling.read_window

    def read_window(scene, window):
        key = (window.row_off, window.col_off)
        clock.mark("read_start", key)
        time.sleep(0.05)
        out = real(scene, window)
        clock.mark("read_end", key)
        return out

    monkeypatch.setattr(labelling, "read_window", read_window)


def _store(tmp: Path, grid, name: str = "labels.zarr") -> Path:
    LabelStoreWriter.create(tmp / name, grid, cluster_legend(2), resume_key="k")
    return tmp / name


def _read_store(path: Path, grid) -> np.ndarray:
    from geoseg.io.labelstore import read_partial_window

    out = np.zeros(grid.shape, np.uint8)
    for w in grid.windows():
        out[w.slices] = read_partial_window(str(path), w)
    return out


def test_group_task_reads_the_next_chunk_while_predicting_and_matches_per_chunk_tasks(small, monkeypatch):
    scene, grid, oracle, tmp = small
    clock = Clock()
    _instrument_reads(monkeypatch, clock)
    predictor = SlowThreshold(0.25, clock)
    windows = list(grid.windows())[:5]
    store = _store(tmp, grid)
    hist = label_group_task([scene] * 5, grid.chunk, str(store), predictor, windows)

    cores = [(w.row_off, w.col_off) for w in windows]
    halo = predictor.halo
    outers = [(max(0, r - halo), max(0, c - halo)) for r, c in cores]  # the reads are of the halo windows
    for i in range(4):
        assert clock.at("read_start", outers[i + 1]) < clock.at("work_end", cores[i])  # overlapped
    for i in range(3):
        assert clock.at("read_start", outers[i + 2]) >= clock.at("work_end", cores[i])  # one ahead at most

    # the same labels and histogram as one task per chunk, and as the oracle from rasterio
    monkeypatch.undo()
    one_by_one = _store(tmp, grid, "single.zarr")
    single = sum(label_task(scene, grid.chunk, str(one_by_one), dataclasses.replace(predictor, seconds=0), w)
                 for w in windows)
    got, ref = _read_store(store, grid), _read_store(one_by_one, grid)
    assert got.tobytes() == ref.tobytes()
    assert hist.tolist() == single.tolist()
    for w in windows:
        assert (got[w.slices] == oracle[w.slices]).all()
    assert hist.sum() == sum(w.height * w.width for w in windows)


def test_group_rerun_after_a_crash_predicts_only_the_chunks_not_done(small, monkeypatch):
    """A group whose worker died after two chunks: the rerun counts those two and reads and predicts the rest."""
    scene, grid, oracle, tmp = small
    windows = list(grid.windows())[:6]  # rows 0 and 64 of a 3-chunk-wide grid
    store = _store(tmp, grid)
    crash = SlowThreshold(0, Clock(), fail_at=windows[3].row_off)
    with pytest.raises(RuntimeError, match="worker lost"):
        label_group_task([scene] * 6, grid.chunk, str(store), crash, windows)
    writer = LabelStoreWriter(store, grid)
    assert [writer.is_done(w) for w in windows] == [True, True, True, False, False, False]

    clock = Clock()
    _instrument_reads(monkeypatch, clock)
    hist = label_group_task([scene] * 6, grid.chunk, str(store), SlowThreshold(0, clock), windows)
    predicted = {i for k, i, _ in clock.events if k == "work_start"}
    read = {i for k, i, _ in clock.events if k == "read_start"}
    assert predicted == {(w.row_off, w.col_off) for w in windows[3:]}
    assert len(read) == 3  # the done chunks were not read again
    got = _read_store(store, grid)
    for w in windows:
        assert (got[w.slices] == oracle[w.slices]).all()
    assert hist.tolist() == np.bincount(np.concatenate([oracle[w.slices].ravel() for w in windows]),
                                        minlength=256).tolist()


# --------------------------------------------------------------------------- a DeepLab job on a real cluster


@pytest.fixture(scope="module")
def cw(tmp_path_factory):
    """A 320² cropweed scene with a nodata corner and a tiny untrained checkpoint for it."""
    import torch

    from geoseg.methods.checkpoint import save_checkpoint
    from geoseg.samples.synthetic import make_scene
    from tests.fixtures import tiny_meta, tiny_model

    torch.set_num_threads(1)
    files = make_scene("cropweed", tmp_path_factory.mktemp("cw"), width=320, height=320, seed=5, block=64)
    with rasterio.open(files.image, "r+") as ds:
        data = ds.read()
        data[:, :30, :40] = ds.nodata
        ds.write(data)
    meta = tiny_meta(tile_size=64, tile_overlap=16, band_mean=[95, 120, 80, 160], band_std=[30, 25, 25, 40])
    ckpt = tmp_path_factory.mktemp("ck") / "tiny"
    save_checkpoint(tiny_model(meta, seed=2), meta, ckpt)  # seed 2 predicts two classes here
    return files, ckpt


def _deeplab_job(files, ckpt, out: Path):
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.run.jobspec import parse_job

    return parse_job({
        "name": "prefetch", "inputs": [str(files.image)], "output": str(out), "chunk_size": 64,
        "method": {"kind": "deeplab", "checkpoint": str(ckpt), "batch_size": 8, "device": "cpu", "confidence": True},
        "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in CROPWEED_CLASSES],
        "vectorize": {"enabled": False},
    })


def _run(files, ckpt, out: Path, client, monkeypatch, prefetch: bool):
    from geoseg.run import workflow

    real = workflow.build_deeplab_predictor
    monkeypatch.setattr(workflow, "build_deeplab_predictor",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), prefetch=prefetch))
    return workflow.run_job(_deeplab_job(files, ckpt, out), client=client, show_progress=False)


def _bytes(path: Path) -> bytes:
    with rasterio.open(path) as ds:
        return ds.read(1).tobytes()


@pytest.fixture(scope="module")
def plain_run(cw, dask_client, tmp_path_factory):
    """The DeepLab job with one task per chunk (no overlap): 25 chunks of 64 px."""
    mp = pytest.MonkeyPatch()
    try:
        out = tmp_path_factory.mktemp("plain") / "out"
        result = _run(*cw, out, dask_client, mp, prefetch=False)
    finally:
        mp.undo()
    yield out, result
    from geoseg.methods.deeplab import clear_model_cache

    dask_client.run(clear_model_cache)


@pytest.mark.integration
def test_deeplab_job_gives_the_same_bytes_with_and_without_overlap(cw, plain_run, dask_client, tmp_path,
                                                                   monkeypatch):
    from geoseg.run import prefetch

    plain_out, plain = plain_run
    sizes: list[list[int]] = []
    real_sizes = prefetch.group_sizes
    monkeypatch.setattr(prefetch, "group_sizes", lambda *a: sizes.append(real_sizes(*a)) or sizes[-1])
    grouped = _run(*cw, tmp_path / "out", dask_client, monkeypatch, prefetch=True)
    assert sizes == [[7, 5, 4, 3, 2, 1, 1, 1, 1]]  # 25 chunks, 2 worker slots: groups really ran
    assert _bytes(tmp_path / "out" / "labels.zarr") == _bytes(plain_out / "labels.zarr")
    assert _bytes(tmp_path / "out" / "confidence.zarr") == _bytes(plain_out / "confidence.zarr")
    assert grouped.label_counts == plain.label_counts
    labels = np.frombuffer(_bytes(plain_out / "labels.zarr"), np.uint8)
    assert len(set(np.unique(labels)) - {NODATA_LABEL}) >= 2  # a one-class model would prove little
    assert {int(k): v for k, v in grouped.label_counts.items()} == {
        int(c): int(n) for c, n in enumerate(np.bincount(labels, minlength=256)) if n}


@pytest.mark.integration
def test_grouped_deeplab_job_resumes_only_the_chunks_not_done(cw, plain_run, dask_client, tmp_path, monkeypatch):
    """Some chunks done (one with sentinel labels, to see it is only counted): the grouped rerun keeps
    them and recomputes the rest to the same bytes as the uninterrupted run."""
    plain_out, _ = plain_run
    files, _ = cw
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text((plain_out / "run.json").read_text())  # the same job ran here before
    key = json.loads((plain_out / "labels.zarr" / "labels" / ".zattrs").read_text())["geoseg:resume_key"]
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.run.labelling import CONFIDENCE_ARRAY

    grid = open_scene(str(files.image)).chunk_grid(64)
    windows = list(grid.windows())
    labels_w = LabelStoreWriter.create(out / "labels.zarr", grid, tuple(CROPWEED_CLASSES), resume_key=key)
    conf_w = LabelStoreWriter.create(out / "confidence.zarr", grid, (), resume_key=key, array=CONFIDENCE_ARRAY)
    with rasterio.open(plain_out / "labels.zarr") as ds:
        ref = ds.read(1)
    with rasterio.open(plain_out / "confidence.zarr") as ds:
        ref_conf = ds.read(1)
    done = [windows[i] for i in (0, 1, 7, 12, 13)]
    sentinel = windows[12]
    for w in done:
        labels_w.write(w, np.full((w.height, w.width), 2, np.uint8) if w == sentinel else ref[w.slices])
        conf_w.write(w, ref_conf[w.slices])
    result = _run(*cw, out, dask_client, monkeypatch, prefetch=True)

    with rasterio.open(out / "labels.zarr") as ds:
        got = ds.read(1)
    assert (got[sentinel.slices] == 2).all()  # counted, not recomputed
    rest = np.ones(got.shape, bool)
    rest[sentinel.slices] = False
    assert got[rest].tobytes() == ref[rest].tobytes()
    assert json.loads((out / "run.json").read_text())["chunks_reused"] == len(done)
    assert {int(k): v for k, v in result.label_counts.items()} == {
        int(c): int(n) for c, n in enumerate(np.bincount(got.ravel(), minlength=256)) if n}


@dataclasses.dataclass(frozen=True)
class TimedPredictor:
    """A real predictor whose ``predict`` calls are timed."""

    inner: object
    clock: Clock
    resources: dict[str, float] | None = None
    prefetch: bool = True

    @property
    def halo(self) -> int:
        return self.inner.halo  # type: ignore[attr-defined]

    def legend(self) -> tuple[ClassInfo, ...]:
        return self.inner.legend()  # type: ignore[attr-defined]

    def predict(self, data: np.ndarray, valid: np.ndarray, hw: HaloWindow) -> np.ndarray:
        key = (hw.core.row_off, hw.core.col_off)
        self.clock.mark("work_start", key)
        out = self.inner.predict(data, valid, hw)  # type: ignore[attr-defined]
        self.clock.mark("work_end", key)
        return out


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif("not __import__('torch').cuda.is_available()",
                                                                      reason="no CUDA device")]),
])
def test_deeplab_group_overlaps_reads_with_inference(cw, tmp_path, monkeypatch, device):
    """DeepLab itself (on a GPU when there is one): the next read starts during the current chunk's
    inference, and the labels match one task per chunk (bytes on CPU; 99.9 % under CUDA autocast)."""
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.checkpoint import read_meta
    from geoseg.methods.deeplab import required_halo
    from geoseg.methods.predictors import DeepLabPredictor

    files, ckpt = cw
    scene = open_scene(str(files.image))
    grid = scene.grid.tiles(64)
    windows = list(grid.windows())[:6]
    dl = DeepLabPredictor(checkpoint=ckpt, halo=required_halo(read_meta(ckpt)), batch_size=8, device=device,
                          classes=tuple(CROPWEED_CLASSES))
    clock = Clock()
    _instrument_reads(monkeypatch, clock)
    store = tmp_path / "grouped.zarr"
    LabelStoreWriter.create(store, grid, tuple(CROPWEED_CLASSES), resume_key="k")
    label_group_task([scene] * len(windows), 64, str(store), TimedPredictor(dl, clock), windows)
    reads = sorted(t for k, _, t in clock.events if k == "read_start")  # one read thread: in chunk order
    ends = {i: t for k, i, t in clock.events if k == "work_end"}
    works = [ends[(w.row_off, w.col_off)] for w in windows]
    assert len(reads) == len(windows)
    assert all(reads[i + 1] < works[i] for i in range(len(windows) - 1)), (reads, works)
    monkeypatch.undo()

    single = tmp_path / "single.zarr"
    LabelStoreWriter.create(single, grid, tuple(CROPWEED_CLASSES), resume_key="k")
    for w in windows:
        label_task(scene, 64, str(single), dl, w)
    got, ref = _read_store(store, grid), _read_store(single, grid)
    if device == "cpu":
        assert got.tobytes() == ref.tobytes()
    else:
        assert (got == ref).mean() >= 0.999
