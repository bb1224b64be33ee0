"""The one score threshold: which config key decides which detections count.

``TUMOR.EVAL.SCORE_THRESHOLD`` rules: the detections scoring at least it are the ones evaluated
(:class:`~tumor_det.evaluation.evaluator.TumorEvaluator`), merged and reported by
:class:`~tumor_det.inference.predictor.TumorPredictor` and written by ``tools/splash.py``; the
cross-validation chooses it (its operating point). ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` is
not a second threshold but the model's candidate filter, below or at it (fixed in an exported
graph); :func:`filter_candidates_at_threshold` raises it to the threshold where the model need
not compute what would be dropped anyway.
"""

from __future__ import annotations

from detectron2.config import CfgNode

#: The config key that rules.
SCORE_THRESHOLD_KEY = "TUMOR.EVAL.SCORE_THRESHOLD"


def score_threshold(cfg: CfgNode) -> float:
    """The score threshold of ``cfg``: ``TUMOR.EVAL.SCORE_THRESHOLD``."""
    return float(cfg.TUMOR.EVAL.SCORE_THRESHOLD)


def with_score_threshold(cfg: CfgNode, value: float | None) -> CfgNode:
    """A copy of ``cfg`` with the score threshold ``value`` (``cfg`` itself when None)."""
    if value is None:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TUMOR.EVAL.SCORE_THRESHOLD = value
    return cfg


def filter_candidates_at_threshold(cfg: CfgNode) -> None:
    """Set the model's candidate filters (``MODEL.ROI_HEADS``, ``RETINANET``, ``PANOPTIC_FPN``)
    to :func:`score_threshold`, in place: the model then drops what the threshold would drop."""
    t = cfg.TUMOR.EVAL.SCORE_THRESHOLD
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = t
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = t
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = t
