#!/usr/bin/env python
"""Convert annotated MRI (VIA, COCO, mask pairs, Figshare .mat, NIfTI, YOLO) into a COCO dataset.

    python tools/prepare_dataset.py --format via --input ../shared/datasets/brain_tumor_mri/train \\
        --output datasets/brain_tumor --split 0.6,0.2,0.2 --seed 0

The command line is :mod:`tumor_det.cli.prepare_dataset` (also ``tumor-det-prepare``). An
unusable input exits with status 2 and one ``prepare_dataset.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import sys

from tumor_det.cli.prepare_dataset import main

if __name__ == "__main__":
    sys.exit(main())
