"""Stand-in for Detectron2's compiled ``detectron2._C`` when it is not installed.

The pure-Python Detectron2 wheel that ``make`` builds has no C++/CUDA extension. Mask R-CNN
R50-FPN does not need one: ROIAlign and NMS come from torchvision's CPU and CUDA kernels, and COCO
evaluation uses pycocotools (``use_fast_impl=False``). Only the ops below do; any attribute of
this module raises :class:`MissingCompiledOpError` naming the op and what to do instead.
"""

from __future__ import annotations

IS_TUMOR_DET_FALLBACK = True

#: Ops of Detectron2 0.6's ``_C`` and the features that use them.
OPS = {
    "box_iou_rotated": "rotated-box IoU (RotatedBoxes, RRPN)",
    "nms_rotated": "rotated-box NMS (RRPN, rotated Fast R-CNN)",
    "roi_align_rotated_forward": "ROIAlignRotated",
    "roi_align_rotated_backward": "ROIAlignRotated",
    "deform_conv_forward": "deformable convolution (DeformConv)",
    "deform_conv_backward_input": "deformable convolution (DeformConv)",
    "deform_conv_backward_filter": "deformable convolution (DeformConv)",
    "modulated_deform_conv_forward": "modulated deformable convolution",
    "modulated_deform_conv_backward": "modulated deformable convolution",
    "COCOevalAccumulate": "the fast COCO evaluator (COCOeval_opt)",
    "COCOevalEvaluateImages": "the fast COCO evaluator (COCOeval_opt)",
    "InstanceAnnotation": "the fast COCO evaluator (COCOeval_opt)",
    "ImageEvaluation": "the fast COCO evaluator (COCOeval_opt)",
    "get_compiler_version": "detectron2.utils.collect_env",
    "get_cuda_version": "detectron2.utils.collect_env",
    "has_cuda": "detectron2.utils.collect_env",
}


class MissingCompiledOpError(NotImplementedError):
    """A Detectron2 op that only exists in the compiled ``detectron2._C`` extension was called."""


def missing_op(name: str) -> MissingCompiledOpError:
    """The error for calling compiled op ``name``."""
    used_by = OPS.get(name, "a Detectron2 feature")
    return MissingCompiledOpError(
        f"detectron2._C.{name} ({used_by}) needs Detectron2's compiled C++/CUDA extension, which "
        "this installation does not have (it uses the pure-Python Detectron2 wheel). Mask R-CNN "
        "R50-FPN, which tumor-det uses, does not need it. To use this feature, build Detectron2 "
        "from source with its csrc/ folder (pip install 'git+https://github.com/facebookresearch/"
        "detectron2.git'); tumor-det then uses the compiled ops as they are. For COCO evaluation "
        "pass use_fast_impl=False to COCOEvaluator."
    )


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_op(name)
