"""Segmentation model checkpoints (DeepLabV3+ and the other smp architectures): weights in
safetensors, everything else in a JSON sidecar.

A checkpoint is two files, ``<path>.safetensors`` (tensors only, no pickle, so a checkpoint
from a stranger cannot run code) and ``<path>.json`` (a :class:`CheckpointMeta`: architecture,
bands and their normalisation, classes, tile geometry, training resolution, provenance).
The sidecar is also embedded in the safetensors header, so a lone ``.safetensors`` file
still loads. :func:`check_compatible` refuses an image the model was not trained for.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from geoseg.errors import CheckpointError, InputError, ModelError, ModelInputError
from geoseg.io.atomic import write_atomic
from geoseg.io.bandroles import BandInfo
from geoseg.legend import ClassInfo
from geoseg.methods.architectures import ArchitectureName, check_tile_size, model_kwargs
from geoseg.methods.familiarity import TrainingEnvelope

if TYPE_CHECKING:  # torch is imported lazily: the k-means path never needs it
    import torch

    from geoseg.methods.indices import BandIndex

log = logging.getLogger(__name__)

#: Version of the sidecar layout; bumped when a field changes meaning.
FORMAT_VERSION = 1
#: Key of the sidecar JSON inside the safetensors header.
_HEADER_KEY = "geoseg_checkpoint"
#: Default tolerance of :func:`check_compatible` on the pixel size ratio.
MAX_RESOLUTION_RATIO = 1.5
#: Largest model tile a sidecar may declare: tiles, their blending window and class probabilities are held
#: per batch (a sidecar saying 185,000 px asked for a 256 GiB window); models are trained at 256-1024.
MAX_TILE_SIZE = 4096



def geoseg_version() -> str:
    """The installed geoseg version, recorded in every checkpoint for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoseg")
    except PackageNotFoundError:
        return "0+unknown"


class TrainingSummary(BaseModel):
    """How the weights were obtained: enough to judge a checkpoint without its logs."""

    model_config = ConfigDict(extra="allow")

    epochs: int = 0
    steps_per_epoch: int = 0
    best_epoch: int | None = None
    best_val_miou: float | None = None
    val_iou: dict[str, float] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    seconds: float | None = None
    init_checkpoint: str | None = None
    stopped_early: bool = False


class IndexChannel(BaseModel):
    """An index the network gets as an input channel after the bands (``index_channels`` of the training job).

    ``needs``: the roles (a named index) or bands (an expression, as written) it reads; ``bands``: the
    position in ``band_names`` each was found at in training; ``mean``/``std``: its standardisation.
    """

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="exg, ndvi, ndwi, a band, or a band expression (geoseg.methods.indices)")
    needs: list[str]
    bands: list[int]
    mean: float
    std: float

    @model_validator(mode="after")
    def _consistent(self) -> IndexChannel:
        if len(self.needs) != len(self.bands):
            raise ValueError(f"index channel {self.text!r}: {len(self.needs)} needs but {len(self.bands)} band positions")
        if not (self.std > 0 and math.isfinite(self.std) and math.isfinite(self.mean)):
            raise ValueError(f"index channel {self.text!r}: mean and std must be finite and std positive")
        return self

    def index(self) -> BandIndex:
        """The index bound to the band positions it was trained on (what inference computes)."""
        from geoseg.methods.indices import resolve_index

        return resolve_index(self.text, dict(zip(self.needs, self.bands)))


