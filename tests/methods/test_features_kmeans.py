"""Features, sampling and the k-means model on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.legend import NODATA_LABEL
from geoseg.methods.features import FeatureSpec
from geoseg.methods.kmeans import fit_kmeans
from geoseg.methods.sampling import chunk_rng, sample_valid_pixels
from geoseg.methods.threshold import resolve_index
from tests.fixtures import SPECTRA, blocky_classes

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


def test_indices_use_bands_found_by_name():
    feats = FeatureSpec(bands=("B04", "B08"), indices=("ndvi",)).resolve(S2_BANDS)
    data = np.zeros((13, 1, 2), np.float32)
    data[3] = [[0.1, 0.3]]  # red
    data[7] = [[0.5, 0.3]]  # nir
    out = feats.compute(data)
    assert feats.names == ("B04", "B08", "ndvi")
    np.testing.assert_allclose(out[2, 0], [(0.5 - 0.1) / 0.6, 0.0], atol=1e-5)


def test_missing_band_role_is_a_clear_error():
    with pytest.raises(InputError, match="nir"):
        FeatureSpec(indices=("ndvi",)).resolve(("red", "green", "blue"))


def test_sample_is_proportional_to_valid_pixels_and_seeded():
    f = np.random.default_rng(0).normal(size=(3, 100, 100)).astype(np.float32)
    valid = np.zeros((100, 100), bool)
    valid[:50] = True
    w = Window(0, 0, 100, 100)
    a = sample_valid_pixels(f, valid, 0.1, chunk_rng(7, w))
    b = sample_valid_pixels(f, valid, 0.1, chunk_rng(7, w))
    c = sample_valid_pixels(f, valid, 0.1, chunk_rng(8, w))
    assert a.shape == (500, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_features_of_the_drawn_pixels_equal_the_whole_windows_features_at_those_pixels():
    """The sample computes features only for the pixels it draws (~1 % of a block): the same values as
    computing the window's features and picking the pixels, bit for bit (NaN where 0/0)."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 3000, (4, 90, 110)).astype(np.float32)
    data[:, :5, :5] = 0  # 0/0 in every index
    valid = rng.random((90, 110)) < 0.7
    feats_bands = ("blue", "green", "red", "nir")
    feats = FeatureSpec(indices=("ndvi", "ndwi", "exg")).resolve(feats_bands)
    w = Window(0, 0, 90, 110)
    flat_valid = np.flatnonzero(valid)
    picked = np.sort(chunk_rng(5, w).choice(flat_valid, size=round(0.2 * flat_valid.size), replace=False))
    # the k-means features, and a threshold job's band expression (its sample goes the same way)
    for compute in (feats.compute, resolve_index("(nir - red) / (nir + red) * 2 - 0.5", feats_bands).compute):
        drawn = sample_valid_pixels(data, valid, 0.2, chunk_rng(5, w), compute)
        whole = compute(data)
        expected = whole.reshape(whole.shape[0], -1)[:, picked].T
        assert drawn.dtype == np.float32 and drawn.shape == expected.shape
        np.testing.assert_array_equal(drawn, expected)
    assert np.isnan(drawn).any()  # 0/0 in the corner, where a NaN equals a NaN


def _features(seed: int = 0):
    classes = blocky_classes(120, 150)
    rng = np.random.default_rng(seed)
    img = (SPECTRA[classes].transpose(2, 0, 1) + rng.normal(0, 50, (4, 120, 150))).astype(np.float32)
    return img, classes


