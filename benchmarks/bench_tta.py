"""Test-time augmentation on the generated crop/weed scene: held-out IoU and inference cost per ``tta`` mode.

Trains a small DeepLabV3+ on CPU (as ``tests/methods/test_training.py`` does, on the top rows
of the scene; the bottom ``val_fraction`` rows are never seen in training), then predicts those
held-out rows with :func:`geoseg.methods.deeplab.predict_chunk` once per mode (``none``,
``flips``, ``d4``) and scores soil/crop/weed IoU with scikit-learn's ``jaccard_score``. The
wall time is of inference only (best of ``--repeat``), so the cost ratio is TTA's own.

    python benchmarks/bench_tta.py --size 768 --epochs 6 --threads 1 --json out/bench_tta.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    """Train once, infer per TTA mode, print and optionally write the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=768, help="scene width = height (px)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps-per-epoch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--repeat", type=int, default=1, help="inference runs per mode (best time kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="none,flips,d4")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import rasterio
    import torch
    from sklearn.metrics import jaccard_score

    from benchmarks.bench_deeplab import machine
    from geoseg.legend import CROPWEED_CLASSES
    from geoseg.methods.checkpoint import load_checkpoint
    from geoseg.methods.deeplab import predict_chunk
    from geoseg.methods.training import TrainConfig, TrainPair, train
    from geoseg.samples.synthetic import make_scene

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    val_fraction = 0.25
    with tempfile.TemporaryDirectory() as tmp:
        files = make_scene("cropweed", Path(tmp) / "cw", width=args.size, height=args.size, seed=args.seed,
                           block=256)
        cfg = TrainConfig(
            pairs=[TrainPair(image=files.image, reference=files.reference)], classes=list(CROPWEED_CLASSES),
            encoder="resnet18", encoder_depth=3, decoder_channels=32, tile_size=96, tile_overlap=24,
            batch_size=8, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, lr=1e-3,
            val_fraction=val_fraction, val_tiles=24, norm_windows=8, checkpoint=Path(tmp) / "model",
            seed=args.seed, progress=False,
        )
        t0 = time.perf_counter()
        result = train(cfg)
        t_train = time.perf_counter() - t0
        with rasterio.open(files.image) as ds:
            img = ds.read().astype(np.float32)
        with rasterio.open(files.reference) as ds:
            ref = ds.read(1)
        model, meta = load_checkpoint(cfg.checkpoint)
    split = args.size - int(round(args.size * val_fraction))
    held = img[:, split:]
    valid = np.ones(held.shape[1:], bool)
    rows = []
    for mode in args.modes.split(","):
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            pred = predict_chunk(model, meta, held, valid, origin=(split, 0), device="cpu", batch_size=8, tta=mode)
            best = min(best, time.perf_counter() - t0)
        assert isinstance(pred, np.ndarray)  # labels only (no confidence asked)
        iou = jaccard_score(ref[split:].ravel(), pred.ravel(), labels=[1, 2, 3], average=None)
        rows.append({"tta": mode, "soil_iou": float(iou[0]), "crop_iou": float(iou[1]),
                     "weed_iou": float(iou[2]), "miou": float(iou.mean()), "infer_s": best,
                     "mpx_s": held.shape[1] * held.shape[2] / best / 1e6})
    base = rows[0]["infer_s"]
    for r in rows:
        r["cost_x"] = r["infer_s"] / base
    out = {"size": args.size, "held_out_rows": [split, args.size], "epochs": args.epochs,
           "steps_per_epoch": args.steps_per_epoch, "best_epoch": result.best_epoch, "train_s": t_train,
           "threads": args.threads, "repeat": args.repeat, "machine": machine(), "modes": rows}
    print(f"trained {t_train:.0f} s (best epoch {result.best_epoch}); held-out rows {split}..{args.size}")
    print("| tta | soil IoU | crop IoU | weed IoU | mIoU | inference s | cost |")
    for r in rows:
        print(f"| {r['tta']} | {r['soil_iou']:.3f} | {r['crop_iou']:.3f} | {r['weed_iou']:.3f} | {r['miou']:.3f} "
              f"| {r['infer_s']:.1f} | {r['cost_x']:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
