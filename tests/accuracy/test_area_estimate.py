"""Olofsson et al. (2014) worked example (Tables 8 and 9) through :func:`estimate_areas`, and the
estimator's checks on the interpreted sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geoseg.accuracy.areaestimate import Z95, check_reference, estimate_areas, round_to_se
from geoseg.errors import InputError

#: Table 8: sample counts, rows = map class, columns = reference class
#: (deforestation, forest gain, stable forest, stable non-forest).
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
MAPPED_PX = [200_000, 150_000, 3_200_000, 6_450_000]  # 30 m pixels: 0.09 ha each


def paper_sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [(m + 1, r + 1) for m in range(4) for r in range(4) for _ in range(COUNTS[m, r])]
    sample = pd.DataFrame(rows, columns=["map_class", "reference"])
    sample["stratum"] = sample["map_class"].astype(str)
    sample["point_id"] = np.arange(1, len(sample) + 1)
    strata = pd.DataFrame({"stratum": ["1", "2", "3", "4"], "map_class": [1, 2, 3, 4], "mapped_px": MAPPED_PX,
                           "pixel_area_m2": 900.0})
    return sample.sample(frac=1, random_state=0), strata  # order of the rows must not matter


def test_olofsson_2014_tables_8_and_9() -> None:
    sample, strata = paper_sample()
    est = estimate_areas(sample, strata)
    c = est.classes.set_index("class_id")
    # estimated area proportions (Table 9's column totals)
    assert c["area_proportion"].round(4).tolist() == [0.0235, 0.0130, 0.3175, 0.6460]
    assert round(est.overall_accuracy, 4) == 0.9465
    assert round(Z95 * est.overall_accuracy_se, 4) == 0.0185
    assert c["users_accuracy"].round(3).tolist() == [0.880, 0.733, 0.927, 0.963]
    assert (Z95 * c["users_accuracy_se"]).round(3).tolist() == [0.074, 0.101, 0.040, 0.021]
    assert c["producers_accuracy"].round(3).tolist() == [0.749, 0.847, 0.935, 0.962]
    # Olofsson's producer's accuracy variance (their eq. 7, Card 1982) gives +/-0.213, 0.254, 0.034, 0.018;
    # the paper prints +/-0.21, 0.23, 0.03, 0.01: its forest-gain (0.23) and stable non-forest (0.01)
    # intervals do not follow from its own equation. We follow the equation.
    assert (Z95 * c["producers_accuracy_se"]).round(3).tolist() == [0.213, 0.254, 0.034, 0.018]
    assert c["area_ha"].round(0).tolist() == [21158, 11686, 285770, 581386]
    assert (Z95 * c["area_se_ha"]).round(0).tolist() == [6158, 3756, 15510, 16282]
    # the deforestation area's SE is 34,907 pixels; the paper prints 34,097 (a typo: 1.96 x 34,097 x 0.09 ha
    # would be 6,015 ha, not the printed 6,158 ha)
    assert round(c.loc[1, "area_se_ha"] / 0.09) == 34907
    # Table 9: estimated area proportions of the cells (row = map class)
    assert est.proportions.round(4).iloc[0].tolist() == [0.0176, 0.0, 0.0013, 0.0011]
    assert est.proportions.to_numpy().sum() == pytest.approx(1.0)
    assert (est.confusion.to_numpy() == COUNTS).all()
    table = est.table()
    assert len(table) == 4 and est.summary().loc[0, "overall_accuracy"] == est.overall_accuracy
    assert table["ci95_high_ha"].iloc[0] == pytest.approx(c.loc[1, "area_ha"] + Z95 * c.loc[1, "area_se_ha"])
    assert table["n_mapped"].iloc[:4].tolist() == [75, 75, 165, 325]


def test_other_strata_give_the_same_estimates_as_a_split_of_the_classes() -> None:
    """A stratum split in two equal halves with the same shares of reference classes estimates the same areas."""
    sample, strata = paper_sample()
    split = sample.copy()
    forest = split["stratum"] == "3"
    idx = split.index[forest]
    split.loc[idx[::2], "stratum"] = "3a"
    split.loc[idx[1::2], "stratum"] = "3b"
    n_a = int((split["stratum"] == "3a").sum())
    n_b = int((split["stratum"] == "3b").sum())
    strata2 = pd.concat([strata[strata["stratum"] != "3"], pd.DataFrame({
        "stratum": ["3a", "3b"], "map_class": [3, 3], "pixel_area_m2": 900.0,
        "mapped_px": [3_200_000 * n_a // 165, 3_200_000 - 3_200_000 * n_a // 165]})])
    a = estimate_areas(sample, strata).classes
    b = estimate_areas(split, strata2).classes
    assert n_a + n_b == 165
    assert np.allclose(a["area_ha"], b["area_ha"], rtol=0.02)
    assert np.allclose(a["users_accuracy"], b["users_accuracy"], atol=0.01)


def test_mapping_turns_clusters_into_classes() -> None:
    sample, strata = paper_sample()
    shifted = sample.assign(map_class=sample["map_class"] + 10)
    est = estimate_areas(shifted, strata.assign(map_class=strata["map_class"] + 10),
                         mapping={11: 1, 12: 2, 13: 3, 14: 4})
    assert est.classes["users_accuracy"].round(3).tolist() == [0.880, 0.733, 0.927, 0.963]
    assert round(est.overall_accuracy, 4) == 0.9465
    # a cluster the mapping leaves out stands for no class: its points are wrong, its pixels nobody's
    partial = estimate_areas(shifted, strata.assign(map_class=strata["map_class"] + 10), mapping={11: 1, 12: 2, 13: 3})
    assert partial.classes["class_id"].tolist() == [1, 2, 3, 4]
    assert partial.classes["mapped_px"].tolist() == [200_000, 150_000, 3_200_000, 0]
    assert round(partial.overall_accuracy, 4) == round(0.9465 - 0.645 * 313 / 325, 4)
    assert "without a reference class in the mapping (wrong wherever sampled): 14" in partial.notes[0]


def test_empty_or_invalid_reference_names_the_rows() -> None:
    sample, strata = paper_sample()
    sample = sample.astype({"reference": object})
    sample.loc[sample["point_id"].isin([7, 9]).to_numpy(), "reference"] = None
    with pytest.raises(InputError, match=r"empty for point_id (7, 9|9, 7)"):
        estimate_areas(sample, strata)
    sample.loc[sample["point_id"].isin([7, 9]).to_numpy(), "reference"] = 2
    sample.loc[sample["point_id"] == 12, "reference"] = "forest?"
    with pytest.raises(InputError, match="not a whole-number class id for point_id 12 .*forest"):
        check_reference(sample)


def test_a_stratum_without_points_is_refused() -> None:
    sample, strata = paper_sample()
    with pytest.raises(InputError, match="no sample point: 2"):
        estimate_areas(sample[sample["stratum"] != "2"], strata)


def test_round_to_se() -> None:
    assert round_to_se(285770.4, 15510.2 / Z95) == (285800.0, 7900.0)


def test_95_percent_intervals_cover_the_true_areas_95_percent_of_the_time() -> None:
    """Brute-force simulation: a synthetic map with a known reference for every pixel, sampled 500 times
    with the sampler's own keys (each seed one stratified draw); each class's 95 % area interval must
    cover the true area in 95 % +/- 3.5 binomial sd of the draws (0.916-0.984).

    With smaller samples (60-120 points per stratum) the rare class (5 % of the map) was covered in
    only 92.5 % of 2,000 draws: its omission errors are a few points in large strata, and the normal
    interval undercovers there (README, Limits). 100-250 points per stratum: 94.4-95.2 %."""
    from geoseg._kernels.samplekeys import lowest_keys

    rng = np.random.default_rng(42)
    shape = (250, 400)
    weights, users = np.array([0.05, 0.15, 0.30, 0.50]), np.array([0.7, 0.8, 0.9, 0.95])
    map_class = rng.choice(4, size=shape, p=weights).astype(np.uint8)
    truth = map_class.copy()
    wrong = rng.random(shape) > users[map_class]
    truth[wrong] = (map_class[wrong] + rng.integers(1, 4, int(wrong.sum()))) % 4  # another class, at random
    true_px = np.bincount(truth.ravel(), minlength=4)
    strata = pd.DataFrame({"stratum": ["0", "1", "2", "3"], "map_class": [0, 1, 2, 3],
                           "mapped_px": np.bincount(map_class.ravel(), minlength=4), "pixel_area_m2": 100.0})
    n_h = [100, 150, 200, 250]
    reps = 500
    covered = np.zeros(4)
    for seed in range(reps):
        _, keys, pixels, kept = lowest_keys(map_class, 0, 0, shape[1], seed, max(n_h), 4)
        picked = []
        for h in range(4):
            order = np.argsort(keys[h, : kept[h]])[: n_h[h]]
            picked.append(pixels[h, : kept[h]][order])
        pix = np.concatenate(picked)
        sample = pd.DataFrame({"map_class": map_class.ravel()[pix], "reference": truth.ravel()[pix]})
        sample["stratum"] = sample["map_class"].astype(str)
        c = estimate_areas(sample, strata).classes
        low = (c["area_proportion"] - Z95 * c["area_proportion_se"]) * map_class.size
        high = (c["area_proportion"] + Z95 * c["area_proportion_se"]) * map_class.size
        covered += ((low <= true_px) & (true_px <= high)).to_numpy()
    coverage = covered / reps
    band = 3.5 * np.sqrt(0.95 * 0.05 / reps)
    assert (np.abs(coverage - 0.95) <= band).all(), coverage


def test_stehman_estimators_cover_with_strata_that_are_not_the_map_classes() -> None:
    """Strata = map class x region (west / east halves, sampled at different rates): area, user's and
    producer's accuracy intervals (Stehman 2014's estimators) cover the census values in 95 % +/- 3.5
    binomial sd of 300 draws."""
    from geoseg._kernels.samplekeys import lowest_keys

    rng = np.random.default_rng(7)
    shape = (200, 400)
    map_class = rng.choice(3, size=shape, p=[0.2, 0.3, 0.5]).astype(np.uint8)
    users = np.where(np.arange(shape[1]) < 200, 0.75, 0.92)[None, :]  # the east is mapped better
    truth = map_class.copy()
    wrong = rng.random(shape) > users
    truth[wrong] = (map_class[wrong] + rng.integers(1, 3, int(wrong.sum()))) % 3
    stratum = (map_class + 3 * (np.arange(shape[1]) >= 200)[None, :]).astype(np.uint8)  # 0-2 west, 3-5 east
    strata = pd.DataFrame({"stratum": [str(s) for s in range(6)], "map_class": [0, 1, 2, 0, 1, 2],
                           "mapped_px": np.bincount(stratum.ravel(), minlength=6), "pixel_area_m2": 100.0})
    n_h = [120, 120, 120, 60, 80, 100]
    census = {
        "area": np.bincount(truth.ravel(), minlength=3) / truth.size,
        "ua": np.array([(truth[map_class == k] == k).mean() for k in range(3)]),
        "pa": np.array([(map_class[truth == k] == k).mean() for k in range(3)]),
    }
    reps = 300
    covered = {k: np.zeros(3) for k in census}
    for seed in range(reps):
        _, keys, pixels, kept = lowest_keys(stratum, 0, 0, shape[1], seed, max(n_h), 6)
        pix = np.concatenate([pixels[h, : kept[h]][np.argsort(keys[h, : kept[h]])[: n_h[h]]] for h in range(6)])
        sample = pd.DataFrame({"stratum": stratum.ravel()[pix].astype(str), "map_class": map_class.ravel()[pix],
                               "reference": truth.ravel()[pix]})
        c = estimate_areas(sample, strata).classes
        for key, est, se in (("area", "area_proportion", "area_proportion_se"), ("ua", "users_accuracy", "users_accuracy_se"),
                             ("pa", "producers_accuracy", "producers_accuracy_se")):
            covered[key] += (np.abs(c[est].to_numpy() - census[key]) <= Z95 * c[se].to_numpy())
    band = 3.5 * np.sqrt(0.95 * 0.05 / reps)
    for key, hits in covered.items():
        assert (np.abs(hits / reps - 0.95) <= band).all(), (key, hits / reps)


def test_area_estimates_csv_columns_add_up_and_hold_per_class_figures_only(tmp_path) -> None:
    """area_estimates.csv is one row per class, so its columns can be summed and averaged as they are: the
    estimated areas add up to the map (10,000,000 px of 0.09 ha), the mapped pixels to its pixel count, and
    users_accuracy holds user's accuracies only (Olofsson's n_kk / n_k. by hand). The overall accuracy
    (sum W_h n_hh / n_h. by hand) is area_summary.csv's."""
    from geoseg.accuracy.areareport import write_area_outputs

    sample, strata = paper_sample()
    write_area_outputs(estimate_areas(sample, strata), tmp_path)
    table = pd.read_csv(tmp_path / "area_estimates.csv")
    total_px = sum(MAPPED_PX)
    assert table["class_id"].notna().all() and len(table) == 4
    assert table["estimated_area_ha"].sum() == pytest.approx(total_px * 0.09, abs=0.01 * 4)
    assert table["mapped_px"].sum() == total_px
    assert table["mapped_area_ha"].sum() == pytest.approx(total_px * 0.09)
    assert table["users_accuracy"].tolist() == pytest.approx(list(np.diag(COUNTS) / COUNTS.sum(axis=1)))
    assert table["n_mapped"].sum() == COUNTS.sum()
    summary = pd.read_csv(tmp_path / "area_summary.csv")
    w = np.array(MAPPED_PX) / total_px
    assert len(summary) == 1
    assert summary.loc[0, "overall_accuracy"] == pytest.approx(float((w * np.diag(COUNTS) / COUNTS.sum(axis=1)).sum()))
    assert summary.loc[0, "map_area_ha"] == pytest.approx(total_px * 0.09)
    assert (summary.loc[0, "map_px"], summary.loc[0, "n_points"]) == (total_px, COUNTS.sum())


