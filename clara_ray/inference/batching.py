"""Dynamic batching of concurrent calls, formed when the model is free (as Triton's is).

:class:`DynamicBatcher` queues each call and runs one batch at a time.  A batch
is formed only once the previous one has finished: it takes every call queued
by then (up to ``max_rows`` rows) and waits at most ``max_delay_s`` from its
first call for more while it is not full.  So under load the calls that queue
while the model runs all go into the next batch.  (Ray Serve's
``@serve.batch`` forms the next batch while the previous one still runs, from
what arrives within its timeout, and queues it: under load that gives many
small batches behind one another.)  Plain asyncio, no Ray.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DynamicBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Call(Generic[Item, Result]):
    item: Item
    rows: int
    future: asyncio.Future[Result] = field(repr=False)


class DynamicBatcher(Generic[Item, Result]):
    """Runs ``run(items)`` on batches of concurrent :meth:`submit` calls, one batch at a time.

    Args:
        run: computes one result per item, in order, for a batch.
        max_rows: the most rows a batch holds (a call larger than that runs alone).
        max_delay_s: how long a batch that is not full waits for more calls.
        rows: the rows of one item (default 1).
    """

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        max_rows: int,
        max_delay_s: float,
        rows: Callable[[Item], int] = lambda _item: 1,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must not be negative, got {max_delay_s}")
        self._run = run
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._rows = rows
        self._queue: collections.deque[_Call[Item, Result]] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """The result of ``item``, computed in a batch with the calls queued beside it."""
        loop = asyncio.get_running_loop()
        call: _Call[Item, Result] = _Call(item, self._rows(item), loop.create_future())
        self._queue.append(call)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        return await call.future

    def _take(self, batch: list[_Call[Item, Result]], size: int) -> int:
        """Move queued calls into ``batch`` while they fit; returns its new size in rows."""
        while self._queue:
            call = self._queue[0]
            if call.future.done():  # its caller went away
                self._queue.popleft()
                continue
            if batch and size + call.rows > self.max_rows:
                break
            batch.append(self._queue.popleft())
            size += call.rows
        if not self._queue:
            self._arrived.clear()
        return size

    async def _next_batch(self) -> list[_Call[Item, Result]]:
        while not self._queue:
            await self._arrived.wait()
            self._arrived.clear()
        batch: list[_Call[Item, Result]] = []
        size = self._take(batch, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while batch and size < self.max_rows and not self._queue:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
            size = self._take(batch, size)
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                results = await self._run([c.item for c in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} calls gave {len(results)} results")
            except Exception as exc:
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(exc)
                continue
            for call, result in zip(batch, results, strict=True):
                if not call.future.done():
                    call.future.set_result(result)
