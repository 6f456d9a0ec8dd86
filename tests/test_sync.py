from __future__ import annotations

import asyncio

import pytest

from avatarkit import _sync


async def _answer() -> int:
    await asyncio.sleep(0.01)
    return 42


def test_run_from_plain_code() -> None:
    assert _sync.run(_answer()) == 42


async def test_run_inside_a_running_loop_like_jupyter() -> None:
    # A notebook cell runs with an event loop already going; the sync facade must still work.
    assert asyncio.get_running_loop() is not _sync.get_loop()
    assert _sync.run(_answer()) == 42


def test_run_on_the_worker_loop_itself_asks_to_await() -> None:
    async def nested() -> None:
        _sync.run(_answer())

    with pytest.raises(RuntimeError, match="await the async method"):
        _sync.run(nested())


def test_one_loop_serves_every_call() -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    assert _sync.run(loop_id()) == _sync.run(loop_id())
