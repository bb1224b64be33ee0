#!/usr/bin/env python
"""How far a plain intensity threshold gets on the synthetic data (a floor for Mask R-CNN).

On the default synthetic dataset's val+test patients (the split read from the dataset that
``tumor_det`` registers as ``tumor_synth_*``, generated on first use), per-image mean Dice of
the union of predicted vs. true tumor pixels (Dice = 1 when both are empty) for:

* ``oracle global``: the best single threshold (``pixel > t``, t = 0..255, t = 255 predicts
  nothing) over the whole image, chosen on the evaluated images themselves;
* ``oracle in brain``: the same, with predictions restricted to the true brain mask (perfect
  skull stripping);
* ``Otsu in brain``: Otsu's threshold of each image's brain pixels, applied inside the brain.

Also saves a grid of samples with the true outlines (``--grid``).
"""

from __future__ import annotations

import argparse
import json
import time

from tumor_det.data import SYNTHETIC_NAME, datasets_root
from tumor_det.data.synthetic import DEFAULTS, ensure_synthetic_dataset, iter_synthetic_slices
from tumor_det.evaluation.metrics import mask_dice

import cv2
import numpy as np
from tabulate import tabulate


def _dice_curves(images: list[np.ndarray], gts: list[np.ndarray],
                 regions: list[np.ndarray | None]) -> np.ndarray:
    """Dice of ``image > t`` for t = 0..255, per image: array (N, 256)."""
    curves = []
    for image, gt, region in zip(images, gts, regions, strict=True):
        values = image[region] if region is not None else image.ravel()
        hist = np.bincount(values.ravel(), minlength=256)
        hist_gt = np.bincount(image[gt], minlength=256)
        pred = hist.sum() - np.cumsum(hist)  # pixels > t
        tp = hist_gt.sum() - np.cumsum(hist_gt)
        if region is not None:
            tp = hist_gt.sum() - np.cumsum(np.bincount(image[gt & region], minlength=256))
        denom = pred + gt.sum()
        curves.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0))
    return np.array(curves)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="/tmp/synth_grid.png", help="sample grid PNG ('' = off)")
    args = parser.parse_args()

    # the patient-level split is the dataset writer's: read it from the written dataset
    folder = ensure_synthetic_dataset(datasets_root() / SYNTHETIC_NAME)
    held_out = {image["patient_id"] for split in ("val", "test") for image in json.loads(
        (folder / "annotations" / f"{split}.json").read_text())["images"]}
    start = time.perf_counter()
    n, k = DEFAULTS["num_patients"], DEFAULTS["slices_per_patient"]
    items = [s for s in iter_synthetic_slices(n, k, DEFAULTS["size"], DEFAULTS["seed"])
             if s.patient_id in held_out]
    elapsed = time.perf_counter() - start
    images = [s.image for s in items]
    gts = [np.logical_or.reduce([np.zeros_like(s.brain), *s.masks]) for s in items]
    brains = [s.brain for s in items]
    has_tumor = np.array([g.any() for g in gts])

    rows = []
    for name, regions in (("oracle global", [None] * len(items)), ("oracle in brain", brains)):
        curves = _dice_curves(images, gts, regions)
        t = int(np.argmax(curves.mean(0)))
        d = curves[:, t]
        rows.append([name, t, d.mean(), d[has_tumor].mean(), d[~has_tumor].mean()])
    otsu = []
    for image, gt, brain in zip(images, gts, brains, strict=True):
        t, _ = cv2.threshold(image[brain].reshape(-1, 1), 0, 255,
                             cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        otsu.append(mask_dice(brain & (image > t), gt))
    otsu = np.array(otsu)
    rows.append(["Otsu in brain", "per image", otsu.mean(), otsu[has_tumor].mean(),
                 otsu[~has_tumor].mean()])
    print(f"synthetic val+test: {len(items)} slices ({int((~has_tumor).sum())} tumor-free), "
          f"{len({s.patient_id for s in items})} patients, generated in {elapsed:.1f} s")
    print(tabulate(rows, headers=["method", "threshold", "mean Dice", "tumor slices",
                                  "tumor-free slices"], floatfmt=".3f"))

    if args.grid:
        picks = [s for s in items if s.masks][:6] + [s for s in items if not s.masks][:2]
        tiles = []
        for s in picks:
            tile = cv2.cvtColor(s.image, cv2.COLOR_GRAY2BGR)
            for mask in s.masks:
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(tile, contours, -1, (0, 0, 255), 1)
            cv2.putText(tile, f"{s.patient_id}_{s.index}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        while len(tiles) % 4:
            tiles.append(np.zeros_like(tiles[0]))
        grid = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
        cv2.imwrite(args.grid, grid)
        print(f"sample grid: {args.grid}")


if __name__ == "__main__":
    main()
