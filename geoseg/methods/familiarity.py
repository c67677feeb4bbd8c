"""Is a scene like the images a network was trained on? A check before its labels are trusted.

Why: per-scene normalisation (:mod:`geoseg.methods.scenestats`) takes a brightness shift out, but not another
season. On the Slovenia sample a network trained on three summer dates and applied to the winter date scored
forest below "everything is forest" (0.65 against 0.76 IoU), with nothing to tell the user
(``benchmarks/RESULTS-training.md``, round 4). Such a scene's own statistics lie far outside those of every
training image, while the dates the network labels well lie inside or near them.

What is compared: for each network channel (the bands, then the index channels), the scene's mean against the
range of the training images' means, in units of the training images' typical within-image standard deviation.
A scene whose mean is more than :data:`UNFAMILIAR_STDS` of them outside that range on some channel is
*unfamiliar*: a warning naming the channel, and the figures in ``run.json``. It is a warning, not a refusal: a
scene can be unlike the training images and still be labelled well, and the check says nothing of a scene
within the range. It needs the training images' statistics in the checkpoint (``normalisation: scene``,
recorded since this check exists); older checkpoints are not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

#: How many within-image standard deviations outside the training images' range make a channel unfamiliar. On
#: the Slovenia dates (RESULTS-training round 4) the dates the network labelled well were at most 1.6 away on
#: any channel, the two it failed on 17 and 26; a generated scene 10-30 % brighter with an offset, which a
#: scene-normalised network labels as before, is 2.6 away. Set high: it flags gross differences only.
UNFAMILIAR_STDS = 5.0


class TrainingEnvelope(BaseModel):
    """What the training images looked like, per network channel: the lowest and highest of their means and
    their mean within-image standard deviation (the checkpoint sidecar's ``training_envelope``)."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str]
    mean_low: list[float]
    mean_high: list[float]
    within_std: list[float]
    images: int

    @model_validator(mode="after")
    def _consistent(self) -> TrainingEnvelope:
        n = len(self.channels)
        if not (len(self.mean_low) == len(self.mean_high) == len(self.within_std) == n):
            raise ValueError(f"training_envelope: {n} channels but {len(self.mean_low)} lows, {len(self.mean_high)} "
                             f"highs and {len(self.within_std)} stds")
        if any(not (s > 0 and np.isfinite(s)) for s in self.within_std):
            raise ValueError("training_envelope: within-image stds must be positive and finite")
        return self

    @classmethod
    def of(cls, channels: Sequence[str], stats: Sequence[tuple[np.ndarray, np.ndarray]]) -> TrainingEnvelope:
        """The envelope of the training images' ``(mean, std)`` per channel (one pair per image)."""
        means = np.array([m for m, _ in stats], dtype=np.float64)
        stds = np.array([s for _, s in stats], dtype=np.float64)
        return cls(channels=list(channels), mean_low=means.min(axis=0).tolist(), mean_high=means.max(axis=0).tolist(),
                   within_std=stds.mean(axis=0).tolist(), images=len(stats))

    def merged(self, other: TrainingEnvelope) -> TrainingEnvelope:
        """The envelope of both sets of images, with ``other``'s channel names: a fine-tuned network has seen its
        checkpoint's training images and the new ones (an image in both counts twice in ``images``)."""
        if [c.lower() for c in self.channels] != [c.lower() for c in other.channels]:
            raise ValueError(f"training envelopes of other channels: {self.channels} and {other.channels}")
        n = self.images + other.images
        std = (np.asarray(self.within_std) * self.images + np.asarray(other.within_std) * other.images) / n
        return TrainingEnvelope(channels=list(other.channels),
                                mean_low=np.minimum(self.mean_low, other.mean_low).tolist(),
                                mean_high=np.maximum(self.mean_high, other.mean_high).tolist(),
                                within_std=std.tolist(), images=n)


@dataclass(frozen=True)
class Familiarity:
    """A scene's distance from the training images on each channel (0 inside their range)."""

    envelope: TrainingEnvelope
    scene_mean: tuple[float, ...]
    #: per channel, how far the scene's mean lies outside the training images' means, in within-image stds
    distance: tuple[float, ...]

    @property
    def unfamiliar(self) -> list[str]:
        """The channels beyond :data:`UNFAMILIAR_STDS`, farthest first."""
        order = np.argsort(self.distance)[::-1]
        return [self.envelope.channels[k] for k in order if self.distance[k] > UNFAMILIAR_STDS]

    def message(self, what: str = "this scene") -> str | None:
        """One line for the user when the scene is unfamiliar; None when it is not."""
        far = self.unfamiliar
        if not far:
            return None
        env, k = self.envelope, self.envelope.channels.index(far[0])
        more = f"; {len(far)} of {len(env.channels)} channels are beyond {UNFAMILIAR_STDS:g}" if len(far) > 1 else ""
        return (f"{what} is unlike the {env.images} image(s) the network was trained on: its mean {far[0]} is "
                f"{self.scene_mean[k]:.4g}, where theirs were {env.mean_low[k]:.4g} to {env.mean_high[k]:.4g} "
                f"({self.distance[k]:.1f} within-image standard deviations outside){more}; its labels may be wrong "
                "(another season, haze or sensor?): check them, or train with images like it")

    def to_json(self) -> dict[str, Any]:
        """For ``run.json``: the distance per channel and the unfamiliar channels."""
        return {"distance": dict(zip(self.envelope.channels, (round(d, 3) for d in self.distance))),
                "distance_unit": "within-image standard deviations outside the training images' range of means",
                "unfamiliar": self.unfamiliar, "threshold": UNFAMILIAR_STDS, "training_images": self.envelope.images}


def familiarity(envelope: TrainingEnvelope, scene_mean: Sequence[float] | np.ndarray) -> Familiarity:
    """How far a scene's channel means (``scene_mean``, in the envelope's channel order) lie from the training
    images'.

    >>> env = TrainingEnvelope(channels=["red", "nir"], mean_low=[0.04, 0.2], mean_high=[0.06, 0.3],
    ...                        within_std=[0.02, 0.1], images=3)
    >>> f = familiarity(env, [0.05, 0.95])
    >>> f.distance, f.unfamiliar
    ((0.0, 6.5), ['nir'])
    """
    m = np.asarray(scene_mean, dtype=np.float64)
    if m.shape != (len(envelope.channels),):
        raise ValueError(f"{m.size} scene means for {len(envelope.channels)} channels")
    low, high, std = (np.asarray(v, dtype=np.float64) for v in (envelope.mean_low, envelope.mean_high,
                                                                 envelope.within_std))
    outside = np.maximum(np.maximum(low - m, m - high), 0.0) / std
    return Familiarity(envelope, tuple(float(v) for v in m), tuple(round(float(v), 6) for v in outside))
