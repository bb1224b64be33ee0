"""``--task scan``: a whole BraTS-sized scan end to end, every speed-up beside the baseline.

One synthetic 240x240x155 T1-contrast scan (``tumor_det.data.synthetic.synthetic_volume``:
one 3D lesion; 1x1x2 mm voxels) with slices of air (Rician-like noise) above and below the
head, as a scan's first and last slices often are, written as NIfTI into the work folder. Each
variant runs the product's path end to end: read the NIfTI (``load_nifti``), predict
(``TumorPredictor.predict_volume``: intensity rule, resize, model, masks pasted, 3D lesions),
write the NIfTI mask (``write_nifti_mask``), and the time is split into read / prepare (intensity
rule, resize, to tensor) / model (the raw network call) / post-process (score threshold,
``detector_postprocess``, merge, lesions, back to the input grid) / write.

``baseline`` is the code before issue 13: every slice, batch 1, float32, the PyTorch model as
loaded. The other variants add one change at a time (cumulative unless said otherwise), and
each is compared with the baseline's answer: Dice of the 3D masks, Dice over the slices with
anatomy, and the share of those slices with the same number of detections.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.metrics import mask_dice
from tumor_det.export.tracing import export_model
from tumor_det.inference.anatomy import anatomy_slices
from tumor_det.inference.fast import cpu_bf16_supported
from tumor_det.io.geometry import display_slices
from tumor_det.io.nifti import load_nifti, write_nifti_mask

import numpy as np
import torch

from benchmarks.common import LoadMonitor, Report, log, median, sync

SHAPE = (240, 240, 155)
#: slices of air below and above the head (a share like a BraTS scan's empty end slices)
AIR = (10, 15)
PARTS = ("read", "prepare", "model", "post", "write")


@dataclass
class Variant:
    """One way to run the scan; the fields are TumorPredictor / predict_volume options."""

    name: str
    backend: str = "torch"
    batch: int = 1
    skip_empty: bool = False
    fuse: bool = False
    channels_last: bool = False
    bf16: bool = False
    fp16: bool = False
    note: str = ""
    kwargs: dict = field(default_factory=dict)


def variants(device: str, batch: int, only: list[str] | None = None) -> list[Variant]:
    """The baseline and the speed-ups, cumulative in this order."""
    cuda = device.startswith("cuda")
    out = [Variant("baseline", note="every slice, batch 1, fp32 (the code before)")]
    v = Variant("+ skip slices without anatomy", skip_empty=True)
    out.append(v)
    v = _replace(v, name=f"+ batch {batch}", batch=batch)
    out.append(v)
    v = _replace(v, name="+ conv/norm fused", fuse=True)
    out.append(v)
    v = _replace(v, name="+ channels_last", channels_last=True)
    out.append(v)
    best_torch = v
    if cuda:
        out.append(_replace(best_torch, name="+ fp16 autocast", fp16=True))
    elif cpu_bf16_supported():
        out.append(_replace(best_torch, name="+ bf16 autocast", bf16=True))
    if not cuda or onnxruntime_cuda():  # ONNX Runtime on a GPU needs onnxruntime-gpu
        out.append(_replace(best_torch, name="onnxruntime (skip)", backend="onnxruntime",
                            batch=1, fuse=False, channels_last=False, note="exported model.onnx"))
        if not cuda:
            out.append(_replace(out[-1], name=f"onnxruntime, {batch} slices in parallel",
                                batch=batch, note="one single-threaded run per thread"))
    out.append(_replace(best_torch, name="torchscript (skip)", backend="torchscript",
                        batch=1, fuse=False, channels_last=False, note="exported model.ts"))
    if only:
        keep = {"baseline", *only}
        out = [v for v in out if v.name in keep or any(o in v.name for o in only)]
    return out


def onnxruntime_cuda() -> bool:
    """Whether the installed onnxruntime has the CUDA provider (the onnxruntime-gpu package)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _replace(v: Variant, **kw) -> Variant:
    d = dict(v.__dict__)
    d.update(kw)
    d["note"] = kw.get("note", "")
    return Variant(**d)


# ----------------------------------------------------------------------------- the scan


def make_scan(folder: Path, seed: int = 0, shape: tuple[int, int, int] = SHAPE,
              air: tuple[int, int] = AIR) -> tuple[Path, np.ndarray]:
    """Write the synthetic scan as ``scan.nii.gz`` (cached); returns its path and the label
    volume (1 = tumor)."""
    from tumor_det.data.synthetic import synthetic_volume

    import nibabel as nib

    path = folder / f"scan_{shape[0]}x{shape[1]}x{shape[2]}_s{seed}.nii.gz"
    labels_path = path.with_name(path.name.replace(".nii.gz", "_labels.npy"))
    if path.is_file() and labels_path.is_file():
        return path, np.load(labels_path)
    if shape[0] != shape[1]:
        raise ValueError("the synthetic scan is square in-plane")
    head = shape[2] - sum(air)
    vol, labels, affine = synthetic_volume(seed=seed, size=shape[0], num_slices=head)
    rng = np.random.default_rng([seed, 0xA1])
    corner = np.concatenate([vol[:12, :12].ravel(), vol[-12:, :12].ravel()])
    lo = rng.choice(corner, size=(shape[0], shape[1], air[0])).astype(vol.dtype)
    hi = rng.choice(corner, size=(shape[0], shape[1], air[1])).astype(vol.dtype)
    data = np.concatenate([lo, vol, hi], axis=2)
    labels = np.concatenate([np.zeros_like(labels[:, :, :air[0]]), labels,
                             np.zeros_like(labels[:, :, :air[1]])], axis=2)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    affine = affine.copy()
    affine[:3, 3] = -(np.array(data.shape) - 1) / 2 * spacing
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    np.save(labels_path, labels)
    return path, labels


