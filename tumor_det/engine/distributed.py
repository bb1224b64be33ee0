"""Multi-process training: Detectron2's ``launch`` on GPUs, a gloo path for CPU processes.

Detectron2 0.6's :func:`detectron2.engine.launch` hard-codes the NCCL backend and asserts CUDA.
:func:`launch` keeps it for GPUs and adds what it lacks:

* CPU processes with the gloo backend (``--num-gpus N`` on a machine without GPUs, or
  ``--dist-backend gloo``), set up exactly like Detectron2's workers (world group + one local
  group per machine in ``detectron2.utils.comm``);
* torchrun compatibility: when ``torchrun`` started this process (``LOCAL_RANK``,
  ``WORLD_SIZE`` ... in the environment), the process group is initialised from those variables
  and ``main_func`` runs in this process, without spawning.

Detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]`` even to CPU models, which
DistributedDataParallel rejects; :func:`patch_create_ddp_model` passes ``device_ids=None`` there.
Its model is also an :class:`EvalSyncDDP`: Detectron2 trains with ``broadcast_buffers=False``, so
each process ends training with its own BatchNorm running statistics; an evaluation would then
score each process's share of the images with other weights than the checkpoint (rank 0's). On
switching to eval mode every process takes rank 0's buffers, so the merged evaluation is the
evaluation of the saved model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta

import tumor_det  # noqa: F401

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import defaults as d2_defaults
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def sync_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (BatchNorm running statistics); collective."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


class EvalSyncDDP(DistributedDataParallel):
    """DistributedDataParallel whose ``eval()`` first gives every process rank 0's buffers.

    Every process must switch to eval mode together (Detectron2's evaluation does: all ranks
    run ``inference_on_dataset``), as the broadcast is a collective operation.
    """

    def train(self, mode: bool = True):
        if not mode and self.training:
            sync_buffers(self.module)
        return super().train(mode)


def _cpu_aware_create_ddp_model(model, *, fp16_compression: bool = False, **kwargs):
    """Detectron2's ``create_ddp_model``, with ``device_ids=None`` for models on the CPU, and
    an :class:`EvalSyncDDP`."""
    if comm.get_world_size() == 1:
        return model
    if "device_ids" not in kwargs:
        cpu = next(model.parameters()).device.type == "cpu"
        kwargs["device_ids"] = None if cpu else [comm.get_local_rank()]
    ddp = EvalSyncDDP(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def patch_create_ddp_model() -> None:
    """Install :func:`_cpu_aware_create_ddp_model` where DefaultTrainer looks it up."""
    d2_defaults.create_ddp_model = _cpu_aware_create_ddp_model


def _setup_local_groups(num_per_machine: int, machine_rank: int) -> None:
    """Create Detectron2's per-machine process groups (what ``comm.get_local_rank`` reads)."""
    world_size = dist.get_world_size()
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _run_in_group(main_func: Callable, args: tuple, num_per_machine: int,
                  machine_rank: int) -> None:
    """With the world group initialised: local groups, CPU-aware DDP, then ``main_func``."""
    _setup_local_groups(num_per_machine, machine_rank)
    patch_create_ddp_model()
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _gloo_worker(local_rank: int, main_func: Callable, world_size: int, num_per_machine: int,
                 machine_rank: int, dist_url: str, args: tuple, timeout: timedelta) -> None:
    global_rank = machine_rank * num_per_machine + local_rank
    if "OMP_NUM_THREADS" not in os.environ:
        # Share the cores: N processes x all-core thread pools spin against each other.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_per_machine))
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=global_rank, timeout=timeout)
    _run_in_group(main_func, args, num_per_machine, machine_rank)


def started_by_torchrun() -> bool:
    """True when this process was started by ``torchrun`` (or another env:// launcher)."""
    return all(k in os.environ for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR"))


def _run_under_torchrun(main_func: Callable, args: tuple, backend: str,
                        timeout: timedelta) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    _run_in_group(main_func, args, local_size, int(os.environ.get("GROUP_RANK", 0)))


def resolve_backend(backend: str = "auto") -> str:
    """``auto`` → NCCL with CUDA, else gloo."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"--dist-backend must be auto, nccl or gloo, not {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise RuntimeError("--dist-backend nccl needs CUDA GPUs; use gloo for CPU processes")
    return backend


def launch(main_func: Callable, num_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: str | None = None, args: tuple = (),
           backend: str = "auto", timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Run ``main_func(*args)`` in ``num_per_machine`` processes on each of ``num_machines``.

    GPUs (NCCL) go through Detectron2's own ``launch``; CPU processes use gloo. One process on
    one machine just calls ``main_func``. Under torchrun, the group comes from the environment.
    """
    backend = resolve_backend(backend)
    if started_by_torchrun():
        _run_under_torchrun(main_func, args, backend, timeout)
        return
    if backend == "nccl":
        d2_launch(main_func, num_per_machine, num_machines, machine_rank, dist_url or "auto",
                  args, timeout)
        return
    world_size = num_per_machine * num_machines
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url=auto only works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    logger.info("Starting %d gloo processes (%s)", world_size, dist_url)
    mp.start_processes(_gloo_worker, nprocs=num_per_machine, start_method="spawn",
                       args=(main_func, world_size, num_per_machine, machine_rank, dist_url, args,
                             timeout))
