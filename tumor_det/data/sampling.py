"""Several training datasets in one run, each with its share of the sampled images.

``TUMOR.DATASET_WEIGHTS`` (one weight per name in ``DATASETS.TRAIN``) becomes a per-image
repeat factor for Detectron2's ``RepeatFactorTrainingSampler``: a dataset's images are drawn in
proportion to its weight, whatever its size (``(1, 1)`` on 1,600 Figshare slices and 500 Br35H
slices samples both alike). Factors below 1 subsample (the sampler rounds stochastically each
epoch). Detectron2 computes repeat factors from category frequency only, hence this helper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import DatasetCatalog
from detectron2.data.samplers import RepeatFactorTrainingSampler

__all__ = ["dataset_repeat_factors", "weighted_train_dataset"]


def dataset_repeat_factors(sizes: Sequence[int], weights: Sequence[float]) -> list[float]:
    """Repeat factor of an image of each dataset so that dataset ``d`` makes up
    ``weights[d] / sum(weights)`` of the sampled images (and the epoch keeps its length)."""
    if len(sizes) != len(weights):
        raise ValueError(f"TUMOR.DATASET_WEIGHTS has {len(weights)} weights for "
                         f"{len(sizes)} training datasets")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError("TUMOR.DATASET_WEIGHTS must be >= 0 with at least one > 0")
    total, weight_sum = sum(sizes), float(sum(weights))
    return [w / weight_sum * total / n if n else 0.0 for n, w in zip(sizes, weights, strict=True)]


def weighted_train_dataset(names: Sequence[str], weights: Sequence[float],
                           filter_empty: bool) -> tuple[list[dict], RepeatFactorTrainingSampler]:
    """The dataset dicts of ``names`` (Detectron2's ``get_detection_dataset_dicts``, each
    name on its own) and a sampler drawing them by ``weights``."""
    from detectron2.data.build import get_detection_dataset_dicts

    parts = [get_detection_dataset_dicts([n], filter_empty=filter_empty) for n in names]
    factors = dataset_repeat_factors([len(p) for p in parts], weights)
    dicts = [d for part in parts for d in part]
    repeat = torch.tensor([f for part, f in zip(parts, factors, strict=True) for _ in part],
                          dtype=torch.float32)
    return dicts, RepeatFactorTrainingSampler(repeat)


def has_outlines(dataset_name: str) -> bool:
    """Whether any annotation of a registered dataset has a segmentation (box-only datasets are
    scored on boxes only)."""
    return any(a.get("segmentation") for d in DatasetCatalog.get(dataset_name)
               for a in d.get("annotations", []))
