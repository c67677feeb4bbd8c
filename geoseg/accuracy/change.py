"""Change between two periods: class-to-class transitions per region and a change map.

Both label stores must be on one grid (the same job run on two scenes of the same tile). Per
chunk, the task counts ``(region, class before, class after)`` in one compiled pass and writes
the chunk of a change map; only the count arrays reach the client.

The change map (``change.zarr``, uint16, GDAL-readable like ``labels.zarr``) holds
``before * 256 + after`` where the class changed, 0 where it did not, 65535 where either
period has no data. Its CF flags and QGIS style (``change.qml``) name those codes (``forest →
water``, ``unchanged``); ``geoseg:classes`` is the periods' class legend they combine
(:mod:`geoseg.accuracy.changelegend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoseg.accuracy.changelegend import (
    check_cluster_numbering,
    flag_attrs,
    periods_legend,
    transition_legend,
)
from geoseg.accuracy.counting import count_pixels
from geoseg.accuracy.regions import open_regions, regions_window_codes
from geoseg.errors import GridMismatchError
from geoseg.geo import ChunkGrid, Window
from geoseg.io.atomic import write_atomic, write_json_atomic
from geoseg.io.labelstore import LabelStoreWriter, read_label_info, read_label_window, write_style
from geoseg.legend import ClassInfo

CHANGE_NODATA = 65535
_N = 256  # label values are uint8


@dataclass(frozen=True)
class _ChangePlan:
    before: str
    after: str
    nodata_before: int
    nodata_after: int
    grid: ChunkGrid
    regions: Any
    n_regions: int
    change_store: str | None


def _change_task(plan: _ChangePlan, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Transition counts of one chunk as ``(codes, pixels)`` with code = (slot*256 + before)*256 + after.

    Counted like an evaluation (:func:`geoseg.accuracy.counting.count_pixels`, the period before in the
    reference's place), so nodata in either period is left out in the same compiled pass.
    """
    before = read_label_window(plan.before, window)
    after = read_label_window(plan.after, window)
    codes, slot_of = regions_window_codes(plan.regions, plan.grid.window_grid(window))
    if plan.change_store:
        a, b = before.astype(np.uint16), after.astype(np.uint16)
        change = np.where(a == b, 0, a * _N + b)
        change[(before == plan.nodata_before) | (after == plan.nodata_after)] = CHANGE_NODATA
        LabelStoreWriter(plan.change_store, plan.grid).write(window, change)
    counts = count_pixels(after, before, plan.nodata_before, codes, plan.nodata_after)
    g, j, k = np.nonzero(counts.counts)
    slots = slot_of[counts.regions[g]]
    return (slots * _N + counts.ref_values[j]) * _N + counts.label_values[k], counts.counts[g, j, k]


