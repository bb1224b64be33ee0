"""Draw a registered dataset's ground truth over its images (Detectron2's ``Visualizer``)."""

from __future__ import annotations

import os
from pathlib import Path

import tumor_det  # noqa: F401  (Detectron2 compatibility fixes first)
from tumor_det.data.catalog import register_all
from tumor_det.utils.atomic import atomic_path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm


def visualize_dataset(name: str, output: Path, num: int | None = None,
                      datasets_root: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<output>/<image>.png`` with the masks, boxes and classes of up to ``num`` images.

    Raises ``KeyError`` naming the registered datasets when ``name`` is not one of them.
    """
    names = register_all(datasets_root)
    if name not in names:
        raise KeyError(f"dataset {name!r} is not registered; known: {', '.join(names)}")
    records = DatasetCatalog.get(name)[: num or None]
    metadata = MetadataCatalog.get(name)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for record in tqdm(records, desc=f"drawing {name}", unit="image"):
        image = read_image(record["file_name"], format="RGB")
        drawn = Visualizer(image, metadata=metadata).draw_dataset_dict(record)
        rel = os.path.relpath(record["file_name"], metadata.get("image_root", "."))
        dest = output / (Path(rel).with_suffix("").as_posix().replace("/", "__") + ".png")
        with atomic_path(dest) as tmp:
            drawn.save(str(tmp))
        written.append(dest)
    return written
