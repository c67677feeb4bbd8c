"""Tables of several scenes evaluated together (:func:`geoseg.accuracy.evaluate.evaluate_scenes`):
one row per scene and the pooled figures, and every scene's metrics one after the other.
"""

from __future__ import annotations

import pandas as pd

from geoseg.accuracy.evaluate import Evaluation


def scenes_table(ev: Evaluation) -> pd.DataFrame:
    """One row per scene and one for all scenes pooled: mIoU, accuracy, kappa, pixels, scored share."""
    rows = []
    for name, sub in [*ev.scenes.items(), ("ALL (pooled)", ev)]:
        top = sub.metrics().iloc[0]
        rows.append({
            "scene": name, "labels": str(sub.labels_path), "reference": str(getattr(sub.reference, "path", "")),
            "miou": top["miou"], "overall_accuracy": top["overall_accuracy"], "kappa": top["kappa"],
            "valid_px": int(top["valid_px"]), "total_px": int(top["total_px"]), "scored_share": top["scored_share"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def scenes_metrics(ev: Evaluation) -> pd.DataFrame:
    """Every scene's long metrics table, one after the other, with a ``scene`` column first."""
    parts = [sub.metrics().assign(scene=name) for name, sub in ev.scenes.items()]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    return df[["scene", *[c for c in df.columns if c != "scene"]]]


__all__ = ["scenes_metrics", "scenes_table"]
