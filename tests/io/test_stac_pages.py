"""One page of a STAC API search is refused: a mosaic of its items alone would silently cover part of the area."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.io.stac import load_items
from tests.fixtures import write_raster


def _item(folder, n: int) -> dict:
    write_raster(folder / f"red{n}.tif", np.full((8, 8), n + 1, np.uint16))
    return {"type": "Feature", "stac_version": "1.0.0", "id": f"s{n}", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"datetime": "2024-06-01T00:00:00Z"},
            "links": [], "assets": {"red": {"href": f"./red{n}.tif", "eo:bands": [{"name": "B04", "common_name": "red"}]}}}


def _collection(tmp_path, **extra) -> str:
    doc = {"type": "FeatureCollection", "features": [_item(tmp_path, n) for n in range(2)], **extra}
    (tmp_path / "search.json").write_text(json.dumps(doc))
    return str(tmp_path / "search.json")


@pytest.mark.parametrize("page", [
    {"links": [{"rel": "next", "href": "https://stac.example.org/search?token=abc", "method": "GET"}]},
    {"numberMatched": 5, "numberReturned": 2},
    {"context": {"matched": 7, "returned": 2, "limit": 2}},
])
def test_one_page_of_a_search_is_refused(tmp_path, page):
    with pytest.raises(InputError, match=r"is one page of a search \(it holds 2 .*\); geoseg reads no further pages"):
        load_items(_collection(tmp_path, **page))


def test_a_whole_search_is_read(tmp_path):
    whole = _collection(tmp_path, numberMatched=2, links=[{"rel": "self", "href": "https://stac.example.org/search"}])
    assert [item.id for item in load_items(whole)] == ["s0", "s1"]
