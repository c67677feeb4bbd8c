"""Trust: a remote STAC catalog cannot point geoseg at this machine or its network (loopback, link-local).

Witness: a loopback listener that counts requests; the catalog itself is served from ``localhost``.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from geoseg.errors import InputError
from geoseg.io.stac import stac_assets
from tests.fixtures import Listener


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as server:
        yield server


class Catalog:
    """STAC items served over HTTP from this process at ``http://localhost:PORT/NAME``."""

    def __init__(self) -> None:
        docs: dict[str, bytes] = {}
        self.docs = docs

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = docs.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def item(self, name: str, href: str) -> str:
        self.docs[name] = json.dumps({
            "type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [0, 0, 1, 1],
            "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"datetime": "2024-05-01T00:00:00Z"},
            "links": [], "assets": {"nir": {"href": href, "type": "image/tiff"}}}).encode()
        return f"http://localhost:{self.server.server_address[1]}/{name}"


@pytest.fixture
def catalog() -> Iterator[Catalog]:
    served = Catalog()
    yield served
    served.server.shutdown()


def test_a_remote_item_may_not_name_loopback_or_link_local_assets(catalog: Catalog, listener: Listener) -> None:
    port = listener.port
    for n, href in enumerate((listener.url("b08.tif"), f"http://2130706433:{port}/b08.tif",
                              f"http://0x7f.1:{port}/b08.tif", f"http://[::ffff:127.0.0.1]:{port}/b08.tif",
                              "http://169.254.169.254/latest/meta-data/b08.tif",
                              "http://metadata.google.internal/computeMetadata/v1/b08.tif",
                              "https://10.0.0.7/b08.tif")):
        with pytest.raises(InputError, match="loopback, link-local, private"):
            stac_assets(catalog.item(f"item{n}.json", href), ["nir"])
    assert listener.hits == 0
    public = stac_assets(catalog.item("public.json", "https://data.example.org/b08.tif"), ["nir"])
    assert public[0].files[0].href == "https://data.example.org/b08.tif"
    own = f"http://localhost:{port}/b08.tif"  # the catalog's own host may serve its data (a local test catalog)
    assert stac_assets(catalog.item("own.json", own), ["nir"])[0].files[0].href == own
    assert stac_assets(catalog.item("any.json", listener.url("b08.tif")), ["nir"], allow_outside=True)


def test_cli_run_fetches_nothing_a_remote_catalog_points_at_loopback(tmp_path: Path, catalog: Catalog,
                                                                    listener: Listener) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def run(href: str) -> subprocess.CompletedProcess:
        job = {"name": "ssrf", "inputs": [{"stac": catalog.item("item.json", href), "assets": ["nir"]}],
               "output": str(tmp_path / "out"), "method": {"kind": "kmeans", "n_clusters": 2},
               "vectorize": {"enabled": False}}
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
        return subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(tmp_path / "job.yaml"), "-q"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    res = run(listener.url("b08.tif"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "loopback" in lines[0], res.stderr
    assert listener.hits == 0
    res = run(f"http://localhost:{listener.port}/b08.tif")  # positive control: its own host is read (404 there)
    assert res.returncode != 0 and listener.hits > 0, res.stderr


def test_a_host_name_that_resolves_to_this_machine_is_refused_as_its_address(catalog: Catalog,
                                                                            listener: Listener) -> None:
    import socket

    name = socket.gethostname()  # this machine's own name, in /etc/hosts
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if "127.0.0.1" not in addresses:  # where the listener listens
        pytest.skip(f"this machine's name {name!r} resolves to {addresses}, not to 127.0.0.1")
    href = f"http://{name}:{listener.port}/b08.tif"
    with pytest.raises(InputError, match=rf"is on {name} \(it resolves to [0-9a-f.:]+\), an address of this machine"):
        stac_assets(catalog.item("named.json", href), ["nir"])
    assert listener.hits == 0
    # the witness hears the name: unfenced (allow_gdal_virtual), GDAL's read of it reaches the listener
    import rasterio

    assert stac_assets(catalog.item("named.json", href), ["nir"], allow_outside=True)
    with pytest.raises(rasterio.errors.RasterioIOError):
        rasterio.open(f"/vsicurl/{href}")
    assert listener.hits > 0
