"""Export (TorchScript, ONNX) and the exported backends against the PyTorch model; fast paths.

The parity checks run the real-slice and synthetic-volume inputs through ``TumorPredictor``
with each backend (same pre- and post-processing) and require the same detections, masks with
Dice >= 0.99 and scores within 1e-3 of the PyTorch model's. The model is the quick config with
random weights at score threshold 0 (10 detections per slice: every mask head and paste path
runs); a trained model too when there is one: ``$TUMOR_DET_TRAINED_WEIGHTS`` (a checkpoint of
``configs/quick_cpu.yaml``) or ``output/demo/model/model_final.pth`` (``make demo``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tumor_det.config.config import get_tumor_cfg
from tumor_det.data.synthetic import synthetic_volume
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.export.parity import mask_dice, parity
from tumor_det.export.tracing import export_model
from tumor_det.inference.anatomy import anatomy_slices
from tumor_det.inference.backends import (
    ExportError,
    backend_for_file,
    find_exported,
    load_exported,
)
from tumor_det.inference.fast import fuse_conv_norm
from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io.geometry import Volume

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = Path(os.environ.get("TUMOR_DET_TRAINED_WEIGHTS", "")
                    or REPO / "output" / "demo" / "model" / "model_final.pth")
RANDOM = ["MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
          "TEST.DETECTIONS_PER_IMAGE", "10"]
BACKENDS = ("torchscript", "onnxruntime")

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def assert_same(ref, other, what: str) -> None:
    """Same detections, masks Dice >= 0.99, scores within 1e-3."""
    p = parity(ref.instances, other.instances)
    assert p["same_detections"], (what, p)
    if p["detections"]:
        assert p["max_score_diff"] <= 1e-3, (what, p)
        assert p["min_mask_dice"] >= 0.99, (what, p)
    assert mask_dice(ref.mask, other.mask) >= 0.99, what


@pytest.fixture(scope="module", params=["random", "demo"])
def exported(request, tmp_path_factory):
    """(PyTorch predictor, {backend: predictor}) for one model, exported once."""
    if request.param == "demo":
        if not DEMO_WEIGHTS.is_file():
            pytest.skip(f"no trained model ({DEMO_WEIGHTS}: make demo)")
        cfg = get_tumor_cfg("quick_cpu.yaml", ["MODEL.WEIGHTS", str(DEMO_WEIGHTS),
                                               "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
        threshold = 0.05
    else:
        cfg = get_tumor_cfg("quick_cpu.yaml", RANDOM)
        threshold = 0.0
    torch.manual_seed(0)
    ref = TumorPredictor(with_score_threshold(cfg, threshold),
                         PredictorOptions(allow_untrained=True))
    folder = tmp_path_factory.mktemp(f"export_{request.param}")
    files = export_model(ref.model, ref.cfg, folder)
    assert set(files) == {"torchscript", "onnx"} and all(p.is_file() for p in files.values())
    others = {b: TumorPredictor.from_exported(
                  ref.cfg, files["onnx" if b == "onnxruntime" else "torchscript"], b)
              for b in BACKENDS}
    return ref, others, folder


def test_export_files_and_metadata(exported) -> None:
    _, _, folder = exported
    meta = json.loads((folder / "export.json").read_text())
    assert meta["files"] == {"torchscript": "model.ts", "onnx": "model.onnx"}
    assert meta["outputs"] == ["pred_boxes", "pred_classes", "pred_masks", "scores",
                               "image_size"]
    assert meta["input"]["traced_size"] == [256, 256] and meta["opset"] == 17
    assert (folder / "config.yaml").is_file()
    import onnx

    onnx.checker.check_model(str(folder / "model.onnx"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_real_slices(exported, backend, shared_mri) -> None:
    """A few of the shared real slices (JPEG, 8-bit), one with a non-square size."""
    ref, others, _ = exported
    paths = sorted((shared_mri / "train").glob("*.jpg"))[:: 20][:2]
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    images.append(images[0][:, : images[0].shape[1] * 3 // 4])  # non-square: dynamic size
    for path, image in zip(paths + ["non-square"], images, strict=True):
        # one at a time: a PyTorch batch pads every image to the batch's largest size
        assert_same(ref(image), others[backend](image), f"{backend} {path}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_synthetic_volume(exported, backend) -> None:
    ref, others, _ = exported
    vol, _, affine = synthetic_volume(seed=1, size=128, num_slices=5)
    volume = Volume(vol, affine)
    a = ref.predict_volume(volume, batch_size=4)
    b = others[backend].predict_volume(volume, batch_size=4)
    assert mask_dice(a.mask, b.mask) >= 0.99
    for k, (x, y) in enumerate(zip(a.slices, b.slices, strict=True)):
        assert_same(x, y, f"{backend} slice {k}")


def test_exported_model_outputs(exported) -> None:
    """The raw outputs rebuild Detectron2 Instances with the resized image size."""
    _, _, folder = exported
    model = load_exported(folder)  # a folder: ONNX Runtime first
    assert model.backend == "onnxruntime"
    image = torch.randint(0, 255, (3, 256, 320), dtype=torch.uint8)
    (inst,) = model([image])
    assert inst.image_size == (256, 320)
    assert inst.pred_masks.shape[1:] == (1, 28, 28) and inst.pred_boxes.tensor.shape[1] == 4
    assert load_exported(folder, "torchscript").backend == "torchscript"


def test_find_exported_errors(tmp_path: Path) -> None:
    assert backend_for_file("a/model.onnx") == "onnxruntime"
    assert backend_for_file("model.ts") == "torchscript"
    assert backend_for_file("model_final.pth") is None
    with pytest.raises(ExportError, match="no exported model"):
        find_exported(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"x")
    assert find_exported(tmp_path) == (tmp_path / "model.onnx", "onnxruntime")
    with pytest.raises(ExportError, match="onnx file"):
        find_exported(tmp_path / "model.onnx", "torchscript")
    with pytest.raises(ExportError, match="not found"):
        find_exported(tmp_path / "model.ts")


def test_fuse_conv_norm_same_answer() -> None:
    cfg = get_tumor_cfg("quick_cpu.yaml", RANDOM)
    torch.manual_seed(0)
    ref = TumorPredictor(with_score_threshold(cfg, 0.0), PredictorOptions(allow_untrained=True))
    torch.manual_seed(0)
    fused = TumorPredictor(with_score_threshold(cfg, 0.0),
                           PredictorOptions(allow_untrained=True, fuse=True, channels_last=True))
    assert not any(getattr(m, "norm", None) is not None for m in fused.model.modules()
                   if type(m).__name__ == "Conv2d")
    assert fuse_conv_norm(fused.model) == 0  # nothing left to fold
    vol, _, _ = synthetic_volume(seed=2, size=128, num_slices=3)
    images = [vol[:, :, k] for k in range(3)]
    for r, o in zip(ref.predict_batch(images), fused.predict_batch(images), strict=True):
        assert_same(r, o, "fused + channels_last")


def test_anatomy_slices_rule() -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((10, 64, 64), np.int16)  # skull-stripped: zero background
    vol[2:8, 16:48, 16:48] = 500
    vol[5, 30:34, 30:34] = 1500
    assert anatomy_slices(vol).tolist() == [False] * 2 + [True] * 6 + [False] * 2
    noisy = np.abs(rng.normal(0, 20, vol.shape)).astype(np.int16) + vol  # air: noise
    assert anatomy_slices(noisy).tolist() == [False] * 2 + [True] * 6 + [False] * 2
    small = vol.copy()
    small[0, :3, :3] = 500  # 9 bright pixels, one 4x4 block: below the 4-block floor
    assert not anatomy_slices(small)[0]
    assert anatomy_slices(np.full((4, 8, 8), 7.0)).all()  # no contrast: keep everything
    assert anatomy_slices(np.zeros((0, 8, 8))).shape == (0,)


def test_skip_empty_slices_same_answer() -> None:
    """Skipping air slices leaves the anatomy slices' predictions unchanged."""
    cfg = get_tumor_cfg("quick_cpu.yaml", RANDOM + ["INPUT.MIN_SIZE_TEST", "64"])
    torch.manual_seed(0)
    pred = TumorPredictor(with_score_threshold(cfg, 0.0), PredictorOptions(allow_untrained=True))
    vol, _, affine = synthetic_volume(seed=3, size=64, num_slices=4)
    air = np.random.default_rng(0).choice(vol[:6, :6].ravel(), (64, 64, 2)).astype(vol.dtype)
    volume = Volume(np.concatenate([air, vol, air], axis=2), affine)
    keep_all = LesionRules(0.0, 0.0)  # no 3D rule: skipped neighbours cannot drop a lesion
    every = pred.predict_volume(volume, batch_size=4, skip_empty=False, rules=keep_all)
    skip = pred.predict_volume(volume, batch_size=4, skip_empty=True, rules=keep_all)
    assert every.slices[0].num_tumors > 0  # a random model "finds" tumors in air
    for k in (0, 1, 6, 7):
        assert skip.slices[k].num_tumors == 0 and not skip.slices[k].mask.any()
    for k in range(2, 6):
        assert_same(every.slices[k], skip.slices[k], f"slice {k}")


