#!/usr/bin/env python
"""Train or evaluate tumor-det's Mask R-CNN (Detectron2's ``DefaultTrainer``).

    python tools/train_net.py --config-file configs/quick_cpu.yaml
    python tools/train_net.py --config-file configs/quick_cpu.yaml --resume
    python tools/train_net.py --config-file configs/quick_cpu.yaml --eval-only \\
        MODEL.WEIGHTS output/quick_cpu/model_final.pth
    python tools/train_net.py --config-file configs/quick_cpu.yaml --num-gpus 2   # 2 processes

``--weights coco|imagenet|last|PATH`` is the old ``tumor.py`` shortcut for ``MODEL.WEIGHTS``.
Without GPUs, ``--num-gpus N`` starts N CPU processes (gloo). Under torchrun, the process group
comes from the environment. A bad command line (config file or key, weights, dataset) exits
with status 2 and one ``train_net.py: error: ...`` line on stderr.

Detectron2's shape (``build_parser``, ``setup``, ``main(args)``, ``launch``) is
:mod:`tumor_det.cli.train_net` (also the console script ``tumor-det-train``).
"""

from __future__ import annotations

import sys

from tumor_det.cli.train_net import build_parser, launch_main, main, setup

__all__ = ["build_parser", "main", "setup"]

if __name__ == "__main__":
    sys.exit(launch_main())
