"""Running an exported model: the backends, the exported-file contract and the backend choice.

``tools/export_model.py`` (:mod:`tumor_det.export.tracing`) writes ``model.ts`` / ``model.onnx``
with ``config.yaml`` and ``export.json`` beside them; this module reads them back for
:class:`~tumor_det.inference.predictor.TumorPredictor` and for the export's own check. The names
of that contract (file names, output order) live here, below both.

* :data:`BACKENDS`: what runs the network: ``torch`` (the PyTorch checkpoint), ``torchscript``
  (``model.ts`` through ``torch.jit.load``), ``onnxruntime`` (``model.onnx``);
* :func:`choose_backend`: the backend and exported file of a predictor's arguments (one
  ``.ts``/``.onnx`` weights file, or an export folder, means an exported backend);
* :class:`ExportedModel` (:class:`TorchScriptModel`, :class:`OnnxRuntimeModel`): called with
  resized uint8 CHW tensors, returns what ``model.inference(..., do_postprocess=False)`` returns;
* :func:`with_exported_settings`: the config keys fixed in the exported graph, from its
  ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from tumor_det.config.lazy import load_config

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Boxes, Instances

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
#: Config keys fixed in an exported graph or defining its input, taken from the exported model's
#: config.yaml (tumor_det.export.tracing writes it beside the model).
EXPORTED_KEYS = ("INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST", "INPUT.FORMAT",
                 "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
                 "MODEL.ROI_HEADS.NUM_CLASSES", "TEST.DETECTIONS_PER_IMAGE")


class ExportError(RuntimeError):
    """The model cannot be exported or an exported file cannot be used (one-line message)."""


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
    p = Path(path)
    cfg_file = (p if p.is_dir() else p.parent) / CONFIG
    # a YACS config.yaml, or one a LazyConfig run saved
    return load_config(cfg_file) if cfg_file.is_file() else None


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


# ----------------------------------------------------------------------------- choice


def choose_backend(backend: str | None, exported: str | os.PathLike | None,
                   weights: Sequence[str]) -> tuple[str, Path | None]:
    """(backend, exported file or None) from the arguments: an explicit ``exported`` path, or
    a single ``.ts``/``.onnx`` weights file, means an exported backend."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    path = exported
    if path is None and len(weights) == 1 and backend_for_file(weights[0]):
        path = weights[0]
    if path is None and backend not in (None, "torch"):
        raise ValueError(f"backend {backend}: give the exported model (tools/export_model.py "
                         "writes model.ts and model.onnx) as --weights / exported")
    if path is None:
        return "torch", None
    if len(weights) > 1:
        raise ValueError("an ensemble runs PyTorch checkpoints, not exported models")
    if backend == "torch":
        raise ValueError(f"{path} is an exported model: --backend torch runs a PyTorch "
                         "checkpoint (.pth)")
    file, backend = find_exported(path, backend)
    return backend, file


def with_exported_settings(cfg: CfgNode, path) -> CfgNode:
    """``cfg`` with :data:`EXPORTED_KEYS` from the exported model's config (logged when they
    differ); post-processing settings (``TUMOR.*``) stay ``cfg``'s."""
    saved = exported_config(path)
    if saved is None:
        logger.warning("no config.yaml beside %s: the given config must match the exported "
                       "model's input size and format", path)
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    for key in EXPORTED_KEYS:
        *parents, leaf = key.split(".")
        src, dst = saved, cfg
        for part in parents:
            src, dst = src[part], dst[part]
        if dst[leaf] != src[leaf]:
            logger.info("%s = %s from the exported model's config (given: %s)", key, src[leaf],
                        dst[leaf])
            dst[leaf] = src[leaf]
    return cfg
