"""Segmentation inference throughput (DeepLabV3+ or another ``--architecture``): the network alone, and one chunk end to end.

Model alone: random normalised tiles already on the device through
:func:`geoseg.methods.deeplab.infer_tiles` (forward + softmax), per batch size, in Mpx/s of
tile pixels. End to end: read a chunk with its halo from a GeoTIFF (``geoseg.io.scene.read_window``),
:func:`predict_chunk` with the global tile grid and blending, trim the halo; Mpx/s counts
output (core) pixels, so the halo and tile-overlap overheads are included. Workflow (with
``--workflow SIZE``): the real job, ``run_job`` with ``method: deeplab`` on a local Dask cluster
(one worker, offering a ``GPU`` resource on CUDA), from a SIZE × SIZE GeoTIFF to a finished
``labels.zarr``; it reports output Mpx/s of the predict stage and the tile Mpx/s behind it,
as a fraction of the model-alone figure at the same batch size measured in the same run
(``vs_model_alone``; the issue's bar is ≥ 0.7 on a GPU), and the same over the worker's CPU time
(``vs_model_alone_cpu``, for a loaded machine). ``--workflow-prefetch both`` runs the job first with
one task per chunk (read, then predict) and then with the next chunk's read overlapped with the
current chunk's inference (:mod:`geoseg.run.prefetch`, the default), each on a fresh cluster, and
reports ``prefetch_speedup`` (predict stage without / with). ``--workflow-normalisation both`` runs the job
with the same weights saved as ``normalisation: training`` and then as ``normalisation: scene``, whose run
first draws the scene's statistics from a stratified sample on the workers (:mod:`geoseg.methods.scenestats`),
and reports what that pass costs (``load_model`` stage and whole run, scene over training). The model has
random weights (speed does not depend on them) unless ``--checkpoint`` is given.

    python benchmarks/bench_deeplab.py --device auto
    python benchmarks/bench_deeplab.py --device cuda --batch-sizes 8,16,32,64 --chunk 2048 --workflow 8192
    python benchmarks/bench_deeplab.py --device cpu --threads 1 --batch-sizes 8 --chunk 0 --workflow 1024 \
        --workflow-chunk 512
    python benchmarks/bench_deeplab.py --device cpu --threads 1 --batch-sizes 8 --chunk 0 --workflow 2048 \
        --workflow-chunk 512 --workflow-prefetch both
    python benchmarks/bench_deeplab.py --device cpu --threads 1 --batch-sizes 8 --chunk 0 --workflow 2048 \
        --workflow-chunk 512 --workflow-normalisation both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> dict:
    """Where the figures were taken."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        ram = None
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def bench_model(model, meta, dev, batch_sizes: list[int], amp: bool, min_seconds: float,
                tta: str = "none") -> list[dict]:
    """Mpx/s of tiles through forward + softmax (averaged over ``tta``) for each batch size (data on the device)."""
    import torch

    from geoseg.methods.deeplab import infer_tiles

    out = []
    t = meta.tile_size
    for bs in batch_sizes:
        x = torch.randn(bs, meta.in_channels, t, t, device=dev)
        try:
            infer_tiles(model, x, amp=amp, tta=tta)  # warm-up: cuDNN autotuning, allocator
            _sync(dev)
            n, t0 = 0, time.perf_counter()
            walls, cpus = [], []
            while True:
                w0, c0 = time.perf_counter(), time.process_time()
                infer_tiles(model, x, amp=amp, tta=tta)
                n += 1
                _sync(dev)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                if time.perf_counter() - t0 >= min_seconds and n >= 2:
                    break
            dt = time.perf_counter() - t0
        except torch.OutOfMemoryError:
            out.append({"batch_size": bs, "error": "out of memory"})
            torch.cuda.empty_cache()
            continue
        out.append({
            "batch_size": bs,
            "iterations": n,
            "seconds_per_batch": round(dt / n, 4),
            "tiles_per_s": round(bs * n / dt, 2),
            "mpx_per_s": round(bs * n * t * t / dt / 1e6, 3),
            # on a shared, loaded machine: the fastest batch, and the process CPU time per batch (median)
            "best_mpx_per_s": round(bs * t * t / min(walls) / 1e6, 3),
            "cpu_mpx_per_s": round(bs * t * t / float(np.median(cpus)) / 1e6, 3),
        })
    return out


