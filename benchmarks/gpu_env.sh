# Sourced by the GPU scripts (gpu_benchmark.sh, gpu_real_mri.sh) from the repository root, with
# PY, WH, SITE, DEVICE set and stamp() defined: checks the machine's CUDA PyTorch, installs what
# tumor-det imports and the machine lacks from the wheelhouse into $SITE (--no-deps: never
# replacing its torch, torchvision or numpy), puts $SITE and this checkout on PYTHONPATH and
# links tumor_det/configs -> ../configs for the run (removed on exit).
[ -d "$WH" ] || { echo "$(basename "$0"): $WH/ is missing (bash benchmarks/build_wheelhouse.sh --small, and carry it)" >&2; exit 2; }
DEVICE=$DEVICE "$PY" - <<'PYEOF'
import os, torch
dev = os.environ["DEVICE"]
if dev.startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA GPU visible to PyTorch"
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
            scipy:scipy numpy:numpy torchvision:torchvision h5py:h5py monai:monai \
            hydra:hydra-core sklearn:scikit-learn tensorboard:tensorboard highdicom:highdicom; do
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
