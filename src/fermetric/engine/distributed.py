"""Devices and multi-process (DDP) training through ``torchrun``.

``torchrun --nproc_per_node=N -m fermetric train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and the rendezvous address); :func:`setup` reads them and joins the process group:
NCCL when training on CUDA (one GPU per local rank), gloo on the CPU. Without those variables a run
is a single process and every helper here is a no-op.

Division of work (see ``train.py``): each rank trains on its own shard of every epoch's batches
(``epoch_batches(..., rank, world_size)``); the model (and the loss's learnable parameters) are
wrapped in ``DistributedDataParallel`` so gradients are averaged and parameters stay identical;
only rank 0 evaluates, writes checkpoints, metrics and results; loss sums and image counts are
all-reduced so the logged numbers cover all ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, TrainingError


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` -> ``cuda`` (``cuda:LOCAL_RANK`` under torchrun) when available, else ``cpu``."""
    spec = "auto" if spec is None else str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} was requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) without it."""
    try:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (set by torchrun)") from None


def setup(device_spec: str | torch.device = "auto") -> DistContext:
    """Resolve the device and, under torchrun, join the process group (NCCL on CUDA, else gloo)."""
    rank, world_size, local_rank = env_world()
    device = resolve_device(device_spec, local_rank if world_size > 1 else None)
    context = DistContext(rank, world_size, local_rank, device)
    if world_size <= 1:
        return context
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return context
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if backend == "nccl":
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
    except TypeError:  # older torch without device_id
        dist.init_process_group(backend)
    except Exception as err:
        raise TrainingError(f"cannot join the {backend} process group (rank {rank}/{world_size}): {err}") from None
    context.initialized_here = True
    return context


def cleanup(context: DistContext) -> None:
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.enabled:
        if context.device.type == "cuda":
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum across ranks (in place); a no-op in a single process."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def broadcast_object(value, context: DistContext, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not context.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, device=context.device if context.device.type == "cuda" else None)
    return box[0]


def wrap(module: torch.nn.Module, context: DistContext) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``module`` under torchrun; the module itself otherwise.

    ``find_unused_parameters=False``: FERNet and the losses use every parameter in every step,
    and the unused-parameter search costs a graph traversal per step.
    """
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if context.device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[context.device.index], find_unused_parameters=False)
    return DistributedDataParallel(module, find_unused_parameters=False)
