#!/usr/bin/env bash
# tumor-det vs torchvision's Mask R-CNN on one CUDA GPU: inference and training, float32 and
# float16 autocast (--amp), about 5 minutes on an H100/H200. Results: $OUT/RESULTS-gpu.md
# (also printed).
#
# The machine: Python 3.12 with a CUDA PyTorch preinstalled, no network, this repository as the
# working directory with wheelhouse/ in it. Make wheelhouse/ beforehand on a networked machine:
#   bash benchmarks/build_wheelhouse.sh            # or --small when numpy, pillow, scipy,
#                                                  # opencv and torchvision are already there
# then run here:
#   OUT=/tmp/out bash benchmarks/gpu_benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-output/gpu_benchmark}
PY=${PYTHON:-python3}
VENV=${VENV:-/tmp/tumor-det-gpu-venv}
WH=${WHEELHOUSE:-wheelhouse}
mkdir -p "$OUT"
RES="$OUT/RESULTS-gpu.md"

[ -d "$WH" ] || { echo "gpu_benchmark: $WH/ is missing (benchmarks/build_wheelhouse.sh)" >&2; exit 2; }
# --system-site-packages: reuses the machine's torch (and pip, where ensurepip is missing)
"$PY" -m venv --system-site-packages "$VENV" 2>/dev/null \
    || "$PY" -m venv --system-site-packages --without-pip "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP="python -m pip install -q --disable-pip-version-check --no-index --find-links $WH"
python - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "gpu_benchmark: no CUDA GPU visible to PyTorch"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
PYEOF

# Detectron2 without its dependency list (tensorboard, matplotlib, hydra: not needed here);
# then what the benchmark imports, skipping modules the system site-packages already provide.
$PIP --no-deps detectron2
need=()
for pair in torchvision:torchvision numpy:numpy PIL:pillow cv2:opencv-python-headless \
            scipy:scipy pycocotools:pycocotools yaml:PyYAML fvcore:fvcore iopath:iopath \
            yacs:yacs omegaconf:omegaconf termcolor:termcolor tabulate:tabulate \
            cloudpickle:cloudpickle tqdm:tqdm portalocker:portalocker; do
    python -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing from $WH: ${need[*]}"
    # torchvision from PyPI pins one torch version: never let it replace the machine's torch
    for p in "${need[@]}"; do
        if [ "$p" = torchvision ]; then $PIP --no-deps torchvision; fi
    done
    rest=()
    for p in "${need[@]}"; do [ "$p" = torchvision ] || rest+=("$p"); done
    [ ${#rest[@]} -eq 0 ] || $PIP "${rest[@]}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # tumor_det from this checkout
python -m tumor_det.collect_env || true

rm -f "$RES"
bench() { python tools/benchmark.py --device cuda --results "$RES" "$@"; }
# inference: 512 px slices, batch 1 and 8; 10 detections/image on both sides
bench --task inference --size 512 --batches 1,8 --warmup 10 --reps 50
bench --task inference --size 512 --batches 1,8 --warmup 10 --reps 50 --amp
# training: 4 slices of 512 px per iteration, same init, SGD and batches
bench --task train --size 512 --train-batch 4 --warmup 5 --reps 20
bench --task train --size 512 --train-batch 4 --warmup 5 --reps 20 --amp
echo
echo "==== $RES ===="
cat "$RES"
