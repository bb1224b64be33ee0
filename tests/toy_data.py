"""A tiny generated COCO dataset (bright discs on noise) for fast trainer tests."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import cv2
import numpy as np
import torch

TRAIN_NET = Path(__file__).resolve().parents[1] / "tools" / "train_net.py"


def write_toy_dataset(root: Path, name: str = "toy", size: int = 64,
                      counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write ``root/name/{images,annotations}`` with one disc per image, every 4th image empty."""
    counts = counts or {"train": 12, "val": 4}
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        images, anns = [], []
        for i in range(count):
            image = rng.integers(0, 60, (size, size), dtype=np.uint8)
            file_name = f"{split}{i}.png"
            images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size,
                           "patient_id": f"{split}{i}", "pixel_spacing": [0.5, 0.5]})
            if i % 4 != 3:
                r = int(rng.integers(size // 12, size // 5))
                cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
                cv2.circle(image, (cx, cy), r, 220, -1)
                t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).ravel()
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                             "iscrowd": 0, "area": float(np.pi * r * r),
                             "bbox": [cx - r, cy - r, 2 * r, 2 * r],
                             "segmentation": [poly.tolist()]})
            cv2.imwrite(str(folder / "images" / file_name), image)
        coco = {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "tumor"}]}
        (folder / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return folder


def toy_opts(root: Path, output_dir: Path, max_iter: int = 4, name: str = "toy") -> list[str]:
    """Config overrides that train the quick config on the toy dataset in seconds."""
    return [
        "TUMOR.DATASETS_ROOT", str(root),
        "DATASETS.TRAIN", f'("{name}_train",)', "DATASETS.TEST", f'("{name}_val",)',
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "SOLVER.WARMUP_ITERS", "1",
        "TUMOR.EVAL.COCO", "False", "OUTPUT_DIR", str(output_dir), "SEED", "1",
    ]


def train_net_in_process(argv: list[str]):
    """``tools/train_net.py``'s ``main`` on ``argv`` in this process, with one thread like the
    workers of a multi-process run (more threads than free cores slow CPU training a lot)."""
    tool = runpy.run_path(str(TRAIN_NET))
    args = tool["build_parser"]().parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tool["main"](args)
    finally:
        torch.set_num_threads(threads)
