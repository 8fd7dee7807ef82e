"""Run a job's parts (two trainings, three evaluations, each evaluation after its training) in worker
processes on CPU.

The demo's models are small: one process keeps two CPU cores only partly busy (two intra-op threads gave
1.37x over one on the demo's AA-grade suite), while two single-threaded processes use both. Results do not
depend on the process: every part is seeded by itself, and it gets nothing but picklable arguments.
On CUDA, or with one worker, the parts run in this process, one after the other.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from bastion.errors import ConfigError


def worker_count(requested: int | None, device: torch.device, n_parts: int) -> int:
    """``requested`` workers, or on ``None``: one per CPU core (at most one per part); 1 on a GPU."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"workers must be >= 1, got {requested}")
        return min(requested, max(n_parts, 1))
    if device.type != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, n_parts))


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Task:
    """``fn(*args)``, to run once every task named in ``after`` is done (their outputs are on disk)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()


def run_graph(
    tasks: Mapping[str, Task], workers: int, *, on_done: Callable[[str, Any], None] | None = None
) -> dict[str, Any]:
    """Run every task as soon as the tasks it comes ``after`` are done, in ``workers`` spawned processes
    when ``workers > 1``; name -> result.

    Among the tasks ready at once, the mapping's order decides (put the longest first): a worker that
    finishes a short task picks up the next ready one instead of waiting for a whole phase to end. A
    task's exception is raised here once the running tasks have ended; tasks not yet started are dropped.
    """
    for name, task in tasks.items():
        unknown = [a for a in task.after if a not in tasks]
        if unknown:
            raise ConfigError(f"task {name!r} waits for unknown task(s) {unknown}")
    results: dict[str, Any] = {}
    pending = list(tasks)

    def ready() -> list[str]:
        return [n for n in pending if all(a in results for a in tasks[n].after)]

    def finished(name: str, result: Any) -> None:
        results[name] = result
        if on_done is not None:
            on_done(name, result)

    if workers <= 1:
        while pending:
            now = ready()
            if not now:
                raise ConfigError(f"tasks {pending} wait for each other")
            pending.remove(now[0])
            finished(now[0], tasks[now[0]].fn(*tasks[now[0]].args))
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        running: dict[Future[Any], str] = {}
        try:
            while pending or running:
                for name in ready():
                    pending.remove(name)
                    running[pool.submit(tasks[name].fn, *tasks[name].args)] = name
                if not running:
                    raise ConfigError(f"tasks {pending} wait for each other")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(running.pop(future), future.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
