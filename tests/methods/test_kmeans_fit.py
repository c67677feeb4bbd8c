"""geoseg's k-means fit against scikit-learn's ``KMeans(algorithm="lloyd")`` on the same data and seed:
the same centroids, labels, inertia and number of Lloyd steps (the oracle the fit replaced)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from geoseg.methods.kmeans_fit import BLOCK, TOLERANCE, Runner, kmeans, lloyd, same_clustering
from tests.fixtures import REALDATA


def sklearn_fit(x: np.ndarray, k: int, seed: int, n_init: int, init: np.ndarray | str = "k-means++") -> KMeans:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="lloyd", init=init).fit(x)


def assert_same_fit(ours, theirs: KMeans) -> None:
    np.testing.assert_allclose(ours.centers, theirs.cluster_centers_, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(ours.labels, theirs.labels_)
    assert ours.inertia == pytest.approx(theirs.inertia_, rel=1e-9)
    assert ours.n_iter == theirs.n_iter_


def standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


@pytest.mark.parametrize(("k", "seed", "n_init"), [(2, 0, 1), (6, 0, 4), (6, 11, 4), (12, 3, 2)])
def test_blobs_give_scikit_learns_fit(k: int, seed: int, n_init: int) -> None:
    x, _ = make_blobs(n_samples=20_000, n_features=6, centers=8, cluster_std=2.5, random_state=seed)
    assert_same_fit(kmeans(standardised(x), k, seed, n_init=n_init), sklearn_fit(standardised(x), k, seed, n_init))


def test_overlapping_noise_gives_scikit_learns_fit() -> None:
    """No cluster structure: many Lloyd steps, so the stopping rule (tolerance) decides."""
    x = np.random.default_rng(5).normal(size=(30_000, 4))
    ours, theirs = kmeans(x, 7, 2, n_init=3), sklearn_fit(x, 7, 2, 3)
    assert theirs.n_iter_ > 10
    assert_same_fit(ours, theirs)


def test_an_empty_cluster_takes_the_farthest_pixel_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(8, 1, (500, 2))])
    x -= x.mean(axis=0)  # the fit centres the data; so does scikit-learn
    init = np.array([[-4.0, -4.0], [4.0, 4.0], [60.0, 60.0]])  # the third attracts no pixel
    tol = float(np.var(x, axis=0).mean() * TOLERANCE)
    ours = lloyd(x, init.copy(), 300, tol, Runner())
    theirs = sklearn_fit(x, 3, 0, 1, init=init)
    assert len(set(ours.labels.tolist())) == 3
    assert_same_fit(ours, theirs)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # its "3 distinct clusters"
def test_fewer_distinct_pixels_than_clusters() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]]), 40, axis=0)
    fit = kmeans(x, 5, 0, n_init=2)
    assert fit.inertia < 1e-20  # every pixel on a centroid (up to the centring's rounding)
    assert {tuple(c) for c in np.round(fit.centers, 12) + 0.0} >= {(0.0, 0.0), (1.0, 0.0), (0.0, 5.0)}
    assert_same_fit(fit, sklearn_fit(x, 5, 0, 2))


def test_the_thread_count_does_not_change_a_single_bit() -> None:
    x, _ = make_blobs(n_samples=3 * BLOCK + 123, n_features=5, centers=6, random_state=4)
    one, three = kmeans(x, 6, 9, n_init=2, threads=1), kmeans(x, 6, 9, n_init=2, threads=3)
    np.testing.assert_array_equal(one.centers, three.centers)
    np.testing.assert_array_equal(one.labels, three.labels)
    assert one.inertia == three.inertia


def test_a_sample_with_infinite_features_is_refused_in_one_line() -> None:
    from geoseg.errors import InputError
    from geoseg.methods.kmeans import fit_kmeans

    sample = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    sample[7, 1] = np.inf
    with pytest.raises(InputError, match="1 sampled pixels have non-finite feature values"):
        fit_kmeans(sample, 3, 0, ("a", "b", "c"))


def test_a_later_seed_replaces_the_best_only_as_a_different_clustering() -> None:
    a = np.array([0, 0, 1, 1, 2])
    assert same_clustering(a, np.array([2, 2, 0, 0, 1]))
    assert not same_clustering(a, np.array([0, 1, 1, 1, 2]))


@pytest.mark.skipif(not (REALDATA / "s2_l1c_reference_scene_0.tif").exists(), reason=f"no real data at {REALDATA}")
def test_a_real_sentinel2_scene_gives_scikit_learns_fit() -> None:
    with rasterio.open(REALDATA / "s2_l1c_reference_scene_0.tif") as ds:
        data = ds.read().astype(np.float64)
    x = data.reshape(data.shape[0], -1).T
    x = standardised(x[np.isfinite(x).all(axis=1) & (x > 0).all(axis=1)])
    assert_same_fit(kmeans(x, 6, 0, n_init=4), sklearn_fit(x, 6, 0, 4))


def test_a_models_identity_survives_model_json_and_tells_two_fits_apart():
    """A run's labels record the model that numbered their clusters: the fitted model and the same model
    saved to model.json and loaded again must agree, and two fits (other centroids) must not."""
    import json

    from geoseg.methods.kmeans import KMeansModel

    rng = np.random.default_rng(0)
    fitted = KMeansModel(centroids=rng.normal(size=(4, 3)), mean=rng.normal(size=3), std=rng.random(3) + 0.5,
                         feature_names=("red", "nir", "ndvi"), inertia=1.5)  # float64, as a fit may leave them
    reloaded = KMeansModel.from_json(json.loads(json.dumps(fitted.to_json())))
    assert reloaded.centroids.dtype == np.float32 and reloaded.identity() == fitted.identity()
    other = KMeansModel(fitted.centroids + 1e-3, fitted.mean, fitted.std, fitted.feature_names, fitted.inertia)
    renamed = KMeansModel(fitted.centroids, fitted.mean, fitted.std, ("red", "nir", "ndwi"), fitted.inertia)
    assert len({fitted.identity(), other.identity(), renamed.identity()}) == 3
