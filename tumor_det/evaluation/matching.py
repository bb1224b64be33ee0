"""Which prediction file scores against which ground-truth file (per-case 3D evaluation).

Matching (only ``.nii``/``.nii.gz`` files directly in each folder; hidden files are ignored):

* ground truth ``<case>.nii.gz`` or ``<case>_seg.nii.gz``; beside ``<case>_seg.nii.gz``, the
  files ``<case>.nii.gz`` and ``<case>_<anything>.nii.gz`` are that case's images (BraTS:
  ``<case>_t1ce.nii.gz``; ``tools/prepare_dataset.py --pair scan.nii.gz scan_seg.nii.gz``) and
  are ignored;
* prediction ``<case>_mask.nii.gz`` (what ``tools/splash.py`` writes) or ``<case>.nii.gz``;
  when no ground-truth case has that exact name, the longest ground-truth case name followed
  by ``_`` that starts it (``BraTS_001_t1ce_mask`` -> ``BraTS_001``; nnU-Net's ``_0000``);
* one prediction per case: an exact name wins over a prefix; several prefix matches for one
  case match none of them. Unmatched files are reported (with the reason) and not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
GT_TAG, PRED_TAG = "_seg", "_mask"


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(next(s for s in NIFTI_SUFFIXES if name.lower().endswith(s)))]


def _untag(stem: str, tag: str) -> str:
    return stem[: -len(tag)] if stem.endswith(tag) and len(stem) > len(tag) else stem


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files directly in ``folder`` (hidden ones, e.g. temporaries, left out)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(NIFTI_SUFFIXES))


@dataclass
class Matching:
    """Cases (ground-truth name -> (prediction, ground truth)) and what was left over."""

    pairs: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    unmatched_predictions: dict[str, str] = field(default_factory=dict)  # file name -> reason
    unmatched_ground_truth: list[str] = field(default_factory=list)
    ignored_images: int = 0  # ground-truth folder files that are a _seg case's images


def match_cases(pred_files: Sequence[Path], gt_files: Sequence[Path]) -> Matching:
    """Match predictions to ground truth by file name (the rule in the module docstring)."""
    result = Matching()
    segs = {_untag(_stem(p), GT_TAG) for p in gt_files if _stem(p).endswith(GT_TAG)}
    images = [p for p in gt_files if not _stem(p).endswith(GT_TAG)
              and any(_stem(p) == c or _stem(p).startswith(c + "_") for c in segs)]
    result.ignored_images = len(images)
    gt = {_untag(_stem(p), GT_TAG): p for p in gt_files if p not in images}
    by_prefix = sorted(gt, key=len, reverse=True)

    exact: dict[str, Path] = {}
    prefixed: dict[str, list[Path]] = {}
    for pred in pred_files:
        case = _untag(_stem(pred), PRED_TAG)
        if case in gt:
            exact[case] = pred
            continue
        owner = next((c for c in by_prefix if case.startswith(c + "_")), None)
        if owner is None:
            result.unmatched_predictions[pred.name] = "no ground truth with this case name"
        else:
            prefixed.setdefault(owner, []).append(pred)
    for case, preds in prefixed.items():
        if case in exact:
            reason = f"case {case} is matched by {exact[case].name}"
        elif len(preds) > 1:
            reason = f"several predictions for case {case}"
        else:
            exact[case] = preds[0]
            continue
        result.unmatched_predictions.update({p.name: reason for p in preds})
    for case in sorted(gt):
        if case in exact:
            result.pairs[case] = (exact[case], gt[case])
        else:
            result.unmatched_ground_truth.append(gt[case].name)
    return result
