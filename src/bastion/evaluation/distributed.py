"""Scaling an evaluation out with torch.distributed: examples are sharded by batch across ranks and the
per-example records gathered on every rank, so the numbers equal a single-process run's.

Under ``torchrun --nproc_per_node=N bastion evaluate ...`` the environment carries WORLD_SIZE/RANK and
:func:`init_from_env` joins the process group (gloo on CPU, nccl on CUDA). Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from bastion.ranks import is_main as is_main  # re-exported: callers ask distributed.is_main()
from bastion.ranks import rank_and_world

log = logging.getLogger(__name__)


def init_from_env() -> bool:
    """Join the process group described by torchrun's environment; False when not launched that way."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    log.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def my_batches(n_examples: int, batch_size: int) -> list[tuple[int, int]]:
    """This rank's (start, stop) batches: batch b goes to rank b mod world, so batches match a 1-rank run."""
    rank, world = rank_and_world()
    starts = range(0, n_examples, batch_size)
    return [(s, min(s + batch_size, n_examples)) for b, s in enumerate(starts) if b % world == rank]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (CPU tensors, lists, dicts), in rank order; ``[obj]`` in single-process runs."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
