"""The baseline a user would write without geoseg: one process, rasterio + scikit-learn.

Reads the scene in strips of rows (so 400 Mpx fit in memory), draws ``--sample`` valid pixels
uniformly, fits ``KMeans`` (k = 6, n_init = 4, the features geoseg's benchmark job uses: the 4
bands + NDVI + NDWI, standardised), then reads the scene again, predicts each strip and writes a
tiled, DEFLATE-compressed uint8 GeoTIFF (255 = nodata). scikit-learn and GDAL use every core
this process may run on (the same cores the geoseg cluster gets).

Usage: .venv/bin/python benchmarks/plain_kmeans.py IMAGE OUT.tif [--sample 200000] [--strip 1024]
Prints one JSON line with the phase times.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rasterio
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances_argmin


def features(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(6, n) float32 features and the valid mask of a (4, h, w) blue/green/red/nir strip."""
    b = block.reshape(4, -1).astype(np.float32)
    _, green, red, nir = b
    valid = (b != 0).any(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
        ndwi = (green - nir) / (green + nir)
    f = np.vstack([b, ndvi, ndwi])
    valid &= np.isfinite(f).all(axis=0)
    return f, valid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image")
    p.add_argument("out")
    p.add_argument("--sample", type=int, default=200_000)
    p.add_argument("--strip", type=int, default=1024)
    args = p.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    with rasterio.open(args.image) as src:
        h, w = src.height, src.width
        rate = min(1.0, args.sample / (h * w))
        parts = []
        for r0 in range(0, h, args.strip):
            win = rasterio.windows.Window(0, r0, w, min(args.strip, h - r0))
            f, valid = features(src.read(window=win))
            idx = np.flatnonzero(valid & (rng.random(valid.size) < rate))
            parts.append(f[:, idx].T)
        sample = np.concatenate(parts).astype(np.float64)
        t_sample = time.perf_counter()
        mean, std = sample.mean(axis=0), sample.std(axis=0)
        std[std == 0] = 1
        km = KMeans(n_clusters=6, n_init=4, random_state=0).fit((sample - mean) / std)
        centers = km.cluster_centers_.astype(np.float32)
        t_fit = time.perf_counter()
        profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "uint8", "crs": src.crs,
                   "transform": src.transform, "nodata": 255, "tiled": True, "blockxsize": 512, "blockysize": 512,
                   "compress": "deflate"}
        with rasterio.open(args.out, "w", **profile) as dst:
            for r0 in range(0, h, args.strip):
                win = rasterio.windows.Window(0, r0, w, min(args.strip, h - r0))
                f, valid = features(src.read(window=win))
                z = ((f.T - mean.astype(np.float32)) / std.astype(np.float32))
                z[~valid] = 0
                labels = pairwise_distances_argmin(z, centers).astype(np.uint8)
                labels[~valid] = 255
                dst.write(labels.reshape(win.height, w), 1, window=win)
    t_end = time.perf_counter()
    print(json.dumps({"sample_s": round(t_sample - t0, 2), "fit_s": round(t_fit - t_sample, 2),
                      "predict_write_s": round(t_end - t_fit, 2), "total_s": round(t_end - t0, 2),
                      "sample_px": int(sample.shape[0])}))


if __name__ == "__main__":
    main()
