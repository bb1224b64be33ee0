#!/usr/bin/env python
"""Find brain tumors in images, DICOM, NIfTI and videos; write splashes, masks and results.

    python tools/splash.py --input scan.nii.gz slice.png --output output/splash
    python tools/splash.py --help

The command line is :mod:`tumor_det.cli.splash` (also the console script ``tumor-det-splash``);
the run is :mod:`tumor_det.splash.runner`, the outputs :mod:`tumor_det.splash.sink`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.splash import main

if __name__ == "__main__":
    sys.exit(main())
