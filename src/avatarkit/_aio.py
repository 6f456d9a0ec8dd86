"""Small asyncio helpers shared by the orchestration modules."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable

from avatarkit.errors import AvatarKitError


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


def cancel_requested() -> bool:
    """Whether the running task was asked to cancel, rather than merely met a CancelledError.

    Awaiting a future that someone else cancelled (an executor shut down with work queued, a
    shared call whose owner gave up) raises CancelledError in a task nobody cancelled; treated
    as a cancellation, that would cut a turn short without a word.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def cancelled_elsewhere(exc: asyncio.CancelledError) -> AvatarKitError:
    """The error to raise for a CancelledError that did not cancel the running task."""
    error = AvatarKitError(
        "work inside the turn was cancelled, though the turn was not (a backend's call or its "
        "executor was cancelled from elsewhere)"
    )
    error.__cause__ = exc
    return error


async def _wrap(aw: Awaitable[None]) -> None:
    try:
        await aw
    except asyncio.CancelledError as exc:
        if cancel_requested():  # the group or the caller cancelled this part: pass it on
            raise
        raise cancelled_elsewhere(exc) from exc  # a TaskGroup would drop it as a cancellation
