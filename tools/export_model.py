#!/usr/bin/env python
"""Export the tumor Mask R-CNN to TorchScript and ONNX (Detectron2's tracing export).

    python tools/export_model.py --weights output/demo/model/model_final.pth --output output/export
    python tools/splash.py --weights output/export/model.onnx --input scan.nii.gz
    python tools/export_model.py --help

The command line is :mod:`tumor_det.cli.export_model` (also ``tumor-det-export``); the export
:mod:`tumor_det.export.tracing`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.export_model import main

if __name__ == "__main__":
    sys.exit(main())
