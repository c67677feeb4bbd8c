"""The segmentation-models-pytorch architectures geoseg trains and runs, and what each needs.

A checkpoint's sidecar names its architecture (``architecture:`` in a training job, default
``DeepLabV3Plus``); :func:`model_kwargs` turns geoseg's few architecture settings (encoder
depth, encoder output stride, decoder width) into the keyword arguments of that smp class, so
``smp.create_model`` builds the same network at training and at inference.

Input sizes. Every architecture downsamples a tile to a deepest feature map and upsamples
back; the tile side must be a multiple of that feature stride (``2 ** encoder_depth``, or the
encoder output stride where the architecture dilates instead: DeepLabV3, DeepLabV3+, PAN), and
PAN's pyramid attention also needs at least 8 cells there. :func:`check_tile_size` refuses
other sizes with the smallest valid one; the default 256 px suits every architecture at every
depth.

Context and the halo. Inference runs the network on whole tiles placed on a grid anchored to
global pixel coordinates, and a pixel's label depends only on the tiles covering it. A chunk
read with a halo of one tile therefore gives the same labels whatever the chunking, for any
receptive field, so :func:`geoseg.methods.deeplab.required_halo` is the tile size for every
architecture. What the architecture changes is how far context reaches *inside* a tile
(:attr:`Architecture.context`): ``"tile"`` for architectures with global pooling or attention
(every output pixel sees the whole tile), otherwise the encoder's receptive-field radius; tile
edges see less context either way, which the blending overlap (``tile_overlap``) averages out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: Architecture names as smp spells its classes (and as the sidecar records them).
ArchitectureName = Literal[
    "Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "MAnet", "Linknet", "PAN", "UPerNet",
    "Segformer",
]


@dataclass(frozen=True)
class Architecture:
    """What geoseg needs to know about one smp architecture."""

    name: str
    #: Dilates the encoder to an output stride (8 or 16) instead of downsampling ``2 ** depth``.
    output_stride: bool = False
    #: Output strides the architecture accepts (when ``output_stride``).
    strides: tuple[int, ...] = (8, 16)
    #: Smallest side of the deepest feature map, in cells.
    min_cells: int = 1
    #: How far context reaches inside a tile: ``"tile"`` (global pooling/attention) or ``"encoder"``.
    context: Literal["tile", "encoder"] = "encoder"


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("Unet"),
        Architecture("UnetPlusPlus"),
        Architecture("FPN", min_cells=2),  # group norm over the deepest map needs more than one cell
        Architecture("PSPNet", context="tile"),  # pyramid pooling down to 1x1
        Architecture("DeepLabV3", output_stride=True, context="tile"),  # ASPP image pooling
        Architecture("DeepLabV3Plus", output_stride=True, context="tile"),
        Architecture("MAnet", context="tile"),  # position attention over the deepest map
        Architecture("Linknet"),
        Architecture("PAN", output_stride=True, strides=(16,), min_cells=8, context="tile"),  # global pooling branch
        Architecture("UPerNet", context="tile"),  # pyramid pooling module
        Architecture("Segformer"),
    )
}


def architecture(name: str) -> Architecture:
    """The entry of ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def feature_stride(name: str, encoder_depth: int, encoder_output_stride: int) -> int:
    """Downsampling from the tile to the deepest feature map.

    >>> feature_stride("Unet", 5, 16), feature_stride("DeepLabV3Plus", 5, 16), feature_stride("DeepLabV3Plus", 3, 16)
    (32, 16, 8)
    """
    arch = architecture(name)
    stride = 2**encoder_depth
    return min(stride, encoder_output_stride) if arch.output_stride else stride


def check_tile_size(name: str, encoder_depth: int, encoder_output_stride: int, tile_size: int) -> None:
    """``ValueError`` (naming a valid size) unless the architecture accepts ``tile_size`` square tiles."""
    arch = architecture(name)
    if arch.output_stride and encoder_output_stride not in arch.strides:
        raise ValueError(
            f"{name} supports encoder_output_stride {' or '.join(map(str, arch.strides))}, got {encoder_output_stride}"
        )
    stride = feature_stride(name, encoder_depth, encoder_output_stride)
    smallest = stride * arch.min_cells
    if tile_size % stride or tile_size < smallest:
        fit = max(smallest, -(-tile_size // stride) * stride)
        raise ValueError(
            f"{name} with encoder_depth {encoder_depth} needs tile_size a multiple of {stride}"
            + (f" and at least {smallest}" if arch.min_cells > 1 else "")
            + f", got {tile_size}; use e.g. {fit}"
        )


def model_kwargs(name: str, encoder_depth: int, encoder_output_stride: int, decoder_channels: int) -> dict[str, Any]:
    """Keyword arguments of ``smp.create_model`` for geoseg's settings of architecture ``name``.

    ``decoder_channels`` is the decoder's width: the widest stage of U-Net-like decoders (each
    next stage halves it, as smp's default 256, 128, 64, 32, 16), FPN's pyramid channels (its
    segmentation branch gets half, at least 32 for its group norm), PSPNet's pyramid output
    channels, and the one width of the others. Linknet's decoder follows its encoder.

    >>> model_kwargs("Unet", 3, 16, 64)
    {'encoder_depth': 3, 'decoder_channels': (64, 32, 16)}
    """
    architecture(name)
    depth, c = encoder_depth, decoder_channels
    kw: dict[str, Any] = {"encoder_depth": depth}
    if name in ("Unet", "UnetPlusPlus", "MAnet"):
        kw["decoder_channels"] = tuple(max(c >> i, 1) for i in range(depth))
    elif name == "FPN":
        # The FPN decoder merges at stride 4 for depth 5; shallower encoders end earlier.
        kw.update(decoder_pyramid_channels=c, decoder_segmentation_channels=max(32, (c // 2) // 32 * 32),
                  upsampling=2 ** (depth - 3))
    elif name == "PSPNet":
        kw.update(psp_out_channels=c, upsampling=2**depth)
    elif name in ("DeepLabV3", "DeepLabV3Plus", "PAN"):
        kw.update(encoder_output_stride=encoder_output_stride, decoder_channels=c)
    elif name == "UPerNet":
        kw["decoder_channels"] = c
    elif name == "Segformer":
        kw["decoder_segmentation_channels"] = c
    return kw


__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ArchitectureName",
    "architecture",
    "check_tile_size",
    "feature_stride",
    "model_kwargs",
]
