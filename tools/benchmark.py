#!/usr/bin/env python
"""Benchmark tumor-det's Mask R-CNN against torchvision's ``maskrcnn_resnet50_fpn``.

    python tools/benchmark.py --task {inference,train,accuracy,profile,sizes} [--quick] ...
    python tools/benchmark.py --help

The logic is in the repository's ``benchmarks`` package (outside ``tumor_det``: not installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

# A script's own folder (tools/) is on sys.path, not the repository root that holds benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
