"""Mask R-CNN (torchvision) as a tile instance model: any band count, weights only from files the user gives.

The network is torchvision's ``MaskRCNN``: ``resnet50_fpn`` and ``resnet50_fpn_v2`` are
``maskrcnn_resnet50_fpn`` / ``_v2`` as published (so a state dict the user downloaded loads into
them), ``resnet18_fpn`` is a ResNet-18 FPN with narrow heads, and ``tiny_fpn`` a four-stage CNN of
16-128 channels (about a tenth of ResNet-18's work) with the same narrow heads, which trains on a
CPU in minutes.
Nothing is ever downloaded (``weights=None``, ``weights_backbone=None``). The first convolution takes
the image's bands; they are normalised as ``(x - band_mean) / band_std`` (statistics of the training
windows), as DeepLab's are, and the network's own resize and normalisation are switched off (it
sees ``tile + 2·overlap`` px tiles at their own scale).

A checkpoint is ``<path>.safetensors`` (tensors only) plus a ``<path>.json`` sidecar
(:class:`MaskRCNNMeta`: backbone, bands and statistics, thing classes, tile geometry, what the
masks were trained from), the conventions of :mod:`geoseg.methods.checkpoint`.
:class:`MaskRCNNTileModel` implements :class:`~geoseg.methods.proposals.TileInstanceModel`; each
worker process loads the network once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoseg.errors import CheckpointError, ModelError
from geoseg.legend import ClassInfo
from geoseg.methods.checkpoint import geoseg_version
from geoseg.methods.proposals import InstanceProposal

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Backbone = Literal["tiny_fpn", "resnet18_fpn", "resnet50_fpn", "resnet50_fpn_v2"]
#: Anchor sizes (px) of the five FPN levels when a checkpoint names none: small objects (crowns, plants)
#: for the light backbone, torchvision's own for the published ones.
DEFAULT_ANCHORS: dict[str, list[int]] = {
    "tiny_fpn": [16, 32, 64, 128, 256],
    "resnet18_fpn": [16, 32, 64, 128, 256],
    "resnet50_fpn": [32, 64, 128, 256, 512],
    "resnet50_fpn_v2": [32, 64, 128, 256, 512],
}
#: Key of the sidecar JSON inside the safetensors header.
_HEADER_KEY = "geoseg_maskrcnn"


class MaskRCNNMeta(BaseModel):
    """Everything needed to rebuild a Mask R-CNN and feed it the right pixels (the JSON sidecar).

    ``classes[k]`` is the network's label ``k + 1`` (0 is background). ``masks``: what its masks were
    trained from; ``boxes`` means box-shaped masks (boxes-only annotations): its masks are boxes.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["maskrcnn"] = "maskrcnn"
    format_version: int = 1
    backbone: Backbone = "resnet18_fpn"
    fpn_channels: int = Field(64, ge=8, le=256, description="FPN width of resnet18_fpn (the resnet50 ones: 256)")
    anchor_sizes: list[int] | None = None
    in_channels: int
    band_names: list[str]
    band_mean: list[float]
    band_std: list[float]
    classes: list[ClassInfo]
    tile_size: int = 256
    tile_overlap: int = 32
    max_detections: int = Field(300, ge=1, le=4096)
    masks: Literal["masks", "boxes"] = "masks"
    resolution: float | None = None
    crs: str | None = None
    geoseg_version: str = Field(default_factory=geoseg_version)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> MaskRCNNMeta:
        n = self.in_channels
        if not (len(self.band_names) == len(self.band_mean) == len(self.band_std) == n) or n < 1:
            raise ValueError(f"in_channels={n} but {len(self.band_names)} band names, {len(self.band_mean)} means "
                             f"and {len(self.band_std)} stds")
        if any(not (s > 0 and math.isfinite(s)) for s in self.band_std):
            raise ValueError(f"band_std must be positive and finite, got {self.band_std}")
        ids = [c.id for c in self.classes]
        if not ids or len(set(ids)) != len(ids) or any(not 1 <= i <= 254 for i in ids):
            raise ValueError(f"classes must be unique ids in 1..254, got {ids}")
        if not 32 <= self.tile_size <= 2048 or not 0 <= self.tile_overlap <= self.tile_size // 2:
            raise ValueError(f"tile_size must be 32..2048 and tile_overlap 0..tile_size/2, got {self.tile_size}, "
                             f"{self.tile_overlap}")
        if self.anchor_sizes is not None and (len(self.anchor_sizes) != 5 or min(self.anchor_sizes) < 2):
            raise ValueError(f"anchor_sizes needs 5 sizes of at least 2 px (one per FPN level), got {self.anchor_sizes}")
        return self

    @property
    def side(self) -> int:
        """Pixels a side of a tile as the network sees it."""
        return self.tile_size + 2 * self.tile_overlap

    @property
    def anchors(self) -> list[int]:
        return self.anchor_sizes or DEFAULT_ANCHORS[self.backbone]


