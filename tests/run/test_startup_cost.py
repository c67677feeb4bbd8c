"""Fixed costs at the start of a run: no torch import on a machine without an NVIDIA GPU."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*")),
                    reason="this machine has an NVIDIA driver: torch is asked")
def test_gpu_count_without_nvidia_device_does_not_import_torch():
    code = ("import sys; from geoseg.run.cluster import local_gpu_count; "
            "n = local_gpu_count(); print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["0", "False"]
    import torch  # the oracle: torch agrees there is no CUDA device here

    assert torch.cuda.device_count() == 0
