#!/usr/bin/env python
"""Convert annotated MRI (VIA, COCO, mask pairs, Figshare .mat, NIfTI) into a COCO dataset.

Example::

    python tools/prepare_dataset.py --format via --input ../shared/datasets/brain_tumor_mri/train \\
        --output datasets/brain_tumor --split 0.6,0.2,0.2 --seed 0

An unusable input exits with status 2 and one ``prepare_dataset.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tumor_det.data.nifti import AXES
from tumor_det.data.prepare import FORMATS, PrepareOptions, prepare
from tumor_det.data.records import DatasetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=Path(__file__).name,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", type=Path,
                        help="folder or file to read (VIA folder/JSON, COCO JSON, mask-pair "
                             "folder, folder of .mat files, NIfTI folder)")
    parser.add_argument("--output", type=Path, required=True,
                        help="dataset folder; its name is the dataset name (<name>_<split>)")
    parser.add_argument("--classes", choices=("tumor", "type"), default="tumor",
                        help="one class 'tumor', or meningioma/glioma/pituitary (default tumor)")
    parser.add_argument("--split",
                        help="patient-level train,val,test fractions, e.g. 0.7,0.15,0.15")
    parser.add_argument("--folds", type=int, help="K patient-level folds fold0..fold{K-1}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-format", choices=("polygon", "rle"), default="polygon",
                        help="how masks from mask/.mat/NIfTI inputs are stored: pixel-exact "
                             "polygons (holes filled; Detectron2's default INPUT.MASK_FORMAT) or "
                             "RLE (needs INPUT.MASK_FORMAT bitmask)")
    parser.add_argument("--keep-negatives", action="store_true",
                        help="keep images/slices without tumor")
    parser.add_argument("--negative-ratio", type=float,
                        help="with --keep-negatives (NIfTI): at most R tumor-free slices per "
                             "tumor slice of each volume")
    parser.add_argument("--image-root", type=Path, help="images folder (VIA, COCO)")
    parser.add_argument("--patient-regex",
                        help="regex with a (?P<patient>...) group, searched in file stems "
                             "(VIA, masks)")
    parser.add_argument("--axis", choices=tuple(AXES), default="axial", help="NIfTI slicing axis")
    parser.add_argument("--modality",
                        help="NIfTI BraTS image suffix (default: t1ce, t1c, flair...)")
    parser.add_argument("--channel", type=int, default=0, help="channel of 4D NIfTI images")
    parser.add_argument("--label-values", type=lambda s: [int(v) for v in s.split(",")],
                        help="NIfTI label values that are tumor, e.g. 1,2,4 (default: all > 0)")
    parser.add_argument("--pair", nargs=2, type=Path, action="append", default=[],
                        metavar=("IMAGE", "LABEL"), help="an explicit NIfTI volume pair")
    parser.add_argument("--quiet", action="store_true", help="no per-item warnings on stderr")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    options = PrepareOptions(**{k: v for k, v in vars(args).items()
                                if k not in ("quiet", "pair")}, pairs=args.pair)
    try:
        result = prepare(options)
    except (DatasetError, OSError) as exc:  # unusable input; output folder not writable
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
