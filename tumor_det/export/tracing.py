"""Export the Mask R-CNN to TorchScript and ONNX (tracing through ``detectron2.export``).

    python tools/export_model.py --config-file configs/quick_cpu.yaml \\
        --weights output/demo/model/model_final.pth --output output/export
    python tools/splash.py --weights output/export/model.onnx --input scan.nii.gz

**What is exported.** The network from the uint8 image tensor (CHW, ``INPUT.FORMAT`` channel
order, already resized by the test-time ``ResizeShortestEdge``) to the detections *before*
Detectron2's ``detector_postprocess``: boxes in the resized image, classes, per-detection 28x28
mask probabilities, scores and the resized image size. It is traced through
:class:`detectron2.export.TracingAdapter` around ``model.inference(..., do_postprocess=False)``,
as Detectron2's ``tools/deploy/export_model.py`` does. Inside the graph: the normalisation
(``MODEL.PIXEL_MEAN``/``PIXEL_STD``), the padding to ``SIZE_DIVISIBILITY``, backbone, RPN, box
and mask heads, the score threshold ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, NMS and
``TEST.DETECTIONS_PER_IMAGE`` (so these are fixed at export time; a predictor threshold below
the exported one cannot bring back what the graph dropped). Outside it, in
:class:`tumor_det.inference.predictor.TumorPredictor` and the same for every backend: the
intensity rule, the resize, pasting the masks at the original size (``detector_postprocess``)
and the ``TUMOR.MERGE`` merge of :class:`tumor_det.modeling.meta_arch.TumorRCNN`.

**Input size.** Tracing records one run, at the config's test size (``INPUT.MIN_SIZE_TEST``,
square). The recorded graphs keep the image height and width symbolic (Detectron2 0.6 computes
padding, anchors and clipping from tensor shapes while tracing) and the ONNX input has dynamic
height and width, so other sizes run and give the PyTorch model's answer
(``tests/test_export.py`` checks a non-square input); inputs are resized exactly as for the
PyTorch model, so a square slice always reaches the traced size anyway.

**Files** in the output folder: ``model.ts`` (TorchScript, ``torch.jit.load``), ``model.onnx``
(opset 17; ONNX Runtime's CPU or CUDA provider), ``config.yaml`` (the exported model's config)
and ``export.json`` (formats, input and output names, sizes, versions); ``--dump-ir`` adds
Detectron2's ``dump_torchscript_IR`` text files. A traced TorchScript file runs on the device it
was exported on (tracing records the device of the tensors it creates): export on the GPU for
the GPU. The ONNX file runs anywhere ONNX Runtime does.

Running the files is :mod:`tumor_det.inference.backends` (the file names and output order
are defined there, below both); their parity with the PyTorch model is
:mod:`tumor_det.export.parity`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from tumor_det.compat import import_detectron2_export
from tumor_det.data.synthetic import synthetic_slice
from tumor_det.inference.backends import (
    CONFIG,
    FORMATS,
    INPUT_NAME,
    METADATA,
    OUTPUTS,
    ExportError,
)
from tumor_det.utils.atomic import atomic_path, write_json, write_text

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from torch import nn

logger = logging.getLogger(__name__)

#: ONNX opset: >= 11 for Mask R-CNN's ops; 16+ for torchvision's RoIAlign with aligned=True.
DEFAULT_OPSET = 17

__all__ = ["CONFIG", "DEFAULT_OPSET", "FORMATS", "METADATA", "OUTPUTS", "ExportError",
           "export_model", "resize_for_model", "sample_image", "to_chw_tensor"]


def _raw_inference(model: nn.Module, inputs: list[dict]) -> list[dict]:
    """What is traced: detections before ``detector_postprocess`` (per-RoI masks)."""
    return [{"instances": inst} for inst in model.inference(inputs, do_postprocess=False)]


# ----------------------------------------------------------------------------- inputs


def resize_for_model(cfg: CfgNode, image: np.ndarray) -> np.ndarray:
    """An 8-bit BGR HxWx3 image as the model sees it: ``INPUT.FORMAT`` channel order and the
    test-time ``ResizeShortestEdge`` (what :class:`~detectron2.engine.DefaultPredictor` does)."""
    if cfg.INPUT.FORMAT == "RGB":
        image = image[:, :, ::-1]
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    return aug.get_transform(image).apply_image(image)


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW uint8 tensor (contiguous)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def sample_image(cfg: CfgNode, seed: int = 0) -> np.ndarray:
    """A synthetic MRI slice with a tumor at the config's test size (8-bit BGR): what tracing
    runs on by default."""
    size = int(cfg.INPUT.MIN_SIZE_TEST)
    grey, _ = synthetic_slice(np.random.default_rng(seed), size=size, num_tumors=1)
    return np.repeat(grey[:, :, None], 3, axis=2)


# ----------------------------------------------------------------------------- export


def export_model(model: nn.Module, cfg: CfgNode, output: str | os.PathLike,
                 formats: Sequence[str] = tuple(FORMATS), image: np.ndarray | None = None,
                 opset: int = DEFAULT_OPSET, dump_ir: bool = False,
                 weights: str = "") -> dict[str, Path]:
    """Trace ``model`` (a Detectron2 ``GeneralizedRCNN`` built from ``cfg``, weights loaded)
    and write ``formats`` into ``output``; returns ``{format: path}``.

    ``image`` (8-bit BGR, any size; default :func:`sample_image`) is the tracing input after
    :func:`resize_for_model`. ``output`` also gets ``config.yaml`` and ``export.json``.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {sorted(unknown)}: choose from "
                          f"{', '.join(FORMATS)}")
    if not cfg.MODEL.MASK_ON:
        raise ExportError("export needs a mask model (MODEL.MASK_ON True)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    d2 = import_detectron2_export()
    device = next(model.parameters()).device
    resized = resize_for_model(cfg, sample_image(cfg) if image is None else image)
    tensor = to_chw_tensor(resized).to(device)
    was_training = model.training
    model.eval()
    # eval(): torch.onnx.export restores the adapter's mode afterwards, and a module in train
    # mode would set the wrapped model to train mode too
    adapter = d2.TracingAdapter(model, [{"image": tensor}], _raw_inference).eval()
    files: dict[str, Path] = {}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings on every Python branch of Detectron2's code: expected, see
            # tests/test_export.py for the check that the traced graphs generalise
            warnings.simplefilter("ignore")
            if "torchscript" in formats:
                traced = torch.jit.trace(adapter, (tensor,), check_trace=False)
                files["torchscript"] = out / FORMATS["torchscript"]
                with atomic_path(files["torchscript"]) as tmp:
                    torch.jit.save(traced, str(tmp))
                if dump_ir:
                    d2.dump_torchscript_IR(traced, str(out))
            if "onnx" in formats:
                files["onnx"] = out / FORMATS["onnx"]
                with atomic_path(files["onnx"]) as tmp:
                    _export_onnx(adapter, tensor, tmp, opset)
    finally:
        model.train(was_training)
    _check_schema(adapter.outputs_schema)
    write_text(out / CONFIG, cfg.dump())
    meta = {
        "format_version": 1,
        "files": {f: p.name for f, p in files.items()},
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "CHW",
                  "channels": cfg.INPUT.FORMAT, "traced_size": list(resized.shape[:2]),
                  "dynamic_size": True},
        "outputs": list(OUTPUTS),
        "config": CONFIG,
        "weights": weights or cfg.MODEL.WEIGHTS,
        "device": str(device),
        "opset": opset if "onnx" in formats else None,
        "score_thresh_test": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
        "detections_per_image": int(cfg.TEST.DETECTIONS_PER_IMAGE),
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "versions": _versions(),
    }
    write_json(out / METADATA, meta, indent=2)
    return files


