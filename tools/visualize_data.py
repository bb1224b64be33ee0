#!/usr/bin/env python
"""Draw a prepared dataset's ground truth (masks, boxes, classes) over its images as PNGs.

Example::

    python tools/visualize_data.py --dataset brain_tumor_train --output output/vis --num 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumor_det.data.visualize import visualize_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="registered name, e.g. brain_tumor_train")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=None, help="at most N images (default all)")
    parser.add_argument("--datasets-root", default=None,
                        help="where prepared datasets live (default $TUMOR_DET_DATASETS or "
                             "./datasets)")
    args = parser.parse_args(argv)
    try:
        written = visualize_dataset(args.dataset, args.output, args.num, args.datasets_root)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} image(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
