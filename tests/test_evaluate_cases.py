"""Per-case evaluation (tumor_det.evaluation.cases, tools/evaluate.py) on generated volumes whose
answers can be worked out by hand."""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

from tumor_det.cli.evaluate import main
from tumor_det.evaluation.cases import case_metrics, evaluate_folder, hd95_mm, lesion_counts
from tumor_det.evaluation.matching import match_cases

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (30, 30, 30)


def cube(lo: tuple[int, int, int], size: int | tuple[int, int, int],
         shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    size = (size,) * 3 if isinstance(size, int) else size
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = True
    return mask


def save(path: Path, mask: np.ndarray, spacing=(1.0, 1.0, 1.0), label: int = 1) -> Path:
    affine = np.diag([*spacing, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8) * label, affine), str(path))
    return path


# --- metrics -------------------------------------------------------------------------------

def test_shifted_cube_dice_and_volumes():
    gt = cube((5, 5, 5), 10)             # 1000 voxels
    pred = cube((7, 5, 5), 10)           # shifted by 2: 800 shared voxels
    row = case_metrics(pred, gt, (1, 1, 1), voxel_ml=0.001)
    assert row["dice"] == pytest.approx(2 * 800 / 2000)
    assert row["true_volume_ml"] == pytest.approx(1.0)
    assert row["pred_volume_ml"] == pytest.approx(1.0)
    assert row["volume_error_ml"] == pytest.approx(0.0)
    assert (row["true_lesions"], row["found_lesions"], row["false_positives"]) == (1, 1, 0)
    assert row["lesion_sensitivity"] == 1.0 and not row["tumor_free"]

    smaller = cube((5, 5, 5), (8, 10, 10))  # 800 voxels, inside the ground truth
    row = case_metrics(smaller, gt, (1, 1, 1), voxel_ml=0.001)
    assert row["dice"] == pytest.approx(2 * 800 / 1800)
    assert row["volume_error_ml"] == pytest.approx(-0.2)
    assert row["abs_volume_error_ml"] == pytest.approx(0.2)
    assert row["volume_error_pct"] == pytest.approx(-20.0)


@pytest.mark.parametrize("spacing, axis, expected", [
    ((1.0, 1.0, 1.0), 2, 3.0),
    ((0.5, 0.5, 2.0), 2, 6.0),   # 3 slices of 2 mm
    ((0.5, 0.5, 2.0), 0, 1.5),   # 3 columns of 0.5 mm
])
def test_hd95_uses_the_voxel_sizes(spacing, axis, expected):
    # one-voxel-thick plates 3 voxels apart: every surface voxel is 3 voxels from the other plate
    size, lo_gt, lo_pred = [5, 5, 5], [5, 5, 5], [5, 5, 5]
    size[axis], lo_pred[axis] = 1, 8
    gt, pred = cube(tuple(lo_gt), tuple(size)), cube(tuple(lo_pred), tuple(size))
    assert hd95_mm(pred, gt, spacing) == pytest.approx(expected)
    assert math.isnan(hd95_mm(np.zeros(SHAPE, bool), gt, spacing))


def test_anisotropic_voxels_scale_volume_and_hd95():
    gt, pred = cube((5, 5, 5), 10), cube((5, 5, 8), 10)  # shifted 3 slices along z
    iso = case_metrics(pred, gt, (1, 1, 1), voxel_ml=0.001)
    aniso = case_metrics(pred, gt, (1, 1, 2), voxel_ml=0.002)
    assert aniso["true_volume_ml"] == pytest.approx(2.0)
    assert aniso["hd95_mm"] == pytest.approx(2 * iso["hd95_mm"])
    assert aniso["dice"] == iso["dice"] == pytest.approx(0.7)


def test_lesions_found_missed_and_false_positive():
    gt = cube((2, 2, 2), 4) | cube((20, 20, 20), 4)       # two lesions
    pred = cube((3, 3, 3), 2) | cube((10, 20, 2), 3)      # finds the first; one extra blob
    counts = lesion_counts(pred, gt)
    assert (counts.true, counts.predicted, counts.found, counts.false_positives) == (2, 2, 1, 1)
    row = case_metrics(pred, gt, (1, 1, 1), 0.001)
    assert row["lesion_sensitivity"] == 0.5 and row["false_positives"] == 1


