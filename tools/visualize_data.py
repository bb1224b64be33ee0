#!/usr/bin/env python
"""Draw a prepared dataset's ground truth (masks, boxes, classes) over its images as PNGs.

    python tools/visualize_data.py --dataset brain_tumor_train --output output/vis --num 8

The command line is :mod:`tumor_det.cli.visualize_data` (also ``tumor-det-visualize``).
"""

from __future__ import annotations

import sys

from tumor_det.cli.visualize_data import main

if __name__ == "__main__":
    sys.exit(main())
