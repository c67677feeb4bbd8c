"""Objects chosen by class name: labels mapped to one class (two k-means clusters, both "tree") are one object class."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from geoseg.accuracy.objectstats import object_classes, run_objects_stage
from geoseg.errors import InputError
from geoseg.legend import ClassInfo
from tests.fixtures import write_store

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
LEGEND = (ClassInfo(0, "water", "#2166ac"), ClassInfo(1, "tree", "#1b7837"), ClassInfo(2, "tree", "#1b7837"),
          ClassInfo(3, "grass", "#a6d96a"))


def test_two_labels_of_one_class_make_one_object_class(tmp_path):
    rng = np.random.default_rng(4)
    labels = np.kron(rng.integers(0, 4, (12, 14)), np.ones((8, 8), int)).astype(np.uint8)
    store = write_store(tmp_path / "labels.zarr", labels, 40, legend=LEGEND)
    classes, groups, names = object_classes(["tree"], LEGEND, {"tree": 7})
    out = run_objects_stage(store, tmp_path, classes, instance_raster=True, groups=groups, names=names)
    rows = list(csv.DictReader(out["objects"].read_text().splitlines()))
    want, n = ndimage.label(np.isin(labels, [1, 2]), structure=FOUR)  # the oracle: both labels as one mask
    assert rows[0]["class_id"] == "7" and rows[0]["class_name"] == "tree" and int(rows[0]["objects"]) == n
    _, n_apart = ndimage.label(labels == 1, structure=FOUR)
    assert n < n_apart + ndimage.label(labels == 2, structure=FOUR)[1]  # touching clusters were merged
    with rasterio.open(out["instances"]) as ds:
        inst = ds.read(1)
    assert ((inst > 0) == (want > 0)).all() and len(np.unique(inst[inst > 0])) == n


def test_object_classes_are_refused_when_unknown_or_repeated():
    with pytest.raises(InputError, match="no label is named 'shrub'; the labels' classes are grass, tree, water"):
        object_classes(["shrub"], LEGEND, {})
    with pytest.raises(InputError, match="list each class once"):
        object_classes(["tree", 1], LEGEND, {})
