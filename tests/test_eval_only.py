"""tools/train_net.py: ``--eval-only`` evaluates the checkpoint it is given, ``--weights last``
continues the last run, ``--weights PATH`` starts from that file."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.config.config import get_config_file, get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.engine.trainer import TumorTrainer

import pytest
import torch
from toy_data import toy_opts, write_toy_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIG = get_config_file("quick_cpu.yaml")
TRAIN_NET = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(CONFIG)]
CLS_BIAS = "roi_heads.box_predictor.cls_score.bias"  # [tumor, background] logits' bias


def _run(args: list[str]) -> subprocess.CompletedProcess:
    # Same thread count as this process, so that its in-process evaluation computes the same.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return result


def _copypaste(log: str) -> dict[str, dict[str, str]]:
    """``{task: {metric: "0.1234"}}`` from Detectron2's ``copypaste:`` lines."""
    lines = [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]
    tasks = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            tasks[line[6:]] = dict(zip(lines[i + 1].split(","), lines[i + 2].split(","),
                                       strict=True))
    return tasks


def _predictions(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "inference" / "toy_val" /
                       "coco_instances_results.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A toy dataset, a 2-iteration run on it, and two checkpoints made from its weights: ``a``
    scores every detection near 1, ``b`` near 0 (so ``b`` predicts nothing)."""
    tmp = tmp_path_factory.mktemp("eval_only")
    root = tmp / "datasets"
    write_toy_dataset(root)
    run = tmp / "run"
    _run(TRAIN_NET + toy_opts(root, run, max_iter=2))
    assert (run / "last_checkpoint").read_text() == "model_final.pth"
    state = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    paths = {}
    for name, bias in (("a", [10.0, 0.0]), ("b", [-30.0, 0.0])):
        state = {**state, CLS_BIAS: torch.tensor(bias)}
        paths[name] = tmp / f"{name}.pth"
        torch.save({"model": state}, paths[name])
    return {"root": root, "run": run, **paths}


def _evaluate_in_process(root: Path, weights: Path, output_dir: Path) -> dict:
    cfg = get_tumor_cfg(CONFIG, toy_opts(root, output_dir) + ["TUMOR.EVAL.COCO", "True"])
    register_all(root)
    model = TumorTrainer.build_model(cfg)
    TumorCheckpointer(model).load(str(weights))
    return TumorTrainer.test(cfg, model)


def test_eval_only_evaluates_the_given_checkpoint(trained, tmp_path):
    root, run = trained["root"], trained["run"]
    recorded, predictions = {}, {}
    for name in ("a", "b"):
        # OUTPUT_DIR holds another run's last_checkpoint: MODEL.WEIGHTS must win over it.
        result = _run(TRAIN_NET + ["--eval-only"] + toy_opts(root, run) + [
            "TUMOR.EVAL.COCO", "True", "MODEL.WEIGHTS", str(trained[name])])
        assert f"Loading from {trained[name]} " in result.stdout
        recorded[name] = _copypaste(result.stdout)
        predictions[name] = _predictions(run)

        expected = _evaluate_in_process(root, trained[name], tmp_path / name)
        assert set(recorded[name]) == {"bbox", "segm", "tumor"}
        for task, metrics in expected.items():
            assert recorded[name][task] == {k: f"{v:.4f}" for k, v in metrics.items()
                                            if "-" not in k}, task
        ours = _predictions(tmp_path / name)
        assert len(predictions[name]) == len(ours)
        for got, want in zip(predictions[name], ours, strict=True):
            assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)

    # a: every detection scores about 1 (up to TEST.DETECTIONS_PER_IMAGE per slice, all 4 val
    # slices); b: none passes SCORE_THRESH_TEST, so no prediction, no tumor found.
    assert {p["image_id"] for p in predictions["a"]} == {1, 2, 3, 4}
    assert min(p["score"] for p in predictions["a"]) > 0.99
    assert predictions["b"] == []
    tumor_b = recorded["b"]["tumor"]
    assert (tumor_b["dice"], tumor_b["sensitivity"], tumor_b["fp_per_image"]) == (
        "0.0000", "0.0000", "0.0000")
    assert float(recorded["a"]["tumor"]["fp_per_image"]) > 0
    assert math.isnan(float(recorded["b"]["bbox"]["AP"]))


def test_weights_last_continues_the_last_run(trained, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last_checkpoint", "model_0000001.pth", "model_final.pth"):
        shutil.copy(trained["run"] / name, out / name)
    result = _run(TRAIN_NET + ["--weights", "last"] + toy_opts(trained["root"], out, max_iter=4))
    assert f"Loading from {out / 'model_final.pth'} " in result.stdout
    assert "Starting training from iteration 2" in result.stdout
    iters = [json.loads(line)["iteration"] for line in
             (out / "metrics.json").read_text().splitlines() if "total_loss" in line]
    assert iters[-1] == 3
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3


def test_weights_path_starts_from_that_file(trained, tmp_path):
    # No learning: the weights the run ends with are the weights it loaded.
    out = tmp_path / "run"
    result = _run(TRAIN_NET + ["--weights", str(trained["a"])] + toy_opts(
        trained["root"], out, max_iter=1) + ["SOLVER.BASE_LR", "0.0"])
    assert f"Loading from {trained['a']} " in result.stdout
    assert "Starting training from iteration 0" in result.stdout
    final = torch.load(out / "model_final.pth", weights_only=False)["model"]
    source = torch.load(trained["a"], weights_only=False)["model"]
    assert final[CLS_BIAS].tolist() == [10.0, 0.0]
    for key in ("roi_heads.mask_head.deconv.weight", "backbone.bottom_up.res4.0.conv1.weight"):
        assert torch.equal(final[key], source[key]), key


def test_eval_only_with_test_time_augmentation(trained, tmp_path):
    out = tmp_path / "tta"
    result = _run(TRAIN_NET + ["--eval-only", "MODEL.WEIGHTS", str(trained["a"])]
                  + toy_opts(trained["root"], out)
                  + ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(56, 64)",
                     "TEST.AUG.MAX_SIZE", "128", "TUMOR.EVAL.COCO", "True"])
    assert (out / "inference" / "toy_val" / "tumor_metrics_per_image.csv").is_file()
    assert (out / "inference_TTA" / "toy_val" / "tumor_metrics_per_image.csv").is_file()
    # plain and TTA evaluations both ran (Detectron2 logs both under the same task names)
    assert result.stdout.count("copypaste: Task: segm") == 2
    assert result.stdout.count("copypaste: Task: tumor") == 2
    # checkpoint a detects on every image, with and without TTA
    tta = json.loads((out / "inference_TTA" / "toy_val" /
                      "coco_instances_results.json").read_text())
    assert {p["image_id"] for p in tta} == {p["image_id"] for p in _predictions(out)}
