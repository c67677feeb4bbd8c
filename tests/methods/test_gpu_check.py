"""benchmarks/gpu_check.sh: valid bash, and on a machine without CUDA a clear failure with JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_gpu_check_fails_clearly_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run the check")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(SCRIPT)], check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stderr
    record = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert record["verdict"] == "no-cuda" and record["steps"] == []