# ----------------------------------------------------------------------------- running


class PartTimer:
    """Seconds spent in wrapped callables, per part (a predictor's methods, for one run)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PARTS, 0.0)

    def wrap(self, fn, part: str):
        @functools.wraps(fn)
        def timed(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            if part == "model":
                sync(self.device)
            self.seconds[part] += time.perf_counter() - t
            return out

        return timed

    @contextlib.contextmanager
    def part(self, name: str):
        t = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - t


def build_predictor(v: Variant, cfg, threshold: float, export_dir: Path, device: str):
    """A TumorPredictor for the variant (exported backends use the files in ``export_dir``)."""
    from tumor_det.evaluation.threshold import with_score_threshold
    from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

    cfg = with_score_threshold(cfg, threshold)
    if v.backend != "torch":
        name = "model.onnx" if v.backend == "onnxruntime" else "model.ts"
        return TumorPredictor.from_exported(
            cfg, export_dir / name, v.backend,
            PredictorOptions(allow_untrained=True, fp16=v.fp16))
    return TumorPredictor(cfg, PredictorOptions(allow_untrained=True, fp16=v.fp16, fuse=v.fuse,
                                                channels_last=v.channels_last, bf16=v.bf16))


def run_scan_once(predictor, v: Variant, scan: Path, out: Path, device: str):
    """Read, predict and write one scan; (seconds, CPU seconds, parts, VolumePrediction)."""
    timer = PartTimer(device)
    originals = {}
    for name, part in (("prepare", "prepare"), ("model_inputs", "prepare"),
                       ("raw_outputs", "model")):
        originals[name] = getattr(predictor, name)
        setattr(predictor, name, timer.wrap(originals[name], part))
    try:
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with timer.part("read"):
            volume = load_nifti(scan)
        t1 = time.perf_counter()
        pred = predictor.predict_volume(volume, batch_size=v.batch, skip_empty=v.skip_empty)
        sync(device)
        predict_s = time.perf_counter() - t1
        with timer.part("write"):
            write_nifti_mask(pred.mask, out, like=volume)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for name in originals:
            delattr(predictor, name)  # back to the class's methods
    parts = dict(timer.seconds)
    parts["post"] = max(0.0, predict_s - parts["prepare"] - parts["model"])
    return total, cpu, parts, pred


def compare(base, pred, anatomy: np.ndarray) -> dict:
    """Dice of the 3D masks, Dice and equal detection counts over the anatomy slices."""
    idx = np.nonzero(anatomy)[0]
    b = np.stack([base.slices[k].mask for k in idx]) if len(idx) else np.zeros((0, 1, 1))
    p = np.stack([pred.slices[k].mask for k in idx]) if len(idx) else np.zeros((0, 1, 1))
    same = [base.slices[k].num_tumors == pred.slices[k].num_tumors for k in idx]
    return {"dice": mask_dice(base.mask, pred.mask), "dice_anatomy": mask_dice(b, p),
            "same_count": float(np.mean(same)) if same else 1.0}


def run_scan(args: Namespace) -> Report:
    """Whole-scan throughput: baseline and each speed-up, interleaved, with the profile."""
    import tempfile

    device = args.device
    shape = tuple(args.scan_shape)
    air = tuple(max(1, round(a * shape[2] / SHAPE[2])) for a in AIR)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tumor_det_scan_"))
    rep = Report("scan", f"whole scan ({shape[0]}x{shape[1]}x{shape[2]} NIfTI, {device})")
    scan, labels = make_scan(work, seed=args.seed, shape=shape, air=air)
    weights = args.weights or ""
    default = Path("output/demo/model/model_final.pth")
    if not weights and default.is_file():
        weights = str(default)
    opts = ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", device, *args.opts]
    if not weights:  # a random model: fixed detections at score threshold 0
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "TEST.DETECTIONS_PER_IMAGE", str(args.detections)]
    cfg = get_tumor_cfg(args.config, opts)
    threshold = float(cfg.TUMOR.EVAL.SCORE_THRESHOLD) if weights else 0.0
    batch = args.scan_batch or (8 if device.startswith("cuda") else 4)
    vs = variants(device, batch, args.variants)
    exported = {v.backend for v in vs} - {"torch"}
    export_dir = work / "export"
    if exported:
        from tumor_det.evaluation.threshold import with_score_threshold
        from tumor_det.inference.predictor import PredictorOptions, TumorPredictor

        torch.manual_seed(args.seed)
        ref = TumorPredictor(with_score_threshold(cfg, threshold),
                             PredictorOptions(allow_untrained=True, fuse=False))
        fmts = [{"onnxruntime": "onnx", "torchscript": "torchscript"}[b] for b in exported]
        t = time.perf_counter()
        export_model(ref.model, cfg, export_dir, fmts)
        log(f"exported {fmts} in {time.perf_counter() - t:.1f} s")
        del ref
    volume = load_nifti(scan)
    slices, _ = display_slices(volume)
    anatomy = anatomy_slices(slices)
    predictors, build_s = {}, {}
    for v in vs:
        torch.manual_seed(args.seed)  # a random model: the same weights for every variant
        t = time.perf_counter()
        try:
            predictors[v.name] = build_predictor(v, cfg, threshold, export_dir, device)
        except Exception as exc:  # noqa: BLE001 - an unavailable backend is reported
            log(f"{v.name}: cannot build ({type(exc).__name__}: {exc}): left out")
            continue
        build_s[v.name] = time.perf_counter() - t
        # warm-up: the first calls of TorchScript / ONNX Runtime / oneDNN specialise
        predictors[v.name].predict_batch(list(slices[len(slices) // 2:][:2]))
    names = list(predictors)
    times = {n: [] for n in names}
    cpus = {n: [] for n in names}
    parts = {n: [] for n in names}
    preds = {}
    out = work / "mask.nii.gz"
    with LoadMonitor() as load:
        for r in range(args.reps):
            for n in (names if r % 2 == 0 else names[::-1]):
                v = next(x for x in vs if x.name == n)
                total, cpu, p, pred = run_scan_once(predictors[n], v, scan, out, device)
                times[n].append(total)
                cpus[n].append(cpu)
                parts[n].append(p)
                preds[n] = pred
                log(f"scan {n}: {total:.2f} s ({shape[2] / total:.1f} slices/s)")
    base_t, base_c = median(times["baseline"]), median(cpus["baseline"])
    rows = []
    for n in names:
        v = next(x for x in vs if x.name == n)
        t, cpu = median(times[n]), median(cpus[n])
        c = compare(preds["baseline"], preds[n], anatomy)
        run = int(anatomy.sum()) if v.skip_empty else len(anatomy)
        split = [median([p[k] for p in parts[n]]) for k in PARTS]
        dets = sum(p.num_tumors for p in preds[n].slices)
        rows.append([n, run, t, shape[2] / t, base_t / t, cpu, base_c / cpu, dets, c["dice"],
                     c["dice_anatomy"], c["same_count"], *split, build_s[n]])
    truth = labels.astype(bool)
    base_dice = mask_dice(preds["baseline"].mask, truth)
    model = (f"weights {weights}" if weights else
             f"random weights, {args.detections} detections/slice")
    rep.add_text(
        f"`{args.config}` ({model}; score threshold {threshold}), {args.threads} threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), {device}. The scan: "
        f"{shape[0]}x{shape[1]}x{shape[2]} int16 NIfTI (gzip), synthetic head on "
        f"{shape[2] - sum(air)} slices, air on {air[0]} below and {air[1]} above; "
        f"{int(anatomy.sum())} slices pass the anatomy test "
        f"(`tumor_det.inference.anatomy.anatomy_slices`). End to end per scan (read NIfTI, "
        "predict, write "
        f"NIfTI mask), median of {args.reps} interleaved runs after a 2-slice warm-up; "
        f"'build' = model load / export session start (not in the scan time); 'CPU s' = "
        f"the process's CPU time per scan (all threads; robust to other jobs on the cores "
        f"when OpenMP threads do not spin: OMP_WAIT_POLICY=PASSIVE). Cumulative "
        f"speed-ups; the exported backends run the skip rule too. Dice: 3D mask vs the "
        f"baseline's; on the anatomy slices; 'same count': share of anatomy slices with the "
        f"same number of detections; 'detections': over all slices, after the 3D lesion "
        f"rules. Baseline's Dice against the true lesion: "
        f"{base_dice:.3f}.")
    rep.add_table(rows, ["variant", "slices run", "s/scan", "slices/s", "x baseline",
                         "CPU s/scan", "x baseline (CPU)", "detections", "Dice", "Dice (anatomy)",
                         "same count", *[f"{k} s" for k in PARTS], "build s"],
                  floatfmt=("", "d", ".2f", ".1f", ".2f", ".2f", ".2f", "d", ".4f", ".4f", ".3f",
                            ".3f", ".3f", ".3f", ".3f", ".3f", ".2f"))
    rep.add_text(load.summary())
    rep.ratio = {r[0]: (r[4], r[6]) for r in rows}
    rep.busy = load.busy
    return rep
