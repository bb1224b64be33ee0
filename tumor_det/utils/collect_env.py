"""Report the environment: ``python -m tumor_det.utils.collect_env``.

Detectron2's own table (``detectron2.utils.collect_env``), plus what tumor-det adds: whether
Detectron2's compiled ops are present or the fallback is in use, and the versions of the MRI and
evaluation libraries.
"""

from __future__ import annotations

import importlib.metadata

import tumor_det
from tumor_det import compat

LIBRARIES = ("detectron2", "torch", "torchvision", "numpy", "pillow", "opencv-python-headless",
             "pycocotools", "nibabel", "pydicom", "h5py", "monai", "shapely")


def collect_env_info() -> str:
    """Return Detectron2's environment table followed by tumor-det's own lines."""
    from detectron2.utils.collect_env import collect_env_info as d2_collect_env_info
    from tabulate import tabulate

    compiled = compat.has_compiled_ops()
    d2_table = d2_collect_env_info()  # tumor_det.compat hides the fallback from it
    rows = [("tumor_det", f"{tumor_det.__version__} @ {tumor_det.__file__}")]
    rows.append(("detectron2 compiled ops (_C)",
                 "yes" if compiled else "no: pure-Python build, tumor_det._C_fallback in use "
                 "(ROIAlign/NMS from torchvision; rotated boxes and deformable conv unavailable)"))
    for name in LIBRARIES:
        try:
            rows.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return d2_table + "\n" + tabulate(rows, tablefmt="simple")


if __name__ == "__main__":
    print(collect_env_info())