def bench_chunk(model, meta, dev, chunk: int, batch_size: int, amp: bool, repeat: int, workdir: Path) -> dict:
    """One interior chunk with its halo: GeoTIFF read → predict_chunk → trimmed numpy labels."""
    from geoseg.geo import Window, halo_window, trim_halo
    from geoseg.io.scene import open_scene, read_window
    from geoseg.methods.deeplab import predict_chunk, required_halo

    halo = required_halo(meta)
    side = chunk + 2 * halo
    path = workdir / "bench.tif"
    if not path.exists():
        rng = np.random.default_rng(0)
        import rasterio
        from rasterio.transform import from_origin

        data = rng.integers(1, 255, (meta.in_channels, side, side), dtype=np.uint8)
        with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=meta.in_channels, dtype="uint8",
                           crs="EPSG:32632", transform=from_origin(400000, 5000000, 0.01, 0.01), nodata=0,
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate") as ds:
            ds.write(data)
    scene = open_scene(str(path))
    hw = halo_window(Window(halo, halo, chunk, chunk), halo, (side, side))  # an interior chunk
    n_tiles = core_tiles(meta, hw)
    runs = []
    for i in range(repeat + 1):  # the first run is a warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        data, valid = read_window(scene, hw.outer)
        t1 = time.perf_counter()
        labels = predict_chunk(model, meta, data, valid, origin=(hw.outer.row_off, hw.outer.col_off), device=dev,
                               batch_size=batch_size, amp=amp, core=hw.core_in_outer)
        labels = trim_halo(labels, hw)
        _sync(dev)
        t2 = time.perf_counter()
        if i:
            runs.append((t1 - t0, t2 - t1, time.process_time() - c0))
    read_s = float(np.median([r[0] for r in runs]))
    pred_s = float(np.median([r[1] for r in runs]))
    best_s = min(r[0] + r[1] for r in runs)
    cpu_s = float(np.median([r[2] for r in runs]))
    return {
        "chunk": chunk,
        "halo": halo,
        "outer": [hw.outer.height, hw.outer.width],
        "tiles": n_tiles,
        "tile_pixels_per_output_pixel": round(n_tiles * meta.tile_size**2 / chunk**2, 3),
        "batch_size": batch_size,
        "read_s": round(read_s, 3),
        "predict_s": round(pred_s, 3),
        "total_s": round(read_s + pred_s, 3),
        "mpx_per_s": round(chunk * chunk / (read_s + pred_s) / 1e6, 3),
        # tile pixels through the whole path (read, normalise, cut, infer, blend, argmax, trim): the
        # figure to set against the model-alone Mpx/s at the same batch size and threads
        "tile_mpx_per_s": round(n_tiles * meta.tile_size**2 / (read_s + pred_s) / 1e6, 3),
        "best_tile_mpx_per_s": round(n_tiles * meta.tile_size**2 / best_s / 1e6, 3),
        "cpu_tile_mpx_per_s": round(n_tiles * meta.tile_size**2 / cpu_s / 1e6, 3),
        "labels_shape": list(labels.shape),
    }


def core_tiles(meta, hw) -> int:
    """Tiles ``predict_chunk(core=...)`` computes for one chunk: every tile touching its core."""
    from geoseg.methods.deeplab import tile_starts

    stride = meta.tile_size - meta.tile_overlap
    rows, cols = hw.core_in_outer
    rs = tile_starts(hw.outer.row_off, hw.outer.height, meta.tile_size, stride, rows.start, rows.stop)
    cs = tile_starts(hw.outer.col_off, hw.outer.width, meta.tile_size, stride, cols.start, cols.stop)
    return len(rs) * len(cs)


def tiles_for_grid(meta, height: int, width: int, chunk: int) -> int:
    """Tiles the workflow computes over the whole scene, chunk by chunk."""
    from affine import Affine

    from geoseg.geo import GeoGrid, halo_window
    from geoseg.methods.deeplab import required_halo

    halo = required_halo(meta)
    grid = GeoGrid.of(height, width, Affine.identity(), "EPSG:32633").tiles(chunk)  # only the windows matter
    return sum(core_tiles(meta, halo_window(w, halo, (height, width))) for w in grid.windows())


