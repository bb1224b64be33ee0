"""Near-duplicate slices share a patient group (never one in training and its copy held out);
one-class folds still spread the tumor types."""

from __future__ import annotations

import json
from collections import Counter

import tumor_det  # noqa: F401
from tumor_det.cli.prepare_dataset import main as prepare_main
from tumor_det.data.duplicates import duplicate_groups

import cv2
import numpy as np


def _slice(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), np.uint8)
    cv2.circle(image, (size // 2, size // 2), size // 3, int(rng.integers(80, 160)), -1)
    for _ in range(6):  # structure that differs between slices
        x, y = (int(v) for v in rng.integers(20, size - 20, 2))
        cv2.circle(image, (x, y), int(rng.integers(4, 12)), int(rng.integers(0, 255)), -1)
    return image


def test_groups_join_reencoded_copies_only():
    a, b = _slice(0), _slice(1)
    ok, jpg = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 70])
    copy = cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
    thumbs = [cv2.resize(x.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
              for x in (a, b, copy, cv2.resize(a, (150, 150)))]  # also a rescaled copy
    assert duplicate_groups(thumbs) == [0, 1, 0, 0]
    assert duplicate_groups([thumbs[0], None, thumbs[2]]) == [0, 1, 0]


def test_group_duplicates_keeps_copies_in_one_fold(tmp_path):
    src = tmp_path / "free"
    src.mkdir()
    for k in range(8):
        cv2.imwrite(str(src / f"s{k}.png"), _slice(k))
    for k in range(3):  # re-encoded copies of s0, s1, s2
        cv2.imwrite(str(src / f"copy{k}.jpg"), _slice(k), [cv2.IMWRITE_JPEG_QUALITY, 80])
    out = tmp_path / "ds"
    assert prepare_main(["--format", "images", "--input", str(src), "--output", str(out),
                         "--folds", "2", "--group-duplicates", "--quiet"]) == 0
    fold_of = {}
    for k in range(2):
        coco = json.loads((out / "annotations" / f"fold{k}.json").read_text())
        fold_of.update({i["file_name"]: k for i in coco["images"]})
    assert len(fold_of) == 11
    for k in range(3):
        assert fold_of[f"copy{k}.jpg"] == fold_of[f"s{k}.png"]


def test_one_class_folds_spread_the_tumor_types(tmp_path):
    """8 pituitary and 2 meningioma slices, one class, 2 folds: each fold gets a meningioma
    whatever the seed (balancing image counts alone puts both in one fold about half the
    time)."""
    src = tmp_path / "yolo"
    for folder, count in (("0", 8), ("1", 2)):  # 0 pituitary, 1 meningioma
        (src / folder).mkdir(parents=True)
        for n in range(count):
            stem = src / folder / f"{int(folder) * 100 + n}"
            cv2.imwrite(f"{stem}.jpg", _slice(int(folder) * 100 + n))
            (stem.with_suffix(".txt")).write_text(f"{folder} 0.5 0.5 0.2 0.2\n")
    for seed in range(5):
        out = tmp_path / f"ds{seed}"
        assert prepare_main(["--format", "yolo", "--input", str(src), "--output", str(out),
                             "--classes", "tumor", "--class-names", "pituitary,meningioma",
                             "--folds", "2", "--seed", str(seed), "--quiet"]) == 0
        for k in range(2):
            coco = json.loads((out / "annotations" / f"fold{k}.json").read_text())
            assert {c["name"] for c in coco["categories"]} == {"tumor"}
            types = Counter(i["tumor_type"] for i in coco["images"])
            assert types == {"pituitary": 4, "meningioma": 1}, (seed, k, types)
