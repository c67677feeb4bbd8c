"""Where the k-means labelling pass spends its time: read, predict, zarr write, histogram.

Runs the same steps as ``geoseg.run.labelling.label_task`` with timers on every chunk of a scene,
on a 2-worker local cluster, and prints the per-worker sums of wall time (``per_worker_s``) and of
the task thread's CPU time (``per_worker_cpu_s``: steadier on a shared machine). ``--worker-env
dask`` starts the workers with Dask's defaults instead of geoseg's
(``geoseg.run.cluster.start_local_cluster``), to show what the malloc setting does. ``--path numpy``
labels with the numpy path (features, then ``KMeansModel.predict`` on blocks of rows, then
``np.bincount``) instead of the compiled pass, to compare the two under the same load. The model
is fitted on a sample of the first chunk. Before the timed pass each worker labels a tiny array
once (``first_call_s``: the import of numba and the loading of the compiled loop from its cache).

    .venv/bin/python benchmarks/profile_label_task.py bench-data/landcover_20000/landcover_image.tif
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def timed_label_task(scene, grid, store: str, predictor, window, path: str = "fused") -> dict[str, float]:
    from geoseg._kernels.labelcount import label_counts
    from geoseg.geo import halo_window
    from geoseg.io.labelstore import LabelStoreWriter
    from geoseg.io.scene import read_window

    times: dict[str, float] = {}
    clock = {"wall": time.perf_counter, "cpu": time.thread_time}

    def mark(name: str, start: dict[str, float]) -> dict[str, float]:
        now = {k: f() for k, f in clock.items()}
        times[name] = now["wall"] - start["wall"]
        times[name + "_cpu"] = now["cpu"] - start["cpu"]
        return now

    t = {k: f() for k, f in clock.items()}
    hw = halo_window(window, predictor.halo, grid.shape)
    data, valid = read_window(scene, hw.outer)
    t = mark("read", t)
    if path == "numpy":
        labels = np.empty(valid.shape, dtype=np.uint8)
        rows = max(1, 16_384 // valid.shape[1])
        for r0 in range(0, valid.shape[0], rows):
            sl = slice(r0, r0 + rows)
            labels[sl] = predictor.model.predict(predictor.features.compute(data[:, sl]), valid[sl])
    else:
        labels = predictor.predict(data, valid, hw)
    t = mark("predict", t)
    LabelStoreWriter(store, grid).write(window, labels)
    t = mark("write", t)
    if path == "numpy":
        np.bincount(labels.ravel(), minlength=256)
    else:
        label_counts(labels)
    mark("histogram", t)
    return times


def _first_call(predictor, path: str, n_bands: int) -> float:
    """Load what the labelling needs once per worker (imports, the compiled loop), timed."""
    t = time.perf_counter()
    data = np.ones((n_bands, 8, 8), np.float32)
    valid = np.ones((8, 8), bool)
    if path == "fused":
        from geoseg._kernels.labelcount import label_counts

        label_counts(predictor.model.predict_bands(data, valid, predictor.features))
    return time.perf_counter() - t


def main() -> None:
    from distributed import Client, LocalCluster

    from geoseg.io.labelstore import LabelStoreWriter
    from geoseg.io.scene import open_scene, read_window
    from geoseg.legend import cluster_legend
    from geoseg.methods.features import FeatureSpec
    from geoseg.methods.kmeans import fit_kmeans
    from geoseg.methods.predictors import KMeansPredictor
    from geoseg.run.cluster import start_local_cluster

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image", type=Path)
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-env", choices=["geoseg", "dask"], default="geoseg")
    p.add_argument("--path", choices=["fused", "numpy"], default="fused")
    args = p.parse_args()

    scene = open_scene(str(args.image))
    grid = scene.chunk_grid(args.chunk)
    feats = FeatureSpec(indices=("ndvi", "ndwi")).resolve(scene.band_names)
    windows = list(grid.windows())
    data, valid = read_window(scene, windows[0])
    sample = feats.compute(data)[:, valid].T[::50]
    predictor = KMeansPredictor(fit_kmeans(sample, 6, 0, feats.names), feats)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "labels.zarr"
        LabelStoreWriter.create(store, grid, cluster_legend(6), attrs={}, resume_key="profile")
        if args.worker_env == "geoseg":
            cluster = start_local_cluster(args.workers, 1, memory_limit=0, dashboard=False)
        else:
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address=None, memory_limit=0)
        with cluster, Client(cluster) as client:
            first = client.run(_first_call, predictor, args.path, scene.count)
            n = len(windows)
            t0 = time.perf_counter()
            parts = client.gather(client.map(timed_label_task, [scene] * n, [grid] * n, [str(store)] * n,
                                             [predictor] * n, windows, [args.path] * n, pure=False))
            wall = time.perf_counter() - t0
    per_worker = {k: round(sum(p[k] for p in parts) / args.workers, 2) for k in parts[0] if not k.endswith("_cpu")}
    per_worker_cpu = {k[:-4]: round(sum(p[k] for p in parts) / args.workers, 2) for k in parts[0] if k.endswith("_cpu")}
    print({"image": str(args.image), "chunks": n, "worker_env": args.worker_env, "path": args.path,
           "wall_s": round(wall, 2), "per_worker_s": per_worker, "per_worker_cpu_s": per_worker_cpu,
           "first_call_s": [round(v, 2) for v in first.values()], "loadavg": os.getloadavg()})


if __name__ == "__main__":
    main()
