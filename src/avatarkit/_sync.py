"""Run coroutines from synchronous code on one long-lived event loop in a daemon thread.

Works whether or not the caller's thread already runs a loop (Jupyter), keeps pooled async
clients bound to one loop, cancels the coroutine on Ctrl-C, and shuts the loop down at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_EXIT_TIMEOUT = 10.0
"""Seconds the shutdown at exit may take (closing connections, the default executor)."""


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="avatarkit-loop", daemon=True)
            thread.start()
            if _loop is None:
                atexit.register(_shutdown_at_exit)
            _loop, _thread = loop, thread
        return _loop


def _shutdown_at_exit() -> None:
    """Shut the shared loop down as ``asyncio.run`` ends its loop, then close it.

    ``shutdown_asyncgens()`` closes the HTTP clients the ``*_sync`` calls opened (see
    ``_http.ClientPerLoop``), so their sockets do not wait for the garbage collector. Runs
    after the program's other threads have been joined; a call still running on the loop (a
    daemon thread's) is left alone, and so is the loop.
    """
    with _lock:
        loop, thread = _loop, _thread
    if loop is None or thread is None or loop.is_closed() or not thread.is_alive():
        return

    async def shut_down() -> bool:
        if asyncio.all_tasks() - {asyncio.current_task()}:
            return False
        await loop.shutdown_asyncgens()
        # Python 3.12 starts no thread at exit ("can't create new thread at interpreter
        # shutdown"); the executor's workers were joined by then, and close() shuts it down
        with contextlib.suppress(RuntimeError):
            await loop.shutdown_default_executor()
        return True

    with contextlib.suppress(Exception):  # at exit nobody is left to tell
        done = asyncio.run_coroutine_threadsafe(shut_down(), loop).result(_EXIT_TIMEOUT)
        if done:
            loop.call_soon_threadsafe(loop.stop)  # runs the callbacks due (transports' close)
            thread.join(_EXIT_TIMEOUT)
            if not thread.is_alive():
                loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the shared loop and return its result.

    Raises:
        RuntimeError: called from a coroutine already running on the shared loop
            (``await`` the async method instead).
    """
    loop = get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError(
            "a *_sync method was called from inside avatarkit's own event loop; "
            "await the async method instead"
        )
    future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise
