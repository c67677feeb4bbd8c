"""Which reference class a sample's map class stands for, read from a run's ``class_mapping.csv``.

A mapped run publishes ``labels.zarr`` in *class* ids (``raster_value``) and keeps the method's own
labels (k-means clusters, ``label_id``) in ``labels.zarr/method_labels``; ``geoseg evaluate`` on its
own leaves the raster it scored in label ids. A sample drawn on either holds that raster's values as
its map classes, so the table is read by the column whose values *and names* are the sample's: keyed
by ``label_id`` a sample of class ids would be mapped a second time (cluster 2 → cultivated land
applied to class 2, forest). A sample that fits neither column, or both differently, is refused.

Without a mapping a map class stands for the reference class of its id; for k-means clusters that
is a coincidence of numbering (cluster_1 counted as cropland), so :func:`refuse_unmapped_clusters`
refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from geoseg.errors import JobSpecError
from geoseg.legend import cluster_legend


def read_class_mapping(path: str | Path) -> pd.DataFrame:
    """A ``class_mapping.csv`` of ``geoseg run`` / ``geoseg evaluate``, checked for its columns."""
    path = Path(path)
    if not path.exists():
        raise JobSpecError(f"--mapping: {path} does not exist")
    table = pd.read_csv(path)
    if not {"label_id", "class_id"} <= set(table.columns):
        raise JobSpecError(f"--mapping: {path} needs label_id and class_id columns (a class_mapping.csv)")
    return table


def _keyed(table: pd.DataFrame, key: str, name: str) -> dict[int, tuple[str, int | None]]:
    """``key`` value → (the name that value has in its raster's legend, its class id or None)."""
    out: dict[int, tuple[str, int | None]] = {}
    for row in table.itertuples(index=False):
        value, cid = getattr(row, key), row.class_id
        if pd.isna(value):
            continue
        own = getattr(row, name)
        label = own if not pd.isna(cid) and isinstance(own, str) else row.label_name  # unassigned: its own name
        out[int(value)] = (str(label), None if pd.isna(cid) else int(cid))
    return out


def mapping_for_sample(table: pd.DataFrame, map_names: Mapping[int, str]) -> tuple[dict[int, int], str]:
    """Map class → reference class for a sample whose map classes (id → name) are ``map_names``,
    and the column of ``table`` that gave it (``label_id`` or ``raster_value``).

    >>> t = pd.DataFrame({"label_id": [0, 1], "label_name": ["cluster_0", "cluster_1"],
    ...                   "class_id": [2, 1], "class_name": ["forest", "crop"], "raster_value": [2, 1]})
    >>> mapping_for_sample(t, {0: "cluster_0", 1: "cluster_1"})
    ({0: 2, 1: 1}, 'label_id')
    >>> mapping_for_sample(t, {1: "crop", 2: "forest"})
    ({1: 1, 2: 2}, 'raster_value')
    """
    if not map_names:
        raise JobSpecError("--mapping with a class_mapping.csv needs the sample's map class names (the sample's "
                           "classes table or map_class_name column) to tell cluster ids from class ids; "
                           'give the mapping as "0=3,1=1" instead')
    candidates = {"label_id": _keyed(table, "label_id", "label_name")}
    if "raster_value" in table.columns:
        candidates["raster_value"] = _keyed(table, "raster_value", "class_name")
    fits = {}
    for key, keyed in candidates.items():
        if all(m in keyed and keyed[m][0] == name for m, name in map_names.items()):
            fits[key] = {m: cid for m, (_, cid) in sorted(keyed.items()) if cid is not None and m in map_names}
    if len({tuple(sorted(d.items())) for d in fits.values()}) == 1:
        key = "raster_value" if "raster_value" in fits else "label_id"
        return fits[key], key
    sample = ", ".join(f"{m} {n}" for m, n in sorted(map_names.items()))
    if not fits:
        raise JobSpecError(f"--mapping: the sample's map classes ({sample}) are neither the label ids nor the "
                           "raster values of this class_mapping.csv: was the sample drawn on another run's labels?")
    raise JobSpecError(f"--mapping: the sample's map classes ({sample}) fit both the label ids and the raster values "
                       'of this class_mapping.csv with different classes; give the mapping as "0=3,1=1" instead')


def refuse_unmapped_clusters(map_names: Mapping[int, str], reference_names: Mapping[int, str]) -> None:
    """Refuse a sample of unnamed k-means clusters (``cluster_N``, as :func:`geoseg.legend.cluster_legend`
    names them) estimated without a mapping: their ids carry no class, so its accuracies and mapped
    areas would describe cluster N as reference class N.

    >>> refuse_unmapped_clusters({0: "cluster_0", 1: "cluster_1"}, {0: "cluster_0", 1: "cluster_1"})
    >>> refuse_unmapped_clusters({1: "cropland"}, {1: "cropland"})
    >>> refuse_unmapped_clusters({0: "cluster_0", 1: "cluster_1"}, {1: "cropland"})
    Traceback (most recent call last):
    ...
    geoseg.errors.JobSpecError: the sample's map classes are k-means clusters (cluster_0, cluster_1), ...
    """
    if not map_names or any(cluster_legend(m + 1)[m].name != n for m, n in map_names.items() if m >= 0):
        return
    if any(m < 0 for m in map_names) or all(reference_names.get(m) == n for m, n in map_names.items()):
        return  # the reference is labelled in the same clusters
    raise JobSpecError(
        f"the sample's map classes are k-means clusters ({', '.join(n for _, n in sorted(map_names.items()))}), "
        "whose ids are no classes: without a mapping cluster N would be scored as reference class N. Give "
        '--mapping: the run\'s class_mapping.csv, or "0=3,1=1"')
