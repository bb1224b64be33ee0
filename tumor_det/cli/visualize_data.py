"""Draw a prepared dataset's ground truth (masks, boxes, classes) over its images as PNGs.

Example::

    python tools/visualize_data.py --dataset brain_tumor_train --output output/vis --num 8

A user error exits with status 2 and one ``visualize_data.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumor_det.data.visualize import visualize_dataset

PROG = "visualize_data.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="registered name, e.g. brain_tumor_train")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=None, help="at most N images (default all)")
    parser.add_argument("--datasets-root", default=None,
                        help="where prepared datasets live (default $TUMOR_DET_DATASETS or "
                             "./datasets)")
    args = parser.parse_args(argv)
    if args.num is not None and args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    try:
        written = visualize_dataset(args.dataset, args.output, args.num, args.datasets_root)
    except KeyError as exc:  # not a registered dataset (the message names those that are)
        parser.exit(2, f"{parser.prog}: error: {exc.args[0]}\n")
    except OSError as exc:  # an image of the dataset missing; output folder not writable
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(f"wrote {len(written)} image(s) to {args.output}")
    return 0
