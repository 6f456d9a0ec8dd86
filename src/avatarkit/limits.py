"""Many conversations in one process: per-backend concurrency limits, fair queues, backpressure.

Wrap a backend with :func:`limited` (``AvatarBot(limits={"voice": 4})`` does it for you): at most
``limit`` calls run at once, later ones wait in arrival order, and when ``max_waiting`` are
already queued a new call fails fast with ``OverloadedError`` instead of piling up memory.
Every wrapped call is counted, and traced as an OpenTelemetry span when opentelemetry is installed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from avatarkit.errors import InputValidationError, OverloadedError
from avatarkit.metrics import count, span
from avatarkit.ports import check_result

__all__ = ["CallStats", "ConcurrencyLimit", "limited"]

_ASYNC_METHODS = (
    "synthesize", "render", "render_text", "idle", "complete", "generate", "generate_many",
    "plan", "classify", "analyze", "preprocess",
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
    """At most ``limit`` holders at once; waiters served strictly first come, first served.

    A freed slot is handed straight to the oldest waiter, so a newcomer can never overtake
    the queue. Not bound to an event loop: one limit may serve several ``asyncio.run`` calls
    one after another.

    Args:
        limit: Concurrent calls allowed.
        max_waiting: Calls allowed to wait; one more raises OverloadedError (None: unbounded).
        name: Used in error messages.

    Raises:
        InputValidationError: ``limit`` is not a whole number or is < 1, or ``max_waiting`` < 0.
    """

    def __init__(
        self, limit: int, *, max_waiting: int | None = None, name: str = "backend"
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise InputValidationError(
                f"{name}: limits are whole numbers of calls, not {limit!r}", field="limit"
            )
        if limit < 1:
            raise InputValidationError(f"{name}: limit must be >= 1, got {limit}", field="limit")
        if max_waiting is not None and max_waiting < 0:
            raise InputValidationError(
                f"{name}: max_waiting must be >= 0, got {max_waiting}", field="max_waiting"
            )
        self.limit = limit
        self.max_waiting = max_waiting
        self.name = name
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._active = 0

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit({self.name!r}, limit={self.limit}, active={self._active}, "
            f"waiting={len(self._waiters)})"
        )

    @property
    def active(self) -> int:
        """Calls running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Calls queued now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if none is free.

        Raises:
            OverloadedError: ``max_waiting`` calls are already queued.
        """
        if self._active < self.limit and not self._waiters:
            self._active += 1
            return
        if self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            raise OverloadedError(
                f"{self.name}: {self._active} calls running and {len(self._waiters)} waiting "
                f"(limit {self.limit}, max_waiting {self.max_waiting}); try again shortly"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # resolved by release(), which hands its slot over to us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot reached us just as we were cancelled: pass it on
            elif future in self._waiters:  # release() drops a cancelled waiter it meets
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter if there is one."""
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._active -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block (waiting in line if needed)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class _Limited:
    """Proxy that runs a backend's async methods inside a ConcurrencyLimit and counts them.

    It also checks that each result has the type the role's port promises (``check_result``).
    """

    _avatarkit_wrapper = True

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
        if name == "_inner":  # not set yet (copy/pickle): avoid recursion
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        if name in _ASYNC_METHODS and callable(attr):
            return self._wrap_call(name, attr)
        if name in _STREAM_METHODS and callable(attr):
            return self._wrap_stream(name, attr)
        return attr

    def _attributes(self, method: str) -> dict[str, Any]:
        return {
            "avatarkit.role": self._role,
            "avatarkit.method": method,
            "avatarkit.backend": type(self._inner).__name__,
            "avatarkit.cache.hit": False,
        }

    def _wrap_call(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        key = f"{self._role}.{name}"

        @functools.wraps(fn)
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with self._limit.slot() if self._limit else contextlib.nullcontext():
                self._stats.calls[key] += 1
                count(f"calls.{key}")
                t0 = time.perf_counter()
                try:
                    with span(f"avatarkit.{key}", self._attributes(name)):
                        result = await fn(*args, **kwargs)
                    return check_result(self._role, name, self._inner, result)
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
                with span(f"avatarkit.{key}", self._attributes(name)):
                    async for item in fn(*args, **kwargs):
                        yield check_result(self._role, name, self._inner, item)

        return stream


def limited(
    backend: Any,
    limit: ConcurrencyLimit | int | None,
    *,
    role: str = "backend",
    stats: CallStats | None = None,
) -> Any:
    """Wrap ``backend`` so its async calls respect ``limit`` and are counted in ``stats``."""
    if limit is not None and not isinstance(limit, ConcurrencyLimit):
        limit = ConcurrencyLimit(limit, name=role)  # checks it is a whole number
    return _Limited(backend, limit, role, stats or CallStats())
