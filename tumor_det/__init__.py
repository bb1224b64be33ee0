"""tumor-det: brain tumor detection and segmentation in MRI with Detectron2 Mask R-CNN.

Importing this package first makes Detectron2 0.6 work on current libraries
(:mod:`tumor_det.compat`); import it before ``detectron2``. ``from tumor_det import
TumorPredictor`` gives the predictor for notebooks (:mod:`tumor_det.inference.predictor`).
"""

from tumor_det import compat

compat.apply()

__version__ = "0.1.0"
__all__ = ["TumorPredictor", "TumorPrediction", "get_tumor_cfg"]


def __getattr__(name: str):
    # Lazy: `import tumor_det` stays light for tools that do not predict.
    if name in ("TumorPredictor", "TumorPrediction"):
        from tumor_det.inference import predictor

        return getattr(predictor, name)
    if name == "get_tumor_cfg":
        from tumor_det.config.config import get_tumor_cfg

        return get_tumor_cfg
    raise AttributeError(f"module 'tumor_det' has no attribute {name!r}")
