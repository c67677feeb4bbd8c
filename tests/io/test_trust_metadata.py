"""Trust: what a file's own metadata names (a raster's ``.aux.xml``, a GeoJSON's ``crs``) is not opened.

Witnesses: a loopback listener that counts requests, and a secret file whose bytes must appear in no output.
Each case first shows GDAL alone reading or fetching what geoseg then refuses.
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
from geoseg.io.opener import Trust, check_vector, fenced, open_raster
from geoseg.io.scene import open_scene
from tests.fixtures import Listener, blocky_scene, geo_grid, write_raster

SECRET = b"geoseg-secret-5d1e7a03-not-to-be-read" * 8


@pytest.fixture
def listener():
    with Listener() as server:
        yield server


def raw_band_vrt(path: Path, secret: Path) -> Path:
    """A VRT whose raw band reads the bytes of ``secret`` as 32 x 8 pixels."""
    path.write_text(
        '<VRTDataset rasterXSize="32" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1" '
        f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">{secret}</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>32</LineOffset>"
        "</VRTRasterBand></VRTDataset>")
    return path


def pam_overview_file(raster: Path, target: str, *, domain: str = "OVERVIEWS", key: str = "OVERVIEW_FILE") -> Path:
    """An ``.aux.xml`` beside ``raster`` naming ``target`` as its overviews (GDAL opens it with any driver)."""
    side = raster.with_name(raster.name + ".aux.xml")
    side.write_text(f'<PAMDataset><Metadata domain="{domain}"><MDI key="{key}">{target}</MDI></Metadata></PAMDataset>')
    return side


def test_an_aux_xml_overview_file_over_a_secret_is_refused(tmp_path: Path) -> None:
    import rasterio

    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    scene = write_raster(tmp_path / "scene.tif", np.full((64, 64), 7, np.uint8))
    pam_overview_file(scene, str(raw_band_vrt(tmp_path.parent / f"{tmp_path.name}-ovr.vrt", secret)))
    with rasterio.open(scene, driver="GTiff") as ds:  # the witness: GTiff alone hands over the secret as overviews
        assert SECRET[:32] in ds.read(1, out_shape=(32, 32)).tobytes()
    for use in ("input", "reference", "label"):
        with pytest.raises(InputError, match=r"\.aux\.xml.*OVERVIEW_FILE"):
            open_raster(scene, use)
    with pytest.raises(InputError, match="OVERVIEW_FILE"):
        open_scene([str(scene)])
    pam_overview_file(scene, "/etc/passwd", domain="overviews", key="overview_file")  # GDAL ignores case
    with pytest.raises(InputError, match="OVERVIEW_FILE"):
        open_raster(scene)
    (tmp_path / "scene.tif.aux.xml").write_text("<PAMDataset><Metadata><MDI")  # GDAL's parser is lenient
    with pytest.raises(InputError, match="not well-formed"):
        open_raster(scene)
    (tmp_path / "scene.tif.aux.xml").write_text(  # what GDAL itself writes still opens
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">7</MDI></Metadata>'
        "</PAMRasterBand></PAMDataset>")
    open_raster(scene).close()
    with fenced(Trust(allow_gdal_virtual=True)):  # the job's switch lifts the check
        pam_overview_file(scene, "/etc/passwd")
        open_raster(scene).close()


def test_an_aux_xml_overview_file_at_a_url_fetches_nothing(tmp_path: Path, listener: Listener) -> None:
    scene = blocky_scene(tmp_path)[0]
    pam_overview_file(scene, f"/vsicurl/{listener.url('ovr.tif')}")
    with pytest.raises(InputError, match="OVERVIEW_FILE"):
        open_scene([str(scene)])
    assert listener.hits == 0


def test_cli_run_refuses_an_input_whose_aux_xml_names_a_secret(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    scene = blocky_scene(tmp_path)[0]
    pam_overview_file(scene, str(raw_band_vrt(tmp_path / "ovr.bin", secret)))
    job = {"name": "trust", "inputs": [str(scene)], "output": str(tmp_path / "out"),
           "method": {"kind": "kmeans", "n_clusters": 2}, "vectorize": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(tmp_path / "job.yaml"), "-q"], cwd=tmp_path,
                         env=env, capture_output=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error:") and "OVERVIEW_FILE" in lines[0], res.stderr
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else []
    assert not any(SECRET[:16] in p.read_bytes() for p in written)
    assert SECRET[:16] not in res.stdout + res.stderr


def link_crs(path: Path, url: str, text: str | None = None) -> Path:
    """A one-polygon GeoJSON whose CRS is a link GDAL resolves with its own HTTP client."""
    doc = {"type": "FeatureCollection", "crs": {"type": "link", "properties": {"href": url, "type": "ogcwkt"}},
           "features": [{"type": "Feature", "properties": {"zone": 1}, "geometry": {
               "type": "Polygon", "coordinates": [[[500000, 5097000], [503400, 5097000], [503400, 5100000],
                                                   [500000, 5100000], [500000, 5097000]]]}}]}
    path.write_text(text if text is not None else json.dumps(doc))
    return path


def test_a_geojson_link_crs_is_never_fetched(tmp_path: Path, listener: Listener) -> None:
    import pyogrio

    from geoseg.accuracy.reference import open_reference
    from geoseg.accuracy.regions import open_regions

    plain = link_crs(tmp_path / "zones.geojson", listener.url("crs.wkt"))
    with fenced(Trust()):  # the witness: GDAL's own fence does not stop this request
        pyogrio.read_info(plain)
    seen = listener.hits
    assert seen > 0
    feature = {"type": "Feature", "properties": {"zone": 1},
               "geometry": {"type": "Point", "coordinates": [500100, 5099900],
                            "crs": {"TYPE": "URL", "properties": {"url": listener.url("geom")}}}}
    variants = {
        "escaped.geojson": plain.read_text().replace('"crs"', '"\\u0063rs"').replace('"link"', '"\\u006cink"'),
        "geometry.json": json.dumps({"type": "FeatureCollection", "features": [feature]}),
        "duplicate.geojson": plain.read_text().replace('{"type": "FeatureCollection",',
                                                       '{"type": "FeatureCollection", "crs": {"type": "name", '
                                                       '"properties": {"name": "EPSG:32633"}},'),
        "comment.geojson": "/* json-c reads comments */ " + plain.read_text(),
    }
    grid = geo_grid(300, 340)
    for name, text in [("zones.geojson", None), *variants.items()]:
        path = link_crs(tmp_path / name, listener.url("crs.wkt"), text)
        with pytest.raises(InputError, match="crs"):
            open_regions(path, "zone", grid)
        with pytest.raises(InputError, match="crs"):
            open_reference(path, "zone", label_grid=grid)
    assert listener.hits == seen
    named = link_crs(tmp_path / "named.geojson", "", json.dumps(
        {**json.loads(plain.read_text()), "crs": {"type": "name", "properties": {"name": "EPSG:32633"}}}))
    assert check_vector(named) == "GeoJSON"  # a CRS by name still reads
    assert open_regions(named, "zone", grid).path == str(named)


def sqlite_with_virtual_ogr(path: Path, sources: dict[str, str]) -> Path:
    """A plain SQLite database (no GeoPackage application id; not named .gpkg, which GDAL would open as one)
    whose tables are GDAL ``VirtualOGR`` tables over ``sources`` (any OGR datasource: a URL, ``CSV:`` over any
    text file), written into its schema directly."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a)")
        db.execute("PRAGMA writable_schema=ON")
        for name, source in sources.items():
            db.execute("INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('table', ?, ?, 0, ?)",
                       (name, name, f"CREATE VIRTUAL TABLE {name} USING VirtualOGR('{source}')"))
    return path


