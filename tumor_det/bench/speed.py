"""Speed benchmarks: inference latency/throughput, training step time, peak memory, profile."""

from __future__ import annotations

import contextlib
import functools
import json
import resource
import subprocess
import sys
from argparse import Namespace

import tumor_det  # noqa: F401
from tumor_det.bench.common import (
    LoadMonitor,
    ModelSpec,
    Report,
    autocast,
    build_pair,
    build_torchvision,
    interleaved,
    log,
    median,
    now,
    our_cfg,
    ours_predict,
    p90,
    rss_mb,
    sync,
    synthetic_samples,
    to_d2_inputs,
    to_tv_inputs,
    tv_predict,
)

import torch
from detectron2.utils.events import EventStorage

MODELS = ("ours", "torchvision")


def spec_from(args: Namespace, **over) -> ModelSpec:
    kw = dict(size=args.size, detections=args.detections, device=args.device,
              tv_config=args.tv_config, seed=args.seed, opts=list(args.opts))
    kw.update(over)
    return ModelSpec(**kw)


# ----------------------------------------------------------------------------- memory (child)


def memory_child(argv: list[str]) -> None:
    """Entry of the fresh process that measures one model's peak memory; prints one JSON line.

    argv: [json of {"task", "model", "spec", "batch", "iters", "threads", "amp", "lr"}].
    """
    job = json.loads(argv[0])
    torch.set_num_threads(job["threads"])
    spec = ModelSpec(**job["spec"])
    train = job["task"] == "train"
    # only the measured model is built (random init: memory does not depend on the values)
    cfg = our_cfg(spec)
    if job["model"] == "ours":
        if train:
            from detectron2.modeling import build_model

            model = build_model(cfg).train()
        else:
            from tumor_det.predictor import TumorPredictor

            model = TumorPredictor(cfg, score_threshold=0.0, fp16=job["amp"])
    else:
        model = build_torchvision(spec, cfg).train(train)
    base = rss_mb()
    if spec.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    samples = synthetic_samples(job["batch"], spec.size, seed=spec.seed)
    images = [s.image for s in samples]
    if train:
        step = _cycle_steps(job["model"], model, [samples], Namespace(
            lr=job["lr"], amp=job["amp"], device=spec.device, mask_format=job["mask_format"]))
        for _ in range(job["iters"]):
            step()
    else:
        for _ in range(job["iters"]):
            if job["model"] == "ours":
                ours_predict(model, images)
            else:
                tv_predict(model, images, spec.device, job["amp"])
    # VmHWM: this process's peak RSS since exec. ru_maxrss would do, but Linux carries the
    # parent's peak over fork+exec into it (the parent holds both models).
    out = {"base_rss_mb": base,
           "peak_rss_mb": _status_mb("VmHWM")
           or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if spec.device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("MEMORY " + json.dumps(out), flush=True)


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` field in MiB (0 when unavailable)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_memory(task: str, model: str, spec: ModelSpec, batch: int, threads: int, amp: bool,
                   lr: float = 0.0, mask_format: str = "bitmask", iters: int = 2) -> dict:
    """Run :func:`memory_child` in a fresh Python and return its numbers ({} on failure)."""
    job = {"task": task, "model": model, "spec": spec.__dict__, "batch": batch, "iters": iters,
           "threads": threads, "amp": amp, "lr": lr, "mask_format": mask_format}
    proc = subprocess.run([sys.executable, "-m", "tumor_det.bench.cli", "--memory-child",
                           json.dumps(job)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    log(f"memory measurement of {model} failed:\n{proc.stderr[-2000:]}")
    return {}


def memory_cells(mem: dict) -> list:
    cells = [mem.get("peak_rss_mb", float("nan")),
             mem.get("peak_rss_mb", float("nan")) - mem.get("base_rss_mb", float("nan"))]
    if "peak_gpu_mb" in mem:
        cells.append(mem["peak_gpu_mb"])
    return cells


def memory_headers(device: str) -> list[str]:
    heads = ["peak RSS MiB", "RSS over built model MiB"]
    return heads + (["peak GPU MiB"] if device.startswith("cuda") else [])


# ----------------------------------------------------------------------------- inference


def run_inference(args: Namespace) -> Report:
    """Per-image latency (median, p90), throughput and peak memory of both models."""
    spec = spec_from(args)
    rep = Report("inference", f"inference ({args.size} px, {args.device}"
                 f"{', AMP fp16' if args.amp else ''})")
    cfg, ours, tv = build_pair(spec)
    samples = synthetic_samples(max(args.batches), args.size, seed=args.seed + 1)
    images = [s.image for s in samples]
    ndet = {"ours": len(ours_predict(ours, images[:1])[0]),
            "torchvision": len(tv_predict(tv, images[:1], args.device)[0]["scores"])}
    if args.amp:
        ours.fp16 = args.device.startswith("cuda")
    rows, ratio_rows = [], []
    with LoadMonitor() as load:
        for batch in args.batches:
            batch_imgs = images[:batch]
            fns = {"ours": lambda b=batch_imgs: ours_predict(ours, b),
                   "torchvision": lambda b=batch_imgs: tv_predict(tv, b, args.device, args.amp)}
            times = interleaved(fns, args.reps, args.warmup, args.device, per=batch)
            stats = {}
            for m in MODELS:
                mem = measure_memory("inference", m, spec, batch, args.threads, args.amp) \
                    if not args.no_memory and batch == max(args.batches) else {}
                t = times[m]
                stats[m] = (median(t), p90(t))
                rows.append([m, batch, 1e3 * median(t), 1e3 * p90(t), 1 / median(t), ndet[m],
                             *memory_cells(mem)])
                log(f"inference {m} batch {batch}: {1e3 * median(t):.1f} ms/img")
            paired = [a / b for a, b in zip(times["ours"], times["torchvision"], strict=True)]
            ratio_rows.append([batch, stats["ours"][0] / stats["torchvision"][0],
                               stats["ours"][1] / stats["torchvision"][1], median(paired)])
    rep.add_text(
        f"Both Mask R-CNN R50-FPN from one random initialisation (torchvision's, copied into "
        f"ours), FrozenBN, {args.size}x{args.size} synthetic slices, shortest edge "
        f"{args.size} (max {2 * args.size}), {args.threads} threads, {args.warmup} warm-up and "
        f"{args.reps} timed repetitions, interleaved. Fixed number of detections: score "
        f"threshold 0 and {args.detections} detections per image on both sides. Ours: "
        f"`configs/Base-Tumor-RCNN-FPN.yaml` through `TumorPredictor.run_model` (resize, "
        f"to-tensor, model, masks pasted at full size, to CPU); torchvision: "
        f"`maskrcnn_resnet50_fpn` v1 ({args.tv_config} settings), to-tensor + model + mask "
        f"threshold; both under `torch.inference_mode`. Peak memory: max RSS of a fresh "
        f"process per model (build + 2 passes) at batch {max(args.batches)}.")
    rep.add_table(rows, ["model", "batch", "median ms/img", "p90 ms/img", "img/s",
                         "detections/img", *memory_headers(args.device)], floatfmt=".1f")
    rep.add_table(ratio_rows, ["batch", "ratio median (ours/tv)", "ratio p90",
                               "median of paired ratios"], floatfmt=".3f")
    rep.add_text(load.summary())
    rep.ratio, rep.busy = ratio_rows, load.busy
    return rep


# ----------------------------------------------------------------------------- training


def run_train(args: Namespace) -> Report:
    """Seconds per training iteration and images/s, same init, SGD settings and batches."""
    spec = spec_from(args)
    b = args.train_batch
    rep = Report("train", f"training ({b} x {args.size} px, {args.device}"
                 f"{', AMP fp16' if args.amp else ''})")
    _, ours, tv = build_pair(spec, predictor=False)
    samples = synthetic_samples(b * args.distinct_batches, args.size, seed=args.seed + 2)
    batches = [samples[i * b:(i + 1) * b] for i in range(args.distinct_batches)]
    steps = {m: _cycle_steps(m, ours if m == "ours" else tv, batches, args) for m in MODELS}
    times: dict[str, list[float]] = {m: [] for m in MODELS}
    losses: dict[str, list[float]] = {m: [] for m in MODELS}
    with LoadMonitor() as load:
        for _ in range(args.warmup):
            for m in MODELS:
                losses[m].append(steps[m]())
        for i in range(args.reps):
            for m in (MODELS if i % 2 == 0 else MODELS[::-1]):
                sync(args.device)
                t = now()
                losses[m].append(steps[m]())
                sync(args.device)
                times[m].append(now() - t)
        log(f"train: ours {median(times['ours']):.2f} s/it, "
            f"torchvision {median(times['torchvision']):.2f} s/it")
        rows = []
        for m in MODELS:
            mem = measure_memory("train", m, spec, b, args.threads, args.amp, args.lr,
                                 args.mask_format) if not args.no_memory else {}
            finite = sum(x == x and abs(x) != float("inf") for x in losses[m])
            rows.append([m, b, median(times[m]), p90(times[m]), b / median(times[m]),
                         f"{finite}/{len(losses[m])}", *memory_cells(mem)])
    ratio = median(times["ours"]) / median(times["torchvision"])
    rep.add_text(
        f"Both models from one random initialisation (torchvision's copied into ours), "
        f"FrozenBN with stem and res2 frozen on both sides, {args.threads} threads; SGD lr "
        f"{args.lr}, momentum 0.9, weight decay 1e-4; the same {args.distinct_batches} "
        f"synthetic batches of {b} slices at {args.size} px cycled; {args.warmup} warm-up and "
        f"{args.reps} timed iterations (forward, backward, step; no data loading), "
        f"interleaved. Masks given as {args.mask_format}s to ours, bitmasks to torchvision. "
        f"Ours: base config (RPN {2000}/{1000} train proposals, 128 RoIs/image); torchvision: "
        f"{args.tv_config} settings.")
    rep.add_table(rows, ["model", "batch", "median s/iter", "p90 s/iter", "img/s",
                         "finite losses", *memory_headers(args.device)], floatfmt=".3f")
    rep.add_text(f"Ratio (ours/torchvision) of median s/iter: **{ratio:.3f}** "
                 f"(images/s ratio {1 / ratio:.3f}).")
    rep.add_text(load.summary())
    rep.ratio, rep.busy = ratio, load.busy
    return rep


def _cycle_steps(which: str, model, batches, args: Namespace):
    """A step function that cycles through ``batches`` with one optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    amp = args.amp and args.device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = {"i": 0}

    def step() -> float:
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        with autocast(args.device, amp):
            if which == "ours":
                with EventStorage(state["i"]):  # Detectron2 logs into it during training
                    losses = model(to_d2_inputs(batch, args.mask_format))
            else:
                losses = model(*to_tv_inputs(batch, args.device))
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    return step


# ----------------------------------------------------------------------------- profile


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
    batch = args.batches[0]
    images = [s.image for s in synthetic_samples(batch, args.size, seed=args.seed + 1)]

    def tv_fn():
        with torch.profiler.record_function("pre: to-tensor"):
            tensors = [torch.from_numpy(im.transpose(2, 0, 1).copy()).to(args.device).float()
                       .div_(255) for im in images]
        with torch.inference_mode(), autocast(args.device, args.amp):
            out = tv(tensors)
        return [(o["masks"][:, 0] > 0.5).cpu() for o in out]

    fns = {"ours": lambda: ours_predict(ours, images), "torchvision": tv_fn}
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
        f"same initialisation. ms per image. torchvision's transform resizes inside "
        f"'to-tensor+normalise+pad'; ours resizes in 'pre: resize' (TumorPredictor). "
        f"'other' = total minus the parts (e.g. box/mask inference glue, output to CPU).")
    rep.add_table(rows, ["part", "ours ms", "ours %", "torchvision ms", "torchvision %"],
                  floatfmt=".1f")
    rep.add_text(load.summary())
    rep.busy = load.busy
    return rep
