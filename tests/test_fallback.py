"""Fallback chains: the next backend answers when one fails, for every role, and it shows."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from _cloud_helpers import png_bytes
from avatarkit import AvatarBot
from avatarkit._http import ConnectOptions
from avatarkit.cache import ReplyCache
from avatarkit.errors import (
    AllBackendsFailedError,
    ConfigurationError,
    ContentModerationError,
    InputValidationError,
    ProviderConnectionError,
    ProviderError,
    QuotaExceededError,
)
from avatarkit.fallback import (
    FallbackChat,
    FallbackRenderer,
    FallbackStreamingVoice,
    FallbackVoice,
    fallback,
)
from avatarkit.ports import (
    ChatCapabilities,
    RendererCapabilities,
    StreamingSpeechSynthesizer,
    VoiceCapabilities,
)
from avatarkit.testing import FakeChatModel, FakeRenderer, FakeVoice, fake_speech
from avatarkit.types import AvatarImage, AvatarPrompt, ChatMessage, VoiceOutput

pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

KEY = "sk-fallbacktest0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyVoice(FakeVoice):
    """A FakeVoice that raises the queued errors, one per call, then speaks."""

    def __init__(self, *errors: BaseException, sample_rate: int = 16_000) -> None:
        super().__init__(sample_rate=sample_rate)
        self.errors = list(errors)

    async def synthesize(self, text: str) -> VoiceOutput:
        self.calls.append(text)
        if self.errors:
            raise self.errors.pop(0)
        return fake_speech(text, sample_rate=self.sample_rate)


def down(message: str = "connection refused") -> ProviderConnectionError:
    return ProviderConnectionError(message, provider="flaky")


def chain(*voices: Any, cooldown: float = 30.0) -> tuple[FallbackVoice, Clock]:
    voice = FallbackVoice(*voices, cooldown=cooldown)
    clock = Clock()
    voice._clock = clock
    return voice, clock


async def test_the_next_voice_answers_when_the_first_fails() -> None:
    first, second = FlakyVoice(down()), FlakyVoice(sample_rate=22_050)
    voice, _ = chain(first, second)
    out = await voice.synthesize("Hello there")
    assert out.sample_rate == 22_050  # the second voice's speech
    assert first.calls == ["Hello there"] and second.calls == ["Hello there"]


async def test_a_failed_backend_cools_down_then_is_tried_first_again() -> None:
    first, second = FlakyVoice(down(), down()), FlakyVoice()
    voice, clock = chain(first, second, cooldown=30)
    await voice.synthesize("one")
    health = voice.health()
    assert not health[0].available and health[0].failures == 1
    assert "connection refused" in (health[0].last_error or "") and health[1].available

    await voice.synthesize("two")  # within the cooldown: the first is not asked
    assert first.calls == ["one"] and second.calls == ["one", "two"]

    clock.now += 31  # cooled down: asked first again (fails once more, then recovers)
    await voice.synthesize("three")
    assert first.calls == ["one", "three"]
    clock.now += 31
    out = await voice.synthesize("four")
    assert first.calls[-1] == "four" and second.calls == ["one", "two", "three"]
    assert out.text == "four" and voice.health()[0].failures == 0


async def test_when_every_backend_cools_down_all_are_still_tried_in_order() -> None:
    first, second = FlakyVoice(down()), FlakyVoice(down())
    voice, _ = chain(first, second)
    with pytest.raises(AllBackendsFailedError):
        await voice.synthesize("one")
    assert not any(h.available for h in voice.health())
    out = await voice.synthesize("two")  # both cooling: tried anyway; the first answers
    assert out.text == "two" and first.calls == ["one", "two"] and second.calls == ["one"]


async def test_every_backend_failing_raises_one_error_naming_each() -> None:
    first = FlakyVoice(QuotaExceededError("out of credits", provider="elevenlabs", status=402))
    second = FlakyVoice(down("no route to host"))
    voice, _ = chain(first, second)
    with pytest.raises(AllBackendsFailedError) as info:
        await voice.synthesize("Hello")
    err = info.value
    assert isinstance(err, ProviderError) and err.role == "voice"
    assert "out of credits" in str(err) and "no route to host" in str(err)
    assert [type(e) for e in err.errors] == [QuotaExceededError, ProviderConnectionError]
    assert err.retryable  # the connection error may heal; the quota will not
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and len(copy.errors) == 2


async def test_a_content_refusal_is_not_taken_elsewhere() -> None:
    refusal = ContentModerationError("refused on content grounds", provider="flaky")
    first, second = FlakyVoice(refusal), FlakyVoice()
    voice, _ = chain(first, second)
    with pytest.raises(ContentModerationError):
        await voice.synthesize("Hello")
    assert second.calls == []


@pytest.mark.parametrize(
    "error", [InputValidationError("text too long", field="text"), RuntimeError("bug")]
)
async def test_input_errors_and_bugs_are_raised_at_once(error: BaseException) -> None:
    first, second = FlakyVoice(error), FlakyVoice()
    voice, _ = chain(first, second)
    with pytest.raises(type(error)):
        await voice.synthesize("Hello")
    assert second.calls == [] and voice.health()[0].available


async def test_an_unmapped_os_error_or_timeout_moves_on() -> None:
    first, second = FlakyVoice(ConnectionResetError("reset"), TimeoutError()), FlakyVoice()
    voice, _ = chain(first, second, cooldown=0)
    assert (await voice.synthesize("a")).text == "a"
    assert (await voice.synthesize("b")).text == "b"
    assert second.calls == ["a", "b"]


async def test_failures_are_logged_redacted(caplog: pytest.LogCaptureFixture) -> None:
    first = FlakyVoice(down(f"refused for Bearer {KEY}"))
    voice, _ = chain(first, FlakyVoice())
    with caplog.at_level(logging.WARNING, logger="avatarkit.fallback"):
        await voice.synthesize("Hello")
    assert "FlakyVoice failed" in caplog.text and "trying the next one" in caplog.text
    assert KEY not in caplog.text and KEY not in (voice.health()[0].last_error or "")


# ---------------------------------------------------------------------- streams


class FlakyChat(FakeChatModel):
    """Streams its reply, failing before the first delta or after ``fail_after`` deltas."""

    def __init__(self, reply: str, *, fail_after: int | None = None) -> None:
        super().__init__(reply)
        self.fail_after = fail_after
        self.closed = False

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        self.calls.append(list(messages))
        try:
            for i, word in enumerate(self.replies[0].split(" ")):
                if i == self.fail_after:
                    raise down("stream broke")
                yield word + " "
        finally:
            self.closed = True

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        if self.fail_after is not None:
            raise down()
        return await super().complete(messages)


MESSAGES = [ChatMessage(role="user", content="Hi")]


async def test_a_stream_moves_on_before_its_first_delta() -> None:
    chat = FallbackChat(FlakyChat("never said", fail_after=0), FlakyChat("Hello from two"))
    deltas = [d async for d in chat.stream(MESSAGES)]
    assert "".join(deltas) == "Hello from two "


async def test_a_stream_that_breaks_midway_is_not_started_over_elsewhere() -> None:
    second = FlakyChat("Hello from two")
    chat = FallbackChat(FlakyChat("Hello from one, then trouble", fail_after=2), second)
    seen: list[str] = []
    with pytest.raises(ProviderConnectionError, match="stream broke"):
        async for delta in chat.stream(MESSAGES):
            seen.append(delta)
    assert "".join(seen) == "Hello from " and second.calls == []
    assert not chat.health()[0].available  # it failed: the next turn starts with the other


async def test_stopping_a_stream_early_closes_the_backends_stream() -> None:
    first = FlakyChat("one two three four")
    chat = FallbackChat(first, FlakyChat("spare"))
    stream = chat.stream(MESSAGES)
    assert await stream.__anext__() == "one "
    await stream.aclose()  # type: ignore[attr-defined]
    assert first.closed


async def test_complete_moves_on_too() -> None:
    chat = FallbackChat(FlakyChat("x", fail_after=0), FlakyChat("Second answer"))
    assert await chat.complete(MESSAGES) == "Second answer"


# ---------------------------------------------------------------------- capabilities


class StreamingFake(FakeVoice):
    def __init__(self, fmt: str = "mp3") -> None:
        super().__init__()
        self.fmt = fmt

    @property
    def capabilities(self) -> VoiceCapabilities:
        return VoiceCapabilities(word_timings=True, streaming=True, formats=(self.fmt,))  # type: ignore[arg-type]

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        yield b"chunk"


def test_capabilities_are_what_every_backend_offers() -> None:
    voice = fallback("voice", StreamingFake("mp3"), FakeVoice())
    caps = voice.capabilities
    assert isinstance(voice, FallbackVoice) and not isinstance(voice, StreamingSpeechSynthesizer)
    assert caps.word_timings and not caps.phoneme_timings and not caps.streaming
    assert caps.formats == ("mp3", "wav") and caps.offline  # eSpeak-like fake runs offline

    both = fallback("voice", StreamingFake("mp3"), StreamingFake("mp3"))
    assert isinstance(both, FallbackStreamingVoice) and both.capabilities.streaming
    assert isinstance(both, StreamingSpeechSynthesizer)
    mixed = fallback("voice", StreamingFake("mp3"), StreamingFake("pcm_s16le"))
    assert not isinstance(mixed, StreamingSpeechSynthesizer)  # chunks would change format


class PhotoOnlyRenderer(FakeRenderer):
    def __init__(self) -> None:
        super().__init__()
        self.checked: list[AvatarImage] = []

    @property
    def capabilities(self) -> RendererCapabilities:
        return RendererCapabilities(image_kinds=("photo",), formats=("mp4", "gif"))

    def check_image(self, image: AvatarImage) -> None:
        self.checked.append(image)
        if image.width < 100:
            raise InputValidationError("the picture is too small for this service", field="image")


def test_a_renderer_chain_takes_only_what_every_renderer_takes() -> None:
    renderer = fallback("renderer", PhotoOnlyRenderer(), FakeRenderer())
    assert isinstance(renderer, FallbackRenderer)
    caps = renderer.capabilities
    assert caps.image_kinds == ("photo",) and caps.formats == ("gif",) and caps.offline
    assert renderer.idle is None  # neither offers an idle loop
    tiny = AvatarImage(data=png_bytes(64, 80), width=64, height=80, kind="photo")
    with pytest.raises(InputValidationError, match="too small"):
        renderer.check_image(tiny)  # the first renderer would refuse it


def test_renderers_with_nothing_in_common_are_refused() -> None:
    class Mp4Only(PhotoOnlyRenderer):
        @property
        def capabilities(self) -> RendererCapabilities:
            return RendererCapabilities(image_kinds=("photo",), formats=("mp4",))

    with pytest.raises(ConfigurationError, match="in common"):
        fallback("renderer", Mp4Only(), FakeRenderer())


def test_bad_chains_are_refused_before_any_call() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        FallbackVoice()
    with pytest.raises(ConfigurationError, match="does not implement"):
        FallbackVoice(FakeVoice(), FakeChatModel())
    with pytest.raises(ConfigurationError, match="spec strings"):
        FallbackVoice(FakeVoice(), "espeak")
    with pytest.raises(ConfigurationError, match="cooldown"):
        FallbackVoice(FakeVoice(), cooldown=-1)
    with pytest.raises(ConfigurationError, match="at least one"):
        AvatarBot(voice=[], renderer=None)


# ---------------------------------------------------------------------- in the bot


def offline_bot(**kw: Any) -> AvatarBot:
    defaults: dict[str, Any] = {
        "chat": FakeChatModel("Glad to help."),
        "renderer": None,
        "preprocessor": None,
        "intent": None,
        "sentiment": None,
    }
    return AvatarBot(**{**defaults, **kw})


def test_a_bot_takes_a_list_per_role_and_reports_the_stand_in() -> None:
    first, second = FlakyVoice(down()), FlakyVoice(sample_rate=22_050)
    bot = offline_bot(voice=[first, second])
    reply = bot.respond_sync("Hello")
    assert reply.voice is not None and reply.voice.sample_rate == 22_050
    assert reply.metrics.fallbacks == {"voice": 1}
    assert reply.metrics.provider_calls["voice.synthesize"] == 1  # one call to the chain
    again = bot.respond_sync("Hello again")  # the first cools down: asked no more
    assert again.metrics.fallbacks == {"voice": 1} and first.calls == ["Glad to help."]
    fine = offline_bot(voice=[FlakyVoice(), FlakyVoice()]).respond_sync("Hi")
    assert fine.metrics.fallbacks == {}
    bot.close_sync()


def test_spec_strings_build_a_chain_that_runs_offline() -> None:
    bot = offline_bot(voice=["test", "espeak:en-us"])
    assert type(bot.voice.inner).__name__ == "FallbackVoice"  # type: ignore[union-attr]
    assert bot.respond_sync("Hello").voice is not None
    bot.close_sync()


def test_a_real_cloud_voice_that_cannot_connect_falls_back_to_espeak() -> None:
    from avatarkit.providers.elevenlabs import ElevenLabsVoice

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    options = ConnectOptions(
        timeout=0.5, connect_timeout=0.5, max_retries=1, backoff_initial=0.01,
        backoff_max=0.02, deadline=2.0,
    )  # fmt: skip
    cloud = ElevenLabsVoice(api_key=KEY, base_url=f"http://127.0.0.1:{port}", options=options)
    bot = offline_bot(voice=[cloud, "espeak:en-us"])
    reply = bot.respond_sync("Hello")
    assert reply.voice is not None and reply.voice.words  # eSpeak's speech, with timings
    assert reply.metrics.fallbacks == {"voice": 1}
    assert KEY not in repr(bot.voice) and KEY not in str(bot.voice.inner.health())  # type: ignore[union-attr]
    bot.close_sync()


def test_the_cache_keeps_only_the_first_backends_work(tmp_path: Path) -> None:
    first, second = FlakyVoice(down()), FlakyVoice(sample_rate=22_050)
    cache = ReplyCache(tmp_path / "cache")
    bot = offline_bot(voice=[first, second], cache=cache)
    bot.voice.inner.inner._clock = lambda: 0.0  # type: ignore[union-attr]  # frozen: no cooldown ends
    bot.voice.inner.inner.cooldown = 0.0  # type: ignore[union-attr]
    stood_in = bot.respond_sync("Hello")
    assert stood_in.voice is not None and stood_in.voice.sample_rate == 22_050
    back = bot.respond_sync("Hello")  # the first is back: its speech, not the cached stand-in
    assert back.voice is not None and back.voice.sample_rate == 16_000
    assert first.calls == ["Glad to help.", "Glad to help."]
    hit = bot.respond_sync("Hello")  # the first's speech was stored: no call at all
    assert hit.voice is not None and hit.voice.sample_rate == 16_000
    assert first.calls == ["Glad to help.", "Glad to help."]
    assert "voice.synthesize" not in hit.metrics.provider_calls and hit.metrics.cache_hits >= 1
    bot.close_sync()


def test_closing_the_bot_closes_every_backend_of_a_chain() -> None:
    closed: list[str] = []

    class Closing(FakeVoice):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)

    bot = offline_bot(voice=[Closing("a"), Closing("b")])
    bot.close_sync()
    assert closed == ["a", "b"]


def test_an_intent_chain_gives_every_intent_its_classifiers_give() -> None:
    from avatarkit.testing import FakeIntentClassifier

    class Listing(FakeIntentClassifier):
        def __init__(self, keywords: dict[str, str]) -> None:
            super().__init__(keywords)
            self.names = sorted(set(keywords.values()))

    chain_ = fallback("intent", Listing({"hello": "greet"}), Listing({"refund": "refund"}))
    assert getattr(chain_, "names", None) == ["greet", "refund"]
    unlisted = fallback("intent", Listing({"hello": "greet"}), FakeIntentClassifier())
    assert getattr(unlisted, "names", None) is None  # one gives anything: trusted
    # a handler for an intent only the second classifier gives is accepted, not refused
    offline_bot(voice=None, intent=chain_, handlers={"refund": lambda user, state: "Sure."})


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown role"):
        fallback("painter", FakeVoice())  # type: ignore[arg-type]


async def test_a_chat_chain_is_a_chat_model() -> None:
    chat = fallback("chat", FakeChatModel("a"), FakeChatModel("b"))
    assert chat.capabilities == ChatCapabilities(streaming=True, offline=True)
    assert await asyncio.wait_for(chat.complete(MESSAGES), 5) == "a"  # type: ignore[attr-defined]


async def test_chains_pass_the_conformance_checks_backends_pass(tmp_path: Path) -> None:
    from avatarkit.testing import FakeImageGenerator, check_chat, check_renderer, check_voice

    voice = fallback("voice", FlakyVoice(down()), "espeak:en-us")
    speech = await check_voice(voice)  # the stand-in's capabilities hold for the chain
    await check_chat(fallback("chat", FlakyChat("x", fail_after=0), FakeChatModel("Fine.")))
    image = await FakeImageGenerator().generate(AvatarPrompt("a face"))
    await check_renderer(fallback("renderer", FakeRenderer(), FakeRenderer()), image, speech)


async def test_a_streamed_turn_moves_to_the_next_chat_model_before_its_first_delta() -> None:
    from avatarkit.streaming import TurnComplete

    bot = offline_bot(
        chat=[FlakyChat("never said", fail_after=0), FlakyChat("The spare model answers.")],
        voice=FakeVoice(),
    )
    events = [e async for e in bot.stream("Hello")]
    final = events[-1]
    assert isinstance(final, TurnComplete)
    assert final.response.text == "The spare model answers."
    assert final.response.metrics.fallbacks == {"chat": 1}
    await bot.aclose()


# ---------------------------------------------------------------------- review findings


class SwitchableExpression:
    """An expression policy that is down until ``fail`` is cleared, then says ``emotion``."""

    def __init__(self, emotion: str, *, fail: bool = False) -> None:
        self.emotion, self.fail, self.calls = emotion, fail, 0

    async def plan(self, reply: Any, *, sentiment: Any = None, intent: Any = None) -> list[Any]:
        from avatarkit.types import Emotion, FacialExpression

        self.calls += 1
        if self.fail:
            raise down()
        return [FacialExpression(emotion=Emotion(self.emotion), intensity=0.8, time=0.0)]


def test_a_stand_in_expressions_plan_is_not_cached(tmp_path: Path) -> None:
    first, spare = SwitchableExpression("happy", fail=True), SwitchableExpression("sad")
    bot = offline_bot(
        voice=FakeVoice(),
        expression=fallback("expression", first, spare, cooldown=0),
        cache=ReplyCache(tmp_path / "cache"),
    )
    stood_in = bot.respond_sync("Hello")
    assert stood_in.timeline is not None and stood_in.timeline.expressions[0].emotion == "sad"
    first.fail = False
    back = bot.respond_sync("Hello")  # the first is back: its plan, not the stand-in's cached
    assert back.timeline is not None and back.timeline.expressions[0].emotion == "happy"
    assert first.calls == 2
    bot.close_sync()


def test_each_generator_of_an_image_chain_must_suit_the_renderer() -> None:
    from avatarkit.testing import FakeImageGenerator

    with pytest.raises(ConfigurationError, match="FakeImageGenerator makes procedural"):
        offline_bot(
            voice=FakeVoice(),
            renderer=PhotoOnlyRenderer(),
            image=[FakeImageGenerator(kind="photo"), FakeImageGenerator(kind="procedural")],
        ).respond_sync("Hello")


class PreparingRenderer(FakeRenderer):
    def __init__(self, *, fails: bool) -> None:
        super().__init__()
        self.fails, self.prepared = fails, 0

    async def prepare(self, image: AvatarImage) -> None:
        self.prepared += 1
        if self.fails:
            raise InputValidationError("No face found in this picture", field="image")


async def test_a_stand_ins_failed_prepare_does_not_stop_the_first_renderer() -> None:
    first, spare = PreparingRenderer(fails=False), PreparingRenderer(fails=True)
    image = AvatarImage(data=png_bytes(128, 128), width=128, height=128, kind="photo")
    renderer = fallback("renderer", first, spare)
    await renderer.prepare(image)  # type: ignore[attr-defined]  # logged, not raised
    assert first.prepared == spare.prepared == 1
    with pytest.raises(InputValidationError):
        await fallback("renderer", spare, first).prepare(image)  # type: ignore[attr-defined]


class Down(FakeRenderer):
    async def render(self, *args: Any, **kwargs: Any) -> Any:
        raise down()


async def test_followers_of_a_stand_in_render_get_a_clip_of_their_own(tmp_path: Path) -> None:
    bot = offline_bot(
        voice=FakeVoice(),
        renderer=[Down(), FakeRenderer(delay=0.05)],
        cache=ReplyCache(tmp_path / "cache"),
    )
    image = AvatarImage(data=png_bytes(64, 64), width=64, height=64, kind="photo")
    speech = fake_speech("Hello there")
    from avatarkit.animation.lipsync import lipsync, timeline_from

    timeline = timeline_from(speech, lipsync(speech, text="Hello there"))
    renderer = bot.renderer
    assert renderer is not None

    async def leader() -> None:
        video = await renderer.render(image, speech, timeline)
        video.path.unlink()  # the caller's own file: it may move or delete it

    async def follower() -> Path:
        await asyncio.sleep(0.01)
        return (await renderer.render(image, speech, timeline)).path

    _, path = await asyncio.gather(leader(), follower())
    assert path.exists()
    await bot.aclose()


async def test_a_file_error_is_raised_at_once_not_taken_for_an_outage(tmp_path: Path) -> None:
    first, second = FlakyVoice(FileExistsError("out/clip.gif is a file")), FlakyVoice()
    voice, _ = chain(first, second)
    with pytest.raises(FileExistsError):
        await voice.synthesize("Hello")
    assert second.calls == [] and voice.health()[0].available


def test_an_idle_loop_only_one_renderer_has_is_no_fallback() -> None:
    class Idling(FakeRenderer):
        async def idle(self, image: AvatarImage, seconds: float = 3.0, **kw: Any) -> Any:
            return "loop"

    from avatarkit.metrics import turn_counter

    renderer = fallback("renderer", FakeRenderer(), Idling())
    with turn_counter() as counter:
        assert asyncio.run(renderer.idle(None, 1.0)) == "loop"  # type: ignore[attr-defined]
    assert counter["fallback.renderer"] == 0


async def test_errors_without_text_are_named_and_unpicklable_ones_travel_as_text() -> None:
    class Weird(ConnectionError):
        def __init__(self, host: str, *, port: int) -> None:
            super().__init__(f"{host}:{port} unreachable")

    voice, _ = chain(FlakyVoice(TimeoutError()), FlakyVoice(Weird("api.example", port=443)))
    with pytest.raises(AllBackendsFailedError) as info:
        await voice.synthesize("Hello")
    assert "FlakyVoice: TimeoutError" in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))
    assert "api.example:443 unreachable" in str(copy.errors[1]) and str(copy) == str(info.value)
