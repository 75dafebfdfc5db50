"""The dynamic batcher: batches form when the model is free, from what queued meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from clara_ray.inference.batching import DynamicBatcher


class Model:
    """Records each batch; each batch takes ``seconds``; rows are the items' values."""

    def __init__(self, seconds: float = 0.05, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0

    async def run(self, items: list[int]) -> list[int]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.batches.append(list(items))
        try:
            await asyncio.sleep(self.seconds)
            if self.fail:
                raise ValueError("model broke")
            return [10 * i for i in items]
        finally:
            self.running -= 1


def test_calls_that_queue_while_the_model_runs_form_the_next_full_batch() -> None:
    model = Model()

    async def main() -> list[int]:
        batcher = DynamicBatcher(model.run, max_rows=8, max_delay_s=0.001, rows=lambda i: 1)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first batch runs alone; 16 calls queue meanwhile
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 17)]
        return [await first, *[await r for r in rest]]

    results = asyncio.run(main())
    assert results == [10 * i for i in range(17)]
    assert [len(b) for b in model.batches] == [1, 8, 8]
    assert model.most_running == 1


def test_a_batch_that_is_not_full_waits_for_more_up_to_the_delay() -> None:
    model = Model(seconds=0.0)

    async def main() -> None:
        batcher = DynamicBatcher(model.run, max_rows=4, max_delay_s=0.2)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(2))
        assert (await first, await second) == (10, 20)

    asyncio.run(main())
    assert model.batches == [[1, 2]]


def test_rows_count_against_the_limit_and_order_is_kept() -> None:
    model = Model(seconds=0.0)

    async def main() -> list[int]:
        batcher = DynamicBatcher(model.run, max_rows=5, max_delay_s=0.01, rows=lambda i: i)
        return list(await asyncio.gather(*(batcher.submit(i) for i in (3, 2, 4, 1))))

    assert asyncio.run(main()) == [30, 20, 40, 10]
    assert model.batches == [[3, 2], [4, 1]]


def test_a_failing_batch_fails_its_calls_and_the_batcher_keeps_serving() -> None:
    model = Model(seconds=0.0, fail=True)

    async def main() -> int:
        batcher = DynamicBatcher(model.run, max_rows=4, max_delay_s=0.0)
        with pytest.raises(ValueError, match="model broke"):
            await batcher.submit(1)
        model.fail = False
        return await batcher.submit(2)

    assert asyncio.run(main()) == 20


def test_a_cancelled_call_is_left_out_of_later_batches() -> None:
    model = Model(seconds=0.05)

    async def main() -> int:
        batcher = DynamicBatcher(model.run, max_rows=4, max_delay_s=0.0)
        running = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        kept = await batcher.submit(3)
        await running
        return kept

    assert asyncio.run(main()) == 30
    assert model.batches == [[1], [3]]


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        DynamicBatcher(Model().run, max_rows=0, max_delay_s=0.0)
    with pytest.raises(ValueError, match="max_delay_s must not be negative"):
        DynamicBatcher(Model().run, max_rows=1, max_delay_s=-1.0)
