"""How long an awaited call holds up the event loop: the largest gap a ticker task sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def largest_loop_gap(work: Awaitable[T]) -> tuple[T, float]:
    """Await ``work`` beside a 5 ms ticker; return its result and the ticker's longest wait, s.

    Other sessions on the same event loop wait this long: blocking work (decoding, ffmpeg,
    file writes) belongs in a worker thread.
    """
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        result = await work
    finally:
        done = True
        await task
    return result, worst