class CheckpointMeta(BaseModel):
    """Everything needed to rebuild a model and feed it the right pixels (the JSON sidecar).

    The model's output channel ``i`` is class ``classes[i]``; inputs are bands ``band_names``
    in that order, normalised as ``(x - band_mean) / band_std``, then the ``index_channels``
    (none in sidecars written before they existed): ``in_channels`` counts both.
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    architecture: ArchitectureName = "DeepLabV3Plus"
    encoder: str = "resnet18"
    encoder_depth: int = 5
    encoder_output_stride: int = 16
    decoder_channels: int = 256
    #: Hidden channels of the full-resolution refinement head (:mod:`geoseg.methods.refine`); 0 = none
    #: (as in every sidecar written before it existed).
    refine_channels: int = Field(default=0, ge=0)
    in_channels: int
    band_names: list[str]
    band_mean: list[float]
    band_std: list[float]
    index_channels: list[IndexChannel] = Field(default_factory=list)
    #: What the inputs are standardised by: ``training`` = ``band_mean``/``band_std`` and the index channels'
    #: statistics (every sidecar written before this existed), ``scene`` = each scene's own statistics
    #: (:mod:`geoseg.methods.scenestats`); the training set's are then kept for reference only.
    normalisation: Literal["training", "scene"] = "training"
    #: With ``normalisation: scene``: the training images' statistics per input channel, what a scene is compared
    #: with before its labels are trusted (:mod:`geoseg.methods.familiarity`); None in older sidecars.
    training_envelope: TrainingEnvelope | None = None
    #: What the network saw: True = each file's scale/offset applied (physical values; files without any are
    #: read as stored), False = stored numbers of files that declare a scale, None = a sidecar written before
    #: this was recorded (training then read stored numbers).
    scale_applied: bool | None = None
    classes: list[ClassInfo]
    tile_size: int = 256
    tile_overlap: int = 64
    resolution: float | None = Field(default=None, description="pixel size in CRS units at training")
    crs: str | None = None
    geoseg_version: str = Field(default_factory=geoseg_version)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training: TrainingSummary = Field(default_factory=TrainingSummary)

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointMeta:
        n = self.in_channels - len(self.index_channels)
        if not (len(self.band_names) == len(self.band_mean) == len(self.band_std) == n):
            raise ValueError(
                f"in_channels={self.in_channels} ({len(self.index_channels)} index channels) but "
                f"{len(self.band_names)} band names, {len(self.band_mean)} means and {len(self.band_std)} stds"
            )
        if self.training_envelope is not None and len(self.training_envelope.channels) != self.in_channels:
            raise ValueError(f"training_envelope has {len(self.training_envelope.channels)} channels, the network "
                             f"{self.in_channels}")
        for ch in self.index_channels:
            if any(not 0 <= b < n for b in ch.bands):
                raise ValueError(f"index channel {ch.text!r} reads band positions {ch.bands}; there are {n} bands")
        if any(not (s > 0 and math.isfinite(s)) for s in self.band_std):
            raise ValueError(f"band_std must be positive and finite, got {self.band_std}")
        if not self.classes:
            raise ValueError("a checkpoint needs at least one class")
        if len({c.id for c in self.classes}) != len(self.classes):
            raise ValueError("class ids must be unique")
        if any(not 0 <= c.id <= 254 for c in self.classes):
            raise ValueError("class ids must be in 0..254 (255 is the nodata label)")
        if self.tile_size % 16 or not 32 <= self.tile_size <= MAX_TILE_SIZE:
            raise ValueError(f"tile_size must be a multiple of 16 from 32 to {MAX_TILE_SIZE}, got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ValueError(f"tile_overlap must be in [0, tile_size), got {self.tile_overlap}")
        check_tile_size(self.architecture, self.encoder_depth, self.encoder_output_stride, self.tile_size)
        return self

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def indices(self) -> tuple[BandIndex, ...]:
        """The index channels bound to the band positions they were trained on."""
        return tuple(ch.index() for ch in self.index_channels)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, sidecar)`` for a checkpoint named with or without its ``.safetensors``/``.json`` suffix.

    >>> [p.name for p in checkpoint_paths("runs/crop.safetensors")]
    ['crop.safetensors', 'crop.json']
    """
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def build_model(
    encoder: str,
    in_channels: int,
    n_classes: int,
    encoder_weights: str | os.PathLike | None = None,
    *,
    architecture: str = "DeepLabV3Plus",
    encoder_depth: int = 5,
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    refine_channels: int = 0,
) -> torch.nn.Module:
    """The network ``architecture`` names (an smp architecture, DeepLabV3+ by default), never downloading anything.

    smp is always asked for ``encoder_weights=None``; pretrained encoder weights come only from
    a file the user supplies (safetensors, or a plain tensor state dict), loaded into
    ``model.encoder``. A 3-band (RGB) file is adapted to other band counts like smp does.
    ``refine_channels`` > 0 wraps the network in the full-resolution head of :mod:`geoseg.methods.refine`.
    """
    import segmentation_models_pytorch as smp

    try:
        kwargs = model_kwargs(architecture, encoder_depth, encoder_output_stride, decoder_channels)
        model = smp.create_model(
            arch=architecture, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
            classes=n_classes, **kwargs,
        )
    except (KeyError, ValueError) as exc:
        raise ModelError(
            f"cannot build {architecture} with encoder {encoder!r} (depth {encoder_depth}, output stride "
            f"{encoder_output_stride}): {exc}. Use an encoder segmentation-models-pytorch knows, e.g. resnet18"
        ) from exc
    if refine_channels:
        from geoseg.methods.refine import PixelRefined

        model = PixelRefined(model, in_channels, n_classes, refine_channels)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def build_model_from_meta(meta: CheckpointMeta) -> torch.nn.Module:
    """The (untrained) network described by ``meta``."""
    return build_model(
        meta.encoder,
        meta.in_channels,
        meta.n_classes,
        architecture=meta.architecture,
        encoder_depth=meta.encoder_depth,
        encoder_output_stride=meta.encoder_output_stride,
        decoder_channels=meta.decoder_channels,
        refine_channels=meta.refine_channels,
    )


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    import torch
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"encoder weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    try:  # weights_only refuses arbitrary pickled objects: tensors and containers only
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's text spans lines and suggests weights_only=False, which runs code: not shown
        raise ModelError(
            f"cannot read weights from {path} ({type(exc).__name__}): it is neither a .safetensors file nor a state "
            "dict of plain tensors; geoseg never unpickles objects, so save the tensors with safetensors.torch.save_file"
        ) from None
    for key in ("state_dict", "model", "encoder"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    return obj


def load_encoder_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a user's encoder weights into ``model.encoder``.

    Accepts keys with or without an ``encoder.`` prefix and ignores classifier keys the encoder
    lacks (``fc.*``); a first convolution with another band count is adapted by cycling the
    input-channel weights and rescaling, as smp does for ImageNet weights.
    """
    import torch

    src = _read_tensor_file(Path(path))
    if any(k.startswith("encoder.") for k in src):
        src = {k[len("encoder."):]: v for k, v in src.items() if k.startswith("encoder.")}
    encoder = cast("torch.nn.Module", model.encoder)  # nn.Module.__getattr__ is typed Tensor | Module
    target = encoder.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, ref in target.items():
        if key not in src:
            continue
        val = src[key]
        if val.shape != ref.shape:
            if val.ndim == 4 and ref.ndim == 4 and val.shape[0] == ref.shape[0] and val.shape[2:] == ref.shape[2:]:
                new_in, old_in = ref.shape[1], val.shape[1]
                idx = torch.arange(new_in) % old_in
                val = val[:, idx] * (old_in / new_in)
            else:
                raise ModelError(
                    f"encoder weights {path}: {key} has shape {tuple(val.shape)}, the {model.encoder.__class__.__name__} "
                    f"expects {tuple(ref.shape)}; were they saved for another encoder?"
                )
        out[key] = val.to(ref.dtype)
    missing = [k for k in target if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(
            f"encoder weights {path} lack {len(missing)} of {len(target)} encoder tensors "
            f"(e.g. {', '.join(missing[:3])}); were they saved for another encoder?"
        )
    unused = sorted(set(src) - set(target))
    if unused:
        log.info("encoder weights %s: ignoring %d tensors the encoder has no use for (%s...)", path, len(unused), unused[0])
    encoder.load_state_dict(out, strict=False)


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename into place (:func:`geoseg.io.atomic.write_atomic`), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, write)


def save_checkpoint(model: torch.nn.Module, meta: CheckpointMeta, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` and ``<path>.json``, each through a temporary file and a rename.

    Readers never see half a file; the weights are written first so a sidecar always points
    to weights of the same save (its JSON is also embedded in the weights' header).
    """
    from safetensors.torch import save_file

    weights, sidecar = checkpoint_paths(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    text = meta.to_json()
    _atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={_HEADER_KEY: text}))
    _atomic_write(sidecar, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return weights, sidecar


def write_sidecar(meta: CheckpointMeta, path: str | os.PathLike) -> Path:
    """Rewrite only the JSON sidecar (e.g. the final training summary; the weights are unchanged)."""
    _, sidecar = checkpoint_paths(path)
    _atomic_write(sidecar, lambda tmp: tmp.write_text(meta.to_json() + "\n", encoding="utf-8"))
    return sidecar


def read_meta(path: str | os.PathLike) -> CheckpointMeta:
    """The checkpoint's metadata, from the sidecar or else from the weights' header."""
    from safetensors import safe_open

    weights, sidecar = checkpoint_paths(path)
    try:
        if sidecar.is_file():
            return CheckpointMeta.model_validate_json(read_sidecar(sidecar))
        if weights.is_file():
            check_weights_file(weights)  # safe_open of a truncated file fails with a bare SafetensorError
            with safe_open(str(weights), framework="pt") as f:
                text = (f.metadata() or {}).get(_HEADER_KEY)
            if text:
                return CheckpointMeta.model_validate_json(text)
            raise CheckpointError(f"{weights} has no geoseg metadata and {sidecar} is missing; it is not a geoseg checkpoint")
    except ValidationError as exc:
        raise CheckpointError(f"checkpoint metadata of {path} is invalid: {invalid_fields(exc)}") from None
    raise CheckpointError(f"no checkpoint at {weights}; train one with `geoseg train` or check the path")


def read_sidecar(sidecar: Path) -> str:
    """A checkpoint's JSON sidecar as text, or a :class:`CheckpointError` for a file that is not UTF-8 text."""
    try:
        return sidecar.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{sidecar} is not a checkpoint's JSON sidecar (not UTF-8 text)") from None


def invalid_fields(exc: ValidationError) -> str:
    """One line saying which fields of checkpoint metadata break which rule, never their values.

    A job names the checkpoint, so its "sidecar" may be any JSON file on the machine (a credentials file):
    pydantic's own message would quote the values it got.
    """
    errors = exc.errors(include_input=False, include_url=False)
    unknown = sum(e["type"] == "extra_forbidden" for e in errors)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
             for e in errors if e["type"] != "extra_forbidden"][:3]
    if unknown:
        parts.append(f"{unknown} unknown key(s)")
    more = len(errors) - unknown - min(3, len(errors) - unknown)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


