"""The learning curve as a PNG beside the history JSON: loss, validation mIoU (and its EMA), learning rate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoseg.io.atomic import write_atomic


def curve_path(history_json: str | os.PathLike) -> Path:
    """``<checkpoint>.history.png`` beside ``<checkpoint>.history.json``."""
    p = Path(history_json)
    return p.with_suffix(".png")


def write_curve(history: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Plot the history rows (one per epoch) and write the PNG atomically.

    Uses matplotlib's object API with the Agg canvas (no pyplot state), so it is safe in any
    thread and needs no display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(7, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h.get("train_loss") for h in history], "o-", color="tab:red", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [h.get("lr") for h in history], ":", color="grey", label="learning rate")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_loss.set_title("training")
    ax_val.plot(epochs, [h.get("val_miou") for h in history], "o-", color="tab:blue", label="val mIoU")
    if any(h.get("val_miou_ema") is not None for h in history):
        ax_val.plot(epochs, [h.get("val_miou_ema") for h in history], "--", color="tab:green",
                    label="EMA (selection, early stop)")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("mIoU")
    ax_val.set_ylim(0, 1)
    ax_val.set_title("validation")
    ax_val.legend(loc="lower right", fontsize=8)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
