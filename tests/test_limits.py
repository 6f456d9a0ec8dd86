from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from avatarkit.errors import InputValidationError, OverloadedError
from avatarkit.limits import ConcurrencyLimit, limited
from avatarkit.metrics import turn_counter
from avatarkit.testing import FakeChatModel, FakeVoice
from avatarkit.types import AvatarVideo, ChatMessage


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


async def test_a_cancelled_waiter_leaves_the_line_and_its_slot_goes_on() -> None:
    limit = ConcurrencyLimit(1, name="renderer")
    order: list[str] = []

    async def job(name: str, seconds: float) -> None:
        async with limit.slot():
            order.append(name)
            await asyncio.sleep(seconds)

    first = asyncio.create_task(job("first", 0.05))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(job("quitter", 0))
    last = asyncio.create_task(job("last", 0))
    await asyncio.sleep(0.01)
    assert (limit.active, limit.waiting) == (1, 2)
    quitter.cancel()
    await asyncio.gather(first, last)
    assert order == ["first", "last"] and (limit.active, limit.waiting) == (0, 0)


def test_a_limit_serves_one_event_loop_after_another() -> None:
    voice = limited(FakeVoice(delay=0.01), 1, role="voice")

    async def burst() -> None:
        await asyncio.gather(*(voice.synthesize("x") for _ in range(3)))

    asyncio.run(burst())
    asyncio.run(burst())  # asyncio.Semaphore would be bound to the first, closed loop


def test_bad_limits_are_refused_up_front() -> None:
    from avatarkit.bot import AvatarBot
    from avatarkit.errors import ConfigurationError, InputValidationError

    with pytest.raises(InputValidationError, match="limit must be >= 1"):
        ConcurrencyLimit(0)
    with pytest.raises(ConfigurationError, match="unknown role"):
        AvatarBot(limits={"vocie": 2}, chat=None, renderer=None, voice="test")
    with pytest.raises(ConfigurationError, match="needs a cache"):
        AvatarBot(chat=None, renderer=None, voice="test").prerender_sync(["Hi"])


async def test_a_busy_bot_sheds_load_with_overloaded_error_and_serves_the_rest() -> None:
    from avatarkit.bot import AvatarBot

    bot = AvatarBot(
        chat=FakeChatModel("Sure."), voice=FakeVoice(delay=0.05), renderer=None,
        preprocessor=None, intent=None, sentiment=None, expression=None,
        limits={"voice": 1}, max_waiting=2,
    )  # fmt: skip
    results = await asyncio.gather(
        *(bot.respond("Hi", session_id=f"s{n}") for n in range(5)), return_exceptions=True
    )
    served = [r for r in results if not isinstance(r, BaseException)]
    shed = [r for r in results if isinstance(r, OverloadedError)]
    assert (len(served), len(shed)) == (3, 2)  # one running + two waiting; the rest refused
    assert all(r.voice is not None for r in served)
    assert bot.calls.snapshot()["voice.synthesize"] == 3


async def test_a_renderers_idle_clip_and_text_renders_count_against_its_limit() -> None:
    running = peak = 0

    class Renderer:
        async def _work(self) -> AvatarVideo:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            return AvatarVideo(
                path=Path("clip.mp4"), width=8, height=8, fps=25, frame_count=0, duration=0
            )

        async def render(self, *args: object, **kw: object) -> AvatarVideo:
            return await self._work()

        async def idle(self, *args: object, **kw: object) -> AvatarVideo:
            return await self._work()

        async def render_text(self, *args: object, **kw: object) -> AvatarVideo:
            return await self._work()

    renderer = limited(Renderer(), 1, role="renderer")
    await asyncio.gather(renderer.render(), renderer.idle(), renderer.render_text())
    assert peak == 1


def test_a_limit_that_is_not_a_whole_number_is_refused() -> None:
    for bad in ("2", 2.5, True):
        with pytest.raises(InputValidationError, match="whole numbers"):
            limited(FakeVoice(), bad, role="voice")  # type: ignore[arg-type]


async def test_waiters_cancelled_together_as_a_slot_is_handed_over_all_end_cancelled() -> None:
    # a failed stage cancels every queued call at once (TaskGroup, gather): each must end with
    # CancelledError, not ValueError, and the slots must add up afterwards
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    first = asyncio.create_task(limit.acquire())
    second = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)  # both are queued
    limit.release()  # the slot goes to the first waiter...
    first.cancel()  # ...which is cancelled before it runs, along with the second
    second.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert [type(r) for r in results] == [asyncio.CancelledError, asyncio.CancelledError]
    assert limit.active == 0 and limit.waiting == 0
    await asyncio.wait_for(limit.acquire(), 1)  # and the slot is free
