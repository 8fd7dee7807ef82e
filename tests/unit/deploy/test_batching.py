"""MicroBatcher: order-preserving merges, bounded queue, failures isolated to their batch."""

from __future__ import annotations

import asyncio

import pytest
import torch

from bastion.service.batching import MicroBatcher, QueueFull


def test_merges_concurrent_requests_and_survives_a_failing_call() -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor) -> list[float]:
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return (x.sum(dim=1) * 10).tolist()

    async def scenario() -> None:
        batcher: MicroBatcher[float] = MicroBatcher(fn, max_rows=64, max_wait_s=0.05, max_queue=8)
        await batcher.start()
        xs = [torch.full((i + 1, 1), float(i)) for i in range(5)]
        results = await asyncio.gather(*(batcher.submit(x) for x in xs))
        assert results == [[10.0 * i] * (i + 1) for i in range(5)]
        assert calls == [15]  # one model call for the five requests
        with pytest.raises(ValueError, match="negative"):
            await batcher.submit(torch.full((1, 1), -1.0))
        assert await batcher.submit(torch.ones(2, 1)) == [10.0, 10.0]  # the worker kept running
        with pytest.raises(QueueFull):
            await asyncio.gather(*(batcher.submit(torch.ones(1, 1)) for _ in range(20)))
        await batcher.stop()
        assert not batcher.running

    asyncio.run(scenario())
