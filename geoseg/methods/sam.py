"""SAM (Segment Anything) as a tile-level instance model: class-agnostic masks per tile, classes from the labels.

Why these rules, against tiled SAM as peers run it:

* **One normalisation for every tile.** SAM takes 8-bit RGB; a tile scaled by its own min/max would
  show the same field brighter in one tile than in the next and cut objects differently on each side
  of a seam. :class:`BandScaling` maps each band linearly from fixed ``low``/``high`` values (from a
  global sample of the scene, :meth:`BandScaling.from_sample`, or given by the job) to 0..255.
* **Classes from the semantic raster.** SAM's masks have no class: a mask takes the class most of its
  pixels have in the published labels (:func:`classify_proposals`); a mask on no thing class is
  dropped, so instances and labels agree.
* **Nothing downloaded, nothing unpickled.** Weights come from a file the user gives: safetensors, or
  a ``.pth`` read with ``torch.load(weights_only=True)`` (tensors only, no code).

:class:`SamInstanceModel` follows :class:`geoseg.methods.proposals.TileInstanceModel`; the seam merge
and the id numbering are the merge's. The ``segment-anything`` package is the optional extra ``sam``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import CheckpointError, InputError, MissingExtraError
from geoseg.methods.proposals import InstanceProposal

#: The ViT encoders of the published SAM checkpoints: embed dim, depth, heads, global attention blocks.
ENCODERS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def segment_anything() -> Any:
    """The ``segment_anything`` package, or a one-line error naming the extra that brings it."""
    try:
        import segment_anything as sa
    except ImportError:
        raise MissingExtraError("SAM needs the optional extra 'sam': pip install 'geoseg[sam]'") from None
    return sa


@dataclass(frozen=True)
class BandScaling:
    """Fixed linear scaling of each of three bands to 0..255 (``low`` → 0, ``high`` → 255, clipped).

    >>> s = BandScaling((0.0, 0.0, 0.0), (1.0, 2.0, 4.0))
    >>> s.apply(np.full((3, 1, 2), 1.0, np.float32), np.ones((1, 2), bool))[0, 0].tolist()
    [255, 128, 64]
    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.low) != 3 or len(self.high) != 3:
            raise InputError(f"SAM scaling needs three low and three high values, got {self.low} and {self.high}")
        if not all(math.isfinite(a) and math.isfinite(b) and b > a for a, b in zip(self.low, self.high)):
            raise InputError(f"SAM scaling needs finite high > low for each band, got {self.low} and {self.high}")

    @classmethod
    def from_sample(cls, sample: np.ndarray, lower: float = 2.0, upper: float = 98.0) -> BandScaling:
        """The ``lower``/``upper`` percentiles of each band of a global pixel sample ``(n, 3)``."""
        if sample.ndim != 2 or sample.shape[1] != 3 or sample.shape[0] == 0:
            raise InputError(f"SAM scaling needs a sample of (n, 3) pixels, got {sample.shape}")
        lo = np.percentile(sample, lower, axis=0)
        hi = np.percentile(sample, upper, axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)  # a constant band: any span maps it to 0
        return cls(tuple(float(v) for v in lo), tuple(float(v) for v in hi))  # type: ignore[arg-type]

    def apply(self, bands: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(3, h, w)`` values → ``(h, w, 3)`` uint8 (invalid pixels 0), whatever the tile holds."""
        low = np.asarray(self.low, np.float64)[:, None, None]
        span = (np.asarray(self.high, np.float64) - np.asarray(self.low, np.float64))[:, None, None]
        scaled = np.clip(np.rint((bands.astype(np.float64) - low) / span * 255.0), 0, 255).astype(np.uint8)
        scaled[:, ~valid] = 0
        return np.ascontiguousarray(scaled.transpose(1, 2, 0))


@dataclass(frozen=True)
class SamShape:
    """The architecture of a SAM model: the ViT encoder, the input size, the prompt and decoder widths.

    The published checkpoints are ``SamShape.of("vit_b")`` (``vit_l``, ``vit_h``); tests build tiny ones."""

    embed_dim: int
    depth: int
    heads: int
    global_blocks: tuple[int, ...]
    image_size: int = 1024
    prompt_dim: int = 256
    decoder_mlp: int = 2048
    decoder_heads: int = 8

    @classmethod
    def of(cls, encoder: str) -> SamShape:
        if encoder not in ENCODERS:
            raise InputError(f"SAM encoder {encoder!r} is not known; known: {', '.join(ENCODERS)}")
        return cls(*ENCODERS[encoder])


def build_sam(shape: str | SamShape, checkpoint: str | Path | None = None) -> Any:
    """A SAM model (``segment_anything.modeling.Sam``) of ``shape`` (a name of :data:`ENCODERS` or a
    :class:`SamShape`), in eval mode; weights from ``checkpoint`` when given (random weights without: tests)."""
    import torch

    segment_anything()  # the extra, or a one-line error
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    s = SamShape.of(shape) if isinstance(shape, str) else shape
    patch = 16
    grid = s.image_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(depth=s.depth, embed_dim=s.embed_dim, img_size=s.image_size, mlp_ratio=4,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=s.heads,
                                      patch_size=patch, qkv_bias=True, use_rel_pos=True,
                                      global_attn_indexes=tuple(s.global_blocks), window_size=14,
                                      out_chans=s.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=s.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(s.image_size, s.image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=s.prompt_dim, mlp_dim=s.decoder_mlp, num_heads=s.decoder_heads),
            transformer_dim=s.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=s.prompt_dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint is not None:
        sam.load_state_dict(_read_weights(Path(checkpoint)))
    return sam.eval()


@dataclass(frozen=True)
class SamWeights:
    """A SAM model by its shape and weights file: small to send to workers, loaded once per process there."""

    shape: SamShape
    checkpoint: str

    def load(self) -> Any:
        st = Path(self.checkpoint).stat() if Path(self.checkpoint).exists() else None
        return _cached_sam(self.shape, self.checkpoint, (st.st_mtime_ns, st.st_size) if st else None)


@lru_cache(maxsize=2)
def _cached_sam(shape: SamShape, checkpoint: str, stamp: tuple[int, int] | None) -> Any:  # stamp: cache key
    return build_sam(shape, checkpoint)


def _read_weights(path: Path) -> dict[str, Any]:
    """Tensors of a safetensors file or of a ``.pth`` read as tensors only (``weights_only``: no code runs)."""
    import torch

    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint {path} does not exist; give the path of a SAM weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"SAM checkpoint {path} cannot be read as weights: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"SAM checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


@dataclass
class SamInstanceModel:
    """SAM's automatic mask generator on tiles of ``tile`` px read with ``overlap`` px around (a
    :class:`~geoseg.methods.proposals.TileInstanceModel`). Proposals have class 0 (SAM has none; see
    :func:`classify_proposals`) and SAM's predicted IoU as score. ``rgb``: the image's bands shown to SAM.
    ``sam``: a model, or :class:`SamWeights` (loaded once per process where the tiles run).

    ``labels_band``: a band of the image holding the published class labels (a job's SAM reads them with
    the tile): proposals then take the class most of their pixels have there, and those on no class of
    ``things`` are dropped in the tile, before any seam merge can let them cover a thing."""

    sam: Any
    scaling: BandScaling
    rgb: tuple[int, int, int] = (0, 1, 2)
    tile: int = 512
    overlap: int = 64
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    min_area: int = 0
    labels_band: int | None = None
    things: tuple[int, ...] = ()

    def image_of(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """What SAM sees of a tile: the ``rgb`` bands through the fixed :attr:`scaling`, ``(h, w, 3)`` uint8."""
        if image.ndim != 3 or max(self.rgb) >= image.shape[0]:
            raise InputError(f"SAM reads bands {self.rgb} of the image, which has shape {image.shape}")
        return self.scaling.apply(image[list(self.rgb)], valid)

    def model(self) -> Any:
        return self.sam.load() if isinstance(self.sam, SamWeights) else self.sam

    def _generator(self) -> Any:
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(
            self.model(), points_per_side=self.points_per_side, points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh, stability_score_thresh=self.stability_score_thresh,
            min_mask_region_area=self.min_area)

    def propose(self, image: np.ndarray, valid: np.ndarray) -> list[InstanceProposal]:
        """Every mask SAM's generator keeps for the tile, off invalid pixels, largest score first."""
        segment_anything()
        import torch

        with torch.inference_mode():
            records = self._generator().generate(self.image_of(image, valid))
        out = []
        for rec in records:
            mask = np.asarray(rec["segmentation"], bool) & valid
            if mask.sum() > max(self.min_area, 0):
                out.append(InstanceProposal(mask, 0, float(rec["predicted_iou"])))
        return _ordered(self._classified(out, image))

    def _classified(self, proposals: list[InstanceProposal], image: np.ndarray) -> list[InstanceProposal]:
        if self.labels_band is None:
            return proposals
        labels = np.nan_to_num(image[self.labels_band], nan=255.0)
        return classify_proposals(proposals, np.clip(np.rint(labels), 0, 255).astype(np.uint8), self.things)

    def propose_prompted(
        self, image: np.ndarray, valid: np.ndarray, points: np.ndarray | None = None, boxes: np.ndarray | None = None,
    ) -> list[InstanceProposal]:
        """One mask per prompt: ``points`` ``(n, 2)`` and ``boxes`` ``(n, 4)`` (x0, y0, x1, y1) in the tile's pixels
        (column, row; see :func:`prompts_in_window`); SAM's best of its three masks for each."""
        segment_anything()
        import torch
        from segment_anything import SamPredictor

        predictor = SamPredictor(self.model())
        out = []
        with torch.inference_mode():
            predictor.set_image(self.image_of(image, valid))
            for xy in (points if points is not None else np.empty((0, 2))):
                masks, scores, _ = predictor.predict(point_coords=np.asarray([xy], np.float64),
                                                     point_labels=np.ones(1, int), multimask_output=True)
                out.append(_best(masks, scores, valid))
            for box in (boxes if boxes is not None else np.empty((0, 4))):
                masks, scores, _ = predictor.predict(box=np.asarray(box, np.float64), multimask_output=True)
                out.append(_best(masks, scores, valid))
        return _ordered(self._classified([p for p in out if p.mask.any()], image))


