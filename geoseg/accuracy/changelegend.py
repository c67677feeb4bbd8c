"""What the values of a change report mean: one class legend for both periods, and the legend of
the change map's transition codes.

A transition ``3 → 5`` means something only if 3 and 5 name the same classes in both periods:
a store of class ids (a mapped run) against one of k-means clusters, or two models with other
class sets, would count a renumbering as change and name the later period's values with the
earlier legend. :func:`periods_legend` refuses that. Unnamed clusters (``cluster_N``) of two runs
mean the same only when one k-means model numbered both (``geoseg monitor`` reuses one model so that
they do): two fits order their clusters each by its own centroids, so cluster 3 of one may be cluster 5
of the other. :func:`check_cluster_numbering` refuses two stores whose models differ, and warns where a
store does not say which model numbered it (stores written before geoseg recorded it, GeoTIFFs).

``change.zarr`` holds ``before * 256 + after`` (0 unchanged); :func:`transition_legend` names those
codes, for its CF flags and its QGIS style: the class legend would call code 1 (cluster_0 →
cluster_1) "cluster_1" and unchanged pixels "cluster_0".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from geoseg.errors import InputError
from geoseg.io.labelstore import KMEANS_MODEL_ATTR
from geoseg.legend import PALETTE, ClassInfo, cluster_legend

log = logging.getLogger(__name__)

#: Base of the change codes: label values are bytes.
CODE_BASE = 256
#: Colour of unchanged pixels in the change map's style.
UNCHANGED_COLOR = "#d9d9d9"


def _unnamed_cluster(c: ClassInfo) -> bool:
    return 0 <= c.id < CODE_BASE and cluster_legend(c.id + 1)[c.id].name == c.name


def periods_legend(before: Sequence[ClassInfo], after: Sequence[ClassInfo]) -> tuple[ClassInfo, ...]:
    """The legend of both periods: ``before``'s classes and those only ``after`` has; refused where the
    two name one id differently (two unnamed clusters excepted).

    >>> a, b = ClassInfo(1, "forest", "#00aa00"), ClassInfo(2, "water", "#0000ff")
    >>> [c.name for c in periods_legend([a], [a, b])]
    ['forest', 'water']
    >>> periods_legend([a], [ClassInfo(1, "cluster_1", "#ff7f0e")])
    Traceback (most recent call last):
    ...
    geoseg.errors.InputError: the two periods name their values differently (1: forest before, cluster_1 after): ...
    """
    first = {c.id: c for c in before}
    clash = [(c.id, first[c.id].name, c.name) for c in after
             if c.id in first and first[c.id].name != c.name
             and not (_unnamed_cluster(first[c.id]) and _unnamed_cluster(c))]
    if clash:
        shown = "; ".join(f"{i}: {b} before, {a} after" for i, b, a in clash[:5])
        raise InputError(f"the two periods name their values differently ({shown}): a transition between them "
                         "would count a renumbering as change. Compare two runs with one legend (the same job, "
                         "model or reference mapping)")
    return tuple(sorted([*before, *(c for c in after if c.id not in first)], key=lambda c: c.id))


def check_cluster_numbering(before: Sequence[ClassInfo], after: Sequence[ClassInfo],
                            before_attrs: Mapping[str, Any], after_attrs: Mapping[str, Any]) -> None:
    """Refuse two periods whose unnamed clusters were numbered by different k-means models (``InputError``);
    warn in one line where either store does not record its model. Nothing to check without shared clusters."""
    clusters = {c.id for c in before if _unnamed_cluster(c)} & {c.id for c in after if _unnamed_cluster(c)}
    if not clusters:
        return
    models = before_attrs.get(KMEANS_MODEL_ATTR), after_attrs.get(KMEANS_MODEL_ATTR)
    if None in models:
        log.warning("the two periods hold unnamed k-means clusters and %s not say which model numbered them: "
                    "their transitions are change only if one model labelled both",
                    "one store does" if models.count(None) == 1 else "neither store does")
    elif models[0] != models[1]:
        raise InputError(f"the two periods' clusters were numbered by different k-means models ({models[0]} before, "
                         f"{models[1]} after): cluster N of one is not cluster N of the other. Label both with one "
                         "model (`method.model:`, or geoseg monitor's reuse_kmeans_model), or map both to classes "
                         "with a reference")


def transition_legend(legend: Sequence[ClassInfo], transitions: Iterable[tuple[int, int]]) -> tuple[ClassInfo, ...]:
    """Names and colours of a change map's values: 0 ``unchanged``, ``b * 256 + a`` ``B → A`` for each
    changed ``(b, a)`` given (coloured as the class after).

    >>> [(c.id, c.name) for c in transition_legend([ClassInfo(1, "forest", "#00aa00")], [(1, 2), (1, 1)])]
    [(0, 'unchanged'), (258, 'forest → 2')]
    """
    named = {c.id: c for c in legend}
    out = [ClassInfo(0, "unchanged", UNCHANGED_COLOR)]
    for b, a in sorted({(int(b), int(a)) for b, a in transitions if b != a}):
        name = f"{named[b].name if b in named else b} → {named[a].name if a in named else a}"
        color = named[a].color if a in named else PALETTE[a % len(PALETTE)]
        out.append(ClassInfo(b * CODE_BASE + a, name, color))
    return tuple(out)


def flag_attrs(legend: Sequence[ClassInfo]) -> dict[str, object]:
    """CF ``flag_values``/``flag_meanings``/``flag_colors`` of a change map (meanings one word each)."""
    return {
        "flag_values": [c.id for c in legend],
        "flag_meanings": " ".join(c.name.replace(" → ", "_to_").replace(" ", "_") for c in legend),
        "flag_colors": " ".join(c.color for c in legend),
    }
