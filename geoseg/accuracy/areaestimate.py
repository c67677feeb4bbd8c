"""Error-adjusted areas and accuracies from an interpreted stratified sample (Olofsson et al. 2014; Stehman 2014).

Why not the pixel count: a map's class areas carry its errors. The accepted practice is to label a
stratified random sample of points with a better source (an interpreter, a higher-quality map) and
estimate each class's area from the sample, weighted by each stratum's share of the map:

* area proportion of reference class ``k``: ``p_k = sum_h W_h * ybar_hk`` with ``W_h = N_h / N``
  (``N_h`` mapped pixels of stratum ``h``) and ``y = 1`` where the point's reference class is ``k``;
  its variance ``sum_h W_h^2 * s2_hk / n_h`` (Olofsson 2014 eqs. 9-10; Stehman 2014 eq. 25);
* user's and producer's accuracy of class ``k`` and the overall accuracy as stratified ratio (or
  mean) estimators with Stehman's (2014) variances (eqs. 27-28). With the map classes as strata they
  are exactly Olofsson's eqs. 2-7 (the producer's accuracy variance of Card 1982 / Olofsson 2013);
  with other strata (map class x region) they stay unbiased where the classic formulas are not.

The 95 % confidence interval is ``estimate +/- 1.96 SE``: were the sample drawn again and again,
about 95 % of such intervals would contain the area a complete census with the same reference
would give. It covers sampling error only, not errors of the reference labels themselves.

No finite-population correction by default (as Olofsson 2014; the ``n_h / N_h`` of a map is tiny).
Areas are in hectares; :func:`round_to_se` rounds a figure to what its standard error supports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geoseg.errors import InputError

#: Normal quantile of a two-sided 95 % interval, rounded as Olofsson et al. (2014) use it (the exact
#: 1.95996 moves the last printed figure of their stable non-forest area interval: 16,281 ha, not 16,282).
Z95 = 1.96

#: The reference class of a map class that a mapping leaves out.
UNASSIGNED = -1

#: Columns of :meth:`AreaEstimate.table` (``area_estimates.csv``), in order.
AREA_COLUMNS = [
    "class_id", "class_name", "mapped_px", "mapped_area_ha", "area_proportion", "area_proportion_se",
    "estimated_area_ha", "se_ha", "ci95_low_ha", "ci95_high_ha",
    "users_accuracy", "users_accuracy_ci95", "producers_accuracy", "producers_accuracy_ci95",
    "n_mapped", "n_reference",
]  # fmt: skip

#: Columns of :meth:`AreaEstimate.summary` (``area_summary.csv``), in order.
SUMMARY_COLUMNS = [
    "overall_accuracy", "overall_accuracy_se", "overall_accuracy_ci95", "map_px", "map_area_ha", "pixel_area_m2",
    "n_points", "n_strata",
]  # fmt: skip


@dataclass(frozen=True)
class _Design:
    """Each sample row's stratum index, and each stratum's mapped size and sample size."""

    h: np.ndarray  # stratum index of each sample row
    N: np.ndarray  # mapped pixels of each stratum
    n: np.ndarray  # sample rows of each stratum
    fpc: bool

    @property
    def W(self) -> np.ndarray:  # the papers' symbol
        return self.N / self.N.sum()

    def _means(self, v: np.ndarray) -> np.ndarray:
        return np.bincount(self.h, weights=v, minlength=len(self.N)) / np.maximum(self.n, 1)

    def _cov(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Within-stratum sample covariance of ``a`` and ``b`` (``n_h - 1`` denominator; NaN for n_h < 2)."""
        ma, mb = self._means(a), self._means(b)
        s = np.bincount(self.h, weights=(a - ma[self.h]) * (b - mb[self.h]), minlength=len(self.N))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 1, s / (self.n - 1), np.nan)

    def _factor(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (1 - self.n / self.N if self.fpc else np.ones(len(self.N))) / self.n

    def mean(self, y: np.ndarray) -> tuple[float, float]:
        """Stratified estimate of the population mean of ``y`` and its standard error."""
        est = float((self.W * self._means(y)).sum())
        var = float((self.W**2 * self._cov(y, y) * self._factor()).sum())
        return est, math.sqrt(var) if var >= 0 else math.nan

    def ratio(self, y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
        """Stratified combined ratio estimate ``sum N_h ybar_h / sum N_h xbar_h`` and its standard error."""
        Y, X = float((self.N * self._means(y)).sum()), float((self.N * self._means(x)).sum())
        if X == 0:
            return math.nan, math.nan
        r = Y / X
        terms = self.N**2 * self._factor() * (self._cov(y, y) + r * r * self._cov(x, x) - 2 * r * self._cov(x, y))
        var = float(terms.sum()) / X**2
        return r, math.sqrt(var) if var >= 0 else math.nan


@dataclass
class AreaEstimate:
    """The estimates of one interpreted sample: per-class figures, overall accuracy and the matrices.

    ``classes``: one row per class (the reference classes found and the classes mapped), with the
    area proportion and area (ha) and their standard errors, user's and producer's accuracy and
    their standard errors. ``confusion``: sample counts, map class x reference class;
    ``proportions``: the estimated area proportions of the same cells (Olofsson 2014 Table 9).
    """

    classes: pd.DataFrame
    overall_accuracy: float
    overall_accuracy_se: float
    confusion: pd.DataFrame
    proportions: pd.DataFrame
    strata: pd.DataFrame
    pixel_area_m2: float
    total_px: int
    notes: list[str] = field(default_factory=list)
    #: Names of the map classes as stored (k-means clusters, change transitions), for the matrices' rows.
    map_class_names: dict[int, str] = field(default_factory=dict)

    @property
    def total_area_ha(self) -> float:
        return self.total_px * self.pixel_area_m2 / 1e4

    def table(self) -> pd.DataFrame:
        """``area_estimates.csv``: one row per class and nothing else, so each column sums (the estimated
        areas to the map's area) or averages over classes as it stands; the overall figures are
        :meth:`summary`'s."""
        c = self.classes
        return pd.DataFrame({
            "class_id": c["class_id"].astype("Int64"), "class_name": c["class_name"],
            "mapped_px": c["mapped_px"].astype("Int64"), "mapped_area_ha": c["mapped_area_ha"],
            "area_proportion": c["area_proportion"], "area_proportion_se": c["area_proportion_se"],
            "estimated_area_ha": c["area_ha"], "se_ha": c["area_se_ha"],
            "ci95_low_ha": c["area_ha"] - Z95 * c["area_se_ha"], "ci95_high_ha": c["area_ha"] + Z95 * c["area_se_ha"],
            "users_accuracy": c["users_accuracy"], "users_accuracy_ci95": Z95 * c["users_accuracy_se"],
            "producers_accuracy": c["producers_accuracy"], "producers_accuracy_ci95": Z95 * c["producers_accuracy_se"],
            "n_mapped": c["n_mapped"].astype("Int64"), "n_reference": c["n_reference"].astype("Int64"),
        })[AREA_COLUMNS]  # fmt: skip

    def summary(self) -> pd.DataFrame:
        """``area_summary.csv``: one row, the overall accuracy and what the estimates cover (the map's
        pixels and area, the points and strata): figures of the whole map, kept out of the class table."""
        n = int(self.strata["n_sample"].sum())
        return pd.DataFrame([{
            "overall_accuracy": self.overall_accuracy, "overall_accuracy_se": self.overall_accuracy_se,
            "overall_accuracy_ci95": Z95 * self.overall_accuracy_se, "map_px": self.total_px,
            "map_area_ha": self.total_area_ha, "pixel_area_m2": self.pixel_area_m2, "n_points": n,
            "n_strata": len(self.strata),
        }])[SUMMARY_COLUMNS]


def estimate_areas(
    sample: pd.DataFrame,
    strata: pd.DataFrame,
    *,
    pixel_area_m2: float | None = None,
    mapping: Mapping[int, int] | None = None,
    class_names: Mapping[int, str] | None = None,
    reference_column: str = "reference",
    finite_population_correction: bool = False,
) -> AreaEstimate:
    """Estimate class areas and accuracies from an interpreted stratified sample.

    ``sample``: one row per point with ``stratum``, ``map_class`` and the reference class in
    ``reference_column`` (whole numbers; ``point_id`` names the rows in errors). ``strata``: one row
    per stratum with ``stratum``, ``map_class`` and ``mapped_px`` (its pixel count on the map), and
    ``pixel_area_m2`` unless given. ``mapping``: map class -> reference class where they differ (k-means
    clusters); by default a map class is the reference class of the same id. ``class_names``: names
    of the classes (id -> name).
    """
    sample = check_reference(sample, reference_column)
    h, N, n, strata, pixel_area_m2, notes = _strata_of(sample, strata, pixel_area_m2)
    design = _Design(h, N, n, finite_population_correction)

    ref = sample[reference_column].to_numpy(np.int64)
    map_class = sample["map_class"].to_numpy(np.int64)
    # a map class stands for the reference class of the same id, or, with a mapping, for the class it
    # maps to; a map class the mapping leaves out (an unassigned k-means cluster) is right for no class
    given = {int(k): int(v) for k, v in (mapping or {}).items()}

    def as_reference(m: int) -> int:
        return given.get(m, UNASSIGNED) if given else m

    lookup = {int(m): as_reference(int(m)) for m in np.unique(map_class)}
    as_class = np.array([lookup[m] for m in map_class.tolist()], dtype=np.int64)
    stratum_class = np.array([as_reference(int(m)) for m in strata["map_class"]], dtype=np.int64)
    class_ids = sorted((set(ref.tolist()) | set(stratum_class.tolist())) - {UNASSIGNED})
    unassigned = sorted({int(m) for m in strata["map_class"] if as_reference(int(m)) == UNASSIGNED})
    if unassigned:
        notes.append(f"map classes without a reference class in the mapping (wrong wherever sampled): "
                     f"{', '.join(map(str, unassigned))}")
    names = dict(class_names or {})
    ha = pixel_area_m2 / 1e4
    total_px = int(N.sum())

    rows = []
    for k in class_ids:
        is_ref, is_map = (ref == k).astype(float), (as_class == k).astype(float)
        p, p_se = design.mean(is_ref)
        ua, ua_se = design.ratio(is_ref * is_map, is_map)
        pa, pa_se = design.ratio(is_ref * is_map, is_ref)
        mapped = int(N[stratum_class == k].sum())
        rows.append({
            "class_id": k, "class_name": names.get(k, str(k)), "mapped_px": mapped, "mapped_area_ha": mapped * ha,
            "area_proportion": p, "area_proportion_se": p_se, "area_ha": p * total_px * ha,
            "area_se_ha": p_se * total_px * ha, "users_accuracy": ua, "users_accuracy_se": ua_se,
            "producers_accuracy": pa, "producers_accuracy_se": pa_se,
            "n_mapped": int(is_map.sum()), "n_reference": int(is_ref.sum()),
        })  # fmt: skip
    oa, oa_se = design.mean((ref == as_class).astype(float))
    certain = [f"{r['class_id']} {r['class_name']}" for r in rows if r["area_se_ha"] == 0 and 0 < r["area_proportion"] < 1]
    if certain:
        notes.append(f"no sample point disagrees about class(es) {', '.join(certain)}: standard error 0, an interval "
                     "of zero width that cannot cover errors the sample missed; sample more points")

    conf, props = _matrices(strata, map_class, ref, class_ids, design.W[h] / n[h])
    strata_out = strata.copy()
    strata_out["n_sample"] = n.astype(np.int64)
    strata_out["weight"] = N / n
    return AreaEstimate(pd.DataFrame(rows), oa, oa_se, conf, props, strata_out, float(pixel_area_m2), total_px, notes)


def _strata_of(
    sample: pd.DataFrame, strata: pd.DataFrame, pixel_area_m2: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame, float, list[str]]:
    """Each point's stratum ``h``, the strata's mapped pixels ``N`` and points ``n`` (empty strata dropped),
    the pixel area and notes; a stratum with pixels but no point, a point in no stratum or in one without
    pixels, is refused."""
    strata = strata.reset_index(drop=True)
    missing = {"stratum", "map_class", "mapped_px"} - set(strata.columns)
    if missing:
        raise InputError(f"the strata table lacks the column(s) {', '.join(sorted(missing))}")
    if pixel_area_m2 is None:
        if "pixel_area_m2" not in strata:
            raise InputError("the strata table has no pixel_area_m2 column; give the pixel area")
        pixel_area_m2 = float(strata["pixel_area_m2"].iloc[0])
    names_of_strata = pd.Index(strata["stratum"].astype(str).to_numpy(object))
    h = names_of_strata.get_indexer(sample["stratum"].astype(str).to_numpy(object)).astype(np.intp)
    if (h < 0).any():
        unknown = sorted({str(s) for s, i in zip(sample["stratum"], h) if i < 0})
        raise InputError(f"sample points in strata the strata table does not list: {', '.join(unknown[:8])}")
    N = strata["mapped_px"].to_numpy(np.float64)
    n = np.bincount(h, minlength=len(N)).astype(np.float64)
    notes: list[str] = []
    empty = [str(s) for s, nh, Nh in zip(strata["stratum"], n, N) if nh == 0 and Nh > 0]
    if empty:
        raise InputError(f"strata with mapped pixels but no sample point: {', '.join(empty[:8])}; "
                         "every stratum needs points (two or more for a standard error)")
    orphan = [str(s) for s, nh, Nh in zip(strata["stratum"], n, N) if nh > 0 and Nh <= 0]
    if orphan:
        raise InputError(f"sample points in strata with no mapped pixels: {', '.join(orphan[:8])}; "
                         "give the strata table the sample was drawn with")
    single = [str(s) for s, nh in zip(strata["stratum"], n) if nh == 1]
    if single:
        notes.append(f"strata with one sample point (no standard error): {', '.join(single[:8])}")
    keep = N > 0
    if not keep.all():  # an empty stratum weighs nothing
        remap = np.cumsum(keep) - 1
        h, N, n, strata = remap[h], N[keep], n[keep], strata[keep].reset_index(drop=True)
    return h, N, n, strata, float(pixel_area_m2), notes


def _matrices(
    strata: pd.DataFrame, map_class: np.ndarray, ref: np.ndarray, class_ids: list[int], weight: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sample's counts (map class x reference class) and each cell's estimated area proportion: the sum
    over points of their stratum's ``W_h / n_h`` (``weight``)."""
    map_ids = sorted(set(strata["map_class"].astype(int).tolist()))
    row_of = np.searchsorted(map_ids, map_class)
    col_of = np.searchsorted(class_ids, ref)
    counts = np.zeros((len(map_ids), len(class_ids)), np.int64)
    np.add.at(counts, (row_of, col_of), 1)
    cells = np.zeros(counts.shape)
    np.add.at(cells, (row_of, col_of), weight)
    axes = {"index": pd.Index(map_ids, name="map_class"), "columns": pd.Index(class_ids, name="reference")}
    return pd.DataFrame(counts, **axes), pd.DataFrame(cells, **axes)


def check_reference(sample: pd.DataFrame, column: str = "reference") -> pd.DataFrame:
    """The sample with its reference column as integers; an empty or non-integer cell is an
    :class:`InputError` naming the rows (``point_id``), so the interpreter can finish them."""
    if column not in sample:
        raise InputError(f"the sample has no {column!r} column (columns: {', '.join(map(str, sample.columns))})")
    ids = sample["point_id"] if "point_id" in sample else pd.Series(sample.index, index=sample.index)
    raw = sample[column]
    if pd.api.types.is_numeric_dtype(raw.dtype):  # as read from a GeoPackage or a filled CSV
        values = raw.astype("Float64")
        empty = values.isna().to_numpy(bool)
    else:  # text: a spreadsheet's cells
        text = raw.astype("string").str.strip()
        values = pd.to_numeric(text.replace("", pd.NA), errors="coerce").astype("Float64")
        empty = (raw.isna() | (text == "")).to_numpy(bool)
    whole = (values % 1 == 0).fillna(False).to_numpy(bool)
    bad = ~empty & ~whole
    for mask, what in ((empty, "empty"), (bad, "not a whole-number class id")):
        if mask.any():
            rows = ids[mask].tolist()
            shown = ", ".join(str(r) for r in rows[:12]) + (f" ... ({len(rows)} in all)" if len(rows) > 12 else "")
            example = "" if what == "empty" else f" (e.g. {raw[mask].iloc[0]!r})"
            raise InputError(f"the {column!r} column is {what} for point_id {shown}{example}; "
                             "fill it with each point's reference class id")
    return sample.assign(**{column: values.astype(np.int64)})


def round_to_se(value: float, se: float, digits: int = 2) -> tuple[float, float]:
    """Round an estimate and its standard error to the SE's ``digits`` significant digits.

    >>> round_to_se(21158.2, 6158.4)
    (21200.0, 6200.0)
    >>> round_to_se(0.94647, 0.00944)
    (0.9465, 0.0094)
    """
    if not (math.isfinite(se) and se > 0 and math.isfinite(value)):
        return value, se
    step = 10.0 ** (math.floor(math.log10(se)) - digits + 1)
    return round(round(value / step) * step, 10), round(round(se / step) * step, 10)
