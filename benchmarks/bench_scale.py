"""Scale benchmark: the k-means workflow on 2k², 8k² and 20k² scenes, against the read floor.

For each size it generates the landcover sample scene (cached under --data, in a child process so
the generator's memory is not counted), then runs the measurement in a fresh Python process (so one
size's memory cannot leak into the next) on one local cluster (2 workers × 1 thread unless told
otherwise) and measures:

- ``floor_s``: reading and decoding every chunk of the input on the cluster, nothing else; measured
  before and after the pipeline (``floor_before_s``, ``floor_after_s``) because shared machines are
  noisy, and the smaller one is used for the ratio (the conservative choice);
- ``pipeline_s``: the k-means job (sample, fit, predict, write labels.zarr), vectorise off, the first
  on these workers: it loads what the floor does not use (numba's CPU target and geoseg's compiled
  fit and label loops, zarr), as a one-off ``geoseg run`` does;
- ``pipeline_again_s`` (``ratio_again``): the same job once more on the same workers, into a new
  folder, after ``floor_after``: what every later run on a long-lived cluster costs (``geoseg monitor``'s
  periods, a notebook's ``run_job(client=...)``);
- Mpx/s of the pipeline, and the ratio pipeline / floor (the target is ≤ 1.5);
- ``cpu_s``/``cpu_ratio``: CPU seconds of the workers and of this process in each phase, and the ratio
  of pipeline to floor CPU seconds: on a shared, loaded machine wall times swing by 2× from run to run
  while CPU seconds move much less, so the CPU ratio is the steadier measure of the work added;
  ``cpu_s[phase]["others"]`` is what every other process on the machine used meanwhile (``/proc/stat``
  busy time less ours): how loaded the machine was during that very phase;
- memory, sampled every 100 ms for this process and all its descendants:
  ``summed_peak_mib`` is the sum over processes of each one's peak RSS during the run (an upper
  bound: the peaks need not coincide), ``simultaneous_peak_mib`` the largest total seen in one
  sample; both also per phase (floor / pipeline) and per process kind (``client``: this process,
  which also holds the scheduler and the nannies of a LocalCluster; ``worker``; ``other``: e.g.
  multiprocessing's resource tracker).

With ``--whole`` it instead times, per size and interleaved ``--repeat`` times, the whole
``geoseg run`` command (a fresh process: imports, cluster start, sample, fit, predict, write,
cluster stop) against ``benchmarks/plain_kmeans.py``, the one-process rasterio + scikit-learn
script a user would write, on the same scene and cores; ``whole_ratio`` = geoseg / plain.

Usage:  .venv/bin/python benchmarks/bench_scale.py --sizes 2000 8000 20000 [--chunk 2048]
            [--data DIR] [--out DIR] [--whole [--repeat 3]]
Prints one JSON line per size and a final JSON document (machine, load average, results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

MARK = "BENCH_SCALE_RESULT "


class PeakMemory:
    """Polls the RSS of this process and all its descendants; keeps each process's peak per phase."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.phase = "setup"
        self.peaks: dict[str, dict[int, int]] = {}
        self.simultaneous: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        try:
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            procs = [me]
        phase = self.phase
        peaks = self.peaks.setdefault(phase, {})
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            peaks[p.pid] = max(peaks.get(p.pid, 0), rss)
        self.simultaneous[phase] = max(self.simultaneous.get(phase, 0), total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def set_phase(self, name: str) -> None:
        self._sample()  # close the previous phase with a fresh sample
        self.phase = name
        self._sample()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, phases: list[str], kinds: dict[int, str]) -> dict:
        """Per-process peaks over ``phases``: summed, simultaneous, and by process kind (MiB)."""
        per_pid: dict[int, int] = {}
        for ph in phases:
            for pid, rss in self.peaks.get(ph, {}).items():
                per_pid[pid] = max(per_pid.get(pid, 0), rss)
        by_kind: dict[str, list[int]] = {}
        for pid, rss in per_pid.items():
            by_kind.setdefault(kinds.get(pid, "other"), []).append(round(rss / 2**20))
        return {
            "summed_peak_mib": round(sum(per_pid.values()) / 2**20),
            "simultaneous_peak_mib": round(max(self.simultaneous.get(ph, 0) for ph in phases) / 2**20),
            "peak_by_kind_mib": {k: sorted(v, reverse=True) for k, v in sorted(by_kind.items())},
        }


