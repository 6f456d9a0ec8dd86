"""Many conversations in one process: per-backend concurrency limits, fair queues, backpressure.

Wrap a backend with :func:`limited` (``AvatarBot(limits={"voice": 4})`` does it for you): at most
``limit`` calls run at once, later ones wait in arrival order, and when ``max_waiting`` are
already queued a new call fails fast with ``OverloadedError`` instead of piling up memory.
Every wrapped call is counted, and traced as an OpenTelemetry span when opentelemetry is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from avatarkit.errors import OverloadedError
from avatarkit.metrics import count

__all__ = ["CallStats", "ConcurrencyLimit", "limited"]

_ASYNC_METHODS = (
    "synthesize", "render", "complete", "generate", "plan", "classify", "analyze", "preprocess",
)  # fmt: skip
_STREAM_METHODS = ("stream",)


class CallStats:
    """Calls made through limited backends, by ``role.method`` (shared by one bot)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    def snapshot(self) -> dict[str, int]:
        """A copy of the call counts."""
        return dict(self.calls)


class ConcurrencyLimit:
    """At most ``limit`` holders at once; waiters served first come, first served.

    Args:
        limit: Concurrent calls allowed.
        max_waiting: Calls allowed to wait; one more raises OverloadedError (None: unbounded).
        name: Used in error messages.
    """

    def __init__(
        self, limit: int, *, max_waiting: int | None = None, name: str = "backend"
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.max_waiting = max_waiting
        self.name = name
        self._sem = asyncio.Semaphore(limit)
        self._waiting = 0
        self._active = 0

    @property
    def active(self) -> int:
        """Calls running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Calls queued now."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block (waiting in line if needed)."""
        if (
            self._sem.locked()
            and self.max_waiting is not None
            and self._waiting >= self.max_waiting
        ):
            raise OverloadedError(
                f"{self.name}: {self._active} calls running and {self._waiting} waiting "
                f"(limit {self.limit}, max_waiting {self.max_waiting}); try again shortly"
            )
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._sem.release()


@contextlib.contextmanager
def _span(name: str) -> Iterator[None]:
    if _otel is None:
        yield
        return
    with _otel.get_tracer("avatarkit").start_as_current_span(name):
        yield


def _load_otel() -> Any:
    if importlib.util.find_spec("opentelemetry") is None:
        return None
    return importlib.import_module("opentelemetry.trace")


_otel = _load_otel()


class _Limited:
    """Proxy that runs a backend's async methods inside a ConcurrencyLimit and counts them."""

    def __init__(self, inner: Any, limit: ConcurrencyLimit | None, role: str, stats: CallStats):
        self._inner = inner
        self._limit = limit
        self._role = role
        self._stats = stats

    def __repr__(self) -> str:
        return f"limited({self._inner!r})"

    @property
    def inner(self) -> Any:
        """The wrapped backend."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in _ASYNC_METHODS and callable(attr):
            return self._wrap_call(name, attr)
        if name in _STREAM_METHODS and callable(attr):
            return self._wrap_stream(name, attr)
        return attr

    def _wrap_call(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        key = f"{self._role}.{name}"

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._limit.slot() if self._limit else contextlib.nullcontext():
                self._stats.calls[key] += 1
                count(f"calls.{key}")
                t0 = time.perf_counter()
                try:
                    with _span(f"avatarkit.{key}"):
                        return await fn(*args, **kwargs)
                finally:
                    spent = time.perf_counter() - t0
                    self._stats.seconds[key] = self._stats.seconds.get(key, 0.0) + spent

        return call

    def _wrap_stream(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        key = f"{self._role}.{name}"

        @functools.wraps(fn)
        async def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async with self._limit.slot() if self._limit else contextlib.nullcontext():
                self._stats.calls[key] += 1
                count(f"calls.{key}")
                with _span(f"avatarkit.{key}"):
                    async for item in fn(*args, **kwargs):
                        yield item

        return stream


def limited(
    backend: Any,
    limit: ConcurrencyLimit | int | None,
    *,
    role: str = "backend",
    stats: CallStats | None = None,
) -> Any:
    """Wrap ``backend`` so its async calls respect ``limit`` and are counted in ``stats``."""
    if isinstance(limit, int):
        limit = ConcurrencyLimit(limit, name=role)
    return _Limited(backend, limit, role, stats or CallStats())
