"""Threshold method: safe band expressions, (multi-)Otsu against brute force, chunk-independent labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.errors import InputError, JobSpecError
from geoseg.geo import Window, halo_window
from geoseg.methods.threshold import (
    ThresholdModel,
    ThresholdPredictor,
    compile_expression,
    evaluate_expression,
    multi_otsu_bins,
    resolve_index,
    threshold_legend,
)
from geoseg.run.jobspec import parse_job

BANDS = ["red", "green", "blue", "nir"]


def test_expression_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, (4, 5, 6)).astype(np.float32)
    got = evaluate_expression(compile_expression("(nir - red) / (nir + red) * 2 + -1.5", BANDS), data)
    r, n = data[0].astype(np.float32), data[3].astype(np.float32)
    np.testing.assert_allclose(got, (n - r) / (n + r) * 2 - 1.5, rtol=1e-6)


@pytest.mark.parametrize("bad", ["__import__('os')", "red ** 2", "red.real", "red if nir else blue", "[red]",
                                 "red < nir", "'red'", "lambda: 1", "nope + 1", "red +", "1j * red"])
def test_expression_refuses_anything_but_arithmetic(bad):
    with pytest.raises(InputError):
        compile_expression(bad, BANDS)


def test_named_index_is_the_kmeans_feature():
    from geoseg.methods.features import FeatureSpec

    data = np.random.default_rng(1).uniform(0, 255, (4, 8, 8)).astype(np.float32)
    want = FeatureSpec(bands=(), indices=("exg",)).resolve(BANDS).compute(data)[-1]
    np.testing.assert_array_equal(resolve_index("ExG", BANDS).compute(data)[0], want)
    np.testing.assert_array_equal(resolve_index("B08", ["B02", "B03", "B04", "B08"]).compute(data)[0], data[3])


def _brute_force(counts: np.ndarray, n_classes: int) -> tuple[int, ...]:
    """Every set of boundaries, scored by the between-class variance computed from scratch."""
    centres = np.arange(len(counts)) + 0.5
    total = counts.sum()
    mu = (counts * centres).sum() / total
    best, arg = -1.0, ()
    for cuts in itertools.combinations(range(1, len(counts)), n_classes - 1):
        edges = (0, *cuts, len(counts))
        var = 0.0
        for a, b in itertools.pairwise(edges):
            w = counts[a:b].sum()
            if w:
                var += w / total * ((counts[a:b] * centres[a:b]).sum() / w - mu) ** 2
        if var > best + 1e-9 * max(best, 1):
            best, arg = var, cuts
    return arg


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=4, max_size=14), st.integers(2, 4))
def test_multi_otsu_equals_brute_force(counts, n_classes):
    counts = np.array(counts)
    if counts.sum() == 0 or n_classes > len(counts):
        return
    got = multi_otsu_bins(counts, n_classes)
    want = _brute_force(counts, n_classes)

    def var(cuts):  # ties may pick other boundaries with the same score
        centres = np.arange(len(counts)) + 0.5
        edges = (0, *cuts, len(counts))
        return sum((counts[a:b] * centres[a:b]).sum() ** 2 / counts[a:b].sum()
                   for a, b in itertools.pairwise(edges) if counts[a:b].sum())

    assert var(got) == pytest.approx(var(want), rel=1e-9)
    assert len(got) == n_classes - 1 and list(got) == sorted(set(got))


@pytest.mark.parametrize("smoothing", ["none", "median", "gaussian"])
def test_predictor_with_halo_equals_whole_raster(smoothing):
    """Chunks read with the predictor's halo give the whole raster's labels, edges included."""
    rng = np.random.default_rng(2)
    data = rng.uniform(0, 255, (4, 70, 90)).astype(np.float32)
    valid = np.ones((70, 90), bool)
    valid[:5, :7] = False
    model = ThresholdModel("exg", (-0.05, 0.1), smoothing, size=5, sigma=1.3, fill=0.02)
    pred = ThresholdPredictor(model, resolve_index("exg", BANDS), threshold_legend(3))
    whole_hw = halo_window(Window(0, 0, 70, 90), 0, (70, 90))
    whole = pred.predict(data, valid, whole_hw)
    assert set(np.unique(whole)) <= {0, 1, 2, 255} and (whole[:5, :7] == 255).all()
    for r, c in itertools.product(range(0, 70, 32), range(0, 90, 32)):
        hw = halo_window(Window(r, c, min(32, 70 - r), min(32, 90 - c)), pred.halo, (70, 90))
        o = hw.outer
        part = pred.predict(data[:, o.row_off:o.row_off + o.height, o.col_off:o.col_off + o.width],
                            valid[o.row_off:o.row_off + o.height, o.col_off:o.col_off + o.width], hw)
        assert part.tobytes() == whole[r:r + 32, c:c + 32].tobytes()


def test_job_validation():
    base = {"name": "t", "inputs": ["x.tif"], "output": "out"}
    job = parse_job({**base, "method": {"kind": "threshold", "index": "ndvi", "threshold": [0.2, 0.5],
                                        "classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"},
                                                    {"id": 3, "name": "c"}]}})
    assert job.method.classes_out == 3 and job.method.fixed == [0.2, 0.5]
    for bad in ({"threshold": [0.5, 0.2]}, {"threshold": "otsu", "classes": [{"id": 1, "name": "a"}]},
                {"smoothing": {"kind": "median", "size": 4}}, {"threshold": "mean"}):
        with pytest.raises(JobSpecError):
            parse_job({**base, "method": {"kind": "threshold", **bad}})


# --------------------------------------------------------------------------- the bar, end to end


def _otsu_all_pixels(values: np.ndarray) -> float:
    """Independent Otsu: every split of the sorted values, between-class variance from cumulative sums."""
    v = np.sort(values.astype(np.float64))
    n = v.size
    csum = np.cumsum(v)
    k = np.arange(1, n)
    w0 = k / n
    mu0 = csum[:-1] / k
    mu1 = (csum[-1] - csum[:-1]) / (n - k)
    var = w0 * (1 - w0) * (mu0 - mu1) ** 2
    var[v[1:] == v[:-1]] = -1  # split only between distinct values
    i = int(np.argmax(var))
    return float((v[i] + v[i + 1]) / 2)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.integration
def test_cropweed_exg_otsu_bar(tmp_path, dask_client):
    from geoseg.run.workflow import run_job
    from geoseg.samples.synthetic import make_scene

    files = make_scene("cropweed", tmp_path / "data", width=1280, height=1100, seed=3)
    with rasterio.open(files.image) as ds:
        img = ds.read().astype(np.float64)
        names = ds.descriptions
    with rasterio.open(files.reference) as ref:
        reference = ref.read(1)
    r, g, b = (img[names.index(n)] for n in ("red", "green", "blue"))
    exg = (2 * g - r - b) / (r + g + b + 1e-6)
    truth = (reference == 2) | (reference == 3)
    oracle_iou = _iou(exg > _otsu_all_pixels(exg.ravel()), truth)

    labels = {}
    for chunk in (512, 2048):
        for smooth in (None, {"kind": "median", "size": 3}, {"kind": "gaussian", "sigma": 1.0}):
            tag = f"{chunk}-{smooth['kind'] if smooth else 'none'}"
            job = parse_job({
                "name": "thr", "inputs": [str(files.image)], "output": str(tmp_path / tag), "chunk_size": chunk,
                "method": {"kind": "threshold", "index": "exg", "threshold": "otsu", "sample_size": 100_000,
                           "smoothing": smooth,
                           "classes": [{"id": 1, "name": "soil", "color": "#8c6d46"},
                                       {"id": 2, "name": "vegetation", "color": "#33a02c"}]},
                "vectorize": {"enabled": False},
            })
            run_job(job, client=dask_client, show_progress=False)
            with rasterio.open(tmp_path / tag / "labels.zarr") as ds:
                labels[tag] = ds.read(1)
    for kind in ("none", "median", "gaussian"):
        assert labels[f"512-{kind}"].tobytes() == labels[f"2048-{kind}"].tobytes(), kind
    ours = _iou(labels["512-none"] == 2, truth)
    print(f"vegetation IoU: geoseg ExG+Otsu (sample) {ours:.4f}, numpy Otsu over all pixels {oracle_iou:.4f}")
    assert abs(ours - oracle_iou) <= 0.01
    assert set(np.unique(labels["512-none"])) <= {1, 2, 255}
    import json

    import zarr

    attrs = zarr.open_array(str(tmp_path / "512-none" / "labels.zarr" / "labels"), mode="r").attrs.asdict()
    assert [c["name"] for c in attrs["geoseg:classes"]] == ["soil", "vegetation"]
    model = json.loads((tmp_path / "512-none" / "model.json").read_text())
    assert model["kind"] == "threshold" and len(model["thresholds"]) == 1
