"""Where the k-means labelling pass spends its time: read, predict, zarr write, histogram.

Runs the same steps as ``geoseg.run.labelling.label_task`` with timers on every chunk of a scene,
on a 2-worker local cluster, and prints the per-worker sums. ``--worker-env dask`` starts the
workers with Dask's defaults instead of geoseg's (``geoseg.run.cluster.start_local_cluster``), to
show what the malloc setting does. The model is fitted on a sample of the first chunk.

    .venv/bin/python benchmarks/profile_label_task.py bench-data/landcover_20000/landcover_image.tif
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed_label_task(scene, grid, store: str, predictor, window) -> dict[str, float]:  # noqa: ANN001
    from geoseg.geo import halo_window
    from geoseg.io.labelstore import LabelStoreWriter
    from geoseg.io.scene import read_window

    times: dict[str, float] = {}
    t = time.perf_counter()
    hw = halo_window(window, predictor.halo, grid.shape)
    data, valid = read_window(scene, hw.outer)
    times["read"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = predictor.predict(data, valid, hw)
    times["predict"] = time.perf_counter() - t
    t = time.perf_counter()
    LabelStoreWriter(store, grid).write(window, labels)
    times["write"] = time.perf_counter() - t
    t = time.perf_counter()
    np.bincount(labels.ravel(), minlength=256)
    times["bincount"] = time.perf_counter() - t
    return times


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
            n = len(windows)
            t0 = time.perf_counter()
            parts = client.gather(client.map(timed_label_task, [scene] * n, [grid] * n, [str(store)] * n,
                                             [predictor] * n, windows, pure=False))
            wall = time.perf_counter() - t0
    per_worker = {k: round(sum(p[k] for p in parts) / args.workers, 2) for k in parts[0]}
    print({"image": str(args.image), "chunks": n, "worker_env": args.worker_env, "wall_s": round(wall, 2),
           "per_worker_s": per_worker})


if __name__ == "__main__":
    main()
