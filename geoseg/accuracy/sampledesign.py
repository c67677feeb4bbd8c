"""A stratified random sample of points on a label raster, for area estimation (Olofsson et al. 2014).

Strata are the map classes as stored (k-means clusters, classes, or the transition codes of a
``geoseg change`` map), optionally crossed with regions. One pass over the store's chunks, on
threads (or a Dask cluster), counts every stratum's pixels and keeps each stratum's ``cap``
pixels with the lowest random keys (:mod:`geoseg._kernels.samplekeys`: a hash of seed and pixel
index, so the sample does not depend on the chunking); the allocation is then computed from the
counts and each stratum's ``n_h`` lowest-key pixels are its simple random sample. ``cap`` bounds
every ``n_h`` before the counts are known (:meth:`Allocation.cap`), so one read of the raster is
enough and memory follows the chunk.

Allocation follows Olofsson et al. (2014, section 5.1): the total size from a target standard error
of the overall accuracy and the user's accuracies expected per class (their eq. 13), or given; then
proportional to the strata's sizes, or equal, with at least ``min_per_stratum`` points in every
stratum (rare classes), or given per stratum.

:func:`write_sample` writes the points (GeoPackage with a QGIS style, and CSV) with an empty
``reference`` column and the strata table, so ``geoseg estimate`` needs nothing else;
:func:`label_from_reference` fills the column from a reference map read as ``geoseg evaluate``
reads it (:mod:`geoseg.accuracy.reference`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from geoseg.errors import InputError, JobSpecError
from geoseg.geo import ChunkGrid, GeoGrid, Window
from geoseg.legend import PALETTE, ClassInfo

#: User's accuracy expected of every class when none is given (Olofsson et al. 2014 use 0.7-0.9).
DEFAULT_EXPECTED_ACCURACY = 0.8

#: Layers of the sample GeoPackage.
POINTS_LAYER, STRATA_LAYER, CLASSES_LAYER = "sample", "strata", "classes"

#: Columns of the points table, in order (``reference`` is left empty for the interpreter).
POINT_COLUMNS = [
    "point_id", "stratum", "region", "map_class", "map_class_name", "row", "col", "x", "y",
    "inclusion_probability", "weight", "reference",
]  # fmt: skip


@dataclass(frozen=True)
class Allocation:
    """How many points each stratum gets.

    Total: ``n``, or from ``target_se`` (the standard error wanted of the overall accuracy) and
    ``expected_accuracy`` (one user's accuracy for every class, or per map class). Split:
    ``"proportional"`` to the strata's sizes or ``"equal"``, each stratum getting at least
    ``min_per_stratum`` (all its pixels if fewer); or ``per_stratum`` (map class, or stratum name
    ``region|class`` with regions -> points) for every stratum.
    """

    n: int | None = None
    target_se: float | None = None
    expected_accuracy: float | Mapping[int, float] = DEFAULT_EXPECTED_ACCURACY
    method: Literal["proportional", "equal"] = "proportional"
    min_per_stratum: int = 50
    per_stratum: Mapping[Any, int] | None = None

    def __post_init__(self) -> None:
        given = sum(v is not None for v in (self.n, self.target_se, self.per_stratum))
        if given != 1:
            raise JobSpecError("give exactly one of a sample size (n), a target standard error of the overall "
                               "accuracy (target_se), or the points per stratum")
        if self.n is not None and self.n < 1:
            raise JobSpecError(f"the sample size must be at least 1, got {self.n}")
        if self.target_se is not None and not 0 < self.target_se < 0.5:
            raise JobSpecError(f"the target standard error must lie between 0 and 0.5, got {self.target_se}")
        if self.method not in ("proportional", "equal"):
            raise JobSpecError(f"allocation must be proportional or equal, got {self.method!r}")
        if self.min_per_stratum < 0:
            raise JobSpecError(f"the minimum per stratum must be 0 or more, got {self.min_per_stratum}")
        accs = self.expected_accuracy.values() if isinstance(self.expected_accuracy, Mapping) else [self.expected_accuracy]
        if any(not 0 < float(a) < 1 for a in accs):
            raise JobSpecError("expected user's accuracies must lie strictly between 0 and 1")

    def cap(self) -> int:
        """An upper bound of any stratum's points, known before the strata are counted."""
        if self.per_stratum is not None:
            return max([int(v) for v in self.per_stratum.values()] + [0])
        if self.n is not None:
            return max(self.n, self.min_per_stratum)
        worst = max(_std(a) for a in self._accuracies())  # n = (sum W_h S_h / SE)^2 <= (max S_h / SE)^2
        return max(math.ceil((worst / float(self.target_se)) ** 2), self.min_per_stratum)  # type: ignore[arg-type]

    def _accuracies(self) -> list[float]:
        if isinstance(self.expected_accuracy, Mapping):
            return [float(v) for v in self.expected_accuracy.values()] + [DEFAULT_EXPECTED_ACCURACY]
        return [float(self.expected_accuracy)]

    def expected(self, map_class: int) -> float:
        if isinstance(self.expected_accuracy, Mapping):
            return float(self.expected_accuracy.get(map_class, DEFAULT_EXPECTED_ACCURACY))
        return float(self.expected_accuracy)


def _std(accuracy: float) -> float:
    return math.sqrt(accuracy * (1 - accuracy))


def sample_size(weights: Sequence[float], accuracies: Sequence[float], target_se: float) -> int:
    """Olofsson et al. (2014) eq. 13: ``n = (sum_h W_h S_h / SE(O))^2``, ``S_h = sqrt(U_h (1 - U_h))``.

    >>> sample_size([0.02, 0.015, 0.32, 0.645], [0.7, 0.6, 0.9, 0.95], 0.01)  # the paper's 641
    641
    """
    s = sum(w * _std(u) for w, u in zip(weights, accuracies))
    return math.ceil(round((s / target_se) ** 2, 6))


def allocate(sizes: Mapping[Any, int], allocation: Allocation, map_class: Mapping[Any, int] | None = None) -> dict[Any, int]:
    """Points per stratum from the strata's pixel counts (``sizes``: stratum -> pixels).

    Never more points than pixels. With a minimum per stratum, strata whose share falls below it get
    the minimum and the rest of ``n`` is shared among the others the same way (Olofsson et al. 2014:
    "allocate 50-100 to the rare classes and the rest proportionally"); the total may then exceed ``n``.
    """
    strata = [s for s, v in sizes.items() if v > 0]
    if allocation.per_stratum is not None:
        given = {str(k): int(v) for k, v in allocation.per_stratum.items()}
        missing = [str(s) for s in strata if str(s) not in given]
        if missing:
            raise InputError(f"no number of points given for stratum/strata {', '.join(missing)} "
                             f"(strata: {', '.join(map(str, strata))})")
        return {s: min(given[str(s)], int(sizes[s])) for s in strata}
    classes = map_class or {s: s for s in strata}
    total = allocation.n
    if total is None:
        n_px = sum(sizes[s] for s in strata)
        total = sample_size([sizes[s] / n_px for s in strata], [allocation.expected(int(classes[s])) for s in strata],
                            float(allocation.target_se))  # type: ignore[arg-type]
    return _split(total, {s: int(sizes[s]) for s in strata}, allocation.method, allocation.min_per_stratum)


def _split(total: int, sizes: dict[Any, int], method: str, minimum: int) -> dict[Any, int]:
    fixed: dict[Any, int] = {}
    while True:
        free = [s for s in sizes if s not in fixed]
        rest = max(total - sum(fixed.values()), 0)
        weight = {s: (sizes[s] if method == "proportional" else 1) for s in free}
        wsum = sum(weight.values())
        share = {s: rest * weight[s] / wsum for s in free} if wsum else {}
        low = [s for s in free if share[s] < min(minimum, sizes[s]) or share[s] > sizes[s]]
        if not low:
            break
        for s in low:
            fixed[s] = min(max(minimum, math.floor(share[s])), sizes[s])
    out = dict(fixed)
    floors = {s: math.floor(v) for s, v in share.items()}
    left = rest - sum(floors.values())  # largest remainders get the points lost to rounding
    for s in sorted(share, key=lambda s: (floors[s] - share[s], str(s)))[: max(left, 0)]:
        floors[s] += 1
    out.update({s: min(v, sizes[s]) for s, v in floors.items()})
    return {s: out[s] for s in sizes}


# --------------------------------------------------------------------------- the pass over the chunks


@dataclass(frozen=True)
class _Plan:
    labels: str
    grid: ChunkGrid
    nodata: int
    dtype: str
    regions: Any
    seed: int
    cap: int


@dataclass
class _Part:
    """Counts and lowest-key pixels per stratum value (``region slot * 2^16 + label``)."""

    counts: dict[int, int] = field(default_factory=dict)
    keys: dict[int, np.ndarray] = field(default_factory=dict)
    pixels: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, value: int, count: int, keys: np.ndarray, pixels: np.ndarray, cap: int) -> None:
        self.counts[value] = self.counts.get(value, 0) + int(count)
        if not len(keys):
            return
        if value in self.keys:
            keys, pixels = np.concatenate([self.keys[value], keys]), np.concatenate([self.pixels[value], pixels])
        if len(keys) > cap:
            keep = np.argpartition(keys, cap - 1)[:cap]
            keys, pixels = keys[keep], pixels[keep]
        self.keys[value], self.pixels[value] = keys, pixels

    def merge(self, other: _Part, cap: int) -> _Part:
        for v, c in other.counts.items():
            self.add(v, c, other.keys.get(v, np.empty(0, np.uint64)), other.pixels.get(v, np.empty(0, np.int64)), cap)
        return self


