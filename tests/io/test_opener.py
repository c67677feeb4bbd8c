"""Trust at the input boundary: nothing a job or a STAC catalog names makes GDAL read or fetch what it did not name.

Witnesses are real: a loopback HTTP listener counts requests (:class:`tests.fixtures.Listener`), and a
secret file's bytes must appear nowhere. Positive controls show the same witnesses do see the request
when the job allows GDAL virtual sources or names the network itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from geoseg.errors import InputError
from geoseg.geo import Window
from geoseg.io.opener import Trust, check_name, current_trust, fenced, gdal_fence, open_raster
from geoseg.io.scene import open_scene, read_window
from tests.fixtures import Listener, blocky_scene, geo_grid, write_raster, write_regions

SECRET = b"geoseg-secret-7f3a91c2-not-to-be-read"


def vrt_over_url(path: Path, url: str, width: int = 340, height: int = 300) -> Path:
    """A raster VRT whose one band is read from ``url``, written under any name."""
    path.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 10, 0, 5100000, 0, -10</GeoTransform>"
        '<VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
        f"<SourceFilename>/vsicurl/{url}</SourceFilename><SourceBand>1</SourceBand>"
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def vrt_raw_band(path: Path, secret: Path) -> Path:
    """A VRT whose raw band reads the bytes of ``secret`` as pixels (VRTRawRasterBand)."""
    path.write_text(
        '<VRTDataset rasterXSize="8" rasterYSize="4"><SRS>EPSG:32633</SRS>'
        "<GeoTransform>500000, 10, 0, 5100000, 0, -10</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{secret}</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>8</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    )
    return path


def ogr_vrt_over_url(path: Path, url: str) -> Path:
    """An OGR VRT (vector) whose layer is read from ``url``, written under any name."""
    path.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="zones"><SrcDataSource>/vsicurl/{url}'
                    "</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>")
    return path


@pytest.fixture
def listener():
    with Listener() as server:
        yield server


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return blocky_scene(tmp_path)[0]


def test_disguised_vrt_input_mask_and_grid_like_fetch_nothing(tmp_path: Path, scene: Path, listener: Listener) -> None:
    fake = vrt_over_url(tmp_path / "fake.tif", listener.url("input.tif"))
    with pytest.raises(InputError, match="VRT"):
        open_scene([str(fake)])
    with pytest.raises(InputError, match="VRT"):
        open_scene([str(scene)], masks=[{"path": str(fake), "drop_values": [1]}])
    with pytest.raises(InputError, match="VRT"):
        open_scene([str(scene)], grid={"like": str(fake)})
    assert listener.hits == 0


def test_disguised_vrt_is_fetched_when_the_job_allows_virtual_inputs(tmp_path: Path, listener: Listener) -> None:
    """Positive control: the same file does reach the listener once allow_gdal_virtual is set."""
    fake = vrt_over_url(tmp_path / "fake.tif", listener.url("input.tif"))
    with fenced(Trust(allow_gdal_virtual=True)):
        try:  # the listener answers 404: opening (its fill check reads the border) or reading fails
            opened = open_scene([str(fake)], allow_gdal_virtual=True)
            assert opened.layers[0].sources[0].driver == "VRT"
            read_window(opened, Window(0, 0, 1, 1))
        except InputError:
            pass
    assert listener.hits > 0


def rasterio_open(path: Path):
    import rasterio

    return rasterio.open(path)


def test_raw_band_over_a_secret_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    fake = vrt_raw_band(tmp_path / "raw.tif", secret)
    with rasterio_open(fake) as ds:  # the witness: GDAL alone (3.10) would read the secret as pixels
        assert SECRET[:32] in ds.read(1).tobytes()
    with pytest.raises(InputError, match="VRT"):
        open_scene([str(fake)])
    with pytest.raises(InputError, match="VRT"):
        open_raster(fake, "chip")  # training images: PNG/JPEG allowed, VRT still not


def test_sidecars_gdal_opens_by_itself_must_be_tiffs(tmp_path: Path, scene: Path, listener: Listener) -> None:
    vrt_over_url(scene.with_name(scene.name + ".ovr"), listener.url("ovr.tif"))
    with pytest.raises(InputError, match=r"\.ovr.*not a TIFF"):
        open_scene([str(scene)])
    assert listener.hits == 0


def test_reference_and_regions_paths_are_checked_before_gdal(tmp_path: Path, listener: Listener) -> None:
    from geoseg.accuracy.reference import open_reference
    from geoseg.accuracy.regions import open_regions

    grid = geo_grid(300, 340)
    fake = vrt_over_url(tmp_path / "ref.tif", listener.url("ref.tif"))
    with pytest.raises(InputError, match="VRT"):
        open_reference(fake, label_grid=grid)
    for name in ("ref.tif", "zones.gpkg"):
        with pytest.raises(InputError, match="virtual path"):
            open_reference(f"/vsicurl/{listener.url(name)}", label_grid=grid)
        with pytest.raises(InputError, match="virtual path"):
            open_regions(f"/vsicurl/{listener.url(name)}", None, grid)
    with pytest.raises(InputError, match="URL"):
        open_reference(listener.url("ref.tif"), label_grid=grid)
    for name in ("zones.gpkg", "zones.geojson", "zones.shp", "zones.fgb"):
        fake_vector = ogr_vrt_over_url(tmp_path / name, listener.url(name))
        with pytest.raises(InputError, match="VRT"):
            open_regions(fake_vector, None, grid)
        with pytest.raises(InputError, match="VRT"):
            open_reference(fake_vector, "zone", label_grid=grid)
    assert listener.hits == 0
    good = write_regions(tmp_path / "good.gpkg", [(0, 0, 100, 100)], [1])  # a real GeoPackage still opens
    assert open_regions(good, "zone", grid).path == str(good)


def test_stac_assets_stay_beside_a_local_item(tmp_path: Path, scene: Path, listener: Listener) -> None:
    vrt_over_url(tmp_path / "B08.tif", listener.url("b08.tif"))
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)

    def item(href: str) -> str:
        doc = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
               "geometry": {"type": "Point", "coordinates": [0, 0]},
               "properties": {"datetime": "2024-05-01T00:00:00Z"}, "links": [],
               "assets": {"nir": {"href": href, "type": "image/tiff"}}}
        path = tmp_path / "item.json"
        path.write_text(json.dumps(doc))
        return str(path)

    for href, why in ((listener.url("asset.tif"), "outside the item's folder"),
                      (f"file://{secret}", "outside the item's folder"),
                      (str(secret), "outside the item's folder"),
                      ("../" + secret.name, "outside the item's folder"),
                      (f"/vsicurl/{listener.url('asset.tif')}", "outside the item's folder"),
                      ("./B08.tif", "VRT")):
        with pytest.raises(InputError, match=why):
            open_scene([{"stac": item(href), "assets": ["nir"]}])
        with pytest.raises(InputError, match=why):
            open_scene([str(scene)], masks=[{"stac": item(href), "asset": "nir", "drop_values": [1]}])
    assert listener.hits == 0
    with pytest.raises(InputError, match="virtual path"):
        open_scene([{"stac": f"/vsicurl/{listener.url('item.json')}", "assets": ["nir"]}])
    assert listener.hits == 0
    ok = open_scene([{"stac": item(f"file://{scene}"), "assets": ["nir"]}])  # its own folder: read
    assert ok.paths == (str(scene),)


def test_names_gdal_would_read_as_something_else() -> None:
    for name in ("/vsizip/a.zip/x.tif", "/VSICURL/http://h/x.tif", "vrt://x.tif?bands=1", "x.vrt",
                 "GPKG:zones.gpkg:zones", "zip://a.zip!x.tif", "file:///etc/passwd"):
        with pytest.raises(InputError):
            check_name(name, "input", url_ok=True)
    check_name("https://example.invalid/x.tif", "input", url_ok=True)  # an input URL the job names
    with pytest.raises(InputError, match="URL"):
        check_name("https://example.invalid/x.tif", "reference")
    check_name("/vsicurl/https://example.invalid/x.tif", "input", trust=Trust(allow_gdal_virtual=True))


def _gdal_reads(listener: Listener) -> None:
    """Ask both GDALs (rasterio's, pyogrio's) for a URL and an S3 object served by ``listener``."""
    import pyogrio
    import rasterio

    for attempt in (lambda: rasterio.open(f"/vsicurl/{listener.url('direct.tif')}"),
                    lambda: rasterio.open("/vsis3/bucket/object.tif"),
                    lambda: pyogrio.read_info(f"/vsicurl/{listener.url('direct.gpkg')}")):
        with pytest.raises(Exception):  # noqa: B017 - refused or 404: either way, did a request go out?
            attempt()


def test_the_gdal_fence_blocks_network_reads_in_this_process(listener: Listener, monkeypatch) -> None:
    for key, value in {"AWS_S3_ENDPOINT": f"127.0.0.1:{listener.port}", "AWS_HTTPS": "NO",
                       "AWS_NO_SIGN_REQUEST": "YES", "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
        monkeypatch.setenv(key, value)
    with fenced(Trust()):
        _gdal_reads(listener)
    assert listener.hits == 0
    assert "CPL_VSIL_CURL_ALLOWED_FILENAME" not in os.environ  # restored
    with fenced(Trust(network=True)):  # control: a job naming URLs itself; the same calls reach the listener
        _gdal_reads(listener)
    assert {p.split("/")[-1] for p in listener.paths} >= {"direct.tif", "object.tif", "direct.gpkg"}


def test_fences_closed_out_of_order_leave_the_process_as_it_was(listener: Listener) -> None:
    """A notebook's in-process Dask worker fences in its own thread while the client fences in the main thread;
    their blocks close in any order. Afterwards nothing of either may remain: the user's own reads go out."""
    strict, job = fenced(Trust()), fenced(Trust(allow_gdal_virtual=True, network=True))
    strict.__enter__()
    job.__enter__()  # the newest block rules while both are open
    assert current_trust() == Trust(allow_gdal_virtual=True, network=True)
    assert "CPL_VSIL_CURL_ALLOWED_FILENAME" not in os.environ
    strict.__exit__(None, None, None)  # the older one closes first
    assert current_trust() == Trust(allow_gdal_virtual=True, network=True)
    job.__exit__(None, None, None)
    assert current_trust() == Trust() and not any(k in os.environ for k in gdal_fence(Trust()))
    _worker_fetch(listener.url("after.tif"))  # a 404 from the listener: the request went out
    assert listener.hits > 0


