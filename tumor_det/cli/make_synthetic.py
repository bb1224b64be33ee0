"""Write the built-in synthetic brain-MRI tumor dataset (PNG slices + COCO JSON per split).

A user error exits with status 2 and a ``make_synthetic.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tumor_det.data.records import DatasetError
from tumor_det.data.synthetic import DEFAULTS, generate_synthetic_dataset

from tabulate import tabulate

PROG = "make_synthetic.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--patients", type=int, default=DEFAULTS["num_patients"])
    parser.add_argument("--slices-per-patient", type=int, default=DEFAULTS["slices_per_patient"])
    parser.add_argument("--size", type=int, default=DEFAULTS["size"], help="image side (px)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = parser.parse_args(argv)
    if args.patients < 1 or args.slices_per_patient < 1 or args.size < 32:
        parser.error("need --patients >= 1, --slices-per-patient >= 1 and --size >= 32")
    try:
        summary = generate_synthetic_dataset(args.output, args.patients, args.slices_per_patient,
                                             args.size, args.seed)
    except (DatasetError, OSError) as exc:  # e.g. --output is a file or not writable
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    rows = [[split, *counts.values()] for split, counts in summary.items()]
    rows.append(["total", *(sum(c[k] for c in summary.values())
                            for k in next(iter(summary.values())))])
    print(tabulate(rows, headers=["split", *next(iter(summary.values()))]))
    print(f"written to {args.output}")
    return 0
