#!/usr/bin/env python
"""The main job (``make demo``): prepare synthetic MRI, train, evaluate, splash.

    python tools/demo.py [--output output/demo] [--retrain] [KEY VALUE ...]

See :mod:`tumor_det.cli.demo` (also ``tumor-det-demo``). A bad config file, key or value, or
weights that cannot be found, exit with status 2 and one ``demo.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import sys

from tumor_det.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
