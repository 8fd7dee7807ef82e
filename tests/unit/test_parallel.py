"""bastion.app.parallel: tasks give the same results in worker processes as in this one, each after the
tasks it waits for."""

from __future__ import annotations

import pytest
import torch

from bastion.app.parallel import Task, run_graph, worker_count
from bastion.errors import ConfigError


def seeded_draw(seed: int, n: int) -> list[float]:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).tolist()


def fails(seed: int, n: int) -> list[float]:
    raise ValueError(f"part {seed} failed")


def written_after(path: str, wait_for: str, seed: int) -> list[float]:
    """A task that needs another one's file: it fails if that task has not finished."""
    from pathlib import Path

    before = Path(wait_for).read_text()
    draw = seeded_draw(seed, 2)
    Path(path).write_text(before + str(draw))
    return draw


def test_workers_match_one_process_and_run_each_task_after_its_dependencies(tmp_path) -> None:
    first, second = str(tmp_path / "first"), str(tmp_path / "second")

    def tasks() -> dict[str, Task]:
        return {
            "draw 0": Task(seeded_draw, (0, 3)),
            "after": Task(written_after, (second, first, 2), after=("first",)),
            "first": Task(written_after, (first, __file__, 1)),
            "draw 3": Task(seeded_draw, (3, 3)),
        }

    done: list[str] = []
    in_workers = run_graph(tasks(), 2, on_done=lambda name, _: done.append(name))
    assert done.index("first") < done.index("after") and sorted(done) == sorted(tasks())
    assert in_workers == run_graph(tasks(), 1)


def test_a_failing_task_raises_here_and_its_dependents_never_run(tmp_path) -> None:
    # both independent tasks fail; whichever worker finishes first, its exception is the one raised
    never = tmp_path / "never"
    tasks = {
        "0": Task(fails, (0, 1)),
        "1": Task(fails, (1, 1)),
        "dependent": Task(written_after, (str(never), __file__, 0), after=("0",)),
    }
    with pytest.raises(ValueError, match="part [01] failed"):
        run_graph(tasks, 2)
    assert not never.exists()


def test_unknown_or_circular_dependencies_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown task"):
        run_graph({"a": Task(seeded_draw, (0, 1), after=("b",))}, 1)
    circular = {"a": Task(seeded_draw, (0, 1), after=("b",)), "b": Task(seeded_draw, (0, 1), after=("a",))}
    for workers in (1, 2):
        with pytest.raises(ConfigError, match="wait for each other"):
            run_graph(circular, workers)


def test_worker_count() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert worker_count(None, gpu, 3) == 1
    assert 1 <= worker_count(None, cpu, 3) <= 3
    assert worker_count(4, cpu, 2) == 2
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        worker_count(0, cpu, 2)
