"""Vectorising options: one object, checked once at the entry, the same polygons as the keyword call."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest

from geoseg.errors import JobSpecError
from geoseg.vector.options import VectorizeOptions
from geoseg.vector.vectorize import vectorize_labels
from tests.fixtures import blocky_classes, write_store


def test_options_are_normalised_once():
    opts = VectorizeOptions.coerce(skip_classes=[3, 255, 3], min_mapping_unit_px=4)
    assert opts.skip_classes == (3, 255) and opts.halo_px == 4
    assert VectorizeOptions.coerce(opts) is opts
    assert VectorizeOptions.coerce(opts, sieve_halo_px=9).halo_px == 9
    with pytest.raises(TypeError, match="unknown option.*tile_size"):
        VectorizeOptions.coerce(tile_size=64)
    with pytest.raises(JobSpecError, match="tile_px must be at least 16"):
        VectorizeOptions(tile_px=8)
    with pytest.raises(JobSpecError, match="threads must be at least 1"):
        VectorizeOptions(threads=0)


def test_an_options_object_and_keywords_write_the_same_polygons(tmp_path):
    labels = blocky_classes(90, 70, cell=11).astype(np.uint8) % 5
    store = write_store(tmp_path / "labels.zarr", labels, 32)
    keywords = dict(skip_classes=[0, 255], layout="per_class", threads=1)
    a = vectorize_labels(store, tmp_path / "a.gpkg", **keywords)
    b = vectorize_labels(store, tmp_path / "b.gpkg", VectorizeOptions(**keywords))
    assert a.layers == b.layers and a.counts == b.counts and a.n_features > 0 and 0 not in a.counts
    for layer in a.layers:
        da = pyogrio.read_dataframe(tmp_path / "a.gpkg", layer=layer)
        db = pyogrio.read_dataframe(tmp_path / "b.gpkg", layer=layer)
        assert da.geometry.to_wkb().tolist() == db.geometry.to_wkb().tolist()
