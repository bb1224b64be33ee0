"""The HTML report (tumor_det.report, tools/report.py): real runs of the existing tools on
generated data, each report opened in headless chromium (every image loaded, the run's numbers
in the tables, nothing fetched)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tumor_det.cli.report import main
from tumor_det.data.synthetic import synthetic_volume
from tumor_det.report import html, thumbnails
from tumor_det.report.detect import ReportError, detect_kind

import cv2
import nibabel as nib
import numpy as np
import pytest
from toy_data import write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
URL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _run(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run of each kind, made by the tools on tiny generated data (about a minute)."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "datasets"
    write_toy_dataset(root)
    write_toy_dataset(root, name="repcv", counts={"fold0": 4, "fold1": 4})
    common = ["TUMOR.DATASETS_ROOT", str(root), "INPUT.MIN_SIZE_TRAIN", "(64,)",
              "INPUT.MIN_SIZE_TEST", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS",
              "1", "SEED", "1"]
    toy = ["DATASETS.TRAIN", '("toy_train",)', "DATASETS.TEST", '("toy_val",)']
    ev = tmp / "eval"
    _run(str(TOOLS / "train_net.py"), "--config-file", "quick_cpu", *common, *toy,
         "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2",
         "OUTPUT_DIR", str(ev))
    _run(str(TOOLS / "train_net.py"), "--config-file", "quick_cpu", "--eval-only", *common, *toy,
         "TUMOR.EVAL.COCO", "True", "OUTPUT_DIR", str(ev), "MODEL.WEIGHTS",
         str(ev / "model_final.pth"))
    cv = tmp / "cv"
    _run(str(TOOLS / "cross_validate.py"), "--config-file", "quick_cpu", "--dataset", "repcv",
         "--folds", "2", *common, "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
         "TEST.EVAL_PERIOD", "2", "OUTPUT_DIR", str(cv))
    scans = tmp / "scans"
    (scans / "labels").mkdir(parents=True)
    for seed in (1, 2):
        data, labels, affine = synthetic_volume(seed=seed, size=64, num_slices=10)
        nib.save(nib.Nifti1Image(data, affine), str(scans / f"scan{seed}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, affine), str(scans / "labels" / f"scan{seed}.nii.gz"))
    shutil.copy(root / "toy" / "images" / "val0.png", scans / "val0.png")
    sp = tmp / "splash"
    _run(str(TOOLS / "splash.py"), "--allow-untrained", "--input", str(scans / "scan1.nii.gz"),
         str(scans / "scan2.nii.gz"), str(scans / "val0.png"), "--output", str(sp),
         "--confidence-threshold", "0", "--single-slice-min-score", "0", "MODEL.WEIGHTS", "",
         "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128")
    cases = tmp / "cases"
    _run(str(TOOLS / "evaluate.py"), "--pred", str(sp), "--gt", str(scans / "labels"),
         "--output", str(cases))
    return {"evaluation": ev, "cross_validation": cv, "splash": sp, "cases": cases}


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def expected_numbers(kind: str, run: Path) -> list[str]:
    """Numbers the run wrote in its own files, as the page shows them."""
    if kind == "evaluation":
        rows = _csv(run / "inference" / "toy_val" / "tumor_metrics_per_image.csv")
        return [r["file_name"] for r in rows] + [html.fmt(float(r["dice"])) for r in rows]
    if kind == "cross_validation":
        s = json.loads((run / "cv_summary.json").read_text())["variants"]["inference"]
        return [html.fmt(s["pooled"]["dice_all"]), html.fmt(s["pooled"]["image_specificity"]),
                *(html.fmt(f["dice_all"]) for f in s["per_fold"]),
                f"pooled at {s['operating_point']['score_threshold']:.2f}"]
    if kind == "cases":
        rows = _csv(run / "per_case.csv")
        return [r["case"] for r in rows] + [html.fmt(float(r["dice"])) for r in rows]
    rows = _csv(run / "results.csv")
    lesions = _csv(run / "scan1_lesions.csv")
    return ([html.fmt(float(r["volume_ml"])) for r in rows if r["volume_ml"]]
            + [html.fmt(float(r["volume_ml"]), 4) for r in lesions[:3]]
            + ["scan1_mask.nii.gz", "scan1_instances.nii.gz"])


def chromium(*args: str) -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    res = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                          '--host-resolver-rules=MAP * ~NOTFOUND', "--hide-scrollbars",
                          *args], capture_output=True, text=True, timeout=120)
    return res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evaluation", "cross_validation", "cases", "splash"])
def test_report_in_a_browser(runs, kind, tmp_path):
    run = runs[kind]
    assert detect_kind(run) == kind
    assert main([str(run)]) == 0
    page = run / "report.html"
    text = page.read_text()
    assert not URL.search(text), "the page links to a URL"
    assert "<img" in text and 'src="data:image/png;base64,' in text
    shot = tmp_path / f"{kind}.png"
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert shot.is_file() and cv2.imread(str(shot)) is not None
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load script did not run"
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) > 0, loaded.group(0)
    for number in expected_numbers(kind, run):
        assert number in dom, f"{number} not in the {kind} report"


def test_missing_or_unknown_folder_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("report.py: error: ") and "no such" in err[0]
    (tmp_path / "x.txt").write_text("x")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]
    with pytest.raises(ReportError):
        detect_kind(tmp_path)


def test_table_sorts_numbers_and_escapes_text():
    out = html.table(["name", "dice"], [["<b>", 0.5], ["a", float("nan")]])
    assert "&lt;b&gt;" in out and 'data-v="0.5"' in out and ">-<" in out
    with pytest.raises(ValueError):
        html.image("https://example.org/x.png", "x")


def test_thumbnail_outlines_in_two_colours():
    gt = np.zeros((40, 40), bool)
    gt[5:20, 5:20] = True
    pred = np.zeros((40, 40), bool)
    pred[22:35, 22:35] = True
    img = thumbnails.outlined(np.full((40, 40), 60, np.uint8), gt, pred, size=80)
    assert img.shape == (80, 80, 3)
    colours = {tuple(int(c) for c in px) for px in img.reshape(-1, 3)}
    assert thumbnails.GT_COLOUR in colours and thumbnails.PRED_COLOUR in colours
    assert thumbnails.thumbnail_uri(None, gt, pred).startswith("data:image/png;base64,")
    stack = np.zeros((3, 8, 8), bool)
    stack[2, :4, :4] = True
    assert thumbnails.key_slice(stack, None) == 2
