"""A raster reference at another pixel size than the labels is scored by nearest neighbour; the evaluation says
so in one line, in the words of what each label pixel was compared with."""

from __future__ import annotations

import numpy as np
from affine import Affine

from geoseg.accuracy.evaluate import evaluate
from tests.fixtures import TRANSFORM, write_raster, write_store


def _evaluate_against(tmp_path, pixel: float, name: str):
    labels = np.random.default_rng(3).integers(1, 4, (60, 60)).astype(np.uint8)
    store = write_store(tmp_path / f"{name}.zarr", labels, chunk=30)
    side = int(600 / pixel)  # the same 600 m square
    ref = np.random.default_rng(4).integers(1, 4, (side, side)).astype(np.uint8)
    path = write_raster(tmp_path / f"{name}.tif", ref, transform=Affine(pixel, 0, TRANSFORM.c, 0, -pixel, TRANSFORM.f),
                        nodata=0)
    return evaluate(store, path), labels, ref, path


def test_a_coarser_reference_is_said_and_counted_as_its_pixels_cover_the_labels(tmp_path):
    ev, labels, ref, path = _evaluate_against(tmp_path, 30.0, "nlcd")
    said = [n for n in ev.notes if "times the labels' side" in n]
    assert said == [f"reference {path} has pixels 3 times the labels' side: each label pixel is compared with the "
                    "reference pixel that covers its centre (about 9 label pixels to one), so mixed reference pixels "
                    "count whole and the figures are agreement at the reference's scale"]
    upsampled = np.repeat(np.repeat(ref, 3, axis=0), 3, axis=1)  # numpy: the 30 m pixel under each 10 m centre
    agree = int((upsampled == labels).sum())
    confusion = ev.confusion()
    assert int(np.trace(confusion.to_numpy())) == agree


def test_a_finer_reference_is_said_to_be_sampled_at_centres_not_by_majority(tmp_path):
    ev, *_ = _evaluate_against(tmp_path, 2.0, "lidar")
    assert any("5 times finer than the labels" in n and "not with the majority of the 25 under it" in n
               and "gdalwarp -r mode" in n for n in ev.notes)


def test_a_reference_of_the_labels_pixel_size_adds_no_note(tmp_path):
    ev, *_ = _evaluate_against(tmp_path, 10.0, "same")
    assert not [n for n in ev.notes if "times" in n]