def _best(masks: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> InstanceProposal:
    k = int(np.argmax(scores))  # ties: the first, as numpy decides
    return InstanceProposal(np.asarray(masks[k], bool) & valid, 0, float(scores[k]))


def _ordered(proposals: list[InstanceProposal]) -> list[InstanceProposal]:
    """Highest score first; ties by the first pixel of the mask (row-major), so the order is the data's."""
    def key(p: InstanceProposal) -> tuple[float, int]:
        return (-p.score, int(np.argmax(p.mask.ravel())))

    return sorted(proposals, key=key)


def classify_proposals(
    proposals: Sequence[InstanceProposal], labels: np.ndarray, things: Sequence[int],
) -> list[InstanceProposal]:
    """Each proposal with the class most of its pixels have in ``labels`` (ties: the smaller id); a proposal
    whose majority class is not one of ``things`` is dropped.

    >>> labels = np.array([[1, 1, 2], [1, 2, 2]])
    >>> m = np.array([[1, 1, 1], [0, 0, 0]], bool)
    >>> [(p.class_id, p.score) for p in classify_proposals([InstanceProposal(m, 0, 0.9)], labels, [1])]
    [(1, 0.9)]
    >>> classify_proposals([InstanceProposal(~m, 0, 0.9)], labels, [1])
    []
    """
    wanted = {int(t) for t in things}
    out = []
    for p in proposals:
        values = labels[p.mask].astype(np.int64)
        if values.size == 0:
            continue
        counts = np.bincount(values)
        majority = int(np.argmax(counts))
        if majority in wanted:
            out.append(InstanceProposal(p.mask, majority, p.score))
    return out


def prompts_in_window(path: str | Path, window_grid: Any) -> tuple[np.ndarray, np.ndarray]:
    """Prompts from a vector layer for one tile on ``window_grid`` (a GeoGrid): points (a point feature, in
    the tile's column/row pixels) and boxes (every other feature's bounds, x0, y0, x1, y1 in pixels)
    of the features that meet the tile, in the layer's order."""
    import geopandas as gpd
    import shapely

    from geoseg.io.opener import check_vector

    check_vector(path, "SAM prompts")
    try:
        frame = gpd.read_file(str(path))
    except Exception as exc:  # any driver error is a bad prompt layer for the user
        raise InputError(f"SAM prompts {path} cannot be read as a vector layer: {exc}") from exc
    if frame.crs is None:
        raise InputError(f"SAM prompts {path} have no CRS; set one (ogr2ogr -a_srs EPSG:XXXX)")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(window_grid.crs)
    frame = frame[frame.geometry.intersects(shapely.box(*window_grid.bounds))]
    inverse = ~window_grid.transform
    points, boxes = [], []
    for geom in frame.geometry:
        if geom.geom_type == "Point":
            points.append(inverse * (geom.x, geom.y))
        else:
            x0, y0, x1, y1 = geom.bounds
            (c0, r0), (c1, r1) = inverse * (x0, y1), inverse * (x1, y0)
            boxes.append((min(c0, c1), min(r0, r1), max(c0, c1), max(r0, r1)))
    return np.asarray(points, np.float64).reshape(-1, 2), np.asarray(boxes, np.float64).reshape(-1, 4)
