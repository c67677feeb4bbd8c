"""A real S3-compatible server on loopback (moto's server mode) for the object-storage tests.

``s3_env`` starts it once per session on a free port of 127.0.0.1, points boto/s3fs
(``AWS_ENDPOINT_URL``) and GDAL (``AWS_S3_ENDPOINT``, ``AWS_HTTPS=NO``, ``AWS_VIRTUAL_HOSTING=FALSE``)
at it, and skips when moto or s3fs is missing or the server does not answer. ``s3_bucket`` gives each
test a new, empty bucket and yields its ``s3://`` URL. Dask workers started after the fixture inherit
the environment.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] and s3fs are needed: {exc}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    try:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
    except Exception as exc:  # any failure to start means: skip
        pytest.skip(f"moto server could not start: {exc}")
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
        "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem().ls("")
    except Exception as exc:
        server.stop()
        pytest.skip(f"moto server does not answer: {exc}")
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_env: dict[str, str]) -> str:
    import s3fs

    name = f"geoseg-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"
