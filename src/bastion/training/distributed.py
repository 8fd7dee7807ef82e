"""Data-parallel training over ``torch.distributed`` (``torchrun --nproc_per_node=N -m bastion train``).

Every rank holds the whole model and crafts adversarial examples for its own shard of each global batch;
gradients are averaged (weighted by shard size, so N ranks of B/N examples step exactly like one process
with batch B up to float rounding) and pass counts are summed. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn

from bastion.ranks import is_main, rank_and_world

__all__ = [
    "average_gradients",
    "barrier",
    "gather_states",
    "is_main",
    "launched_by_torchrun",
    "rank_and_world",
    "setup_from_env",
    "sum_counts",
    "teardown",
]

log = logging.getLogger(__name__)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes in the environment; return this rank's device."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    log.info("rank %d/%d joined (%s) on %s", dist.get_rank(), dist.get_world_size(), backend, device)
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sum_counts(forward: int, backward: int, device: torch.device) -> tuple[int, int]:
    """Pass counts summed over ranks (the identity in a single process)."""
    if rank_and_world()[1] == 1:
        return forward, backward
    t = torch.tensor([forward, backward], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t[0]), int(t[1])


def average_gradients(model: nn.Module, weight: float) -> None:
    """grad <- sum over ranks of weight_r * grad_r, with weight_r = local batch / global batch."""
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.mul_(weight)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def gather_states(state: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of an equally sized uint8 tensor (generator states), ordered by rank, on the CPU."""
    _, world = rank_and_world()
    if world == 1:
        return [state]
    # int64 all_gather works on both gloo and NCCL builds; NCCL needs the tensor on the GPU.
    wide = state.to(device=device, dtype=torch.int64)
    out = [torch.empty_like(wide) for _ in range(world)]
    dist.all_gather(out, wide)
    return [t.to(device="cpu", dtype=torch.uint8) for t in out]
