"""Per-turn counters (provider calls, cache hits) and OpenTelemetry spans.

A ContextVar holds the current turn's Counter; asyncio tasks and ``asyncio.to_thread`` calls
started inside the turn inherit it, so concurrent sessions never mix their counts.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarkit.types import Response

__all__ = ["count", "fill_metrics", "span", "turn_counter"]

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
    m.fallbacks = {
        k.removeprefix("fallback."): v for k, v in counter.items() if k.startswith("fallback.")
    }
    m.cache_hits, m.cache_misses = counter["cache.hits"], counter["cache.misses"]


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """An OpenTelemetry span named ``name`` when opentelemetry is installed, else nothing.

    Yields the span (or None), so callers can add attributes once they know them.
    """
    tracer = _get_tracer()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


_UNSET: Any = object()
_tracer: Any = _UNSET


def _get_tracer() -> Any:
    """The tracer for avatarkit's spans, or None without opentelemetry.

    Looked up once, on first use, so ``import avatarkit`` stays cheap.
    """
    global _tracer
    if _tracer is _UNSET:
        _tracer = None
        if importlib.util.find_spec("opentelemetry") is not None:
            try:
                from opentelemetry import trace
            except ImportError:  # pragma: no cover - a broken install: run without tracing
                pass
            else:
                # A proxy until an SDK provider is set, then that provider's tracer: safe to keep.
                _tracer = trace.get_tracer("avatarkit")
    return _tracer
