"""Reading inputs as delivered against reading the same pixels from one file, on one local cluster.

Cases (each read chunk by chunk with ``read_window`` in one Dask task per chunk, the same way the
workflow reads; the file list of each task comes from ``Scene.for_window``):

- ``one_file``: the generated 4-band scene as one GeoTIFF (the floor);
- ``tiles_16``: the scene as 4 x 4 tiles with 64 px overlaps and alpha margins (one glob, on the grid);
- ``band_files``: blue, green, red at 10 m and nir08 at 20 m (warped onto the 10 m grid, bilinear);
- ``warped_crs``: the whole scene re-gridded into the next UTM zone, warped back per chunk (bilinear);
- ``tiles_many``: the scene as many small tiles (``--many`` per side; 20 = 400 tiles), with the peak
  resident memory of each worker during the read, against ``one_file``'s.

Every case runs on a fresh 2-worker x 1-thread local cluster (so its peak memory is its own), after
one untimed probe read (imports, compiled loops); cases are run in ``--repeat`` interleaved rounds and
the fastest run of each is used, since a shared machine's load swings by 2-3x within minutes.

Default size 8000 x 8000 (64 Mpx), chosen for the 2-core development VM; ``--size 20000`` is the
400 Mpx of the issue. Prints one JSON document; inputs are cached under ``--data``.

``--tiles N`` (e.g. 10000) measures something else, side by side: a mosaic of N tiles of 16 x 16 px
given to ``geoseg run`` as one glob (k-means, no vectorising; the whole command, process start
included; ``--chunk`` is the job's ``chunk_size``) against GDAL mosaicking the same tiles
(``gdalbuildvrt`` then ``gdal_translate``), in ``--repeat`` interleaved rounds. GDAL's command-line
tools must be installed (Debian/Ubuntu: ``apt-get install -y gdal-bin``).

Usage:  .venv/bin/python benchmarks/bench_inputs.py [--size 8000] [--chunk 2048] [--many 20] [--data DIR]
        .venv/bin/python benchmarks/bench_inputs.py --tiles 10000 [--chunk 2048] [--repeat 3] [--before TREE] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def _prepare(size: int, data: Path, many: int) -> dict[str, list]:
    """The inputs of every case (generated once, cached)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform

    from geoseg.samples.products import _ROWS, _profile, make_band_files, make_tiles, neighbour_zone
    from geoseg.samples.synthetic import make_scene

    root = data / f"s{size}"
    image = root / "landcover_image.tif"
    if not image.exists():
        make_scene("landcover", root, width=size, height=size, block=512)
    if not (root / "tiles16").exists():
        make_tiles(image, root / "tiles16", n=4, overlap=64, margin=8)
    if not (root / f"tiles{many}").exists():
        make_tiles(image, root / f"tiles{many}", n=many, overlap=16, margin=4)
    if not (root / "S2" / "item.json").exists():
        make_band_files(image, root / "S2")
    warped = root / "utm" / "whole-next-zone.tif"
    if not warped.exists():
        warped.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(image) as src:
            crs = neighbour_zone(src.crs)
            t, w, h = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds, resolution=src.res)
            with WarpedVRT(src, crs=crs, transform=t, width=w, height=h, resampling=Resampling.nearest, nodata=0) as vrt:
                profile = _profile(src, w, h, src.count, t, crs=crs, nodata=0)
                with rasterio.open(warped, "w", **profile) as dst:
                    for y in range(0, h, _ROWS):
                        win = rasterio.windows.Window(0, y, w, min(_ROWS, h - y))
                        dst.write(vrt.read(window=win), window=win)
    s2 = root / "S2"
    return {
        "one_file": [str(image)],
        "tiles_16": [str(root / "tiles16" / "tile_*.tif")],
        "band_files": [str(s2 / "B02.tif"), str(s2 / "B03.tif"), str(s2 / "B04.tif"), str(s2 / "B8A.tif")],
        "warped_crs": [str(warped)],
        "tiles_many": [str(root / f"tiles{many}" / "tile_*.tif")],
        "_grid_like": [str(image)],
    }


