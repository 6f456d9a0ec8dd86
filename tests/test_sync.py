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


_SYNC_TURN_THEN_EXIT = """
import atexit, sys
import httpx

sys.path.insert(0, {tests!r})
from test_bot import _KeepAliveTTS

class Counting(httpx.AsyncHTTPTransport):
    closed = 0

    async def aclose(self):
        Counting.closed += 1
        await super().aclose()

# registered before avatarkit's loop exists: atexit runs it after avatarkit's own handler
atexit.register(lambda: print("transport closed:", Counting.closed, flush=True))

from avatarkit import AvatarBot
from avatarkit.providers.elevenlabs import ElevenLabsVoice
from avatarkit.testing import FakeChatModel

server = _KeepAliveTTS()
voice = ElevenLabsVoice(api_key="el-key-123456", base_url=server.__enter__(), transport=Counting())
bot = AvatarBot(chat=FakeChatModel("Hello there."), voice=voice, renderer=None,
                preprocessor=None, intent=None, sentiment=None)
bot.respond_sync("hi")  # and no close_sync(): the program just ends
"""


def test_a_program_ending_after_sync_calls_closes_their_connections() -> None:
    # the *_sync calls' loop was never shut down: its HTTP clients (async generators guard
    # them) were left for the garbage collector, which warned of an unclosed transport
    import subprocess
    import sys
    from pathlib import Path

    script = _SYNC_TURN_THEN_EXIT.format(tests=str(Path(__file__).parent))
    run = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "ResourceWarning" not in run.stderr and "unclosed" not in run.stderr, run.stderr
    assert "transport closed: 1" in run.stdout