def _cpu_seconds() -> float:
    t = psutil.Process().cpu_times()  # all threads of the process (zarr/codec threads included)
    return t.user + t.system


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, ``/proc/stat``)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def _malloc_settings() -> dict[str, str]:
    """glibc malloc variables this worker process was started with (what glibc actually read)."""
    raw = Path("/proc/self/environ").read_bytes()
    return {k: v for k, v in (i.decode().split("=", 1) for i in raw.split(b"\0") if b"=" in i) if k.startswith("MALLOC")}


def _warm_up() -> None:
    import geoseg.run.workflow  # noqa: F401 - imports io, labelstore, zarr, rasterio


def read_only_task(scene, window) -> int:
    from geoseg.io.scene import read_window

    data, valid = read_window(scene, window)
    return int(valid.sum())


def machine() -> dict:
    import dask
    import distributed
    import numpy as np
    import rasterio
    import zarr

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": psutil.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": np.__version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__,
            "zarr": zarr.__version__}


def scene_folder(data: Path, size: int) -> Path:
    return data / f"landcover_{size}"


def ensure_scene(size: int, data: Path) -> Path:
    """Generate the scene in a child process (its memory must not count) unless it is cached."""
    folder = scene_folder(data, size)
    image = folder / "landcover_image.tif"
    if not image.exists():
        t0 = time.perf_counter()
        code = ("import sys; from geoseg.samples.synthetic import make_scene; "
                "make_scene('landcover', sys.argv[1], width=int(sys.argv[2]), height=int(sys.argv[2]), seed=0)")
        subprocess.run([sys.executable, "-c", code, str(folder), str(size)], check=True)
        print(f"generated {size}² in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return image


def bench_size(size: int, data: Path, out: Path, chunk: int, workers: int, memory_limit: str,
               worker_env: str = "geoseg") -> dict:
    """One size, measured in this (fresh) process."""
    from distributed import Client, LocalCluster

    from geoseg.io.scene import open_scene
    from geoseg.run.cluster import start_local_cluster
    from geoseg.run.jobspec import parse_job
    from geoseg.run.workflow import run_job

    image = scene_folder(data, size) / "landcover_image.tif"
    scene = open_scene(str(image))
    grid = scene.chunk_grid(chunk)
    job_out, again_out = out / f"kmeans_{size}", out / f"kmeans_{size}_again"

    def kmeans_job(folder: Path):
        shutil.rmtree(folder, ignore_errors=True)
        return parse_job({
            "name": f"bench-{size}", "inputs": [str(image)], "output": str(folder), "chunk_size": chunk,
            "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 200_000, "seed": 0,
                       "features": {"indices": ["ndvi", "ndwi"]}},
            "vectorize": {"enabled": False},
        })

    job, job_again = kmeans_job(job_out), kmeans_job(again_out)
    windows = list(grid.windows())

    def cpu(client) -> tuple[float, float]:
        """CPU seconds so far: all workers together, and this process (client, scheduler, fit)."""
        return sum(client.run(_cpu_seconds).values()), _cpu_seconds()

    cpu_used: dict[str, dict[str, float]] = {}

    def phase(client, name: str, fn):
        """Wall time of ``fn()``, plus the CPU seconds the workers and this process spent in it."""
        c0, m0 = cpu(client), _machine_busy_seconds()
        t0 = time.perf_counter()
        value = fn()
        wall = time.perf_counter() - t0
        c1, m1 = cpu(client), _machine_busy_seconds()
        ours = (c1[0] - c0[0]) + (c1[1] - c0[1])
        cpu_used[name] = {"workers": round(c1[0] - c0[0], 2), "client": round(c1[1] - c0[1], 2),
                          "others": round(max(0.0, (m1 - m0) - ours), 2)}
        return wall, value

    def floor_run(client) -> float:
        client.gather(client.map(read_only_task, [scene] * len(windows), windows, pure=False))

    load0 = os.getloadavg()
    with PeakMemory() as mem:
        if worker_env == "geoseg":  # what geoseg.run.cluster.connect starts: workers spawned with WORKER_ENV
            cluster = start_local_cluster(workers, 1, memory_limit, dashboard=False)
        else:  # Dask's defaults, as on a cluster started without geoseg's recipes
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                   memory_limit=memory_limit)
        with cluster, Client(cluster) as client:
            kinds = {pid: "worker" for pid in client.run(os.getpid).values()}
            env_seen = next(iter(client.run(_malloc_settings).values()))
            kinds[os.getpid()] = "client"
            client.run(_warm_up)  # imports and the first GDAL open are not part of either measurement
            mem.set_phase("floor_before")
            floor_before, _ = phase(client, "floor_before", lambda: floor_run(client))
            mem.set_phase("pipeline")
            pipeline, result = phase(client, "pipeline", lambda: run_job(job, client=client, show_progress=False))
            mem.set_phase("floor_after")
            floor_after, _ = phase(client, "floor_after", lambda: floor_run(client))
            mem.set_phase("pipeline_again")
            again, result_again = phase(client, "pipeline_again",
                                        lambda: run_job(job_again, client=client, show_progress=False))
            mem.set_phase("teardown")
    load1 = os.getloadavg()
    floor = min(floor_before, floor_after)
    mpx = size * size / 1e6
    run = json.loads((job_out / "run.json").read_text())
    return {
        "size": size, "megapixels": round(mpx, 1), "chunk": grid.chunk, "chunks": grid.n_chunks, "workers": workers,
        "memory_limit_per_worker": memory_limit, "worker_env": worker_env, "worker_malloc_settings": env_seen,
        "floor_before_s": round(floor_before, 2), "floor_after_s": round(floor_after, 2), "floor_s": round(floor, 2),
        "pipeline_s": round(pipeline, 2), "ratio": round(pipeline / floor, 2),
        "pipeline_again_s": round(again, 2), "ratio_again": round(again / floor, 2),
        "stages_again": result_again.stage_seconds,
        "pipeline_mpx_per_s": round(mpx / pipeline, 2), "floor_mpx_per_s": round(mpx / floor, 2),
        "stages": result.stage_seconds, "cpu_s": cpu_used,
        "cpu_ratio": round(_ours(cpu_used["pipeline"])
                           / min(_ours(cpu_used["floor_before"]), _ours(cpu_used["floor_after"])), 2),
        "cpu_ratio_again": round(_ours(cpu_used["pipeline_again"])
                                 / min(_ours(cpu_used["floor_before"]), _ours(cpu_used["floor_after"])), 2),
        "again_same_label_counts": result_again.label_counts == result.label_counts,
        "input_bytes": sum(scene.sizes_bytes),
        "n_bands": scene.count, "block": list(scene.block), "run_outcome": run.get("outcome", run.get("status")),
        "memory_whole_run": mem.report(["floor_before", "pipeline", "floor_after", "pipeline_again"], kinds),
        "memory_pipeline": mem.report(["pipeline"], kinds),
        "memory_floor": mem.report(["floor_before", "floor_after"], kinds),
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
    }


