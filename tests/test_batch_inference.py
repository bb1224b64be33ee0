"""Many scans: parts and their merge, ``--continue`` after a killed run, and Ray workers.

Every mode must give a single run's outputs: the same per-input files and byte-identical
``results.json``/``results.csv``. The model is the quick config at 64 px with fixed random
weights (saved once, so every process and Ray actor loads the same ones) and a zero score
threshold, so every input has detections to compare.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.predictor import PredictorOptions, TumorPredictor
from tumor_det.io import Source, UsageError, expand_inputs
from tumor_det.splash.batch import merge_folders, run_batch
from tumor_det.splash.shards import (
    MARKER_DIR,
    Task,
    completed,
    part_indices,
    partition,
    plan_run,
    read_manifest,
)
from tumor_det.utils.atomic import is_temporary

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
FAST = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]
TABLES = ("results.json", "results.csv")


def make_inputs(folder: Path, n: int = 7) -> Path:
    """``n`` PNG slices of different sizes (two with the same stem) and a small NIfTI volume."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    for i in range(n):
        size = 40 + 8 * i
        image = rng.integers(0, 60, (size, size), dtype=np.uint8)
        cv2.circle(image, (size // 2, size // 3), size // 6, 220, -1)
        cv2.imwrite(str(folder / f"slice{i}.png"), image)
    cv2.imwrite(str(folder / "sub" / "slice0.png"), image)  # a second "slice0" stem
    volume = rng.integers(0, 60, (48, 48, 4)).astype(np.float32)
    volume[15:30, 12:28, 1:3] = 220
    nib.save(nib.Nifti1Image(volume, np.diag([0.9, 0.9, 3.0, 1.0])), str(folder / "scan.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Source]:
    folder = make_inputs(tmp_path_factory.mktemp("batch") / "in")
    return expand_inputs([str(folder), str(folder / "sub" / "slice0.png")])


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    cfg = get_tumor_cfg(None, ["MODEL.WEIGHTS", "", *FAST])
    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    return with_score_threshold(cfg, 0.0)


@pytest.fixture(scope="module")
def predictor(cfg) -> TumorPredictor:
    return TumorPredictor.from_weights(cfg)


@pytest.fixture(scope="module")
def single(predictor, inputs, tmp_path_factory) -> Path:
    """A single run: what every other mode must reproduce."""
    out = tmp_path_factory.mktemp("single")
    report = run_batch(predictor, inputs, out, batch_size=2)
    assert len(report.rows) == len(inputs) and report.records
    return out


def outputs(folder: Path) -> dict[str, bytes]:
    """Per-input output files (not the markers) by name; NIfTI by voxel data (the gzip header
    holds a time stamp), videos by size (the encoder is not byte-deterministic)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or path.name in TABLES or is_temporary(path):  # a killed write's
            continue
        if path.name in ("report.html", "run_info.json"):  # a whole run's record (its date)
            continue
        if path.name.endswith(".nii.gz"):
            found[path.name] = np.asarray(nib.load(path).dataobj).tobytes()
        elif path.suffix == ".mp4":
            found[path.name] = b"video" if path.stat().st_size else b""
        else:
            found[path.name] = path.read_bytes()
    return found


def assert_same_run(folder: Path, single: Path) -> None:
    for name in TABLES:
        assert (folder / name).read_bytes() == (single / name).read_bytes(), name
    assert outputs(folder) == outputs(single)


# --- the plan: no model ----------------------------------------------------------------------


def test_partition_is_deterministic_complete_and_balanced():
    sizes = [900, 10, 500, 400, 300, 300, 200, 100, 50, 50]
    tasks = [Task((i,), s) for i, s in enumerate(sizes)]
    for n in (1, 2, 3, 4, 11):
        parts = partition(tasks, n)
        assert parts == partition(list(reversed(tasks)), n)  # the order given does not matter
        seen = sorted(i for p in parts for t in p for i in t.indices)
        assert seen == list(range(len(sizes)))  # every input in exactly one part
        for p in parts:
            assert [t.indices for t in p] == sorted(t.indices for t in p)  # run order
    loads = [sum(t.size for t in p) for p in partition(tasks, 3)]
    assert max(loads) - min(loads) <= max(sizes[1:])  # greedy: within one task of each other
    with pytest.raises(UsageError):
        partition(tasks, 0)


def test_plan_orders_names_and_batches_like_a_single_run(inputs):
    plan = plan_run(inputs, batch_size=2)
    kinds = [s.kind for s in plan.sources]
    assert kinds == ["image"] * 8 + ["nifti"]  # 2D first, then volumes (runner.run's order)
    stems = [s.stem for s in plan.sources]
    assert len(set(stems)) == len(stems) and stems.count("slice0_2") == 1
    assert [t.indices for t in plan.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8,)]
    assert plan.fingerprint == plan_run(list(inputs), batch_size=2).fingerprint
    assert plan.fingerprint != plan_run(inputs[:-1], batch_size=2).fingerprint
    parts = [part_indices(plan, 3, k) for k in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(9))
    with pytest.raises(UsageError):
        part_indices(plan, 3, 3)


def test_manifest_csv_or_lines(tmp_path):
    (tmp_path / "m.csv").write_text("path,patient\na.png,p1\n/abs/b.nii.gz,p2\n")
    assert read_manifest(tmp_path / "m.csv") == [str(tmp_path / "a.png"), "/abs/b.nii.gz"]
    (tmp_path / "m.txt").write_text("# cohort\na.png\n\nsub/c.png\n")
    assert read_manifest(tmp_path / "m.txt") == [str(tmp_path / "a.png"),
                                                 str(tmp_path / "sub" / "c.png")]
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(UsageError, match="'path' column"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(UsageError):
        read_manifest(tmp_path / "missing.csv")


# --- parts, merge, --continue ----------------------------------------------------------------


def test_parts_and_merge_equal_a_single_run(predictor, inputs, single, tmp_path):
    shared = tmp_path / "shared"  # all parts in one folder (a SLURM array on a shared disk)
    for k in range(3):
        report = run_batch(predictor, inputs, shared, batch_size=2, num_parts=3, part_id=k)
        assert report.rows and not (shared / "results.json").exists()  # parts write no tables
    one = tmp_path / "one"
    run_batch(predictor, inputs, one, batch_size=2, num_parts=3, part_id=0)
    with pytest.raises(UsageError, match="have no result"):
        merge_folders([one], tmp_path / "x")  # the other parts have not run
    report, merged = merge_folders([shared], shared)
    assert merged.missing == 0 and len(report.rows) == len(inputs)
    assert_same_run(shared, single)

    # one folder per part: the merge joins their markers; the files stay in the part folders
    folders = [tmp_path / f"part{k}" for k in range(2)]
    for k, folder in enumerate(folders):
        run_batch(predictor, inputs, folder, batch_size=2, num_parts=2, part_id=k)
    merge_folders(folders, tmp_path / "merged")
    for name in TABLES:
        assert (tmp_path / "merged" / name).read_bytes() == (single / name).read_bytes()
    assert {**outputs(folders[0]), **outputs(folders[1])} == outputs(single)


def test_merge_refuses_parts_of_different_input_lists(predictor, inputs, tmp_path):
    run_batch(predictor, inputs[:3], tmp_path / "a", batch_size=2)
    run_batch(predictor, inputs[3:5], tmp_path / "b", batch_size=2)
    with pytest.raises(UsageError, match="different input lists"):
        merge_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    with pytest.raises(UsageError, match="no done markers"):
        merge_folders([tmp_path], tmp_path / "m")


KILLED_RUN = """
import sys, time
from pathlib import Path
import torch
from tumor_det.config.config import get_tumor_cfg
from tumor_det.evaluation.threshold import with_score_threshold
from tumor_det.inference.predictor import TumorPredictor
from tumor_det.io import expand_inputs
from tumor_det.splash.batch import run_batch

weights, out, *inputs = sys.argv[1:]
cfg = with_score_threshold(get_tumor_cfg(None, ["MODEL.WEIGHTS", weights, *{fast}]), 0.0)
predictor = TumorPredictor.from_weights(cfg)
run_batch_inner = predictor.predict_batch
def slow(*a, **k):  # a slow model, so that the kill lands half-way
    time.sleep(0.4)
    return run_batch_inner(*a, **k)
predictor.predict_batch = slow
run_batch(predictor, expand_inputs(inputs), Path(out), batch_size=2)
"""


@pytest.mark.slow
def test_continue_after_a_killed_run_finishes_without_redoing(cfg, predictor, inputs, single,
                                                              tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [str(s.path) for s in inputs]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN.format(fast=FAST), cfg.MODEL.WEIGHTS, str(out), *args],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(list((out / MARKER_DIR).glob("*.json"))) < 3:  # two batches in, at least
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no done markers appeared"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    plan = plan_run(inputs, batch_size=2)
    done = [s for s in plan.sources if completed(out, s)]
    assert 3 <= len(done) < len(inputs)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    # a complete input whose output was lost since: run again, as are all the unfinished ones
    lost = done[0]
    (out / f"{lost.stem}_overlay.png").unlink()

    predicted: list[str] = []  # the stems the resumed run predicts
    from tumor_det.splash import runner

    images, volume = runner.predict_images, runner.predict_volume

    def spy_images(predictor, sources, *a):
        sources = list(sources)
        predicted.extend(s.stem for s in sources)
        return images(predictor, sources, *a)

    def spy_volume(predictor, source, *a):
        predicted.append(source.stem)
        return volume(predictor, source, *a)

    monkeypatch.setattr(runner, "predict_images", spy_images)
    monkeypatch.setattr(runner, "predict_volume", spy_volume)
    report = run_batch(predictor, inputs, out, batch_size=2, resume=True)
    assert sorted(predicted) == sorted(
        [s.stem for s in plan.sources if s not in done[1:]])  # the rest and the lost one
    assert len(report.rows) == len(inputs)
    for src in done[1:]:  # not redone: files untouched
        for name in json.loads((out / MARKER_DIR / f"{src.stem}.json").read_text())["outputs"]:
            assert (out / name).stat().st_mtime_ns == before[name], name
    assert_same_run(out, single)


# --- Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


class DiesOnce:
    """A worker whose process dies on its first task (once per flag file)."""

    def __init__(self, flag: str, **kwargs):
        from tumor_det.splash.cluster import SplashWorker

        self.flag, self.inner = Path(flag), SplashWorker(**kwargs)

    def __call__(self, batch):
        if not self.flag.exists():
            self.flag.touch()
            os._exit(1)  # the actor's process ends: Ray restarts it and retries the task
        return self.inner(batch)


@pytest.mark.slow
def test_ray_workers_give_a_single_runs_outputs(ray_cluster, cfg, inputs, single, tmp_path):
    from tumor_det.splash.cluster import Cluster, PredictorSpec, run_on_ray

    spec = PredictorSpec(cfg, [cfg.MODEL.WEIGHTS], None, PredictorOptions())
    out = tmp_path / "ray"
    report = run_batch(spec, inputs, out, batch_size=2, cluster=Cluster(workers=2))
    assert len(report.rows) == len(inputs)
    assert_same_run(out, single)

    # a worker that dies has its inputs retried on a new one; nothing lost, nothing different
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = plan_run(inputs, batch_size=2)
    flag = tmp_path / "died"
    out2 = tmp_path / "ray_retry"
    result = run_on_ray(spec, plan, out2, _settings(), range(len(inputs)),
                        Cluster(workers=2), batch_size=2,
                        worker=_bind(DiesOnce, str(flag)))
    assert flag.exists() and len(result.markers) == len(inputs)
    merge_folders([out2], out2)
    assert_same_run(out2, single)


def _settings():
    from tumor_det.splash.shards import SinkSettings

    return SinkSettings()


def _bind(cls, flag: str):
    """``cls`` with its first constructor argument fixed (Ray Data needs a class)."""
    return type(cls.__name__, (cls,), {"__init__": lambda self, **kw: cls.__init__(
        self, flag, **kw)})


# --- the command line ------------------------------------------------------------------------


def splash_cli(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}\nimport sys\nfrom tumor_det.cli.splash import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)


def test_cli_usage_errors_are_one_line(tmp_path):
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((32, 32), np.uint8))
    common = ["--input", str(png), "--output", str(tmp_path / "o"), "--allow-untrained"]
    res = splash_cli(*common, "--num-parts", "2", "--part-id", "2", "MODEL.WEIGHTS", "")
    assert res.returncode == 2
    assert res.stderr.strip() == "splash.py: error: --part-id must be in 0..1, got 2"
    res = splash_cli(*common, "--ray", "--workers", "2", "MODEL.WEIGHTS", "",
                     pre="import sys; sys.modules['ray'] = None")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("splash.py: error: --ray needs Ray: pip install")
    res = splash_cli("--merge", str(tmp_path), "--output", str(tmp_path / "m"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no done markers" in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_parts_merge_and_continue(cfg, inputs, tmp_path):
    manifest = tmp_path / "cohort.csv"  # the inputs as a manifest (the same strings)
    manifest.write_text("path\n" + "".join(f"{s.path}\n" for s in inputs))
    common = ["--manifest", str(manifest), "--batch-size", "2", "--confidence-threshold", "0",
              "--weights", cfg.MODEL.WEIGHTS, *FAST]
    one = tmp_path / "one"
    res = splash_cli(*common, "--output", str(one))
    assert res.returncode == 0, res.stderr[-2000:]
    parts = tmp_path / "parts"
    for k in range(2):
        res = splash_cli(*common, "--output", str(parts), "--num-parts", "2", "--part-id", str(k))
        assert res.returncode == 0 and "--merge" in res.stdout, res.stderr[-2000:]
    res = splash_cli("--merge", str(parts), "--output", str(parts))
    assert res.returncode == 0, res.stderr
    assert_same_run(parts, one)

    before = {p.name: p.stat().st_mtime_ns for p in one.iterdir() if p.is_file()}
    res = splash_cli(*common, "--output", str(one), "--continue")
    assert res.returncode == 0, res.stderr[-2000:]
    after = {p.name: p.stat().st_mtime_ns for p in one.iterdir() if p.is_file()}
    rebuilt = (*TABLES, "report.html", "run_info.json")  # the tables and the run's report
    assert {k: v for k, v in after.items() if k not in rebuilt} == {
        k: v for k, v in before.items() if k not in rebuilt}  # nothing run again
    assert_same_run(one, tmp_path / "parts")
