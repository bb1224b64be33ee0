#!/usr/bin/env bash
# Build wheelhouse/ for benchmarks/gpu_benchmark.sh: the wheels tools/benchmark.py needs besides
# PyTorch, for CPython 3.12 on x86_64 Linux (the GPU machine has no network). Versions are the
# ones installed in .venv (pinned by constraints.txt), i.e. the tested ones.
#
#   bash benchmarks/build_wheelhouse.sh           # everything, ~120 MB
#   bash benchmarks/build_wheelhouse.sh --small   # without numpy, pillow, scipy, opencv and
#                                                 # torchvision (~6 MB): for a machine whose
#                                                 # Python already has them
#
# Contents: the pure-Python detectron2 wheel (.cache/detectron2/wheels/, made by
# tools/build_detectron2_wheel.py), py3-none-any wheels built here for the sdist-only packages
# (fvcore, antlr4-python3-runtime), and cp312 manylinux / pure wheels from PyPI for the rest
# (`pip download --only-binary=:all: --python-version 3.12`). Runs on this machine (Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WH=${WHEELHOUSE:-wheelhouse}
SMALL=0
[ "${1:-}" = "--small" ] && SMALL=1
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

# 3. everything else as cp312 manylinux or py3-none-any wheels
PKGS="iopath yacs omegaconf termcolor tabulate cloudpickle tqdm portalocker typing_extensions
      PyYAML pycocotools"
[ "$SMALL" = 1 ] || PKGS="$PKGS numpy pillow scipy opencv-python-headless torchvision"
specs=()
# (local version labels such as +cu130 dropped; torchvision's PyPI build needs the exact torch
# version it was made for, constraints.txt's)
for p in $PKGS; do s=$(ver "$p"); specs+=("${s%%+*}"); done
"$PY" -m pip download -q --no-deps -d "$WH" --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "${specs[@]}"

ls -1 "$WH"
du -sh "$WH"
