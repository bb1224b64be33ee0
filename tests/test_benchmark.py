"""tools/benchmark.py smoke tests: both models' rows, ratios and the RESULTS.md section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tumor_det.bench.common import write_section

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
    out, md = _run(tmp_path, "--task", "inference", "--quick", "--size", "128", "--reps", "1",
                   "--warmup", "0")
    rows = [line.split() for line in out.splitlines()]
    for model in ("ours", "torchvision"):
        assert any(r[:2] == [model, "1"] for r in rows) and any(r[:2] == [model, "2"]
                                                                for r in rows)
    assert "ratio median (ours/tv)" in out and "1-min load avg" in out
    # peak memory, measured in a fresh process per model
    peak = [float(r[6]) for r in rows if r[:2] in (["ours", "2"], ["torchvision", "2"])]
    assert len(peak) == 2 and all(p > 100 for p in peak)
    assert "<!-- benchmark:inference:start -->" in md and "| ours" in md


def test_train_quick(tmp_path: Path) -> None:
    out, md = _run(tmp_path, "--task", "train", "--quick", "--size", "128", "--reps", "1",
                   "--warmup", "0", "--no-memory")
    lines = out.splitlines()
    assert any(line.startswith("ours ") for line in lines)
    assert any(line.startswith("torchvision ") for line in lines)
    assert "Ratio (ours/torchvision) of median s/iter" in out
    assert "<!-- benchmark:train:start -->" in md


def test_write_section_replaces_own_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nother text\n")
    section = "<!-- benchmark:x:start -->\n## one\n<!-- benchmark:x:end -->"
    write_section(path, "x", section)
    write_section(path, "y", section.replace(":x:", ":y:"))
    write_section(path, "x", section.replace("one", "two"))
    text = path.read_text()
    assert text.startswith("# Results\n\nother text\n")
    assert text.count("benchmark:x:start") == 1 and "## two" in text and "## one" in text
    assert text.index("## two") < text.index(":y:start")
