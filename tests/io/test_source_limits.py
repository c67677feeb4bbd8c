"""Inputs geoseg cannot segment as they are: complex values, blocks too large to decompress per read."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.io.scene import open_scene
from geoseg.io.sources import MAX_BLOCK_BYTES

TRANSFORM = rasterio.Affine(10, 0, 500_000, 0, -10, 5_000_000)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_input_is_refused_with_advice(tmp_path, dtype):
    path = tmp_path / "slc.tif"
    data = (np.arange(64, dtype=np.float32).reshape(1, 8, 8) * (1 + 1j)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype=dtype, crs="EPSG:32633",
                       transform=TRANSFORM) as dst:
        dst.write(data)
    with pytest.raises(InputError, match=f"holds complex values \\({dtype}\\).*amplitude.*gdal_calc"):
        open_scene(str(path))


def test_a_file_of_blocks_larger_than_the_limit_is_refused_from_its_header(tmp_path):
    side = 8192  # one tile of 8192 x 8192 x 3 bands x 2 bytes = 384 MiB decompressed, a few kB on disk
    path = tmp_path / "big-blocks.tif"
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=TRANSFORM, tiled=True, blockxsize=side, blockysize=side, compress="deflate",
                       sparse_ok=True):
        pass  # no block written: the header alone declares them
    assert path.stat().st_size < 10_000 and side * side * 3 * 2 > MAX_BLOCK_BYTES
    with pytest.raises(InputError, match="blocks of 8192 x 8192 px .384 MiB each decompressed.*re-tile it"):
        open_scene(str(path))
