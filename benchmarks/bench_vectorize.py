"""Benchmark: geoseg's parallel, seam-exact vectorisation against GDAL's polygoniser.

Generates a fragmented, k-means-like label raster (smooth noise quantised into classes plus
salt noise) into a label store, then times

* ``geoseg_cli``: ``geoseg vectorize labels.zarr out.gpkg`` as a user runs it on one machine, one
  process polygonising tiles on one thread per core (start-up and imports counted, like GDAL's);
* ``geoseg``: :func:`geoseg.vector.vectorize.vectorize_labels` on a ``LocalCluster(n_workers=2,
  threads_per_worker=1)`` writing a GeoPackage (cluster start-up not counted);
* ``gdal_cli``: ``gdal_polygonize.py`` (one process) writing a GeoPackage from the same raster
  exported as a GeoTIFF (with :func:`geoseg.io.export.export_cog`);
* ``gdal_cli_memory`` (context): the same command writing to GDAL's in-memory driver, i.e. the
  polygoniser alone without GeoPackage writing;
* ``rasterio_single_pass`` (context): one ``rasterio.features.shapes`` pass (the GDAL inside
  rasterio) over the whole raster in one process, written with pyogrio in one transaction;

and records peak resident memory (client + workers, sampled every 50 ms, and the kernel's
high-water mark of each process, ``high_water_mark_mib``) of the vectorise stage for each
``--sizes`` (the label store is generated in a child process, so the client's
baseline is the same for every size; ``peak_increase_mib`` is what the stage added). GDAL runs
are done for the largest size only, or for ``--gdal-sizes``. ``seam_merge_share`` is the part of
geoseg's stage (wall) the client spent merging seams; ``seam_merge_cpu_s`` the CPU seconds it
took (the client's merging thread), beside ``cpu_seconds`` of the client and the workers in all
(on a shared machine wall shares measure the scheduler as much as the code). Prints JSON.

    python benchmarks/bench_vectorize.py --sizes 4000 8000 --workdir /tmp/bench-vec

Needs ``gdal_polygonize.py`` on PATH for the GDAL runs (``apt-get install gdal-bin python3-gdal``);
without it those runs are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoseg.geo import GeoGrid
from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import cluster_legend

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def fragmented_labels(n: int, *, seed: int = 0, classes: int = 6, sigma: float = 6.0, salt: float = 0.01) -> np.ndarray:
    """Smooth Gaussian noise cut at its quantiles into ``classes`` classes, plus salt noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), sigma)
    cuts = np.quantile(field[::7, ::7], np.linspace(0, 1, classes + 1)[1:-1])
    labels = np.digitize(field, cuts).astype(np.uint8)
    del field
    salted = rng.random((n, n), dtype=np.float32) < salt
    labels[salted] = rng.integers(0, classes, int(salted.sum()), dtype=np.uint8)
    return labels


def write_store(labels: np.ndarray, path: Path, chunk: int) -> Path:
    from affine import Affine
    from rasterio.crs import CRS

    grid = GeoGrid.of(labels.shape[0], labels.shape[1], Affine(10, 0, 500000, 0, -10, 6000000), CRS.from_epsg(32633)).tiles(chunk)
    writer = LabelStoreWriter.create(path, grid, cluster_legend(int(labels.max()) + 1))
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize()


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


@contextmanager
def peak_rss(pids_fn, interval: float = 0.05, names: dict[int, str] | None = None) -> Iterator[dict]:
    """Sample the RSS of the processes ``pids_fn()`` returns.

    Reports the baseline (summed RSS at the start), the peak of the summed RSS, the processes'
    RSS at that moment, each process's own peak (by ``names``: ``client``, ``worker1`` ...)
    and ``peak_increase_mib`` (peak minus baseline: what the stage itself added).
    """
    out: dict = {}
    stop = threading.Event()
    names = names or {}

    def total() -> tuple[int, dict[int, int]]:
        per = {}
        for pid in pids_fn():
            try:
                per[pid] = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return sum(per.values()), per

    base, base_per = total()
    peak = [base, dict(base_per)]
    own_peak: dict[int, int] = dict(base_per)

    hwm: dict[int, int] = {}

    def loop() -> None:
        while not stop.is_set():
            t, per = total()
            for pid, rss in per.items():
                own_peak[pid] = max(own_peak.get(pid, 0), rss)
                hwm[pid] = max(hwm.get(pid, 0), _high_water_mark(pid))
            if t > peak[0]:
                peak[0], peak[1] = t, per
            stop.wait(interval)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield out
    finally:
        stop.set()
        th.join()
        out["baseline_rss_mib"] = round(base / 2**20, 1)
        out["peak_rss_mib"] = round(peak[0] / 2**20, 1)
        out["peak_increase_mib"] = round((peak[0] - base) / 2**20, 1)
        out["peak_rss_per_process_mib"] = sorted((round(v / 2**20, 1) for v in peak[1].values()), reverse=True)
        out["own_peak_by_process_mib"] = {names.get(pid, str(pid)): round(v / 2**20, 1) for pid, v in own_peak.items()}
        out["baseline_by_process_mib"] = {names.get(pid, str(pid)): round(v / 2**20, 1) for pid, v in base_per.items()}
        # the kernel's own peak of each process (VmHWM, since its exec), as last read: a short peak
        # between two samples is in it; summed over processes it is an upper bound of the summed peak
        out["high_water_mark_mib"] = round(sum(hwm.values()) / 2**20, 1)


