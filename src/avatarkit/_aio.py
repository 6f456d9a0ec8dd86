"""Small asyncio helpers shared by the orchestration modules."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable


async def concurrently(*aws: Awaitable[None]) -> None:
    """Run awaitables side by side; on the first failure cancel the rest and raise that error."""
    try:
        async with asyncio.TaskGroup() as group:
            for aw in aws:
                group.create_task(_wrap(aw))
    except BaseExceptionGroup as eg:
        first: BaseException = eg
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from first.__cause__  # drop the group from the context, keep the cause
    finally:
        for aw in aws:  # cancelled before they started: close them quietly
            if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == "CORO_CREATED":
                aw.close()


async def _wrap(aw: Awaitable[None]) -> None:
    await aw