def _sum_sparse(parts: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    codes = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    pixels = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    u, inv = np.unique(codes, return_inverse=True)
    total = np.bincount(inv, weights=pixels, minlength=len(u)).astype(np.int64)
    return pd.DataFrame({"slot": u // (_N * _N), "from_class": (u // _N) % _N, "to_class": u % _N, "pixels": total})


@dataclass
class ChangeReport:
    """Transition pixel counts per region slot (0 = outside every region), with names and pixel area."""

    table: pd.DataFrame  # slot, from_class, to_class, pixels
    region_ids: tuple
    legend: tuple[ClassInfo, ...]
    pixel_area: float  # m² (a grid in feet converted; geographic: the mean on the ellipsoid)

    def _rows(self, region: Any) -> pd.DataFrame:
        if region == "ALL":
            return self.table.groupby(["from_class", "to_class"], as_index=False)["pixels"].sum()
        slot = self.region_ids.index(region) + 1
        return self.table[self.table.slot == slot][["from_class", "to_class", "pixels"]]

    def transitions(self, region: Any = "ALL", changed_only: bool = False) -> pd.DataFrame:
        """Long table: ``from_class, from_name, to_class, to_name, pixels, area_m2``."""
        df = self._rows(region).copy()
        names = {c.id: c.name for c in self.legend}
        df.insert(1, "from_name", [names.get(int(v), str(v)) for v in df.from_class])
        df.insert(3, "to_name", [names.get(int(v), str(v)) for v in df.to_class])
        df["area_m2"] = df["pixels"] * self.pixel_area
        if changed_only:
            df = df[df.from_class != df.to_class]
        return df.sort_values(["from_class", "to_class"]).reset_index(drop=True)

    def matrix(self, region: Any = "ALL") -> pd.DataFrame:
        """Transition matrix in pixels (rows: class before, columns: class after)."""
        df = self._rows(region)
        m = df.pivot_table(index="from_class", columns="to_class", values="pixels", aggfunc="sum", fill_value=0)
        classes = sorted(set(m.index) | set(m.columns))
        return m.reindex(index=classes, columns=classes, fill_value=0)

    def per_region(self) -> pd.DataFrame:
        """Long table over regions: ``region_id, from_class, ..., pixels, area_m2`` (``ALL`` first)."""
        frames = []
        for region in ("ALL", *self.region_ids):
            df = self.transitions(region)
            df.insert(0, "region_id", region)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def changed_area_m2(self, region: Any = "ALL") -> float:
        return float(self.transitions(region, changed_only=True)["area_m2"].sum())

    def total_area_m2(self) -> float:
        return float(self.table["pixels"].sum() * self.pixel_area)


def compare_periods(
    before: str | Path,
    after: str | Path,
    out_dir: str | Path | None = None,
    *,
    regions: str | Path | None = None,
    region_field: str | None = None,
    client: Any = None,
) -> ChangeReport:
    """Compare two label stores on one grid; with ``out_dir``, write the change map and tables.

    Writes ``change.zarr``, ``transitions.csv`` (per region, long), ``change-summary.json``.
    """
    ia, ib = read_label_info(before), read_label_info(after)
    legend = periods_legend(ia.legend, ib.legend)  # before any work: one meaning for a value in both periods
    check_cluster_numbering(ia.legend, ib.legend, ia.attrs, ib.attrs)
    if not (ia.grid.crs == ib.grid.crs and ia.grid.shape == ib.grid.shape
            and ia.grid.transform.almost_equals(ib.grid.transform)):
        raise GridMismatchError(
            f"{before} and {after} are not on one grid; change needs two runs of the same job on the same tile"
        )
    grid = ia.chunk_grid
    reg = open_regions(str(regions), region_field, ia.grid, merge_duplicates=True) if regions else None
    n_regions = len(reg.ids) if reg is not None else 0
    store = None
    writer = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        writer = LabelStoreWriter.create(out_dir / "change.zarr", grid, legend, dtype="uint16",
                                         fill_value=CHANGE_NODATA,
                                         attrs={"long_name": "class change: before*256+after, 0 = unchanged"})
        store = str(out_dir / "change.zarr")
    plan = _ChangePlan(str(before), str(after), ia.nodata, ib.nodata, grid, reg, n_regions, store)
    windows = list(grid.windows())
    if client is not None:
        parts = client.gather(client.map(_change_task, [plan] * len(windows), windows, pure=False))
    else:
        parts = [_change_task(plan, w) for w in windows]
    report = ChangeReport(_sum_sparse(parts), tuple(reg.ids) if reg is not None else (), legend,
                          grid.grid.pixel_area_m2)
    if writer is not None:
        assert out_dir is not None  # a writer exists only with out_dir
        # geoseg:classes stays the periods' legend (it decodes the codes); CF flags and the QGIS style
        # name the values the map holds: transitions, 0 unchanged
        codes = transition_legend(legend, zip(report.table["from_class"], report.table["to_class"]))
        write_style(writer.finalize(extra_attrs=flag_attrs(codes)), codes, nodata=CHANGE_NODATA)
        _write_tables(report, Path(out_dir), before, after)
    return report


def _write_tables(report: ChangeReport, out: Path, before: str | Path, after: str | Path) -> None:
    table = report.per_region()
    write_atomic(out / "transitions.csv", lambda tmp: table.to_csv(tmp, index=False))
    changed = report.transitions("ALL", changed_only=True).sort_values("pixels", ascending=False)
    write_json_atomic(out / "change-summary.json", {
        "before": str(before), "after": str(after),
        "changed_area_m2": report.changed_area_m2(),
        "total_area_m2": report.total_area_m2(),
        "top_transitions": changed.head(10).to_dict(orient="records"),
    })
