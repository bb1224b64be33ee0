"""``--task profile``: where each model's inference time goes (torch.profiler ranges put around
the models' parts by monkeypatching, in the benchmark only)."""

from __future__ import annotations

import contextlib
import functools
from argparse import Namespace

import tumor_det  # noqa: F401

import torch

from benchmarks.common import LoadMonitor, Report, autocast, sync
from benchmarks.models import MODELS, build_pair, synthetic_samples
from benchmarks.speed import ours_as_asked, ours_description, spec_from


def _wrap(obj, name: str, label: str) -> None:
    """Replace ``obj.name`` by a wrapper that runs it inside ``record_function(label)``."""
    orig = getattr(obj, name)

    @functools.wraps(orig)
    def wrapped(*a, **kw):
        with torch.profiler.record_function(label):
            return orig(*a, **kw)

    setattr(obj, name, wrapped)


class _RecordedAug:
    """Wraps the predictor's ResizeShortestEdge: its transforms run in a record_function."""

    def __init__(self, aug, label: str) -> None:
        self.aug, self.label = aug, label

    def get_transform(self, image):
        tfm = self.aug.get_transform(image)
        _wrap(tfm, "apply_image", self.label)
        return tfm


OURS_PARTS = ["pre: resize", "pre: to-tensor+normalise+pad", "backbone", "RPN", "ROI box head",
              "mask head", "post: mask paste", "post: other"]
TV_PARTS = ["pre: to-tensor", "pre: to-tensor+normalise+pad", "backbone", "RPN", "ROI box head",
            "mask head", "post: mask paste", "post: other"]


def _instrument_ours(predictor) -> contextlib.ExitStack:
    import detectron2.layers
    import detectron2.modeling.meta_arch.rcnn as rcnn

    model = predictor.model
    predictor.aug = _RecordedAug(predictor.aug, "pre: resize")
    _wrap(model, "preprocess_image", "pre: to-tensor+normalise+pad")
    _wrap(model.backbone, "forward", "backbone")
    _wrap(model.proposal_generator, "forward", "RPN")
    _wrap(model.roi_heads, "_forward_box", "ROI box head")
    _wrap(model.roi_heads, "_forward_mask", "mask head")
    stack = contextlib.ExitStack()
    for mod, name, label in ((detectron2.layers, "paste_masks_in_image", "post: mask paste"),
                             (rcnn, "detector_postprocess", "post: all")):
        orig = getattr(mod, name)
        _wrap(mod, name, label)
        stack.callback(setattr, mod, name, orig)
    return stack


def _instrument_tv(model) -> contextlib.ExitStack:
    import torchvision.models.detection.transform as tvt

    _wrap(model.transform, "forward", "pre: to-tensor+normalise+pad")
    _wrap(model.backbone, "forward", "backbone")
    _wrap(model.rpn, "forward", "RPN")
    rh = model.roi_heads
    for part in ("box_roi_pool", "box_head", "box_predictor"):
        _wrap(getattr(rh, part), "forward", "ROI box head")
    _wrap(rh, "postprocess_detections", "ROI box head")
    for part in ("mask_roi_pool", "mask_head", "mask_predictor"):
        _wrap(getattr(rh, part), "forward", "mask head")
    _wrap(model.transform, "postprocess", "post: all")
    stack = contextlib.ExitStack()
    orig = tvt.paste_masks_in_image
    _wrap(tvt, "paste_masks_in_image", "post: mask paste")
    stack.callback(setattr, tvt, "paste_masks_in_image", orig)
    return stack


def _profile_split(fn, iters: int, n_images: int, device: str) -> dict[str, float]:
    """ms per image of each record_function label (and "total") over ``iters`` calls."""
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda")
                                     else [])
    with profile(activities=acts) as prof:
        for _ in range(iters):
            with record_function("total"):
                fn()
                sync(device)
    ms: dict[str, float] = {}
    for evt in prof.key_averages():
        if evt.key in ("total", "post: all", "post: mask paste", *OURS_PARTS, *TV_PARTS):
            ms[evt.key] = evt.cpu_time_total / 1e3 / (iters * n_images)
    return ms


def run_profile(args: Namespace) -> Report:
    """torch.profiler split of our default test config (and torchvision's, for reference)."""
    spec = spec_from(args)
    rep = Report("profile", f"profile ({args.size} px, batch {args.batches[0]}, "
                 f"{args.device})")
    _, ours, tv = build_pair(spec)
    if args.backend != "torch":
        raise SystemExit("--task profile times the PyTorch model's parts: --backend torch")
    ours = ours_as_asked(args, ours)
    batch = args.batches[0]
    images = [s.image for s in synthetic_samples(batch, args.size, seed=args.seed + 1)]

    def tv_fn():
        with torch.profiler.record_function("pre: to-tensor"):
            tensors = [torch.from_numpy(im.transpose(2, 0, 1).copy()).to(args.device).float()
                       .div_(255) for im in images]
        with torch.inference_mode(), autocast(args.device, args.amp):
            out = tv(tensors)
        return [(o["masks"][:, 0] > 0.5).cpu() for o in out]

    fns = {"ours": lambda: ours.run_model(images), "torchvision": tv_fn}
    splits = {}
    with LoadMonitor() as load:
        with _instrument_ours(ours), _instrument_tv(tv):
            for m, fn in fns.items():
                for _ in range(args.warmup):
                    fn()
                splits[m] = _profile_split(fn, args.reps, batch, args.device)
    rows = []
    for label in ("pre: resize", "pre: to-tensor", "pre: to-tensor+normalise+pad", "backbone",
                  "RPN", "ROI box head", "mask head", "post: mask paste", "post: other",
                  "other (glue, to CPU)", "total"):
        row = [label]
        for m in MODELS:
            s = splits[m]
            if label == "post: other":
                v = s.get("post: all", 0.0) - s.get("post: mask paste", 0.0)
            elif label == "other (glue, to CPU)":
                v = s["total"] - sum(s.get(k, 0.0) for k in (
                    "pre: resize", "pre: to-tensor", "pre: to-tensor+normalise+pad",
                    "backbone", "RPN", "ROI box head", "mask head", "post: all"))
            else:
                v = s.get(label, float("nan"))
            row += [v, 100 * v / s["total"]]
        rows.append(row)
    rep.add_text(
        f"torch.profiler (CPU time of `record_function` ranges put around the model's parts by "
        f"monkeypatching in the benchmark only), {args.reps} profiled passes after "
        f"{args.warmup} warm-up, {args.size}x{args.size} synthetic slices, batch {batch}, "
        f"{args.threads} threads, {args.detections} detections/image (score threshold 0), "
        f"same initialisation; ours: {ours_description(args)}. ms per image. torchvision's "
        f"transform resizes inside "
        f"'to-tensor+normalise+pad'; ours resizes in 'pre: resize' (TumorPredictor). "
        f"'other' = total minus the parts (e.g. box/mask inference glue, output to CPU).")
    rep.add_table(rows, ["part", "ours ms", "ours %", "torchvision ms", "torchvision %"],
                  floatfmt=".1f")
    rep.add_text(load.summary())
    rep.busy = load.busy
    return rep
