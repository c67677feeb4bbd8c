"""A full-resolution refinement head: the network's logits corrected pixel by pixel from the input itself.

Every smp encoder downsamples at its first layer (ResNet's 7×7 stem has stride 2) and DeepLabV3+
predicts at ¼ resolution, upsampled bilinearly, so no layer sees one input pixel on its own. Where a
class boundary is sharp at the pixel (a plant's edge at 1 cm, a field edge at 10 m) the network's edge
is blurred by a pixel or two: on the generated crop/weed scene 95 % of DeepLabV3+'s soil errors lay
within 1.5 px of a plant's edge, where NDVI + Otsu is exact (benchmarks/RESULTS-training.md).

The head is a small per-pixel MLP with one 3×3 layer (a pixel and its 8 neighbours): it reads the
normalised input channels (bands and index channels) and the network's logits at full resolution and
adds a correction to the logits. Its last layer starts at zero, so an untrained head changes nothing
and training starts from the plain network. It adds a 1-pixel receptive field to a tile, which the
tile grid already covers (tiles are predicted independently; see ``deeplab.required_halo``).
"""

from __future__ import annotations

import torch
from torch import nn


class PixelRefined(nn.Module):
    """``base`` (an smp model) whose logits a per-pixel head corrects from the input channels."""

    def __init__(self, base: nn.Module, in_channels: int, n_classes: int, hidden: int) -> None:
        super().__init__()
        self.base = base
        self.refine = nn.Sequential(
            nn.Conv2d(in_channels + n_classes, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, n_classes, 1),
        )
        last = self.refine[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)  # an untrained head is the identity: training starts from the network
        nn.init.zeros_(last.bias)

    @property
    def encoder(self) -> nn.Module:
        """The base network's encoder (where a user's pretrained encoder weights go)."""
        encoder = self.base.encoder
        assert isinstance(encoder, nn.Module)  # nn.Module.__getattr__ is typed Tensor | Module
        return encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.base(x)
        return logits + self.refine(torch.cat([x, logits], dim=1))
