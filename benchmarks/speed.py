"""Speed benchmarks: inference latency/throughput, training step time and peak memory.

``python -m benchmarks.speed JOB`` is the fresh process that measures one model's peak memory
(:func:`measure_memory` starts it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import tumor_det  # noqa: F401

import torch

from benchmarks.common import (
    LoadMonitor,
    Report,
    interleaved,
    log,
    median,
    p90,
    proc_status_mb,
    sync,
)
from benchmarks.models import (
    MODELS,
    ModelSpec,
    TrainStep,
    build_pair,
    build_torchvision,
    our_cfg,
    synthetic_samples,
    tv_predict,
)

ROOT = Path(__file__).resolve().parents[1]  # holds the benchmarks package


def spec_from(args: Namespace, **over) -> ModelSpec:
    kw = dict(size=args.size, detections=args.detections, device=args.device,
              tv_config=args.tv_config, seed=args.seed, opts=list(args.opts))
    kw.update(over)
    return ModelSpec(**kw)


# ----------------------------------------------------------------------------- memory


def memory_child(job: dict) -> dict:
    """Build one model, run it ``job["iters"]`` times; its peak memory (this process's)."""
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
            from tumor_det.evaluation.threshold import with_score_threshold
            from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

            model = TumorPredictor(with_score_threshold(cfg, 0.0),
                                   PredictorOptions(fp16=job["amp"], allow_untrained=True))
    else:
        model = build_torchvision(spec, cfg).train(train)
    base = proc_status_mb("VmRSS")
    if spec.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    samples = synthetic_samples(job["batch"], spec.size, seed=spec.seed)
    images = [s.image for s in samples]
    step = TrainStep(job["model"], model, job["lr"], spec.device, job["amp"],
                     job["mask_format"]) if train else None
    for _ in range(job["iters"]):
        if step:
            step(samples)
        elif job["model"] == "ours":
            model.run_model(images)
        else:
            tv_predict(model, images, spec.device, job["amp"])
    # VmHWM: this process's peak RSS since exec (see proc_status_mb)
    out = {"base_rss_mb": base, "peak_rss_mb": proc_status_mb("VmHWM")}
    if spec.device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_memory(task: str, model: str, spec: ModelSpec, batch: int, threads: int, amp: bool,
                   lr: float = 0.0, mask_format: str = "bitmask", iters: int = 2) -> dict:
    """Run :func:`memory_child` in a fresh Python and return its numbers ({} on failure).

    A subprocess, not a thread: the peak RSS of a process that holds only the measured model
    (this one holds both, and its peak never goes down).
    """
    job = {"task": task, "model": model, "spec": spec.__dict__, "batch": batch, "iters": iters,
           "threads": threads, "amp": amp, "lr": lr, "mask_format": mask_format}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.speed", json.dumps(job)],
                          cwd=ROOT, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    log(f"memory measurement of {model} failed:\n{proc.stderr[-2000:]}")
    return {}


def memory_cells(mem: dict) -> list:
    nan = float("nan")
    cells = [mem.get("peak_rss_mb", nan), mem.get("peak_rss_mb", nan) - mem.get("base_rss_mb", nan)]
    if "peak_gpu_mb" in mem:
        cells.append(mem["peak_gpu_mb"])
    return cells


def memory_headers(device: str) -> list[str]:
    heads = ["peak RSS MiB", "RSS over built model MiB"]
    return heads + (["peak GPU MiB"] if device.startswith("cuda") else [])


# ----------------------------------------------------------------------------- inference


def ours_as_asked(args: Namespace, ours):
    """Ours with ``--backend`` (the model exported by ``tumor_det.export.tracing`` into the work
    folder, run through TumorPredictor's exported backend), ``--fast`` (conv/norm folded,
    channels_last) and ``--bf16`` (bfloat16 autocast); the same weights (torchvision's)."""
    from tumor_det.evaluation.threshold import with_score_threshold
    from tumor_det.export.tracing import export_model
    from tumor_det.inference.backends import FORMAT_OF_BACKEND
    from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

    if args.backend != "torch":
        fmt = FORMAT_OF_BACKEND[args.backend]
        folder = Path(args.workdir or tempfile.mkdtemp(prefix="tumor-bench-")) / "export"
        t = time.perf_counter()
        files = export_model(ours.model, ours.cfg, folder, [fmt])
        log(f"exported ours to {files[fmt]} in {time.perf_counter() - t:.1f} s")
        return TumorPredictor.from_exported(with_score_threshold(ours.cfg, 0.0), files[fmt],
                                            args.backend, PredictorOptions(allow_untrained=True))
    if args.fast:
        ours.optimize(fuse=True, channels_last=True)
    if args.bf16:
        ours.bf16 = True
    return ours


def ours_description(args: Namespace) -> str:
    if args.backend != "torch":
        how = ("model.onnx in an ONNX Runtime session" if args.backend == "onnxruntime"
               else "model.ts through torch.jit.load")
        return (f"exported by `tumor_det.export.tracing` ({how}) and run through "
                f"`TumorPredictor(backend={args.backend!r})`")
    parts = []
    if args.fast:
        parts.append("conv/norm folded and channels_last (`TumorPredictor.optimize`)")
    if args.bf16:
        parts.append("bfloat16 autocast")
    return "PyTorch" + (f", {', '.join(parts)}" if parts else "")


def run_inference(args: Namespace) -> Report:
    """Per-image latency (median, p90), throughput and peak memory of both models."""
    spec = spec_from(args)
    how = "".join([f", ours: {args.backend}" if args.backend != "torch" else "",
                   ", ours fast" if args.fast else "", ", ours bf16" if args.bf16 else ""])
    rep = Report("inference", f"inference ({args.size} px, {args.device}"
                 f"{', AMP fp16' if args.amp else ''}{how})")
    cfg, ours, tv = build_pair(spec)
    ours = ours_as_asked(args, ours)
    samples = synthetic_samples(max(args.batches), args.size, seed=args.seed + 1)
    images = [s.image for s in samples]
    ndet = {"ours": len(ours.run_model(images[:1])[0]),
            "torchvision": len(tv_predict(tv, images[:1], args.device)[0]["scores"])}
    if args.amp:
        ours.fp16 = args.device.startswith("cuda")
    rows, ratio_rows = [], []
    with LoadMonitor() as load:
        for batch in args.batches:
            batch_imgs = images[:batch]
            fns = {"ours": lambda b=batch_imgs: ours.run_model(b),
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
        f"to-tensor, model, masks pasted at full size, to CPU), {ours_description(args)}; "
        f"torchvision: "
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
    steps = {m: TrainStep(m, ours if m == "ours" else tv, args.lr, args.device, args.amp,
                          args.mask_format) for m in MODELS}
    times: dict[str, list[float]] = {m: [] for m in MODELS}
    losses: dict[str, list[float]] = {m: [] for m in MODELS}

    def step(m: str) -> float:  # the same distinct batches cycled on both sides
        return steps[m](batches[steps[m].iter % len(batches)])

    with LoadMonitor() as load:
        for _ in range(args.warmup):
            for m in MODELS:
                losses[m].append(step(m))
        for i in range(args.reps):
            for m in (MODELS if i % 2 == 0 else MODELS[::-1]):
                sync(args.device)
                t = time.perf_counter()
                losses[m].append(step(m))
                sync(args.device)
                times[m].append(time.perf_counter() - t)
        log(f"train: ours {median(times['ours']):.2f} s/it, "
            f"torchvision {median(times['torchvision']):.2f} s/it")
        rows = []
        for m in MODELS:
            mem = measure_memory("train", m, spec, b, args.threads, args.amp, args.lr,
                                 args.mask_format) if not args.no_memory else {}
            finite = int(torch.isfinite(torch.tensor(losses[m])).sum())
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


if __name__ == "__main__":
    print("MEMORY " + json.dumps(memory_child(json.loads(sys.argv[1]))), flush=True)