#: Bytes per element of the safetensors dtypes.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
#: A safetensors header larger than this is refused (the format's own limit is 100 MB).
_MAX_HEADER = 100_000_000


def check_weights_file(weights: str | os.PathLike) -> int:
    """Check a safetensors file's structure without reading its tensors; return the number of tensors.

    The header (8-byte length, then JSON) must parse; every tensor's byte range must equal its
    shape times its dtype's size; the ranges must tile the data area exactly up to the file's end.
    A truncated or overwritten file is refused here, on the client, in milliseconds, instead of
    on every worker after the cluster has started. Raises :class:`ModelError` (one line).
    """
    import json

    path = Path(weights)
    where = f"checkpoint weights {path}"
    fix = "copy the file again or retrain"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{where} are damaged: {size} bytes, too short for a safetensors file; {fix}")
            n = int.from_bytes(head, "little")
            if n > min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"{where} are damaged: the header claims {n} bytes, the file has {size}; {fix}")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise CheckpointError(f"cannot read {where}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where} are damaged: the safetensors header is not JSON ({exc}); {fix}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{where} are damaged: the safetensors header is not an object; {fix}")
    data_bytes = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(v) for v in info["shape"]], info["data_offsets"]
            itemsize = _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where} are damaged: tensor {name!r} has a bad header entry ({exc}); {fix}") from exc
        need = math.prod(shape) * itemsize
        if end - begin != need or begin < 0:
            raise CheckpointError(f"{where} are damaged: tensor {name!r} ({dtype} {shape}) needs {need} bytes, "
                             f"its header gives {end - begin}; {fix}")
        if end > data_bytes:
            raise CheckpointError(f"{where} are truncated: tensor {name!r} ends at byte {8 + n + end}, "
                             f"the file has {size}; {fix}")
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise CheckpointError(f"{where} are damaged: tensor data overlap or leave a gap at byte {8 + n + covered}; {fix}")
        covered = end
    if covered != data_bytes:
        raise CheckpointError(f"{where} are damaged: {data_bytes - covered} bytes after the last tensor; {fix}")
    if not spans:
        raise CheckpointError(f"{where} hold no tensors; {fix}")
    return len(spans)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """Rebuild the model of a checkpoint in eval mode on ``device``, plus its metadata.

    Only :func:`safetensors.torch.load_file` touches the weights file: nothing is unpickled.
    """
    from safetensors.torch import load_file

    meta = read_meta(path)
    weights, _ = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing (the sidecar exists); copy both files")
    model = build_model_from_meta(meta)
    try:
        state = load_file(str(weights), device="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load weights {weights} into the model its sidecar describes: {exc}") from exc
    return model.to(device).eval(), meta


