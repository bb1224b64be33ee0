"""Export the Mask R-CNN to TorchScript and ONNX, run an exported model, and fast inference.

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
:class:`tumor_det.inference.predictor.TumorPredictor` and the same for every backend: the intensity rule,
the resize, pasting the masks at the original size (``detector_postprocess``) and the
``TUMOR.MERGE`` merge of :class:`tumor_det.modeling.meta_arch.TumorRCNN`.

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

**Fast PyTorch inference.** :func:`fuse_conv_norm` folds every frozen/eval BatchNorm that
follows a convolution into the convolution's weights (the same function; float rounding only).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from tumor_det.utils.atomic import atomic_path, write_json, write_text

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Boxes, Instances
from torch import nn

logger = logging.getLogger(__name__)

#: Exported file name per format.
FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
#: Inference backends: the PyTorch model, or an exported file.
BACKENDS = ("torch", "torchscript", "onnxruntime")
#: The backend that runs each format's file, and the format each exported backend needs.
BACKEND_OF_FORMAT = {"torchscript": "torchscript", "onnx": "onnxruntime"}
FORMAT_OF_BACKEND = {v: k for k, v in BACKEND_OF_FORMAT.items()}
METADATA = "export.json"
CONFIG = "config.yaml"
#: The traced model's outputs, in TracingAdapter's order (Instances fields sorted, then size).
OUTPUTS = ("pred_boxes", "pred_classes", "pred_masks", "scores", "image_size")
INPUT_NAME = "image"
#: ONNX opset: >= 11 for Mask R-CNN's ops; 16+ for torchvision's RoIAlign with aligned=True.
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The model cannot be exported or an exported file cannot be used (one-line message)."""


# ----------------------------------------------------------------------------- detectron2.export


def detectron2_export() -> SimpleNamespace:
    """``TracingAdapter`` and ``dump_torchscript_IR`` from ``detectron2.export``.

    Detectron2 0.6's ``detectron2/export/__init__.py`` imports its Caffe2 exporter (``api.py``:
    ``from caffe2.proto import caffe2_pb2``), and Caffe2 left PyTorch in 2.0, so the package
    cannot be imported. Its tracing parts (``flatten.py``, ``torchscript.py``) need no Caffe2:
    when the package import fails they are imported from an empty ``detectron2.export``
    package placed in ``sys.modules`` (its ``__init__`` is not run; it holds only the parts
    imported through it).
    """
    try:
        from detectron2.export import TracingAdapter, dump_torchscript_IR
    except ImportError as exc:
        if "caffe2" not in str(exc):
            raise
        import detectron2

        pkg_dir = Path(detectron2.__file__).parent / "export"
        spec = importlib.machinery.ModuleSpec("detectron2.export", None, is_package=True)
        pkg = importlib.util.module_from_spec(spec)
        pkg.__path__ = [str(pkg_dir)]
        pkg.__file__ = str(pkg_dir / "__init__.py")
        sys.modules["detectron2.export"] = pkg
        flatten = importlib.import_module("detectron2.export.flatten")
        torchscript = importlib.import_module("detectron2.export.torchscript")
        TracingAdapter = flatten.TracingAdapter  # noqa: N806
        dump_torchscript_IR = torchscript.dump_torchscript_IR  # noqa: N806
        pkg.TracingAdapter, pkg.dump_torchscript_IR = TracingAdapter, dump_torchscript_IR
    return SimpleNamespace(TracingAdapter=TracingAdapter, dump_torchscript_IR=dump_torchscript_IR)


def _raw_inference(model: nn.Module, inputs: list[dict]) -> list[dict]:
    """What is traced: detections before ``detector_postprocess`` (per-RoI masks)."""
    return [{"instances": inst} for inst in model.inference(inputs, do_postprocess=False)]


# ----------------------------------------------------------------------------- inputs


def resize_for_model(cfg: CfgNode, image: np.ndarray) -> np.ndarray:
    """An 8-bit BGR HxWx3 image as the model sees it: ``INPUT.FORMAT`` channel order and the
    test-time ``ResizeShortestEdge`` (what :class:`~detectron2.engine.DefaultPredictor` does)."""
    from detectron2.data import transforms as T

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
    from tumor_det.data.synthetic import synthetic_slice

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
    d2 = detectron2_export()
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


# ----------------------------------------------------------------------------- loading