_SLOT = 1 << 16  # stratum value = region slot * 2^16 + label (labels are at most 16 bits)


def _sample_windows(plan: _Plan, windows: Sequence[Window]) -> _Part:
    """Task: count and draw over several windows in turn (one set of thresholds for byte labels)."""
    from geoseg._kernels.samplekeys import LowestKeys
    from geoseg.accuracy.regions import regions_window
    from geoseg.io.labelstore import read_label_window

    part = _Part()
    width = plan.grid.width
    if plan.dtype == "uint8" and plan.regions is None:  # the usual case: the label bytes are the codes
        skip = np.zeros(256, bool)
        skip[plan.nodata] = plan.nodata < 256
        found = LowestKeys(256, plan.cap, plan.seed, skip)
        for w in windows:
            found.offer(read_label_window(plan.labels, w), w.row_off, w.col_off, width)
        counts = found.counts
        for v in np.flatnonzero(counts):
            part.add(int(v), int(counts[v]), *found.lowest(int(v)), plan.cap)
        return part
    for w in windows:  # strata numbered densely per window (regions, 16-bit change maps)
        labels = read_label_window(plan.labels, w).astype(np.int64)
        if plan.regions is not None:
            labels += regions_window(plan.regions, plan.grid.window_grid(w)).astype(np.int64) * _SLOT
        values, codes = np.unique(labels, return_inverse=True)
        skip = (values % _SLOT) == plan.nodata
        found = LowestKeys(len(values), plan.cap, plan.seed, skip)
        found.offer(codes.reshape(labels.shape).astype(np.int32), w.row_off, w.col_off, width)
        counts = found.counts
        for i, v in enumerate(values):
            part.add(int(v), int(counts[i]), *found.lowest(i), plan.cap)
    return part


