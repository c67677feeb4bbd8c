"""Several scenes in one evaluation: pooled figures equal scikit-learn on all scenes' pixels
together; each scene's equal its own evaluation (with the pooled mapping)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.crs import CRS
from sklearn.metrics import confusion_matrix, jaccard_score

from geoseg.accuracy.evaluate import evaluate
from geoseg.accuracy.mapping import hungarian_mapping
from geoseg.accuracy.report import write_outputs
from geoseg.errors import InputError
from geoseg.legend import cluster_legend
from tests.fixtures import TRANSFORM, write_raster, write_regions, write_store
from tests.fixtures import random_blocks as blocky


def _scenes(tmp_path: Path) -> list[tuple[Path, Path, np.ndarray, np.ndarray]]:
    out = []
    far = Affine(10, 0, 600000, 0, -10, 5200000)  # another place, another CRS for the second scene
    for i, (shape, transform, crs) in enumerate([((30, 40), TRANSFORM, CRS.from_epsg(32633)),
                                                 ((25, 20), far, CRS.from_epsg(32634))]):
        truth = blocky(shape, 5, 3, seed=10 + i)
        labels = (truth + 1) % 3  # a permutation of clusters ...
        labels[np.random.default_rng(i).random(shape) < 0.15] = 0  # ... with noise
        store = write_store(tmp_path / f"l{i}.zarr", labels.astype(np.uint8), 8, legend=cluster_legend(3),
                            transform=transform, crs=crs)  # fmt: skip
        ref = write_raster(tmp_path / f"r{i}.tif", truth, transform=transform, crs=crs.to_string())
        out.append((store, ref, labels, truth))
    return out


def test_pooled_and_per_scene_figures(tmp_path: Path) -> None:
    scenes = _scenes(tmp_path)
    ev = evaluate([s[0] for s in scenes], [s[1] for s in scenes], mapping="hungarian")
    lab = np.concatenate([s[2].ravel() for s in scenes])
    ref = np.concatenate([s[3].ravel() for s in scenes])
    classes = [1, 2, 3]
    raw = confusion_matrix(ref, lab, labels=[0, 1, 2, 3])[1:, :3]  # reference classes x clusters 0..2
    expect_map = hungarian_mapping(raw, classes, [0, 1, 2])
    assert ev.mapping == expect_map
    mapped = np.vectorize(expect_map.get)(lab)
    np.testing.assert_array_equal(ev.confusion("ALL").loc[classes, classes].to_numpy(),
                                  confusion_matrix(ref, mapped, labels=classes))  # fmt: skip
    ious = jaccard_score(ref, mapped, labels=classes, average=None)
    got = ev.metrics().query("region_id == 'ALL' and kind == 'class'").set_index("class_id")["iou"]
    np.testing.assert_allclose(got.loc[classes].to_numpy(), ious)
    assert list(ev.scenes) == ["l0.zarr", "l1.zarr"]
    for (store, refp, _labels, _truth), sub in zip(scenes, ev.scenes.values()):
        alone = evaluate(store, refp, mapping=expect_map)
        pd.testing.assert_frame_equal(sub.metrics(), alone.metrics())
        assert sub.mapping_method == "hungarian"
    written = write_outputs(ev, tmp_path / "out", preview=False)
    table = pd.read_csv(written["scenes"])
    assert table["scene"].tolist() == ["l0.zarr", "l1.zarr", "ALL (pooled)"]
    assert table["valid_px"].tolist() == [1200, 500, 1700]
    assert "Scenes" in Path(written["report"]).read_text()
    per = pd.read_csv(written["scenes_metrics"])
    assert set(per["scene"]) == {"l0.zarr", "l1.zarr"}


def test_one_reference_for_several_scenes_and_regions(tmp_path: Path) -> None:
    """Two label rasters on halves of one reference, one regions layer: region counts pool."""
    truth = blocky((30, 40), 5, 3, seed=3)
    ref = write_raster(tmp_path / "ref.tif", truth, transform=TRANSFORM)
    left = write_store(tmp_path / "left.zarr", truth[:, :20].astype(np.uint8), 8)
    right = write_store(tmp_path / "right.zarr", truth[:, 20:].astype(np.uint8), 8,
                        transform=TRANSFORM * Affine.translation(20, 0))  # fmt: skip
    regions = write_regions(tmp_path / "r.gpkg", [(0, 10, 30, 30)], [5])  # straddles both scenes
    ev = evaluate([left, right], ref, regions=regions, region_field="zone")
    assert int(ev.metrics().query("region_id == 5 and kind == 'region'")["valid_px"].iloc[0]) == 30 * 20
    assert float(ev.metrics().iloc[0]["miou"]) == 1.0
    with pytest.raises(InputError, match="one reference per label raster"):
        evaluate([left, right], [ref, ref, ref])
    with pytest.raises(InputError, match="grid_cell_m"):
        evaluate([left, right], ref, grid_cell_m=100)


def test_cli_takes_several_labels_with_their_references(tmp_path: Path, capsys) -> None:
    from geoseg.cli import main

    scenes = _scenes(tmp_path)
    argv = ["evaluate", str(scenes[0][0]), str(scenes[1][0]), "--reference", str(scenes[0][1]),
            "--reference", str(scenes[1][1]), "--mapping", "hungarian", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ALL (pooled)" in out and "l1.zarr" in out
    assert (tmp_path / "o" / "scenes.csv").exists()