def _write_scene(image: Path, size: int, meta) -> None:
    """A ``size``² random uint8 GeoTIFF of the model's bands, 256 px deflate blocks."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    with rasterio.open(image, "w", driver="GTiff", width=size, height=size, count=meta.in_channels, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(400000, 5000000, meta.resolution, meta.resolution),
                       nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate") as ds:
        for r0 in range(0, size, 1024):
            h = min(1024, size - r0)
            ds.write(rng.integers(1, 255, (meta.in_channels, h, size), dtype=np.uint8),
                     window=rasterio.windows.Window(0, r0, size, h))
        ds.descriptions = tuple(meta.band_names)


def bench_workflow(model, meta, dev, size: int, chunk: int, batch_size: int, model_alone: dict | None,
                   workdir: Path, prefetch: bool = True, normalisation: str | None = None) -> dict:
    """The real job on a one-worker local cluster: GeoTIFF → tiles → blended logits → labels.zarr.

    ``prefetch=False`` runs it with one task per chunk, each reading then predicting (the engine
    before the read-ahead of :mod:`geoseg.run.prefetch`); the labels are the same. ``normalisation`` saves the
    weights with that normalisation instead of ``meta``'s (``scene``: the run samples the scene first).
    """
    import copy
    import dataclasses
    from unittest import mock

    import torch
    from distributed import Client

    from geoseg.io.scene import open_scene
    from geoseg.methods.checkpoint import save_checkpoint
    from geoseg.run.cluster import start_local_cluster
    from geoseg.run.jobspec import parse_job
    from geoseg.run.methods import deeplab as deeplab_method
    from geoseg.run.workflow import run_job

    normalisation = normalisation or meta.normalisation
    ckpt = workdir / f"bench-model-{normalisation}"  # a CPU, contiguous copy: the benchmarked model stays as it is
    save_checkpoint(copy.deepcopy(model).float().to("cpu").to(memory_format=torch.contiguous_format),
                    meta.model_copy(update={"normalisation": normalisation}), ckpt)
    image = workdir / f"scene_{size}.tif"
    if not image.exists():  # written once; a second run (--workflow-prefetch both) reads the same file
        _write_scene(image, size, meta)
    cuda = dev.type == "cuda"
    out_dir = workdir / f"out-{'prefetch' if prefetch else 'no-prefetch'}-{normalisation}"
    job = parse_job({
        "name": "bench-deeplab", "inputs": [str(image)], "output": str(out_dir), "chunk_size": chunk,
        "method": {"kind": "deeplab", "checkpoint": str(ckpt), "batch_size": batch_size, "device": dev.type},
        "vectorize": {"enabled": False},
    })
    build = deeplab_method.build_deeplab_predictor
    with start_local_cluster(1, 1, memory_limit=0, dashboard=False, resources={"GPU": 1} if cuda else None) as cluster, \
            Client(cluster) as client, \
            mock.patch.object(deeplab_method, "build_deeplab_predictor",
                              lambda *a, **k: dataclasses.replace(build(*a, **k), prefetch=prefetch)):
        cpu0 = sum(client.run(time.process_time).values())
        t0 = time.perf_counter()
        result = run_job(job, client=client, show_progress=False)
        total = time.perf_counter() - t0
        worker_cpu_s = sum(client.run(time.process_time).values()) - cpu0
    load = os.getloadavg()
    predict_s = result.stage_seconds["predict"]
    real_chunk = open_scene(str(image)).chunk_grid(job.chunk_size).chunk  # rounded to the file's blocks
    tiles = tiles_for_grid(meta, size, size, real_chunk)
    tile_mpx = tiles * meta.tile_size**2 / 1e6
    out = {
        "size": size, "chunk": real_chunk, "chunks": (-(-size // real_chunk)) ** 2, "batch_size": batch_size,
        "tiles": tiles, "prefetch": prefetch, "normalisation": normalisation,
        "load_model_stage_s": round(result.stage_seconds["load_model"], 2),
        "tile_pixels_per_output_pixel": round(tile_mpx * 1e6 / size**2, 3),
        "run_s": round(total, 2), "predict_stage_s": round(predict_s, 2),
        "output_mpx_per_s": round(size * size / 1e6 / predict_s, 3),
        "tile_mpx_per_s": round(tile_mpx / predict_s, 3),
        # the worker's process CPU time over the whole job (load-robust; reads included, overlap not visible)
        "worker_cpu_s": round(worker_cpu_s, 2),
        "cpu_tile_mpx_per_s": round(tile_mpx / worker_cpu_s, 3) if worker_cpu_s > 0 else None,
        "loadavg_after": [round(x, 2) for x in load],
        "note": "predict stage = every chunk read with its halo, tiled, inferred, blended, trimmed, written to Zarr; "
                "includes loading the model once on the worker",
    }
    same_batch = [m for m in (model_alone or []) if m.get("batch_size") == batch_size and "mpx_per_s" in m]
    if same_batch:
        out["vs_model_alone"] = round(out["tile_mpx_per_s"] / same_batch[0]["mpx_per_s"], 3)
        if out["cpu_tile_mpx_per_s"] and "cpu_mpx_per_s" in same_batch[0]:
            out["vs_model_alone_cpu"] = round(out["cpu_tile_mpx_per_s"] / same_batch[0]["cpu_mpx_per_s"], 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--checkpoint", help="use this checkpoint instead of a random model")
    ap.add_argument("--architecture", default="DeepLabV3Plus", help="smp architecture (geoseg.methods.architectures)")
    ap.add_argument("--tta", default="none", choices=["none", "flips", "d4"], help="test-time augmentation (model alone)")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--encoder-depth", type=int, default=5)
    ap.add_argument("--decoder-channels", type=int, default=256)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,4,8", help="comma-separated, model-alone benchmark")
    ap.add_argument("--chunk", type=int, default=1024, help="end-to-end chunk side (0 = skip)")
    ap.add_argument("--chunk-batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="timed end-to-end runs (after one warm-up)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="minimum timing per batch size")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    ap.add_argument("--workflow", type=int, default=0, help="scene side for the end-to-end job (0 = skip)")
    ap.add_argument("--workflow-chunk", type=int, default=2048, help="processing chunk of the job")
    ap.add_argument("--workflow-batch-size", type=int, default=0, help="batch size of the job (0 = the largest "
                    "model-alone batch size)")
    ap.add_argument("--workflow-prefetch", default="on", choices=["on", "off", "both"],
                    help="the job with the next chunk's read overlapped (on, the default), one task per chunk "
                    "reading then predicting (off), or both in turn (off first), each on a fresh cluster")
    ap.add_argument("--workflow-normalisation", default="checkpoint", choices=["checkpoint", "both"],
                    help="the job with the checkpoint's normalisation, or with the same weights saved as "
                    "normalisation: training and then as normalisation: scene, each on a fresh cluster")
    args = ap.parse_args(argv)

    import torch

    from geoseg.legend import cluster_legend
    from geoseg.methods.checkpoint import CheckpointMeta, build_model_from_meta, load_checkpoint
    from geoseg.methods.deeplab import prepare_model, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(resolve_device(args.device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
    else:
        meta = CheckpointMeta(
            architecture=args.architecture, encoder=args.encoder, encoder_depth=args.encoder_depth,
            decoder_channels=args.decoder_channels,
            in_channels=args.bands, band_names=[f"b{i + 1}" for i in range(args.bands)],
            band_mean=[127.0] * args.bands, band_std=[50.0] * args.bands,
            classes=[c.__class__(c.id + 1, c.name, c.color) for c in cluster_legend(args.classes)],
            tile_size=args.tile, tile_overlap=args.overlap, resolution=0.01,
        )
        torch.manual_seed(0)
        model = build_model_from_meta(meta)
    model = prepare_model(model, str(dev))
    amp = not args.no_amp
    result = {
        "machine": machine(),
        "device": str(dev),
        "amp": amp and dev.type == "cuda",
        "tta": args.tta,
        "model": {
            "architecture": meta.architecture, "encoder": meta.encoder, "encoder_depth": meta.encoder_depth,
            "decoder_channels": meta.decoder_channels,
            "in_channels": meta.in_channels, "classes": meta.n_classes, "tile": meta.tile_size,
            "overlap": meta.tile_overlap, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        },
        "model_alone": bench_model(model, meta, dev, [int(b) for b in args.batch_sizes.split(",")], amp, args.min_seconds,
                                   args.tta),
    }
    if args.chunk:
        with tempfile.TemporaryDirectory() as tmp:
            e2e = bench_chunk(model, meta, dev, args.chunk, args.chunk_batch_size, amp, args.repeat, Path(tmp))
        same = [m for m in result["model_alone"] if m.get("batch_size") == args.chunk_batch_size and "mpx_per_s" in m]
        if same:
            e2e["vs_model_alone"] = round(e2e["tile_mpx_per_s"] / same[0]["mpx_per_s"], 3)
            e2e["vs_model_alone_best"] = round(e2e["best_tile_mpx_per_s"] / same[0]["best_mpx_per_s"], 3)
            e2e["vs_model_alone_cpu"] = round(e2e["cpu_tile_mpx_per_s"] / same[0]["cpu_mpx_per_s"], 3)
        result["end_to_end"] = e2e
    if args.workflow:
        bs = args.workflow_batch_size or max(int(b) for b in args.batch_sizes.split(","))
        modes = {"on": [True], "off": [False], "both": [False, True]}[args.workflow_prefetch]
        norms = [None] if args.workflow_normalisation == "checkpoint" else ["training", "scene"]
        with tempfile.TemporaryDirectory() as tmp:
            runs = [bench_workflow(model, meta, dev, args.workflow, args.workflow_chunk, bs, result["model_alone"],
                                   Path(tmp), prefetch=p, normalisation=n) for n in norms for p in modes]
        result["workflow"] = runs[-1]
        if len(modes) > 1:
            result["workflow_no_prefetch"] = runs[-2]
            result["prefetch_speedup"] = round(runs[-2]["predict_stage_s"] / runs[-1]["predict_stage_s"], 3)
        if len(norms) > 1:
            trained, scene = runs[len(modes) - 1], runs[-1]
            result["workflow_training_normalisation"] = trained
            result["scene_normalisation_cost"] = {
                "load_model_stage_s": [trained["load_model_stage_s"], scene["load_model_stage_s"]],
                "run_s_ratio": round(scene["run_s"] / trained["run_s"], 3),
                "worker_cpu_s_ratio": round(scene["worker_cpu_s"] / trained["worker_cpu_s"], 3),
            }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