def find_exported(path: str | os.PathLike, backend: str | None = None) -> tuple[Path, str]:
    """(exported file, backend) for a ``model.ts``/``model.onnx`` file or an export folder.

    ``backend`` None: from the file's suffix (``.ts``/``.pt`` TorchScript, ``.onnx`` ONNX
    Runtime); for a folder, ONNX Runtime when it holds ``model.onnx``, else TorchScript.
    """
    p = Path(path)
    if p.is_dir():
        candidates = ([FORMATS[FORMAT_OF_BACKEND[backend]]] if backend in FORMAT_OF_BACKEND
                      else [FORMATS["onnx"], FORMATS["torchscript"]])
        for name in candidates:
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ExportError(f"{path}: no exported model ({' or '.join(candidates)}) in this "
                              "folder (tools/export_model.py writes them)")
    if not p.is_file():
        raise ExportError(f"exported model not found: {path}")
    guessed = backend_for_file(p)
    if backend is None or backend == "torch":
        if guessed is None:
            raise ExportError(f"{p}: not an exported model (.ts or .onnx)")
        backend = guessed
    if backend not in FORMAT_OF_BACKEND:
        raise ExportError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if guessed is not None and guessed != backend:
        raise ExportError(f"{p} is a {FORMAT_OF_BACKEND[guessed]} file; --backend {backend} "
                          f"runs {FORMATS[FORMAT_OF_BACKEND[backend]]}")
    return p, backend


def backend_for_file(path: str | os.PathLike) -> str | None:
    """The backend that runs ``path`` by its suffix, or None (a PyTorch checkpoint)."""
    suffix = Path(path).suffix.lower()
    return {".ts": "torchscript", ".onnx": "onnxruntime"}.get(suffix)


def read_metadata(path: str | os.PathLike) -> dict:
    """``export.json`` beside an exported file (``{}`` when absent)."""
    p = Path(path)
    meta = (p if p.is_dir() else p.parent) / METADATA
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text())


def exported_config(path: str | os.PathLike) -> CfgNode | None:
    """The config saved beside an exported file (``config.yaml``), or None."""
    from tumor_det.config.config import get_tumor_cfg

    p = Path(path)
    cfg_file = (p if p.is_dir() else p.parent) / CONFIG
    return get_tumor_cfg(cfg_file) if cfg_file.is_file() else None


class ExportedModel:
    """An exported model: called with a list of uint8 CHW tensors (resized, in the model's
    channel order), returns one raw :class:`Instances` per image, as
    ``model.inference(inputs, do_postprocess=False)`` does (boxes in the resized image, 28x28
    mask probabilities). One image per run of the exported graph."""

    backend: str = ""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        self.path, self.device = Path(path), torch.device(device)
        self.meta = read_metadata(path)

    def run(self, image: torch.Tensor) -> Sequence:
        raise NotImplementedError

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Instances]:
        return [outputs_to_instances(self.run(im)) for im in images]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, device={self.device})"


class TorchScriptModel(ExportedModel):
    """``model.ts`` through ``torch.jit.load`` (on the device it was exported on)."""

    backend = "torchscript"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        super().__init__(path, device)
        exported_on = self.meta.get("device", "cpu")
        if torch.device(exported_on).type != self.device.type:
            logger.warning("%s was traced on %s and runs on %s: traced graphs keep the "
                           "device of the tensors they create; export on %s for this device",
                           path, exported_on, self.device, self.device.type)
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as exc:  # a corrupt or truncated archive
            raise ExportError(f"{path}: not a loadable TorchScript model "
                              f"({str(exc).splitlines()[0][:200]})") from exc

    def run(self, image: torch.Tensor) -> Sequence:
        with torch.inference_mode():
            return self.module(image.to(self.device))


