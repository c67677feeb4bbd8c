"""The wheel holds what an installed geoseg needs besides its code: the ready workflows, LICENSE, py.typed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_workflows_license_and_py_typed(tmp_path):
    src = tmp_path / "src"  # a copy without build leftovers of the working tree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("geoseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    workflows = sorted(Path(n).name for n in names if "/share/geoseg/workflows/" in n)
    assert workflows == sorted(p.name for p in (ROOT / "workflows").glob("*.yaml")) and workflows
    assert "geoseg/py.typed" in names
    (license_file,) = [n for n in names if n.endswith("licenses/LICENSE")]
    assert "MIT License" in zipfile.ZipFile(wheel).read(license_file).decode()
