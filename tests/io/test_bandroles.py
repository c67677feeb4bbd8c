"""Band roles as data: colour interpretation, descriptions, STAC common names, entry names, file names,
``bands:`` and sensor band tables; bands addressed by role or ``layer.band``; refused before the cluster."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geoseg.errors import BandRoleError, InputError, JobSpecError
from geoseg.geo import Window
from geoseg.io.bandroles import COMMON_NAMES, SENSORS, bands_from_names, find_band, find_role, sensor_of
from geoseg.io.scene import open_scene, read_window
from geoseg.methods.features import FeatureSpec
from geoseg.methods.threshold import resolve_index
from geoseg.run.jobspec import JobSpec, parse_job
from geoseg.run.workflow import run_job
from tests.fixtures import SPECTRA, blocky_classes, write_raster

H, W = 96, 120


def _spectra(seed: int = 0) -> np.ndarray:
    """(blue, green, red, nir) uint16 bands of blocky classes with noise, no zeros."""
    rng = np.random.default_rng(seed)
    img = SPECTRA[blocky_classes(H, W, cell=23)].transpose(2, 0, 1) + rng.normal(0, 40, (4, H, W))
    return np.clip(img, 1, None).astype("uint16")


def _rgb_orthophoto(path, img):  # red, green, blue marked by colour interpretation only
    write_raster(path, np.stack([img[2], img[1], img[0]]))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    return path


def _read(scene):
    return read_window(scene, Window(0, 0, H, W))


def _labels(out) -> np.ndarray:
    with rasterio.open(out / "labels.zarr") as ds:
        return ds.read(1)


def _exg(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    r, g, b = (x.astype(np.float32) for x in (r, g, b))
    return (2 * g - r - b) / (r + g + b + np.float32(1e-6))


# ---------------------------------------------------------------------------------------------- names


def test_sensor_band_numbers_map_to_roles_only_through_the_sensor_table():
    # Landsat 8: NIR is B5 (nir08), B8 is panchromatic; the role nir accepts nir08 where no nir is
    l8 = bands_from_names(["B2", "B3", "B4", "B5", "B8"], sensor="landsat8")
    assert [b.role for b in l8] == ["blue", "green", "red", "nir08", "pan"]
    assert find_role(l8, "nir") == 3
    l5 = bands_from_names(["B1", "B2", "B3", "B4"], sensor="landsat5")
    assert [b.role for b in l5] == ["blue", "green", "red", "nir08"]
    with pytest.raises(BandRoleError, match="sensor band numbers.*sensor: sentinel2"):
        find_role(bands_from_names(["B2", "B3", "B4", "B5"]), "nir")
    # B8A exists only on Sentinel-2: its numbering is then known, and B08 is the broad NIR band
    s2 = bands_from_names(["B01", "B02", "B03", "B04", "B08", "B8A"])
    assert find_role(s2, "nir") == 4 and find_role(s2, "nir08") == 5
    assert sensor_of("landsat-8") == "landsat8" and sensor_of("sentinel-2b") == "sentinel2" and sensor_of("x") is None
    assert set(JobSpec.model_fields["sensor"].annotation.__args__[0].__args__) == set(SENSORS)  # type: ignore[union-attr]
    assert len(COMMON_NAMES) == 16


def test_layer_dot_band_and_ambiguous_bare_names():
    bands = bands_from_names(["t0:red", "t0:nir", "t1:red", "t1:nir"])
    assert find_band(bands, "t1.nir") == 3 and find_band(bands, "nir") == 1 and find_band(bands, "t0:red") == 0
    files = bands_from_names(["blue:b1", "green:b1", "red:b1"])
    with pytest.raises(BandRoleError, match=r"blue\.b1, green\.b1, red\.b1"):
        find_band(files, "b1")
    assert find_band(files, "green.b1") == 1
    expr = resolve_index("(t1.nir - t0.nir) / 2", bands)
    data = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)
    np.testing.assert_array_equal(expr.compute(data)[0], (data[3] - data[1]) / 2)


# ---------------------------------------------------------------------------------------------- scenes


def test_rgb_orthophoto_roles_from_colour_interpretation(tmp_path):
    img = _spectra()
    scene = open_scene(str(_rgb_orthophoto(tmp_path / "ortho.tif", img)))
    assert scene.band_names == ("b1", "b2", "b3")
    assert [(b.role, b.source) for b in scene.bands] == [
        ("red", "colour interpretation"), ("green", "colour interpretation"), ("blue", "colour interpretation")]
    data, _ = _read(scene)
    feats = FeatureSpec(indices=("exg",)).resolve(scene.bands)
    np.testing.assert_array_equal(feats.compute(data)[3], _exg(img[2], img[1], img[0]))


def test_band_files_named_by_entry_name_or_file_name(tmp_path):
    img = _spectra()
    paths = {k: write_raster(tmp_path / f"f{k}.tif", img[i]) for i, k in enumerate(("blue", "green", "red", "nir"))}
    by_name = open_scene([{"path": str(paths[k]), "name": k} for k in ("red", "nir")])
    assert [b.role for b in by_name.bands] == ["red", "nir"] and by_name.band_names == ("red:b1", "nir:b1")
    stems = {k: write_raster(tmp_path / f"LC08_L1TP_190026_20200101_T1_{k}.TIF", img[i])
             for i, k in enumerate(("B2", "B3", "B4", "B5"))}
    scene = open_scene([str(p) for p in stems.values()])
    assert [b.role for b in scene.bands] == [None] * 4 and [b.number for b in scene.bands] == ["b2", "b3", "b4", "b5"]
    with pytest.raises(BandRoleError, match=r"`sensor: landsat8` \(the file names say so\)"):
        FeatureSpec(indices=("ndvi",)).resolve(scene.bands)
    l8 = open_scene([str(p) for p in stems.values()], sensor="landsat8")
    assert [b.role for b in l8.bands] == ["blue", "green", "red", "nir08"]
    assert l8.bands[3].source == "file name (B5)"
    # bands: in the job overrides what the files say, and must list every band of the entry
    told = open_scene([{"path": [str(p) for p in stems.values()], "kind": "bands",
                        "bands": ["blue", "green", "red", "nir"]}])
    assert [b.role for b in told.bands] == ["blue", "green", "red", "nir"]
    with pytest.raises(InputError, match="lists 2 roles but the input has 4 bands"):
        open_scene([{"path": [str(p) for p in stems.values()], "kind": "bands", "bands": ["red", "nir"]}])
    with pytest.raises(InputError, match="not band roles"):
        open_scene([{"path": str(paths["red"]), "bands": ["rouge"]}])


def test_pix4d_reflectance_maps_red_edge_is_not_red(tmp_path):
    """Pix4D names a multispectral camera's reflectance maps ``<project>_transparent_reflectance_<band>.tif``
    with ``red edge`` spelt with a space: its last token alone says ``red``, and sorted before ``..._red.tif``
    it played red, so NDVI was computed from the red-edge band without a word."""
    img = _spectra()
    names = ("blue", "green", "red", "red edge", "nir")
    for i, name in enumerate(names):
        write_raster(tmp_path / f"field_transparent_reflectance_{name}.tif", img[min(i, 3)].astype("float32"))
    scene = open_scene([str(p) for p in sorted(tmp_path.glob("*.tif"))])
    assert {b.layer.rpartition("_")[2]: b.role for b in scene.bands} == {
        "blue": "blue", "green": "green", "red": "red", "red edge": "rededge", "nir": "nir"}
    assert scene.bands[find_role(scene.bands, "red")].layer.endswith("_red")


def test_a_job_sensor_contradicting_the_product_named_by_the_files_is_refused(tmp_path):
    """A time series of Landsat 5 and Landsat 8 band files run with one ``sensor: landsat8`` read Landsat 5's
    B4 (NIR) as red and its B3 (red) as green: the NDVI of NIR against red's neighbour, without a word."""
    img = _spectra()
    l5 = [write_raster(tmp_path / f"LT05_L1TP_190026_20100101_T1_B{b}.TIF", img[i]) for i, b in enumerate((1, 2, 3, 4))]
    l8 = [write_raster(tmp_path / f"LC08_L1TP_190026_20200101_T1_B{b}.TIF", img[i]) for i, b in enumerate((2, 3, 4, 5))]
    with pytest.raises(InputError, match="file name says a landsat5 product but the job says sensor: landsat8"):
        open_scene([{"path": [str(p) for p in l8], "kind": "bands"}, {"path": [str(p) for p in l5], "kind": "bands"}],
                   sensor="landsat8")
    assert [b.role for b in open_scene([str(p) for p in l5], sensor="landsat5").bands] == ["blue", "green", "red", "nir08"]
    told = open_scene([{"path": [str(p) for p in l5], "kind": "bands", "bands": ["blue", "green", "red", "nir08"]}],
                      sensor="landsat8")  # the input's own words settle it
    assert [b.role for b in told.bands] == ["blue", "green", "red", "nir08"]


