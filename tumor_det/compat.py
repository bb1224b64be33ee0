"""Make Detectron2 0.6 run on current libraries. Applied once, by ``import tumor_det``.

Each fix is small, idempotent and only acts where the library lacks what Detectron2 expects:

* Pillow >= 10 removed ``Image.LINEAR``; ``detectron2.data.transforms`` reads it at import time.
* numpy >= 1.24 removed the aliases ``np.int``, ``np.float``, ``np.str`` and ``np.object``, used
  by Detectron2's data loader (``build.py``) and evaluators.
* setuptools >= 81 no longer ships ``pkg_resources``; ``detectron2.model_zoo`` imports it to find
  its bundled YAML configs. We give that one module a shim backed by ``importlib.resources``
  instead of installing a fake ``pkg_resources`` for every library.
* The pure-Python Detectron2 wheel has no compiled ``detectron2._C``. Mask R-CNN R50-FPN needs
  nothing from it (torchvision supplies ROIAlign and NMS); we register
  :mod:`tumor_det._C_fallback`, whose ops raise a clear error. A real compiled ``_C`` (Detectron2
  built from source) is found first and used as it is.
* Detectron2 0.6's ``detectron2/export/__init__.py`` imports its Caffe2 exporter, and Caffe2 left
  PyTorch in 2.0: :func:`import_detectron2_export` imports the tracing parts without it (applied
  where export is needed, not by ``import tumor_det``: it loads torch.onnx).

This module is the only place that patches Detectron2 or another library
(``tests/test_architecture.py`` checks that no other module writes ``sys.modules``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import os
import sys
import types
import warnings

_applied = False


def patch_pillow() -> None:
    """Restore ``PIL.Image.LINEAR`` (an alias of BILINEAR, removed in Pillow 10)."""
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.Resampling.BILINEAR


def patch_numpy() -> None:
    """Restore numpy's removed builtin-type aliases (they always meant the Python builtins)."""
    import numpy as np

    for name, builtin in (("int", int), ("float", float), ("str", str), ("object", object),
                          ("bool", bool)):
        if name not in vars(np):  # vars(): getattr would emit numpy's FutureWarning
            setattr(np, name, builtin)


def has_compiled_ops() -> bool:
    """True when a real compiled ``detectron2._C`` extension is installed."""
    module = sys.modules.get("detectron2._C")
    if module is not None:
        return not getattr(module, "IS_TUMOR_DET_FALLBACK", False)
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return False
    finder = importlib.machinery.PathFinder
    return finder.find_spec("_C", list(spec.submodule_search_locations)) is not None


def install_c_fallback() -> None:
    """Register :mod:`tumor_det._C_fallback` as ``detectron2._C`` unless a compiled one exists."""
    if has_compiled_ops():
        return
    from tumor_det import _C_fallback

    sys.modules["detectron2._C"] = _C_fallback


def _model_zoo_pkg_resources() -> types.ModuleType:
    """The one ``pkg_resources`` function ``detectron2.model_zoo`` calls, on importlib.resources."""
    shim = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return os.fspath(importlib.resources.files(package).joinpath(resource))

    shim.resource_filename = resource_filename
    return shim


def patch_model_zoo() -> None:
    """Import ``detectron2.model_zoo`` with a scoped ``pkg_resources`` shim where it is missing."""
    if "detectron2.model_zoo.model_zoo" in sys.modules:
        return
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    shim = _model_zoo_pkg_resources()
    sys.modules["pkg_resources"] = shim
    try:
        import detectron2.model_zoo.model_zoo  # noqa: F401  (binds the shim inside model_zoo)
    finally:
        # Only model_zoo keeps the shim; other libraries still see that pkg_resources is absent.
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def patch_rotated_nms() -> None:
    """Make ``nms_rotated`` (a ``torch.ops.detectron2`` op) fail clearly without compiled ops."""
    if has_compiled_ops():
        return
    from tumor_det._C_fallback import missing_op

    import detectron2.layers
    import detectron2.layers.nms

    def nms_rotated(boxes, scores, iou_threshold):  # noqa: ANN001, ARG001
        raise missing_op("nms_rotated")

    detectron2.layers.nms.nms_rotated = nms_rotated
    detectron2.layers.nms_rotated = nms_rotated


@contextlib.contextmanager
def fallback_hidden():
    """Within this block ``import detectron2._C`` fails as it would without the fallback."""
    module = sys.modules.get("detectron2._C")
    if module is None or not getattr(module, "IS_TUMOR_DET_FALLBACK", False):
        yield
        return
    sys.modules["detectron2._C"] = None
    try:
        yield
    finally:
        sys.modules["detectron2._C"] = module


def patch_collect_env() -> None:
    """Detectron2's environment report (also logged by ``default_setup``) must not call the
    fallback's missing compiler-info ops: it runs with the fallback hidden and says
    "detectron2._C: not built" instead."""
    if has_compiled_ops():
        return
    import detectron2.engine.defaults as defaults
    import detectron2.utils.collect_env as collect_env

    original = collect_env.collect_env_info
    if getattr(original, "tumor_det_patched", False):
        return

    @functools.wraps(original)
    def collect_env_info() -> str:
        with fallback_hidden():
            return original()

    collect_env_info.tumor_det_patched = True
    collect_env.collect_env_info = collect_env_info
    defaults.collect_env_info = collect_env_info


def import_detectron2_export() -> types.SimpleNamespace:
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
        from pathlib import Path

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
    return types.SimpleNamespace(TracingAdapter=TracingAdapter,
                                 dump_torchscript_IR=dump_torchscript_IR)


def quiet_known_warnings() -> None:
    """Silence deprecation warnings that Detectron2 0.6 triggers in torch on every import."""
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.* is deprecated")
    warnings.filterwarnings("ignore", message=r".*torch\.meshgrid: in an upcoming release")


def apply() -> None:
    """Apply every fix once (safe to call repeatedly)."""
    global _applied
    if _applied:
        return
    quiet_known_warnings()
    patch_pillow()
    patch_numpy()
    install_c_fallback()
    patch_model_zoo()
    patch_rotated_nms()
    patch_collect_env()
    _applied = True
