#!/usr/bin/env python
"""Split the 46 outlined seed slices by whether their patient is in the Figshare box folds.

    python benchmarks/seed_overlap.py --seed datasets/brain_tumor_mri \\
        --figshare datasets/figshare_boxes \\
        --train-folds 2 3 4

The seed slices (``brain_tumor_mri``, ``<label>---<patient>-i<k>``) are Figshare slices too: file
number ``k + 1`` in class folder 1 (meningioma), 2 (glioma) or 0 (pituitary, label 3) of
``figshare_boxes``. A seed patient is *seen* when one of its slices, or the 50-number block it
falls in, is in a training fold of the prepared ``figshare_boxes``; the others are in no shared
fold at all (their Figshare files are among the slices held out of ``../shared``). Writes
``annotations/seen.json`` and ``annotations/unseen.json`` beside ``all.json`` (registered as
``<name>_seen``/``<name>_unseen``) and prints the patients of each. Measurement, not product.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

LABEL_FOLDER = {"1": "1", "2": "2", "3": "0"}  # Figshare label -> figshare_boxes class folder
NAME = re.compile(r"(?P<label>\d)(?:\.0)?---(?P<patient>\d+)-i(?P<k>\d+)")


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=Path, default=Path("datasets/brain_tumor_mri"))
    parser.add_argument("--figshare", type=Path, default=Path("datasets/figshare_boxes"))
    parser.add_argument("--train-folds", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--block", type=int, default=50, help="--patient-blocks of figshare")
    args = parser.parse_args(argv)
    trained_files, trained_blocks, any_blocks = set(), set(), set()
    for path in sorted((args.figshare / "annotations").glob("fold*.json")):
        k = int(path.stem[4:])
        for image in json.loads(path.read_text())["images"]:
            any_blocks.add(image["patient_id"])
            if k in args.train_folds:
                trained_files.add(image["file_name"])
                trained_blocks.add(image["patient_id"])
    coco = json.loads((args.seed / "annotations" / "all.json").read_text())
    seen_patients = set()
    for image in coco["images"]:
        found = NAME.search(Path(image["file_name"]).stem)
        n, folder = int(found["k"]) + 1, LABEL_FOLDER[found["label"]]
        start = n // args.block * args.block
        block = f"{folder}/{start}-{start + args.block - 1}"
        if f"{folder}/{n}.jpg" in trained_files or block in trained_blocks:
            seen_patients.add(image["patient_id"])
    out = {}
    for split, keep in (("seen", True), ("unseen", False)):
        images = [i for i in coco["images"] if (i["patient_id"] in seen_patients) == keep]
        ids = {i["id"] for i in images}
        subset = {**coco, "images": images,
                  "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
        (args.seed / "annotations" / f"{split}.json").write_text(json.dumps(subset))
        out[split] = sorted({i["patient_id"] for i in images})
        print(f"{split}: {len(images)} slices of patients {', '.join(out[split])}")
    return out


if __name__ == "__main__":
    main()