def read_task(scene, window) -> int:
    from geoseg.io.scene import read_window

    _, valid = read_window(scene, window)
    return int(valid.sum())


class WorkerPeaks:
    """Peak RSS of each worker process while a case runs (polled every 50 ms)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.peaks = [0] * len(pids)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                try:
                    self.peaks[i] = max(self.peaks[i], p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self) -> WorkerPeaks:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def run(size: int, chunk: int, many: int, data: Path, repeat: int = 3) -> dict:
    from distributed import Client

    from geoseg.geo import Window
    from geoseg.io.scene import open_scene
    from geoseg.run.cluster import start_local_cluster

    inputs = _prepare(size, data, many)
    like = {"like": inputs.pop("_grid_like")[0]}
    scenes = {name: open_scene(paths, grid=like) for name, paths in inputs.items()}
    results: dict[str, dict] = {}
    order = ["one_file", "tiles_16", "band_files", "warped_crs", "tiles_many"] * repeat
    for name in order:
        scene = scenes[name]
        grid = scene.chunk_grid(chunk)
        windows = list(grid.windows())
        parts = [scene.for_window(w) for w in windows]
        # a fresh cluster of the same shape per case: each case's peak memory is its own
        cluster = start_local_cluster(n_workers=2, threads_per_worker=1, memory_limit="4GiB", dashboard=False)
        client = Client(cluster)
        try:
            pids = list(client.run(os.getpid).values())
            probe = Window(0, 0, min(64, grid.height), min(64, grid.width))
            client.run(read_task, scene.for_window(probe), probe)  # imports and compiled loops, not timed
            with WorkerPeaks(pids) as peaks:
                t0 = time.perf_counter()
                valid = sum(client.gather(client.map(read_task, parts, windows, pure=False)))
                seconds = time.perf_counter() - t0
        finally:
            client.close()
            cluster.close()
        r = results.setdefault(name, {"runs_s": [], "valid_px": valid, "files": len(scene.paths),
                                      "worker_peak_mib": 0,
                                      "payload_files_max": max(sum(len(lyr.sources) for lyr in p.layers)
                                                               for p in parts)})
        r["runs_s"].append(round(seconds, 3))
        r["seconds"] = min(r["runs_s"])  # the least disturbed run (shared machine)
        r["mpx_per_s"] = round(grid.height * grid.width / r["seconds"] / 1e6, 1)
        r["worker_peak_mib"] = max(r["worker_peak_mib"], *(round(p / 2**20) for p in peaks.peaks))
        print(name, round(seconds, 3), flush=True)
    floor = results["one_file"]["seconds"]
    for name in ("tiles_16", "band_files", "warped_crs", "tiles_many"):
        results[name]["ratio_to_one_file"] = round(results[name]["seconds"] / floor, 2)
    results["tiles_many"]["peak_mib_vs_one_file"] = [results["tiles_many"]["worker_peak_mib"],
                                                     results["one_file"]["worker_peak_mib"]]
    return results


def _tiles_case(n_tiles: int, data: Path) -> tuple[Path, Path]:
    """``n_tiles`` tiles of 16 x 16 px (a square number of them) cut from one generated scene, cached."""
    from geoseg.samples.products import make_tiles
    from geoseg.samples.synthetic import make_scene

    side = int(round(n_tiles ** 0.5))
    if side * side != n_tiles:
        raise SystemExit(f"--tiles wants a square number of tiles, got {n_tiles}")
    root = data / f"tiles{n_tiles}"
    tiles = root / "tiles"
    if len(list(tiles.glob("tile_*.tif"))) != n_tiles:
        files = make_scene("landcover", root / "scene", width=16 * side, height=16 * side, seed=0)
        make_tiles(files.image, tiles, n=side, overlap=0, margin=0)
    return root, tiles


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    import subprocess

    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_tiles(n_tiles: int, data: Path, repeat: int, chunk: int = 2048, before: Path | None = None) -> dict:
    """geoseg's run on a glob of small tiles against GDAL's buildvrt + translate of them, interleaved.

    The order alternates between rounds (GDAL first, then geoseg first), so neither always meets the
    machine's load first; ``before``: another geoseg source tree (e.g. a checkout of main) run in the same
    rounds, for before/after ratios measured side by side.
    """
    import glob
    import shutil
    import sys

    import yaml

    missing = [t for t in ("gdalbuildvrt", "gdal_translate") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: install GDAL's command-line tools "
                         "(Debian/Ubuntu: apt-get install -y gdal-bin) and rerun")
    root, tiles = _tiles_case(n_tiles, data)
    files = sorted(glob.glob(str(tiles / "tile_*.tif")))
    job = root / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "tiles", "inputs": [str(tiles / "tile_*.tif")], "output": str(root / "out"), "chunk_size": chunk,
        "vectorize": {"enabled": False},
        "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "2GiB", "dashboard": False}}))
    trees = {"geoseg": Path(__file__).resolve().parents[1]}
    if before is not None:
        trees["before"] = before.resolve()
    out: dict[str, list] = {"geoseg_run_s": [], "gdalbuildvrt_s": [], "gdal_translate_s": [], "gdal_total_s": [],
                            "ratio": [], "load_avg": [], "order": []}
    if before is not None:
        out.update(before_run_s=[], before_ratio=[])

    def gdal() -> None:
        for leftover in (root / "mosaic.vrt", root / "mosaic.tif"):
            leftover.unlink(missing_ok=True)
        vrt = _timed(["gdalbuildvrt", "-q", str(root / "mosaic.vrt"), *files])
        tif = _timed(["gdal_translate", "-q", str(root / "mosaic.vrt"), str(root / "mosaic.tif")])
        out["gdalbuildvrt_s"].append(round(vrt, 1))
        out["gdal_translate_s"].append(round(tif, 1))
        out["gdal_total_s"].append(round(vrt + tif, 1))

    def geoseg(name: str) -> None:
        shutil.rmtree(root / "out", ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(trees[name])}
        seconds = _timed([sys.executable, "-m", "geoseg.cli", "-q", "run", str(job)], env=env)
        out["geoseg_run_s" if name == "geoseg" else "before_run_s"].append(round(seconds, 1))
        stages = json.loads((root / "out" / "run.json").read_text())["stage_seconds"]
        out.setdefault(f"{name}_stages_s", []).append({k: round(v, 1) for k, v in stages.items()})

    steps = {"gdal": gdal, **{name: (lambda n=name: geoseg(n)) for name in trees}}
    for i in range(repeat):
        order = list(steps) if i % 2 == 0 else list(steps)[::-1]
        out["order"].append(order)
        out["load_avg"].append(os.getloadavg()[0])
        for name in order:
            steps[name]()
        out["ratio"].append(round(out["geoseg_run_s"][-1] / out["gdal_total_s"][-1], 2))
        if before is not None:
            out["before_ratio"].append(round(out["before_run_s"][-1] / out["gdal_total_s"][-1], 2))
        print(json.dumps({k: v[-1] for k, v in out.items()}), flush=True)
    return {"tiles": n_tiles, "tile_px": 16, "scene_px": [16 * int(n_tiles ** 0.5)] * 2, "chunk_size": chunk, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--many", type=int, default=20, help="tiles per side of the many-tiles case")
    ap.add_argument("--data", type=Path, default=Path("bench-inputs-data"))
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all cases; the fastest run of each counts")
    ap.add_argument("--tiles", type=int, default=0,
                    help="instead: N tiles of 16 x 16 px, geoseg run against gdalbuildvrt + gdal_translate")
    ap.add_argument("--before", type=Path, default=None,
                    help="with --tiles: another geoseg source tree run in the same rounds (before/after)")
    args = ap.parse_args()
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "load_avg": os.getloadavg()}
    if args.tiles:
        res = run_tiles(args.tiles, args.data, args.repeat, args.chunk, args.before)
        print(json.dumps({"machine": machine, "results": res}, indent=1))
        return
    res = run(args.size, args.chunk, args.many, args.data, args.repeat)
    doc = {"machine": machine, "size": args.size, "chunk": args.chunk, "results": res}
    print(json.dumps(doc, indent=1))
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
