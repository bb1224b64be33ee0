#!/usr/bin/env python
"""Benchmark tumor-det's Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn``.

    python tools/benchmark.py --task {inference,train,accuracy,profile,sizes} [--quick] ...
    python tools/benchmark.py --help

The logic is in :mod:`tumor_det.bench`.
"""

from __future__ import annotations

import sys

from tumor_det.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