def _export_onnx(adapter: nn.Module, tensor: torch.Tensor, path: Path, opset: int) -> None:
    """The TorchScript-based ONNX exporter (``dynamo=False``): it handles Detectron2's
    data-dependent shapes (NMS, score filtering) that ``torch.export`` cannot trace."""
    if opset < 16:
        raise ExportError(f"ONNX opset {opset}: Mask R-CNN needs >= 16 here (RoIAlign with "
                          "aligned=True, torchvision's symbolic)")
    dyn = {INPUT_NAME: {1: "height", 2: "width"}}
    for name in OUTPUTS[:-1]:
        dyn[name] = {0: "detections"}
    torch.onnx.export(adapter, (tensor,), str(path), dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=list(OUTPUTS), dynamic_axes=dyn,
                      do_constant_folding=True)


def _check_schema(schema) -> None:
    """The traced outputs are one image's Instances with :data:`OUTPUTS`' fields."""
    try:
        inst = schema.schemas[0].schemas[0]
        ok = list(inst.keys) == list(OUTPUTS[:-1])
    except (AttributeError, IndexError):
        ok = False
    if not ok:
        raise ExportError(f"unexpected traced outputs {schema}: expected one Instances with "
                          f"fields {OUTPUTS[:-1]}")


def _versions() -> dict[str, str]:
    import detectron2

    out = {"torch": torch.__version__, "detectron2": detectron2.__version__}
    for name in ("onnx", "onnxruntime"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = mod.__version__
    return out
