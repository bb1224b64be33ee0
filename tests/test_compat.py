"""Each Detectron2 0.6 compatibility fix, and the ``_C`` fallback, on the installed libraries."""

from __future__ import annotations

import importlib
import subprocess
import sys

from tumor_det import compat

import numpy as np
import pytest
import torch


def test_pillow_linear_restored():
    from PIL import Image

    assert Image.LINEAR == Image.Resampling.BILINEAR
    from detectron2.data.transforms import ExtentTransform, ResizeTransform

    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = ExtentTransform((0, 0, 8, 8), (4, 4)).apply_image(image)  # default interp=LINEAR
    assert out.shape == (4, 4)
    assert ResizeTransform(8, 8, 4, 4).apply_image(image).shape == (4, 4)


def test_numpy_aliases_restored_for_detectron2_code():
    assert np.int is int and np.float is float and np.str is str
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.structures.masks import polygons_to_bitmask

    # build.py: np.zeros(..., dtype=np.int); masks.py: .astype(np.bool)
    print_instances_class_histogram(
        [{"annotations": [{"category_id": 0, "iscrowd": 0}]}], ["tumor"]
    )
    mask = polygons_to_bitmask([np.array([1, 1, 6, 1, 6, 6, 1, 6], float)], 8, 8)
    assert mask.dtype == bool and mask.sum() > 0


def test_model_zoo_configs_found_without_pkg_resources():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_3x.yaml")
    assert open(path).read().startswith("_BASE_")
    if importlib.util.find_spec("pkg_resources") is None:
        # The shim is scoped to detectron2.model_zoo, not installed for every library.
        assert "pkg_resources" not in sys.modules


def test_apply_is_idempotent():
    compat.apply()
    compat.apply()
    assert np.int is int


@pytest.mark.skipif(compat.has_compiled_ops(), reason="a compiled detectron2._C is installed")
def test_c_fallback_raises_clear_error():
    from tumor_det._C_fallback import MissingCompiledOpError

    from detectron2 import _C
    from detectron2.layers import nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(MissingCompiledOpError, match="box_iou_rotated.*compiled"):
        pairwise_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5))
    with pytest.raises(MissingCompiledOpError, match="nms_rotated"):
        nms_rotated(torch.zeros(1, 5), torch.zeros(1), 0.5)
    with pytest.raises(MissingCompiledOpError, match="deform_conv_forward"):
        _ = _C.deform_conv_forward
    # Attribute probes (hasattr, copy, pickle) still behave.
    assert not hasattr(_C, "__wrapped__")


def test_collect_env_reports_compiled_ops():
    out = subprocess.run([sys.executable, "-m", "tumor_det.utils.collect_env"], capture_output=True,
                         text=True, check=True).stdout
    assert "detectron2 compiled ops (_C)" in out
    assert ("yes" if compat.has_compiled_ops() else "no: pure-Python build") in out
    assert "PyTorch" in out
