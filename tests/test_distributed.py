"""Two CPU processes (gloo) through the user's entry points: ``tools/train_net.py --num-gpus 2``
and ``torchrun --nproc_per_node 2 tools/train_net.py --dist-backend gloo``.

Each trains a few iterations on the toy dataset and ends with Detectron2's evaluation, every
process scoring its share of the val images (5 images: 3 + 2) and rank 0 merging them. That
merged evaluation must be the evaluation of the saved model: ``--eval-only MODEL.WEIGHTS
model_final.pth`` in one process gives the same predictions, tumor metrics and COCO AP. (Before
``tumor_det.engine.distributed.EvalSyncDDP``,
rank 1 scored its images with its own BatchNorm running
statistics, not the checkpoint's.) Every process runs one thread, so all of them compute alike.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from toy_data import toy_opts, train_net_in_process, write_toy_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIG = ["--config-file", "configs/quick_cpu.yaml"]
LAUNCHERS = {
    "num-gpus": [sys.executable, str(TRAIN_NET), *CONFIG, "--num-gpus", "2"],
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", "2", str(TRAIN_NET), *CONFIG, "--dist-backend", "gloo"],
}


def _opts(root: Path, output: Path) -> list[str]:
    # toy_opts, ending with an evaluation (Detectron2 evaluates after the last iteration) with
    # COCO AP and a score threshold low enough for the tumor metrics to see detections.
    return toy_opts(root, output, max_iter=4) + [
        "SOLVER.CHECKPOINT_PERIOD", "100", "TUMOR.EVAL.COCO", "True",
        "TUMOR.EVAL.SCORE_THRESHOLD", "0.05"]


def _run(cmd: list[str], timeout: int = 420) -> str:
    """Run ``cmd`` in its own process group (killed whole on a timeout: no stray workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


def _eval_one_process(root: Path, weights: Path, output: Path) -> dict:
    """``tools/train_net.py --eval-only`` in this process, with one thread like the workers."""
    return train_net_in_process(
        [*CONFIG, "--eval-only", *_opts(root, output), "MODEL.WEIGHTS", str(weights)])


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _predictions(output: Path) -> list[dict]:
    return json.loads((output / "inference" / "toy_val" / "coco_instances_results.json")
                      .read_text())


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist") / "datasets"
    write_toy_dataset(root, counts={"train": 8, "val": 5})
    return root


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_evaluate_like_one_process(toy_root, tmp_path, launcher):
    out = tmp_path / "train"
    _run(LAUNCHERS[launcher] + _opts(toy_root, out))

    # two processes, one per rank, each with its own log
    assert "World size: 2" in (out / "log.txt").read_text()
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 3
    merged = next(m for m in reversed(metrics) if "tumor/dice" in m)
    assert merged["tumor/images"] == 5  # both shards merged

    single = _eval_one_process(toy_root, out / "model_final.pth", tmp_path / "eval")
    flat = {f"{task}/{k}": v for task, values in single.items() for k, v in values.items()}
    keys = [k for k in merged if k.split("/")[0] in ("tumor", "bbox", "segm")]
    assert {"tumor/dice", "tumor/sensitivity", "bbox/AP", "segm/AP"} <= set(keys)
    different = {k: (merged[k], flat[k]) for k in keys if not _same(merged[k], flat[k])}
    assert not different, different

    dist_preds, one_preds = _predictions(out), _predictions(tmp_path / "eval")
    assert dist_preds, "no predictions: the comparison would be empty"
    assert len(dist_preds) == len(one_preds)
    assert Counter(p["image_id"] for p in dist_preds) == Counter(
        p["image_id"] for p in one_preds)
    assert {p["image_id"] for p in dist_preds} == {1, 2, 3, 4, 5}  # rank 1's images too
    key = lambda p: (p["image_id"], -p["score"])  # noqa: E731
    for a, b in zip(sorted(dist_preds, key=key), sorted(one_preds, key=key), strict=True):
        assert a["category_id"] == b["category_id"]
        assert abs(a["score"] - b["score"]) < 1e-5, (a["image_id"], a["score"], b["score"])
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"], strict=True)) < 1e-3
