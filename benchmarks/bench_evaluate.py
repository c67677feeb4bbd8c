"""Benchmark: per-region accuracy assessment vs. merely reading the two rasters.

Builds (once, in ``--workdir``) a large blocky label store, a raster reference that disagrees on
about a fifth of its blocks (nodata along the top), and ``--regions`` Voronoi regions in a
GeoPackage. Then, on a LocalCluster of ``--workers`` single-threaded processes, it times

* ``read``: every chunk window of the label store and the same window of the reference, read
  chunk by chunk as Dask tasks and tree-summed (the I/O floor of any evaluation), and
* ``evaluate``: :func:`geoseg.accuracy.evaluate.evaluate` with the regions layer, on the same cluster,

``--repeat`` times each (after one untimed warm-up read), and prints one JSON object with the
machine, the sizes, the best and all times, and ``ratio = evaluate / read``.

    python benchmarks/bench_evaluate.py                   # 20000 x 20000 = 400 Mpx
    python benchmarks/bench_evaluate.py --size 5000       # 25 Mpx, quick
    python benchmarks/bench_evaluate.py --reproject       # reference in EPSG:3857 (warped per chunk)
    python benchmarks/bench_evaluate.py --size 8000 --burners polyfill,rasterio --repeat 5
                                                          # evaluate with each polygon burner, interleaved

``--burners`` runs the evaluation once per burner in each repeat, alternating (so a noisy machine
slows both alike), after switching every worker's burner (``geoseg.accuracy.layers.burn_shapes``):
``rasterio`` = :func:`geoseg.io.rasterize.burn` (``rasterio.features.rasterize``, what geoseg
uses), ``polyfill`` = geoseg's former compiled fill, removed after this comparison
(``benchmarks/RESULTS-evaluate.md``): run the script from commit 5aceee8 to compare again. Both must
give the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affine import Affine
from rasterio.crs import CRS

from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.legend import LANDCOVER_CLASSES

CRS_UTM = CRS.from_epsg(32633)
BLOCK = 64  # pixels per class block


def machine() -> dict:
    """nproc, CPU model and RAM, for the results table."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": ram, "python": platform.python_version(),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}  # other work on the machine skews times


