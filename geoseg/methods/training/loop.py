"""The training loop: model and optimiser set-up, epochs of steps, validation, the best checkpoint kept.

After every epoch the held-out blocks are labelled as a run labels an image (:mod:`.validation`) and scored
as mIoU (through :func:`geoseg.accuracy.metrics.confusion_metrics`, the figures every report uses); the best
epoch's weights are kept as the checkpoint, with the normalisation statistics of the bands and of
the index channels (``index_channels``: indices computed from the bands, appended after them)
computed from training windows stored alongside, and the learning curve is rewritten beside it
(``<checkpoint>.history.json``) after each epoch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.accuracy.metrics import confusion_metrics
from geoseg.io.atomic import write_json_atomic
from geoseg.methods.checkpoint import (
    CheckpointMeta,
    IndexChannel,
    TrainingSummary,
    build_model,
    checkpoint_paths,
    save_checkpoint,
    write_sidecar,
)
from geoseg.methods.deeplab import resolve_device
from geoseg.methods.familiarity import TrainingEnvelope, familiarity
from geoseg.methods.indices import BandIndex
from geoseg.methods.training.augment import Augment
from geoseg.methods.training.averaging import WeightAverage
from geoseg.methods.training.baselines import (
    BaselineScore,
    Tile,
    kmeans_per_scene_baseline,
    score_baselines,
    standardised,
)
from geoseg.methods.training.config import TrainConfig
from geoseg.methods.training.curve import curve_path, write_curve
from geoseg.methods.training.data import (
    IGNORE_INDEX,
    TrainSource,
    WindowSampler,
    _batches,
    _TrainStream,
    band_statistics,
    open_sources,
    resolve_index_channels,
)
from geoseg.methods.training.finetune import init_meta, load_init_weights
from geoseg.methods.training.objectives import EarlyStopping, make_loss, make_schedule
from geoseg.methods.training.validation import (
    ValidationSet,
    read_validation,
    validation_blocks,
    validation_confusion,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    checkpoint: Path
    meta: CheckpointMeta
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_val_miou: float | None
    seconds: float
    history_path: Path = field(default_factory=Path)
    stopped_early: bool = False
    #: index + Otsu and k-means scored on the same validation pixels (empty without validation or baselines)
    baselines: list[BaselineScore] = field(default_factory=list)
    #: CPU seconds of this process during training (all threads; wall time is noisy on a shared machine)
    cpu_seconds: float = 0.0


#: Fewer labelled validation pixels than this and the validation mIoU is too noisy to choose a checkpoint by.
MIN_VALIDATION_PX = 20_000


def history_path(checkpoint: str | os.PathLike) -> Path:
    """Where the learning curve of a checkpoint is written: ``<checkpoint>.history.json``."""
    weights, _ = checkpoint_paths(checkpoint)
    return weights.with_name(weights.name[: -len(".safetensors")] + ".history.json")


def baselines_path(checkpoint: str | os.PathLike) -> Path:
    """Where the network's and the baselines' validation IoU per class are written: ``<checkpoint>.baselines.json``."""
    weights, _ = checkpoint_paths(checkpoint)
    return weights.with_name(weights.name[: -len(".safetensors")] + ".baselines.json")


def validation_scores(conf: np.ndarray) -> tuple[float | None, np.ndarray]:
    """``(mIoU, per-class IoU)`` from a ``(K, K)`` confusion matrix (rows = reference, columns = prediction).

    A class absent from both reference and prediction has IoU NaN and does not count in the
    mean; the mean is ``None`` when no class counts.

    >>> miou, iou = validation_scores(np.array([[3, 1], [0, 0]]))
    >>> round(miou, 3), iou.round(2).tolist()
    (0.375, [0.75, 0.0])
    """
    conf = np.asarray(conf, dtype=np.int64)
    unassigned = np.zeros((conf.shape[0], 1), dtype=np.int64)  # every validation pixel gets a class
    figures = confusion_metrics(np.concatenate([conf, unassigned], axis=1)[None])
    iou = figures["iou"][0]
    miou = float(figures["macro_iou"][0])
    return (None if math.isnan(miou) else miou), iou


def _progress(enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=Console(stderr=True),
    )


# --------------------------------------------------------------------------------------------
# The steps of a run
# --------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """The training stream's sampler, the input statistics (bands, then index channels), the index
    channels and the validation blocks."""

    train_src: list[TrainSource]
    sampler: WindowSampler
    #: the training set's statistics (the sidecar's; what ``normalisation: training`` normalises by)
    mean: np.ndarray
    std: np.ndarray
    val_src: list[TrainSource]
    #: the validation blocks, scored every epoch as a run labels them
    val: ValidationSet
    indices: tuple[BandIndex, ...] = ()
    #: per training source, the ``(mean, std)`` its windows are normalised by
    train_stats: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: under ``normalisation: scene``, the training images' statistics (and a fine-tuned checkpoint's images')
    envelope: TrainingEnvelope | None = None

    @property
    def n_channels(self) -> int:
        """The network's input channels: bands and index channels."""
        return len(self.band_names) + len(self.indices)

    @property
    def band_names(self) -> list[str]:
        return list(self.train_src[0].band_names)

    @property
    def val_raw(self) -> list[Tile]:
        """The validation blocks as read (raw bands, validity, class indexes): what the baselines are scored on."""
        return self.val.raw

    @property
    def val_stats(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per validation block, the ``(mean, std)`` it is normalised by."""
        return self.val.stats

    @property
    def val_px(self) -> int:
        """Labelled pixels of the validation blocks (what every validation score is computed on)."""
        return self.val.px


def _prepare_data(cfg: TrainConfig, train_src: list[TrainSource], val_src: list[TrainSource], rng: np.random.Generator,
                  init: CheckpointMeta | None = None, indices: tuple[BandIndex, ...] = ()) -> _Data:
    """Sampler, input statistics from training windows (or ``init``'s), each image's own with
    ``normalisation: scene``, and the validation blocks read once (targets and raw pixels; each epoch reads
    their context again, :mod:`.validation`)."""
    assert cfg.tile_overlap is not None  # resolved by the config's validator
    sampler = WindowSampler(train_src, len(cfg.classes), cfg.tile_size, cfg.class_balanced,
                            edge_margin=cfg.tile_size - cfg.tile_overlap if cfg.augment_scale <= 0 else 0)
    mean, std = band_statistics(sampler, cfg.norm_windows, rng, indices)
    if init is not None:  # fine-tuning keeps the normalisation the weights were trained with
        mean = np.asarray([*init.band_mean, *(ch.mean for ch in init.index_channels)], np.float32)
        std = np.asarray([*init.band_std, *(ch.std for ch in init.index_channels)], np.float32)
    own: dict[Path, tuple[np.ndarray, np.ndarray]] = {}  # an image split into training and validation rows: once
    train_stats = _source_statistics(cfg, train_src, (mean, std), indices, own)
    val_stats = _source_statistics(cfg, val_src, (mean, std), indices, own)
    envelope = _training_envelope(cfg, train_src, train_stats, indices)
    if envelope is not None and init is not None and init.training_envelope is not None:
        envelope = init.training_envelope.merged(envelope)  # the network has seen the checkpoint's images too
    if cfg.normalisation == "scene":
        _warn_one_class_images(train_src)
        _warn_unfamiliar_validation(envelope, val_src, val_stats)
    blocks = validation_blocks(val_src, cfg.tile_size, cfg.val_tiles, rng) if val_src else []
    data = _Data(train_src, sampler, mean, std, val_src, read_validation(val_src, blocks, val_stats), indices,
                 train_stats, envelope)
    if data.val and data.val_px < MIN_VALIDATION_PX:
        log.warning("validation scores %d labelled pixels only (fewer than %d): the kept checkpoint may hinge on "
                    "noise; raise val_tiles or give more validation images (val_pairs)",
                    data.val_px, MIN_VALIDATION_PX)
    return data


#: An image whose labelled pixels are this much one class is named in a warning under ``normalisation: scene``.
ONE_CLASS_SHARE = 0.95


def _source_statistics(cfg: TrainConfig, sources: list[TrainSource], training: tuple[np.ndarray, np.ndarray],
                       indices: tuple[BandIndex, ...], own: dict[Path, tuple[np.ndarray, np.ndarray]],
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
    """What each source is normalised by: the training set's statistics, or (``normalisation: scene``) the
    image's own, sampled as inference samples a scene (:mod:`geoseg.methods.scenestats`), once per image
    (``own`` keeps them)."""
    if cfg.normalisation == "training":
        return [training] * len(sources)
    for src in sources:
        if src.pair.image not in own:
            own[src.pair.image] = src.scene_statistics(indices)
            log.info("%s: normalised by its own statistics (band means %s)", src.pair.image,
                     ", ".join(f"{v:.4g}" for v in own[src.pair.image][0][: len(src.indexes)]))
    return [own[src.pair.image] for src in sources]


def _training_envelope(cfg: TrainConfig, sources: list[TrainSource], stats: list[tuple[np.ndarray, np.ndarray]],
                       indices: tuple[BandIndex, ...]) -> TrainingEnvelope | None:
    """Under ``normalisation: scene``, the training images' statistics per channel (each image once), what
    inference compares a scene with (:mod:`geoseg.methods.familiarity`)."""
    if cfg.normalisation != "scene" or not sources:
        return None
    per_image = {src.pair.image: st for src, st in zip(sources, stats)}
    names = [*sources[0].band_names, *(index.text for index in indices)]
    return TrainingEnvelope.of(names, list(per_image.values()))


def _warn_unfamiliar_validation(envelope: TrainingEnvelope | None, sources: list[TrainSource],
                                stats: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Name a validation image unlike every training image: the kept checkpoint is chosen on it, and a network
    is seldom good on such an image (RESULTS-training round 4)."""
    if envelope is None:
        return
    for image, (mean, _) in {src.pair.image: st for src, st in zip(sources, stats)}.items():
        line = familiarity(envelope, mean).message(f"validation image {image.name}")
        if line:
            log.warning("%s; the kept checkpoint is chosen on it", line)


def _warn_one_class_images(sources: list[TrainSource]) -> None:
    """Under ``normalisation: scene``, name the training images that are nearly all one class."""
    uniform = [src.pair.image.name for src in sources if src.dominant_share() >= ONE_CLASS_SHARE]
    if uniform:
        log.warning("%d of %d training images (%s) are %.0f %% or more one class: normalised by its own statistics "
                    "such an image's pixels are stretched to one class's spread; if scenes to segment can be that "
                    "uniform, train with `normalisation: training`", len(uniform), len(sources),
                    ", ".join(uniform[:3]), 100 * ONE_CLASS_SHARE)


@dataclass
class _Engine:
    """Model, optimiser, schedule, loss and mixed-precision settings on one device."""

    model: Any
    dev: Any
    opt: Any
    sched: Any
    scaler: Any
    amp_dtype: Any
    loss: Any
    channels_last: bool = False
    accumulate: int = 1
    average: WeightAverage | None = None

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    @property
    def kept(self) -> Any:
        """The network that is validated and saved: the weight average where there is one."""
        return self.average.module if self.average is not None else self.model


def _build_engine(cfg: TrainConfig, n_channels: int, init: CheckpointMeta | None = None) -> _Engine:
    """The network (from ``init_checkpoint`` when given; channels-last on CUDA unless set), AdamW, the schedule
    and the loss; mixed precision on CUDA (``amp``) and bfloat16 on CPU only when ``cpu_bf16`` asks."""
    import torch

    dev = torch.device(resolve_device(cfg.device))
    model = build_model(
        cfg.encoder, n_channels, len(cfg.classes), cfg.encoder_weights, architecture=cfg.architecture,
        encoder_depth=cfg.encoder_depth,
        encoder_output_stride=cfg.encoder_output_stride, decoder_channels=cfg.decoder_channels,
        refine_channels=cfg.refine_channels,
    )
    if init is not None:
        load_init_weights(model, cfg, init)
    model = model.to(dev)
    cuda = dev.type == "cuda"
    channels_last = cuda if cfg.channels_last is None else cfg.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = None
    if cuda and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif dev.type == "cpu" and cfg.cpu_bf16:
        amp_dtype = torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = make_schedule(cfg.lr_schedule, opt, cfg.lr, total)
    loss = make_loss(cfg.loss, cfg.dice_weight, cfg.class_weights, cfg.focal_gamma, dev)
    average = WeightAverage(model, cfg.weight_average) if cfg.weight_average > 0 else None
    return _Engine(model, dev, opt, sched, scaler, amp_dtype, loss, channels_last, cfg.accumulate_steps, average)


def _new_meta(cfg: TrainConfig, data: _Data) -> CheckpointMeta:
    """The checkpoint sidecar as far as it is known before the first step."""
    names = data.band_names
    n = len(names)
    channels = [IndexChannel(text=index.text, needs=[r for r, _ in index.refs], bands=[p for _, p in index.refs],
                             mean=float(data.mean[n + k]), std=float(data.std[n + k]))
                for k, index in enumerate(data.indices)]
    return CheckpointMeta(
        architecture=cfg.architecture, encoder=cfg.encoder, encoder_depth=cfg.encoder_depth,
        encoder_output_stride=cfg.encoder_output_stride,
        decoder_channels=cfg.decoder_channels, refine_channels=cfg.refine_channels, in_channels=data.n_channels,
        band_names=names,
        band_mean=data.mean[:n].tolist(), band_std=data.std[:n].tolist(), index_channels=channels,
        normalisation=cfg.normalisation,
        training_envelope=data.envelope,
        scale_applied=cfg.apply_scale or not any(s.declares_scale for s in data.train_src),
        classes=list(cfg.classes), tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap, resolution=float(np.mean([s.resolution for s in data.train_src])),
        crs=data.train_src[0].crs.to_string(),
        training=TrainingSummary(
            steps_per_epoch=cfg.steps_per_epoch, images=[str(p.image) for p in cfg.pairs],
            init_checkpoint=str(cfg.init_checkpoint) if cfg.init_checkpoint else None,
        ),
    )


def _plain_from_epoch(cfg: TrainConfig) -> int:
    """The first epoch trained without zoom and jitter (``epochs + 1``: none; at least one epoch sees them)."""
    if cfg.augment_scale <= 0 and cfg.augment_jitter <= 0:
        return cfg.epochs + 1
    return max(2, math.ceil(cfg.epochs * cfg.augment_until) + 1)


def _training_batches(cfg: TrainConfig, data: _Data, augmented: bool) -> Generator[tuple[Any, Any], None, None]:
    """Batches of the training stream, with zoom and jitter or with the pixels as delivered (flips and rotations
    both). The plain stream takes another seed, so its windows are not the first ones again."""
    aug = Augment(cfg.tile_size, cfg.augment_scale, cfg.augment_jitter) if augmented else Augment(cfg.tile_size)
    seed = cfg.seed if augmented else cfg.seed + 1_000_003
    stream = _TrainStream(data.sampler, data.train_stats, seed, data.indices, aug)
    return _batches(stream, cfg.batch_size, cfg.num_workers)


def _train_epoch(
    eng: _Engine, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int, epoch: int, progress, task
) -> list[float]:
    """``steps`` optimiser steps, each over ``eng.accumulate`` batches whose gradients add up (batches without
    any labelled pixel are skipped; a step without any only advances the schedule); the losses."""
    import torch

    eng.model.train()
    losses: list[float] = []
    for _ in range(steps):
        eng.opt.zero_grad(set_to_none=True)
        parts: list[float] = []
        for _ in range(eng.accumulate):
            xb, yb = next(batches)
            if eng.cuda:
                xb = xb.pin_memory().to(eng.dev, non_blocking=True)
                yb = yb.pin_memory().to(eng.dev, non_blocking=True)
            if eng.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if not bool((yb != IGNORE_INDEX).any()):
                continue
            with torch.autocast(eng.dev.type, dtype=eng.amp_dtype, enabled=eng.amp_dtype is not None):
                logits = eng.model(xb)
            loss = eng.loss(logits.float(), yb)
            eng.scaler.scale(loss / eng.accumulate).backward()
            parts.append(float(loss.detach()))
        if not parts:
            eng.sched.step()
            continue
        eng.scaler.step(eng.opt)
        eng.scaler.update()
        eng.sched.step()
        if eng.average is not None:
            eng.average.update(eng.model)
        losses.append(float(np.mean(parts)))
        if progress:
            progress.update(task, advance=1, info=f"epoch {epoch} loss {losses[-1]:.3f}")
    return losses


def _validate(cfg: TrainConfig, eng: _Engine, data: _Data, meta: CheckpointMeta) -> dict[str, Any]:
    """The epoch's validation entries of the history: mIoU and IoU per class name (None when unscored)."""
    if not data.val:
        return {"val_miou": None}
    miou, iou = validation_scores(validation_confusion(eng.kept, meta, data.val, data.val_src, eng.dev,
                                                       cfg.batch_size))
    return {
        "val_miou": miou,
        "val_px": data.val_px,  # the pixels the score is computed on: a figure over few pixels is noise
        "val_iou": {c.name: (None if math.isnan(v) else float(v)) for c, v in zip(cfg.classes, iou)},
    }


@dataclass
class _Best:
    """The best epoch so far by the selection score: the EMA of validation mIoU (``smoothed``, so one lucky
    epoch over few pixels does not choose the weights) or the epoch's own mIoU (``best``)."""

    key: str = "val_miou_ema"
    score: float | None = None
    miou: float | None = None
    epoch: int | None = None

    def improved_by(self, row: dict[str, Any]) -> bool:
        """Record ``row`` if it beats the best so far; whether it did."""
        m = row.get(self.key)
        if m is None or (self.score is not None and m <= self.score):
            return False
        self.score, self.miou, self.epoch = m, row.get("val_miou"), row["epoch"]
        return True


def _save_if_best(cfg: TrainConfig, eng: _Engine, meta: CheckpointMeta, row: dict[str, Any], best: _Best,
                  has_val: bool, t_start: float) -> None:
    """Save the weights when the epoch is the best so far (every epoch when nothing is held out)."""
    if has_val and not best.improved_by(row):
        return
    meta.training = meta.training.model_copy(update={
        "epochs": row["epoch"], "best_epoch": best.epoch, "best_val_miou": best.miou, "selection": cfg.checkpoint_selection,
        "weight_average": cfg.weight_average or None,
        "best_val_miou_ema": row.get("val_miou_ema"),
        "val_iou": {k: v for k, v in row.get("val_iou", {}).items() if v is not None},
        "seconds": round(time.perf_counter() - t_start, 1),
    })
    save_checkpoint(eng.kept, meta, cfg.checkpoint)


def train(config: TrainConfig) -> TrainResult:
    """Train the ``config.architecture`` network (DeepLabV3+ by default) as ``config`` says and
    write the best checkpoint; returns the curve.

    Raises :class:`InputError` for unusable inputs and :class:`~geoseg.errors.ModelError` for
    an unknown encoder or unusable encoder weights, before any training starts.
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    cfg = config
    train_src, val_src = open_sources(cfg)  # input errors first: before the (slow) torch import

    indices = resolve_index_channels(cfg.index_channels, train_src + val_src)
    init = None
    if cfg.init_checkpoint:
        cfg, init = init_meta(cfg, list(train_src[0].band_names), indices)

    import torch

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = _prepare_data(cfg, train_src, val_src, rng, init, indices)
    baselines = _baselines(cfg, data) if cfg.baselines and data.val else []
    eng = _build_engine(cfg, data.n_channels, init)
    meta = _new_meta(cfg, data)
    # one EMA of val mIoU for both early stopping and the smoothed checkpoint selection
    stopper = EarlyStopping(cfg.early_stopping_patience or 2**31, cfg.early_stopping_alpha, cfg.early_stopping_min_delta)
    stopped = False
    hist_path = history_path(cfg.checkpoint)
    hist_path.parent.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best = _Best("val_miou_ema" if cfg.checkpoint_selection == "smoothed" else "val_miou")
    batches = _training_batches(cfg, data, augmented=True)
    plain_from = _plain_from_epoch(cfg)
    progress = _progress(cfg.progress)
    task = progress.add_task("training", total=cfg.epochs * cfg.steps_per_epoch, info="") if progress else None
    if progress:
        progress.start()
    try:
        for epoch in range(1, cfg.epochs + 1):
            if epoch == plain_from:
                batches.close()
                batches = _training_batches(cfg, data, augmented=False)
            t_epoch = time.perf_counter()
            losses = _train_epoch(eng, batches, cfg.steps_per_epoch, epoch, progress, task)
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else None,
                "lr": float(eng.sched.get_last_lr()[0]),
                "seconds": round(time.perf_counter() - t_epoch, 3),
            }
            row.update(_validate(cfg, eng, data, meta))
            stopped = stopper.update(row["val_miou"]) and cfg.early_stopping_patience is not None
            if row["val_miou"] is not None:
                row["val_miou_ema"] = stopper.ema
            history.append(row)
            _save_if_best(cfg, eng, meta, row, best, bool(data.val), t_start)
            write_json_atomic(hist_path, history)
            write_curve(history, curve_path(hist_path))
            log.info("epoch %d: train loss %s, val mIoU %s", epoch, row["train_loss"], row["val_miou"])
            if stopped:
                log.info("early stop after epoch %d: smoothed val mIoU %.4f has not improved for %d epochs",
                         epoch, stopper.ema, stopper.patience)
                break
    finally:
        batches.close()  # stops loader worker processes
        if progress:
            progress.stop()
    cpu = time.process_time() - cpu_start
    meta.training = meta.training.model_copy(update={"epochs": len(history), "stopped_early": stopped,
                                                    "seconds": round(time.perf_counter() - t_start, 1),
                                                    "cpu_seconds": round(cpu, 1)})
    if baselines:
        names = [c.name for c in cfg.classes]
        table = [b.to_json(names) for b in baselines]
        meta.training = meta.training.model_copy(update={"baselines": table})
        chosen = next((h for h in history if h["epoch"] == best.epoch), None)
        network = {"method": "network", "epoch": best.epoch, "val_miou": best.miou,
                   "val_px": data.val_px, "val_iou": chosen.get("val_iou") if chosen else None}
        write_json_atomic(baselines_path(cfg.checkpoint), [network, *table])
    write_sidecar(meta, cfg.checkpoint)
    weights, _ = checkpoint_paths(cfg.checkpoint)
    return TrainResult(
        checkpoint=weights, meta=meta, history=history, best_epoch=best.epoch, best_val_miou=best.miou,
        seconds=time.perf_counter() - t_start, history_path=hist_path, stopped_early=stopped,
        baselines=baselines, cpu_seconds=cpu,
    )


def _baselines(cfg: TrainConfig, data: _Data) -> list[BaselineScore]:
    """Index + Otsu and k-means fitted on uniform training windows (own random draws: the network's stay
    the same with or without them), scored on the validation blocks the network is scored on."""
    rng = np.random.default_rng([cfg.seed, 11])
    uniform = WindowSampler.__new__(WindowSampler)
    uniform.__dict__.update(data.sampler.__dict__, class_balanced=False, edge_margin=0)
    picks = [uniform.pick(rng) for _ in range(cfg.norm_windows)]
    tiles = [data.train_src[si].read(r, c, h, w) for si, r, c, h, w in picks]
    names = [c.name for c in cfg.classes]
    out = score_baselines(data.band_names, tiles, data.val_raw, names, cfg.seed)
    if cfg.normalisation == "scene":  # the network sees every scene standardised by itself: so does this k-means
        own = [standardised(t, *data.train_stats[si]) for t, (si, *_) in zip(tiles, picks)]
        own_val = [standardised(t, *st) for t, st in zip(data.val_raw, data.val_stats)]
        out.append(kmeans_per_scene_baseline(data.band_names, own, own_val, names, cfg.seed))
    for b in out:
        log.info("baseline %s: val mIoU %s", b.name, b.miou)
    return out
