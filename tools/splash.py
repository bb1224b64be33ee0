#!/usr/bin/env python
"""Find brain tumors in images, DICOM, NIfTI and videos; write splashes, masks and results.

    python tools/splash.py --input scan.nii.gz slice.png --output output/splash
    python tools/splash.py --help

The logic is in :mod:`tumor_det.splash_cli` (command line), :mod:`tumor_det.splash_run`
(one prediction function per input kind) and :mod:`tumor_det.splash_sink` (outputs).
"""

from __future__ import annotations

import sys

from tumor_det.splash_cli import main

if __name__ == "__main__":
    sys.exit(main())