class OnnxRuntimeModel(ExportedModel):
    """``model.onnx`` in an ONNX Runtime session: the CUDA provider for a CUDA device when the
    installed onnxruntime has it (the ``onnxruntime-gpu`` package), else the CPU provider.

    On the CPU, one image runs with ``threads`` intra-op threads (default:
    ``torch.get_num_threads()``); several images (a batch of slices) run side by side, one per
    thread, each single-threaded, in a second session (``InferenceSession.run`` is
    thread-safe and releases the GIL): small convolutions split poorly across threads, whole
    images do not (measured: 1.5x the slices per second of one 2-thread session on 2 cores).
    Threads do not spin while waiting for work (``spin``: they do; a little lower latency on
    idle cores, but CPU time burnt that other work on a shared machine would use).
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None,
                 spin: bool = False) -> None:
        super().__init__(path, device)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ExportError("the onnxruntime backend needs the onnxruntime package "
                              "(pip install -c constraints.txt onnxruntime, or "
                              "pip install -e '.[export]')") from exc
        self._ort, self.spin = ort, spin
        self.threads = max(1, threads or torch.get_num_threads())
        self.provider_list: list = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                self.provider_list.insert(0, ("CUDAExecutionProvider",
                                              {"device_id": self.device.index or 0}))
            else:
                logger.warning("onnxruntime %s has no CUDA provider (that is the "
                               "onnxruntime-gpu package): running on the CPU", ort.__version__)
        self.session = self._session(self.threads)
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        self._parallel = None  # (single-threaded session, thread pool), made on first batch

    def _session(self, threads: int):
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return ort.InferenceSession(str(self.path), opts, providers=self.provider_list)
            except Exception as exc:  # onnxruntime's own exception types (corrupt, empty file)
                raise ExportError(f"{self.path}: not a loadable ONNX model "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                                  ) from exc

    def run(self, image: torch.Tensor, session=None) -> Sequence:
        array = image.detach().cpu().numpy()
        if array.dtype != np.uint8:
            array = array.astype(np.uint8)
        outputs = (session or self.session).run(
            None, {self.input_name: np.ascontiguousarray(array)})
        return [torch.from_numpy(np.asarray(o)) for o in outputs]

    def __call__(self, images: Sequence[torch.Tensor]) -> list[Instances]:
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        if len(images) < 2 or self.threads < 2 or not on_cpu:
            return super().__call__(images)
        if self._parallel is None:
            from concurrent.futures import ThreadPoolExecutor

            self._parallel = (self._session(1), ThreadPoolExecutor(self.threads))
        session, pool = self._parallel
        outputs = pool.map(lambda im: self.run(im, session), images)
        return [outputs_to_instances(o) for o in outputs]


def load_exported(path: str | os.PathLike, backend: str | None = None, device: str = "cpu",
                  threads: int | None = None) -> ExportedModel:
    """Load an exported model (file or export folder) for ``backend`` (default: by suffix)."""
    file, backend = find_exported(path, backend)
    if backend == "torchscript":
        return TorchScriptModel(file, device)
    return OnnxRuntimeModel(file, device, threads)


def outputs_to_instances(outputs: Sequence[torch.Tensor]) -> Instances:
    """The traced model's flat outputs (:data:`OUTPUTS`) as Detectron2 :class:`Instances`
    (what ``TracingAdapter.outputs_schema`` rebuilds, without needing the traced Python
    object)."""
    if len(outputs) != len(OUTPUTS):
        raise ExportError(f"exported model returned {len(outputs)} outputs, expected "
                          f"{len(OUTPUTS)} ({', '.join(OUTPUTS)})")
    boxes, classes, masks, scores, size = outputs
    h, w = (int(v) for v in size)
    return Instances((h, w), pred_boxes=Boxes(boxes.float()), pred_classes=classes.long(),
                     pred_masks=masks, scores=scores)


# ----------------------------------------------------------------------------- fast PyTorch


def fuse_conv_norm(model: nn.Module) -> int:
    """Fold each eval-mode norm layer of Detectron2's ``Conv2d`` (``FrozenBatchNorm2d``,
    ``BatchNorm2d``) into the convolution's weight and bias; returns how many were folded.

    ``y = norm(conv(x))`` becomes one convolution with ``w' = w * s`` and ``b' = (b - mean) * s
    + beta``, ``s = gamma / sqrt(var + eps)``: the same function up to float rounding, one
    pass over the activations less per convolution. For inference only: the norm layers are
    removed (``conv.norm = None``), so load weights before calling it, and never train after.
    """
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    count = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if not isinstance(module, Conv2d) or norm is None:
            continue
        if isinstance(norm, nn.BatchNorm2d):
            if norm.training or not norm.track_running_stats:
                continue
        elif not isinstance(norm, FrozenBatchNorm2d):
            continue  # GroupNorm etc. depend on the input
        with torch.no_grad():
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            weight = module.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if module.bias is None else module.bias * scale + shift
            module.weight = nn.Parameter(weight.detach(), requires_grad=False)
            module.bias = nn.Parameter(bias.detach(), requires_grad=False)
        module.norm = None
        count += 1
    return count


# ----------------------------------------------------------------------------- parity


def mask_dice(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Dice of two bool masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def parity(ref: Instances, other: Instances) -> dict:
    """How far ``other``'s post-processed detections are from ``ref``'s (same image).

    Detections are paired in score order. ``same_detections``: equal count and classes;
    ``max_score_diff``; ``min_mask_dice`` over the pairs (pasted bool masks);
    ``max_box_diff`` in pixels.
    """
    n = len(ref)
    same = n == len(other)
    out = {"detections": n, "other_detections": len(other), "same_detections": same,
           "max_score_diff": float("nan"), "min_mask_dice": float("nan"),
           "max_box_diff": float("nan")}
    if not same or n == 0:
        if same:
            out.update(max_score_diff=0.0, min_mask_dice=1.0, max_box_diff=0.0)
        return out
    ra, oa = torch.argsort(ref.scores, descending=True), torch.argsort(other.scores,
                                                                        descending=True)
    r, o = ref[ra], other[oa]
    out["same_detections"] = bool(torch.equal(r.pred_classes.cpu(), o.pred_classes.cpu()))
    out["max_score_diff"] = float((r.scores.float().cpu() - o.scores.float().cpu()).abs().max())
    out["max_box_diff"] = float((r.pred_boxes.tensor.float().cpu()
                                 - o.pred_boxes.tensor.float().cpu()).abs().max())
    if r.has("pred_masks") and o.has("pred_masks"):
        rm, om = r.pred_masks.bool().cpu().numpy(), o.pred_masks.bool().cpu().numpy()
        out["min_mask_dice"] = min(mask_dice(x, y) for x, y in zip(rm, om, strict=True))
    return out


# ----------------------------------------------------------------------------- whole scans

#: :func:`anatomy_slices`: a 4x4 block is foreground when its mean is above this fraction of
#: the volume's intensity window...
ANATOMY_LEVEL = 0.1
#: ... and a slice shows anatomy when at least this fraction of its blocks (and 4) are.
ANATOMY_FRACTION = 0.002
ANATOMY_BLOCK = 4


def anatomy_slices(slices: np.ndarray, level: float = ANATOMY_LEVEL,
                   fraction: float = ANATOMY_FRACTION,
                   percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Which of a volume's (K, H, W) slices show anatomy: a cheap foreground test, (K,) bool.

    The volume's intensity window ``lo``/``hi`` is its ``percentiles`` (the intensity rule's
    0.5/99.5, over the whole volume, every second voxel along each axis). Each slice is cut
    into 4x4-pixel blocks; a block is foreground when its mean is above ``lo + level * (hi -
    lo)`` (10 % of the window); a slice shows anatomy when at least ``fraction`` of its blocks
    (0.2 %, and at least 4: 64 pixels) are foreground. Air outside the head (MRI noise: a few %
    of tissue intensity, and averaging 16 pixels divides its spread by 4) and the zero
    background of skull-stripped scans (BraTS) stay below the level; a slice that cuts the
    head anywhere (scalp, skull marrow, brain, tumor) has far more foreground than 0.2 % of its
    area (115 pixels of 240x240). A volume without contrast (``hi == lo``) counts as all
    anatomy. Slices without anatomy are not run by
    :meth:`tumor_det.inference.predictor.TumorPredictor.predict_volume` (no tumor there); the others are
    predicted exactly as before. A fraction of a second for a 240x240x155 volume.
    """
    slices = np.asarray(slices)
    k = slices.shape[0]
    if k == 0:
        return np.zeros(0, bool)
    sample = slices[::2, ::2, ::2]
    finite = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) \
        else sample.ravel()
    if finite.size == 0:
        return np.ones(k, bool)
    lo, hi = (float(v) for v in np.percentile(finite, percentiles))
    if not hi > lo:
        return np.ones(k, bool)
    threshold = lo + level * (hi - lo)
    b = ANATOMY_BLOCK if min(slices.shape[1:]) >= ANATOMY_BLOCK else 1
    h, w = (slices.shape[1] // b) * b, (slices.shape[2] // b) * b
    blocks = slices[:, :h, :w].astype(np.float32).reshape(k, h // b, b, w // b, b)
    means = np.nan_to_num(blocks.mean(axis=(2, 4)), nan=lo)
    count = (means.reshape(k, -1) > threshold).sum(axis=1)
    need = max(4, int(np.ceil(fraction * means[0].size)))
    return count >= need


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 on this CPU (AVX512-BF16 or AMX): bfloat16 autocast
    is fast there and emulated (slow) elsewhere."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
