"""Patient-level splits never leak; the command-line tools run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.records import DatasetError
from tumor_det.data.splits import assign_patients, fold_fractions, parse_fractions

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_splits_follow_fractions_without_leaking():
    rng = np.random.default_rng(0)
    per_patient = {f"p{k}": int(rng.integers(1, 30)) for k in range(40)}
    for seed in range(5):
        split = assign_patients(per_patient, parse_fractions("0.7,0.15,0.15"), seed)
        assert set(split) == set(per_patient)  # one split per patient: no leak possible
        total = sum(per_patient.values())
        for name, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            share = sum(n for p, n in per_patient.items() if split[p] == name) / total
            assert abs(share - fraction) < 0.05
    assert assign_patients(per_patient, fold_fractions(5), 3) == \
        assign_patients(per_patient, fold_fractions(5), 3)  # seeded
    assert set(assign_patients(per_patient, fold_fractions(5), 3).values()) == \
        {f"fold{k}" for k in range(5)}


def test_split_errors():
    with pytest.raises(DatasetError, match="sum to 1"):
        parse_fractions("0.5,0.1")
    with pytest.raises(DatasetError, match="only 2 patient"):
        assign_patients({"a": 3, "b": 4}, parse_fractions("0.6,0.2,0.2"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _mask_folder(root: Path) -> None:
    rng = np.random.default_rng(4)
    root.mkdir()
    for patient in range(4):
        for slice_ in range(3):
            stem = f"3.0---pt{patient}-i{slice_}"
            Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8)).save(root / f"{stem}.png")
            mask = np.zeros((32, 32), np.uint8)
            mask[5 + slice_: 15, 8:20] = 255
            Image.fromarray(mask).save(root / f"{stem}_mask.png")


def test_prepare_cli_and_visualize(tmp_path):
    _mask_folder(tmp_path / "src")
    out = tmp_path / "datasets" / "toy"
    done = _cli("tools/prepare_dataset.py", "--format", "masks", "--input",
                str(tmp_path / "src"), "--output", str(out), "--split", "0.5,0.25,0.25",
                "--classes", "type")
    assert done.returncode == 0, done.stderr
    assert "pituitary" in done.stdout and "total" in done.stdout
    files = sorted(p.name for p in (out / "annotations").iterdir())
    assert files == ["test.json", "train.json", "val.json"]
    patients = [{i["patient_id"] for i in json.loads((out / "annotations" / f).read_text())[
        "images"]} for f in files]
    assert sum(len(p) for p in patients) == 4 and not (patients[0] & patients[1] & patients[2])
    assert not any(a & b for k, a in enumerate(patients) for b in patients[k + 1:])
    vis = _cli("tools/visualize_data.py", "--dataset", "toy_train", "--output",
               str(tmp_path / "vis"), "--num", "2", "--datasets-root", str(tmp_path / "datasets"))
    assert vis.returncode == 0, vis.stderr
    assert len(list((tmp_path / "vis").glob("*.png"))) == 2


def test_prepare_cli_fails_clearly_on_missing_input(tmp_path):
    done = _cli("tools/prepare_dataset.py", "--format", "via", "--input",
                str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: input not found: {tmp_path / 'missing'}"
    assert "Traceback" not in done.stderr
