#!/usr/bin/env python
"""Train or evaluate tumor-det's Mask R-CNN (Detectron2's ``DefaultTrainer``).

    python tools/train_net.py --config-file configs/quick_cpu.yaml
    python tools/train_net.py --config-file configs/quick_cpu.yaml --resume
    python tools/train_net.py --config-file configs/quick_cpu.yaml --eval-only \
        MODEL.WEIGHTS output/quick_cpu/model_final.pth
    python tools/train_net.py --config-file configs/quick_cpu.yaml --num-gpus 2   # 2 processes

``--weights coco|imagenet|last|PATH`` is the old ``tumor.py`` shortcut for ``MODEL.WEIGHTS``.
Without GPUs, ``--num-gpus N`` starts N CPU processes (gloo). Under torchrun, the process group
comes from the environment. A bad command line (config file or key, weights, dataset) exits
with status 2 and one ``train_net.py: error: ...`` line on stderr.
"""

from __future__ import annotations

import argparse

import tumor_det  # noqa: F401
from tumor_det.engine.distributed import launch, resolve_backend
from tumor_det.engine.trainer import USAGE_ERRORS, check_args, evaluate, setup, train

from detectron2.engine import default_argument_parser


def main(args):
    cfg = setup(args)
    if args.eval_only:  # with TEST.AUG.ENABLED also with test-time augmentation
        return evaluate(cfg, resume=args.resume)
    return train(cfg, resume=args.resume)


def build_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser()
    parser.add_argument("--weights", default=None,
                        help="coco | imagenet | last | PATH: shortcut for MODEL.WEIGHTS "
                             "('last' continues the last run in OUTPUT_DIR)")
    parser.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                        help="process-group backend (auto: NCCL with CUDA, else gloo)")
    return parser


if __name__ == "__main__":
    parser = build_parser()
    args = parser.parse_args()
    print("Command Line Args:", args)
    try:
        check_args(args)  # here, so that a bad command line stops before any worker starts
    except USAGE_ERRORS as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        backend = resolve_backend(args.dist_backend)
    except RuntimeError as exc:  # --dist-backend nccl without CUDA
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), backend=backend)
