"""tools/benchmark.py smoke tests: both models' rows, ratios and the RESULTS.md section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str) -> tuple[str, str]:
    results = tmp_path / "RESULTS.md"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark.py"), *args, "--results", str(results)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, results.read_text()


def test_inference_quick(tmp_path: Path) -> None:
    out, md = _run(tmp_path, "--task", "inference", "--quick", "--size", "128", "--reps", "2")
    rows = [line.split() for line in out.splitlines()]
    assert any(r[:2] == ["ours", "1"] for r in rows) and any(
        r[:2] == ["torchvision", "1"] for r in rows)
    assert any(r[:2] == ["ours", "2"] for r in rows)
    assert "ratio median (ours/tv)" in out
    assert "1-min load avg" in out
    # peak memory measured in fresh processes, one per model
    peak = [float(r[6]) for r in rows if r[:2] in (["ours", "2"], ["torchvision", "2"])]
    assert len(peak) == 2 and all(p > 100 for p in peak)
    assert "<!-- benchmark:inference:start -->" in md and "| ours" in md
    # a second run replaces the section instead of appending another
    (tmp_path / "RESULTS.md").write_text("# R\n\n" + md + "\n## other\n")
    _, md2 = _run(tmp_path, "--task", "inference", "--quick", "--size", "128", "--reps", "1",
                  "--batches", "1", "--no-memory")
    assert md2.count("<!-- benchmark:inference:start -->") == 1 and md2.endswith("## other\n")


def test_train_quick(tmp_path: Path) -> None:
    out, md = _run(tmp_path, "--task", "train", "--quick", "--size", "128", "--no-memory")
    assert any(line.startswith("ours ") for line in out.splitlines())
    assert any(line.startswith("torchvision ") for line in out.splitlines())
    assert "Ratio (ours/torchvision) of median s/iter" in out
    assert "<!-- benchmark:train:start -->" in md
