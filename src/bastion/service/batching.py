"""Micro-batching: concurrent requests share one model call, behind a bounded queue.

One worker task takes the oldest waiting request, then collects the requests already waiting (and, with
``max_wait_s`` > 0, those arriving within that time) up to ``max_rows`` inputs, runs the model once on
the concatenation in a worker thread (the event loop keeps accepting requests meanwhile, so under load
the next batch fills up during the current call), and hands each request its slice.
The queue holds at most ``max_queue`` requests; ``submit`` raises :class:`QueueFull` beyond that, so load
above capacity is refused (HTTP 503) instead of growing memory. A request whose caller gave up (timeout,
disconnect) is skipped if it has not run yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

from bastion.errors import ConfigError

log = logging.getLogger(__name__)

R = TypeVar("R")


class QueueFull(Exception):
    """The batching queue is at capacity; the caller should retry later (HTTP 503)."""


@dataclass
class _Item(Generic[R]):
    x: Tensor
    future: asyncio.Future[list[R]]
    enqueued: float


class MicroBatcher(Generic[R]):
    """Batch ``fn`` over concurrent submissions (see the module docstring).

    Args:
        fn: (N, *S) inputs -> N per-input results; called in a worker thread, one call at a time.
        max_rows: inputs per model call (a single larger request still runs whole).
        max_wait_s: how long the first request of a batch waits for company.
        max_queue: requests waiting at most; more raise QueueFull.
        on_batch: optional callback(rows, queue_wait_s) for metrics.
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Sequence[R]],
        *,
        max_rows: int = 256,
        max_wait_s: float = 0.0,
        max_queue: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_rows < 1 or max_queue < 1 or max_wait_s < 0:
            raise ConfigError("max_rows and max_queue must be >= 1 and max_wait_s >= 0")
        self.fn = fn
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item[R]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry: _Item[R] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.create_task(self._run(), name="bastion-microbatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def submit(self, x: Tensor, timeout_s: float | None = None) -> list[R]:
        """Results for x's rows, in order.

        Raises:
            QueueFull: too many requests are waiting.
            TimeoutError: not answered within timeout_s (the request is dropped if not yet run).
        """
        if self._queue is None or not self.running:
            raise RuntimeError("MicroBatcher is not running: call start() first")
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(x, future, time.perf_counter()))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are already waiting") from None
        async with asyncio.timeout(timeout_s):
            return await future

    async def _collect(self) -> list[_Item[R]]:
        assert self._queue is not None
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, rows = [first], len(first.x)
        deadline = time.perf_counter() + self.max_wait_s
        while rows < self.max_rows:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    item = self._queue.get_nowait()
                else:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (stop)
                    async with asyncio.timeout(remaining):
                        item = await self._queue.get()
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if rows + len(item.x) > self.max_rows:
                self._carry = item
                break
            batch.append(item)
            rows += len(item.x)
        return [item for item in batch if not item.future.done()]

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            x = torch.cat([item.x for item in batch]) if len(batch) > 1 else batch[0].x
            started = time.perf_counter()
            try:
                results: Sequence[Any] = await asyncio.to_thread(self.fn, x)
            except Exception as exc:  # handed to each waiting request; the worker keeps serving
                log.exception("batched inference failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(x), started - min(item.enqueued for item in batch))
            start = 0
            for item in batch:
                stop = start + len(item.x)
                if not item.future.done():
                    item.future.set_result(list(results[start:stop]))
                start = stop
