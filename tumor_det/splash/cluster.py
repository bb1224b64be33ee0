"""Splash on a Ray cluster: Ray Data's ``map_batches`` with an actor pool, one
:class:`~tumor_det.inference.predictor.TumorPredictor` per actor.

Ray Data schedules, balances and retries (actors are restarted and their tasks retried when a
worker dies: Ray Data's defaults ``max_restarts=-1``, ``max_task_retries=-1``); this module only
says what a task is. The tasks are :func:`~tumor_det.splash.shards.plan_run`'s (one forward
batch of 2D inputs, or one volume/video), each actor runs them through a
:class:`~tumor_det.splash.shards.MarkerSink` into the output folder (the same files and done
markers as a local run) and hands the markers back; the driver writes the run's tables from
them. Inputs, weights and the output folder must be at the same path on every node (a shared
file system). Ray is imported only here, and only when called: tumor_det works without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.inference.lesions import LesionRules
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import UsageError
from tumor_det.splash.shards import (
    MarkerSink,
    PartResult,
    RunPlan,
    SinkSettings,
    inputs_inside,
    resume,
)

import numpy as np
from detectron2.config import CfgNode
from tqdm import tqdm

RAY_MISSING = "--ray needs Ray: pip install 'tumor-det[ray]' (or pip install 'ray[data]')"


def import_ray():
    """``ray`` (with Ray Data), or :class:`UsageError` with the install line."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(RAY_MISSING) from exc
    return ray


@dataclass
class PredictorSpec:
    """What builds the predictor in each actor (as ``tools/splash.py`` builds it)."""

    cfg: CfgNode
    weights: list[str]
    backend: str | None = None
    options: PredictorOptions | None = None

    def build(self, device: str | None = None) -> TumorPredictor:
        cfg = self.cfg.clone()
        if device:
            cfg.MODEL.DEVICE = device
        return TumorPredictor.from_weights(cfg, self.weights, self.backend, self.options)


@dataclass(frozen=True)
class Cluster:
    """Where and how wide: ``address`` (None: a local Ray; ``auto``: the running cluster;
    ``ray://host:10001`` or ``host:6379``), actors, CPU threads and GPUs per actor."""

    address: str | None = None
    workers: int = 1
    threads: int = 1
    gpus: float = 0.0


class SplashWorker:
    """A Ray Data actor: one predictor and one marker sink; each call runs a batch of tasks."""

    def __init__(self, spec: PredictorSpec, plan: RunPlan, output: str, settings: SinkSettings,
                 guarded: list[str], batch_size: int, rules: LesionRules | None, threads: int,
                 gpus: float):
        import torch

        os.environ["TQDM_DISABLE"] = "1"  # the driver shows the one progress bar
        torch.set_num_threads(max(1, threads))
        self.predictor = spec.build("cuda" if gpus > 0 else None)
        self.sink = MarkerSink.create(plan, Path(output), self.predictor.cfg, settings,
                                      [Path(p) for p in guarded])
        self.batch_size, self.rules = batch_size, rules

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        markers, counts = [], []
        for task in batch["indices"]:
            indices = json.loads(str(task))
            done = self.sink.run(self.predictor, indices, self.batch_size, self.rules)
            markers.append(json.dumps(list(done.values())))
            counts.append(len(indices))
        return {"markers": np.array(markers, dtype=object), "n": np.array(counts)}


def run_on_ray(spec: PredictorSpec, plan: RunPlan, output: Path, settings: SinkSettings,
               indices: Sequence[int], cluster: Cluster, batch_size: int = 4,
               rules: LesionRules | None = None, resume_done: bool = False,
               worker: type = SplashWorker) -> PartResult:
    """Run the inputs at ``indices`` of ``plan`` on Ray, ``cluster.workers`` actors at a time;
    the markers of every input (resumed ones too with ``resume_done``). Connects to
    ``cluster.address`` unless Ray is initialised already (and then leaves it running)."""
    ray = import_ray()
    if cluster.workers < 1 or cluster.threads < 1 or cluster.gpus < 0:
        raise UsageError("--workers and --threads-per-worker must be at least 1, "
                         "--gpus-per-worker not negative")
    output = Path(output)
    todo, done = resume(plan, indices, output) if resume_done else (list(indices), {})
    tasks = plan.subset(todo)
    markers = dict(done)
    if not tasks:
        return PartResult(markers, len(done))
    started = not ray.is_initialized()
    if started:
        ray.init(address=cluster.address, logging_level="WARNING")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours instead
        items = [{"indices": json.dumps(list(t.indices))} for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=len(items))  # a block per task
        ds = ds.map_batches(
            worker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=cluster.workers),
            num_cpus=cluster.threads,
            num_gpus=cluster.gpus or None,
            fn_constructor_kwargs={
                "spec": spec, "plan": plan, "output": str(output), "settings": settings,
                "guarded": [str(p) for p in inputs_inside(plan.sources, output)],
                "batch_size": batch_size, "rules": rules, "threads": cluster.threads,
                "gpus": cluster.gpus})
        with tqdm(total=len(todo), desc="splash (ray)", unit="input", dynamic_ncols=True) as bar:
            for row in ds.iter_rows():
                for marker in json.loads(row["markers"]):
                    markers[marker["order"]] = marker
                bar.update(int(row["n"]))
    finally:
        if started:
            ray.shutdown()
    return PartResult(markers, len(done))
