"""Training over two "machines": ``--num-machines 2 --machine-rank 0|1 --dist-url tcp://...``.

Two ``tools/train_net.py`` processes on this host, each one machine of one CPU process (gloo),
meet at the ``--dist-url``; as for ``--num-gpus 2`` (``tests/test_distributed.py``, whose
helpers this reuses), the merged evaluation after training must be the one-process evaluation of
the saved model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from detectron2.engine.launch import _find_free_port
from test_distributed import (  # noqa: F401 - toy_root: the fixture
    CONFIG,
    REPO,
    TRAIN_NET,
    _eval_one_process,
    _opts,
    _predictions,
    _same,
    toy_root,
)

pytestmark = pytest.mark.slow


def test_two_machines_train_and_evaluate_like_one_process(toy_root, tmp_path):  # noqa: F811
    out = tmp_path / "train"
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(
        [sys.executable, str(TRAIN_NET), *CONFIG, "--num-gpus", "1", "--num-machines", "2",
         "--machine-rank", str(rank), "--dist-url", url, *_opts(toy_root, out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for rank in (0, 1)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=420)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]

    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    merged = next(m for m in reversed(metrics) if "tumor/dice" in m)
    assert merged["tumor/images"] == 5  # both machines' shares of the val images

    single = _eval_one_process(toy_root, out / "model_final.pth", tmp_path / "eval")
    flat = {f"{task}/{k}": v for task, values in single.items() for k, v in values.items()}
    keys = [k for k in merged if k.split("/")[0] in ("tumor", "bbox", "segm")]
    assert {"tumor/dice", "bbox/AP", "segm/AP"} <= set(keys)
    different = {k: (merged[k], flat[k]) for k in keys if not _same(merged[k], flat[k])}
    assert not different, different
    dist_preds, one_preds = _predictions(out), _predictions(tmp_path / "eval")
    assert dist_preds and len(dist_preds) == len(one_preds)
    key = lambda p: (p["image_id"], -p["score"])  # noqa: E731
    for a, b in zip(sorted(dist_preds, key=key), sorted(one_preds, key=key), strict=True):
        assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
        assert abs(a["score"] - b["score"]) < 1e-5
