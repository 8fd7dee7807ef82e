"""bastion.app.parallel: parts give the same results in worker processes as in this one, in order."""

from __future__ import annotations

import pytest
import torch

from bastion.app.parallel import run_parts, worker_count
from bastion.errors import ConfigError


def seeded_draw(seed: int, n: int) -> list[float]:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()


def fails(seed: int, n: int) -> list[float]:
    raise ValueError(f"part {seed} failed")


def test_workers_match_one_process_and_keep_the_order() -> None:
    parts = [(s, 3) for s in range(4)]
    done: list[int] = []
    assert run_parts(seeded_draw, parts, 2, on_done=lambda i, _: done.append(i)) == run_parts(seeded_draw, parts, 1)
    assert sorted(done) == [0, 1, 2, 3]


def test_a_failing_part_raises_here() -> None:
    # both parts fail; whichever worker finishes first, its exception is the one raised
    with pytest.raises(ValueError, match="part [01] failed"):
        run_parts(fails, [(0, 1), (1, 1)], 2)


def test_worker_count() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert worker_count(None, gpu, 3) == 1
    assert 1 <= worker_count(None, cpu, 3) <= 3
    assert worker_count(4, cpu, 2) == 2
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        worker_count(0, cpu, 2)