def test_an_sqlite_database_posing_as_a_geopackage_runs_no_virtual_tables(tmp_path: Path, listener: Listener) -> None:
    import pyogrio
    import pyogrio.errors

    from geoseg.accuracy.reference import open_reference
    from geoseg.accuracy.regions import open_regions

    secret = tmp_path.parent / f"{tmp_path.name}-secret.csv"
    secret.write_bytes(SECRET[:40] + b",x\n1,2\n")
    remote = sqlite_with_virtual_ogr(tmp_path / "remote.db", {"zones": f"/vsicurl/{listener.url('zones.gpkg')}"})
    local = sqlite_with_virtual_ogr(tmp_path / "local.sqlite", {"zones": f"CSV:{secret}"})
    with fenced(Trust(network=True)):  # a job that names a URL input: GDAL's network fence is open
        with pytest.raises(pyogrio.errors.CRSError):  # the witness: GDAL's SQLite driver fetches what
            pyogrio.read_info(remote)  # the file names (answered 404)...
        assert listener.hits > 0
        seen = listener.hits
        columns = pyogrio.read_dataframe(local, layer="zones", read_geometry=False).columns  # ...and reads any file
        assert SECRET[:16].decode() in "".join(columns)
        grid = geo_grid(300, 340)
        for path in (remote, local):
            with pytest.raises(InputError, match="not a GeoPackage") as caught:
                open_regions(path, "zone", grid)
            assert SECRET[:16].decode() not in str(caught.value)
            with pytest.raises(InputError, match="not a GeoPackage"):
                open_reference(path, "zone", label_grid=grid)
        assert listener.hits == seen


