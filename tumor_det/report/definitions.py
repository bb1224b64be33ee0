"""The headline metrics: their names on the page and what they mean."""

from __future__ import annotations

#: key -> (label, definition). Keys are the TumorEvaluator's, cv_summary's and evaluate.py's.
METRICS: dict[str, tuple[str, str]] = {
    "dice": ("Dice", "2|P∩G| / (|P|+|G|) of the predicted and true tumor region; mean over "
             "slices (cases) with tumor"),
    "dice_all": ("Dice, all slices", "Dice over every slice; a tumor-free slice scores 1 when "
                 "nothing is predicted on it, else 0"),
    "iou": ("IoU", "|P∩G| / |P∪G|, mean over slices with tumor"),
    "sensitivity": ("lesion sensitivity", "share of true lesions found: a detection overlaps "
                    "the lesion with mask IoU ≥ TUMOR.EVAL.LESION_IOU"),
    "fp_per_image": ("FP per slice", "detections overlapping no true lesion, per slice"),
    "image_specificity": ("specificity", "share of tumor-free slices with no detection"),
    "image_sensitivity": ("slice sensitivity", "share of tumor slices with a detection"),
    "hd95": ("HD95", "95th-percentile Hausdorff distance between predicted and true outlines "
             "(mm when the pixel spacing is known), mean over slices where both exist"),
    "mask_AP": ("mask AP", "COCO mask average precision over IoU 0.50:0.95 (0-100)"),
    "mask_AP50": ("mask AP50", "COCO mask average precision at IoU 0.5 (0-100)"),
    "segm/AP": ("mask AP", "COCO mask average precision over IoU 0.50:0.95 (0-100)"),
    "bbox/AP": ("box AP", "COCO box average precision over IoU 0.50:0.95 (0-100)"),
    "patient_dice": ("patient Dice", "each patient's slices pooled as one volume, mean over "
                     "tumor patients"),
    "patient_sensitivity": ("patient lesion sensitivity", "lesion sensitivity per patient, "
                            "mean over tumor patients"),
    "hd95_mm": ("HD95 (mm)", "3D 95th-percentile Hausdorff distance in mm"),
    "lesion_sensitivity": ("lesion sensitivity", "3D lesions (26-connected) found by a "
                           "predicted component"),
    "false_positives": ("FP per case", "predicted 3D components that find no lesion"),
    "specificity": ("specificity", "share of tumor-free cases with an empty prediction"),
    "volume_error_ml": ("volume error (mL)", "predicted minus true tumor volume"),
    "abs_volume_error_ml": ("|volume error| (mL)", "absolute volume error"),
    "images": ("slices", "slices evaluated"),
}


def label(key: str) -> str:
    return METRICS.get(key, (key, ""))[0]


def definition(key: str) -> str:
    return METRICS.get(key, (key, ""))[1]


def glossary(keys: list[str]) -> list[tuple[str, str]]:
    """(label, definition) rows for the keys that have one, in order, each label once."""
    seen, rows = set(), []
    for key in keys:
        if key in METRICS and label(key) not in seen:
            seen.add(label(key))
            rows.append((label(key), definition(key)))
    return rows