def _is_generic(names: Sequence[str]) -> bool:
    """True for the placeholder names ``b1, b2, ...`` given to bands without a description.

    >>> _is_generic(["b1", "b2"]), _is_generic(["t0:b1", "t0:b2"]), _is_generic(["B02", "B03"])
    (True, True, False)
    """
    return all(n.rsplit(":", 1)[-1] == f"b{i + 1}" for i, n in enumerate(names))


def _norm_name(name: str) -> str:
    return name.rsplit(":", 1)[-1].strip().lower()


def check_compatible(
    meta: CheckpointMeta,
    band_names: Sequence[str],
    resolution: float | None,
    *,
    max_resolution_ratio: float = MAX_RESOLUTION_RATIO,
    crs: Any = None,
) -> None:
    """Refuse (``ModelError``) an image whose bands or pixel size the model was not trained on.

    Pixel sizes are compared in metres where both the image's ``crs`` and the checkpoint's have a known linear
    unit (a model trained at 0.05 m fits a 0.164 US-ft image), else in CRS units as recorded.

    Band names are compared case-insensitively, ignoring a ``file:`` prefix; generic names
    (``b1``, ``b2``...) on either side match anything, with a log line, since many GeoTIFFs
    carry no band descriptions. A pixel size off by more than ``max_resolution_ratio`` either
    way is refused: a CNN's learned shapes and textures do not transfer across scales.
    """
    want = list(meta.band_names)
    have = list(band_names)
    shown_want = ", ".join(want)
    shown_have = ", ".join(have) if len(have) <= 16 else ", ".join(have[:16]) + ", ..."
    if len(have) != len(want):
        raise ModelInputError(
            f"checkpoint expects {len(want)} bands ({shown_want}), image has {len(have)} ({shown_have}); "
            "write a GeoTIFF with those bands (e.g. gdal_translate -b 1 -b 2 ...) or train a model for these bands"
        )
    if [_norm_name(n) for n in have] != [_norm_name(n) for n in want]:
        if _is_generic(have) or _is_generic(want):
            log.info("band names not checked: image bands (%s), checkpoint bands (%s)", shown_have, shown_want)
        elif sorted(map(_norm_name, have)) == sorted(map(_norm_name, want)):
            raise ModelInputError(
                f"checkpoint expects bands in the order ({shown_want}), image has ({shown_have}); "
                "reorder the bands (e.g. gdal_translate -b 3 -b 2 -b 1 ...)"
            )
        else:
            raise ModelInputError(
                f"checkpoint expects bands ({shown_want}), image has ({shown_have}); "
                "use an image with these bands or train a model for this one"
            )
    if resolution is None or meta.resolution is None:
        return
    if not (resolution > 0 and meta.resolution > 0):
        return
    image_m, trained_m = _metres_per_unit(crs), _metres_per_unit(meta.crs)
    if image_m is not None and trained_m is not None:
        image_px, trained_px, unit, per_unit = resolution * image_m, meta.resolution * trained_m, "m", image_m
    else:
        image_px, trained_px, unit, per_unit = resolution, meta.resolution, "CRS units", 1.0
    ratio = image_px / trained_px
    if ratio > max_resolution_ratio or ratio < 1 / max_resolution_ratio:
        how = f"{ratio:.3g}x coarser" if ratio > 1 else f"{1 / ratio:.3g}x finer"
        raise ModelInputError(
            f"checkpoint was trained on pixels of {trained_px:g} {unit}, image pixels are {image_px:g} {unit} ({how}); resample "
            f"the image to {trained_px / per_unit:g} of its CRS units (gdalwarp -tr) or train a model at this resolution"
        )


