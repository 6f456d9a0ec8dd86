"""Small asyncio helpers shared by the orchestration modules."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from avatarkit.errors import AvatarKitError


async def close_all(resources: Iterable[Any], log: logging.Logger) -> None:
    """Close each resource that has an ``aclose()`` (else a ``close()``), awaiting its result.

    A failure is logged and the others are still closed; then the first failure is raised.
    """
    failed: BaseException | None = None
    for resource in resources:
        closer = getattr(resource, "aclose", None)
        if not callable(closer):
            closer = getattr(resource, "close", None)
        if not callable(closer):
            continue
        try:
            result = closer()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.warning("closing %s failed: %s", type(resource).__name__, exc)
            failed = failed or exc
    if failed is not None:
        raise failed


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
