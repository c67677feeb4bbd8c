"""The stratified sample: the lowest random keys of each stratum whatever the chunking (brute-force
oracle), Olofsson's allocation, regions and change maps as strata, the files and the labelling
from a reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio

from geoseg._kernels.samplekeys import lowest_keys, pixel_keys
from geoseg.accuracy.sampledesign import (
    Allocation,
    allocate,
    draw_sample,
    label_from_reference,
    read_sample,
    sample_size,
    write_sample,
)
from geoseg.errors import InputError, JobSpecError
from tests.fixtures import TRANSFORM, random_blocks, write_raster, write_regions, write_store


def _labels() -> np.ndarray:
    lab = random_blocks((300, 340), 20, 4, seed=0)
    lab[:30, :40] = 255  # nodata: never a stratum, never drawn
    lab[100:104, 200:203] = 6  # a rare class: 12 pixels
    return lab


def _oracle(lab: np.ndarray, n_h: dict[int, int], seed: int) -> set[tuple[int, int]]:
    """Brute force: every pixel's key, then each stratum's n_h lowest."""
    keys = pixel_keys(np.arange(lab.size), seed).reshape(lab.shape)
    picked = set()
    for cls, n in n_h.items():
        rows, cols = np.nonzero(lab == cls)
        order = np.argsort(keys[rows, cols])[:n]
        picked |= set(zip(rows[order].tolist(), cols[order].tolist()))
    return picked


def test_the_sample_is_the_same_whatever_the_chunking_and_equals_the_brute_force_draw(tmp_path) -> None:
    lab = _labels()
    alloc = Allocation(n=80, min_per_stratum=10)
    samples = []
    for chunk, threads in ((64, 1), (100, 2), (512, 2)):
        store = write_store(tmp_path / f"l{chunk}.zarr", lab, chunk)
        samples.append(draw_sample(store, alloc, seed=5, threads=threads))
    tif = write_raster(tmp_path / "labels.tif", lab, nodata=255, transform=TRANSFORM, block=128)
    samples.append(draw_sample(tif, alloc, seed=5))
    first = samples[0]
    for other in samples[1:-1]:
        pd.testing.assert_frame_equal(other.points, first.points)
        pd.testing.assert_frame_equal(other.strata, first.strata)
    no_names = ["map_class_name"]  # the GeoTIFF has no legend
    pd.testing.assert_frame_equal(samples[-1].points.drop(columns=no_names), first.points.drop(columns=no_names))
    assert samples[-1].strata["mapped_px"].tolist() == first.strata["mapped_px"].tolist()
    strata = first.strata.set_index("map_class")
    values, counts = np.unique(lab[lab != 255], return_counts=True)
    assert strata.index.tolist() == values.tolist()
    assert strata["mapped_px"].tolist() == counts.tolist()
    assert strata.loc[6, "n_sample"] == 10  # the rare class: its minimum (of 12 pixels)
    drawn = set(zip(first.points["row"].tolist(), first.points["col"].tolist()))
    assert drawn == _oracle(lab, strata["n_sample"].to_dict(), seed=5)
    assert (lab[first.points["row"], first.points["col"]] == first.points["map_class"]).all()
    x, y = TRANSFORM * (first.points["col"] + 0.5, first.points["row"] + 0.5)
    assert np.allclose(first.points["x"], x) and np.allclose(first.points["y"], y)
    assert np.allclose(first.points["weight"], 1 / first.points["inclusion_probability"])
    other_seed = draw_sample(write_store(tmp_path / "again.zarr", lab, 64), alloc, seed=6)
    assert set(zip(other_seed.points["row"], other_seed.points["col"])) != drawn


def test_keys_give_every_pixel_the_same_chance() -> None:
    """Over 2,000 seeds, 40 of 400 pixels drawn: each pixel's inclusion frequency is 0.1 within the binomial band."""
    codes = np.zeros((20, 20), np.uint8)
    hits = np.zeros(400)
    for seed in range(2000):
        _, _, pix, kept = lowest_keys(codes, 3, 7, 1000, seed, 40, 1)
        p = pix[0, : kept[0]]
        hits[(p // 1000 - 3) * 20 + (p % 1000 - 7)] += 1
    freq = hits / 2000
    sd = np.sqrt(0.1 * 0.9 / 2000)
    assert np.abs(freq - 0.1).max() < 4.5 * sd
    # and uncorrelated between neighbours (a hash with structure would draw neighbours together)
    pair = np.zeros(2)
    for seed in range(2000):
        _, _, pix, kept = lowest_keys(codes, 0, 0, 20, seed, 40, 1)
        s = set(pix[0, : kept[0]].tolist())
        pair += [5 in s and 6 in s, 5 in s and 300 in s]
    assert abs(pair[0] - pair[1]) < 4.5 * np.sqrt(2000 * 0.01)


def test_olofsson_sample_size_and_allocation() -> None:
    # Olofsson et al. 2014 section 5.1: SE(O) 0.01 with U = 0.7, 0.6, 0.9, 0.95 -> n = 641
    sizes = {1: 200_000, 2: 150_000, 3: 3_200_000, 4: 6_450_000}
    assert sample_size([0.02, 0.015, 0.32, 0.645], [0.7, 0.6, 0.9, 0.95], 0.01) == 641
    alloc = Allocation(target_se=0.01, expected_accuracy={1: 0.7, 2: 0.6, 3: 0.9, 4: 0.95}, min_per_stratum=75)
    n_h = allocate(sizes, alloc)
    # rare strata get the minimum; the rest of the 641 is shared in proportion to the others' sizes
    assert n_h[1] == n_h[2] == 75 and n_h[3] + n_h[4] == 641 - 150
    assert abs(n_h[3] / n_h[4] - 3_200_000 / 6_450_000) < 0.01
    assert max(n_h.values()) <= alloc.cap()
    assert allocate(sizes, Allocation(n=400, method="equal", min_per_stratum=0)) == {1: 100, 2: 100, 3: 100, 4: 100}
    assert allocate({1: 30, 2: 10_000}, Allocation(n=100, min_per_stratum=50)) == {1: 30, 2: 70}
    assert allocate(sizes, Allocation(per_stratum={1: 5, 2: 6, 3: 7, 4: 8})) == {1: 5, 2: 6, 3: 7, 4: 8}
    with pytest.raises(InputError, match="no number of points given for stratum/strata 4"):
        allocate(sizes, Allocation(per_stratum={1: 5, 2: 6, 3: 7}))
    with pytest.raises(JobSpecError, match="exactly one"):
        Allocation(n=10, target_se=0.01)
    rng = np.random.default_rng(0)
    for _ in range(200):  # the bound known before counting holds for any strata sizes
        sizes = {k: int(v) for k, v in enumerate(rng.integers(1, 10**6, rng.integers(1, 8)))}
        for alloc in (Allocation(n=int(rng.integers(1, 900)), min_per_stratum=int(rng.integers(0, 100))),
                      Allocation(target_se=float(rng.uniform(0.005, 0.05)), expected_accuracy=float(rng.uniform(0.5, 0.99)))):
            assert max(allocate(sizes, alloc).values()) <= alloc.cap()


def test_strata_crossed_with_regions(tmp_path) -> None:
    lab = _labels()
    store = write_store(tmp_path / "l.zarr", lab, 128)
    regions = write_regions(tmp_path / "r.gpkg", [(0, 0, 300, 170), (0, 170, 150, 340)], ["west", "northeast"])
    s = draw_sample(store, Allocation(n=120, min_per_stratum=5), regions=regions, region_field="zone", seed=1)
    zone = np.full(lab.shape, "", dtype=object)
    zone[:, :170] = "west"
    zone[:150, 170:] = "northeast"
    for row in s.strata.itertuples():
        assert row.stratum == f"{row.region}|{row.map_class}"
        assert row.mapped_px == int(((zone == row.region) & (lab == row.map_class)).sum())
    pts = s.points
    assert (zone[pts["row"], pts["col"]] == pts["region"]).all()
    assert set(s.strata["region"]) == {"", "west", "northeast"}


def test_a_change_map_is_stratified_by_its_transitions(tmp_path) -> None:
    from geoseg.accuracy.change import compare_periods

    before = random_blocks((200, 200), 25, 3, seed=1)
    after = before.copy()
    after[50:90, 20:120] = 2  # some land became forest
    after[150:160, 150:200] = 3
    compare_periods(write_store(tmp_path / "a.zarr", before, 64), write_store(tmp_path / "b.zarr", after, 64),
                    tmp_path / "change")
    s = draw_sample(tmp_path / "change" / "change.zarr", Allocation(n=60, min_per_stratum=10), seed=2)
    code = np.where(before == after, 0, before.astype(int) * 256 + after)
    values, counts = np.unique(code, return_counts=True)
    strata = s.strata.set_index("map_class")
    assert strata.index.tolist() == values.tolist()
    assert strata["mapped_px"].tolist() == counts.tolist()
    assert strata.loc[0, "map_class_name"] == "unchanged"
    assert strata.loc[1 * 256 + 2, "map_class_name"] == "cropland → forest"
    assert (code[s.points["row"], s.points["col"]] == s.points["map_class"]).all()


def test_files_round_trip_and_the_reference_is_read_like_evaluate_reads_it(tmp_path) -> None:
    lab = _labels()
    store = write_store(tmp_path / "l.zarr", lab, 128)
    s = draw_sample(store, Allocation(n=60, min_per_stratum=5), seed=0)
    # a reference in another CRS (Web Mercator), with its own classes: the label + 10
    truth = np.where(lab == 255, 0, lab + 10).astype(np.uint8)
    ref_utm = write_raster(tmp_path / "ref_utm.tif", truth, nodata=0, transform=TRANSFORM)
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(ref_utm) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        dst = np.zeros((h, w), np.uint8)
        reproject(truth, dst, src_transform=src.transform, src_crs=src.crs, dst_transform=t, dst_crs="EPSG:3857",
                  resampling=Resampling.nearest)
    ref_3857 = write_raster(tmp_path / "ref_3857.tif", dst, crs="EPSG:3857", transform=t, nodata=0)
    n = label_from_reference(s, ref_3857)
    inside = s.points["reference"].notna()
    assert n == int(inside.sum()) >= 0.9 * len(s.points)
    agree = s.points.loc[inside, "reference"].astype(int) == s.points.loc[inside, "map_class"] + 10
    assert agree.mean() > 0.9  # nearest-neighbour warping moves a few block edges
    # a vector reference: one polygon of class 7 over the west half, background 8
    write_regions(tmp_path / "v.gpkg", [(0, 0, 300, 170)], [7])
    label_from_reference(s, tmp_path / "v.gpkg", field="zone", background=8)
    assert (s.points["reference"] == np.where(s.points["col"] < 170, 7, 8)).all()

    paths = write_sample(s, tmp_path / "out" / "sample.gpkg")
    layers = {name for name, _ in pyogrio.list_layers(paths["sample"])}
    assert {"sample", "strata", "classes", "layer_styles"} <= layers
    styles = pyogrio.read_dataframe(paths["sample"], layer="layer_styles", read_geometry=False)
    assert "SimpleMarker" in styles["styleQML"].iloc[0] and "water" in styles["styleQML"].iloc[0]
    info = pyogrio.read_info(paths["sample"], layer="sample")
    assert info["geometry_type"] == "Point" and info["features"] == len(s.points)
    for path in (paths["sample"], tmp_path / "out" / "sample.csv"):
        pts, strata, classes = read_sample(path)
        assert pts["point_id"].tolist() == s.points["point_id"].tolist()
        assert pts["reference"].astype(int).tolist() == s.points["reference"].astype(int).tolist()
        assert strata["mapped_px"].tolist() == s.strata["mapped_px"].tolist()
        assert set(classes["kind"]) == {"map", "reference"}


def test_a_label_raster_without_data_is_refused(tmp_path) -> None:
    store = write_store(tmp_path / "l.zarr", np.full((50, 50), 255, np.uint8), 32)
    with pytest.raises(InputError, match="holds no data pixel"):
        draw_sample(store, Allocation(n=10))


def test_a_dask_cluster_draws_the_same_sample(tmp_path, dask_client) -> None:
    lab = _labels()
    store = write_store(tmp_path / "l.zarr", lab, 64)
    regions = write_regions(tmp_path / "r.gpkg", [(0, 0, 300, 170)], ["west"])
    for kw in ({}, {"regions": regions, "region_field": "zone"}):
        local = draw_sample(store, Allocation(n=50, min_per_stratum=5), seed=9, threads=2, **kw)
        remote = draw_sample(store, Allocation(n=50, min_per_stratum=5), seed=9, client=dask_client, **kw)
        pd.testing.assert_frame_equal(remote.points, local.points)
        pd.testing.assert_frame_equal(remote.strata, local.strata)


# (row_off, col_off, width): small indices; index 2^32 reached 100 pixels into a row; rows starting at 2^32
@pytest.mark.parametrize("row_off, col_off, width", [(10, 20, 1000), (61356, 47196, 70000), (1 << 22, 20, 1024)])
def test_kernel_keeps_the_lowest_keys_also_past_2_to_the_32_pixels(row_off, col_off, width) -> None:
    """Windows of a raster whose pixel indices pass 2^32 (65,536²) inside a row, or start at it."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (300, 257)).astype(np.uint8)
    counts, keys, pixels, kept = lowest_keys(codes, row_off, col_off, width, 7, 5, 256)
    assert (counts[:4] == np.bincount(codes.ravel(), minlength=4)).all()
    rows, cols = np.indices(codes.shape)
    pix = (rows + row_off).astype(np.int64) * width + cols + col_off
    assert row_off == 10 or pix.max() >= 1 << 32
    all_keys = pixel_keys(pix.ravel(), 7)
    assert len(np.unique(all_keys)) == all_keys.size
    for s in range(4):
        assert (np.sort(keys[s, : kept[s]]) == np.sort(all_keys[codes.ravel() == s])[:5]).all()
        assert (pixel_keys(pixels[s, : kept[s]], 7) == keys[s, : kept[s]]).all()
