"""tools/train_net.py and TumorTrainer: training, --resume after a kill, atomic checkpoints,
--eval-only, best checkpoint, weights resolution and conversion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint.checkpointer import TumorCheckpointer, convert_torchvision_state_dict
from tumor_det.checkpoint.weights import WeightsNotFoundError, cached_path, resolve_weights
from tumor_det.config.config import get_config_file, get_tumor_cfg
from tumor_det.utils import atomic

import pytest
import torch
import torchvision
from detectron2.modeling import build_model
from torch import nn
from toy_data import toy_opts, write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file",
             str(get_config_file("quick_cpu.yaml"))]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command; Detectron2 logs to stdout, so stdout and stderr are merged."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_toy_dataset(root)
    return root


def test_resume_after_kill_continues_at_right_iteration(toy_root, tmp_path):
    out = tmp_path / "run"
    opts = toy_opts(toy_root, out, max_iter=200)
    proc = subprocess.Popen(TRAIN_NET + opts, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "model_0000003.pth").exists():
            assert proc.poll() is None, "training exited early"
            assert time.time() < deadline, "no checkpoint after 240 s"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = (out / "last_checkpoint").read_text()
    assert saved.startswith("model_") and (out / saved).is_file()
    saved_iter = torch.load(out / saved, weights_only=False)["iteration"]
    # The kill may land in a save: what that leaves is a hidden temporary, never a checkpoint.
    checkpoints = TumorCheckpointer(nn.Linear(1, 1), str(out)).get_all_checkpoint_files()
    assert checkpoints and not [p for p in checkpoints if atomic.is_temporary(p)]
    assert all(p.suffix != ".pth" for p in out.iterdir() if atomic.is_temporary(p))
    for path in checkpoints:
        torch.load(path, weights_only=False)

    result = _run(TRAIN_NET + ["--resume"] + toy_opts(toy_root, out, saved_iter + 3))
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"Starting training from iteration {saved_iter + 1}" in result.stdout
    iters = [m["iteration"] for m in _metrics(out) if "total_loss" in m]
    assert iters[-1] == saved_iter + 2  # 0-based: the run ended at MAX_ITER - 1
    assert (out / "model_final.pth").is_file()
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_eval_only_best_checkpoint_and_validation_loss(toy_root, tmp_path):
    out = tmp_path / "run"
    opts = toy_opts(toy_root, out, max_iter=4) + ["TEST.EVAL_PERIOD", "2",
                                                  "TUMOR.VAL_LOSS_PERIOD", "2"]
    result = _run(TRAIN_NET + opts)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (out / "model_best.pth").is_file()
    val_losses = [m["val_total_loss"] for m in _metrics(out) if "val_total_loss" in m]
    assert val_losses and all(v > 0 for v in val_losses)
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    evals = [m for m in _metrics(out) if "tumor/dice" in m]
    assert evals, "periodic evaluation wrote no tumor metrics"
    assert (out / "inference" / "toy_val" / "tumor_metrics_per_image.csv").is_file()

    result = _run(TRAIN_NET + ["--eval-only"] + opts + [
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "TUMOR.EVAL.COCO", "True"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "copypaste: Task: tumor" in result.stdout
    assert "copypaste: Task: segm" in result.stdout


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    cfg = get_tumor_cfg(get_config_file("quick_cpu.yaml"))
    model = build_model(cfg)
    ckpt = TumorCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001", iteration=2)  # overwrite attempt dies half-way
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000002", iteration=2)
    monkeypatch.undo()
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert not (tmp_path / "model_0000002.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert TumorCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("")["iteration"] == 1


# Child process: save a checkpoint (weights all -1, iteration 2) with TumorCheckpointer and
# SIGKILL itself at one point of the save. argv: save_dir, point, checkpoint name.
_DYING_SAVE = """
import io, os, signal, sys
import tumor_det
from tumor_det.checkpoint.checkpointer import TumorCheckpointer
import torch

save_dir, point, name = sys.argv[1:4]
model = torch.nn.Linear(256, 256)
torch.nn.init.constant_(model.weight, -1.0)
torch.nn.init.constant_(model.bias, -1.0)
real_save, real_replace, replaced = torch.save, os.replace, []

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def save(obj, f, *args, **kwargs):
    if point == "before_write":
        die()
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2] if point == "mid_write" else data)
        out.flush()
        os.fsync(out.fileno())
    if point == "mid_write":
        die()

def replace(src, dst):
    replaced.append(dst)
    if (point, len(replaced)) in (("before_rename", 1), ("before_tag_rename", 2)):
        die()
    real_replace(src, dst)

