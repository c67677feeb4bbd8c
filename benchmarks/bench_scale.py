"""Scale benchmark: the k-means workflow on 2k², 8k² and 20k² scenes, against the read floor.

For each size it generates the landcover sample scene (cached under --data), then on one local
cluster (2 workers × 1 thread unless told otherwise) measures:

- ``floor_s``: reading and decoding every chunk of the input on the cluster, nothing else;
- ``pipeline_s``: the k-means job (sample, fit, predict, write labels.zarr), vectorise off;
- Mpx/s of the pipeline, and the ratio pipeline / floor (the target is ≤ 1.5);
- summed peak RSS of all processes of the run (client + scheduler, nannies, workers), sampled
  every 100 ms, so memory can be compared across sizes.

Usage:  .venv/bin/python benchmarks/bench_scale.py --sizes 2000 8000 20000 [--chunk 2048]
Prints one JSON line per size and a final JSON list.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil


class PeakMemory:
    """Polls the RSS of this process and all its descendants; keeps each process's peak."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def summed_peak_mib(self) -> float:
        return sum(self.peaks.values()) / 2**20


def read_only_task(scene, window) -> int:  # noqa: ANN001
    from geoseg.io import read_window

    data, valid = read_window(scene, window)
    return int(valid.sum())


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": psutil.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version()}


def bench_size(size: int, data: Path, out: Path, chunk: int, workers: int, memory_limit: str) -> dict:
    from distributed import Client, LocalCluster

    from geoseg.io import open_scene
    from geoseg.jobspec import parse_job
    from geoseg.synthetic import make_scene
    from geoseg.workflow import run_job

    folder = data / f"landcover_{size}"
    image = folder / "landcover_image.tif"
    if not image.exists():
        t0 = time.perf_counter()
        make_scene("landcover", folder, width=size, height=size, seed=0)
        print(f"generated {size}² in {time.perf_counter() - t0:.0f} s", flush=True)
    scene = open_scene(str(image))
    grid = scene.grid(chunk)
    job_out = out / f"kmeans_{size}"
    shutil.rmtree(job_out, ignore_errors=True)
    job = parse_job({
        "name": f"bench-{size}", "inputs": [str(image)], "output": str(job_out), "chunk_size": chunk,
        "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 200_000, "seed": 0,
                   "features": {"indices": ["ndvi", "ndwi"]}},
        "vectorize": {"enabled": False},
    })
    with PeakMemory() as mem:
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                          memory_limit=memory_limit) as cluster, Client(cluster) as client:
            windows = list(grid.windows())
            t0 = time.perf_counter()
            client.gather(client.map(read_only_task, [scene] * len(windows), windows, pure=False))
            floor = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = run_job(job, client=client, show_progress=False)
            pipeline = time.perf_counter() - t0
    mpx = size * size / 1e6
    return {
        "size": size, "megapixels": round(mpx, 1), "chunk": grid.chunk, "chunks": grid.n_chunks, "workers": workers,
        "floor_s": round(floor, 2), "pipeline_s": round(pipeline, 2), "ratio": round(pipeline / floor, 2),
        "pipeline_mpx_per_s": round(mpx / pipeline, 2), "stages": result.stage_seconds,
        "summed_peak_mib": round(mem.summed_peak_mib), "processes": len(mem.peaks),
        "max_process_peak_mib": round(max(mem.peaks.values()) / 2**20),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000])
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1.5GiB", help="per worker")
    p.add_argument("--data", type=Path, default=Path("bench-data"))
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    args = p.parse_args()
    results = []
    for size in args.sizes:
        r = bench_size(size, args.data, args.out, args.chunk, args.workers, args.memory_limit)
        print(json.dumps(r), flush=True)
        results.append(r)
    print(json.dumps({"machine": machine(), "results": results}, indent=1))
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
