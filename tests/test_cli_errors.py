"""Every tool's user errors end with exit status 2 and one ``<tool>.py: error: ...`` line.

Real processes (the exit status and stderr a user sees) at least once per tool; more cases of
the tools that leave logging alone run the tool's ``__main__`` in this process (``runpy``: the
same code, without a process start and imports each). Every case fails before a model is built.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from toy_data import write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
QUICK = ["--config-file", str(REPO / "configs" / "quick_cpu.yaml")]


def assert_usage_error(result: subprocess.CompletedProcess, tool: str, needle: str) -> None:
    """Status 2; stderr ends with the one ``<tool>: error:`` line (naming ``needle``)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if ": error: " in line] == lines[-1:], result.stderr
    assert lines[-1].startswith(f"{tool}: error: ") and needle in lines[-1], lines[-1]


def run_process(tool: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / tool), *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def run_here(monkeypatch, capsys):
    """Run ``tools/<tool>`` as ``__main__`` in this process; return its status and output."""

    def run(tool: str, *args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", [str(TOOLS / tool), *args])
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(TOOLS / tool), run_name="__main__")
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(sys.argv, exit_.value.code, out, err)

    return run


# ---- train_net.py: config, weights and datasets are checked before any worker starts ----

def test_train_net_unknown_key_stops_before_the_workers_start(tmp_path):
    result = run_process("train_net.py", *QUICK, "--num-gpus", "2",
                         "OUTPUT_DIR", str(tmp_path), "FOO.BAR", "1")
    assert_usage_error(result, "train_net.py", "Non-existent key: FOO.BAR")
    assert not any(tmp_path.iterdir())  # no worker, no log


@pytest.mark.parametrize("args, needle", [
    (["SOLVER.MAX_ITER", "abc"], "SOLVER.MAX_ITER"),                     # value type
    (["SOLVER.MAX_ITER"], "KEY VALUE"),                                  # odd override
    (["--config-file", "nope.yaml"], "config file not found: nope.yaml"),
    (["MODEL.WEIGHTS", "{tmp}/nope.pth"], "nope.pth"),
    (["--weights", "{tmp}/nope.pth"], "nope.pth"),
    (["--weights", "last"], "no checkpoint"),
    (["DATASETS.TRAIN", "('nope_train',)"], "'nope_train'"),
    (["DATASETS.TEST", "('nope_test',)"], "'nope_test'"),
])
def test_train_net_user_errors(run_here, tmp_path, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    flags, opts = (args, []) if args[0].startswith("--") else ([], args)
    result = run_here("train_net.py", *QUICK, "--num-gpus", "2", *flags,
                      "OUTPUT_DIR", str(tmp_path / "out"), *opts)
    assert_usage_error(result, "train_net.py", needle)
    assert not (tmp_path / "out").exists()


# ---- demo.py: the config is read after the (here tiny, pre-made) synthetic dataset ----

@pytest.fixture
def toy_synth(tmp_path, monkeypatch) -> dict:
    """A tiny stand-in for the synthetic dataset, so that the demo's first step is instant."""
    root = tmp_path / "datasets"
    write_toy_dataset(root, "tumor_synth", counts={"train": 2, "val": 1, "test": 1})
    monkeypatch.setenv("TUMOR_DET_DATASETS", str(root))
    return {"TUMOR_DET_DATASETS": str(root)}


@pytest.mark.parametrize("args, needle", [
    (["FOO.BAR", "1"], "Non-existent key: FOO.BAR"),
    (["--config-file", "nope.yaml"], "config file not found: nope.yaml"),
    (["MODEL.WEIGHTS", "{tmp}/nope.pth"], "nope.pth"),
    (["DATASETS.TRAIN", "('nope_train',)"], "'nope_train'"),
])
def test_demo_user_errors(toy_synth, tmp_path, args, needle):
    # processes: the demo sets up logging, which would outlive an in-process run
    args = [a.format(tmp=tmp_path) for a in args]
    result = run_process("demo.py", "--output", str(tmp_path / "demo"), *args, env=toy_synth)
    assert_usage_error(result, "demo.py", needle)
    assert not (tmp_path / "demo" / "model" / "last_checkpoint").exists()


# ---- the data tools ----

def test_visualize_data_unregistered_dataset(tmp_path):
    result = run_process("visualize_data.py", "--dataset", "nope_train", "--output",
                         str(tmp_path / "vis"), "--datasets-root", str(tmp_path))
    assert_usage_error(result, "visualize_data.py", "'nope_train' is not registered")


def test_visualize_data_missing_image_and_bad_num(run_here, tmp_path):
    folder = write_toy_dataset(tmp_path, "toy", counts={"train": 1})
    (folder / "images" / "train0.png").unlink()
    result = run_here("visualize_data.py", "--dataset", "toy_train", "--output",
                      str(tmp_path / "vis"), "--datasets-root", str(tmp_path))
    assert_usage_error(result, "visualize_data.py", "train0.png")
    result = run_here("visualize_data.py", "--dataset", "toy_train", "--output",
                      str(tmp_path / "vis"), "--num", "0")
    assert_usage_error(result, "visualize_data.py", "--num must be >= 1")


def test_prepare_dataset_missing_input(tmp_path):
    result = run_process("prepare_dataset.py", "--format", "via", "--input",
                         str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert_usage_error(result, "prepare_dataset.py", f"input not found: {tmp_path / 'missing'}")


def test_make_synthetic_output_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_process("make_synthetic.py", "--output", str(tmp_path / "file"),
                         "--patients", "1", "--slices-per-patient", "1", "--size", "32")
    assert_usage_error(result, "make_synthetic.py", str(tmp_path / "file"))


def test_make_synthetic_bad_sizes(run_here, tmp_path):
    result = run_here("make_synthetic.py", "--output", str(tmp_path / "out"), "--size", "8")
    assert_usage_error(result, "make_synthetic.py", "--size >= 32")
    assert not (tmp_path / "out").exists()
