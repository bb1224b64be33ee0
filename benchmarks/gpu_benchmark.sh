#!/usr/bin/env bash
# tumor-det on one CUDA GPU, in one go (about 6 minutes on an H100/H200); results in
# $OUT/RESULTS-gpu.md (also printed), the log in $OUT/gpu_benchmark.log:
#   1. inference against torchvision's Mask R-CNN: float32, float16 autocast (--amp) and the
#      exported TorchScript model (and ONNX Runtime when it has its CUDA provider);
#   2. training against torchvision's, float32 and --amp;
#   3. a whole 240x240x155 scan end to end (read, predict, write the NIfTI mask), the baseline
#      and every speed-up (skip slices without anatomy, batching, conv/norm folding,
#      channels_last, fp16, TorchScript), for the quick R-18 config and the R50 base config.
#
# The machine: Python 3.12 with its own CUDA PyTorch (and torchvision, numpy, opencv, pillow,
# scipy, onnx, onnxruntime), no network, this repository as the working directory with
# wheelhouse/ in it. Make wheelhouse/ beforehand, here, and let it travel (git-ignored: carry it):
#   bash benchmarks/build_wheelhouse.sh --small    # ~10 MB: what that machine lacks
# then, there, from the repository root:
#   OUT=/tmp/out bash benchmarks/gpu_benchmark.sh
# Dry run on a CPU machine (same steps, tiny sizes): DEVICE=cpu bash benchmarks/gpu_benchmark.sh
#
# Nothing is installed into the machine's Python: the missing packages go into $SITE with
# --no-deps (never replacing its torch, torchvision or numpy), and this checkout runs from
# PYTHONPATH; tumor_det.configs (package data mapped to configs/ by setup.py) is made visible by
# a tumor_det/configs -> ../configs link for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_benchmark}
PY=${PYTHON:-python3}
WH=${WHEELHOUSE:-wheelhouse}
SITE=${SITE:-/tmp/tumor-det-site}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RES="$OUT/RESULTS-gpu.md"
LOG="$OUT/gpu_benchmark.log"
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
stamp() { echo "== $(( $(date +%s) - START )) s: $*"; }

[ -d "$WH" ] || { echo "gpu_benchmark: $WH/ is missing (bash benchmarks/build_wheelhouse.sh --small, and carry it)" >&2; exit 2; }
DEVICE=$DEVICE "$PY" - <<'PYEOF'
import os, torch
dev = os.environ["DEVICE"]
if dev.startswith("cuda"):
    assert torch.cuda.is_available(), "gpu_benchmark: no CUDA GPU visible to PyTorch"
    print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
else:
    print("torch", torch.__version__, "(dry run on the CPU)")
PYEOF

# What the benchmark imports and the machine lacks, from the wheelhouse, into $SITE.
stamp "installing what is missing"
need=()
for pair in detectron2:detectron2 fvcore:fvcore iopath:iopath yacs:yacs omegaconf:omegaconf \
            antlr4:antlr4-python3-runtime termcolor:termcolor pycocotools:pycocotools \
            nibabel:nibabel pydicom:pydicom shapely:shapely yaml:PyYAML tabulate:tabulate \
            tqdm:tqdm portalocker:portalocker cloudpickle:cloudpickle \
            typing_extensions:typing_extensions cv2:opencv-python-headless PIL:pillow \
            scipy:scipy numpy:numpy torchvision:torchvision h5py:h5py; do
    PYTHONPATH="$SITE" "$PY" -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing from $WH into $SITE: ${need[*]}"
    # --no-deps: every dependency is in the list above; torchvision from PyPI pins one torch
    # version and must never replace the machine's torch
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
        --upgrade --target "$SITE" --find-links "$WH" "${need[@]}"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
LINK=0
if [ ! -e tumor_det/configs ]; then ln -s ../configs tumor_det/configs; LINK=1; fi
cleanup() { if [ "$LINK" = 1 ]; then rm -f tumor_det/configs; fi; }
trap cleanup EXIT
"$PY" -c "import tumor_det.inference.predictor, tumor_det.export.tracing, benchmarks.scan, benchmarks.speed
from tumor_det.config.config import DEFAULT_CONFIG; print('tumor_det OK, configs in', DEFAULT_CONFIG.parent)"
"$PY" -m tumor_det.utils.collect_env || true
ORT_CUDA=$("$PY" -c "import onnxruntime as o; print(int('CUDAExecutionProvider' in o.get_available_providers()))" 2>/dev/null || echo 0)
echo "onnxruntime CUDA provider: $ORT_CUDA"

rm -f "$RES"
bench() {
    stamp "benchmark.py $*"
    "$PY" tools/benchmark.py --device "$DEVICE" --results "$RES" "$@" \
        || echo "gpu_benchmark: FAILED: benchmark.py $*"
}
if [ "$DEVICE" = cpu ]; then  # dry run: every step, tiny sizes
    Q=(--quick --size 128 --reps 1 --warmup 0)
    bench --task inference "${Q[@]}" --batches 1,2 --no-memory
    bench --task inference "${Q[@]}" --batches 1 --no-memory --backend torchscript
    bench --task inference "${Q[@]}" --batches 1 --no-memory --backend onnxruntime
    bench --task train "${Q[@]}" --train-batch 2 --no-memory
    bench --task scan --quick --reps 1 --scan-shape 96,96,14
else
    # inference: 512 px slices, batch 1 and 8; 10 detections/image on both sides
    bench --task inference --size 512 --batches 1,8 --warmup 5 --reps 20
    bench --task inference --size 512 --batches 1,8 --warmup 5 --reps 20 --amp
    bench --task inference --size 512 --batches 1,8 --warmup 5 --reps 20 --no-memory \
        --backend torchscript
    if [ "$ORT_CUDA" = 1 ]; then
        bench --task inference --size 512 --batches 1,8 --warmup 5 --reps 20 --no-memory \
            --backend onnxruntime
    else
        echo "onnxruntime has no CUDA provider here (the onnxruntime-gpu package is not" \
             "installed; its wheel is too large to carry): ONNX Runtime not measured on the GPU" \
            | tee -a "$RES"
    fi
    # training: 4 slices of 512 px per iteration, same init, SGD and batches
    bench --task train --size 512 --train-batch 4 --warmup 3 --reps 15
    bench --task train --size 512 --train-batch 4 --warmup 3 --reps 15 --amp
    # whole scans (random weights, 10 detections/slice at score threshold 0)
    bench --task scan --reps 2 --scan-batch 16
    bench --task scan --reps 1 --scan-batch 16 --config Base-Tumor-RCNN-FPN.yaml
fi
stamp "done"
echo
echo "==== $RES ===="
cat "$RES"
