"""Convert annotated MRI (VIA, COCO, mask pairs, Figshare .mat, NIfTI, YOLO) into a COCO dataset.

Example::

    python tools/prepare_dataset.py --format via --input ../shared/datasets/brain_tumor_mri/train \\
        --output datasets/brain_tumor --split 0.6,0.2,0.2 --seed 0

An unusable input exits with status 2 and one ``prepare_dataset.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tumor_det.data.nifti import AXES
from tumor_det.data.prepare import FORMATS, PrepareOptions, prepare
from tumor_det.data.records import DatasetError

PROG = "prepare_dataset.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="input format; 'yolo': images + YOLO box labels (Ultralytics "
                             "images/ + labels/, or x.txt beside x.jpg); 'images': a folder of "
                             "unlabelled tumor-free images (negatives)")
    parser.add_argument("--input", type=Path,
                        help="folder or file to read (VIA folder/JSON, COCO JSON, mask-pair "
                             "folder, folder of .mat files, NIfTI folder, YOLO folder or its "
                             "data.yaml, folder of tumor-free images)")
    parser.add_argument("--output", type=Path, required=True,
                        help="dataset folder; its name is the dataset name (<name>_<split>)")
    parser.add_argument("--classes", choices=("tumor", "type"), default="tumor",
                        help="one class 'tumor', or meningioma/glioma/pituitary (default tumor)")
    parser.add_argument("--class-names",
                        help="YOLO class names in id order, e.g. pituitary,meningioma,glioma "
                             "(default: data.yaml's names:); --classes type needs each to "
                             "name a tumor type")
    parser.add_argument("--split",
                        help="patient-level train,val,test fractions, e.g. 0.7,0.15,0.15")
    parser.add_argument("--folds", type=int, help="K patient-level folds fold0..fold{K-1}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-format", choices=("polygon", "rle"), default="polygon",
                        help="how masks from mask/.mat/NIfTI inputs are stored: pixel-exact "
                             "polygons (holes filled; Detectron2's default INPUT.MASK_FORMAT) or "
                             "RLE (needs INPUT.MASK_FORMAT bitmask)")
    parser.add_argument("--keep-negatives", action="store_true",
                        help="keep images/slices without tumor (YOLO: also images without a "
                             "label file; an empty label file is always kept as tumor-free)")
    parser.add_argument("--negative-ratio", type=float,
                        help="with --keep-negatives (NIfTI): at most R tumor-free slices per "
                             "tumor slice of each volume")
    parser.add_argument("--negatives", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of tumor-free images (no labels) to add as negatives, "
                             "under images/<DIR name>/; each image its own patient group "
                             "unless its name holds one; repeatable")
    parser.add_argument("--patient-blocks", type=int, metavar="N",
                        help="no patient ids, files numbered patient after patient (Figshare "
                             "<n>.jpg): group each folder's files into blocks of N neighbouring "
                             "numbers (n // N), kept in one split or fold. A patient whose "
                             "numbers straddle a block boundary lands in two blocks. Without "
                             "it (and without a patient in the name) each image is its own "
                             "group")
    parser.add_argument("--group-duplicates", action="store_true",
                        help="put near-duplicate images (re-encoded copies: 32x32 thumbnails "
                             "within 3 grey levels) in one patient group, so that no copy of a "
                             "training slice is held out (public slice sets repeat slices)")
    parser.add_argument("--image-root", type=Path, help="images folder (VIA, COCO)")
    parser.add_argument("--patient-regex",
                        help="regex with a (?P<patient>...) group, searched in file stems "
                             "(VIA, masks, YOLO, images, --negatives)")
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
