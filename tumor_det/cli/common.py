"""What every command-line tool shares: the config from file + overrides, the weights, and
user errors as exit status 2 with one ``<tool>.py: error: <message>`` line.

Each tool is a ``main(argv) -> int`` in :mod:`tumor_det.cli`; ``tools/<tool>.py`` and the
console scripts (``tumor-det-<tool>``, ``setup.py``) only call it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from tumor_det.checkpoint.weights import WeightsNotFoundError, resolve_weights
from tumor_det.config.config import ConfigError
from tumor_det.config.lazy import load_config as load_any_config
from tumor_det.inference.predictor import UntrainedModelError, check_weights
from tumor_det.io import UsageError

from detectron2.config import CfgNode

#: User errors of every tool: a config file, key or value, weights, or arguments that cannot
#: be used. Each carries a one-line message (a tool may catch more of its own).
USER_ERRORS = (ConfigError, WeightsNotFoundError, UntrainedModelError, UsageError)


def error_message(exc: BaseException | str) -> str:
    """The one-line message of a user error (a ``KeyError``'s own text, not its repr)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def user_error(prog: str, exc: BaseException | str) -> int:
    """Print ``<prog>: error: <message>`` on stderr; return the exit status 2."""
    print(f"{prog}: error: {error_message(exc)}", file=sys.stderr)
    return 2


def load_config(config_file: str | None, opts: Sequence[str] = (),
                weights: Sequence[str] | None = None, *, device: str | None = None,
                prepare: Callable[[CfgNode], None] | None = None, check: bool = True,
                allow_untrained: bool = False) -> tuple[CfgNode, list[str]]:
    """The config of a tool's command line, and its weights.

    ``config_file`` (path or built-in name) with the ``KEY VALUE`` ``opts``; ``device`` sets
    ``MODEL.DEVICE``; ``prepare(cfg)`` may change it further before the weights are resolved
    (e.g. ``OUTPUT_DIR``, where ``last`` looks). ``weights`` (default: ``MODEL.WEIGHTS``; several
    for an ensemble) are resolved (:func:`~tumor_det.checkpoint.weights.resolve_weights`:
    aliases, ``last``, URLs) and, with ``check``, refused when empty unless ``allow_untrained``
    (:func:`~tumor_det.inference.predictor.check_weights`); ``MODEL.WEIGHTS`` becomes the
    first. Raises one of :data:`USER_ERRORS`.
    """
    cfg = load_any_config(config_file, list(opts))  # YAML (YACS) or LazyConfig .py
    if device:
        cfg.MODEL.DEVICE = device
    if prepare is not None:
        prepare(cfg)
    resolved = [resolve_weights(w, cfg.OUTPUT_DIR) for w in (weights or [cfg.MODEL.WEIGHTS])]
    if check:
        for w in resolved:
            check_weights(w, allow_untrained)
    cfg.MODEL.WEIGHTS = resolved[0]
    return cfg, resolved


def training_parser(prog: str, weights_target: str, output_dir: str):
    """Detectron2's ``default_argument_parser`` with ``--weights`` (the old tumor.py's
    shortcut for ``weights_target``) and ``--dist-backend``: both training front ends'."""
    from detectron2.engine import default_argument_parser

    parser = default_argument_parser()
    parser.prog = prog
    parser.add_argument("--weights", default=None,
                        help=f"coco | imagenet | last | PATH: shortcut for {weights_target} "
                             f"('last' continues the last run in {output_dir})")
    parser.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                        help="process-group backend (auto: NCCL with CUDA, else gloo)")
    return parser


def launch_checked(prog: str, args, check: Callable, main: Callable) -> int:
    """Check the command line (exit 2 on a user error) before any worker starts, then run
    ``main(args)`` on ``--num-gpus`` processes of ``--num-machines`` machines."""
    from tumor_det.engine.distributed import launch, resolve_backend

    print("Command Line Args:", args)
    try:
        check(args)
        backend = resolve_backend(args.dist_backend)
    except (*USER_ERRORS, RuntimeError) as exc:  # RuntimeError: --dist-backend nccl, no CUDA
        return user_error(prog, exc)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), backend=backend)
    return 0
