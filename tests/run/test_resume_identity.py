"""Chunk identity a changed input cannot fool: the resume key holds a cached content checksum of each input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from geoseg.io.checksum import CACHE_FILE, content_digest
from geoseg.io.scene import open_scene
from geoseg.run.jobspec import parse_job
from geoseg.run.workflow import job_identity
from tests.fixtures import blocky_scene


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))


def _rewrite_keeping_size_and_mtime(path: Path) -> None:
    """What ``cp -p`` over an existing file does: other bytes, same inode, size and modification time."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_an_input_rewritten_with_the_same_size_and_mtime_changes_the_resume_key(tmp_path):
    """Finding 3: with a reused k-means model the key stayed equal and 13 stale chunks were reused."""
    path, _ = blocky_scene(tmp_path)
    job = parse_job({"name": "k", "inputs": [str(path)], "output": str(tmp_path / "out"), "chunk_size": 128})
    scene = open_scene(str(path))
    before = job_identity(job, scene, "the same model")
    assert job_identity(job, scene, "the same model") == before  # stable
    _rewrite_keeping_size_and_mtime(path)
    assert job_identity(job, scene, "the same model") != before


def test_touching_an_input_without_changing_it_keeps_the_key(tmp_path):
    path, _ = blocky_scene(tmp_path)
    job = parse_job({"name": "k", "inputs": [str(path)], "output": str(tmp_path / "out"), "chunk_size": 128})
    scene = open_scene(str(path))
    before = job_identity(job, scene)
    os.utime(path, ns=(1, 10**18))
    assert job_identity(job, scene) == before  # the chunks done are still valid: they are reused


def test_the_checksum_is_the_files_sha256_and_is_cached_by_its_stat(tmp_path):
    path, _ = blocky_scene(tmp_path)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert content_digest(str(path)) == expected
    cache = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
    entry = cache[str(path.resolve())]
    assert entry["sha256"] == expected
    # a cache entry whose stat still matches is used as is (proof: a planted digest comes back) ...
    cache[str(path.resolve())]["sha256"] = "planted"
    (tmp_path / "cache" / CACHE_FILE).write_text(json.dumps(cache))
    assert content_digest(str(path)) == "planted"
    # ... and one whose file changed (ctime moves even when size and mtime are restored) is not
    _rewrite_keeping_size_and_mtime(path)
    assert content_digest(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest() != expected


def test_urls_and_an_unwritable_cache_are_fine(tmp_path, monkeypatch):
    assert content_digest("https://example.invalid/a.tif") is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(blocker / "cache"))  # cannot be created: not a folder
    path, _ = blocky_scene(tmp_path)
    assert content_digest(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
