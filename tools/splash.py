#!/usr/bin/env python
"""Find brain tumors in images, DICOM, NIfTI and videos; write splashes, masks and results.

    python tools/splash.py --input scan.nii.gz slice.png --output output/splash
    python tools/splash.py --help

The logic is in :mod:`tumor_det.cli.splash` (command line), :mod:`tumor_det.splash.runner`
(one prediction function per input kind) and :mod:`tumor_det.splash.sink` (outputs).
"""

from __future__ import annotations

import sys

from tumor_det.cli.splash import main

if __name__ == "__main__":
    sys.exit(main())
