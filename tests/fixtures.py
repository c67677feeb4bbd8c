"""Helpers shared by test modules of several folders: small generated rasters with known classes,
label stores and region layers, tiny DeepLab models. Test modules never import each other; what
more than one of them needs lives here (or in a folder's helper module, e.g. tests/deploy/recipes.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoseg.geo import ChunkGrid, GeoGrid

if TYPE_CHECKING:  # heavy imports (torch) happen in the helpers that need them
    import torch

    from geoseg.methods.checkpoint import CheckpointMeta

#: The real Sentinel-2 sample: ``../shared/realdata/slovenia`` beside the repository, or where
#: ``GEOSEG_REALDATA`` says (e.g. from a worktree elsewhere); tests that need it skip without it.
REALDATA = Path(os.environ.get("GEOSEG_REALDATA")
                or Path(__file__).resolve().parents[2] / "shared" / "realdata" / "slovenia")

#: Four well separated spectra (blue, green, red, nir) for blocky test scenes.
SPECTRA = np.array([[500, 600, 400, 3000], [300, 400, 300, 200], [1500, 1600, 1800, 2200], [800, 900, 700, 1500]])


def blocky_classes(height: int, width: int, cell: int = 37) -> np.ndarray:
    """A class map of rectangles (ids 0..3) that is easy to cluster and to check."""
    return (np.add.outer(np.arange(height) // cell, np.arange(width) // (cell + 11)) % 4).astype(np.uint8)


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = "EPSG:32633", transform=None,
                 nodata=None, block: int = 128, descriptions=None) -> Path:
    """Write a tiled GeoTIFF from a (bands, h, w) array."""
    if data.ndim == 2:
        data = data[None]
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name,
                   transform=transform or from_origin(500000, 5100000, 10, 10), compress="deflate")
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if h >= block and w >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return path


def blocky_scene(folder: Path, height: int = 300, width: int = 340, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A 4-band uint16 scene of blocky classes with noise and a nodata corner."""
    rng = np.random.default_rng(seed)
    classes = blocky_classes(height, width)
    img = SPECTRA[classes].transpose(2, 0, 1) + rng.normal(0, 60, (4, height, width))
    img = np.clip(img, 1, None).astype("uint16")
    img[:, :20, :25] = 0
    path = write_raster(folder / "scene.tif", img, nodata=0, descriptions=("blue", "green", "red", "nir"))
    return path, classes


# ------------------------------------------------------------------------------------------
# label stores and region layers on a 10 m UTM grid (accuracy, vector and CLI tests)
# ------------------------------------------------------------------------------------------

def geo_grid(height: int, width: int, transform=None, crs="EPSG:32633") -> GeoGrid:
    """A label grid for tests: 10 m UTM 33N pixels from (500000, 5100000) unless told otherwise."""
    return GeoGrid.of(height, width, transform or from_origin(500000, 5100000, 10, 10), crs)


def chunk_grid(height: int, width: int, chunk: int, transform=None, crs="EPSG:32633") -> ChunkGrid:
    """:func:`geo_grid` cut into ``chunk`` x ``chunk`` chunks."""
    return geo_grid(height, width, transform, crs).tiles(chunk)


CRS_UTM = CRS.from_epsg(32633)
#: The 10 m grid the label-store helpers default to; its origin is ``(500000, 5100000)``.
TRANSFORM = Affine(10.0, 0, 500000.0, 0, -10.0, 5100000.0)


def write_store(path: Path, labels: np.ndarray, chunk: int, legend=None, transform: Affine = TRANSFORM,
                crs: CRS = CRS_UTM) -> Path:
    """A finalized label store of ``labels`` written chunk by chunk (``legend`` defaults to land cover)."""
    from geoseg.io.labelstore import LabelStoreWriter
    from geoseg.legend import LANDCOVER_CLASSES

    grid = GeoGrid.of(labels.shape[0], labels.shape[1], transform, crs).tiles(chunk)
    writer = LabelStoreWriter.create(path, grid, tuple(LANDCOVER_CLASSES if legend is None else legend))
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize()


