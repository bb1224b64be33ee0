"""tumor-det: brain tumor detection and segmentation in MRI with Detectron2 Mask R-CNN.

Importing this package first makes Detectron2 0.6 work on current libraries
(:mod:`tumor_det.compat`); import it before ``detectron2``. ``from tumor_det import
TumorPredictor`` gives the predictor for notebooks (:mod:`tumor_det.inference.predictor`); this
module only re-exports (lazily, so that ``import tumor_det`` stays light for tools that do not
predict). The package layout and its import layers: ``ARCHITECTURE.md``.
"""

from tumor_det import compat

compat.apply()

__version__ = "0.1.0"
__all__ = ["PredictorOptions", "TumorPrediction", "TumorPredictor", "VolumePrediction",
           "get_tumor_cfg"]

#: public name -> the module that defines it
_LAZY = {
    "TumorPredictor": "tumor_det.inference.predictor",
    "PredictorOptions": "tumor_det.inference.predictor",
    "TumorPrediction": "tumor_det.inference.results",
    "VolumePrediction": "tumor_det.inference.results",
    "get_tumor_cfg": "tumor_det.config.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tumor_det' has no attribute {name!r}")
