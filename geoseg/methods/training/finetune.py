"""Fine-tuning: start training from an existing checkpoint's weights and band statistics.

The network is the checkpoint's: keys the job leaves out (architecture, encoder, depth, output stride,
decoder width, refinement head, normalisation) are taken from its sidecar, keys it names must agree with it. The
image bands and index channels must be the ones it was trained on: weights learned on other inputs
do not transfer. The normalisation of the
checkpoint (bands and index channels) is kept, since its first layers learned on pixels
normalised that way. With other classes (ids or their order) the segmentation head is started
afresh and everything else is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from geoseg.errors import ModelError
from geoseg.methods.checkpoint import CheckpointMeta, checkpoint_paths, read_meta
from geoseg.methods.training.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from geoseg.methods.indices import BandIndex

log = logging.getLogger(__name__)

#: Tensors that map features to *these* classes (the refinement head reads and writes class logits):
#: they start afresh when the job's classes are not the checkpoint's.
HEAD_PREFIX = ("segmentation_head.", "base.segmentation_head.", "refine.")


#: The keys that shape the network: a fine-tuning job that names none of them takes the checkpoint's.
NETWORK_KEYS = ("architecture", "encoder", "encoder_depth", "encoder_output_stride", "decoder_channels",
                "refine_channels", "normalisation")


def init_meta(
    cfg: TrainConfig, band_names: list[str], indices: Sequence[BandIndex] = ()
) -> tuple[TrainConfig, CheckpointMeta]:
    """The job with the ``init_checkpoint``'s network where the job names no network key (so a default that
    changed since, such as ``refine_channels``, does not refuse an older checkpoint), and the checkpoint's
    metadata; refused (``ModelError``) unless the job's network, bands and index channels (the same indices
    reading the same band positions) match it."""
    assert cfg.init_checkpoint is not None  # called only for jobs that give one
    meta = read_meta(cfg.init_checkpoint)
    inherited = {k: getattr(meta, k) for k in NETWORK_KEYS if k not in cfg.model_fields_set}
    if inherited:
        try:  # validated again: the checkpoint's architecture may ask more of the tile than the default's
            cfg = type(cfg).model_validate({**dict(cfg), **inherited})
        except ValidationError as exc:
            raise ModelError(f"init_checkpoint {cfg.init_checkpoint}: {exc.errors()[0]['msg']}") from None
        log.info("init_checkpoint %s: network %s", cfg.init_checkpoint,
                 ", ".join(f"{k} {v}" for k, v in inherited.items()))
    theirs_idx = [(ch.text, ch.needs, ch.bands) for ch in meta.index_channels]
    ours_idx = [(i.text, [r for r, _ in i.refs], [p for _, p in i.refs]) for i in indices]
    if theirs_idx != ours_idx:
        shown = [ch.text for ch in meta.index_channels]
        raise ModelError(
            f"init_checkpoint {cfg.init_checkpoint} was trained with index channels {shown or 'none'}, the job "
            f"asks for {[i.text for i in indices] or 'none'}; set `index_channels: {shown}` (its first layer "
            "learned on those inputs)"
        )
    ours = {"architecture": cfg.architecture, "encoder": cfg.encoder, "encoder_depth": cfg.encoder_depth,
            "decoder_channels": cfg.decoder_channels, "refine_channels": cfg.refine_channels,
            "normalisation": cfg.normalisation, "in_channels": len(band_names) + len(indices)}
    if cfg.architecture in ("DeepLabV3", "DeepLabV3Plus", "PAN"):
        ours["encoder_output_stride"] = cfg.encoder_output_stride
    theirs = {k: getattr(meta, k) for k in ours}
    if ours != theirs:
        diff = ", ".join(f"{k}: {theirs[k]} (job: {ours[k]})" for k in ours if ours[k] != theirs[k])
        raise ModelError(f"init_checkpoint {cfg.init_checkpoint} is another network ({diff}); set these keys to its values")
    if [n.lower() for n in meta.band_names] != [n.lower() for n in band_names]:
        raise ModelError(
            f"init_checkpoint {cfg.init_checkpoint} was trained on bands ({', '.join(meta.band_names)}), the training "
            f"images have ({', '.join(band_names)}); select those bands with `bands:`"
        )
    return cfg, meta


def load_init_weights(model: torch.nn.Module, cfg: TrainConfig, meta: CheckpointMeta) -> list[str]:
    """Copy the checkpoint's tensors into ``model``; the head too when the classes are the same. Returns skipped keys."""
    from safetensors.torch import load_file

    assert cfg.init_checkpoint is not None  # called only for jobs that give one
    weights, _ = checkpoint_paths(cfg.init_checkpoint)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:
        raise ModelError(f"cannot read init_checkpoint weights {weights}: {exc}") from exc
    same_classes = [c.id for c in meta.classes] == [c.id for c in cfg.classes]
    target = model.state_dict()
    keep = {k: v for k, v in state.items() if k in target and (same_classes or not k.startswith(HEAD_PREFIX))}
    wrong = [k for k, v in keep.items() if v.shape != target[k].shape]
    missing = [k for k in target if k not in keep and not k.startswith(HEAD_PREFIX)]
    if wrong or missing:
        raise ModelError(f"init_checkpoint {weights} does not fit the network ({len(wrong)} tensors of other shapes, "
                         f"{len(missing)} missing, e.g. {(wrong + missing)[0]})")
    model.load_state_dict(keep, strict=False)
    skipped = [k for k in target if k not in keep]
    if skipped:
        log.info("init_checkpoint %s has other classes: the class heads (%d tensors) start afresh", weights,
                 len(skipped))
    return skipped