def _ours(cpu: dict[str, float]) -> float:
    return cpu["workers"] + cpu["client"]


def bench_whole(size: int, data: Path, out: Path, chunk: int, workers: int, memory_limit: str, repeat: int) -> dict:
    """Wall time of ``geoseg run`` (whole command) and of the plain script, interleaved."""
    import yaml

    image = scene_folder(data, size) / "landcover_image.tif"
    job_out = out / f"whole_{size}"
    job_file = out / f"whole_{size}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    job_file.write_text(yaml.safe_dump({
        "name": f"whole-{size}", "inputs": [str(image)], "output": str(job_out), "chunk_size": chunk,
        "method": {"kind": "kmeans", "n_clusters": 6, "sample_size": 200_000, "seed": 0,
                   "features": {"indices": ["ndvi", "ndwi"]}},
        "vectorize": {"enabled": False},
        "cluster": {"n_workers": workers, "threads_per_worker": 1, "memory_limit": memory_limit, "dashboard": False},
    }))
    plain = Path(__file__).with_name("plain_kmeans.py")
    import geoseg

    geoseg_root = Path(geoseg.__file__).resolve().parents[1]
    times: dict[str, list[float]] = {"geoseg": [], "plain": []}
    stages, plain_phases, loads = [], [], []
    for _ in range(repeat):
        loads.append(round(os.getloadavg()[0], 2))
        shutil.rmtree(job_out, ignore_errors=True)
        t0 = time.perf_counter()
        # from the folder that holds the geoseg this benchmark imported: ``-m`` puts the working
        # directory first on sys.path, so another checkout's geoseg would run otherwise
        subprocess.run([sys.executable, "-m", "geoseg.cli", "run", "-q", str(job_file)], check=True, cwd=geoseg_root)
        times["geoseg"].append(round(time.perf_counter() - t0, 2))
        stages.append(json.loads((job_out / "run.json").read_text())["stage_seconds"])
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(plain), str(image), str(out / f"plain_{size}.tif")],
                              check=True, stdout=subprocess.PIPE, text=True)
        times["plain"].append(round(time.perf_counter() - t0, 2))
        plain_phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ratios = [round(g / p, 2) for g, p in zip(times["geoseg"], times["plain"])]
    return {"size": size, "megapixels": round(size * size / 1e6, 1), "workers": workers, "chunk": chunk,
            "geoseg_run_s": times["geoseg"], "plain_s": times["plain"], "whole_ratio": ratios,
            "whole_ratio_of_medians": round(float(np.median(times["geoseg"]) / np.median(times["plain"])), 2),
            "geoseg_stages": stages, "plain_phases": plain_phases, "loadavg_1min_before_each": loads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000])
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1.5GiB", help="per worker")
    p.add_argument("--data", type=Path, default=Path("bench-data"))
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--worker-env", choices=["geoseg", "dask"], default="geoseg",
                   help="'geoseg': the environment geoseg's local cluster and images start workers with (what users "
                        "get); 'dask': Dask's defaults only (a cluster started without geoseg's recipes)")
    p.add_argument("--whole", action="store_true", help="time the whole `geoseg run` against plain_kmeans.py")
    p.add_argument("--repeat", type=int, default=3, help="with --whole: interleaved repetitions")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure one size here
    args = p.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if args.one:
        r = bench_size(args.sizes[0], args.data, args.out, args.chunk, args.workers, args.memory_limit, args.worker_env)
        print(MARK + json.dumps(r), flush=True)
        return
    for size in args.sizes:  # generate everything first: generation is not measured
        ensure_scene(size, args.data)
    load0 = os.getloadavg()
    results = []
    if args.whole:
        for size in args.sizes:
            r = bench_whole(size, args.data, args.out, args.chunk, args.workers, args.memory_limit, args.repeat)
            print(json.dumps(r), flush=True)
            results.append(r)
        print(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                          "loadavg_start": [round(x, 2) for x in load0],
                          "loadavg_end": [round(x, 2) for x in os.getloadavg()], "results": results}, indent=1))
        return
    for size in args.sizes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--sizes", str(size), "--chunk", str(args.chunk),
               "--workers", str(args.workers), "--memory-limit", args.memory_limit, "--worker-env", args.worker_env,
               "--data", str(args.data), "--out", str(args.out)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(MARK))
        r = json.loads(line[len(MARK):])
        print(json.dumps(r), flush=True)
        results.append(r)
    print(json.dumps({"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                      "loadavg_start": [round(x, 2) for x in load0],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()], "results": results}, indent=1))


if __name__ == "__main__":
    main()