def _groups(windows: list[Window], n: int) -> list[list[Window]]:
    size = max(1, -(-len(windows) // n))
    return [windows[i : i + size] for i in range(0, len(windows), size)]


def _scan(plan: _Plan, client: Any = None, threads: int | None = None, show_progress: bool = False) -> _Part:
    """One pass over every chunk: tasks of consecutive windows, their parts merged as they finish."""
    from geoseg._kernels.compiled import usable_cores

    windows = list(plan.grid.windows())
    total = _Part()
    if client is not None:
        from distributed import as_completed

        n_tasks = max(1, min(len(windows), 2 * sum(client.nthreads().values())))
        futures = client.map(_sample_windows, [plan] * n_tasks, _groups(windows, n_tasks), pure=False)
        for fut in as_completed(futures):
            total.merge(fut.result(), plan.cap)
        return total
    n_threads = threads or usable_cores()
    groups = _groups(windows, n_threads)  # one run of consecutive chunks per thread: thresholds tighten once
    with ThreadPoolExecutor(n_threads) as pool:
        for part in pool.map(lambda g: _sample_windows(plan, g), groups):
            total.merge(part, plan.cap)
    return total


# --------------------------------------------------------------------------- the sample


@dataclass
class StratifiedSample:
    """The drawn points, the strata (with their mapped pixel counts) and the classes' names."""

    points: pd.DataFrame
    strata: pd.DataFrame
    classes: pd.DataFrame  # kind ("map" / "reference"), class_id, name, color
    grid: GeoGrid
    labels_path: str
    seed: int

    @property
    def crs_wkt(self) -> str:
        return self.grid.crs_wkt


def draw_sample(
    labels: str | Path,
    allocation: Allocation,
    *,
    regions: str | Path | None = None,
    region_field: str | None = None,
    seed: int = 0,
    client: Any = None,
    threads: int | None = None,
) -> StratifiedSample:
    """Draw a stratified random sample of pixel centres from a label store (or label GeoTIFF).

    Strata are its values as stored (nodata left out), crossed with ``regions`` (a polygon layer,
    non-overlapping) when given; pixels in no region form their own stratum per class (region ``""``).
    The same ``seed`` gives the same points whatever the chunking or the number of threads.
    """
    from geoseg.io.labelstore import read_label_info

    info = read_label_info(labels)
    reg = None
    if regions is not None:
        from geoseg.accuracy.regions import open_regions

        reg = open_regions(str(regions), region_field, info.grid)
        if getattr(reg, "n_groups", 1) > 1:
            raise InputError(f"regions {regions} overlap; strata must not: give a layer of disjoint regions")
    dtype = _store_dtype(info)
    plan = _Plan(str(labels), info.chunk_grid, info.nodata, dtype, reg, int(seed), allocation.cap())
    part = _scan(plan, client=client, threads=threads)

    values = sorted(v for v, c in part.counts.items() if c > 0 and v % _SLOT != info.nodata)
    if not values:
        raise InputError(f"label raster {labels} holds no data pixel to sample")
    region_ids = [""] + [str(r) for r in reg.ids] if reg is not None else [""]
    names = class_names_of(info)
    rows = []
    for v in values:
        slot, cls = divmod(v, _SLOT)
        region = region_ids[slot] if slot < len(region_ids) else str(slot)
        rows.append({"stratum": f"{region}|{cls}" if reg is not None else str(cls), "region": region,
                     "map_class": cls, "map_class_name": names.get(cls, str(cls)), "mapped_px": part.counts[v],
                     "value": v})
    strata = pd.DataFrame(rows)
    by_name = dict(zip(strata["stratum"], strata["value"]))
    n_h = allocate(dict(zip(strata["stratum"], strata["mapped_px"])), allocation,
                   dict(zip(strata["stratum"], strata["map_class"])))
    strata["n_sample"] = [n_h[s] for s in strata["stratum"]]
    strata["pixel_area_m2"] = info.grid.pixel_area_m2
    strata["inclusion_probability"] = strata["n_sample"] / strata["mapped_px"]

    picked = []
    for s, n in n_h.items():
        keys, pixels = part.keys.get(by_name[s], np.empty(0, np.uint64)), part.pixels.get(by_name[s], np.empty(0))
        order = np.argsort(keys, kind="stable")[:n]
        picked.append(pd.DataFrame({"stratum": s, "key": keys[order], "pixel": pixels[order],
                                    "turn": (np.arange(len(order)) + 0.5) / max(len(order), 1)}))
    # strata interleaved (each stratum's points spread evenly over the list, in key order), so an
    # interpreter stopping halfway leaves every stratum half done rather than the rare ones untouched
    pts = pd.concat(picked, ignore_index=True).sort_values(["turn", "key"], kind="stable").reset_index(drop=True)
    pts = pts.merge(strata[["stratum", "region", "map_class", "map_class_name", "inclusion_probability"]],
                    on="stratum", how="left")
    row, col = np.divmod(pts["pixel"].to_numpy(np.int64), info.grid.width)
    t = info.grid.transform
    pts["point_id"] = np.arange(1, len(pts) + 1)
    pts["row"], pts["col"] = row, col
    pts["x"] = t.c + t.a * (col + 0.5) + t.b * (row + 0.5)
    pts["y"] = t.f + t.d * (col + 0.5) + t.e * (row + 0.5)
    pts["weight"] = 1.0 / pts["inclusion_probability"]
    pts["reference"] = pd.array([pd.NA] * len(pts), dtype="Int64")
    classes = pd.DataFrame([{"kind": "map", "class_id": c.id, "name": c.name, "color": c.color}
                            for c in legend_of(info, strata["map_class"].unique())])
    return StratifiedSample(pts[POINT_COLUMNS], strata.drop(columns="value"), classes, info.grid, str(labels), int(seed))


def _store_dtype(info: Any) -> str:
    if str(info.path).lower().endswith((".tif", ".tiff")):
        return "uint8"
    import zarr

    from geoseg.io.labelstore import label_array_location

    return str(zarr.open_array(label_array_location(info.path), mode="r", zarr_format=2).dtype)


def is_change_map(info: Any) -> bool:
    """A ``geoseg change`` map: values ``before * 256 + after``, 0 where unchanged."""
    return str(info.attrs.get("long_name", "")).startswith("class change")


def class_names_of(info: Any) -> dict[int, str]:
    """Names of the stored values: the legend's, or ``before → after`` on a change map."""
    names = {c.id: c.name for c in info.legend}
    if not is_change_map(info):
        return names
    out = {0: "unchanged"}
    for b in range(256):
        for a in range(256):
            if b != a and (b in names or a in names):
                out[b * 256 + a] = f"{names.get(b, str(b))} → {names.get(a, str(a))}"
    return out


def legend_of(info: Any, values: Iterable[int]) -> list[ClassInfo]:
    colors = {c.id: c.color for c in info.legend}
    names = class_names_of(info)
    return [ClassInfo(int(v), names.get(int(v), str(v)), colors.get(int(v), PALETTE[i % len(PALETTE)]))
            for i, v in enumerate(sorted(int(v) for v in values))]


# --------------------------------------------------------------------------- labelling from a reference


def label_from_reference(
    sample: StratifiedSample,
    reference: str | Path,
    *,
    field: str | None = None,
    value: int | None = None,
    background: int | None = None,
    class_names: Mapping[int, str] | None = None,
    threads: int | None = None,
) -> int:
    """Fill the ``reference`` column from a reference map (raster or vector, any CRS), read as ``geoseg
    evaluate`` reads it: the reference class at each point's pixel of the label grid (nearest
    neighbour). Points where the reference has no data stay empty. Returns how many were labelled.
    """
    from geoseg._kernels.compiled import usable_cores
    from geoseg.accuracy.reference import open_reference, reference_window

    ref = open_reference(reference, field, sample.grid, value=value, background=background, class_names=class_names)

    def at(rc: tuple[int, int]) -> int | None:
        values, valid = reference_window(ref, sample.grid.window_grid(Window(rc[0], rc[1], 1, 1)))
        return int(values[0, 0]) if valid[0, 0] else None

    cells = list(zip(sample.points["row"].astype(int), sample.points["col"].astype(int)))
    with ThreadPoolExecutor(threads or usable_cores()) as pool:
        found = list(pool.map(at, cells))
    sample.points["reference"] = pd.array(found, dtype="Int64")
    legend = dict(ref.legend) | dict(class_names or {})
    colors = dict(ref.colors)
    seen = sorted({v for v in found if v is not None} | set(legend))
    ref_rows = pd.DataFrame([{"kind": "reference", "class_id": c, "name": legend.get(c, str(c)),
                              "color": colors.get(c, PALETTE[i % len(PALETTE)])} for i, c in enumerate(seen)])
    sample.classes = pd.concat([sample.classes[sample.classes["kind"] != "reference"], ref_rows], ignore_index=True)
    return sum(v is not None for v in found)


# --------------------------------------------------------------------------- files


def write_sample(sample: StratifiedSample, out: str | Path) -> dict[str, Path]:
    """Write ``out`` (``.gpkg``: points layer ``sample`` styled for QGIS, tables ``strata`` and
    ``classes``) and beside it ``<stem>.csv``, ``<stem>-strata.csv`` and ``<stem>-classes.csv``."""
    import geopandas as gpd
    import pyogrio

    from geoseg.io.atomic import write_atomic
    from geoseg.io.gpkg import GEOMETRY_COLUMN, LayerStyle, atomic_gpkg, write_layer_styles

    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise JobSpecError(f"the sample is written as a GeoPackage: name it *.gpkg, not {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pts = sample.points
    gdf = gpd.GeoDataFrame(pts, geometry=gpd.points_from_xy(pts["x"], pts["y"]), crs=sample.crs_wkt)
    legend = [ClassInfo(int(r.class_id), str(r.name), str(r.color))
              for r in sample.classes[sample.classes["kind"] == "map"].itertuples()]
    with atomic_gpkg(out) as tmp:
        pyogrio.write_dataframe(gdf, tmp, layer=POINTS_LAYER, driver="GPKG",
                                layer_options={"GEOMETRY_NAME": GEOMETRY_COLUMN})
        pyogrio.write_dataframe(sample.strata, tmp, layer=STRATA_LAYER, driver="GPKG", append=True)
        pyogrio.write_dataframe(sample.classes, tmp, layer=CLASSES_LAYER, driver="GPKG", append=True)
        write_layer_styles(Path(tmp), [LayerStyle(POINTS_LAYER, f"{POINTS_LAYER}_classes", point_qml(legend),
                                                  "", "geoseg sample: points by map class")])
    paths = {"sample": out}
    for name, table in (("", pts), ("-strata", sample.strata), ("-classes", sample.classes)):
        paths[f"sample{name or ' csv'}"] = write_atomic(out.with_name(f"{out.stem}{name}.csv"), _csv_writer(table))
    return paths


def _csv_writer(table: pd.DataFrame):  # a write_atomic callback
    return lambda path: table.to_csv(path, index=False)


def read_sample(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(points, strata, classes)`` of a sample written by :func:`write_sample` and interpreted: the
    GeoPackage (as edited in QGIS) or the CSV (as edited in a spreadsheet, with its ``-strata.csv``)."""
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputError(f"sample {path} does not exist")
    if path.suffix.lower() == ".gpkg":
        from geoseg.io.opener import check_vector

        check_vector(path, "sample")  # by content: a disguised OGR VRT is never parsed
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
        for needed in (POINTS_LAYER, STRATA_LAYER):
            if needed not in layers:
                raise InputError(f"{path} has no {needed!r} layer: is it a sample written by geoseg sample?")
        points = pd.DataFrame(pyogrio.read_dataframe(path, layer=POINTS_LAYER, read_geometry=False))
        strata = pd.DataFrame(pyogrio.read_dataframe(path, layer=STRATA_LAYER, read_geometry=False))
        classes = (pd.DataFrame(pyogrio.read_dataframe(path, layer=CLASSES_LAYER, read_geometry=False))
                   if CLASSES_LAYER in layers else pd.DataFrame(columns=["kind", "class_id", "name", "color"]))
    else:
        strata_path = path.with_name(f"{path.stem}-strata.csv")
        if not strata_path.exists():
            raise InputError(f"{strata_path} is missing: the strata table written beside the sample CSV is needed")
        points = pd.read_csv(path, dtype={"stratum": str, "region": str}, keep_default_na=False,
                             na_values={"reference": [""]})
        strata = pd.read_csv(strata_path, dtype={"stratum": str, "region": str}, keep_default_na=False)
        classes_path = path.with_name(f"{path.stem}-classes.csv")
        classes = (pd.read_csv(classes_path) if classes_path.exists()
                   else pd.DataFrame(columns=["kind", "class_id", "name", "color"]))
    points["stratum"] = points["stratum"].astype(str)
    strata["stratum"] = strata["stratum"].astype(str)
    return points, strata, classes


def point_qml(legend: Sequence[ClassInfo], field: str = "map_class") -> str:
    """QGIS QML: points as circles in their map class's colour (categorized on ``field``)."""
    from xml.sax.saxutils import quoteattr

    def marker(name: str, color: str) -> str:
        h = color.lstrip("#")
        rgb = f"{int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},255"
        props = {"color": rgb, "name": "circle", "outline_color": "35,35,35,255", "outline_width": "0.2",
                 "size": "2.6", "size_unit": "MM"}
        opts = "".join(f'<Option type="QString" name={quoteattr(k)} value={quoteattr(v)}/>' for k, v in props.items())
        legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
        return (f'<symbol type="marker" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
                f'<layer class="SimpleMarker" enabled="1" pass="0" locked="0"><Option type="Map">{opts}</Option>'
                f"{legacy}</layer></symbol>")

    cats = "".join(f'<category symbol="{i}" value="{c.id}" label={quoteattr(c.name)} render="true" type="integer"/>'
                   for i, c in enumerate(legend))
    symbols = "".join(marker(str(i), c.color) for i, c in enumerate(legend))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="Symbology">'
            f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
            f'forceraster="0" referencescale="-1"><categories>{cats}</categories><symbols>{symbols}</symbols>'
            f"<source-symbol>{marker('0', '#bebebe')}</source-symbol></renderer-v2></qgis>\n")
