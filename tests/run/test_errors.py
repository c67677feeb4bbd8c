"""Every GeosegError survives pickling (with a third-party cause), also from a real Dask worker to the client."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from pathlib import Path

import pytest

import geoseg
from geoseg import errors
from geoseg.errors import GeosegError


def _all_subclasses() -> list[type[GeosegError]]:
    for mod in pkgutil.walk_packages(geoseg.__path__, "geoseg."):
        try:
            importlib.import_module(mod.name)
        except ImportError:  # an optional dependency missing: its errors cannot be raised either
            continue
    seen, todo = [], [GeosegError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(seen), key=lambda c: c.__qualname__)


SUBCLASSES = _all_subclasses()


def _raise_with_rasterio_cause(cls_path: str, bad_file: str) -> None:
    """Raise ``cls`` from a real rasterio error (its CPLE cause chain does not pickle by itself)."""
    import importlib as il

    import rasterio

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(il.import_module(module), name)
    try:
        rasterio.open(bad_file)
    except Exception as exc:
        raise cls(f"cannot open {bad_file}: {exc}; is it a complete GeoTIFF?") from exc


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bad") / "truncated.tif"
    path.write_bytes(b"II*\x00" + b"\x00" * 64)
    return str(path)


def test_every_module_was_scanned():
    assert {errors.InputError, errors.OutputError, errors.JobSpecError, errors.ClusterError} <= set(SUBCLASSES)


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_pickle_round_trip_keeps_type_and_message(cls, bad_file):
    with pytest.raises(cls) as info:
        _raise_with_rasterio_cause(f"{cls.__module__}.{cls.__qualname__}", bad_file)
    exc = info.value
    assert exc.__cause__ is not None
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc)


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_the_way_dask_pickles_errors_keeps_type_message_and_cause_text(cls, bad_file):
    """What a worker does with a task's error (distributed.core.error_message): tblib + its pickle."""
    from distributed.core import error_message
    from distributed.protocol import pickle as dpickle

    with pytest.raises(cls) as info:
        _raise_with_rasterio_cause(f"{cls.__module__}.{cls.__qualname__}", bad_file)
    msg = error_message(info.value)
    back = dpickle.loads(msg["exception"].data)
    assert type(back) is cls and str(back) == str(info.value)
    assert "RasterioIOError" in str(back.__cause__)


@pytest.mark.integration
def test_errors_raised_in_a_real_worker_reach_the_client_as_the_same_type(dask_client, bad_file):
    for cls in SUBCLASSES:
        fut = dask_client.submit(_raise_with_rasterio_cause, f"{cls.__module__}.{cls.__qualname__}", bad_file,
                                 pure=False)
        with pytest.raises(cls) as info:
            fut.result()
        assert type(info.value) is cls
        assert str(info.value).startswith(f"cannot open {bad_file}")


@pytest.mark.integration
def test_a_corrupt_input_in_a_run_reaches_the_cli_as_one_line(tmp_path, capsys):
    """Finding 1: a tile broken after open_scene checked the header fails the task on a worker."""
    import numpy as np
    import yaml

    from geoseg.cli import main
    from tests.fixtures import blocky_scene

    scene, _ = blocky_scene(tmp_path, height=256, width=256)
    data = bytearray(scene.read_bytes())
    # damage the compressed tile bytes (keep header and IFD): decoding fails only when a worker reads it
    start = len(data) // 3
    data[start:start + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    scene.write_bytes(bytes(data))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "c", "inputs": [str(scene)], "output": str(tmp_path / "out"),
                                   "chunk_size": 128, "method": {"kind": "kmeans", "n_clusters": 3,
                                                                 "sample_size": 1000},
                                   "vectorize": {"enabled": False}, "cluster": {"n_workers": 1}}))
    rc = main(["run", "-q", str(job)])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: cannot read"), err
    assert Path(tmp_path / "out" / "run.json").exists()
