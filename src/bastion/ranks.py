"""Which process this is under ``torch.distributed``: training and evaluation shard work by rank, and only
rank 0 writes files. Outside an initialised process group every call answers as the single process."""

from __future__ import annotations

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in single-process runs): the rank that writes results."""
    return rank_and_world()[0] == 0
