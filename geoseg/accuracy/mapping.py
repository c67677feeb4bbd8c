"""Class mappings: which reference class each label id stands for.

``"identity"`` (label id = class id); ``"hungarian"`` (optimal one-to-one assignment of
clusters to classes on the overall confusion matrix, for k-means clusters); ``"many-to-one"``
(each cluster to its majority class); or a ``dict``. Labels left without a class
("unassigned") count as wrong for their reference class and as a false positive for no class.

One id everywhere: once a run maps its labels to classes (any mapping but ``"identity"``), the
published raster, its COG and polygons carry the *class* ids of :func:`output_ids` (the ids of
metrics.csv and the report), not the method's label ids (k-means clusters); class_mapping.csv
says which labels became which class, and the method's own labels stay in
``labels.zarr/method_labels``. With ``"identity"`` the labels already are class ids and keep the
method's own names and colours (a threshold's "vegetation" stays "vegetation" though it is scored
as the reference's "crop").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from geoseg.errors import ClassIdError, OutputError
from geoseg.legend import NODATA_LABEL, ClassInfo, cluster_legend

MAPPINGS = ("identity", "hungarian", "many-to-one")


MappingSpec = str | Mapping[int, int]
#: class or label ids: a sequence or a 1-D integer array
IntValues = Sequence[int] | np.ndarray


def hungarian_mapping(confusion: np.ndarray, ref_values: IntValues, label_values: IntValues) -> dict[int, int]:
    """One-to-one label → class assignment maximising matched pixels (``confusion`` is ref × label).

    A pair that matches no pixel is no evidence, only the solver's tie-break: a surplus cluster would
    be named after a legend class absent from the scene (Slovenia, 7 clusters: two forest clusters
    published as "water" and "wetlands"). Such a label stays unassigned.

    >>> hungarian_mapping(np.array([[0, 9], [8, 1]]), [1, 2], [0, 1])
    {0: 2, 1: 1}
    >>> hungarian_mapping(np.array([[9, 7], [0, 0]]), [1, 5], [0, 1])  # class 5 has no pixel
    {0: 1}
    """
    from scipy.optimize import linear_sum_assignment

    if confusion.size == 0:
        return {}
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return {int(label_values[c]): int(ref_values[r]) for r, c in sorted(zip(rows, cols), key=lambda rc: rc[1])
            if confusion[r, c] > 0}


def majority_mapping(confusion: np.ndarray, ref_values: IntValues, label_values: IntValues) -> dict[int, int]:
    """Each label → the reference class it overlaps most (ties: smallest class id); unseen labels stay unassigned.

    >>> majority_mapping(np.array([[5, 1, 0], [2, 7, 0]]), [1, 2], [0, 1, 2])
    {0: 1, 1: 2}
    """
    out = {}
    for j, lab in enumerate(label_values):
        col = confusion[:, j]
        if col.sum() > 0:
            out[int(lab)] = int(ref_values[int(np.argmax(col))])
    return out


def resolve_mapping(
    spec: MappingSpec, confusion: np.ndarray, ref_values: IntValues, label_values: IntValues
) -> dict[int, int]:
    """Turn a mapping spec into ``{label id: reference class id}`` (absent = unassigned)."""
    if isinstance(spec, Mapping):
        return {int(k): int(v) for k, v in spec.items()}
    if spec == "identity":
        return {int(v): int(v) for v in label_values}
    if spec == "hungarian":
        return hungarian_mapping(confusion, ref_values, label_values)
    if spec == "many-to-one":
        return majority_mapping(confusion, ref_values, label_values)
    raise ClassIdError(f"unknown class mapping {spec!r}; use one of {', '.join(MAPPINGS)} or a dict label → class")


def mapped_confusion(
    raw: np.ndarray, ref_values: IntValues, label_values: IntValues, mapping: Mapping[int, int], class_ids: IntValues
) -> np.ndarray:
    """Collapse raw counts ``(..., ref, label)`` to ``(..., K, K + 1)`` over ``class_ids``.

    Rows are reference classes, columns the classes the labels map to, and a last column for
    labels that map to no class (unassigned).
    """
    k = len(class_ids)
    pos = {int(c): i for i, c in enumerate(class_ids)}
    a = np.zeros((len(ref_values), k), np.int64)
    a[np.arange(len(ref_values)), [pos[int(v)] for v in ref_values]] = 1
    b = np.zeros((len(label_values), k + 1), np.int64)
    cols = [pos.get(mapping[int(v)], k) if int(v) in mapping else k for v in label_values]
    b[np.arange(len(label_values)), cols] = 1
    return a.T @ raw @ b


def check_identity_fits(mapping: MappingSpec, legend: Sequence[ClassInfo], reference_names: Mapping[int, str]) -> None:
    """Refuse the identity mapping for labels that are unnamed k-means clusters (``cluster_N``, as
    :func:`geoseg.legend.cluster_legend` names them): it would score cluster N as reference class N
    under that class's name. A reference named in the same clusters (another run's clusters) is fine.

    >>> from geoseg.legend import cluster_legend
    >>> check_identity_fits("hungarian", cluster_legend(3), {1: "forest"})
    >>> check_identity_fits("identity", cluster_legend(3), {1: "forest"})
    Traceback (most recent call last):
    ...
    geoseg.errors.ClassIdError: the labels are k-means clusters (cluster_0, cluster_1, cluster_2), ...
    """
    if mapping != "identity" or not legend:
        return
    if any(c.id < 0 or cluster_legend(c.id + 1)[c.id].name != c.name for c in legend):
        return
    shared = [c for c in legend if c.id in reference_names]
    if shared and all(reference_names[c.id] == c.name for c in shared):
        return  # the reference is labelled in the same clusters
    raise ClassIdError(
        f"the labels are k-means clusters ({', '.join(c.name for c in legend)}), whose ids are no classes: the "
        "identity mapping would score cluster N as reference class N. Use mapping hungarian or many-to-one")


def publishes_class_ids(class_ids: IntValues, n_unassigned: int = 0) -> bool:
    """Whether mapped labels can carry their class ids in the uint8 label raster: every class id in
    0..254 (255 is nodata), and ``n_unassigned`` free ids above them (:func:`output_ids`). A reference
    coded beyond that (CORINE's 111..523, or a class 255) cannot: a cluster mapped to 311 has no byte
    to become, and one mapped to 255 would become nodata; the published outputs then keep the
    method's own ids and names.

    >>> publishes_class_ids([1, 2, 8]), publishes_class_ids([111, 311]), publishes_class_ids([0, 255])
    (True, False, False)
    >>> publishes_class_ids([1, 250], n_unassigned=5)
    False
    """
    ids = [int(c) for c in class_ids]
    return all(0 <= c < NODATA_LABEL for c in ids) and max(ids, default=-1) + n_unassigned < NODATA_LABEL


def kept_labels_note(class_ids: IntValues, n_unassigned: int = 0) -> str:
    """What a mapped evaluation says when :func:`publishes_class_ids` is false."""
    beyond = [int(c) for c in class_ids if not 0 <= int(c) < NODATA_LABEL]
    why = (f"class ids {', '.join(map(str, beyond))} do not fit" if beyond else
           f"{n_unassigned} unassigned labels have no free id above class {max(int(c) for c in class_ids)} in")
    return (f"{why} the uint8 label raster (0-{NODATA_LABEL - 1}; "
            f"{NODATA_LABEL} is nodata): labels.zarr, labels.tif and polygons.gpkg keep the method's own label ids "
            "and names; class_mapping.csv says which class each label stands for")


def output_ids(label_ids: IntValues, mapping: Mapping[int, int], class_ids: IntValues) -> dict[int, int]:
    """Label id → the id it carries in the published outputs: the class it is mapped to; a label
    mapped to no class takes the smallest id above every class id still free (it is no class).

    >>> output_ids([0, 1, 2], {0: 3, 1: 3}, [1, 2, 3])
    {0: 3, 1: 3, 2: 4}
    """
    taken = {int(c) for c in class_ids}
    out: dict[int, int] = {}
    free = max(taken, default=-1) + 1
    for v in sorted(int(v) for v in label_ids if int(v) != NODATA_LABEL):
        if v in mapping:
            out[v] = int(mapping[v])
            continue
        if free >= NODATA_LABEL:
            raise OutputError(f"no id below {NODATA_LABEL} is left for unassigned label {v}; map it to a class")
        out[v] = free
        free += 1
    return out


def output_lut(ids: Mapping[int, int]) -> np.ndarray:
    """The 256-entry lookup table that turns label values into :func:`output_ids` (nodata stays nodata).

    >>> output_lut({0: 3, 1: 3})[:3].tolist(), int(output_lut({})[255])
    ([3, 3, 2], 255)
    """
    lut = np.arange(256, dtype=np.uint8)
    for k, v in ids.items():
        lut[int(k)] = int(v)
    return lut
