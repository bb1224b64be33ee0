"""``tools/lazyconfig_train_net.py``: train or evaluate from a LazyConfig (``configs/lazy/*.py``).

Detectron2's ``tools/lazyconfig_train_net.py`` shape: :func:`build_parser` (Detectron2's
``default_argument_parser`` + ``--weights`` and ``--dist-backend``), :func:`main` (one process:
train, or ``--eval-only``) and :func:`launch_main` (the command line: checks, then
:func:`tumor_det.engine.distributed.launch` of :func:`main` on ``--num-gpus`` processes).
Overrides are hydra's ``key=value`` (``train.max_iter=100 model.roi_heads.num_classes=3``). The
trainer is :mod:`tumor_det.engine.lazy_train`.

A bad command line (config file, unknown key, bad value, weights, dataset) exits with status 2
and one ``lazyconfig_train_net.py: error: ...`` line on stderr, before any worker starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.cli.common import USER_ERRORS, user_error
from tumor_det.config.lazy import get_lazy_config_file, load_lazy_config
from tumor_det.engine.distributed import launch, resolve_backend
from tumor_det.engine.lazy_train import check_lazy_config, do_eval_only, do_train

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from omegaconf import DictConfig

PROG = "lazyconfig_train_net.py"


def build_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser()
    parser.prog = PROG
    parser.add_argument("--weights", default=None,
                        help="coco | imagenet | last | PATH: shortcut for train.init_checkpoint "
                             "('last' continues the last run in train.output_dir)")
    parser.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                        help="process-group backend (auto: NCCL with CUDA, else gloo)")
    return parser


def check_args(args: argparse.Namespace) -> tuple[DictConfig, CfgNode]:
    """The LazyConfig of ``args`` with its ``key=value`` overrides, ``--weights`` and the
    datasets checked, and its YACS equivalent; raises one of ``USER_ERRORS``."""
    args.config_file = str(get_lazy_config_file(args.config_file or "lazy/quick_cpu.py"))
    cfg = load_lazy_config(args.config_file, args.opts)
    weights = getattr(args, "weights", None)
    if weights == "last":
        resolve_weights("last", cfg.train.output_dir)  # fails clearly when there is none
        args.resume = True
    ycfg = check_lazy_config(cfg, weights if weights != "last" else None)
    return cfg, ycfg


def main(args: argparse.Namespace):
    """One process: train, or with ``--eval-only`` evaluate."""
    cfg, ycfg = check_args(args)
    default_setup(cfg, args)
    if args.eval_only:
        return do_eval_only(cfg, ycfg, resume=args.resume)
    return do_train(cfg, ycfg, resume=args.resume)


def launch_main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse, check (exit 2 on a user error), launch :func:`main`."""
    args = build_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        check_args(args)  # here, so that a bad command line stops before any worker starts
        backend = resolve_backend(args.dist_backend)
    except (*USER_ERRORS, RuntimeError) as exc:  # RuntimeError: --dist-backend nccl, no CUDA
        return user_error(PROG, exc)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), backend=backend)
    return 0