def _high_water_mark(pid: int) -> int:
    """``VmHWM`` of ``pid`` in bytes (0 if it is gone). Not ``ru_maxrss``: a child's counts the
    forked parent's pages it shared before its exec, i.e. the benchmark's own memory."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    import rasterio
    import shapely

    gdal_cli = None
    if shutil.which("gdalinfo"):
        gdal_cli = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "rasterio_gdal": rasterio.__gdal_version__,
        "geos": ".".join(map(str, shapely.geos_version)),
        "gdal_cli": gdal_cli,
    }


# ---------------------------------------------------------------------------------------------
# the contenders
# ---------------------------------------------------------------------------------------------


def _warm_up() -> None:
    import geoseg.vector.vectorize  # noqa: F401


def _prepare(n: int, seed: int, classes: int, sigma: float, salt: float, path: str, chunk: int) -> None:
    labels = fragmented_labels(n, seed=seed, classes=classes, sigma=sigma, salt=salt)
    write_store(labels, Path(path), chunk)


def prepare_store(n: int, args: argparse.Namespace, path: Path) -> Path:
    """Generate the label store in a child process, so the client's memory stays comparable across sizes."""
    proc = mp.get_context("spawn").Process(
        target=_prepare, args=(n, args.seed, args.classes, args.sigma, args.salt, str(path), args.chunk))
    proc.start()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"generating the {n}² label store failed (exit code {proc.exitcode})")
    return path


