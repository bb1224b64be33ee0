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

. benchmarks/gpu_env.sh  # the machine's PyTorch + what it lacks from wheelhouse/
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