torch.save, os.replace = save, replace
TumorCheckpointer(model, save_dir=save_dir).save(name, iteration=2)
sys.exit("the save was not killed")
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model_0000002", "model_0000001"])  # a new one, an overwrite
@pytest.mark.parametrize("point", ["before_write", "mid_write", "before_rename",
                                   "before_tag_rename"])
def test_killed_save_keeps_previous_checkpoint(tmp_path, point, name):
    """SIGKILL at each point of a save: the previous checkpoint and ``last_checkpoint`` still
    load, and the one temporary file left is hidden and invisible to Detectron2."""
    model = nn.Linear(256, 256)
    with torch.no_grad():
        model.weight.copy_(torch.linspace(0, 1, 256 * 256).reshape(256, 256))
        model.bias.copy_(torch.linspace(-1, 0, 256))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    TumorCheckpointer(model, save_dir=str(tmp_path)).save("model_0000001", iteration=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["last_checkpoint", "model_0000001.pth"]

    child = subprocess.run([sys.executable, "-c", _DYING_SAVE, str(tmp_path), point, name],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]

    temporaries = sorted(p for p in tmp_path.iterdir() if atomic.is_temporary(p))
    assert len(temporaries) == 1, temporaries  # a killed process cannot clean up after itself
    leftover = temporaries[0]
    assert leftover.name.startswith(".") and not leftover.name.endswith(".pth")
    if point == "before_write":
        assert leftover.stat().st_size == 0
    elif point == "mid_write":
        with pytest.raises(RuntimeError, match="zip archive"):  # really a partial checkpoint
            torch.load(leftover, weights_only=False)
    new_in_place = point == "before_tag_rename"  # killed while tagging: the checkpoint is done
    real = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != leftover}
    if new_in_place:
        assert set(real) == set(before) | {f"{name}.pth"}
        new = torch.load(tmp_path / f"{name}.pth", weights_only=False)
        assert new["iteration"] == 2 and torch.all(new["model"]["weight"] == -1)
    else:
        assert real == before  # byte for byte
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"

    # What Detectron2 sees: real checkpoints only, and last_checkpoint resumes.
    fresh = TumorCheckpointer(nn.Linear(256, 256), save_dir=str(tmp_path))
    assert fresh.has_checkpoint()
    assert sorted(os.path.basename(p) for p in fresh.get_all_checkpoint_files()) == sorted(
        n for n in real if n.endswith(".pth"))
    resumed = fresh.resume_or_load("", resume=True)
    if new_in_place and name == "model_0000001":
        assert resumed["iteration"] == 2
    else:
        assert resumed["iteration"] == 1
        for key, value in fresh.model.state_dict().items():
            assert torch.equal(value, original[key]), key

    assert atomic.remove_stale_temporaries(tmp_path, older_than_s=3600) == []  # still recent
    assert atomic.remove_stale_temporaries(tmp_path, older_than_s=0) == [leftover]
    assert {p.name for p in tmp_path.iterdir()} == set(real)


def test_temporary_names_are_recognised_and_never_checkpoints(tmp_path):
    names = {}
    for target in ("model_final.pth", "weights.pkl", "last_checkpoint", "mask.png",
                   "volume.nii.gz", "results.json"):
        with atomic.atomic_path(tmp_path / target) as tmp:
            names[target] = tmp.name
            assert atomic.is_temporary(tmp) and tmp.name.startswith(f".{target}.")
            tmp.write_bytes(b"x")
    # writers that pick the format by suffix (cv2, nibabel) get it; checkpoints never
    assert names["mask.png"].endswith(".tmp.png")
    assert names["volume.nii.gz"].endswith(".tmp.nii.gz")
    assert names["model_final.pth"].endswith(".tmp") and names["weights.pkl"].endswith(".tmp")
    for real in ("model_final.pth", ".hidden.pth", "model.tmp.pth", "a.tmp", ".tmp-synth"):
        assert not atomic.is_temporary(real), real
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "model_final.pth") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("failed write")
    assert (tmp_path / "model_final.pth").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_weights_aliases_fail_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    start = time.time()
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights("coco")
    message = str(err.value)
    assert time.time() - start < 5
    assert "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation" in message
    assert str(tmp_path / "cache") in message and "model_final_f10217.pkl" in message
    # Once the file is where the message says, it is used without any download.
    local = cached_path("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    assert resolve_weights("imagenet") == str(local)
    with pytest.raises(WeightsNotFoundError, match="no checkpoint"):
        resolve_weights("last", tmp_path)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        resolve_weights(str(tmp_path / "nope.pth"))
    assert resolve_weights("") == ""


def test_train_net_reports_missing_weights_and_dataset(toy_root, tmp_path, monkeypatch):
    env = {**os.environ, "FVCORE_CACHE": str(tmp_path / "cache")}
    result = _run(TRAIN_NET + ["--weights", "coco"] + toy_opts(toy_root, tmp_path),
                  env=env, timeout=120)
    assert result.returncode != 0 and "does not download" in result.stdout
    result = _run(TRAIN_NET + toy_opts(toy_root, tmp_path) + [
        "DATASETS.TRAIN", '("missing_train",)'], timeout=120)
    assert result.returncode != 0 and "'missing_train'" in result.stdout
    assert "prepare_dataset.py" in result.stdout


# Detectron2 parameters that torchvision's weights do not supply: the class-specific predictors
# (torchvision: 91 COCO classes, background first), re-initialised for our classes.
_CLASS_SPECIFIC = ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
                   "roi_heads.mask_head.predictor.")


