"""Merging with mask probabilities and model ensembles (``TumorPredictor(cfg, weights=[...])``).

Hand-made detections check the rules exactly (groups, probability maximum within a model, mean
across models); two random checkpoints check the predictor's ensemble end to end.
"""

from __future__ import annotations

from pathlib import Path

from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.ensemble import fuse_models, merge_with_probabilities, merged_with_groups
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.modeling.postprocessing import merge_instances

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from test_predictor import FAST

H = W = 32


def square(y0: int, x0: int, y1: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def instances(items: list[tuple[float, int, torch.Tensor, int]]) -> Instances:
    """(score, class, mask, probability 0-255 inside the mask) -> Instances with mask_probs."""
    inst = Instances((H, W))
    masks = torch.stack([m for _, _, m, _ in items])
    inst.scores = torch.tensor([s for s, _, _, _ in items])
    inst.pred_classes = torch.tensor([c for _, c, _, _ in items])
    inst.pred_masks = masks
    inst.mask_probs = torch.stack([m.to(torch.uint8) * p for _, _, m, p in items])
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    return inst


STACKED = [
    (0.6, 0, square(20, 20, 28, 28), 140),  # overlaps the 0.7 one (IoU 0.64)
    (0.9, 0, square(0, 0, 16, 16), 200),
    (0.7, 1, square(20, 20, 30, 30), 150),
    (0.8, 1, square(4, 4, 10, 10), 250),  # inside the 0.9 one
    (0.5, 0, square(0, 24, 4, 28), 130),  # alone
]


def test_merge_groups_are_merge_instances_groups():
    inst = instances(STACKED)
    merged, groups = merged_with_groups(inst)
    reference = merge_instances(inst)
    assert torch.equal(merged.scores, reference.scores)
    assert torch.equal(merged.pred_masks, reference.pred_masks)
    assert groups == [[1, 3], [2, 0], [4]]  # indices into the input, kept one first
    for group, mask in zip(groups, merged.pred_masks, strict=True):
        assert torch.equal(inst.pred_masks[group[0]], mask)  # the kept member's own
    union, _ = merged_with_groups(inst, mask="union")
    for group, mask in zip(groups, union.pred_masks, strict=True):
        assert torch.equal(inst.pred_masks[group].any(dim=0), mask)  # the union of the group
    # no merge: the input order, one group each
    apart = instances([STACKED[1], STACKED[4]])
    merged, groups = merged_with_groups(apart)
    assert groups == [[0], [1]] and torch.equal(merged.scores, apart.scores)


def test_merged_probabilities_are_the_kept_members():
    inst = instances(STACKED)
    merged, groups = merged_with_groups(inst)
    with_probs = merge_with_probabilities(inst)
    for group, probs in zip(groups, with_probs.mask_probs, strict=True):
        assert torch.equal(probs, inst.mask_probs[group[0]])
    assert torch.equal(with_probs.pred_masks, merged.pred_masks)


def test_merged_probabilities_with_the_union_rule_are_the_members_maximum():
    merged = merge_with_probabilities(instances(STACKED), mask="union")
    top = merged.mask_probs[0]
    assert top[5, 5] == 250 and top[0, 0] == 200 and top[20, 20] == 0
    assert merged.mask_probs[1][21, 21] == 150 and merged.mask_probs[1][29, 29] == 150
    assert merged.mask_probs[2].max() == 130


def test_fusing_models_averages_over_the_models_that_found_a_tumor():
    a = instances([(0.9, 0, square(0, 0, 16, 16), 200)])
    b = instances([(0.7, 1, square(2, 2, 18, 18), 150),  # the same tumor, shifted (IoU 0.62)
                   (0.6, 1, square(24, 24, 30, 30), 180)])  # only model b
    fused = fuse_models([a, b])
    assert fused.scores.tolist() == pytest.approx([0.9, 0.6])
    assert fused.pred_classes.tolist() == [0, 1]  # the highest-scoring member's
    assert fused.votes.tolist() == [2, 1]
    both = square(2, 2, 16, 16)  # (200 + 150) / 2 >= 127; one model alone: 100 or 75
    assert torch.equal(fused.pred_masks[0], both)
    assert fused.mask_probs[0][8, 8] == 175 and fused.mask_probs[0][1, 1] == 100
    assert fused.pred_boxes.tensor[0].tolist() == [2, 2, 16, 16]
    assert torch.equal(fused.pred_masks[1], b.pred_masks[1])  # found by one model: kept as is
    assert torch.equal(fused.mask_probs[1], b.mask_probs[1])
    # one model: its detections unchanged; no detections at all: empty
    alone = fuse_models([b])
    assert torch.equal(alone.pred_masks, b.pred_masks) and alone.votes.tolist() == [1, 1]
    empty = instances([(0.5, 0, square(0, 0, 2, 2), 200)])[:0]
    assert len(fuse_models([empty, empty])) == 0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    """Two different checkpoints of the FAST model: a random one and a perturbed copy (like two
    folds of one training, their detections overlap in part)."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1)
    state = build_model(get_tumor_cfg(None, FAST)).state_dict()
    noise = torch.Generator().manual_seed(2)
    perturbed = {k: v + 0.2 * v.float().std() * torch.randn(v.shape, generator=noise)
                 if v.is_floating_point() and v.numel() > 1 else v for k, v in state.items()}
    paths = [folder / "fold0.pth", folder / "fold1.pth"]
    for path, weights in zip(paths, (state, perturbed), strict=True):
        torch.save({"model": weights}, path)
    return paths


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 56, 3), dtype=np.uint8) for _ in range(2)]


def test_ensemble_includes_each_models_detections(checkpoints):
    cfg = get_tumor_cfg(None, FAST)
    singles = [TumorPredictor.ensemble(with_score_threshold(cfg, 0.0), [w]) for w in checkpoints]
    ensemble = TumorPredictor.ensemble(with_score_threshold(cfg, 0.0), checkpoints)
    assert len(ensemble.models) == 2 and ensemble.weights == [str(w) for w in checkpoints]
    per_model = [p.run_model(images()) for p in singles]
    fused = ensemble.run_model(images())
    assert not any(f.has("mask_probs") for f in fused)  # kept only when asked for
    found = 0
    for k, inst in enumerate(fused):
        masks = inst.pred_masks.bool()
        assert len(inst) <= sum(len(m[k]) for m in per_model)
        for single in per_model:
            for score, mask in zip(single[k].scores, single[k].pred_masks.bool(), strict=True):
                found += 1
                # its tumor is in the ensemble: overlapping, at least as confident (a
                # random model's empty mask: the same detection)
                touch = (masks & mask).flatten(1).any(dim=1)
                if not mask.any():
                    touch = ~masks.flatten(1).any(dim=1)
                assert (touch & (inst.scores >= score)).any()
        for mask, votes, score in zip(masks, inst.votes, inst.scores, strict=True):
            if votes == 1:  # found by one model: exactly that model's detection
                assert any(bool(((m.pred_masks.bool() == mask).flatten(1).all(dim=1)
                                 & (m.scores == score)).any()) for m in (s[k] for s in per_model))
    assert found > 0 and any((f.votes > 1).any() for f in fused)


def test_single_model_ensemble_is_that_model(checkpoints):
    cfg = get_tumor_cfg(None, [*FAST, "MODEL.WEIGHTS", str(checkpoints[0])])
    plain = TumorPredictor(with_score_threshold(cfg, 0.0)).run_model(images())
    listed = TumorPredictor.ensemble(with_score_threshold(get_tumor_cfg(None, FAST), 0.0),
                                     [checkpoints[0]]).run_model(images())
    for a, b in zip(plain, listed, strict=True):
        assert len(a) > 0
        assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_masks, b.pred_masks)
        assert torch.equal(a.pred_classes, b.pred_classes)


def test_ensemble_probabilities(checkpoints):
    ensemble = TumorPredictor.ensemble(with_score_threshold(get_tumor_cfg(None, FAST), 0.0),
                                       checkpoints, PredictorOptions(probabilities=True))
    for pred in ensemble.predict_batch(images()):
        assert pred.probability.dtype == np.uint8 and pred.probability.shape == (48, 56)
        assert (pred.probability[pred.mask] >= 127).all()  # every mask pixel: p >= 0.5
