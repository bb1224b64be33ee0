"""The many-scans options of ``tools/splash.py``: parts, ``--continue``, ``--merge``, Ray.

:func:`add_arguments` adds them to splash's parser; :func:`check_arguments` refuses bad
combinations (exit 2); :func:`batch_inputs` adds a ``--manifest``'s inputs; :func:`cluster`
says whether and where to run on Ray; :func:`merge_main` is ``--merge``. The work is
:func:`tumor_det.splash.batch.run_batch`.
"""

from __future__ import annotations

import argparse

from tumor_det.cli.common import user_error
from tumor_det.io import UsageError
from tumor_det.splash.batch import merge_folders
from tumor_det.splash.cluster import Cluster, import_ray
from tumor_det.splash.shards import MARKER_DIR, read_manifest

LOCAL = "local"  # --ray without an address: start a Ray on this machine


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many inputs, many machines")
    g.add_argument("--manifest", metavar="FILE",
                   help="inputs listed in a file: a CSV with a 'path' column, or one path per "
                   "line (relative to the file's folder); with or instead of --input")
    g.add_argument("--num-parts", type=int, default=1, metavar="N",
                   help="split the inputs into N parts (by file size, deterministic) and run "
                   "only part --part-id; join the parts with --merge (default: %(default)s)")
    g.add_argument("--part-id", type=int, default=0, metavar="K",
                   help="which part to run, 0..N-1 (default: %(default)s)")
    g.add_argument("--continue", dest="resume", action="store_true",
                   help=f"skip inputs whose outputs are complete (a {MARKER_DIR}/<stem>.json "
                   "marker, written after them, and every file it lists)")
    g.add_argument("--merge", nargs="+", metavar="DIR",
                   help="write --output's results.json/results.csv from the parts' done "
                   "markers in these output folders (no model is run)")
    g.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                   help="run on Ray: a cluster's address (auto, HOST:6379, ray://HOST:10001) "
                   "or none for a Ray on this machine; needs pip install 'tumor-det[ray]'")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="--ray: predictor actors (default: %(default)s)")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                   help="--ray: CPU threads (and CPUs reserved) per actor (default: %(default)s)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="--ray: GPUs per actor, fractions share one (default: %(default)s)")


def check_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for values that cannot work."""
    if args.num_parts < 1:
        raise UsageError("--num-parts must be at least 1")
    if not 0 <= args.part_id < args.num_parts:
        raise UsageError(f"--part-id must be in 0..{args.num_parts - 1}, got {args.part_id}")
    if args.workers < 1 or args.threads_per_worker < 1:
        raise UsageError("--workers and --threads-per-worker must be at least 1")
    if args.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker must not be negative")
    if args.ray is not None:
        import_ray()  # the one-line install hint before any work


def batch_inputs(args: argparse.Namespace, inputs: list[str]) -> list[str]:
    """``--input`` patterns plus the ``--manifest``'s."""
    return inputs + (read_manifest(args.manifest) if args.manifest else [])


def cluster(args: argparse.Namespace) -> Cluster | None:
    """The Ray cluster of ``--ray`` (None: run here)."""
    if args.ray is None:
        return None
    return Cluster(None if args.ray == LOCAL else args.ray, args.workers,
                   args.threads_per_worker, args.gpus_per_worker)


def merge_main(args: argparse.Namespace, prog: str) -> int:
    """``--merge DIR... --output OUT``: the tables of a single run from its parts."""
    try:
        report, merged = merge_folders(args.merge, args.output)
    except (UsageError, OSError) as exc:
        return user_error(prog, exc)
    print(f"merged {len(merged.markers)} inputs ({len(report.rows)} processed, "
          f"{len(report.skipped)} skipped) from {len(args.merge)} folder(s) into "
          f"{args.output}/results.json, results.csv")
    return 0
