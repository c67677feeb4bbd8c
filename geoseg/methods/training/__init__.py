"""Training segmentation models on large rasters: random windows, a held-out strip, the best checkpoint kept.

:mod:`.config` holds the settings (:class:`TrainConfig`, the YAML :class:`TrainJob`),
:mod:`.data` reads windows from the files, :mod:`.validation` scores held-out blocks as a run labels them,
:mod:`.loop` runs the epochs. The public names are
re-exported here, so ``geoseg.methods.training.train`` is the entry point.
"""

from geoseg.methods.training.config import TrainConfig, TrainJob, TrainPair, load_train_job, parse_train_job
from geoseg.methods.training.data import (
    IGNORE_INDEX,
    TrainSource,
    WindowSampler,
    band_statistics,
    open_sources,
    resolve_index_channels,
)
from geoseg.methods.training.loop import TrainResult, history_path, train, validation_scores
from geoseg.methods.training.validation import validation_blocks

__all__ = [
    "IGNORE_INDEX",
    "TrainConfig",
    "TrainJob",
    "TrainPair",
    "TrainResult",
    "TrainSource",
    "WindowSampler",
    "band_statistics",
    "history_path",
    "load_train_job",
    "open_sources",
    "parse_train_job",
    "resolve_index_channels",
    "train",
    "validation_blocks",
    "validation_scores",
]