def test_lesions_are_26_connected_and_iou_threshold():
    corner = np.zeros(SHAPE, bool)
    corner[5, 5, 5] = corner[6, 6, 6] = True              # touch at a corner only
    assert lesion_counts(corner, corner).true == 1
    gt = cube((5, 5, 5), 4)                               # 64 voxels
    pred = cube((5, 5, 5), 2)                             # 8 voxels inside: IoU 0.125
    assert lesion_counts(pred, gt).found == 1
    strict = lesion_counts(pred, gt, min_iou=0.5)
    assert (strict.found, strict.false_positives) == (0, 1)
    assert lesion_counts(pred, gt, min_iou=0.125).found == 1


def test_tumor_free_cases():
    empty = np.zeros(SHAPE, bool)
    row = case_metrics(empty, empty, (1, 1, 1), 0.001)
    assert row["tumor_free"] and row["dice"] == 1.0 and row["false_positives"] == 0
    assert math.isnan(row["hd95_mm"]) and math.isnan(row["lesion_sensitivity"])
    blob = cube((3, 3, 3), 2)
    row = case_metrics(blob, empty, (1, 1, 1), 0.001)
    assert row["dice"] == 0.0 and row["false_positives"] == 1
    assert row["volume_error_ml"] == pytest.approx(0.008)
    assert math.isnan(row["volume_error_pct"])


# --- matching ------------------------------------------------------------------------------

def test_matching_rule():
    preds = [Path(n) for n in ("a_mask.nii.gz", "b.nii", "BraTS_001_t1ce_mask.nii.gz",
                               "c_flair_mask.nii.gz", "c_t1_mask.nii.gz", "zzz_mask.nii.gz")]
    gts = [Path(n) for n in ("a.nii.gz", "a_seg.nii.gz", "b_seg.nii.gz", "BraTS_001_seg.nii.gz",
                             "BraTS_001_t1ce.nii.gz", "c_seg.nii.gz", "d_seg.nii.gz")]
    m = match_cases(preds, gts)
    assert {c: (p.name, g.name) for c, (p, g) in m.pairs.items()} == {
        "a": ("a_mask.nii.gz", "a_seg.nii.gz"),
        "b": ("b.nii", "b_seg.nii.gz"),
        "BraTS_001": ("BraTS_001_t1ce_mask.nii.gz", "BraTS_001_seg.nii.gz"),
    }
    assert set(m.unmatched_predictions) == {"c_flair_mask.nii.gz", "c_t1_mask.nii.gz",
                                            "zzz_mask.nii.gz"}
    assert "several predictions" in m.unmatched_predictions["c_t1_mask.nii.gz"]
    assert m.unmatched_ground_truth == ["c_seg.nii.gz", "d_seg.nii.gz"]
    assert m.ignored_images == 2                     # a.nii.gz, BraTS_001_t1ce.nii.gz


def test_exact_name_wins_over_prefix():
    m = match_cases([Path("a_mask.nii.gz"), Path("a_t1_mask.nii.gz")], [Path("a.nii.gz")])
    assert m.pairs["a"][0].name == "a_mask.nii.gz"
    assert "matched by a_mask.nii.gz" in m.unmatched_predictions["a_t1_mask.nii.gz"]


# --- folder --------------------------------------------------------------------------------

def make_folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    save(gt / "tumor.nii.gz", cube((5, 5, 5), 10), label=2)            # label map: > 0
    save(pred / "tumor_mask.nii.gz", cube((7, 5, 5), 10))              # Dice 0.8
    save(gt / "two_seg.nii.gz", cube((2, 2, 2), 4) | cube((20, 20, 20), 4), (1, 1, 2))
    save(pred / "two_mask.nii.gz", cube((2, 2, 2), 4) | cube((10, 20, 2), 3), (1, 1, 2))
    save(gt / "clean.nii.gz", np.zeros(SHAPE, bool))
    save(pred / "clean.nii.gz", np.zeros(SHAPE, bool))                 # true negative
    save(gt / "noisy.nii.gz", np.zeros(SHAPE, bool))
    save(pred / "noisy_mask.nii.gz", cube((3, 3, 3), 2))               # false positive
    return pred, gt