def test_a_raster_naming_an_overview_file_in_its_own_metadata_is_refused(tmp_path: Path) -> None:
    """A GeoTIFF's GDAL_METADATA tag (a JPEG 2000's XML box) may carry OVERVIEWS/OVERVIEW_FILE: GDAL opens that
    file, with any driver, as the overviews; no side-car is involved."""
    import rasterio
    from rasterio.shutil import copy

    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    vrt = raw_band_vrt(tmp_path.parent / f"{tmp_path.name}-ovr.vrt", secret)
    tif = write_raster(tmp_path / "scene.tif", np.full((64, 64), 7, np.uint8))
    with rasterio.open(tif, "r+") as ds:
        ds.update_tags(ns="overviews", overview_file=str(vrt))  # GDAL matches either case
    jp2 = tmp_path / "scene.jp2"
    copy(tif, jp2, driver="JP2OpenJPEG", WRITE_METADATA="YES")
    for side in tmp_path.glob("*.aux.xml"):
        side.unlink()
    for path, driver in ((tif, "GTiff"), (jp2, "JP2OpenJPEG")):
        with rasterio.open(path, driver=driver) as ds:  # the witness: GDAL alone reads the secret as overviews
            assert SECRET[:32] in ds.read(1, out_shape=(32, 32)).tobytes()
        for use in ("input", "reference", "chip"):
            with pytest.raises(InputError, match="OVERVIEW_FILE in its metadata"):
                open_raster(path, use)
    with pytest.raises(InputError, match="OVERVIEW_FILE"):
        open_raster(tif, "label")
    with pytest.raises(InputError, match="OVERVIEW_FILE"):
        open_scene([str(tif)])
    with fenced(Trust(allow_gdal_virtual=True)):  # the job's switch lifts the check
        open_raster(tif).close()


