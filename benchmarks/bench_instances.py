"""Watershed instances: geoseg (chunked, chunking-independent) against the peers a user would otherwise run.

Peers, on the same generated crown scene (``geoseg.samples.crowns``):

* a plain scikit-image script on the whole raster in one process (distance transform,
  ``peak_local_max`` with the same ``min_distance``, ``watershed``): what a notebook user writes;
* Orfeo ToolBox's ``otbcli_Segmentation -filter watershed`` on the image (Debian ``otb-bin``; its
  watershed floods the image's gradient, a different algorithm, timed for speed only), when installed.

Prints wall time, peak memory (RSS of the process tree) and, against the scene's true crowns, the
instances found at IoU > 0.5 (recall, precision, PQ). Usage::

    python benchmarks/bench_instances.py --size 4096 [--chunk 1024] [--workers 2]

With ``--maskrcnn CHECKPOINT`` it measures instead the per-chunk cost of Mask R-CNN instances (the model on
every global tile the chunk holds, then the seam merge of its core) against the semantic DeepLab model alone
(``predict_chunk`` of a ResNet-18 DeepLabV3+, random weights: the cost does not depend on them) on the same
chunk, with tiles of the side the Mask R-CNN sees; both on in-memory arrays (no reads), one torch thread::

    python benchmarks/bench_instances.py --maskrcnn crowns-model --chunk 1024 --repeat 3

``--maskrcnn train`` first trains one on a 768² crown scene (``--train-steps``, batch 4, tiny FPN, tiles of
96 + 2 x 16 px; ``--device``), reports its recall on a separate 512² scene, then measures the costs.
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


def _train(work: Path, steps: int, device: str) -> str:
    """Train a tiny-FPN Mask R-CNN on crowns; print its training time and its accuracy on another scene."""
    from geoseg.methods.maskrcnn import check_maskrcnn, maskrcnn_tile_model
    from geoseg.methods.training.instances import InstanceTrainJob, train_maskrcnn
    from geoseg.run.modelinstances import run_model_instances
    from geoseg.samples.crowns import make_crowns

    train = make_crowns(work / "train", 768, 768, seed=11)
    test = make_crowns(work / "test", 512, 512, seed=5)
    epochs = max(1, steps // 50)
    job = InstanceTrainJob(pairs=[dict(image=train.image, vector=train.crowns, class_value=2)],
                           classes=[dict(id=2, name="tree", color="#1f7a1f")], tile_size=96, tile_overlap=16,
                           batch_size=4, epochs=epochs, steps_per_epoch=max(1, steps // epochs), lr=3e-3,
                           checkpoint=work / "maskrcnn", device=device, threads=1 if device == "cpu" else None)
    t0 = time.perf_counter()
    meta = train_maskrcnn(job)
    print(f"# trained {epochs * job.steps_per_epoch} steps of 4 windows in {time.perf_counter() - t0:.0f} s on {device}: "
          f"loss {meta.training['history'][-1]['train_loss']:.3f}")
    model = maskrcnn_tile_model(work / "maskrcnn", check_maskrcnn(work / "maskrcnn", meta.band_names, 0.1),
                                device=device)
    res = run_model_instances(test.image, model, work / "test-out", chunk_size=256, reference=test.crowns,
                              reference_value=2)
    s = res.scores[0]
    print(f"# on a separate 512² scene: {s.n_pred} found, {s.n_ref} true, recall {s.recall:.3f} precision "
          f"{s.precision:.3f} AP50 {s.ap50:.3f} AP {s.ap:.3f} PQ {s.pq:.3f}")
    return str(work / "maskrcnn")


def _chunk_costs(checkpoint: str, chunk: int, repeat: int, device: str = "cpu") -> None:
    """Per-chunk seconds of Mask R-CNN instances (model + merge) and of DeepLab alone, same chunk and tile side."""
    import torch

    from geoseg.geo import Window
    from geoseg.methods.checkpoint import CheckpointMeta, build_model_from_meta
    from geoseg.methods.deeplab import predict_chunk
    from geoseg.methods.maskrcnn import maskrcnn_tile_model, read_maskrcnn_meta, worker_maskrcnn
    from geoseg.methods.tilemerge import Proposals, TileLayout, first_pixels, merge_window, propose_tiles
    from geoseg.samples.crowns import crown_block

    if device == "cpu":
        torch.set_num_threads(1)
    meta = read_maskrcnn_meta(checkpoint)
    model = maskrcnn_tile_model(checkpoint, meta, device=device)
    worker_maskrcnn(checkpoint, device)  # loaded once, as on a worker
    side = meta.side
    halo = side  # both read the chunk with one tile side around it
    n = chunk + 2 * halo
    image, truth = crown_block(Window(0, 0, n, n), 7, n)
    image = np.clip(np.round(image * 10_000), 1, 65_535).astype(np.float32)
    valid = np.ones(image.shape[1:], bool)
    core = Window(halo, halo, chunk, chunk)
    layout = TileLayout(n, n, model.tile, model.overlap)

    def instances() -> int:
        props = propose_tiles(model, image, valid, (0, 0), layout, layout.tiles_owned_by(core))
        uids = merge_window(Proposals.concat([props]), core)
        return int(first_pixels(uids, core, n)[0].size)

    dmeta = CheckpointMeta(in_channels=4, band_names=["red", "green", "blue", "nir"], band_mean=meta.band_mean,
                           band_std=meta.band_std, classes=[{"id": 1, "name": "ground", "color": "#a88a5c"},
                                                            {"id": 2, "name": "tree", "color": "#1f7a1f"}],
                           tile_size=side, tile_overlap=side // 4)
    deeplab = build_model_from_meta(dmeta).to(device).eval()

    def semantic() -> None:
        predict_chunk(deeplab, dmeta, image, valid, core=core.slices, batch_size=8)
        if device != "cpu":
            torch.cuda.synchronize()

    rows = []
    for name, fn in (("DeepLabV3+ ResNet-18 (semantic, alone)", semantic), (f"Mask R-CNN {meta.backbone} + merge", instances)):
        fn()  # warm-up
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        rows.append((name, min(times), float(np.median(times)), out))
    print(f"# {chunk}² chunk, tile side {side} px (Mask R-CNN tile {model.tile} + 2 x {model.overlap}; DeepLab tile "
          f"{side}, overlap {side // 4}), {platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, {'1 thread' if device == 'cpu' else device}")
    for name, best, med, out in rows:
        extra = f"  {out} instances in the core" if out is not None else ""
        print(f"{name:45s} best {best:7.2f} s  median {med:7.2f} s{extra}")
    print(f"ratio instances / semantic: best {rows[1][1] / rows[0][1]:.2f}x, median {rows[1][2] / rows[0][2]:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--min-distance", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="local Dask workers for the cluster run (0: skip it)")
    ap.add_argument("--maskrcnn", default=None, help="a Mask R-CNN checkpoint: measure per-chunk costs instead")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=200, help="with --maskrcnn train: training steps")
    ap.add_argument("--device", default="cpu", help="with --maskrcnn: cpu or cuda")
    args = ap.parse_args()
    if args.maskrcnn:
        work = Path(tempfile.mkdtemp(prefix="bench-maskrcnn-"))
        try:
            ckpt = _train(work, args.train_steps, args.device) if args.maskrcnn == "train" else args.maskrcnn
            _chunk_costs(ckpt, args.chunk, args.repeat, args.device)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0

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
