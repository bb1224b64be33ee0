"""``tools/train_net.py``: train or evaluate the Mask R-CNN (Detectron2's ``DefaultTrainer``).

Detectron2's own shape, which its users look for: :func:`build_parser` (Detectron2's
``default_argument_parser`` + ``--weights`` and ``--dist-backend``), :func:`setup` (the config,
``default_setup``), :func:`main` (one process: train, or ``--eval-only``) and :func:`launch_main`
(the command line: checks, then :func:`tumor_det.engine.distributed.launch` of :func:`main` on
``--num-gpus`` processes). The trainer is :mod:`tumor_det.engine.trainer`.

A bad command line (config file or key, weights, dataset) exits with status 2 and one
``train_net.py: error: ...`` line on stderr, before any worker process starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tumor_det.checkpoint.weights import resolve_weights
from tumor_det.cli.common import (
    launch_checked,
    load_config,
    training_parser,
)
from tumor_det.config.config import ConfigError, get_config_file, resolve_device
from tumor_det.config.lazy import is_lazy_config
from tumor_det.data import register_all
from tumor_det.engine.trainer import check_datasets, evaluate, train
from tumor_det.report.build import report_after_run

from detectron2.engine import default_setup
from detectron2.utils import comm

PROG = "train_net.py"


def build_parser() -> argparse.ArgumentParser:
    return training_parser(PROG, "MODEL.WEIGHTS", "OUTPUT_DIR")


def check_args(args):
    """The config of ``args`` (Detectron2's argument parser + ``--weights``), with
    ``MODEL.WEIGHTS`` resolved and the datasets registered; raises one of
    :data:`~tumor_det.cli.common.USER_ERRORS`.

    ``--weights last`` (the old tumor.py's) continues from the last checkpoint of this run
    (``args.resume``); a launcher calls this once before starting worker processes, so that a
    bad command line stops there.
    """
    weights = getattr(args, "weights", None)
    if args.config_file and is_lazy_config(args.config_file):
        raise ConfigError(f"{args.config_file} is a LazyConfig (Python) config: train it with "
                          "tools/lazyconfig_train_net.py")

    def last_checkpoint(cfg) -> None:
        resolve_weights("last", cfg.OUTPUT_DIR)  # fails clearly when there is none

    cfg, _ = load_config(args.config_file, args.opts,
                         [weights] if weights and weights != "last" else None,
                         prepare=last_checkpoint if weights == "last" else None, check=False)
    if args.config_file:  # a built-in name: default_setup copies the file itself
        args.config_file = str(get_config_file(args.config_file))
    if weights == "last":
        args.resume = True
    register_all(cfg.TUMOR.DATASETS_ROOT or None)
    check_datasets(cfg)
    return cfg


def setup(args):
    """:func:`check_args`, then the device, logging and the output folder (Detectron2's
    ``default_setup``); returns the frozen config."""
    cfg = check_args(args)
    resolve_device(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """One process: train, or with ``--eval-only`` evaluate (also with test-time augmentation
    when ``TEST.AUG.ENABLED``)."""
    cfg = setup(args)
    if args.eval_only:
        results = evaluate(cfg, resume=args.resume)
        if comm.is_main_process():
            report_after_run(cfg.OUTPUT_DIR, "evaluation", command=["train_net.py", *sys.argv[1:]],
                             config_file=os.path.join(cfg.OUTPUT_DIR, "config.yaml"),
                             weights=[cfg.MODEL.WEIGHTS])
        return results
    return train(cfg, resume=args.resume)


def launch_main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse, check (exit 2 on a user error), launch :func:`main`."""
    return launch_checked(PROG, build_parser().parse_args(argv), check_args, main)
