"""Register prepared datasets in Detectron2's ``DatasetCatalog`` and ``MetadataCatalog``.

Layout (written by ``tools/prepare_dataset.py``)::

    <root>/<name>/images/...                 the images (8-bit PNG/JPEG)
    <root>/<name>/annotations/<split>.json   COCO instances, one file per split

Each split is registered as ``<name>_<split>`` (e.g. ``brain_tumor_train``) through
Detectron2's ``register_coco_instances``. ``<root>`` is ``cfg.TUMOR.DATASETS_ROOT``, else
``$TUMOR_DET_DATASETS``, else ``./datasets``. The built-in synthetic dataset ``tumor_synth`` is
registered even before it exists and is generated on first use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tumor_det.data.splits import SPLIT_NAMES

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

SYNTHETIC_NAME = "tumor_synth"


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds prepared datasets (see module docstring)."""
    return Path(root or os.environ.get("TUMOR_DET_DATASETS") or "datasets")


#: Image-level COCO fields that tumor-det's converters write and the records keep.
IMAGE_EXTRA_KEYS = ("patient_id", "pixel_spacing", "slice_index")


def load_tumor_coco(json_file: str | os.PathLike, image_root: str | os.PathLike, name: str
                    ) -> list[dict]:
    """Detectron2's ``load_coco_json``, keeping the image-level fields in ``IMAGE_EXTRA_KEYS``
    (``load_coco_json`` drops them; the evaluator needs ``pixel_spacing`` for mm)."""
    records = load_coco_json(str(json_file), str(image_root), name)
    with open(json_file) as f:
        images = {img["id"]: img for img in json.load(f)["images"]}
    for record in records:
        image = images.get(record["image_id"], {})
        record.update({k: image[k] for k in IMAGE_EXTRA_KEYS if k in image})
    return records


def register_coco_split(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike,
                        ) -> None:
    """Register one COCO JSON as ``name`` (replacing an earlier registration of that name),
    as ``register_coco_instances`` does, with :func:`load_tumor_coco` as the loader."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_tumor_coco(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=str(json_file), image_root=str(image_root),
                                  evaluator_type="coco")


def _register_synthetic(folder: Path) -> None:
    """Register ``tumor_synth_<split>``, generating the data on first use."""

    def load(split: str):
        from tumor_det.data.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(folder)
        return load_tumor_coco(folder / "annotations" / f"{split}.json", folder / "images",
                               f"{SYNTHETIC_NAME}_{split}")

    for split in SPLIT_NAMES:
        name = f"{SYNTHETIC_NAME}_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, lambda split=split: load(split))
        MetadataCatalog.get(name).set(
            json_file=str(folder / "annotations" / f"{split}.json"),
            image_root=str(folder / "images"),
            evaluator_type="coco",
            thing_classes=["tumor"],
        )


def register_all(root: str | os.PathLike | None = None) -> list[str]:
    """Register every prepared dataset under ``root`` and the synthetic one; return the names."""
    base = datasets_root(root)
    names = []
    _register_synthetic(base / SYNTHETIC_NAME)
    names += [f"{SYNTHETIC_NAME}_{split}" for split in SPLIT_NAMES]
    if base.is_dir():
        for ann_dir in sorted(base.glob("*/annotations")):
            folder = ann_dir.parent
            if folder.name == SYNTHETIC_NAME:
                continue
            for json_file in sorted(ann_dir.glob("*.json")):
                name = f"{folder.name}_{json_file.stem}"
                register_coco_split(name, json_file, folder / "images")
                names.append(name)
    return names