def coarse_fields(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class per block for the labels and for the reference (a fifth of blocks disagree)."""
    rng = np.random.default_rng(seed)
    n = -(-size // BLOCK)
    labels = rng.integers(1, 7, (n, n)).astype(np.uint8)
    ref = labels.copy()
    flip = rng.random((n, n)) < 0.2
    ref[flip] = rng.integers(1, 7, int(flip.sum()))
    return labels, ref


def expand(coarse: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    r = np.arange(rows.start, rows.stop) // BLOCK
    c = np.arange(cols.start, cols.stop) // BLOCK
    return coarse[r[:, None], c[None, :]]


def build_inputs(workdir: Path, size: int, chunk: int, n_regions: int, reproject: bool, label_noise: float = 0.0,
                 seed: int = 0) -> dict:  # fmt: skip
    """Write the label store, the reference GeoTIFF and the regions GeoPackage (skipped if present).

    ``label_noise``: fraction of label pixels set to a random class (salt and pepper, as in a
    per-pixel classifier's map), so that fewer neighbouring pixels agree.
    """
    import rasterio

    from geoseg.io.labelstore import LabelStoreWriter

    transform = Affine(10, 0, 500000, 0, -10, 5100000)
    tag = f"{size}_{chunk}" + (f"_noise{label_noise:g}" if label_noise else "")
    store = workdir / f"labels_{tag}.zarr"
    ref_path = workdir / f"reference_{size}{'_3857' if reproject else ''}.tif"
    regions = workdir / f"regions_{size}_{n_regions}.gpkg"
    lab_c, ref_c = coarse_fields(size, seed)
    t0 = time.perf_counter()
    if not store.exists():
        grid = GeoGrid.of(size, size, transform, CRS_UTM).tiles(chunk)
        writer = LabelStoreWriter.create(store, grid, LANDCOVER_CLASSES)
        for i, w in enumerate(grid.windows()):
            block = expand(lab_c, *w.slices)
            if label_noise:
                rng = np.random.default_rng([seed, i])
                flip = rng.random(block.shape) < label_noise
                block[flip] = rng.integers(1, 7, int(flip.sum()))
            writer.write(w, block)
        writer.finalize()
    if not ref_path.exists():
        profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=CRS_UTM, transform=transform,
                       nodata=0, tiled=True, blockxsize=512, blockysize=512, compress="zstd", BIGTIFF="IF_SAFER")  # fmt: skip
        native = ref_path if not reproject else workdir / f"reference_{size}.tif"
        if not native.exists():
            with rasterio.open(native, "w", **profile) as dst:
                for r0 in range(0, size, 2048):
                    rows = slice(r0, min(r0 + 2048, size))
                    strip = expand(ref_c, rows, slice(0, size))
                    if r0 == 0:
                        strip[:100] = 0  # a nodata band along the top
                    dst.write(strip, 1, window=rasterio.windows.Window(0, r0, size, strip.shape[0]))
        if reproject:
            _warp_to_3857(native, ref_path)
    if not regions.exists():
        _voronoi_regions(regions, transform, size, n_regions, seed)
    return {"store": store, "reference": ref_path, "regions": regions, "build_s": round(time.perf_counter() - t0, 1)}


def _warp_to_3857(src_path: Path, dst_path: Path) -> None:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(src_path) as src, WarpedVRT(src, crs="EPSG:3857", resampling=Resampling.nearest) as vrt:
        profile = dict(driver="GTiff", width=vrt.width, height=vrt.height, count=1, dtype="uint8", crs=vrt.crs,
                       transform=vrt.transform, nodata=0, tiled=True, blockxsize=512, blockysize=512, compress="zstd",
                       BIGTIFF="IF_SAFER")  # fmt: skip
        with rasterio.open(dst_path, "w", **profile) as dst:
            for _, win in dst.block_windows(1):
                dst.write(vrt.read(1, window=win), 1, window=win)


def _voronoi_regions(path: Path, transform: Affine, size: int, n: int, seed: int) -> None:
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed + 1)
    left, top = transform.c, transform.f
    extent = shapely.box(left, top - size * 10, left + size * 10, top)
    pts = shapely.multipoints(np.column_stack([rng.uniform(left, left + size * 10, n), rng.uniform(top - size * 10, top, n)]))
    cells = shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=extent))
    cells = shapely.intersection(cells, extent)
    gdf = gpd.GeoDataFrame({"region_id": np.arange(1, len(cells) + 1)}, geometry=cells, crs=CRS_UTM)
    gdf.to_file(path, driver="GPKG")


def read_only(store: str, ref, window: Window, grid: ChunkGrid) -> int:
    """Baseline task: read both rasters on one window, the reference as evaluate reads it (on an
    aligned grid: one windowed read in the file's own type, nothing else)."""
    from geoseg.accuracy.reference import reference_pixels
    from geoseg.io.labelstore import read_label_window

    labels = read_label_window(store, window)
    values, _ = reference_pixels(ref, grid.window_grid(window))
    return int(labels.size + values.size)


def _sum(xs: list[int]) -> int:
    return int(sum(xs))


def time_read(client, store: Path, reference: Path) -> float:
    from dask import delayed

    from geoseg.accuracy.reference import open_reference
    from geoseg.io.labelstore import read_label_info

    t0 = time.perf_counter()
    info = read_label_info(store)
    grid = info.chunk_grid
    ref = delayed(open_reference(reference), pure=True)
    parts = [delayed(read_only, pure=False)(str(store), ref, w, grid) for w in grid.windows()]
    while len(parts) > 1:
        parts = [delayed(_sum)(parts[i : i + 16]) for i in range(0, len(parts), 16)]
    total = client.compute(parts[0]).result()
    dt = time.perf_counter() - t0
    assert total == 2 * info.grid.height * info.grid.width
    return dt


def _rasterio_burn(shapes: list, grid, fill: int, dtype: str = "int32"):
    from geoseg.io.rasterize import burn

    return burn([g for g, _ in shapes], [v for _, v in shapes], grid.transform, grid.shape, dtype, fill)


def _polyfill_burn(shapes: list, grid, fill: int, dtype: str = "int32"):
    try:
        from geoseg._kernels.polyfill import fill_polygons
    except ModuleNotFoundError as exc:
        raise SystemExit("the polyfill burner was removed; run this benchmark from commit 5aceee8 to compare") from exc

    return fill_polygons([g for g, _ in shapes], [v for _, v in shapes], grid.transform, grid.shape, dtype, fill)


BURNERS = {"rasterio": _rasterio_burn, "polyfill": _polyfill_burn}


def use_burner(name: str) -> str:
    """Run on every worker (``client.run``): make evaluation burn polygons with ``name``."""
    import importlib

    for module in ("geoseg.accuracy.layers", "geoseg.accuracy.reference", "geoseg.accuracy.regions"):
        try:
            m = importlib.import_module(module)
        except ModuleNotFoundError:  # an older layout
            continue
        if hasattr(m, "burn_shapes"):  # each module that burns holds its own name for the function
            m.burn_shapes = BURNERS[name]
    return name


def time_evaluate(client, store: Path, reference: Path, regions: Path) -> tuple[float, dict]:
    from geoseg.accuracy.evaluate import evaluate

    t0 = time.perf_counter()
    ev = evaluate(store, reference, regions=regions, region_field="region_id", client=client)
    dt = time.perf_counter() - t0
    import hashlib

    top = ev.metrics().iloc[0]
    per_region = hashlib.sha256(ev.regions_table().to_csv(index=False).encode()).hexdigest()[:16]
    return dt, {"miou": round(float(top["miou"]), 4), "overall_accuracy": round(float(top["overall_accuracy"]), 4),
                "regions": len(ev.region_ids) - 1, "valid_px": int(top["valid_px"]),
                "excluded_px": int(top["excluded_px"]),
                "regions_table_sha256": per_region}  # every region's figures: burners must agree on them


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=20000, help="side of the square label raster in pixels (default 20000)")
    p.add_argument("--chunk", type=int, default=2048, help="chunk size of the label store")
    p.add_argument("--regions", type=int, default=1000, help="number of Voronoi regions")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--reproject", action="store_true", help="reference in EPSG:3857, warped per chunk")
    p.add_argument("--label-noise", type=float, default=0.0,
                   help="fraction of label pixels set to a random class (default 0: 64-px blocks only)")
    p.add_argument("--burners", default="",
                   help="comma-separated polygon burners to compare, e.g. polyfill,rasterio (default: as installed)")
    p.add_argument("--workdir", type=Path, default=None, help="where inputs are built and kept (default: a temp dir)")
    args = p.parse_args(argv)

    from distributed import Client

    from geoseg.run.cluster import start_local_cluster

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="geoseg-bench-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    host = machine()
    try:
        inputs = build_inputs(workdir, args.size, args.chunk, args.regions, args.reproject, args.label_noise)
        with start_local_cluster(args.workers, 1, memory_limit=0, dashboard=False) as cluster, \
                Client(cluster) as client:  # geoseg's own local cluster (workers spawned with WORKER_ENV)
            time_read(client, inputs["store"], inputs["reference"])  # warm-up: page cache, imports
            reads, evals, check = [], [], {}
            burners = [b for b in args.burners.split(",") if b]
            by_burner: dict[str, list[float]] = {b: [] for b in burners}
            checks: dict[str, dict] = {}
            for b in burners:  # warm-up of each burner: its imports, numba compilation, the layer cache
                client.run(use_burner, b)
                time_evaluate(client, inputs["store"], inputs["reference"], inputs["regions"])
            for i in range(args.repeat):
                reads.append(time_read(client, inputs["store"], inputs["reference"]))
                if not burners:
                    dt, check = time_evaluate(client, inputs["store"], inputs["reference"], inputs["regions"])
                    evals.append(dt)
                for b in burners if i % 2 == 0 else burners[::-1]:  # alternate the order between repeats
                    client.run(use_burner, b)
                    dt, checks[b] = time_evaluate(client, inputs["store"], inputs["reference"], inputs["regions"])
                    by_burner[b].append(dt)
            if burners:
                if any(c != checks[burners[0]] for c in checks.values()):
                    raise AssertionError(f"burners disagree: {checks}")
                check = checks[burners[0]]
                evals = by_burner[burners[0]]
        result = {
            "machine": {**host, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
            "size_px": [args.size, args.size],
            "megapixels": round(args.size * args.size / 1e6, 1),
            "chunk": args.chunk,
            "chunks": (-(-args.size // args.chunk)) ** 2,
            "regions": args.regions,
            "label_noise": args.label_noise,
            "reference": "EPSG:3857, warped per chunk" if args.reproject else "same grid (direct windowed reads)",
            "workers": f"{args.workers} processes x 1 thread (geoseg.run.cluster.start_local_cluster)",
            "build_inputs_s": inputs["build_s"],
            "read_s": round(min(reads), 2),
            "evaluate_s": round(min(evals), 2),
            "ratio_evaluate_to_read": round(min(evals) / min(reads), 2),
            "read_s_all": [round(x, 2) for x in reads],
            "evaluate_s_all": [round(x, 2) for x in evals],  # the first includes each worker's start-up:
            # loading the compiled kernels and reading the regions layer into memory
            "evaluate_mpx_per_s": round(args.size * args.size / 1e6 / min(evals), 1),
            "check": check,
        }
        if burners:
            result["evaluate_s_by_burner"] = {b: round(min(v), 2) for b, v in by_burner.items()}
            result["evaluate_s_all_by_burner"] = {b: [round(x, 2) for x in v] for b, v in by_burner.items()}
            result["evaluate_s_median_by_burner"] = {b: round(float(np.median(v)), 2) for b, v in by_burner.items()}
            if len(burners) == 2:
                a, b = burners
                result[f"ratio_{b}_to_{a}"] = round(min(by_burner[b]) / min(by_burner[a]), 3)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
