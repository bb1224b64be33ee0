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
from tumor_det.checkpoint import TumorCheckpointer
from tumor_det.config import get_config_file, get_tumor_cfg
from tumor_det.weights import WeightsNotFoundError, cached_path, resolve_weights

import pytest
import torch
import torchvision
from detectron2.modeling import build_model
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
    assert not list(out.glob(".tmp-*")), "a killed save must not leave partial files behind"

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
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert TumorCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("")["iteration"] == 1


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


@pytest.mark.parametrize("kind", ["resnet50", "maskrcnn"])
def test_torchvision_weights_converted_on_load(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "resnet50":
        tv = torchvision.models.resnet50(weights=None)
        src_key, dst_key = "layer3.2.conv2.weight", "backbone.bottom_up.res4.2.conv2.weight"
    else:
        tv = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None,
                                                               weights_backbone=None)
        src_key, dst_key = "roi_heads.mask_head.3.0.weight", "roi_heads.mask_head.mask_fcn4.weight"
    path = tmp_path / f"{kind}.pth"
    torch.save(tv.state_dict(), path)
    cfg = get_tumor_cfg(get_config_file("Base-Tumor-RCNN-FPN.yaml"), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    TumorCheckpointer(model).load(str(path))
    state = model.state_dict()
    assert torch.equal(state[dst_key], tv.state_dict()[src_key])
    assert torch.equal(state["backbone.bottom_up.stem.conv1.norm.running_var"],
                       tv.state_dict()["bn1.running_var" if kind == "resnet50"
                                       else "backbone.body.bn1.running_var"])