def _first_conv(in_channels: int) -> torch.nn.Module:
    import torch

    return torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)


def build_maskrcnn(meta: MaskRCNNMeta) -> torch.nn.Module:
    """The (untrained) network ``meta`` describes; nothing downloaded."""
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    n = len(meta.classes) + 1
    side = meta.side
    anchors = AnchorGenerator(tuple((s,) for s in meta.anchors), ((0.5, 1.0, 2.0),) * 5)
    common: dict[str, Any] = dict(min_size=side, max_size=side, image_mean=[0.0] * meta.in_channels,
                                  image_std=[1.0] * meta.in_channels, box_detections_per_img=meta.max_detections,
                                  rpn_anchor_generator=anchors)
    model: torch.nn.Module
    if meta.backbone in ("tiny_fpn", "resnet18_fpn"):
        # fewer region samples than torchvision's 512 (and proposals than its 2,000): a tile holds tens of
        # objects, and the RoI pooling of 512 samples dominates a CPU training step
        model = MaskRCNN(_light_backbone(meta.backbone, meta.fpn_channels, meta.in_channels), num_classes=None,
                         box_batch_size_per_image=128, rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                         rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=500,
                         **common, **_light_heads(meta.fpn_channels, n))
        return model
    else:
        make = maskrcnn_resnet50_fpn if meta.backbone == "resnet50_fpn" else maskrcnn_resnet50_fpn_v2
        model = make(weights=None, weights_backbone=None, num_classes=n, **common)
    body: Any = model.backbone.body  # type: ignore[union-attr]
    if meta.in_channels != 3:
        body.conv1 = _first_conv(meta.in_channels)
    return model


def _conv(cin: int, cout: int, stride: int) -> list[torch.nn.Module]:
    import torch

    return [torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU(inplace=True)]


def _tiny_body(in_channels: int) -> torch.nn.Module:
    """Four stages at strides 4, 8, 16, 32 with 16, 32, 64, 128 channels (named as ResNet's, for the FPN)."""
    import torch

    seq = torch.nn.Sequential
    body = torch.nn.Module()
    body.conv1 = seq(*_conv(in_channels, 16, 2))
    body.layer1 = seq(*_conv(16, 16, 2), *_conv(16, 16, 1))
    body.layer2 = seq(*_conv(16, 32, 2), *_conv(32, 32, 1))
    body.layer3 = seq(*_conv(32, 64, 2), *_conv(64, 64, 1))
    body.layer4 = seq(*_conv(64, 128, 2), *_conv(128, 128, 1))
    return body


def _light_backbone(name: str, channels: int, in_channels: int) -> torch.nn.Module:
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    if name == "tiny_fpn":
        return BackboneWithFPN(_tiny_body(in_channels), layers, [16, 32, 64, 128], channels,
                               extra_blocks=LastLevelMaxPool())
    body = resnet18(weights=None)
    if in_channels != 3:
        body.conv1 = _first_conv(in_channels)
    return BackboneWithFPN(body, layers, [64, 128, 256, 512], channels, extra_blocks=LastLevelMaxPool())


def _light_heads(channels: int, n_classes: int) -> dict[str, Any]:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    rep = 256
    return dict(box_head=TwoMLPHead(channels * 7 * 7, rep), box_predictor=FastRCNNPredictor(rep, n_classes),
                mask_head=MaskRCNNHeads(channels, [channels, channels], 1),
                mask_predictor=MaskRCNNPredictor(channels, channels, n_classes))


