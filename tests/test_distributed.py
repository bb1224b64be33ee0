"""Two CPU processes (gloo) train with DistributedDataParallel and their weights stay equal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from toy_data import toy_opts, write_toy_dataset

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.config import get_config_file, get_tumor_cfg
from tumor_det.data import register_all
from tumor_det.distributed import launch
from tumor_det.engine import TumorTrainer

import torch
from detectron2.utils import comm


def main(opts, out):
    cfg = get_tumor_cfg(get_config_file("quick_cpu.yaml"), opts)
    register_all(cfg.TUMOR.DATASETS_ROOT)
    trainer = TumorTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    # Parameters: DistributedDataParallel keeps them identical. BatchNorm running statistics
    # are buffers that Detectron2 does not broadcast (broadcast_buffers=False): per replica.
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save({"state": state, "world": comm.get_world_size(), "rank": comm.get_rank(),
                "local_rank": comm.get_local_rank()}, Path(out) / f"rank{comm.get_rank()}.pt")


if __name__ == "__main__":
    out = sys.argv[1]
    launch(main, 2, backend="gloo", args=(sys.argv[2:], out))
"""


def test_two_cpu_processes_keep_identical_weights(tmp_path):
    root = tmp_path / "datasets"
    write_toy_dataset(root)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    out = tmp_path / "out"
    out.mkdir()
    opts = toy_opts(root, out / "train", max_iter=3)
    result = subprocess.run([sys.executable, str(script), str(out), *opts], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    r0 = torch.load(out / "rank0.pt")
    r1 = torch.load(out / "rank1.pt")
    assert (r0["world"], r1["world"]) == (2, 2)
    assert {r0["local_rank"], r1["local_rank"]} == {0, 1}
    # The weights moved (training happened) and both replicas hold the same values.
    init = torch.load(out / "train" / "model_0000001.pth", weights_only=False)["model"]
    changed = [k for k in r0["state"] if not torch.equal(r0["state"][k], init[k])]
    assert changed, "no parameter changed after step 2"
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