def test_cli_commands_refuse_rasters_naming_an_overview_file(tmp_path: Path) -> None:
    """``geoseg run`` (an input) and ``geoseg evaluate`` (a label raster) end in one line, the secret nowhere."""
    import rasterio

    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    scene = blocky_scene(tmp_path)[0]
    labels = write_raster(tmp_path / "labels.tif", np.ones((300, 340), np.uint8))
    reference = write_raster(tmp_path / "reference.tif", np.ones((300, 340), np.uint8))
    for path in (scene, labels):
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(ns="OVERVIEWS", OVERVIEW_FILE=str(raw_band_vrt(tmp_path / "ovr.bin", secret)))
    job = {"name": "trust", "inputs": [str(scene)], "output": str(tmp_path / "out"),
           "method": {"kind": "kmeans", "n_clusters": 2}, "vectorize": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for args in (["run", str(tmp_path / "job.yaml"), "-q"],
                 ["evaluate", str(labels), str(reference), "--out", str(tmp_path / "ev")]):
        res = subprocess.run([sys.executable, "-m", "geoseg.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                             timeout=300)
        lines = res.stderr.decode().strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "OVERVIEW_FILE" in lines[0], res.stderr
        assert SECRET[:16] not in res.stdout + res.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name in ("out", "ev")]
    assert not any(SECRET[:16] in p.read_bytes() for p in written)


def test_a_tiff_sidecar_naming_an_overview_file_is_refused(tmp_path: Path) -> None:
    """A TIFF ``.ovr``/``.msk`` passes the magic check, but GDAL follows an OVERVIEW_FILE in its own metadata when
    it reads the overviews (``.ovr``'s own, or the mask's) at a coarser scale."""
    import rasterio

    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    vrt = raw_band_vrt(tmp_path.parent / f"{tmp_path.name}-ovr.vrt", secret)
    scene = write_raster(tmp_path / "scene.tif", np.full((64, 64), 7, np.uint8))
    for suffix, size in ((".ovr", 32), (".msk", 64)):
        side = tmp_path / f"scene.tif{suffix}"
        with rasterio.open(side, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8") as ds:
            ds.write(np.full((1, size, size), 255, np.uint8))
            ds.update_tags(ns="OVERVIEWS", OVERVIEW_FILE=str(vrt))
        with pytest.raises(InputError, match=rf"scene.tif\{suffix} .*OVERVIEW_FILE"):
            open_raster(scene)
        if suffix == ".ovr":
            with rasterio.open(scene, driver="GTiff") as ds:  # the witness: the .ovr's own overviews are the secret
                assert set(ds.read(1, out_shape=(16, 16)).tobytes()) <= set(SECRET)  # (decimated bytes of it)
        side.unlink()
    nested = tmp_path / "scene.tif.ovr"
    with rasterio.open(nested, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8") as ds:
        ds.write(np.full((1, 32, 32), 9, np.uint8))
    raw_band_vrt(tmp_path / "scene.tif.ovr.ovr", secret)  # a side-car of the side-car: checked alike
    with pytest.raises(InputError, match=r"scene.tif.ovr.ovr .*not a TIFF"):
        open_raster(scene)
    (tmp_path / "scene.tif.ovr.ovr").unlink()
    assert open_raster(scene).overviews(1) == [2]  # a plain external overview still reads


class FileServer:
    """``folder`` served over HTTP from a child process (``python -m http.server``); ``requests``: the paths asked."""

    def __init__(self, folder: Path) -> None:
        import re

        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                      "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        match = re.search(r"port (\d+)", self.proc.stdout.readline())
        assert match is not None
        self.port = int(match[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> list[str]:
        """Stops the server; the request lines it logged."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return [line for line in err.splitlines() if '"GET ' in line or '"HEAD ' in line]


def test_a_url_input_fetches_no_side_car_from_its_server(tmp_path: Path) -> None:
    """GDAL asks the server of a URL input for ``.ovr``/``.msk`` and opens what it gets with any driver: a VRT
    served as ``x.tif.ovr`` read a local secret as the overviews. No side-car is fetched for a URL."""
    import rasterio

    from geoseg.geo import Window
    from geoseg.io.scene import read_window

    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_bytes(SECRET)
    www = tmp_path / "www"
    www.mkdir()
    write_raster(www / "x.tif", np.full((64, 64), 7, np.uint8), nodata=0)
    raw_band_vrt(www / "x.tif.ovr", secret)
    (www / "x.tif.msk").write_text((www / "x.tif.ovr").read_text().replace('"32" rasterYSize="8"',
                                                                           '"64" rasterYSize="64"'))
    witness, server = FileServer(www), FileServer(www)
    try:
        with fenced(Trust(network=True)):  # the job names a URL: GDAL's network fence is open
            with rasterio.open(witness.url("x.tif"), driver="GTiff") as ds:  # the witness: GDAL alone reads it
                assert set(ds.read(1, out_shape=(8, 32)).tobytes()) <= set(SECRET)  # (bytes of the secret)
            with open_raster(server.url("x.tif"), url_ok=True) as ds:
                assert ds.overviews(1) == [] and (ds.read(1, out_shape=(8, 32)) == 7).all()
                assert (ds.read_masks(1) == 255).all()
            data, valid = read_window(open_scene([server.url("x.tif")]), Window(0, 0, 64, 64))  # as a worker reads
            assert (data == 7).all() and valid.all()  # the .msk (over the secret) is not the mask
    finally:
        probed, asked = witness.requests(), server.requests()
    assert any(".ovr" in line for line in probed)
    assert asked and not [line for line in asked if ".ovr" in line or ".msk" in line or ".aux" in line], asked