def write_regions(path: Path, rects: list[tuple[int, int, int, int]], ids: list, crs: CRS = CRS_UTM,
                  transform: Affine = TRANSFORM, to_crs: CRS | None = None) -> Path:
    """Rectangles given in pixel coordinates (row0, col0, row1, col1) as a polygon layer."""
    import geopandas as gpd
    from shapely import box

    geoms = []
    for r0, c0, r1, c1 in rects:
        x0, y0 = transform @ (c0, r0)
        x1, y1 = transform @ (c1, r1)
        geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    gdf = gpd.GeoDataFrame({"zone": ids}, geometry=geoms, crs=crs)
    if to_crs is not None:
        gdf = gdf.to_crs(to_crs)
    gdf.to_file(path, driver="GPKG")
    return path


def random_blocks(shape: tuple[int, int], block: int, n: int, seed: int) -> np.ndarray:
    """A uint8 map of ``block``-pixel squares with random classes 1..n (cropped to ``shape``)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, n + 1, (-(-shape[0] // block), -(-shape[1] // block)))
    return np.kron(coarse, np.ones((block, block), int))[: shape[0], : shape[1]].astype(np.uint8)


# ------------------------------------------------------------------------------------------
# tiny DeepLab models (checkpoint, prediction and workflow tests); torch is imported on use
# ------------------------------------------------------------------------------------------

BANDS = ["red", "green", "blue", "nir"]


def tiny_meta(**kw) -> CheckpointMeta:
    """Checkpoint metadata of a small 4-band crop/weed model; ``kw`` overrides fields."""
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.checkpoint import CheckpointMeta

    base = dict(
        encoder="resnet18", encoder_depth=3, decoder_channels=16, in_channels=4, band_names=BANDS,
        band_mean=[100.0, 110.0, 90.0, 150.0], band_std=[20.0, 25.0, 15.0, 40.0], classes=list(CROPWEED_CLASSES),
        tile_size=64, tile_overlap=16, resolution=0.01, crs="EPSG:32632",
    )
    base.update(kw)
    return CheckpointMeta(**base)


def tiny_model(meta: CheckpointMeta, seed: int = 0) -> torch.nn.Module:
    """An untrained model for ``meta`` with non-trivial BatchNorm statistics, in eval mode."""
    import torch

    from geoseg.methods.checkpoint import build_model

    torch.manual_seed(seed)
    model = build_model(meta.encoder, meta.in_channels, meta.n_classes, encoder_depth=meta.encoder_depth,
                        decoder_channels=meta.decoder_channels)
    # Make BatchNorm statistics non-trivial so a lost buffer would show in predictions.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


#: A four-class legend for the legend tests (reference class = blocky class + 1; 0 is the reference's nodata).
LEGEND_CLASSES = [
    {"id": 1, "name": "forest", "color": "#0b6623"},
    {"id": 2, "name": "water", "color": "#1f4e9c"},
    {"id": 3, "name": "built-up", "color": "#c81e1e"},
    {"id": 4, "name": "meadow", "color": "#9acd32"},
]


#: The listener's server, run in its own process: GDAL may hold the GIL while it waits for an answer.
_LISTENER = """
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write(self.path + "\\n")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_HEAD = do_GET
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Listener:
    """A loopback HTTP server that counts the requests it gets: the witness that nothing was fetched.

    Every request is answered 404 and logged (``paths``) before the answer goes out. The server runs
    in a child process, so a GDAL call that holds this process's GIL cannot stall it. A context manager.
    """

    def __init__(self) -> None:
        import subprocess
        import sys
        import tempfile

        fd, log = tempfile.mkstemp(prefix="geoseg-listener-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        self.proc = subprocess.Popen([sys.executable, "-c", _LISTENER, log], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    @property
    def paths(self) -> list[str]:
        return self.log.read_text().splitlines()

    @property
    def hits(self) -> int:
        return len(self.paths)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.unlink(missing_ok=True)


#: Extension schemas for validating STAC offline (see its README).
STAC_SCHEMAS = Path(__file__).parent / "io" / "stac_schemas"


class _NoNetworkStacIO:
    """A StacIO that refuses every URL: a schema pystac would fetch makes validation fail (the witness)."""

    def __init__(self, inner) -> None:
        self.inner, self.fetched = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read_text(self, source, *args, **kwargs):
        if "://" in str(source):
            self.fetched.append(str(source))
            raise OSError(f"no network in this test: {source}")
        return self.inner.read_text(source, *args, **kwargs)


def validate_stac_offline(data: dict) -> list[str]:
    """Validate a STAC dict with pystac against local schemas only; returns the schema URIs used."""
    import pystac
    from pystac.validation import validate_dict
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    validator = JsonSchemaSTACValidator()
    for path in STAC_SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        validator.schema_cache[schema["$id"]] = schema
    guard = _NoNetworkStacIO(pystac.StacIO.default())
    previous = pystac.StacIO._default_io  # swapped back below
    pystac.StacIO.set_default(lambda: guard)
    try:
        used = validate_dict(data, validator=validator)
    finally:
        pystac.StacIO._default_io = previous
    assert guard.fetched == []
    return used


def coco_ap(pred: np.ndarray, ref: np.ndarray, pred_cls: np.ndarray, ref_cls: np.ndarray,
             score: np.ndarray) -> dict[int, tuple[float, float]]:
    """AP50 and AP per class by pycocotools (no detection cap, one area range): the independent oracle of
    geoseg's COCO AP (instance rasters, ids 1..n, 0 = none; classes and scores index id - 1)."""
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m: np.ndarray) -> dict:
        r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    cats = sorted(set(pred_cls.tolist()) | set(ref_cls.tolist()))
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": ref.shape[0], "width": ref.shape[1]}],
        "categories": [{"id": int(c)} for c in cats],
        "annotations": [{"id": i, "image_id": 1, "category_id": int(ref_cls[i - 1]), "iscrowd": 0,
                         "area": float((ref == i).sum()), "segmentation": rle(ref == i), "bbox": [0, 0, 1, 1]}
                        for i in range(1, ref_cls.size + 1)],
    }
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": int(pred_cls[i - 1]), "segmentation": rle(pred == i),
                      "score": float(score[i - 1])} for i in range(1, pred_cls.size + 1)])
    ev = COCOeval(gt, dt, "segm")
    ev.params.maxDets = [1, 10, 100_000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (thresholds, recall points, classes)
    out = {}
    for k, c in enumerate(cats):
        p = prec[:, :, k]
        if (p > -1).any():
            out[int(c)] = (float(p[0].mean()), float(p[p > -1].mean()))
    return out


def brute_force_pq(pred: np.ndarray, ref: np.ndarray, pred_cls: np.ndarray, ref_cls: np.ndarray, c: int) -> tuple:
    """PQ, SQ, RQ of class ``c`` straight from the masks: every pair's IoU by set arithmetic."""
    ious = []
    matched_p, matched_r = set(), set()
    for i in range(1, pred_cls.size + 1):
        for j in range(1, ref_cls.size + 1):
            if pred_cls[i - 1] != c or ref_cls[j - 1] != c:
                continue
            a, b = pred == i, ref == j
            iou = (a & b).sum() / (a | b).sum()
            if iou > 0.5:
                ious.append(iou)
                matched_p.add(i)
                matched_r.add(j)
    tp = len(ious)
    fp = int((pred_cls == c).sum()) - len(matched_p)
    fn = int((ref_cls == c).sum()) - len(matched_r)
    d = tp + fp / 2 + fn / 2
    return sum(ious) / d, (sum(ious) / tp if tp else math.nan), tp / d
