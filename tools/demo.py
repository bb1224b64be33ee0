#!/usr/bin/env python
"""The main job (``make demo``): prepare synthetic MRI, train, evaluate, splash.

    python tools/demo.py [--output output/demo] [--retrain] [KEY VALUE ...]

See :mod:`tumor_det.cli.demo`. A bad config file, key or value, or weights that cannot be found,
exit with status 2 and one ``demo.py: error: ...`` line on stderr.
"""

import sys
from pathlib import Path

from tumor_det.cli.demo import main
from tumor_det.engine.trainer import USAGE_ERRORS


def run(argv: list[str] | None = None) -> int:
    """:func:`tumor_det.cli.demo.main`, with a user error as one line and status 2."""
    try:
        return main(argv)
    except USAGE_ERRORS as exc:
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
