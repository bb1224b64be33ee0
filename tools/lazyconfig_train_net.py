#!/usr/bin/env python
"""Train or evaluate tumor-det's Mask R-CNN from a LazyConfig (Detectron2's second config system).

    python tools/lazyconfig_train_net.py --config-file configs/lazy/quick_cpu.py
    python tools/lazyconfig_train_net.py --config-file lazy/quick_cpu.py train.max_iter=100
    python tools/lazyconfig_train_net.py --config-file lazy/quick_cpu.py --resume
    python tools/lazyconfig_train_net.py --config-file lazy/quick_cpu.py --eval-only \\
        train.init_checkpoint=output/quick_cpu/model_final.pth

``key=value`` overrides use hydra's grammar; ``--weights coco|imagenet|last|PATH`` is the
shortcut for ``train.init_checkpoint``. A bad command line exits with status 2 and one
``lazyconfig_train_net.py: error: ...`` line on stderr. The code is
:mod:`tumor_det.cli.lazyconfig_train_net`.
"""

from __future__ import annotations

import sys

from tumor_det.cli.lazyconfig_train_net import build_parser, launch_main, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(launch_main())