def _r50_fpn(*opts: str) -> nn.Module:
    cfg = get_tumor_cfg(get_config_file("Base-Tumor-RCNN-FPN.yaml"), ["MODEL.DEVICE", "cpu",
                                                                       *opts])
    return build_model(cfg)


def _torchvision(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "resnet50":
        tv = torchvision.models.resnet50(weights=None)
    else:
        tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
                                                               weights_backbone=None)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so that they count
        for module in tv.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return tv.eval()


@pytest.mark.parametrize("kind", ["resnet50", "maskrcnn"])
def test_torchvision_weights_converted_on_load(tmp_path, kind):
    """Every torchvision tensor lands on one of our parameters of the same shape, and every
    parameter of ours (of the ResNet for a plain ResNet-50) gets one, but the predictors."""
    tv_state = _torchvision(kind).state_dict()
    model = _r50_fpn()
    ours = model.state_dict()
    converted = convert_torchvision_state_dict(tv_state)
    dropped = [k for k in tv_state if k.endswith("num_batches_tracked") or k.startswith((
        "fc.", "roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."))]
    assert len(dropped) == (55 if kind == "resnet50" else 59)  # 53 BN counters + fc (2) or 6
    assert len(converted) == len(tv_state) - len(dropped)  # one of ours for each of the rest
    for key, value in converted.items():
        assert key in ours and ours[key].shape == value.shape, key
    scope = "backbone.bottom_up." if kind == "resnet50" else ""
    expected = {k for k in ours if k.startswith(scope) and not k.startswith(_CLASS_SPECIFIC)}
    assert set(converted) == expected
    assert len(expected) == (265 if kind == "resnet50" else 301)

    path = tmp_path / f"{kind}.pth"
    torch.save(tv_state, path)
    TumorCheckpointer(model).load(str(path))
    state = model.state_dict()
    for key, value in converted.items():
        assert torch.equal(state[key], value), key
    for key in ours.keys() - converted.keys():  # the rest keeps its initialisation
        assert torch.equal(state[key], ours[key]), key


def test_torchvision_maskrcnn_weights_compute_the_same():
    """Converted weights make our R50-FPN compute what torchvision's Mask R-CNN computes, layer
    by layer (torchvision's ResNet puts the stride in the 3x3 conv: STRIDE_IN_1X1 False)."""
    tv = _torchvision("maskrcnn")
    model = _r50_fpn("MODEL.RESNETS.STRIDE_IN_1X1", "False").eval()
    missing, unexpected = model.load_state_dict(convert_torchvision_state_dict(tv.state_dict()),
                                                strict=False)
    assert not unexpected and all(k.startswith(_CLASS_SPECIFIC) for k in missing)
    torch.manual_seed(1)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tv_features = list(tv.backbone(image).values())  # "0".."3", "pool"
        features = model.backbone(image)
        features = [features[f"p{i}"] for i in range(2, 7)]
        for level, (theirs, mine) in enumerate(zip(tv_features, features, strict=True), 2):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4, msg=f"p{level}")
        objectness, deltas = tv.rpn.head(features)
        my_objectness, my_deltas = model.proposal_generator.rpn_head(features)
        for theirs, mine in zip(objectness + deltas, my_objectness + my_deltas, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
        boxes = torch.randn(5, 256, 7, 7)
        torch.testing.assert_close(model.roi_heads.box_head(boxes), tv.roi_heads.box_head(boxes),
                                   rtol=1e-4, atol=1e-4)
        masks = torch.randn(3, 256, 14, 14)
        theirs = torch.relu(tv.roi_heads.mask_predictor.conv5_mask(tv.roi_heads.mask_head(masks)))
        mine = masks
        for name, layer in model.roi_heads.mask_head.named_children():
            if name != "predictor":
                mine = layer(mine)
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