def test_points_in_a_stratum_without_mapped_pixels_are_refused() -> None:
    """A strata table listing a stratum with 0 mapped pixels that holds points (a hand-edited or mismatched
    table) had those points counted in the stratum before it: 150 points in a stratum of n_h = 75, area
    proportions summing to 1.02. A stratum's points need its pixels: refused, naming it."""
    sample, strata = paper_sample()
    strata = strata.assign(mapped_px=[200_000, 0, 3_200_000, 6_450_000])
    with pytest.raises(InputError, match="no mapped pixels.*2"):
        estimate_areas(sample, strata)
    # the oracle of a consistent table: Table 9's proportions, each class's share of the map, sum to 1
    est = estimate_areas(*paper_sample())
    assert est.classes["area_proportion"].sum() == pytest.approx(1.0)


def test_small_mapped_areas_are_printed_not_rounded_to_zero() -> None:
    """On drone pixels (5 cm: 0.0025 m²) the paper's map is 2.5 ha and its deforestation class 0.05 ha; the
    terminal and report printed them as "2" and "0" mapped ha beside an estimate of 0.059 ± 0.017 ha. Oracle:
    mapped pixels x pixel area by hand, to four significant digits."""
    from geoseg.accuracy.areareport import overall_line, summary_table

    sample, strata = paper_sample()
    est = estimate_areas(sample, strata.assign(pixel_area_m2=0.0025))
    assert summary_table(est)["mapped ha"].tolist() == ["0.05", "0.0375", "0.8", "1.612"]
    assert [px * 0.0025 / 1e4 for px in MAPPED_PX] == pytest.approx([0.05, 0.0375, 0.8, 1.6125])
    assert "map 2.5 ha" in overall_line(est)


def test_area_csv_keeps_small_standard_errors() -> None:
    """A 0.4 ha drone map (2 cm pixels) had every area in area_estimates.csv rounded to 0.01 ha: se_ha 0.0 for
    every class, an interval reading as certainty. The CSV keeps six significant digits of each figure (the
    oracle: the estimator's own values, whose SEs are 0.0014 ha and less)."""
    import tempfile

    from geoseg.accuracy.areareport import write_area_outputs

    sample, strata = paper_sample()
    est = estimate_areas(sample, strata.assign(pixel_area_m2=0.0004))
    with tempfile.TemporaryDirectory() as d:
        write_area_outputs(est, d)
        table = pd.read_csv(f"{d}/area_estimates.csv")
    want = est.classes
    assert (table["se_ha"] > 0).all()
    assert table["se_ha"].tolist() == pytest.approx(want["area_se_ha"].tolist(), rel=1e-5)
    assert table["estimated_area_ha"].tolist() == pytest.approx(want["area_ha"].tolist(), rel=1e-5)
    assert table["mapped_area_ha"].sum() == pytest.approx(sum(MAPPED_PX) * 0.0004 / 1e4, rel=1e-5)
