"""An exponential moving average of the network's weights, the network that is validated and kept.

Why: on few labelled pixels the labels of a rare class flip from one epoch to the next (Slovenia's 11
cultivated pixels, ``benchmarks/RESULTS-training.md`` round 5), so which epoch is kept decides the verdict.
Averaging the weights over the last optimiser steps (about 100 at the default decay 0.99) gives a network whose
labels move slowly;
validation scores it and the checkpoint stores it. The raw network goes on training as before: the windows,
the steps and the optimiser are the same with or without the average.

The decay warms up as TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` does,
``min(decay, (1 + t) / (10 + t))`` at update ``t``, so the first epochs are not an average over the random
initialisation. Batch-norm running statistics are averaged like the weights; integer buffers (batch counts)
are copied.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class WeightAverage:
    """A copy of ``model`` whose floating-point parameters and buffers follow the model's by an EMA."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"weight average decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay of the next update: short memory at first, ``decay`` once ``t`` is large."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s present weights (call after each optimiser step)."""
        import torch

        weight = 1.0 - self.current_decay()
        with torch.no_grad():
            mine = list(self.module.parameters()) + list(self.module.buffers())
            theirs = list(model.parameters()) + list(model.buffers())
            for a, b in zip(mine, theirs, strict=True):
                if a.is_floating_point():
                    a.lerp_(b.detach(), weight)
                else:
                    a.copy_(b)
        self.updates += 1
