#!/usr/bin/env bash
# The GPU check of issue 15, as one prepared script for a lent GPU machine (the `device` tool).
#
# Within 9 minutes in all it runs, on CUDA:
#   1. benchmarks/bench_deeplab.py, model alone (batch 16, 32, 64) and one chunk end to end at 1024²;
#   2. the same end to end at 2048² (model alone at the chunk's batch size, so vs_model_alone is comparable);
#   3. the real job (run_job on a one-GPU-worker local cluster) on an 8192² scene in 2048² chunks, once with one
#      task per chunk (read, then predict) and once with the next chunk's read overlapped with inference
#      (geoseg.run.prefetch): vs_model_alone of each and prefetch_speedup;
#   4. the `gpu` tests (pytest -m gpu) of tests/methods and tests/run (the read-overlap test and the Mask R-CNN
#      instances on CUDA at two chunk sizes among them);
#   5. benchmarks/bench_instances.py --maskrcnn train: a tiny Mask R-CNN trained on crowns on the GPU, its recall, and
#      its per-chunk cost (model + seam merge) against DeepLab alone at the same tile side (1024² chunk);
# and writes to $OUT (./gpu-check-out when $OUT is unset): bench-1024.json, bench-2048.json,
# bench-workflow.json, gpu-tests.json, bench-maskrcnn.txt, and gpu-check.json (machine, each step's exit status
# and seconds, the verdict).
#
# Without CUDA it fails at once (exit 3) and says so, in gpu-check.json too.
# Packages the machine lacks (segmentation_models_pytorch, rasterio, pydantic, zarr ...) travel as cp312
# wheels in an ignored .whl/ folder (see benchmarks/RESULTS-deeplab.md); when .whl/ is there they are
# installed to /tmp/site first. On the device tool, for example:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Step budgets: GPU_CHECK_BENCH_S (default 100 s each), GPU_CHECK_WORKFLOW_S (default 120 s),
# GPU_CHECK_TESTS_S (default 120 s), GPU_CHECK_MASKRCNN_S (default 60 s): 500 s of steps, the rest of the 9 minutes
# for installing and starting (segmentation_models_pytorch, torchvision, scikit-image and geopandas among the wheels).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT_DIR="${OUT:-./gpu-check-out}"
mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
PY="${PYTHON:-python3}"
BENCH_S="${GPU_CHECK_BENCH_S:-100}"
WORKFLOW_S="${GPU_CHECK_WORKFLOW_S:-120}"
TESTS_S="${GPU_CHECK_TESTS_S:-120}"
MASKRCNN_S="${GPU_CHECK_MASKRCNN_S:-60}"
START=$(date +%s)
export PYTHONUNBUFFERED=1
rm -f "$OUT_DIR/steps.jsonl" "$OUT_DIR/gpu-check.json"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed" >&2; exit 2; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

summary() {  # summary VERDICT MESSAGE: write gpu-check.json from the step records
  "$PY" - "$OUT_DIR" "$1" "$2" "$START" <<'EOF'
import json, os, platform, sys, time
out, verdict, message, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
steps = []
path = os.path.join(out, "steps.jsonl")
if os.path.exists(path):
    steps = [json.loads(line) for line in open(path) if line.strip()]
info = {"python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
except Exception as exc:  # torch itself missing is worth reporting, not a crash
    info["torch_error"] = repr(exc)
json.dump({"verdict": verdict, "message": message, "seconds": int(time.time()) - start,
           "machine": info, "steps": steps}, open(os.path.join(out, "gpu-check.json"), "w"), indent=1)
EOF
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" 2>/dev/null; then
  msg="no CUDA device: torch is missing or torch.cuda.is_available() is False; run this on a lent GPU machine"
  echo "gpu_check: $msg" >&2
  summary "no-cuda" "$msg"
  exit 3
fi
missing=$("$PY" - <<'EOF'
import importlib.util
need = ["segmentation_models_pytorch", "torchvision", "rasterio", "pydantic", "zarr", "dask", "distributed", "affine",
        "pyproj", "shapely", "geopandas", "skimage", "yaml", "pytest", "hypothesis"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  msg="missing Python packages: $missing (bring them as cp312 wheels in .whl/, carry=['.whl'])"
  echo "gpu_check: $msg" >&2
  summary "missing-packages" "$msg"
  exit 2
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record exit status and seconds
  local name=$1 limit=$2; shift 2
  local t0 rc; t0=$(date +%s)
  echo "== $name (at most ${limit}s): $*" >&2
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  printf '{"step": "%s", "rc": %d, "seconds": %d, "timed_out": %s}\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" \
    "$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo true || echo false)" >> "$OUT_DIR/steps.jsonl"
  return $rc
}

fail=0
step bench-1024 "$BENCH_S" "$PY" benchmarks/bench_deeplab.py --device cuda --batch-sizes 16,32,64 --chunk 1024 \
  --chunk-batch-size 32 --repeat 3 --min-seconds 2 > "$OUT_DIR/bench-1024.json" || fail=1
step bench-2048 "$BENCH_S" "$PY" benchmarks/bench_deeplab.py --device cuda --batch-sizes 32 --chunk 2048 \
  --chunk-batch-size 32 --repeat 3 --min-seconds 2 > "$OUT_DIR/bench-2048.json" || fail=1
step bench-workflow "$WORKFLOW_S" "$PY" benchmarks/bench_deeplab.py --device cuda --batch-sizes 32 --chunk 0 \
  --min-seconds 2 --workflow 8192 --workflow-chunk 2048 --workflow-batch-size 32 --workflow-prefetch both \
  > "$OUT_DIR/bench-workflow.json" || fail=1
step gpu-tests "$TESTS_S" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/methods tests/run \
  --junitxml "$OUT_DIR/gpu-tests.xml" > "$OUT_DIR/gpu-tests.log" 2>&1 || fail=1
step maskrcnn "$MASKRCNN_S" "$PY" benchmarks/bench_instances.py --maskrcnn train --train-steps 200 --device cuda \
  --chunk 1024 --repeat 3 > "$OUT_DIR/bench-maskrcnn.txt" 2>&1 || fail=1
"$PY" - "$OUT_DIR" <<'EOF'
import json, os, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
path = os.path.join(out, "gpu-tests.xml")
res = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": []}
if os.path.exists(path):
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for k in ("tests", "failures", "errors", "skipped"):
            res[k] += int(suite.get(k, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                res["failed"].append(f"{case.get('classname')}::{case.get('name')}")
json.dump(res, open(os.path.join(out, "gpu-tests.json"), "w"), indent=1)
EOF
if [ $fail -eq 0 ]; then summary "ok" "all steps passed"; else summary "failed" "a step failed: see steps"; fi
echo "gpu_check: done in $(( $(date +%s) - START ))s, JSON in $OUT_DIR" >&2
exit $fail
