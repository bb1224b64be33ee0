#!/usr/bin/env python
"""The main job (``make demo``): prepare synthetic MRI, train, evaluate, splash.

    python tools/demo.py [--output output/demo] [--retrain] [KEY VALUE ...]

See :mod:`tumor_det.demo`.
"""

import sys

from tumor_det.demo import main

if __name__ == "__main__":
    sys.exit(main())
