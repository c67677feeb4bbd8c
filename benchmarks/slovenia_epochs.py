"""Slovenia: the held-out test date scored after every epoch, beside the validation score that picks the epoch.

A diagnostic for issue 28's verdict, not a result of the recipe: ``bench_training.py`` scores one kept epoch
per seed, and on Slovenia the bar turns on 11 cultivated pixels. This trains the same default recipe and,
after each epoch's validation, labels the test date with the network of that epoch (``predict_chunk``, as a run
labels a scene), so one sees

* how often, epoch by epoch, the network gets any of the 11 test pixels (cultivated IoU > 0): the chance that
  whatever epoch is kept meets the bar on that class;
* whether the validation date's cultivated IoU says anything about the test date's (their rank correlation over
  the epochs): whether any way of choosing the epoch could do better.

It wraps the private ``geoseg.methods.training.loop._validate`` to add the test scores to each epoch's history
row; training itself is untouched (the same windows, steps and kept epoch as ``bench_training.py``).

    python benchmarks/slovenia_epochs.py --seeds 3 --threads 1 --json epochs.json
    python benchmarks/slovenia_epochs.py --slovenia-test 3 --first-seed 1 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_training import (
    DATASETS,
    SLOVENIA,
    SLOVENIA_DATES,
    _iou_table,
    _read,
    _slovenia,
    _value,
)

#: Epochs before this are warm-up (the one-cycle schedule's rising learning rate); the shares count the rest.
FIRST_COUNTED_EPOCH = 10


def run_seed(seed: int, test_date: int, folder: Path, tmp: Path,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    import geoseg.methods.training.loop as loop
    from geoseg.methods.deeplab import predict_chunk
    from geoseg.methods.training import TrainConfig, train

    pairs, val_pairs, test, classes = _slovenia(folder, test_date)
    epochs, steps = DATASETS["slovenia"]["steps"]
    cfg = TrainConfig(pairs=pairs, val_pairs=val_pairs, classes=classes, seed=seed, device="cpu", progress=False,
                      checkpoint=tmp / f"slovenia-{seed}" / "model", epochs=epochs, steps_per_epoch=steps,
                      **{**DATASETS["slovenia"]["settings"], **(overrides or {})})
    ids = [c.id for c in classes]
    band_names: list[str] = []
    test_pixels: dict[str, Any] = {}
    validate = loop._validate

    def validate_and_test(cfg, eng, data, meta):  # loop._validate's arguments
        row = validate(cfg, eng, data, meta)
        if not test_pixels:
            band_names.extend(meta.band_names)
            img, valid, ref = _read(*test, band_names)
            test_pixels.update(img=img, valid=valid, ref=ref)
        kept = eng.kept  # the network validation scored: the weight average where there is one
        kept.eval()  # validation left it so; the next epoch's training step sets train() again
        with torch.inference_mode():
            pred = predict_chunk(kept, meta, test_pixels["img"], test_pixels["valid"], device="cpu")
        row["test_iou"] = _iou_table(test_pixels["ref"], np.where(test_pixels["valid"], pred, 0), ids)
        return row

    loop._validate = validate_and_test
    try:
        t0 = time.process_time()
        result = train(cfg)
        cpu = time.process_time() - t0
    finally:
        loop._validate = validate
    names = [c.name for c in classes]
    rows = [{"epoch": h["epoch"], "val_miou_ema": h.get("val_miou_ema"),
             "val_iou": h.get("val_iou"), "test_iou": dict(zip(names, h["test_iou"]))} for h in result.history]
    return {"seed": seed, "test_date": test_date, "best_epoch": result.best_epoch, "cpu_s": cpu, "epochs": rows}


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def summary(run: dict[str, Any], cls: str = "cultivated") -> dict[str, Any]:
    """Over the counted epochs: the share where the test IoU of ``cls`` is above 0, the kept epoch's, and the rank
    correlation of the validation IoU of ``cls`` with the test IoU."""
    rows = [r for r in run["epochs"] if r["epoch"] >= FIRST_COUNTED_EPOCH]
    test = [r["test_iou"][cls] for r in rows]
    val = [(r["val_iou"] or {}).get(cls) or 0.0 for r in rows]
    kept = next(r for r in run["epochs"] if r["epoch"] == run["best_epoch"])
    return {
        "seed": run["seed"], "epochs_counted": len(rows),
        "share_above_0": float(np.mean([t > 0 for t in test])),
        "test_mean": float(np.mean(test)), "kept_epoch": run["best_epoch"], "kept_test": kept["test_iou"][cls],
        "spearman_val_test": _spearman(val, test),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--slovenia", type=Path, default=SLOVENIA.resolve(), help="folder of the Slovenia scenes")
    p.add_argument("--slovenia-test", type=int, default=4, choices=range(SLOVENIA_DATES))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig setting (JSON value), as bench_training.py's --set")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--combine", type=Path, nargs="+", default=None, help="only summarise earlier --json files")
    args = p.parse_args(argv)
    if args.combine:
        runs = [r for f in args.combine for r in json.loads(f.read_text())["runs"]]
    else:
        import torch

        torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory(prefix="slovenia_epochs_") as d:
            overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
            runs = [run_seed(s, args.slovenia_test, args.slovenia, Path(d), overrides)
                    for s in range(args.first_seed, args.first_seed + args.seeds)]
        if args.json:
            args.json.write_text(json.dumps({"runs": runs}, indent=1))
    print(f"| test date | seed | epochs {FIRST_COUNTED_EPOCH}+ with test cultivated > 0 | mean test cultivated | "
          "kept epoch | its test cultivated | rank correlation val / test cultivated |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        s = summary(run)
        print(f"| {run['test_date']} | {s['seed']} | {s['share_above_0']:.0%} of {s['epochs_counted']} | "
              f"{s['test_mean']:.3f} | {s['kept_epoch']} | {s['kept_test']:.3f} | {s['spearman_val_test']:.2f} |")


if __name__ == "__main__":
    main()
