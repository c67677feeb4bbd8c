"""Benchmark: drawing a stratified sample (``geoseg sample``) vs. merely reading the label raster.

Builds (once, in ``--workdir``) a blocky label store of ``--size``² pixels in 1024-px chunks (6
classes in 64-px blocks, as ``bench_evaluate.py``; ``--noise F`` sets a share F of the pixels to
a random class, a per-pixel classifier's salt and pepper, which compresses worse). Then, on the
same threads (one per core), it times, interleaved ``--repeat`` times after one untimed warm-up:

* ``read``: every chunk of the store read and decompressed (the I/O floor of any pass), in the
  same groups of consecutive chunks the sampler uses, and
* ``sample``: :func:`geoseg.accuracy.sampledesign.draw_sample` (counts, keys, allocation, points),

their CPU time (all threads of the process: steadier than wall time on a shared, loaded machine)
and the resident memory each adds above the process's before it (peak of ``VmRSS`` polled every
20 ms). Prints one JSON object with the machine, its load, all times and ``ratio = sample / read``
(wall and CPU).

    python benchmarks/bench_sample.py                  # 20000 x 20000 = 400 Mpx
    python benchmarks/bench_sample.py --size 8000      # 64 Mpx, quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affine import Affine

from geoseg.geo import GeoGrid
from geoseg.legend import LANDCOVER_CLASSES

BLOCK = 64


def machine() -> dict:
    cpu = platform.processor() or ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram / 2**20, 1), "python": platform.python_version()}


def build_store(workdir: Path, size: int, noise: float) -> Path:
    from geoseg.io.labelstore import LabelStoreWriter

    store = workdir / f"labels_{size}{f'_noise{noise:g}' if noise else ''}.zarr"
    if store.exists():
        return store
    grid = GeoGrid.of(size, size, Affine(10, 0, 500000, 0, -10, 5100000), "EPSG:32633").tiles(1024)
    writer = LabelStoreWriter.create(store, grid, LANDCOVER_CLASSES)
    coarse = np.random.default_rng(0).integers(1, 7, (-(-size // BLOCK),) * 2).astype(np.uint8)
    coarse[5:7, 5:9] = 6  # keep one rare class
    coarse[coarse == 6] = 5
    coarse[5:7, 5:9] = 6

    def one(i_w):
        i, w = i_w
        rows, cols = w.slices
        block = coarse[np.arange(rows.start, rows.stop)[:, None] // BLOCK, np.arange(cols.start, cols.stop)[None] // BLOCK]
        if noise:
            rng = np.random.default_rng([1, i])
            flip = rng.random(block.shape) < noise
            block[flip] = rng.integers(1, 6, int(flip.sum()))
        writer.write(w, block)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, enumerate(grid.windows())))
    writer.finalize()
    return store


class PeakRss:
    """Peak resident memory above the level when entered (``VmRSS`` polled every 20 ms)."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def added_mib(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    return 0


def read_all(store: Path, threads: int) -> int:
    from geoseg.accuracy.sampledesign import _groups
    from geoseg.io.labelstore import read_label_info, read_label_window

    windows = list(read_label_info(store).chunk_grid.windows())

    def group(ws):
        return sum(int(read_label_window(store, w).size) for w in ws)

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(group, _groups(windows, threads)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target-se", type=float, default=0.005, help="sample size from this SE of overall accuracy")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "geoseg-bench-sample"))
    args = ap.parse_args()

    from geoseg._kernels.compiled import usable_cores
    from geoseg.accuracy.sampledesign import Allocation, draw_sample

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = build_store(workdir, args.size, args.noise)
    build_s = round(time.perf_counter() - t0, 1)
    threads = usable_cores()
    alloc = Allocation(target_se=args.target_se, min_per_stratum=100)
    load_start = round(os.getloadavg()[0], 2)
    read_all(store, threads)  # warm-up: page cache, compiled loops loaded
    draw_sample(store, alloc, threads=threads)
    reads, samples, read_mem, sample_mem, read_cpu, sample_cpu = [], [], [], [], [], []
    for _ in range(args.repeat):
        with PeakRss() as m:
            t, c = time.perf_counter(), time.process_time()
            assert read_all(store, threads) == args.size**2
            reads.append(time.perf_counter() - t)
            read_cpu.append(time.process_time() - c)
        read_mem.append(m.added_mib)
        with PeakRss() as m:
            t, c = time.perf_counter(), time.process_time()
            s = draw_sample(store, alloc, threads=threads)
            samples.append(time.perf_counter() - t)
            sample_cpu.append(time.process_time() - c)
        sample_mem.append(m.added_mib)
    ratios = [b / a for a, b in zip(reads, samples)]
    cpu_ratios = [b / a for a, b in zip(read_cpu, sample_cpu)]
    print(json.dumps({
        "machine": machine(), "load_avg_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "size": args.size, "mpx": args.size**2 / 1e6, "noise": args.noise, "threads": threads, "build_s": build_s,
        "points": len(s.points), "strata": len(s.strata),
        "read_s": [round(v, 3) for v in reads], "sample_s": [round(v, 3) for v in samples],
        "ratio_each": [round(r, 3) for r in ratios], "ratio_median": round(statistics.median(ratios), 3),
        "ratio_best_times": round(min(samples) / min(reads), 3),
        "read_cpu_s": [round(v, 3) for v in read_cpu], "sample_cpu_s": [round(v, 3) for v in sample_cpu],
        "cpu_ratio_each": [round(r, 3) for r in cpu_ratios], "cpu_ratio_median": round(statistics.median(cpu_ratios), 3),
        "read_added_mib": read_mem, "sample_added_mib": sample_mem,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
