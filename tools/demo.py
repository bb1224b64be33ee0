#!/usr/bin/env python
"""The main job (``make demo``): build the quick Mask R-CNN and run it on a generated slice."""

from __future__ import annotations

import tumor_det  # noqa: F401
from tumor_det.config import DEFAULT_CONFIG, get_tumor_cfg

import numpy as np
import torch
from detectron2.engine import DefaultPredictor


def main() -> None:
    cfg = get_tumor_cfg(DEFAULT_CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    predictor = DefaultPredictor(cfg)
    image = np.zeros((256, 256, 3), np.uint8)
    outputs = predictor(image)
    print(f"{DEFAULT_CONFIG.name}: Mask R-CNN ran on a 256x256 slice: "
          f"{len(outputs['instances'])} instances (untrained weights)")


if __name__ == "__main__":
    main()
