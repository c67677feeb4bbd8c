"""Fixed costs at the start of a run: no torch import on a machine without an NVIDIA GPU; a job refused for its
bands is refused before numba, distributed or torch are imported (together over a second of start-up)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.fixtures import write_raster


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*")),
                    reason="this machine has an NVIDIA driver: torch is asked")
def test_gpu_count_without_nvidia_device_does_not_import_torch():
    code = ("import sys; from geoseg.run.cluster import local_gpu_count; "
            "n = local_gpu_count(); print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["0", "False"]
    import torch  # the oracle: torch agrees there is no CUDA device here

    assert torch.cuda.device_count() == 0


#: Imported only once a window is warped (numba), a cluster is made (distributed) or a network runs (torch).
HEAVY = ("numba", "distributed", "torch")


def test_band_role_refusal_imports_no_compiler_cluster_or_network(tmp_path):
    rng = np.random.default_rng(0)
    stems = [str(write_raster(tmp_path / f"LC08_L1TP_190026_20200101_20200113_02_T1_{k}.TIF",
                              rng.integers(1, 20000, (40, 48), dtype=np.uint16)))
             for k in ("B2", "B3", "B4", "B5")]
    rescaling = "\n".join(f"REFLECTANCE_{k}_BAND_{b} = {v}" for b in (2, 3, 4, 5) for k, v in (("MULT", 2e-5), ("ADD", -0.1)))
    (tmp_path / "LC08_L1TP_190026_20200101_20200113_02_T1_MTL.txt").write_text(  # the units it is delivered with
        f"GROUP = IMAGE_ATTRIBUTES\nSUN_ELEVATION = 30.0\nEND_GROUP = IMAGE_ATTRIBUTES\n"
        f"GROUP = LEVEL1_RADIOMETRIC_RESCALING\n{rescaling}\nEND_GROUP = LEVEL1_RADIOMETRIC_RESCALING\nEND\n")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "l8", "output": str(tmp_path / "out"), "inputs": stems,
                                   "method": {"kind": "threshold", "index": "ndvi", "threshold": 0.3}}))
    # the CLI's own main, then what this process imported up to the refusal (nothing runs after it)
    code = ("import sys; from geoseg.cli import main; rc = main(sys.argv[1:]); "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules) or '-'); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "run", str(job)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("geoseg: error: ")
    assert "`sensor: landsat8`" in out.stderr
    assert out.stdout.split() == ["-"], f"imported before the refusal: {out.stdout.strip()}"
    assert not (tmp_path / "out").exists()
