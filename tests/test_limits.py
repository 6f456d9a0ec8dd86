from __future__ import annotations

import asyncio

import pytest

from avatarkit.errors import OverloadedError
from avatarkit.limits import ConcurrencyLimit, limited
from avatarkit.metrics import turn_counter
from avatarkit.testing import FakeChatModel, FakeVoice
from avatarkit.types import ChatMessage


async def test_limit_caps_concurrency_and_serves_in_arrival_order() -> None:
    running = peak = 0
    order: list[int] = []

    class SlowVoice(FakeVoice):
        async def synthesize(self, text: str):  # type: ignore[no-untyped-def]
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(int(text))
            await asyncio.sleep(0.02)
            running -= 1
            return await super().synthesize("hi")

    voice = limited(SlowVoice(), 2, role="voice")
    await asyncio.gather(*(voice.synthesize(str(i)) for i in range(8)))
    assert peak == 2
    assert order == list(range(8))


async def test_backpressure_fails_fast_instead_of_queueing_forever() -> None:
    limit = ConcurrencyLimit(1, max_waiting=2, name="voice")
    voice = limited(FakeVoice(delay=0.2), limit, role="voice")
    tasks = [asyncio.create_task(voice.synthesize("x")) for _ in range(3)]
    await asyncio.sleep(0.01)
    with pytest.raises(OverloadedError, match="1 calls running and 2 waiting"):
        await voice.synthesize("one too many")
    await asyncio.gather(*tasks)


async def test_calls_are_counted_per_turn_without_mixing_sessions() -> None:
    voice = limited(FakeVoice(), None, role="voice")
    chat = limited(FakeChatModel(), None, role="chat")

    async def turn(n: int) -> dict[str, int]:
        with turn_counter() as counter:
            for _ in range(n):
                await voice.synthesize("x")
                await asyncio.sleep(0)
            async for _ in chat.stream([ChatMessage(role="user", content="hi")]):
                pass
        return dict(counter)

    a, b = await asyncio.gather(turn(1), turn(3))
    assert a == {"calls.voice.synthesize": 1, "calls.chat.stream": 1}
    assert b == {"calls.voice.synthesize": 3, "calls.chat.stream": 1}


def test_wrapped_backend_keeps_its_capabilities_and_attributes() -> None:
    inner = FakeVoice(sample_rate=8000)
    voice = limited(inner, 3, role="voice")
    assert voice.capabilities == inner.capabilities
    assert voice.sample_rate == 8000 and voice.inner is inner
