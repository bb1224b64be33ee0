#!/usr/bin/env python
"""Write the built-in synthetic brain-MRI tumor dataset (PNG slices + COCO JSON per split).

    python tools/make_synthetic.py --output datasets/tumor_synth

The command line is :mod:`tumor_det.cli.make_synthetic`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
