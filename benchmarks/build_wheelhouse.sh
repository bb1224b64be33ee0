#!/usr/bin/env bash
# Build wheelhouse/ for benchmarks/gpu_benchmark.sh: the wheels tumor_det and tools/benchmark.py
# need besides PyTorch, for CPython 3.12 on x86_64 Linux (the GPU machine has no network).
# Versions are the ones installed in .venv (pinned by constraints.txt), i.e. the tested ones.
#
#   bash benchmarks/build_wheelhouse.sh           # everything but torch, ~110 MB
#   bash benchmarks/build_wheelhouse.sh --small   # only what the GPU machine lacks (~12 MB):
#                                                 # it has torch, torchvision, numpy, pillow,
#                                                 # scipy, opencv, PyYAML, tabulate, tqdm,
#                                                 # portalocker, cloudpickle, h5py, onnx and
#                                                 # onnxruntime (benchmarks/gpu_benchmark.sh
#                                                 # checks and installs only what is missing)
#   PY_VERSION=3.11 bash benchmarks/build_wheelhouse.sh --small   # for a dry run here
#
# The wheelhouse travels with the working tree to the GPU machine (64 MiB in all): carry it
# (it is git-ignored). Contents: the pure-Python detectron2 wheel (.cache/detectron2/wheels/,
# made by tools/build_detectron2_wheel.py), py3-none-any wheels built here for the sdist-only
# packages (fvcore, antlr4-python3-runtime), and cp312 manylinux / pure wheels from PyPI for the
# rest (`pip download --only-binary=:all: --python-version 3.12`). Runs on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WH=${WHEELHOUSE:-wheelhouse}
PYV=${PY_VERSION:-3.12}
ABI=cp${PYV/./}
SMALL=0
[ "${1:-}" = "--small" ] && SMALL=1
rm -rf "$WH"   # one version of each package: two would stop the install there
mkdir -p "$WH"

ver() {  # "name==version" as installed in .venv
    local v
    v=$("$PY" -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}')
    [ -n "$v" ] || { echo "build_wheelhouse: $1 is not installed in $PY's environment" >&2; exit 1; }
    echo "$1==$v"
}

# 1. detectron2 (pure Python, built from PyPI's pb1-detectron2 sdist)
if ! ls .cache/detectron2/wheels/detectron2-*.whl >/dev/null 2>&1; then
    "$PY" tools/build_detectron2_wheel.py --cache .cache/detectron2
fi
cp .cache/detectron2/wheels/detectron2-*.whl "$WH/"

# 2. sdist-only pure-Python packages: build universal wheels here
"$PY" -m pip wheel -q --no-deps -w "$WH" "$(ver fvcore)" "$(ver antlr4-python3-runtime)"

# 3. everything else as cp312 manylinux or py3-none-any wheels: what `import tumor_det.inference.predictor,
#    tumor_det.export.tracing, tumor_det.data` and the benchmark tasks import that the GPU machine lacks
PKGS="iopath yacs omegaconf hydra-core termcolor pycocotools nibabel pydicom shapely monai
      highdicom"
[ "$SMALL" = 1 ] || PKGS="$PKGS typing_extensions PyYAML tabulate cloudpickle tqdm portalocker
                          numpy pillow scipy opencv-python-headless torchvision h5py"
specs=()
# (local version labels such as +cu130 dropped; torchvision's PyPI build needs the exact torch
# version it was made for, constraints.txt's)
for p in $PKGS; do s=$(ver "$p"); specs+=("${s%%+*}"); done
"$PY" -m pip download -q --no-deps -d "$WH" --only-binary=:all: \
    --python-version "$PYV" --implementation cp --abi "$ABI" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "${specs[@]}"

ls -1 "$WH"
du -sh "$WH"