def test_stac_common_names_and_platform_give_roles(tmp_path):
    img = _spectra()
    for i, key in enumerate(("B04", "B05")):
        write_raster(tmp_path / f"{key}.tif", img[2 + i])
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "l8", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"datetime": "2024-01-01T00:00:00Z", "platform": "landsat-8"}, "links": [],
            "assets": {"B04": {"href": "./B04.tif"}, "B05": {"href": "./B05.tif"}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    scene = open_scene([{"stac": str(tmp_path / "item.json"), "assets": ["B04", "B05"]}])
    assert [b.role for b in scene.bands] == ["red", "nir08"]  # Landsat 8's B5, through the item's platform
    assert scene.bands[1].source == "stac asset key (landsat8 B05)"
    with pytest.raises(InputError, match="STAC item is landsat8 but the job says sensor: sentinel2"):
        open_scene([{"stac": str(tmp_path / "item.json"), "assets": ["B04", "B05"]}], sensor="sentinel2")


def test_realdata_sentinel2_numbering_is_implied_by_b8a(realdata):
    scene = open_scene(str(realdata / "s2_l1c_reference_scene_*.tif"))
    assert find_role(scene.bands, "nir") == scene.band_names.index("s2_l1c_reference_scene_0:B08")
    assert find_role(scene.bands, "red") == scene.band_names.index("s2_l1c_reference_scene_0:B04")
    assert scene.bands[scene.band_names.index("s2_l1c_reference_scene_0:B8A")].role == "nir08"


# ---------------------------------------------------------------------------------------------- jobs


def test_landsat_band_numbers_without_sensor_are_refused_before_the_cluster(tmp_path):
    img = _spectra()
    stems = [str(write_raster(tmp_path / f"LC08_L1TP_190026_20200101_T1_{k}.TIF", img[i]))
             for i, k in enumerate(("B2", "B3", "B4", "B5"))]
    job = {"name": "l8", "output": str(tmp_path / "out"), "inputs": stems,
           "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.3},
           "cluster": {"n_workers": 1, "threads_per_worker": 1}}
    t0 = time.perf_counter()
    with pytest.raises(BandRoleError, match="sensor:"):
        run_job(parse_job(job), show_progress=False)  # no client: a cluster would start after the check
    assert time.perf_counter() - t0 < 2.0
    assert not (tmp_path / "out").exists()
    # the sensor decides which band is NIR: it is part of the resume key, so no chunk of another reading is reused
    from geoseg.run.workflow import job_identity

    spec = parse_job(job)
    assert job_identity(spec, open_scene(stems, sensor="landsat8")) != job_identity(spec, open_scene(stems))
    with pytest.raises(JobSpecError, match="sensor"):
        parse_job({**job, "sensor": "landsat10"})


def test_rgb_orthophoto_runs_exg_as_delivered(tmp_path, dask_client):
    img = _spectra()
    ortho = _rgb_orthophoto(tmp_path / "ortho.tif", img)
    base = {"chunk_size": 64, "vectorize": {"enabled": False}}
    exg = {**base, "name": "exg", "output": str(tmp_path / "exg"), "inputs": [str(ortho)],
           "method": {"kind": "threshold", "index": "exg", "threshold": 0.0}}
    run_job(parse_job(exg), client=dask_client, show_progress=False)
    np.testing.assert_array_equal(_labels(tmp_path / "exg"), (_exg(img[2], img[1], img[0]) > 0).astype(np.uint8))
    km = {**base, "name": "km", "output": str(tmp_path / "km"), "inputs": [str(ortho)],
          "method": {"kind": "kmeans", "n_clusters": 3, "sample_size": 2000, "features": {"indices": ["exg"]}}}
    run_job(parse_job(km), client=dask_client, show_progress=False)
    assert len(np.unique(_labels(tmp_path / "km"))) == 3


def test_three_band_files_named_by_name_run_ndvi_and_expressions(tmp_path, dask_client):
    img = _spectra()
    base = {"chunk_size": 64, "vectorize": {"enabled": False}}
    files = {k: write_raster(tmp_path / f"band{i}.tif", img[i]) for i, k in ((2, "red"), (3, "nir"), (1, "green"))}
    reflect = {k: img[i].astype(np.float32) for i, k in ((2, "red"), (3, "nir"))}
    ndvi = (reflect["nir"] - reflect["red"]) / (reflect["nir"] + reflect["red"] + np.float32(1e-6))
    inputs = [{"path": str(p), "name": k} for k, p in files.items()]
    for name, index in (("ndvi", "ndvi"), ("expr", "(nir - red) / (nir + red)"), ("dotted", "(nir.b1 - red) / (nir + red.b1)")):
        job = {**base, "name": name, "output": str(tmp_path / name), "inputs": inputs,
               "method": {"kind": "threshold", "index": index, "threshold": 0.2}}
        run_job(parse_job(job), client=dask_client, show_progress=False)
        np.testing.assert_array_equal(_labels(tmp_path / name), (ndvi > 0.2).astype(np.uint8), err_msg=name)
    record = json.loads((tmp_path / "ndvi" / "run.json").read_text())
    assert [(b["name"], b["role"], b["role_from"]) for b in record["scene"]["band_roles"]] == [
        ("red:b1", "red", "entry name"), ("nir:b1", "nir", "entry name"), ("green:b1", "green", "entry name")]


def test_landsat_stems_with_sensor_run_ndvi_on_b5(tmp_path, dask_client):
    img = _spectra()
    # B8 (panchromatic on Landsat 8) holds other values: NDVI from it would differ
    bands = {"B2": img[0], "B3": img[1], "B4": img[2], "B5": img[3], "B8": img[1] // 2 + 7}
    stems = [str(write_raster(tmp_path / f"LC08_L1TP_190026_20200101_T1_{k}.TIF", v)) for k, v in bands.items()]
    job = {"name": "l8", "output": str(tmp_path / "out"), "inputs": stems, "sensor": "landsat8",
           "chunk_size": 64, "vectorize": {"enabled": False},
           "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.3}}
    run_job(parse_job(job), client=dask_client, show_progress=False)
    red, nir = img[2].astype(np.float32), img[3].astype(np.float32)
    expected = ((nir - red) / (nir + red + np.float32(1e-6)) > 0.3).astype(np.uint8)
    np.testing.assert_array_equal(_labels(tmp_path / "out"), expected)
