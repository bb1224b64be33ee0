"""``tools/benchmark.py``: tumor-det's Mask R-CNN side by side with torchvision's.

    python tools/benchmark.py --task inference            # latency, throughput, memory
    python tools/benchmark.py --task train                # s/iter, images/s, memory
    python tools/benchmark.py --task profile              # where our inference time goes
    python tools/benchmark.py --task sizes --weights output/quick_cpu/model_final.pth
    python tools/benchmark.py --task accuracy --iters 150 --size 256
    python tools/benchmark.py --task inference --backend onnxruntime   # our exported model
    python tools/benchmark.py --task scan                 # a whole 240x240x155 scan, speed-ups
    python tools/benchmark.py --task inference --quick --size 128   # smoke test

Each task prints tables and replaces its section of ``benchmarks/RESULTS.md`` (``--results``;
``--quick`` writes nowhere unless ``--results`` is given).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import tumor_det  # noqa: F401

import torch

from benchmarks.common import LOAD_LIMIT, RESULTS, Report, log, machine_info, write_section

REPO = Path(__file__).resolve().parents[1]  # the repository (holds benchmarks/)
TASKS = ("inference", "train", "profile", "sizes", "accuracy", "scan")
BACKENDS = ("torch", "torchscript", "onnxruntime")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    p.add_argument("--size", type=int, default=None,
                   help="input size (px, square slices; shortest edge). Default 512 "
                        "(accuracy: 256)")
    p.add_argument("--batches", default="1,4", help="inference batch sizes, comma-separated")
    p.add_argument("--train-batch", type=int, default=2, help="images per training iteration")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads for both models")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--detections", type=int, default=10,
                   help="detections per image on both sides (score threshold 0 for speed)")
    p.add_argument("--tv-config", choices=("stock", "matched"), default="stock",
                   help="torchvision's own RPN/RoI/anchor settings, or ours")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="inference/profile: how ours runs (the PyTorch model, or the model "
                        "exported by tumor_det.export and run by TorchScript / ONNX Runtime)")
    p.add_argument("--fast", action="store_true",
                   help="inference/profile, torch backend: conv/norm folded and channels_last")
    p.add_argument("--bf16", action="store_true",
                   help="inference: ours under bfloat16 autocast on the CPU")
    p.add_argument("--scan-shape", default="240,240,155",
                   help="scan task: the synthetic scan's shape (X,Y,Z; square in-plane)")
    p.add_argument("--scan-batch", type=int, default=None,
                   help="scan task: slices per forward pass of the batched variants "
                        "(default 4 on the CPU, 8 on CUDA)")
    p.add_argument("--variants", default=None,
                   help="scan task: comma-separated substrings of the variants to run beside "
                        "the baseline (default: all)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="Detectron2 config overrides for our model, e.g. "
                        "MODEL.RPN.POST_NMS_TOPK_TEST 300")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up repetitions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=None,
                   help="SGD learning rate (train: 1e-5, as FrozenBN from a random init diverges "
                        "at higher rates; accuracy: 0.01)")
    p.add_argument("--mask-format", choices=("bitmask", "polygon"), default="bitmask",
                   help="train: ground-truth masks given to ours as bitmasks or polygons")
    p.add_argument("--distinct-batches", type=int, default=2,
                   help="train: synthetic batches cycled")
    p.add_argument("--no-memory", action="store_true", help="skip peak-memory subprocesses")
    p.add_argument("--sizes", default="384,512,800", help="sizes task: test sizes (px)")
    p.add_argument("--weights", default=None,
                   help="sizes/scan: trained checkpoint of --config (sizes: else trained "
                        "here; scan: else output/demo/model/model_final.pth when present, else "
                        "random weights with --detections per slice at score threshold 0)")
    p.add_argument("--config", default="quick_cpu.yaml",
                   help="sizes/scan: config of the model (a path or a built-in name)")
    p.add_argument("--iters", type=int, default=None,
                   help="sizes/accuracy: training iterations (sizes: 200; accuracy: 120)")
    p.add_argument("--real", default=str(REPO.parent / "shared" / "datasets" /
                                         "brain_tumor_mri" / "train"),
                   help="accuracy: VIA folder of the real annotated slices")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--results", default=None,
                   help="markdown file to update (default benchmarks/RESULTS.md; none with "
                        "--quick)")
    p.add_argument("--retries", type=int, default=None,
                   help=f"re-run a measurement when the 1-min load exceeded {LOAD_LIMIT} "
                        "(default 1; 0 with --quick)")
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (256 if args.task == "accuracy" else 512)
    args.batches = [int(b) for b in args.batches.split(",")]
    if q and args.batches == [1, 4]:
        args.batches = [1, 2]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.scan_shape = tuple(int(s) for s in args.scan_shape.split(","))
    if len(args.scan_shape) != 3 or args.scan_shape[0] != args.scan_shape[1]:
        p.error("--scan-shape: X,Y,Z with X == Y")
    args.variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    default_reps = {"inference": (3, 10), "train": (2, 8), "profile": (2, 5),
                    "sizes": (2, 7), "accuracy": (0, 0), "scan": (1, 2)}[args.task]
    args.reps = args.reps or default_reps[0 if q else 1]
    args.warmup = args.warmup if args.warmup is not None else (1 if q else 2)
    args.lr = args.lr or (0.01 if args.task == "accuracy" else 1e-5)
    args.iters = args.iters or {"sizes": 30 if q else 200, "accuracy": 4 if q else 120}.get(
        args.task, 0)
    args.retries = args.retries if args.retries is not None else (0 if q else 1)
    if args.results is None and not q:
        args.results = str(RESULTS)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.amp and not args.device.startswith("cuda"):
        log("--amp: float16 autocast is CUDA-only; running float32 on the CPU")
        args.amp = False
    if (args.fast or args.bf16) and args.backend != "torch":
        p.error("--fast/--bf16 apply to the torch backend (an exported model is fixed)")
    return args


def run(args: argparse.Namespace) -> Report:
    """Run the task, again (up to ``--retries`` times) while other jobs loaded the machine."""
    import importlib

    # only the task's module: the speed tasks need none of quality's evaluation libraries
    module, name = {"inference": ("speed", "run_inference"), "train": ("speed", "run_train"),
                    "profile": ("profiling", "run_profile"), "sizes": ("quality", "run_sizes"),
                    "accuracy": ("quality", "run_accuracy"), "scan": ("scan", "run_scan")
                    }[args.task]
    fn = getattr(importlib.import_module(f"benchmarks.{module}"), name)
    for attempt in range(args.retries + 1):
        report = fn(args)
        if not report.busy or attempt == args.retries:
            break
        log(f"1-min load went over {LOAD_LIMIT} during the measurement: running it again")
    if args.opts:
        report.add_text(f"Our config overrides (`--opts`): `{' '.join(args.opts)}`.")
    return report


def section_key(args: argparse.Namespace) -> str:
    """One RESULTS.md section per task, device type, backend and precision (fp32 PyTorch on the
    CPU: the task's name); the scan task's sections also name a config other than the quick
    one."""
    key = args.task + ("" if args.device == "cpu" else "-" + args.device.split(":")[0])
    if args.backend != "torch":
        key += "-" + args.backend
    key += "-fast" if args.fast else ""
    key += "-bf16" if args.bf16 else ""
    key += "-amp" if args.amp else ""
    if args.task == "scan" and Path(args.config).stem != "quick_cpu":
        key += "-" + Path(args.config).stem
    return key


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    info = machine_info()
    log(f"{info} | threads {args.threads} | load {os.getloadavg()}")
    report = run(args)
    if args.results:
        report.task = section_key(args)
        write_section(args.results, report.task, report.markdown(info, argv))
        print(f"updated {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
