#!/usr/bin/env bash
# The real-data recipe's GPU schedule on one CUDA GPU, then its held-out evaluation (#19):
# configs/real_mri_gpu.yaml (R50-FPN from scratch, 512 px, mixed supervision, tumor-free
# negatives) for MAX_ITER iterations (default: the config's 20,000; set it to the time you
# have: ~6 it/s estimated on an H100 with AMP), then benchmarks/real_data.py on the test and
# validation folds. Results in $OUT (real_data.json, the training log, model_final.pth).
#
# The machine: Python 3.12 with its own CUDA PyTorch, no network, this repository as the
# working directory with wheelhouse/ (bash benchmarks/build_wheelhouse.sh --small) and the
# prepared datasets/ (README, "Boxes, tumor-free images, no patient ids"; or SHARED=path to
# ../shared/datasets to prepare them there):
#   OUT=/tmp/out MAX_ITER=4000 bash benchmarks/gpu_real_mri.sh
# Dry run on a CPU (10 iterations, tiny sizes): DEVICE=cpu MAX_ITER=10 bash benchmarks/gpu_real_mri.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_real_mri}
PY=${PYTHON:-python3}
WH=${WHEELHOUSE:-wheelhouse}
SITE=${SITE:-/tmp/tumor-det-site}
DEVICE=${DEVICE:-cuda}
MAX_ITER=${MAX_ITER:-20000}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu_real_mri.log") 2>&1
START=$(date +%s)
stamp() { echo "== $(( $(date +%s) - START )) s: $*"; }
. benchmarks/gpu_env.sh

if [ ! -d datasets/figshare_boxes ] && [ -n "${SHARED:-}" ]; then
    stamp "preparing the datasets from $SHARED"
    P=("$PY" tools/prepare_dataset.py --folds 5 --seed 0 --group-duplicates --quiet)
    "${P[@]}" --format yolo --input "$SHARED/figshare_boxes" --output datasets/figshare_boxes \
        --classes tumor --class-names pituitary,meningioma,glioma --patient-blocks 50
    "${P[@]}" --format via --input "$SHARED/br35h/train" --output datasets/br35h
    "${P[@]}" --format images --input "$SHARED/tumor_free" --output datasets/tumor_free
fi
[ -d datasets/figshare_boxes ] || { echo "gpu_real_mri: datasets/ is missing (prepare and carry it, or SHARED=...)" >&2; exit 2; }

EVAL=(); BATCH=()
[ "$DEVICE" = cpu ] && EVAL=(--thresholds 0.5 --merge best) && BATCH=(SOLVER.IMS_PER_BATCH 2 INPUT.MIN_SIZE_TRAIN "(128,)" \
    INPUT.MIN_SIZE_TEST 128 TUMOR.AUGMENT.LSJ.SIZE 128 DATALOADER.NUM_WORKERS 0 \
    SOLVER.AMP.ENABLED False TEST.EVAL_PERIOD 0)
steps="($(( MAX_ITER * 8 / 10 )), $(( MAX_ITER * 93 / 100 )))"
stamp "training $MAX_ITER iterations on $DEVICE"
"$PY" tools/train_net.py --config-file configs/real_mri_gpu.yaml MODEL.DEVICE "$DEVICE" \
    SOLVER.MAX_ITER "$MAX_ITER" SOLVER.STEPS "$steps" OUTPUT_DIR "$OUT/model" "${BATCH[@]}"
stamp "held-out evaluation"
"$PY" benchmarks/real_data.py --config-file configs/real_mri_gpu.yaml \
    --weights "$OUT/model/model_final.pth" --output "$OUT/eval" \
    --test figshare_boxes_fold0 br35h_fold0 tumor_free_fold0 \
    --val figshare_boxes_fold1 br35h_fold1 tumor_free_fold1 "${EVAL[@]}" \
    MODEL.DEVICE "$DEVICE" "${BATCH[@]}"
stamp "done: $OUT/eval/real_data.json"
