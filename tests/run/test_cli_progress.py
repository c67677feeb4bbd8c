"""``geoseg vectorize`` and ``geoseg export`` show a progress bar on a terminal only (issue 14, finding 13).

Before: both ran silently for minutes on a large raster whatever the terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from geoseg.io.labelstore import LabelStoreWriter
from geoseg.legend import ClassInfo
from tests.fixtures import blocky_classes, chunk_grid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress")
    grid = chunk_grid(200, 260, 64)
    labels = blocky_classes(200, 260)
    writer = LabelStoreWriter.create(folder / "labels.zarr", grid, tuple(ClassInfo(i, f"c{i}", "#405060")
                                                                          for i in range(4)))
    for w in grid.windows():
        writer.write(w, labels[w.slices])
    return writer.finalize()


def _cli(args: list[str], terminal: bool) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (or a pipe); return its exit status and stderr."""
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    if not terminal:
        proc = subprocess.run([sys.executable, "-m", "geoseg.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300, check=False)
        return proc.returncode, proc.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(("argv", "labels", "without"), [
    (["vectorize", "{store}", "{tmp}/p.gpkg"], ["vectorising"], "pipe"),
    (["export", "{store}", "--cog", "{tmp}/l.tif", "--overviews", "2"], ["writing labels.tif", "overview 2"], "-q"),
])
def test_progress_bar_on_a_terminal_only(store, tmp_path, argv, labels, without):
    args = [a.format(store=store, tmp=tmp_path) for a in argv]
    rc, err = _cli(args, terminal=True)
    assert rc == 0, err
    for label in labels:
        assert label in err, err
    assert "20/20" in err  # 4 x 5 chunks of 64 px
    # no bar when stderr is a pipe, nor with -q on a terminal
    rc, err = _cli(args, terminal=False) if without == "pipe" else _cli([*args, "-q"], terminal=True)
    assert rc == 0 and not any(label in err for label in labels), err
