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
from tumor_det.cli.common import launch_checked, training_parser
from tumor_det.config.lazy import get_lazy_config_file, load_lazy_config
from tumor_det.engine.lazy_train import check_lazy_config, do_eval_only, do_train

from detectron2.config import CfgNode
from detectron2.engine import default_setup
from omegaconf import DictConfig

PROG = "lazyconfig_train_net.py"


def build_parser() -> argparse.ArgumentParser:
    return training_parser(PROG, "train.init_checkpoint", "train.output_dir")


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
    return launch_checked(PROG, build_parser().parse_args(argv), check_args, main)