def _metres_per_unit(crs: Any) -> float | None:
    """Metres per unit of a CRS (a rasterio CRS or its text), ``None`` where unknown or angular."""
    if crs is None:
        return None
    from rasterio.crs import CRS

    from geoseg.geo import metres_per_unit

    try:
        return metres_per_unit(crs if isinstance(crs, CRS) else CRS.from_user_input(crs))
    except Exception:  # a CRS rasterio cannot read: compared in its own units, as recorded
        return None


def check_index_channels(meta: CheckpointMeta, bands: Sequence[BandInfo] | Sequence[str]) -> None:
    """Refuse (``ModelInputError``, naming the index and the role) an image that lacks a role or band an
    index channel reads, or has it at another band position than the training image had.

    ``bands``: the scene's bands with their roles (:attr:`Scene.bands <geoseg.io.scene.Scene.bands>`), or names.
    """
    from geoseg.methods.indices import resolve_index

    for ch in meta.index_channels:
        try:
            got = dict(resolve_index(ch.text, bands).refs)
        except InputError as exc:  # a missing role (BandRoleError) or band
            raise ModelInputError(f"the model's index channel {ch.text!r} needs {', '.join(ch.needs)}: {exc}") from None
        for need, pos in zip(ch.needs, ch.bands):
            if got.get(need) != pos:
                have = got.get(need)
                shown = f"band {have + 1}" if have is not None else "no band"
                raise ModelInputError(
                    f"the model's index channel {ch.text!r} read {need!r} from band {pos + 1} "
                    f"({meta.band_names[pos]}) in training, this image has it in {shown}; "
                    "reorder the image's bands or name them (`bands: [...]` in the input entry)"
                )


def check_units(meta: CheckpointMeta, bands: Sequence[BandInfo]) -> None:
    """Refuse (``ModelInputError``) an image whose values would reach the network in other units than in training.

    A model trained on stored numbers (``scale_applied`` False, or a sidecar from before geoseg recorded it)
    given an input whose scale/offset geoseg applies would see reflectance where it learned digital numbers:
    every label would be wrong and nothing would say so. The converse (a model trained on physical values
    given a file read with ``apply_scale: false``) cannot be told from the pixels and is the user's to set.
    """
    if meta.scale_applied:
        return
    scaled = [b.name for b in bands if isinstance(b, BandInfo) and (b.scale != 1.0 or b.offset != 0.0)]
    if not scaled:
        return
    when = "with `apply_scale: false`" if meta.scale_applied is False else "before geoseg applied scale/offset in training"
    raise ModelInputError(
        f"the model was trained on stored numbers ({when}), but this image's bands {', '.join(scaled[:4])} declare "
        "a scale/offset geoseg applies on read; set `apply_scale: false` on the inputs, or retrain without it"
    )
