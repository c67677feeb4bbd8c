"""What training optimises and when it stops: losses, learning-rate schedules, early stopping.

Losses: a pixel term (cross-entropy or focal, optionally weighted per class) plus a Dice term
(``dice_weight``; ``loss: dice`` uses Dice alone). Focal loss is normalised like PyTorch's
weighted cross-entropy (by the summed weights of the counted pixels), so ``focal_gamma: 0``
is exactly weighted cross-entropy. Early stopping watches an exponential moving average of the
validation mIoU, so one lucky or unlucky epoch neither stops nor prolongs a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geoseg.methods.training.data import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean of ``-w_t (1 - p_t)^gamma log p_t`` over counted pixels, weighted like ``F.cross_entropy``."""
    import torch

    logp = torch.log_softmax(logits, dim=1)
    keep = target != ignore_index
    t = torch.where(keep, target, torch.zeros_like(target))
    logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    w = weight[t] if weight is not None else torch.ones_like(logpt)
    w = w * keep
    per_pixel = -((1.0 - logpt.exp()).clamp_min(0) ** gamma) * logpt
    return (w * per_pixel).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


def make_loss(
    kind: str, dice_weight: float, class_weights: Sequence[float] | None, focal_gamma: float, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss ``f(logits, target)`` for ``kind`` (``ce``, ``focal`` or ``dice``)."""
    import segmentation_models_pytorch as smp
    import torch

    w = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights is not None else None
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)
    if kind == "dice":
        return dice
    if kind == "focal":
        def pixel(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return focal_loss(logits, target, focal_gamma, w)
    else:
        pixel = torch.nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE_INDEX)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pixel(logits, target) + dice_weight * dice(logits, target)

    return loss


def make_schedule(kind: str, opt: torch.optim.Optimizer, lr: float, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule stepped once per optimiser step.

    ``one_cycle`` (warm-up to ``lr`` over ~30 % of the steps, then annealing), ``cosine``
    (from ``lr`` down to 0 over the run) or ``constant``.
    """
    import torch

    if kind == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total, pct_start=min(0.3, max(0.05, 50 / total))
        )
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@dataclass
class EarlyStopping:
    """Stop when the EMA of the validation score has not beaten its best by ``min_delta`` for ``patience`` epochs.

    ``ema = alpha * score + (1 - alpha) * ema`` (the first score starts it); epochs without a
    score (no validation) leave it unchanged.

    >>> es = EarlyStopping(patience=2, alpha=0.5)
    >>> [es.update(s) for s in (0.5, 0.7, 0.6, 0.5, 0.4)]
    [False, False, False, True, True]
    """

    patience: int
    alpha: float = 0.5
    min_delta: float = 0.0
    ema: float | None = None
    best: float = -math.inf
    stale: int = 0
    history: list[float | None] = field(default_factory=list)

    def update(self, score: float | None) -> bool:
        """Feed one epoch's score; whether to stop now."""
        if score is not None:
            self.ema = score if self.ema is None else self.alpha * score + (1 - self.alpha) * self.ema
            if self.ema > self.best + self.min_delta:
                self.best, self.stale = self.ema, 0
            else:
                self.stale += 1
        self.history.append(self.ema)
        return self.stale >= self.patience
