"""The compiled k-means pass (features + nearest centroid + nodata in one loop) against the numpy
path it replaces and against scikit-learn on the same features."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.legend import NODATA_LABEL
from geoseg.methods.features import FeatureSpec
from geoseg.methods.kmeans import FUSED_MAX_FEATURES, fit_kmeans
from tests.fixtures import SPECTRA, blocky_classes

BANDS = ("blue", "green", "red", "nir")


def _scene(h: int = 96, w: int = 700, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued float32 bands like a decoded uint16 scene, some nodata, a width that is no
    multiple of the loop's 256-pixel segments."""
    classes = blocky_classes(h, w)
    rng = np.random.default_rng(seed)
    img = np.clip(np.round(SPECTRA[classes].transpose(2, 0, 1) + rng.normal(0, 80, (4, h, w))), 0, 65535)
    img = img.astype(np.float32)
    img[:, :3, :5] = 0  # all-zero pixels: indices divide by the epsilon only
    valid = rng.random((h, w)) > 0.05
    return img, valid


def _model(feats, img, valid, k: int = 6):
    sample = feats.compute(img)[:, valid].T[::5]
    return fit_kmeans(sample, k, 0, feats.names)


def _numpy_path(model, feats, img, valid, rows: int = 8) -> np.ndarray:
    """The labelling as it was before the compiled pass: blocks of rows, features then predict."""
    out = np.empty(valid.shape, np.uint8)
    for r0 in range(0, valid.shape[0], rows):
        out[r0:r0 + rows] = model.predict(feats.compute(img[:, r0:r0 + rows]), valid[r0:r0 + rows])
    return out


@pytest.mark.parametrize("spec", [
    FeatureSpec(indices=("ndvi", "ndwi")),
    FeatureSpec(bands=("red", "nir"), indices=("exg",)),
    FeatureSpec(indices=("ndwi", "exg", "ndvi")),
    FeatureSpec(bands=("green",)),
])
def test_the_compiled_pass_gives_the_numpy_paths_labels_bit_for_bit(spec):
    img, valid = _scene()
    feats = spec.resolve(BANDS)
    model = _model(feats, img, valid)
    assert model.fused_plan(feats) is not None
    got = model.predict_bands(img, valid, feats)
    want = _numpy_path(model, feats, img, valid)
    assert got.dtype == np.uint8 and got.shape == valid.shape
    assert (got[~valid] == NODATA_LABEL).all()
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got[valid])) == 6  # not a degenerate labelling


@pytest.mark.parametrize("spec", [FeatureSpec(), FeatureSpec(indices=("ndvi", "ndwi"))])
def test_near_ties_are_decided_as_the_numpy_path_decides_them(spec):
    """Pixels on the bisector between two centroids, where float32 rounding decides the label:
    the compiled pass must round exactly as the numpy path (a multiply-add fused or not flips many)."""
    img, valid = _scene()
    feats = spec.resolve(BANDS)
    model = _model(feats, img, valid)
    rng = np.random.default_rng(4)
    pairs = rng.integers(0, 6, size=(2, 40_000))
    pairs = pairs[:, pairs[0] != pairs[1]]
    mid = (model.centroids[pairs[0], :4] + model.centroids[pairs[1], :4]) / 2
    raw = np.round((mid * model.std[:4] + model.mean[:4]) * 16) / 16  # on the bisector in band space
    raw = raw + rng.normal(0, 0.5, raw.shape)
    x = feats.compute(raw.T[:, None, :].astype(np.float32))[:, 0].T.astype(np.float64)
    d = ((((x - model.mean) / model.std)[:, None, :] - model.centroids[None]) ** 2).sum(axis=2)
    d = np.sort(d, axis=1)
    closest = np.argsort(d[:, 1] - d[:, 0])[:8192]  # the nearest to a tie
    tied = raw[closest].T.reshape(4, 32, 256).astype(np.float32)
    ok = np.ones((32, 256), bool)
    np.testing.assert_array_equal(model.predict_bands(tied, ok, feats), _numpy_path(model, feats, tied, ok))