def assert_recovers_classes(truth: np.ndarray, labels: np.ndarray, n: int, min_accuracy: float = 0.999) -> None:
    """The labelling is a bijection between the ``n`` true classes and ``n`` distinct cluster ids,
    and the best one-to-one mapping (scipy's Hungarian assignment on the confusion matrix, not
    geoseg's) labels at least ``min_accuracy`` of the pixels right. A constant labelling fails."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    assert sorted(np.unique(truth).tolist()) == list(range(n))
    assert len(np.unique(labels)) == n, f"{len(np.unique(labels))} distinct labels for {n} classes"
    ids = np.unique(labels)
    cm = confusion_matrix(truth, np.searchsorted(ids, labels), labels=list(range(n)))
    rows, cols = linear_sum_assignment(cm, maximize=True)
    assert (cm.argmax(axis=1) == cols[np.argsort(rows)]).all(), f"two classes share a cluster:\n{cm}"
    assert len(set(cm.argmax(axis=1).tolist())) == n, cm
    accuracy = cm[rows, cols].sum() / cm.sum()
    assert accuracy >= min_accuracy, f"accuracy {accuracy:.4f} under the best mapping:\n{cm}"


def test_kmeans_recovers_classes_deterministically_with_ordered_ids():
    img, classes = _features()
    sample = img.reshape(4, -1).T[::7]
    m1 = fit_kmeans(sample, 4, seed=3, feature_names=("b", "g", "r", "n"))
    m2 = fit_kmeans(sample, 4, seed=3, feature_names=("b", "g", "r", "n"))
    np.testing.assert_array_equal(m1.centroids, m2.centroids)
    assert np.all(np.diff(m1.centroids.mean(axis=1)) >= 0)  # ordered dark to bright
    valid = np.ones(classes.shape, bool)
    valid[0, :5] = False
    labels = m1.predict(img, valid)
    assert (labels[0, :5] == NODATA_LABEL).all()
    # each true class maps to exactly one cluster
    pairs = {(int(c), int(lbl)) for c, lbl in zip(classes[valid], labels[valid])}
    assert len(pairs) == 4
    assert_recovers_classes(classes[valid], labels[valid], 4)


def test_kmeans_refuses_tiny_samples():
    with pytest.raises(InputError, match="valid pixels"):
        fit_kmeans(np.zeros((3, 2)), 6, 0, ("a", "b"))


def test_nearest_centroid_equals_argmin_of_full_distance_with_ties_to_lower_index():
    from geoseg.methods.kmeans import nearest_centroid

    rng = np.random.default_rng(5)
    centroids = rng.normal(size=(7, 5)).astype(np.float32)
    z = rng.normal(size=(5, 20_000)).astype(np.float32)
    centroids[6] = centroids[2]  # a duplicate centroid: the tie must go to id 2
    z[:, :7] = centroids.T  # pixels exactly on a centroid
    expected = np.argmin(((centroids[:, :, None] - z[None]) ** 2).sum(axis=1), axis=0)
    got = nearest_centroid(z, centroids)
    assert got.dtype == np.uint8
    assert got[2] == 2 and got[6] == 2 and 6 not in set(got.tolist())
    assert (got == expected).mean() > 0.9999  # float32 rounding may flip a near-tie, nothing more


def test_large_scenes_read_fewer_blocks_for_the_sample_but_every_chunk_contributes():
    from geoseg.methods.sampling import (
        MIN_SAMPLE_BLOCKS,
        sample_block_fraction,
        sample_windows,
        sampling_rate,
    )

    small = sample_block_fraction(sampling_rate(200_000, 2048 * 2048), 16)  # one chunk of 16 blocks: all read
    mid = sample_block_fraction(sampling_rate(200_000, 8000 * 8000), 256)  # 16 chunks: 64 blocks, 4 per chunk
    large = sample_block_fraction(sampling_rate(200_000, 20_000 * 20_000), 1600)
    assert small == 1.0 and mid * 256 == MIN_SAMPLE_BLOCKS and large < 0.05
    chunk = Window(0, 0, 2048, 2048)
    parts = sample_windows(chunk, (512, 512), large, np.random.default_rng(0))
    assert len(parts) == 1 and parts[0].height == parts[0].width == 512
    assert len(sample_windows(chunk, (512, 512), mid, np.random.default_rng(0))) == 4
