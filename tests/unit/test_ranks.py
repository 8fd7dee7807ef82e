"""Rank helpers outside a process group answer as the single, writing process."""

from __future__ import annotations

from bastion.evaluation import distributed as evaluation_ranks
from bastion.ranks import is_main, rank_and_world
from bastion.training import distributed as training_ranks


def test_a_single_process_is_rank_zero_of_one_and_writes() -> None:
    assert rank_and_world() == (0, 1)
    assert is_main()
    assert evaluation_ranks.is_main is is_main and training_ranks.rank_and_world is rank_and_world