def test_an_in_process_cluster_leaves_no_fence_behind(listener: Listener) -> None:
    """The fence applied by an in-process worker (``processes=False``, a notebook's usual cluster) is lifted
    with the cluster, even though the client fenced and unfenced in between (the leak made every later
    ``/vsis3`` read in the process fail)."""
    from distributed import Client, LocalCluster

    from geoseg.run.fence import fence_workers

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with fenced(Trust()):
            fence_workers(client)
            client.submit(_worker_fetch, listener.url("in-cluster.tif"), pure=False).result()
    assert listener.hits == 0
    assert not any(k in os.environ for k in gdal_fence(Trust())) and current_trust() == Trust()
    _worker_fetch(listener.url("after-cluster.tif"))
    assert listener.hits > 0


def _worker_fetch(url: str) -> str:
    import rasterio

    try:
        rasterio.open(f"/vsicurl/{url}")
    except Exception as exc:
        return type(exc).__name__
    return "opened"


def test_the_gdal_fence_holds_on_dask_workers(listener: Listener) -> None:
    """Workers of a real multi-process cluster make no request under the strict fence; the job's
    network trust (inputs that are URLs) lets the same call through."""
    from distributed import Client, LocalCluster

    from geoseg.run.fence import fence_workers

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        fence_workers(client)
        client.submit(_worker_fetch, listener.url("worker.tif"), pure=False).result()
        assert listener.hits == 0
        fence_workers(client, Trust(network=True))
        client.submit(_worker_fetch, listener.url("worker.tif"), pure=False).result()
        assert listener.hits > 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "geoseg.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_raw_band_input_and_a_vsicurl_reference(tmp_path: Path, scene: Path, listener: Listener) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    raw = vrt_raw_band(tmp_path / "raw.tif", secret)
    job = {"name": "trust", "inputs": [str(raw)], "output": str(tmp_path / "out"),
           "method": {"kind": "kmeans", "n_clusters": 2}, "vectorize": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    res = _cli("run", str(tmp_path / "job.yaml"), "-q", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error:") and "VRT" in lines[0], res.stderr
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else []
    assert not any(SECRET[:16] in p.read_bytes() for p in written)

    labels = write_raster(tmp_path / "labels.tif", np.zeros((300, 340), np.uint8))
    res = _cli("evaluate", str(labels), f"/vsicurl/{listener.url('ref.tif')}", "--out", str(tmp_path / "ev"),
               cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().startswith("geoseg: error:") and len(res.stderr.strip().splitlines()) == 1
    assert listener.hits == 0


def test_an_allowed_vrt_reads_as_its_source_on_workers_too(tmp_path: Path, scene: Path) -> None:
    """allow_gdal_virtual still works: a real .vrt over the scene gives the scene's pixels, and the
    source records the VRT driver so a worker reopens it as exactly that."""
    import rasterio
    import rasterio.shutil

    vrt = tmp_path / "scene.vrt"
    rasterio.shutil.copy(scene, vrt, driver="VRT")
    with pytest.raises(InputError, match="allow_gdal_virtual"):
        open_scene([str(vrt)])
    opened = open_scene([str(vrt)], allow_gdal_virtual=True)
    assert opened.layers[0].sources[0].driver == "VRT"
    data, valid = read_window(opened, Window(0, 0, 64, 64))
    with rasterio.open(scene) as ds:
        assert np.array_equal(data, ds.read(window=((0, 64), (0, 64))).astype(np.float32))
