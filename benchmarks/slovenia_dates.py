"""How each Slovenia date shows each class: which of the benchmark's figures belong to the recipe, which to one date.

``bench_training.py`` holds out one date of the same square kilometre and scores every class on it. The cultivated
class is 11 pixels (four small RABA parcels) and scores 0 for every method on date 4. This script measures, per
date and without any network, whether that date's pixels can tell cultivated land from the rest at all:

* the mean NDVI of each class on each date (raw top-of-atmosphere reflectance), and cultivated minus grassland:
  a sign that changes between dates means the class's signature is inverted on some dates;
* an in-date leave-one-out: a random forest fitted on every other labelled pixel *of the same date* (13 bands
  and NDVI, each date standardised by itself) classifies each cultivated pixel in turn. This is far easier than
  the benchmark's task (the pixel's own field neighbours are in the training set), so a low recall here says the
  date's pixels barely hold the class.

    python benchmarks/slovenia_dates.py            # markdown table on stdout (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SLOVENIA = Path(os.environ.get("GEOSEG_REALDATA")
                or Path(__file__).resolve().parents[2] / "shared" / "realdata" / "slovenia")
#: Reference ids of the Slovenia land-use classes present on the sample.
CLASSES = {1: "cultivated", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial"}
#: The class whose pixels are left out one at a time.
PROBED = 1


def date_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, 14)`` features (13 bands and NDVI, standardised over the date) and the raw NDVI ``(h, w)``."""
    import rasterio

    with rasterio.open(path) as ds:
        names = list(ds.descriptions)
        x = ds.read().astype(np.float64)
    red, nir = x[names.index("B04")], x[names.index("B08")]
    ndvi = (nir - red) / (nir + red)
    f = np.concatenate([x, ndvi[None]]).reshape(x.shape[0] + 1, -1)
    f = (f - f.mean(axis=1, keepdims=True)) / f.std(axis=1, keepdims=True)
    return f.T, ndvi


def leave_one_out_recall(features: np.ndarray, labels: np.ndarray, probed: int, seed: int = 0) -> tuple[int, int]:
    """How many pixels of class ``probed`` a random forest fitted on every other labelled pixel calls ``probed``."""
    from sklearn.ensemble import RandomForestClassifier

    labelled = labels != 0
    hits, targets = 0, np.flatnonzero(labels == probed)
    for k in targets:
        train = labelled.copy()
        train[k] = False
        rf = RandomForestClassifier(100, n_jobs=-1, random_state=seed, class_weight="balanced")
        rf.fit(features[train], labels[train])
        hits += int(rf.predict(features[k : k + 1])[0] == probed)
    return hits, len(targets)


def main(argv: list[str] | None = None) -> list[dict]:
    import rasterio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slovenia", type=Path, default=SLOVENIA.resolve(), help="folder of the Slovenia scenes")
    args = p.parse_args(argv)
    with rasterio.open(args.slovenia / "lulc_reference.tif") as ds:
        ref = ds.read(1)
    rows = []
    for date in range(5):
        features, ndvi = date_features(args.slovenia / f"s2_l1c_reference_scene_{date}.tif")
        means = {name: float(ndvi[ref == cid].mean()) for cid, name in CLASSES.items()}
        hits, n = leave_one_out_recall(features, ref.ravel(), PROBED)
        rows.append({"date": date, "ndvi": means, "loo_hits": hits, "loo_n": n})
    print("| date | " + " | ".join(f"NDVI {name}" for name in CLASSES.values())
          + " | cultivated − grassland | cultivated pixels recalled (in-date leave-one-out) |")
    print("|---:|" + "---:|" * (len(CLASSES) + 2))
    for r in rows:
        m = r["ndvi"]
        print(f"| {r['date']} | " + " | ".join(f"{m[name]:.2f}" for name in CLASSES.values())
              + f" | {m['cultivated'] - m['grassland']:+.2f} | {r['loo_hits']} of {r['loo_n']} |")
    return rows


if __name__ == "__main__":
    main()
