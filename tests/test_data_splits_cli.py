"""Patient-level splits never leak; the command-line tools run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.data.prepare import PrepareOptions, prepare
from tumor_det.data.records import DatasetError
from tumor_det.data.splits import (
    assign_patients,
    fold_fractions,
    parse_fractions,
    patient_folds,
)

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


def test_folds_keep_patients_together_and_spread_strata():
    rng = np.random.default_rng(1)
    types = ("meningioma", "glioma", "pituitary")
    patient_type = {f"p{k}": types[k % 3] for k in range(30)}
    images = [(p, t) for p, t in patient_type.items() for _ in range(int(rng.integers(1, 12)))]
    patients, strata = [p for p, _ in images], [t for _, t in images]
    for seed in range(3):
        folds = patient_folds(patients, strata, 5, seed)
        assert set(folds) == set(patient_type)  # one fold per patient: no leak possible
        assert folds == patient_folds(patients, strata, 5, seed)  # seeded
        for tumor_type in types:  # 10 patients of each type reach every fold
            assert {folds[p] for p, t in patient_type.items() if t == tumor_type} == \
                {f"fold{k}" for k in range(5)}
        sizes = [sum(folds[p] == f"fold{k}" for p in patients) for k in range(5)]
        assert max(sizes) - min(sizes) <= 12  # about len(images) / 5 each
    unstratified = patient_folds(patients, None, 4, 0)
    assert set(unstratified.values()) == {f"fold{k}" for k in range(4)}
    with pytest.raises(DatasetError, match="at least 40 patients"):
        patient_folds(patients, strata, 40)


def test_split_strata_spread_over_splits():
    per_patient = {f"p{k}": 5 for k in range(6)}
    strata = {f"p{k}": "pituitary" if k < 3 else "glioma" for k in range(6)}
    for seed in range(5):
        split = assign_patients(per_patient, parse_fractions("0.5,0.5"), seed, strata)
        for tumor_type in ("pituitary", "glioma"):
            assert {split[p] for p, t in strata.items() if t == tumor_type} == {"train", "val"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_slices_folds_by_tumor_type(shared_mri, tmp_path, seed):
    """--folds 3 --classes type on the 46 real slices (7 patients: 3 meningioma, 2 glioma,
    2 pituitary): no patient in two folds, every fold holds more than one tumor type."""
    options = PrepareOptions("via", shared_mri / "train", tmp_path / "types", classes="type",
                             folds=3, seed=seed)
    splits = prepare(options).splits
    assert list(splits) == ["fold0", "fold1", "fold2"]
    patients = [{i["patient_id"] for i in c["images"]} for c in splits.values()]
    assert sum(len(p) for p in patients) == 7  # disjoint
    pituitary = set()
    for coco in splits.values():
        assert len({i["tumor_type"] for i in coco["images"]}) > 1
        pituitary.add(frozenset(i["patient_id"] for i in coco["images"]
                                if i["tumor_type"] == "pituitary"))
    assert len(pituitary - {frozenset()}) == 2  # the two pituitary patients are apart
    again = prepare(PrepareOptions("via", shared_mri / "train", tmp_path / "again",
                                   classes="type", folds=3, seed=seed)).splits
    assert {k: [i["file_name"] for i in c["images"]] for k, c in splits.items()} == \
        {k: [i["file_name"] for i in c["images"]] for k, c in again.items()}


def test_real_slices_split_keeps_every_type_in_train(shared_mri, tmp_path):
    splits = prepare(PrepareOptions("via", shared_mri / "train", tmp_path / "split",
                                    classes="type", split="0.6,0.2,0.2", seed=0)).splits
    assert {i["tumor_type"] for i in splits["train"]["images"]} == \
        {"meningioma", "glioma", "pituitary"}
    patients = [{i["patient_id"] for i in c["images"]} for c in splits.values()]
    assert sum(len(p) for p in patients) == 7


def test_split_errors():
    with pytest.raises(DatasetError, match="sum to 1"):
        parse_fractions("0.5,0.1")
    with pytest.raises(DatasetError, match="only 2 patient"):
        assign_patients({"a": 3, "b": 4}, parse_fractions("0.6,0.2,0.2"))
    with pytest.raises(DatasetError, match="not both"):
        prepare(PrepareOptions("via", Path("x"), Path("y"), split="1", folds=2))
    with pytest.raises(DatasetError, match="at least 2 folds"):
        prepare(PrepareOptions("via", Path("x"), Path("y"), folds=1))


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
    expected = f"prepare_dataset.py: error: input not found: {tmp_path / 'missing'}"
    assert done.stderr.strip() == expected
    assert "Traceback" not in done.stderr
