"""Evaluation options: one object, checked once at the entry, the same figures as the keyword call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.accuracy.evaluate import EvaluationOptions, evaluate
from geoseg.errors import ClassIdError, InputError
from tests.fixtures import blocky_classes, write_raster, write_regions, write_store


def test_options_are_normalised_once_and_refuse_what_is_ambiguous():
    opts = EvaluationOptions.coerce(regions=Path("r.gpkg"), grid_cell_m=None, class_names={"1": "crop"})
    assert opts.regions == "r.gpkg" and opts.class_names == {1: "crop"}
    assert EvaluationOptions.coerce(opts) is opts  # already an options object: passed on as it is
    assert EvaluationOptions.coerce(opts, mapping="hungarian").mapping == "hungarian"
    assert EvaluationOptions.coerce({"region_field": "id", "regions": "r.gpkg"}).region_field == "id"
    with pytest.raises(TypeError, match="unknown option.*regoins.*options are: .*regions"):
        EvaluationOptions.coerce(regoins="r.gpkg")
    with pytest.raises(InputError, match="not both"):
        EvaluationOptions(regions="r.gpkg", grid_cell_m=100)
    with pytest.raises(InputError, match="region_field needs a regions layer"):
        EvaluationOptions(region_field="id")
    with pytest.raises(ClassIdError):
        EvaluationOptions(mapping="best")


def test_an_options_object_and_keywords_give_the_same_evaluation(tmp_path):
    labels = blocky_classes(96, 80, cell=13).astype(np.uint8) % 4 + 1
    store = write_store(tmp_path / "labels.zarr", labels, 32)
    reference = labels.copy()
    reference[::7] = 3
    ref = write_raster(tmp_path / "ref.tif", reference, nodata=0)
    regions = write_regions(tmp_path / "regions.gpkg", [(0, 0, 50, 40), (30, 20, 96, 80)], [7, 8])
    keywords = dict(regions=regions, region_field="zone", mapping="hungarian")
    by_keywords = evaluate(store, ref, **keywords)
    by_object = evaluate(store, ref, EvaluationOptions(**keywords))
    assert by_object.metrics().equals(by_keywords.metrics())
    assert by_object.mapping == by_keywords.mapping
    with pytest.raises(TypeError, match="unknown option"):
        evaluate(store, ref, region_feild="zone")