def test_the_compiled_pass_agrees_with_scikit_learn_on_the_same_features():
    from sklearn.metrics import pairwise_distances, pairwise_distances_argmin

    img, valid = _scene(seed=3)
    feats = FeatureSpec(indices=("ndvi", "ndwi")).resolve(BANDS)
    model = _model(feats, img, valid)
    got = model.predict_bands(img, valid, feats)[valid]
    x = feats.compute(img.astype(np.float64))[:, valid].T  # float64 features, standardised in float64
    z = (x - model.mean.astype(np.float64)) / model.std.astype(np.float64)
    centroids = model.centroids.astype(np.float64)
    want = pairwise_distances_argmin(z, centroids)
    d = np.sort(pairwise_distances(z, centroids, squared=True), axis=1)
    near_tie = (d[:, 1] - d[:, 0]) < 1e-4 * (1 + d[:, 1])  # float32 rounding may decide these
    assert near_tie.mean() < 1e-3
    np.testing.assert_array_equal(got[~near_tie], want[~near_tie])


def test_ties_go_to_the_lower_id_and_a_pixel_on_a_centroid_gets_that_centroid():
    from dataclasses import replace

    img, valid = _scene(h=16, w=300)
    feats = FeatureSpec(bands=("red", "nir")).resolve(BANDS)
    model = _model(feats, img, valid, k=3)
    centroids = model.centroids.copy()
    centroids[2] = centroids[0]  # a duplicate: id 2 must never win
    model = replace(model, centroids=centroids)
    on = centroids[1] * model.std + model.mean  # raw values of centroid 1
    img[2, 5, :10], img[3, 5, :10] = on[0], on[1]
    got = model.predict_bands(img, np.ones(valid.shape, bool), feats)
    np.testing.assert_array_equal(got, _numpy_path(model, feats, img, np.ones(valid.shape, bool)))
    assert 2 not in set(got.ravel().tolist())
    assert (got[5, :10] == 1).all()


def test_many_features_or_an_index_the_loop_does_not_know_keep_the_numpy_path(monkeypatch):
    from geoseg.methods import features as features_module

    names = tuple(f"b{i}" for i in range(FUSED_MAX_FEATURES + 1))
    feats = FeatureSpec().resolve(names)
    img = np.random.default_rng(1).random((len(names), 8, 40)).astype(np.float32)
    valid = np.ones((8, 40), bool)
    model = _model(feats, img, valid, k=3)
    assert model.fused_plan(feats) is None
    np.testing.assert_array_equal(model.predict_bands(img, valid, feats), _numpy_path(model, feats, img, valid))

    monkeypatch.setitem(features_module.INDICES, "sr", (("nir", "red"), lambda b: b["nir"] / (b["red"] + 1)))
    img, valid = _scene(h=8, w=40)
    feats = FeatureSpec(bands=("red",), indices=("sr",)).resolve(BANDS)
    model = _model(feats, img, valid, k=3)
    assert model.fused_plan(feats) is None
    np.testing.assert_array_equal(model.predict_bands(img, valid, feats), _numpy_path(model, feats, img, valid))


def test_label_counts_count_like_bincount():
    from geoseg._kernels.labelcount import label_counts

    labels = np.random.default_rng(2).integers(0, 256, size=(37, 41), dtype=np.uint8)
    labels[:10] = 7  # long runs of one bin
    np.testing.assert_array_equal(label_counts(labels), np.bincount(labels.ravel(), minlength=256))
    np.testing.assert_array_equal(label_counts(labels[:, ::3]), np.bincount(labels[:, ::3].ravel(), minlength=256))


def test_the_chunk_predictor_labels_with_the_compiled_pass_and_the_same_labels():
    from geoseg.geo import Window, halo_window
    from geoseg.methods.predictors import KMeansPredictor

    img, valid = _scene(h=40, w=300)
    feats = FeatureSpec(indices=("ndvi", "ndwi")).resolve(BANDS)
    model = _model(feats, img, valid)
    hw = halo_window(Window(0, 0, 40, 300), 0, (40, 300))
    got = KMeansPredictor(model, feats).predict(img, valid, hw)
    np.testing.assert_array_equal(got, _numpy_path(model, feats, img, valid))
