"""Does the training recipe earn its cost? The network against index + Otsu and k-means on held-out test pixels.

Two datasets, N seeds each, the default recipe of :class:`geoseg.methods.training.TrainConfig` plus the
few settings a dataset needs (classes, tile size, ``--set`` overrides):

* ``cropweed``: the generated crop/weed scene (:func:`geoseg.samples.files.make_scene`), one scene
  (seed 0) trains, a second (seed 1) validates, a third (seed 2) is the test scene.
* ``slovenia``: the real Sentinel-2 scenes in ``../shared/realdata/slovenia`` (read in place): scenes
  0-2 train, scene 3 validates, scene 4 (another date of the same square kilometre) is the test scene;
  the land-use reference is the same raster for all five dates. ``--slovenia-test D`` holds out date ``D``
  instead (the date before it validates, the other three train): run every date to see which results
  belong to the recipe and which to one date.

The baselines are fitted on the training pixels and their outputs mapped to classes by majority on
the training pixels (:mod:`geoseg.methods.training.baselines`), then scored on the test pixels, as
the network is (``predict_chunk`` over the whole test scene). CPU time is the training process's
``time.process_time`` (all threads) of each ``train`` call; wall time and the load average are
recorded beside it because the machine is shared.

    python benchmarks/bench_training.py --seeds 3 --json /tmp/bench_training.json
    python benchmarks/bench_training.py --seeds 3 --quick          # a short run (fewer steps)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: ``../shared/realdata/slovenia`` beside the repository, or where ``$GEOSEG_REALDATA`` says (as the tests find it)
SLOVENIA = Path(os.environ.get("GEOSEG_REALDATA")
                or Path(__file__).resolve().parents[2] / "shared" / "realdata" / "slovenia")
#: A class with fewer test pixels than this is reported but marked: its IoU stands on a handful of pixels.
RARE_PX = 100

#: Per dataset what the data needs beside TrainConfig's defaults: the tile (objects and scene size), the index
#: channel its bands allow (NDVI: both have nir and red; Sentinel-2 band names carry no roles here, so by name),
#: and (epochs, steps per epoch) of a full and a quick run.
DATASETS: dict[str, dict[str, Any]] = {
    "cropweed": {"settings": {"tile_size": 96, "index_channels": ["ndvi"]},
                 "steps": (48, 24), "quick_steps": (3, 6)},
    "slovenia": {"settings": {"tile_size": 64, "index_channels": ["(B08 - B04) / (B08 + B04)"]},
                 "steps": (40, 24), "quick_steps": (3, 6)},
}


def _cropweed(tmp: Path, size: int) -> tuple[list, list, tuple[Path, Path], list]:
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.training import TrainPair
    from geoseg.samples.files import make_scene

    scenes = [make_scene("cropweed", tmp / f"cw{s}", width=size, height=size, seed=s, block=256) for s in range(3)]
    pair = lambda f: TrainPair(image=f.image, reference=f.reference)  # noqa: E731
    return [pair(scenes[0])], [pair(scenes[1])], (scenes[2].image, scenes[2].reference), list(CROPWEED_CLASSES)


#: The Slovenia dates: five scenes of the same square kilometre.
SLOVENIA_DATES = 5


def _slovenia(folder: Path, test: int = 4) -> tuple[list, list, tuple[Path, Path], list]:
    """Date ``test`` is the test scene, the date before it (cyclically) validates, the other three train."""
    import rasterio

    from geoseg.legend import ClassInfo
    from geoseg.methods.training import TrainPair

    ref = folder / "lulc_reference.tif"
    names = {1: "cultivated", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial"}
    colours = ["#ffff00", "#054907", "#ffa500", "#806000", "#dc143c"]
    with rasterio.open(ref) as ds:
        present = sorted(int(v) for v in np.unique(ds.read(1)) if v != 0)
    classes = [ClassInfo(i, names.get(i, f"class_{i}"), colours[k % len(colours)]) for k, i in enumerate(present)]
    scene = lambda i: folder / f"s2_l1c_reference_scene_{i}.tif"  # noqa: E731
    val = (test - 1) % SLOVENIA_DATES
    train = [i for i in range(SLOVENIA_DATES) if i not in (test, val)]
    return ([TrainPair(image=scene(i), reference=ref) for i in train], [TrainPair(image=scene(val), reference=ref)],
            (scene(test), ref), classes)


def _read(image: Path, reference: Path, bands: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import rasterio

    with rasterio.open(image) as ds:
        names = [d or f"b{i + 1}" for i, d in enumerate(ds.descriptions)]
        img = ds.read([names.index(b) + 1 for b in bands]).astype(np.float32)
    with rasterio.open(reference) as ds:
        ref = ds.read(1)
    valid = np.isfinite(img).all(axis=0)
    return img, valid, ref


def _iou_table(ref: np.ndarray, pred: np.ndarray, ids: list[int]) -> list[float]:
    """IoU per class id over the labelled pixels (pred may hold ids of no class: they count as wrong)."""
    m = ref != 0
    r, p = ref[m], pred[m]
    out = []
    for c in ids:
        inter = np.sum((r == c) & (p == c))
        union = np.sum((r == c) | (p == c))
        out.append(float(inter / union) if union else math.nan)
    return out


def run_one(name: str, tmp: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from geoseg.methods.checkpoint import load_checkpoint
    from geoseg.methods.deeplab import predict_chunk
    from geoseg.methods.scenestats import NetworkChannels, image_statistics
    from geoseg.methods.training import TrainConfig, train
    from geoseg.methods.training.baselines import kmeans_per_scene_baseline, score_baselines, standardised

    spec = DATASETS[name]
    if name == "cropweed":
        pairs, val_pairs, test, classes = _cropweed(tmp / "data", args.size)
    else:
        pairs, val_pairs, test, classes = _slovenia(args.slovenia, args.slovenia_test)
    epochs, steps = spec["quick_steps"] if args.quick else spec["steps"]
    settings: dict[str, Any] = {**spec["settings"], "epochs": epochs, "steps_per_epoch": steps}
    settings.update(args.overrides)
    cfg = TrainConfig(pairs=pairs, val_pairs=val_pairs, classes=classes, seed=seed, device="cpu", progress=False,
                      checkpoint=tmp / f"{name}-{seed}" / "model", **settings)
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    load1 = os.getloadavg()

    # the held-out test scene: network and baselines on the same labelled pixels
    model, meta = load_checkpoint(cfg.checkpoint)
    img, valid, ref = _read(*test, meta.band_names)
    with torch.inference_mode():
        pred = predict_chunk(model, meta, img, valid, device="cpu")
    ids = [c.id for c in classes]
    lut = np.full(256, 255, np.uint8)
    for k, c in enumerate(ids):
        lut[c] = k
    target = lut[ref]
    target[~valid] = 255
    # baselines fitted on the training scenes' pixels (whole rasters: they are small), scored on the test scene
    train_tiles = [_read(p.image, p.reference, meta.band_names) for p in pairs]
    train_tiles = [(i, v, np.where(v, lut[r], 255).astype(np.uint8)) for i, v, r in train_tiles]
    names = [c.name for c in classes]
    base = score_baselines(meta.band_names, train_tiles, [(img, valid, target)], names, seed)
    if meta.normalisation == "scene":  # the network sees each scene standardised: so does a k-means beside it
        own = [standardised(t, *image_statistics(t[0], t[1], NetworkChannels(t[0].shape[0])))
               for t in [*train_tiles, (img, valid, target)]]
        base.append(kmeans_per_scene_baseline(meta.band_names, own[:-1], own[-1:], names, seed))
    rows = {"network": _iou_table(ref, np.where(valid, pred, 0), ids)}
    unlike = None  # how far the test scene lies from the training images (geoseg.methods.familiarity)
    if meta.training_envelope is not None:
        from geoseg.methods.familiarity import familiarity

        known = familiarity(meta.training_envelope, image_statistics(img, valid, NetworkChannels(
            img.shape[0], meta.indices()))[0])
        far = int(np.argmax(known.distance))
        unlike = {"channel": meta.training_envelope.channels[far], "distance": known.distance[far],
                  "unfamiliar": known.unfamiliar}
    for b in base:
        rows[b.name] = [float(v) for v in b.iou]
    support = {c.name: int(np.sum((ref == c.id) & valid)) for c in classes}
    label = name if name != "slovenia" or args.slovenia_test == 4 else f"slovenia, test date {args.slovenia_test}"
    return {
        "dataset": label, "seed": seed, "classes": [c.name for c in classes], "test_px": support,
        "iou": rows, "cpu_s": cpu, "cpu_s_train": result.cpu_seconds, "wall_s": wall,
        "load_before": load0, "load_after": load1, "best_epoch": result.best_epoch,
        "val_miou": result.best_val_miou, "settings": settings,
        "val_baselines": {b.name: b.miou for b in result.baselines}, "test_familiarity": unlike,
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_miou", "val_miou_ema")} for h in result.history],
    }


def verdict(runs: list[dict[str, Any]], cpu_limit_s: float) -> list[str]:
    """Lines saying, per dataset, whether the network beat every baseline on every class in every seed."""
    out = []
    for name in sorted({r["dataset"] for r in runs}):
        rs = [r for r in runs if r["dataset"] == name]
        wins = 0
        for r in rs:
            lost = []
            for k, cls in enumerate(r["classes"]):
                net = r["iou"]["network"][k]
                for b, iou in r["iou"].items():
                    if b != "network" and not (net > iou[k]):
                        rare = " (rare)" if r["test_px"][cls] < RARE_PX else ""
                        lost.append(f"{cls}{rare}: network {net:.3f} <= {b} {iou[k]:.3f}")
            slow = r["cpu_s"] > cpu_limit_s
            if not lost and not slow:
                wins += 1
            out.append(f"{name} seed {r['seed']}: " + ("beats every baseline on every class" if not lost else
                       "; ".join(lost)) + f"; {r['cpu_s'] / 60:.2f} CPU min" + (" (over the limit)" if slow else ""))
        out.append(f"{name}: {wins} of {len(rs)} seeds meet the bar")
    return out


def markdown(runs: list[dict[str, Any]]) -> str:
    """Per dataset: IoU per class and method, mean ± sd over seeds, min-max; CPU and wall minutes."""
    lines = []
    for name in sorted({r["dataset"] for r in runs}):
        rs = [r for r in runs if r["dataset"] == name]
        classes = rs[0]["classes"]
        px = rs[0]["test_px"]
        lines.append(f"\n### {name} ({len(rs)} seeds)\n")
        lines.append("| method | " + " | ".join(f"{c} ({px[c]} px{', rare' if px[c] < RARE_PX else ''})"
                                                for c in classes) + " |")
        lines.append("|---|" + "---:|" * len(classes))
        for method in rs[0]["iou"]:
            cells = []
            for k in range(len(classes)):
                v = np.array([r["iou"][method][k] for r in rs])
                cells.append(f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f} ({np.nanmin(v):.3f}–{np.nanmax(v):.3f})"
                             if method == "network" else f"{np.nanmean(v):.3f}" + (
                                 f" ({np.nanmin(v):.3f}–{np.nanmax(v):.3f})" if np.ptp(v) > 0 else ""))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        cpu = [r["cpu_s"] / 60 for r in rs]
        wall = [r["wall_s"] / 60 for r in rs]
        load = [x for r in rs for x in (r["load_before"][0], r["load_after"][0])]
        lines.append(f"\nCPU minutes of training per seed: {', '.join(f'{c:.2f}' for c in cpu)}; wall minutes: "
                     f"{', '.join(f'{w:.2f}' for w in wall)}; 1-min load average {min(load):.1f}–{max(load):.1f}.")
        lines.append("Kept epochs: " + ", ".join(str(r["best_epoch"]) for r in rs) + ".")
        far = [r["test_familiarity"] for r in rs if r.get("test_familiarity")]
        if far:
            lines.append("Test scene against the training images (farthest channel, in within-image stds): "
                         + ", ".join(f"{f['channel']} {f['distance']:.1f}" for f in far)
                         + ("; **unfamiliar**: warned at inference" if any(f["unfamiliar"] for f in far) else "") + ".")
    return "\n".join(lines)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--datasets", default="cropweed,slovenia")
    p.add_argument("--quick", action="store_true", help="fewer steps: a short run that shows the machinery works")
    p.add_argument("--size", type=int, default=512, help="side of each generated crop/weed scene (px)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--cpu-limit-min", type=float, default=10.0, help="CPU minutes of training the bar allows")
    p.add_argument("--slovenia", type=Path, default=SLOVENIA.resolve(), help="folder of the Slovenia scenes")
    p.add_argument("--slovenia-test", type=int, default=4, choices=range(SLOVENIA_DATES),
                   help="the Slovenia date held out for the test (the date before it validates)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig setting (JSON value), e.g. --set encoder=\\\"mobilenet_v2\\\"")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--combine", type=Path, nargs="+", default=None,
                   help="only print the tables and verdict of earlier --json files together (seeds run in parallel)")
    args = p.parse_args(argv)
    args.overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.combine:
        parts = [json.loads(f.read_text()) for f in args.combine]
        runs = [r for part in parts for r in part["runs"]]
        out = {**parts[0], "command": [part["command"] for part in parts], "runs": runs,
               "verdict": verdict(runs, args.cpu_limit_min * 60)}
        print(markdown(runs))
        print("\n".join(out["verdict"]))
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return out

    import torch

    torch.set_num_threads(args.threads)
    names = [n for n in args.datasets.split(",") if n]
    if "slovenia" in names and not args.slovenia.is_dir():
        print(f"no Slovenia data at {args.slovenia}; skipping it", file=sys.stderr)
        names.remove("slovenia")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_training_") as d:
        for name in names:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                r = run_one(name, Path(d), seed, args)
                runs.append(r)
                print(json.dumps({k: r[k] for k in ("dataset", "seed", "iou", "cpu_s", "wall_s", "best_epoch")}),
                      flush=True)
    out = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "torch": torch.__version__, "threads": args.threads, "command": " ".join(sys.argv),
        "runs": runs, "verdict": verdict(runs, args.cpu_limit_min * 60),
    }
    print(markdown(runs))
    print("\n".join(out["verdict"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