def test_evaluate_folder(tmp_path, caplog):
    pred, gt = make_folders(tmp_path)
    save(gt / "moved.nii.gz", cube((5, 5, 5), 4), (1, 1, 1))
    save(pred / "moved_mask.nii.gz", cube((5, 5, 5), 4), (1, 1, 1.5))   # another grid
    save(gt / "small.nii.gz", cube((1, 1, 1), 2, shape=(10, 10, 10)))
    save(pred / "small_mask.nii.gz", cube((1, 1, 1), 2))                # another shape
    save(pred / "orphan_mask.nii.gz", cube((1, 1, 1), 2))
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        summary = evaluate_folder(pred, gt, out, progress=False)

    assert set(summary["skipped"]) == {"moved", "small"}
    assert "affines differ" in summary["skipped"]["moved"]
    assert "shape (30, 30, 30) != ground truth shape (10, 10, 10)" in summary["skipped"]["small"]
    assert "case moved skipped" in caplog.text and "case small skipped" in caplog.text
    assert list(summary["unmatched_predictions"]) == ["orphan_mask.nii.gz"]
    assert (summary["cases"], summary["tumor_cases"], summary["tumor_free_cases"]) == (4, 2, 2)

    m = summary["metrics"]
    assert m["dice"]["n"] == 2 and m["dice_tumor_free"]["mean"] == pytest.approx(0.5)
    two_dice = 2 * 64 / (128 + 64 + 27)
    assert m["dice"]["mean"] == pytest.approx((0.8 + two_dice) / 2)
    assert m["dice"]["median"] == pytest.approx((0.8 + two_dice) / 2)
    assert m["dice"]["std"] == pytest.approx(np.std([0.8, two_dice], ddof=1))
    assert m["dice_all"]["n"] == 4
    assert summary["lesions"] == {"true": 3, "found": 2, "predicted": 4, "false_positives": 2,
                                  "sensitivity": pytest.approx(2 / 3),
                                  "false_positives_per_case": 0.5}
    assert summary["specificity"] == 0.5
    assert summary["lesion_rule"] == "any overlap, 26-connected components"

    rows = {r["case"]: r for r in csv.DictReader((out / "per_case.csv").open())}
    assert set(rows) == {"tumor", "two", "clean", "noisy"}
    assert float(rows["tumor"]["dice"]) == pytest.approx(0.8)
    assert float(rows["two"]["true_volume_ml"]) == pytest.approx(128 * 2 / 1000)   # 2 mm³
    assert rows["two"]["spacing_mm"] == "1x1x2"
    assert rows["clean"]["hd95_mm"] == "" and rows["noisy"]["false_positives"] == "1"
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["cases"] == 4


def test_cli_end_to_end(tmp_path):
    pred, gt = make_folders(tmp_path)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(ROOT / "tools/evaluate.py"), "--pred", str(pred),
                           "--gt", str(gt), "--output", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "per_case.csv").is_file() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["cases"] == 4
    assert "lesions: 2/3 found" in proc.stdout and "specificity: 0.500" in proc.stdout


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    save(tmp_path / "pred" / "x_mask.nii.gz", cube((1, 1, 1), 2))
    save(tmp_path / "gt" / "y.nii.gz", cube((1, 1, 1), 2))
    out = ["--output", str(tmp_path / "out")]
    assert main(["--pred", str(tmp_path / "missing"), "--gt", str(tmp_path / "gt"), *out]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"evaluate.py: error: --pred folder not found: {tmp_path / 'missing'}"]
    assert main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate.py: error: no case matched: 1 ")
    assert not (tmp_path / "out").exists()
