"""Indices over bands: recorded band positions rebuild the same index; network channels are standardised and finite."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import BandRoleError, InputError
from geoseg.io.bandroles import BandInfo
from geoseg.methods.indices import index_channels, resolve_index

#: A scene whose roles come from the data, not from the names (an RGB orthophoto plus a NIR band).
SCENE = (BandInfo("b1", role="red"), BandInfo("b2", role="green"), BandInfo("b3", role="blue"),
         BandInfo("b4", role="nir"))


@pytest.mark.parametrize("text", ["exg", "NDVI", "nir", "(nir - red) / (nir + red) * 2 - 0.5", "b4 - red"])
def test_an_index_rebuilt_from_its_recorded_positions_is_the_same(text):
    data = np.random.default_rng(0).uniform(1, 255, (4, 6, 7)).astype(np.float32)
    index = resolve_index(text, SCENE)
    again = resolve_index(text, dict(index.refs))  # what a checkpoint stores, without the scene
    assert again.refs == index.refs and again.text == index.text
    np.testing.assert_array_equal(again.compute(data), index.compute(data))


def test_refs_name_each_role_or_band_once_in_order():
    assert resolve_index("ndvi", SCENE).refs == (("nir", 3), ("red", 0))
    assert resolve_index("(nir - red) / (nir + red)", SCENE).refs == (("nir", 3), ("red", 0))
    with pytest.raises(BandRoleError, match="'nir'"):
        resolve_index("ndvi", SCENE[:3])
    with pytest.raises(InputError, match="no recorded position"):
        resolve_index("nir - blue", {"nir": 3})


def test_index_channels_are_standardised_with_0_where_undefined_or_invalid():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (4, 5, 6)).astype(np.float32)
    img[:3, 0, 0] = 0  # a black pixel: the named ExG adds 1e-6 to its denominator (as k-means and thresholds do)
    img[3, 0, 1], img[0, 0, 1] = 0, 0  # NIR + red = 0: the expression is 0/0 there
    valid = np.ones((5, 6), bool)
    valid[4, 5] = False
    r, g, b, n = (img[i].astype(np.float64) for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        exg = (2 * g - r - b) / (r + g + b + 1e-6)
        ndvi = (n - r) / (n + r)
    got = index_channels(img, valid, [resolve_index("exg", SCENE), resolve_index("(nir - red) / (nir + red)", SCENE)],
                         [0.1, 0.2], [0.5, 0.25])
    want = np.stack([(exg - 0.1) / 0.5, (ndvi - 0.2) / 0.25])
    want[:, ~valid] = 0
    want[~np.isfinite(want)] = 0
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert got[0, 0, 0] == pytest.approx(-0.2) and got[1, 0, 1] == 0 and (got[:, 4, 5] == 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