@pytest.mark.slow
def test_export_model_cli(tmp_path: Path) -> None:
    out = tmp_path / "export"
    cmd = [sys.executable, str(REPO / "tools" / "export_model.py"), "--output", str(out),
           "--allow-untrained", *RANDOM]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "check torchscript" in proc.stdout and "check onnx" in proc.stdout
    assert proc.stdout.count(": OK") == 2, proc.stdout
    assert (out / "model.ts").is_file() and (out / "model.onnx").is_file()
    # the exported file through splash
    img = tmp_path / "slice.png"
    vol, _, _ = synthetic_volume(seed=0, size=128, num_slices=1)
    cv2.imwrite(str(img), (vol[:, :, 0] // 8).clip(0, 255).astype(np.uint8))
    splash = [sys.executable, str(REPO / "tools" / "splash.py"), "--weights",
              str(out / "model.onnx"), "--input", str(img), "--output", str(tmp_path / "s"),
              "--confidence-threshold", "0.0"]
    proc = subprocess.run(splash, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "s" / "slice_mask.png").is_file()


def test_export_model_cli_errors(tmp_path: Path) -> None:
    tool = [sys.executable, str(REPO / "tools" / "export_model.py"), "--output",
            str(tmp_path / "e")]
    proc = subprocess.run(tool + ["MODEL.WEIGHTS", ""], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no model weights" in proc.stderr
    proc = subprocess.run(tool + ["--weights", str(tmp_path / "missing.pth")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("export_model.py: error:")


@pytest.mark.parametrize("name", ["model.onnx", "model.ts"])
@pytest.mark.parametrize("content", [b"", b"not a model at all"])
def test_corrupt_exported_model_is_a_clear_error(tmp_path, name, content):
    """An empty or corrupt export file: ExportError naming the file, not a library traceback."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ExportError, match=f"{name}: not a loadable"):
        load_exported(path)