def _cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def run_geoseg(store: Path, out: Path, workers: int) -> dict:
    from distributed import Client

    from geoseg.run.cluster import start_local_cluster
    from geoseg.vector.vectorize import vectorize_labels

    with start_local_cluster(workers, 1, memory_limit=0, dashboard=False) as cluster, Client(cluster) as client:
        worker_pids = list(client.run(os.getpid).values())
        client.run(_warm_up)  # imports on the workers are not part of the stage
        pids = [os.getpid(), *worker_pids]
        names = {os.getpid(): "client", **{pid: f"worker{i + 1}" for i, pid in enumerate(worker_pids)}}
        cpu0 = sum(client.run(_cpu_seconds).values()), _cpu_seconds()
        load0 = os.getloadavg()[0]
        with peak_rss(lambda: pids, names=names) as mem:
            t0 = time.perf_counter()
            res = vectorize_labels(store, out, client=client)
            seconds = time.perf_counter() - t0
        cpu1 = sum(client.run(_cpu_seconds).values()), _cpu_seconds()
    return {"seconds": round(seconds, 2), "n_features": res.n_features,
            "seam_merge_share": round(res.timings.get("merge_s", 0.0) / seconds, 3),
            "seam_merge_cpu_s": round(res.timings.get("merge_cpu_s", 0.0), 2),
            "cpu_seconds": {"workers": round(cpu1[0] - cpu0[0], 1), "client": round(cpu1[1] - cpu0[1], 1)},
            "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "timings": {k: round(v, 2) for k, v in res.timings.items()}, "memory": mem}


def run_geoseg_cli(store: Path, out: Path, threads: int | None) -> dict:
    """``geoseg vectorize`` in its own process, measured like ``gdal_polygonize.py``."""
    cmd = [sys.executable, "-m", "geoseg.cli", "vectorize", str(store), str(out), "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    seconds, mem = _run_process(cmd, env)
    import pyogrio

    return {"seconds": round(seconds, 2), "memory": mem, "threads": threads or os.cpu_count(),
            "n_features": int(pyogrio.read_info(out, layer="polygons")["features"])}


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_process(cmd: list[str], env: dict | None = None) -> tuple[float, dict]:
    t0, cpu0, load0 = time.perf_counter(), _children_cpu(), os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    with peak_rss(lambda: [proc.pid]) as mem:
        rc = proc.wait()
    if rc:
        raise RuntimeError(f"{cmd[0]} failed with exit code {rc}")
    mem["cpu_seconds"] = round(_children_cpu() - cpu0, 1)
    mem["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    return time.perf_counter() - t0, mem


def run_gdal_cli(tif: Path, out: Path, driver: str = "GPKG") -> dict:
    exe = shutil.which("gdal_polygonize.py") or shutil.which("gdal_polygonize")
    if exe is None:
        return {"skipped": "gdal_polygonize not on PATH"}
    target = "mem" if driver == "Memory" else str(out)
    seconds, mem = _run_process([exe, "-q", str(tif), "-f", driver, target, "polygons", "class_id"])
    res = {"seconds": round(seconds, 2), "memory": mem, "driver": driver}
    if driver != "Memory":
        import pyogrio

        res["n_features"] = int(pyogrio.read_info(out, layer="polygons")["features"])
    return res


def _single_pass(tif: str, out: str) -> None:
    import pyarrow as pa
    import rasterio
    import shapely
    from rasterio.features import shapes

    from geoseg.vector.gpkg import write_arrow_layer
    from geoseg.vector.polygonize import polygons_from_geojson

    with rasterio.open(tif) as ds:
        labels, transform, crs = ds.read(1), ds.transform, ds.crs
    geoms, classes = polygons_from_geojson(shapes(labels, mask=labels != 255, connectivity=4, transform=transform))
    schema = pa.schema([("geom", pa.binary()), ("class_id", pa.int32())])
    batch = pa.record_batch([pa.array(shapely.to_wkb(geoms)), pa.array(classes)], schema=schema)
    write_arrow_layer(Path(out), "polygons", [batch], crs_wkt=crs.to_wkt(), schema=schema)


def run_single_pass(tif: Path, out: Path) -> dict:
    ctx = mp.get_context("spawn")
    t0, cpu0, load0 = time.perf_counter(), _children_cpu(), os.getloadavg()[0]
    proc = ctx.Process(target=_single_pass, args=(str(tif), str(out)))
    proc.start()
    with peak_rss(lambda: [proc.pid]) as mem:
        proc.join()
    mem["cpu_seconds"] = round(_children_cpu() - cpu0, 1)
    mem["loadavg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    import pyogrio

    return {"seconds": round(time.perf_counter() - t0, 2), "memory": mem,
            "n_features": int(pyogrio.read_info(out, layer="polygons")["features"])}


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 8000], help="raster sides (pixels)")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--sigma", type=float, default=6.0, help="smoothness of the noise (pixels)")
    ap.add_argument("--salt", type=float, default=0.01, help="fraction of pixels given a random class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("bench-vectorize"))
    ap.add_argument("--skip-gdal", action="store_true", help="time geoseg only")
    ap.add_argument("--skip-cluster", action="store_true", help="skip geoseg on a local cluster (run the CLI only)")
    ap.add_argument("--cli-threads", type=int, default=None, help="threads of the geoseg CLI run (default: one per core)")
    ap.add_argument("--gdal-sizes", type=int, nargs="*", default=None,
                    help="sizes to run gdal_polygonize at (default: the largest of --sizes)")
    ap.add_argument("--skip-context", action="store_true", help="skip the context baselines (memory driver, single pass)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    import geoseg.vector.vectorize  # noqa: F401 - import before the first size, so every size starts from the same client
    report: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()],
                    "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "runs": []}
    # one small unrecorded run first: the client's one-time growth (lazy imports, GDAL/pyogrio
    # writer state) would otherwise be charged to the first size only
    warm = args.workdir / "warm-up"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir(parents=True)
    if not args.skip_cluster:
        run_geoseg(prepare_store(512, args, warm / "labels.zarr"), warm / "geoseg.vector.gpkg", args.workers)
    shutil.rmtree(warm, ignore_errors=True)
    for n in sorted(args.sizes):
        folder = args.workdir / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        store = prepare_store(n, args, folder / "labels.zarr")
        run: dict = {"size": n, "prepare_seconds": round(time.perf_counter() - t0, 1)}
        run["geoseg_cli"] = run_geoseg_cli(store, folder / "geoseg.cli.gpkg", args.cli_threads)
        if not args.skip_cluster:
            run["geoseg"] = run_geoseg(store, folder / "geoseg.vector.gpkg", args.workers)
        if not args.skip_gdal and n in (args.gdal_sizes if args.gdal_sizes is not None else [max(args.sizes)]):
            from geoseg.io.export import export_cog

            t0 = time.perf_counter()
            tif = export_cog(store, folder / "labels.tif")
            run["export_cog_seconds"] = round(time.perf_counter() - t0, 2)
            run["gdal_cli"] = run_gdal_cli(tif, folder / "gdal.gpkg")
            if not args.skip_context:
                run["gdal_cli_memory"] = run_gdal_cli(tif, folder / "unused", driver="Memory")
                run["rasterio_single_pass"] = run_single_pass(tif, folder / "single.gpkg")
            if "seconds" in run["gdal_cli"]:
                gdal = run["gdal_cli"]
                for name in ("geoseg_cli", "geoseg"):
                    if name in run:
                        run[f"{name}_over_gdal_cli"] = {
                            "seconds": round(run[name]["seconds"] / gdal["seconds"], 3),
                            "summed_peak_rss": round(run[name]["memory"]["peak_rss_mib"] / gdal["memory"]["peak_rss_mib"], 2),
                            "high_water_mark": round(run[name]["memory"]["high_water_mark_mib"]
                                                     / gdal["memory"]["high_water_mark_mib"], 2),
                            "same_feature_count": run[name]["n_features"] == gdal["n_features"]}
        report["runs"].append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
