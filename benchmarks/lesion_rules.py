#!/usr/bin/env python
"""Benchmark: the 3D lesion rules (``--min-lesion-ml``, ``--single-slice-min-score``) on
synthetic volumes.

    python benchmarks/lesion_rules.py --weights output/demo/model/model_final.pth --volumes 24

Each synthetic scan (:func:`tumor_det.data.synthetic.synthetic_volume`, seeds 0..N-1, one tumor
each) is predicted once with :meth:`~tumor_det.inference.predictor.TumorPredictor.predict_volume`
and no
rule; every setting of :class:`~tumor_det.inference.lesions.LesionRules` is then applied to
those slice
detections with :func:`~tumor_det.inference.results.volume_prediction` (what
``predict_volume`` does with
``rules``). Per setting it prints the mean 3D Dice (MONAI, :func:`tumor_det.evaluation.cases.
dice_score`), the tumors found and the false-positive lesions (26-connected components,
:func:`tumor_det.evaluation.cases.lesion_counts`) and the volumes with a false positive.
This is measurement, not product: nothing here is imported by ``tumor_det``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tumor_det.config.config import DEFAULT_CONFIG, get_tumor_cfg
from tumor_det.data.synthetic import synthetic_volume
from tumor_det.evaluation.cases import dice_score, lesion_counts
from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import TumorPredictor, volume_prediction
from tumor_det.io.geometry import Volume
from tumor_det.utils.atomic import write_text

import numpy as np
from tabulate import tabulate

#: The settings measured: name -> rules (no rule first; the product default is single-slice 0.7).
SETTINGS = {
    "none": LesionRules(0.0, 0.0),
    **{f"single-slice {s}": LesionRules(0.0, s) for s in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)},
    **{f"min {v} mL": LesionRules(v, 0.0) for v in (0.05, 0.1, 0.2)},
    "min 0.1 mL + single-slice 0.7": LesionRules(0.1, 0.7),
}
HEADERS = ["rules", "mean 3D Dice", "tumors found", "false-positive lesions",
           "volumes with a false positive"]


def measure_volume(predictor: TumorPredictor, volume: Volume, truth: np.ndarray,
                   batch_size: int) -> dict[str, dict]:
    """One inference, then each setting's Dice, tumors (true, found) and false positives."""
    raw = predictor.predict_volume(volume, batch_size=batch_size, rules=SETTINGS["none"])
    out = {}
    for name, rules in SETTINGS.items():
        mask = volume_prediction(raw.slices, volume, "axial", rules).mask
        counts = lesion_counts(mask, truth)
        out[name] = {"dice": dice_score(mask, truth), "true": counts.true,
                     "found": counts.found, "fp": counts.false_positives}
    return out


def summarize(per_volume: list[dict[str, dict]]) -> list[list]:
    """The table rows: one per setting, over all volumes."""
    rows = []
    for name in SETTINGS:
        cases = [v[name] for v in per_volume]
        rows.append([name, float(np.mean([c["dice"] for c in cases])),
                     f"{sum(c['found'] for c in cases)}/{sum(c['true'] for c in cases)}",
                     sum(c["fp"] for c in cases),
                     f"{sum(c['fp'] > 0 for c in cases)}/{len(cases)}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="model checkpoint")
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--volumes", type=int, default=24, help="synthetic volumes (seeds 0..N-1)")
    parser.add_argument("--size", type=int, default=128, help="synthetic volume side (px)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    if not Path(args.weights).is_file():
        parser.exit(2, f"{parser.prog}: error: no weights at {args.weights}\n")
    cfg = get_tumor_cfg(args.config_file, ["MODEL.WEIGHTS", args.weights, *args.opts])
    predictor = TumorPredictor(cfg)
    print(f"weights {args.weights}, score threshold {predictor.score_threshold}, "
          f"{args.volumes} volumes of {args.size} px")
    start = time.time()
    per_volume = []
    for seed in range(args.volumes):
        data, labels, affine = synthetic_volume(seed=seed, size=args.size)
        per_volume.append(measure_volume(predictor, Volume(data, affine), labels > 0,
                                         args.batch_size))
        print(f"seed {seed}: no rule {per_volume[-1]['none']['fp']} false positives", flush=True)
    rows = summarize(per_volume)
    print(f"{time.time() - start:.0f} s")
    print(tabulate(rows, headers=HEADERS, tablefmt="github", floatfmt=".3f"))
    if args.json:
        write_text(args.json, json.dumps([dict(zip(HEADERS, r, strict=True)) for r in rows],
                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
