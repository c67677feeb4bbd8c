"""Watershed instances: geoseg (chunked, chunking-independent) against the peers a user would otherwise run.

Peers, on the same generated crown scene (``geoseg.samples.crowns``):

* a plain scikit-image script on the whole raster in one process (distance transform,
  ``peak_local_max`` with the same ``min_distance``, ``watershed``): what a notebook user writes;
* Orfeo ToolBox's ``otbcli_Segmentation -filter watershed`` on the image (Debian ``otb-bin``; its
  watershed floods the image's gradient, a different algorithm, timed for speed only), when installed.

Prints wall time, peak memory (RSS of the process tree) and, against the scene's true crowns, the
instances found at IoU > 0.5 (recall, precision, PQ). Usage::

    python benchmarks/bench_instances.py --size 4096 [--chunk 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio


def _peak_rss(fn):
    """Run ``fn()`` and return (result, seconds, peak RSS of this process and its children in MiB)."""
    proc = psutil.Process()
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            rss = proc.memory_info().rss
            for child in proc.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], rss)
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    done.set()
    t.join()
    return out, dt, peak[0] / 2**20


def _plain_skimage(labels_tif: Path, min_distance: int) -> np.ndarray:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    with rasterio.open(labels_tif) as src:
        mask = src.read(1) == 2
    dist = ndimage.distance_transform_edt(mask)
    regions, _ = ndimage.label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=regions, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask, connectivity=1)


def _score(pred: np.ndarray, truth: np.ndarray) -> str:
    from geoseg.accuracy.instancemetrics import overlaps_of_rasters, score_instances

    _, inv = np.unique(truth, return_inverse=True)
    truth = inv.reshape(truth.shape)
    _, inv = np.unique(pred, return_inverse=True)
    pred = inv.reshape(pred.shape)
    s = score_instances(overlaps_of_rasters(pred, truth, np.full(pred.max(), 2), np.full(truth.max(), 2)))[0]
    return f"recall {s.recall:.3f} precision {s.precision:.3f} PQ {s.pq:.3f} ({s.n_pred} found, {s.n_ref} true)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--min-distance", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="local Dask workers for the cluster run (0: skip it)")
    args = ap.parse_args()

    from geoseg.methods.watershed import WatershedParams
    from geoseg.run.instances import segment_instances
    from geoseg.samples.crowns import make_crowns

    work = Path(tempfile.mkdtemp(prefix="bench-instances-"))
    try:
        files = make_crowns(work, args.size, args.size, seed=0)
        truth = rasterio.open(files.instances).read(1)
        print(f"# {args.size}² crown scene, chunk {args.chunk}, {platform.node()} {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")
        params = WatershedParams(min_distance=args.min_distance)
        (store, _), dt, mib = _peak_rss(lambda: segment_instances(files.reference, [2], work / "g1", params,
                                                                   chunk_size=args.chunk))
        import zarr

        ours = zarr.open_group(str(store), mode="r")["instances"][:]
        print(f"geoseg, one process   {dt:7.2f} s {mib:7.0f} MiB  {_score(ours, truth)}")
        if args.workers:
            from distributed import Client, LocalCluster

            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                client.run(lambda: __import__("geoseg.run.instances"))
                _, dt, mib = _peak_rss(lambda: segment_instances(files.reference, [2], work / "g2", params,
                                                                 chunk_size=args.chunk, client=client))
            print(f"geoseg, {args.workers} workers     {dt:7.2f} s {mib:7.0f} MiB  (same instances)")
        plain, dt, mib = _peak_rss(lambda: _plain_skimage(files.reference, args.min_distance))
        print(f"scikit-image script   {dt:7.2f} s {mib:7.0f} MiB  {_score(plain, truth)}")
        otb = shutil.which("otbcli_Segmentation")
        if otb:
            out = work / "otb.tif"
            cmd = [otb, "-in", str(files.image), "-filter", "watershed", "-mode", "raster",
                   "-mode.raster.out", str(out), "uint32"]
            _, dt, mib = _peak_rss(lambda: subprocess.run(cmd, check=True, capture_output=True))
            seg = rasterio.open(out).read(1)
            print(f"OTB watershed (image) {dt:7.2f} s {mib:7.0f} MiB  {_score(seg, truth)}")
        else:
            print("OTB: otbcli_Segmentation not found (apt-get install otb-bin)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
