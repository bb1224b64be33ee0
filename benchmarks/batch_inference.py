"""Throughput of splash on Ray (1 and 2 workers, one thread each) beside the single-process run.

``python benchmarks/batch_inference.py [--inputs N] [--config quick_cpu]`` writes N generated
512 px slices, then times, in one invocation: the single-process run
(:func:`tumor_det.splash.batch.run_batch`, one thread) and the Ray run with 1 and 2 workers on a
local Ray (``num_cpus=2``). Each is run on N and 2N inputs: the difference is the cost of N
inputs without the fixed start-up (model loading, actor start), so inputs per second and the
per-input overhead of the Ray path (Ray 1 worker minus single process) are free of it. Random
weights: speed only. Prints a table and the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tumor_det  # noqa: E402, F401
from tumor_det.config.config import get_tumor_cfg  # noqa: E402
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor  # noqa: E402
from tumor_det.io import expand_inputs  # noqa: E402
from tumor_det.splash.batch import run_batch  # noqa: E402
from tumor_det.splash.cluster import Cluster, PredictorSpec  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from tabulate import tabulate  # noqa: E402


def make_slices(folder: Path, n: int, size: int = 512) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = rng.integers(0, 60, (size, size), dtype=np.uint8)
        cv2.circle(image, (size // 2, size // 3), size // 8, 220, -1)
        paths.append(folder / f"slice{i:04d}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=16, help="N (the runs use N and 2N)")
    ap.add_argument("--config", default="quick_cpu.yaml")
    ap.add_argument("--batch-size", type=int, default=1)
    args = ap.parse_args()
    import ray

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="batch_bench_"))
    paths = make_slices(work / "in", 2 * args.inputs)
    cfg = get_tumor_cfg(args.config, ["MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    weights = work / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    options = PredictorOptions()
    local = TumorPredictor.from_weights(cfg, [str(weights)], None, options)
    spec = PredictorSpec(cfg, [str(weights)], None, options)
    os.environ["TQDM_DISABLE"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    load0 = os.getloadavg()
    rows, per_input = [], {}
    modes = [("single process", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2)]
    for name, workers in modes:
        times = {}
        for n in (args.inputs, 2 * args.inputs):
            sources = expand_inputs([str(p) for p in paths[:n]])
            out = work / f"out_{workers}_{n}"
            if workers is None:
                times[n] = timed(lambda s=sources, o=out: run_batch(
                    local, s, o, batch_size=args.batch_size))
            else:
                cluster = Cluster(workers=workers, threads=1)
                times[n] = timed(lambda s=sources, o=out, c=cluster: run_batch(
                    spec, s, o, batch_size=args.batch_size, cluster=c))
        slope = (times[2 * args.inputs] - times[args.inputs]) / args.inputs
        per_input[name] = slope
        rows.append([name, f"{times[args.inputs]:.1f}", f"{times[2 * args.inputs]:.1f}",
                     f"{1 / slope:.2f}", f"{slope * 1000:.0f}",
                     f"{2 * args.inputs / times[2 * args.inputs]:.2f}"])
    load1 = os.getloadavg()
    ray.shutdown()
    print(tabulate(rows, headers=["mode", f"wall {args.inputs} (s)",
                                  f"wall {2 * args.inputs} (s)", "inputs/s (steady)",
                                  "ms/input (steady)", f"inputs/s ({2 * args.inputs}, wall)"]))
    base, one, two = (per_input[m[0]] for m in modes)
    print(f"\nRay per-input overhead (1 worker - single process): {(one - base) * 1000:.0f} ms "
          f"= {100 * (one - base) / base:.1f} % of a slice's {base * 1000:.0f} ms")
    print(f"2 workers vs 1 worker: {one / two:.2f}x; vs single process: {base / two:.2f}x")
    print(f"load average (1, 5, 15 min) before: {load0}, after: {load1}; "
          f"cores: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
