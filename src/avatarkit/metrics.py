"""Per-turn counters (provider calls, cache hits) that follow a turn across its tasks.

A ContextVar holds the current turn's Counter; asyncio tasks and ``asyncio.to_thread`` calls
started inside the turn inherit it, so concurrent sessions never mix their counts.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avatarkit.types import Response

__all__ = ["count", "fill_metrics", "turn_counter"]

_current: ContextVar[Counter[str] | None] = ContextVar("avatarkit_turn_counter", default=None)


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to ``key`` in the current turn's counter (no-op outside a turn)."""
    counter = _current.get()
    if counter is not None:
        counter[key] += n


@contextlib.contextmanager
def turn_counter() -> Iterator[Counter[str]]:
    """Collect the counts of everything run inside the block (and the tasks it starts)."""
    counter: Counter[str] = Counter()
    token = _current.set(counter)
    try:
        yield counter
    finally:
        _current.reset(token)


def fill_metrics(response: Response, counter: Counter[str], started: float) -> None:
    """Copy a turn's counters and its time since ``started`` (perf_counter) into its metrics."""
    import time

    m = response.metrics
    m.total = time.perf_counter() - started
    m.provider_calls = {
        k.removeprefix("calls."): v for k, v in counter.items() if k.startswith("calls.")
    }
    m.cache_hits, m.cache_misses = counter["cache.hits"], counter["cache.misses"]