def load_init_weights(model: torch.nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a user's weights file (e.g. torchvision's published Mask R-CNN state dict) where shapes allow.

    A first convolution saved for another band count is adapted by cycling its input channels (as
    DeepLab's encoder weights are); tensors of another shape (class heads for other classes) are left
    as built and named in the returned list. Safetensors or a plain tensor state dict (no pickle).
    """
    from geoseg.methods.checkpoint import _read_tensor_file

    src = _read_tensor_file(Path(path))
    target = model.state_dict()
    out, skipped = {}, []
    for key, ref in target.items():
        val = src.get(key)
        if val is None:
            continue
        if val.shape != ref.shape:
            if ".body.conv1." in key and val.ndim == 4 and val.shape[0] == ref.shape[0] and val.shape[2:] == ref.shape[2:]:
                import torch

                idx = torch.arange(ref.shape[1]) % val.shape[1]
                val = val[:, idx] * (val.shape[1] / ref.shape[1])
            else:
                skipped.append(key)
                continue
        out[key] = val.to(ref.dtype)
    if len(out) < len(target) // 2:
        raise ModelError(f"initial weights {path} match only {len(out)} of {len(target)} tensors of this Mask R-CNN; "
                         "were they saved for another backbone?")
    model.load_state_dict(out, strict=False)
    return skipped


def instance_checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    from geoseg.methods.checkpoint import checkpoint_paths

    return checkpoint_paths(path)


def save_maskrcnn(model: torch.nn.Module, meta: MaskRCNNMeta, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` and ``<path>.json`` through temporary files and renames (weights first)."""
    from safetensors.torch import save_file

    from geoseg.io.atomic import write_atomic

    weights, sidecar = instance_checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    text = meta.model_dump_json(indent=2)
    write_atomic(weights, lambda tmp: save_file(state, str(tmp), metadata={_HEADER_KEY: text}))
    write_atomic(sidecar, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return weights, sidecar


def read_maskrcnn_meta(path: str | os.PathLike) -> MaskRCNNMeta:
    """The sidecar (or the weights' header); refuses a file that is not a geoseg Mask R-CNN checkpoint."""
    from pydantic import ValidationError
    from safetensors import safe_open

    from geoseg.methods.checkpoint import check_weights_file, invalid_fields, read_sidecar

    weights, sidecar = instance_checkpoint_paths(path)
    try:
        if sidecar.is_file():
            text = read_sidecar(sidecar)
        elif weights.is_file():
            check_weights_file(weights)
            with safe_open(str(weights), framework="pt") as f:
                text = (f.metadata() or {}).get(_HEADER_KEY, "")
            if not text:
                raise CheckpointError(f"{weights} is not a geoseg Mask R-CNN checkpoint (no metadata) and {sidecar} "
                                      "is missing")
        else:
            raise CheckpointError(f"no checkpoint at {weights}; train one with `geoseg train` (kind: maskrcnn)")
        return MaskRCNNMeta.model_validate_json(text)
    except ValidationError as exc:
        if '"kind"' not in text:
            raise CheckpointError(f"{path} is not a Mask R-CNN checkpoint (a semantic model's?); "
                                  "train one with `geoseg train` and kind: maskrcnn") from None
        raise CheckpointError(f"Mask R-CNN checkpoint metadata of {path} is invalid: {invalid_fields(exc)}") from None


def check_maskrcnn(path: str | os.PathLike, band_names: Any, resolution: float | None, crs: Any = None) -> MaskRCNNMeta:
    """Refuse (one line) a missing or damaged checkpoint, or an image it was not trained for (pixel sizes in metres
    where both CRSs have a linear unit); before any work."""
    from geoseg.methods.checkpoint import check_compatible, check_weights_file

    meta = read_maskrcnn_meta(path)
    weights, _ = instance_checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing (only the sidecar is there); copy both files")
    check_weights_file(weights)
    try:
        check_compatible(meta, list(band_names), resolution, crs=crs)  # type: ignore[arg-type]  # bands and resolution only
    except ModelError as exc:
        raise type(exc)(f"{weights}: {exc}") from None
    return meta


def load_maskrcnn(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, MaskRCNNMeta]:
    """The network of a checkpoint on ``device``, in eval mode."""
    from safetensors.torch import load_file

    meta = read_maskrcnn_meta(path)
    weights, _ = instance_checkpoint_paths(path)
    model = build_maskrcnn(meta)
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not hold the weights its sidecar describes: {str(exc)[:200]}") from None
    return model.to(device).eval(), meta


_CACHE: OrderedDict[tuple, tuple[torch.nn.Module, MaskRCNNMeta]] = OrderedDict()
_LOCK = threading.Lock()


def worker_maskrcnn(path: str | os.PathLike, device: str = "auto") -> tuple[torch.nn.Module, MaskRCNNMeta]:
    """The checkpoint's network, loaded once per process (keyed by path, mtime, size, device) and reused.

    Loading also puts torch in deterministic mode (warnings only) in this process, so a tile gives the
    same proposals whichever task runs it.
    """
    import torch

    from geoseg.methods.deeplab import resolve_device

    dev = resolve_device(device)
    weights, _ = instance_checkpoint_paths(path)
    try:
        st = weights.stat()
    except FileNotFoundError as exc:
        raise CheckpointError(f"no checkpoint at {weights}") from exc
    key = (str(weights.resolve()), st.st_mtime_ns, st.st_size, dev)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            hit = load_maskrcnn(path, dev)
            _CACHE[key] = hit
            while len(_CACHE) > 2:
                _CACHE.popitem(last=False)
            log.info("loaded Mask R-CNN %s on %s (pid %d)", weights, dev, os.getpid())
        return hit


def normalised(image: np.ndarray, valid: np.ndarray, meta: MaskRCNNMeta) -> np.ndarray:
    from geoseg.methods.deeplab import normalise

    return normalise(image, valid, meta.band_mean, meta.band_std)


def detect(model: torch.nn.Module, x: np.ndarray, mask_threshold: float = 0.5) -> tuple[np.ndarray, ...]:
    """Masks (bool ``(n, h, w)``), label indices (1..) and scores of one normalised tile ``(bands, h, w)``."""
    import torch

    dev = next(model.parameters()).device
    with torch.inference_mode():
        out = model([torch.from_numpy(np.ascontiguousarray(x)).to(dev)])[0]
    masks = (out["masks"][:, 0] > mask_threshold).cpu().numpy()
    return masks, out["labels"].cpu().numpy(), out["scores"].float().cpu().numpy()


@dataclass(frozen=True)
class MaskRCNNTileModel:
    """A Mask R-CNN checkpoint as a :class:`~geoseg.methods.proposals.TileInstanceModel` (small, picklable).

    ``tile``/``overlap`` default to the checkpoint's (:func:`maskrcnn_tile_model` fills them); a proposal
    is kept when its score is at least ``score_threshold``; mask pixels are those above ``mask_threshold``.
    """

    checkpoint: Path
    tile: int
    overlap: int
    class_ids: tuple[int, ...]
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    device: str = "auto"

    def propose(self, image: np.ndarray, valid: np.ndarray) -> list[InstanceProposal]:
        from geoseg.methods.predictors import match_worker_threads

        match_worker_threads()
        model, meta = worker_maskrcnn(self.checkpoint, self.device)
        if image.shape[1:] != (meta.side, meta.side) or image.shape[1:] != valid.shape:
            raise ValueError(f"Mask R-CNN tiles are {meta.side} px a side, got {image.shape} and {valid.shape}")
        masks, labels, scores = detect(model, normalised(image, valid, meta), self.mask_threshold)
        return [InstanceProposal(masks[k], self.class_ids[int(labels[k]) - 1], float(scores[k]))
                for k in range(len(scores)) if scores[k] >= self.score_threshold]


def maskrcnn_tile_model(checkpoint: str | os.PathLike, meta: MaskRCNNMeta, *, score_threshold: float = 0.5,
                        mask_threshold: float = 0.5, device: str = "auto", tile: int | None = None,
                        overlap: int | None = None) -> MaskRCNNTileModel:
    """The tile model of a checked checkpoint; ``tile`` (a multiple of 16) and ``overlap`` may differ from
    the training's only so that ``tile + 2·overlap`` stays the network's side."""
    from geoseg.errors import JobSpecError

    t = meta.tile_size if tile is None else tile
    o = meta.tile_overlap if overlap is None else overlap
    if t + 2 * o != meta.side:
        raise JobSpecError(f"tile {t} + 2 x overlap {o} must be {meta.side} px, the side this Mask R-CNN was trained "
                           f"on (tile_size {meta.tile_size}, tile_overlap {meta.tile_overlap})")
    if not 0.0 <= score_threshold <= 1.0 or not 0.0 < mask_threshold < 1.0:
        raise JobSpecError(f"score_threshold must be in [0, 1] and mask_threshold in (0, 1), got {score_threshold}, "
                           f"{mask_threshold}")
    return MaskRCNNTileModel(Path(checkpoint), t, o, tuple(c.id for c in meta.classes), score_threshold,
                             mask_threshold, device)
