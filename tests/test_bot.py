from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from avatarkit import AvatarBot
from avatarkit.config import resolve_key
from avatarkit.errors import (
    ConfigurationError,
    InputValidationError,
    MissingKeyError,
    StageError,
    UnknownProviderError,
)
from avatarkit.registry import Provider, Registry
from avatarkit.testing import (
    FakeChatModel,
    FakeExpressionPolicy,
    FakeImageGenerator,
    FakeIntentClassifier,
    FakePreprocessor,
    FakeRenderer,
    FakeSentimentAnalyzer,
    FakeVoice,
)
from avatarkit.types import AvatarPrompt, Emotion

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


def fake_bot(**overrides: Any) -> AvatarBot:
    roles: dict[str, Any] = {
        "preprocessor": FakePreprocessor(),
        "intent": FakeIntentClassifier(),
        "sentiment": FakeSentimentAnalyzer(),
        "chat": FakeChatModel("Hello! Pleased to meet you, my friend."),
        "voice": FakeVoice(),
        "image": FakeImageGenerator(),
        "renderer": FakeRenderer(),
        "expression": FakeExpressionPolicy(),
    }
    roles.update(overrides)
    return AvatarBot(**roles)


async def test_one_turn_returns_a_consistent_response() -> None:
    bot = fake_bot()
    reply = await bot.respond("hello there")
    assert reply.text == "Hello! Pleased to meet you, my friend."
    assert reply.intent is not None and reply.intent.top == "greeting"
    assert reply.sentiment is not None and reply.sentiment.emotion is Emotion.HAPPY
    assert reply.voice is not None and reply.timeline is not None
    assert reply.timeline.problems() == []
    assert reply.timeline.visemes, "lip sync produced no visemes"
    assert reply.timeline.duration == pytest.approx(reply.voice.duration)
    assert [w.text for w in reply.timeline.words] == reply.text.split()
    assert reply.timeline.expressions and reply.timeline.expressions[0].emotion is Emotion.HAPPY
    assert reply.video is not None and reply.video.path.exists()
    assert reply.image is not None
    assert set(reply.metrics.durations) >= {
        "preprocess",
        "intent",
        "sentiment",
        "dialogue",
        "voice",
        "expression",
        "animate",
        "render",
    }


async def test_voice_and_expression_overlap_in_time() -> None:
    delay = 0.4
    bot = fake_bot(
        voice=FakeVoice(delay=delay), expression=FakeExpressionPolicy(delay=delay), renderer=None
    )
    t0 = time.perf_counter()
    reply = await bot.respond("hello")
    elapsed = time.perf_counter() - t0
    assert reply.metrics.durations["voice"] >= delay
    assert reply.metrics.durations["expression"] >= delay
    assert elapsed < 1.5 * delay, f"took {elapsed:.2f}s: voice and expression ran one after another"


async def test_understanding_and_avatar_image_run_beside_the_turn() -> None:
    bot = fake_bot(
        intent=FakeIntentClassifier(delay=0.3),
        sentiment=FakeSentimentAnalyzer(delay=0.3),
        image=FakeImageGenerator(delay=0.6),
    )
    t0 = time.perf_counter()
    await bot.respond("hello")
    elapsed = time.perf_counter() - t0
    # Sequential would be 0.3 + 0.3 + 0.6 = 1.2 s; concurrent is about max(0.3, 0.6).
    assert elapsed < 0.95, f"took {elapsed:.2f}s"


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x07\x1b", None, 42])
async def test_bad_input_is_refused_before_any_backend_is_called(text: Any) -> None:
    bot = fake_bot()
    with pytest.raises(InputValidationError):
        await bot.respond(text)
    for role in ("preprocessor", "intent", "sentiment", "voice", "renderer", "expression"):
        assert getattr(bot, role).calls == [], f"{role} was called"
    assert bot.dialogue is not None and bot.dialogue.chat.calls == []  # type: ignore[attr-defined]


async def test_text_over_the_configured_limit_is_refused() -> None:
    from avatarkit.config import Settings

    bot = fake_bot()
    bot.settings = Settings(max_input_chars=10)
    with pytest.raises(InputValidationError, match="limit is 10"):
        await bot.respond("this is longer than ten characters")
    assert bot.voice.calls == []  # type: ignore[union-attr]


def test_unknown_provider_spec_fails_at_construction() -> None:
    with pytest.raises(UnknownProviderError, match="Did you mean 'test'"):
        AvatarBot(chat="test", voice="tets", renderer=None)


def test_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIDVOICE_API_KEY", raising=False)
    calls: list[str] = []

    class PaidVoice(FakeVoice):
        def __init__(self) -> None:
            super().__init__()
            self.key = resolve_key("paidvoice", None, "PAIDVOICE_API_KEY")

    reg = Registry()
    reg.register(
        Provider("paidvoice", voice=lambda name, **kw: PaidVoice(), env_key="PAIDVOICE_API_KEY")
    )
    chat = FakeChatModel()
    with pytest.raises(MissingKeyError, match="PAIDVOICE_API_KEY"):
        AvatarBot(chat=chat, voice="paidvoice", renderer=None, registry=reg)
    assert chat.calls == [] and calls == []


def test_backend_object_must_fill_its_role() -> None:
    with pytest.raises(ConfigurationError, match="does not implement"):
        AvatarBot(chat=FakeChatModel(), voice=object(), renderer=None)


class BrokenRenderer(FakeRenderer):
    async def render(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("GPU on fire")


async def test_late_stage_failure_keeps_earlier_results(tmp_path: Path) -> None:
    bot = fake_bot(renderer=BrokenRenderer())
    with pytest.raises(StageError) as info:
        await bot.respond("hello")
    err = info.value
    assert err.stage == "render" and "GPU on fire" in str(err)
    partial = err.partial
    assert partial.voice is not None and partial.timeline is not None and partial.video is None
    assert partial.text == "Hello! Pleased to meet you, my friend."
    written = partial.save(tmp_path)
    assert {"audio", "timeline", "response", "image"} <= set(written)


async def test_voice_failure_names_the_stage_and_keeps_the_reply() -> None:
    class MuteVoice(FakeVoice):
        async def synthesize(self, text: str) -> Any:
            raise ConnectionError("speaker unplugged")

    bot = fake_bot(voice=MuteVoice())
    with pytest.raises(StageError) as info:
        await bot.respond("hello")
    assert info.value.stage == "voice"
    assert info.value.partial.dialogue.text.startswith("Hello!")


async def test_emotion_tags_are_stripped_before_speech() -> None:
    voice = FakeVoice()
    bot = fake_bot(
        chat=FakeChatModel("[happy] Great to see you again!"), voice=voice, renderer=None
    )
    reply = await bot.respond("hi")
    assert reply.text == "Great to see you again!"
    assert reply.dialogue is not None and reply.dialogue.emotion_tags == ["happy"]
    assert voice.calls == ["Great to see you again!"]


def test_sync_facade_and_avatar_generated_once() -> None:
    image = FakeImageGenerator()
    bot = fake_bot(image=image, avatar=AvatarPrompt("a robot", seed=3))
    first = bot.respond_sync("hello")
    second = bot.respond_sync("hello again")
    assert first.image == second.image
    assert len(image.calls) == 1 and image.calls[0].prompt == "a robot"


async def test_sessions_keep_separate_histories() -> None:
    chat = FakeChatModel(["one", "two", "three"])
    bot = fake_bot(chat=chat, voice=None, renderer=None)
    await bot.respond("hi from A", session_id="a")
    await bot.respond("hi from B", session_id="b")
    await bot.respond("again from A", session_id="a")
    last_messages = chat.calls[-1]
    contents = [m.content for m in last_messages]
    assert "hi from A" in contents and "hi from B" not in contents


async def test_intent_handlers_and_store_are_bot_options(tmp_path: Path) -> None:
    from avatarkit.dialogue.store import SQLiteStore
    from avatarkit.types import DialogueState, UserInput

    def opening_hours(user: UserInput, state: DialogueState) -> str:
        return "We are open nine to five."

    db = tmp_path / "chat.db"
    chat = FakeChatModel("Chat model reply.")
    bot = fake_bot(
        chat=chat,
        intent=FakeIntentClassifier({"open": "opening_hours"}),
        handlers={"opening_hours": opening_hours},
        store=SQLiteStore(db),
        voice=None,
        renderer=None,
    )
    reply = await bot.respond("when are you open", session_id="s")
    assert reply.text == "We are open nine to five." and chat.calls == []
    assert (await bot.respond("tell me a joke", session_id="s")).text == "Chat model reply."
    again = fake_bot(chat=FakeChatModel("x"), store=SQLiteStore(db), voice=None, renderer=None)
    assert again.dialogue is not None
    state = await again.dialogue.load("s")
    assert [t.user for t in state.turns] == ["when are you open", "tell me a joke"]


@pytest.mark.parametrize("speak", ["respond", "say"])
async def test_a_failed_turn_stops_the_avatar_picture_it_started(speak: str) -> None:
    import asyncio

    class BrokenVoice(FakeVoice):
        async def synthesize(self, text: str) -> Any:
            raise RuntimeError("voice down")

    bot = fake_bot(voice=BrokenVoice(), image=FakeImageGenerator(delay=5.0))
    with pytest.raises(StageError):
        await getattr(bot, speak)("Hello there")
    await asyncio.sleep(0)  # let a cancellation land
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.done() for t in others)  # the 5 s picture is not left running in the background


async def test_a_reply_names_the_chat_model_or_handler_that_wrote_it() -> None:
    def hours(user: Any, state: Any) -> str:
        return "We are open nine to five."

    bot = fake_bot(
        intent=FakeIntentClassifier({"open": "opening_hours"}),
        handlers={"opening_hours": hours},
        voice=None,
        renderer=None,
    )
    chatted = await bot.respond("tell me a joke")
    handled = await bot.respond("when are you open")
    assert chatted.dialogue is not None and handled.dialogue is not None
    assert chatted.dialogue.handled_by == "FakeChatModel"  # not the limits wrapper's class
    assert handled.dialogue.handled_by == "handler:opening_hours"


def test_a_handler_for_an_intent_the_classifier_cannot_give_is_refused() -> None:
    # the shipped intents have no "opening_hours": such a handler would silently never run
    with pytest.raises(ConfigurationError, match=r"opening_hours.*never run.*support_question"):
        AvatarBot(
            intent="local",
            chat="local",
            voice=None,
            renderer=None,
            handlers={"opening_hours": lambda user, state: "We are open nine to five."},
        )
    bot = AvatarBot(  # an intent it knows (and out_of_scope) is fine
        intent="local",
        chat="local",
        voice=None,
        renderer=None,
        handlers={
            "support_question": lambda u, s: "Ask at the desk.",
            "out_of_scope": lambda u, s: None,
        },
    )
    assert bot.respond_sync("I have a question about my account").text == "Ask at the desk."


def test_a_sync_call_inside_a_loop_busy_with_the_same_bot_fails_fast_instead_of_hanging() -> None:
    import asyncio

    bot = fake_bot(chat=FakeChatModel("Sure.", delay=0.5), renderer=None)
    bot.respond_sync("warm up")

    async def main() -> None:
        task = asyncio.create_task(bot.respond("hi", session_id="a"))
        await asyncio.sleep(0.2)  # the task holds session a's lock on this loop
        t0 = time.perf_counter()
        with pytest.raises(ConfigurationError, match="another event loop"):
            bot.respond_sync("hello", session_id="a")  # used to block this loop forever
        assert time.perf_counter() - t0 < 0.2
        assert (await task).text == "Sure."

    asyncio.run(main())
    assert bot.respond_sync("and now?", session_id="a").text == "Sure."  # free again


def test_one_bot_serves_one_event_loop_after_another() -> None:
    import asyncio

    # concurrent turns on a fresh bot contend for the avatar picture's lock in each loop
    bot = fake_bot(image=FakeImageGenerator(delay=0.05))

    async def two() -> list[str]:
        replies = await asyncio.gather(bot.respond("a", session_id="1"), bot.say("b"))
        return [r.text for r in replies]

    for _ in range(2):
        bot._avatar_image, bot._prepared = None, False  # paint it again, contended again
        assert asyncio.run(two()) == ["Hello! Pleased to meet you, my friend.", "b"]


@pytest.mark.parametrize("text", ["😀🎉👍", "[happy]", "*smiles*", "## 🙂"])
async def test_say_refuses_text_with_nothing_to_speak_before_any_work(text: str) -> None:
    image = FakeImageGenerator()
    bot = fake_bot(image=image)
    with pytest.raises(InputValidationError, match="nothing to speak"):
        await bot.say(text)
    assert image.calls == []  # the picture was not even started


def test_spoken_text_is_what_say_speaks_and_refuses_what_say_refuses() -> None:
    bot = fake_bot()
    assert bot.spoken_text("[happy] **Welcome** to [the docs](https://x.io) 🎉") == (
        "Welcome to the docs"
    )
    assert bot.say_sync("[happy] **Welcome** 🎉", render=False).text == bot.spoken_text(
        "[happy] **Welcome** 🎉"
    )
    for text, reason in [("😀🎉", "nothing to speak"), ("  ", "empty"), ("x" * 5000, "limit")]:
        with pytest.raises(InputValidationError, match=reason):
            bot.spoken_text(text)


async def test_a_reply_with_nothing_to_speak_leaves_no_task_behind() -> None:
    import asyncio

    bot = fake_bot(chat=FakeChatModel("👍"), image=FakeImageGenerator(delay=0.2))
    reply = await bot.respond("thanks")
    assert reply.voice is None and reply.video is None and reply.text == ""
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.cancelled() or t.done() for t in pending)


def test_prerender_takes_one_text_as_one_text(tmp_path: Path) -> None:
    bot = fake_bot(chat=None, cache=tmp_path / "cache", renderer=None)
    replies = bot.prerender_sync("Hello")
    assert [r.text for r in replies] == ["Hello"]


@pytest.mark.parametrize("session_id", [None, "", "   ", "x" * 200, "a\x00b"])
async def test_a_bad_session_id_is_refused_before_any_backend_is_called(session_id: Any) -> None:
    intent = FakeIntentClassifier()
    bot = fake_bot(intent=intent)
    with pytest.raises(InputValidationError, match="session id"):
        await bot.respond("hello", session_id=session_id)
    with pytest.raises(InputValidationError, match="session id"):
        bot.stream("hello", session_id=session_id)
    assert intent.calls == []


async def test_an_output_format_the_renderer_cannot_write_is_refused_before_the_voice() -> None:
    voice = FakeVoice()
    bot = fake_bot(voice=voice)
    with pytest.raises(InputValidationError, match=r"\.avi.*gif"):
        await bot.say("Hello there", output="clip.avi")
    assert voice.calls == []


def test_bad_bot_options_are_refused_at_construction() -> None:
    with pytest.raises(InputValidationError, match="avatar"):
        fake_bot(avatar=123)
    with pytest.raises(InputValidationError, match="limits"):
        fake_bot(limits={"voice": "2"})
    with pytest.raises(InputValidationError, match="settings"):
        fake_bot(settings=42)
    assert fake_bot(settings={"render": False}).settings.render is False  # a mapping will do


class PhotoOnlyRenderer(FakeRenderer):
    """Animates photos only, and checks them first, like D-ID."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[Any] = []

    @property
    def capabilities(self) -> Any:
        from avatarkit.ports import RendererCapabilities

        return RendererCapabilities(image_kinds=("photo",), formats=("gif",), offline=True)

    def check_image(self, image: Any) -> None:
        self.checked.append(image)
        if not image.data.startswith(b"\x89PNG"):
            raise InputValidationError("this renderer takes PNG images", field="image")


def _avatar(kind: str = "photo", data: bytes | None = None) -> Any:
    from _cloud_helpers import png_bytes
    from avatarkit.types import AvatarImage

    return AvatarImage(data=data or png_bytes(), width=64, height=80, kind=kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("limits", [None, {"renderer": 1}])
async def test_an_avatar_the_renderer_cannot_animate_is_refused_before_any_paid_stage(
    limits: dict[str, int] | None,
) -> None:
    chat, voice, renderer = FakeChatModel("Hi there, friend."), FakeVoice(), PhotoOnlyRenderer()
    bot = fake_bot(chat=chat, voice=voice, renderer=renderer, avatar=_avatar("procedural"),
                   limits=limits)  # fmt: skip
    with pytest.raises(ConfigurationError, match="PhotoOnlyRenderer cannot animate 'procedural'"):
        await bot.respond("hello")
    with pytest.raises(ConfigurationError, match="PhotoOnlyRenderer"):
        await bot.say("Hello there.")
    with pytest.raises(ConfigurationError, match="PhotoOnlyRenderer"):
        bot.stream("hello")
    assert chat.calls == [] and voice.calls == [] and renderer.calls == []
    reply = await bot.respond("hello", render=False)  # no video wanted: nothing to refuse
    assert reply.voice is not None and reply.video is None


async def test_the_renderers_own_image_check_runs_before_any_paid_stage() -> None:
    chat, voice, renderer = FakeChatModel("Hi there, friend."), FakeVoice(), PhotoOnlyRenderer()
    gif = _avatar(data=b"GIF89a" + b"\x00" * 64)
    bot = fake_bot(chat=chat, voice=voice, renderer=renderer, avatar=gif)
    with pytest.raises(ConfigurationError, match=r"PhotoOnlyRenderer.*PNG") as info:
        await bot.respond("hello")
    assert isinstance(info.value.__cause__, InputValidationError)
    with pytest.raises(ConfigurationError, match="PNG"):
        bot.stream("hello")
    assert chat.calls == [] and voice.calls == []

    good = fake_bot(renderer=renderer, avatar=_avatar())
    renderer.checked.clear()
    await good.say("Hello there.")
    await good.say("Hello again.")
    assert len(renderer.checked) == 1  # checked once, not every turn
    assert len(renderer.calls) == 2


async def test_a_generator_of_faces_the_renderer_cannot_animate_is_refused_before_any_stage() -> (
    None
):
    from avatarkit.ports import ImageCapabilities

    class ProceduralFaces(FakeImageGenerator):
        @property
        def capabilities(self) -> ImageCapabilities:
            return ImageCapabilities(kinds=("procedural",), seed=True, offline=True)

    chat, image = FakeChatModel("Hi there, friend."), ProceduralFaces(kind="procedural")
    bot = fake_bot(chat=chat, image=image, renderer=PhotoOnlyRenderer())
    with pytest.raises(ConfigurationError, match=r"PhotoOnlyRenderer.*ProceduralFaces"):
        await bot.respond("hello")
    assert chat.calls == [] and image.calls == []


async def test_d_id_refuses_a_gif_avatar_before_chat_and_voice_are_paid_for() -> None:
    import io

    import httpx
    from PIL import Image

    from avatarkit.providers.did import DIDRenderer
    from avatarkit.types import AvatarImage

    sent: list[httpx.Request] = []
    did = DIDRenderer(
        api_key="u:p",
        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(500)),
    )
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="GIF")
    chat, voice = FakeChatModel("Hi there, friend."), FakeVoice()
    for avatar in (_avatar("procedural"), AvatarImage(data=buf.getvalue(), width=64, height=64)):
        bot = fake_bot(chat=chat, voice=voice, renderer=did, avatar=avatar)
        with pytest.raises(ConfigurationError, match="DIDRenderer"):
            await bot.respond("hello")
    assert chat.calls == [] and voice.calls == [] and sent == []


class Closes:
    """Counts its aclose() and close() calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aclosed = 0
        self.closed = 0

    async def aclose(self) -> None:
        self.aclosed += 1

    def close(self) -> None:
        self.closed += 1


class ClosingChat(Closes, FakeChatModel):
    pass


class ClosingVoice(Closes, FakeVoice):
    pass


class Understands(Closes, FakeIntentClassifier, FakeSentimentAnalyzer):
    """One object as the intent classifier and the sentiment analyzer."""


class SyncClosingRenderer(FakeRenderer):
    def __init__(self) -> None:
        super().__init__()
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


async def test_aclose_closes_every_backend_once_through_its_wrappers(tmp_path: Path) -> None:
    from avatarkit.cache import ReplyCache

    class CountingCache(ReplyCache):
        closed = 0

        def close(self) -> None:
            type(self).closed += 1
            super().close()

    chat, voice, both = ClosingChat("Hi there."), ClosingVoice(), Understands()
    renderer = SyncClosingRenderer()
    cache = CountingCache(tmp_path / "cache")
    bot = fake_bot(chat=chat, voice=voice, intent=both, sentiment=both, renderer=renderer,
                   cache=cache, limits={"voice": 1, "renderer": 1, "intent": 1})  # fmt: skip
    await bot.respond("hello")
    await bot.aclose()
    assert (chat.aclosed, chat.closed) == (1, 0)  # aclose preferred over close
    assert (voice.aclosed, both.aclosed, renderer.closed) == (1, 1, 1)
    assert CountingCache.closed == 1
    async with fake_bot(voice=voice, renderer=None) as same:  # async with closes on the way out
        assert isinstance(same, AvatarBot)
        await same.say("Hello there.")
    assert voice.aclosed == 2


async def test_aclose_closes_the_others_when_one_fails_and_then_raises() -> None:
    class Stuck(ClosingVoice):
        async def aclose(self) -> None:
            raise OSError("socket stuck")

    chat = ClosingChat("Hi there.")
    bot = fake_bot(chat=chat, voice=Stuck(), renderer=None)
    with pytest.raises(OSError, match="stuck"):
        await bot.aclose()
    assert chat.aclosed == 1


def test_close_sync_closes_the_backends_the_sync_calls_used() -> None:
    voice = ClosingVoice()
    bot = fake_bot(voice=voice, renderer=None)
    bot.say_sync("Hello there.")
    bot.close_sync()
    assert voice.aclosed == 1


class _KeepAliveTTS:
    """ElevenLabs' with-timestamps endpoint on 127.0.0.1, keeping connections open (HTTP/1.1)."""

    def __enter__(self) -> str:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from _cloud_helpers import alignment_for, b64, mp3_bytes

        body = json.dumps(
            {"audio_base64": b64(mp3_bytes(0.5)), "alignment": alignment_for("Hello there.", 0.5)}
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("how", ["aclose", "async with"])
def test_a_closed_bot_leaves_no_socket_open(how: str) -> None:
    import asyncio
    import gc
    import warnings

    from avatarkit.providers.elevenlabs import ElevenLabsVoice

    def one_turn(url: str, close: str | None) -> list[str]:
        # a loop closed without shutdown_asyncgens() (asyncio.run's step that closes what is
        # left open): only closing the bot closes the connection before the garbage collector
        async def turn() -> None:
            voice = ElevenLabsVoice(api_key="el-key-123456", base_url=url)
            bot = AvatarBot(chat=FakeChatModel("Hello there."), voice=voice, renderer=None,
                            preprocessor=None, intent=None, sentiment=None)  # fmt: skip
            if close == "async with":
                async with bot:
                    await bot.respond("hi")
                return
            await bot.respond("hi")
            if close == "aclose":
                await bot.aclose()

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(turn())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
            gc.collect()
        return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]

    with _KeepAliveTTS() as url:
        assert one_turn(url, None), "an unclosed bot should leave its connection open"
        assert one_turn(url, how) == []


def test_a_bot_never_closed_leaves_no_socket_open_once_asyncio_run_returns() -> None:
    import asyncio
    import gc
    import warnings

    from avatarkit.providers.elevenlabs import ElevenLabsVoice

    async def turn(url: str) -> None:
        voice = ElevenLabsVoice(api_key="el-key-123456", base_url=url)
        bot = AvatarBot(chat=FakeChatModel("Hello there."), voice=voice, renderer=None,
                        preprocessor=None, intent=None, sentiment=None)  # fmt: skip
        await bot.respond("hi")  # and no aclose(): the loop's end closes the connection

    with _KeepAliveTTS() as url:
        gc.collect()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            asyncio.run(turn(url))
            asyncio.run(turn(url))
            gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


async def test_aclose_closes_a_real_adapters_client_with_warnings_as_errors() -> None:
    import warnings

    import httpx

    from _cloud_helpers import alignment_for, b64, mp3_bytes
    from avatarkit.providers.elevenlabs import ElevenLabsVoice

    class Transport(httpx.MockTransport):
        closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    answer = {"audio_base64": b64(mp3_bytes(0.5)), "alignment": alignment_for("Hello.", 0.5)}
    transport = Transport(lambda r: httpx.Response(200, json=answer))
    voice = ElevenLabsVoice(api_key="el-key-123456", transport=transport)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with fake_bot(voice=voice, renderer=None) as bot:
            await bot.say("Hello.")
            assert len(voice._http._clients) == 1 and not transport.closed
        assert transport.closed == 1 and not voice._http._clients


async def test_an_output_named_like_a_frames_folder_is_the_renderers_png_sequence(
    tmp_path: Path,
) -> None:
    from avatarkit.render.local import LocalRenderer
    from avatarkit.render.procedural import generate_procedural

    bot = fake_bot(
        chat=None, renderer=LocalRenderer(size=64, fps=10), avatar=generate_procedural(3, size=64)
    )
    reply = await bot.say("Hi there", output=tmp_path / "clip.frames")  # as the renderer reads it
    assert reply.video is not None and reply.video.format == "png"


class _Returns:
    """A backend's method that returns ``value`` instead of what its port promises."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value


@pytest.mark.parametrize(
    ("role", "method", "stage", "value", "promised"),
    [
        ("preprocessor", "preprocess", "preprocess", {"tokens": []}, "ProcessedText"),
        ("intent", "classify", "intent", "greeting", "IntentPrediction"),
        ("sentiment", "analyze", "sentiment", None, "Sentiment"),
        ("chat", "complete", "dialogue", None, "str"),
        ("chat", "complete", "dialogue", b"Hello.", "str"),
        ("voice", "synthesize", "voice", None, "VoiceOutput"),
        ("voice", "synthesize", "voice", b"RIFF....WAVE", "VoiceOutput"),
        ("expression", "plan", "expression", "happy", "list"),
        ("expression", "plan", "expression", ["happy"], "FacialExpression"),
        ("image", "generate", "image", None, "AvatarImage"),
        ("renderer", "render", "render", None, "AvatarVideo"),
        ("renderer", "render", "render", "out.gif", "AvatarVideo"),
    ],
)
async def test_a_backend_that_returns_the_wrong_type_fails_its_stage_with_a_clear_error(
    role: str, method: str, stage: str, value: Any, promised: str
) -> None:
    fakes: dict[str, Any] = {
        "preprocessor": FakePreprocessor(),
        "intent": FakeIntentClassifier(),
        "sentiment": FakeSentimentAnalyzer(),
        "chat": FakeChatModel("Hello there."),
        "voice": FakeVoice(),
        "image": FakeImageGenerator(),
        "renderer": FakeRenderer(),
        "expression": FakeExpressionPolicy(),
    }
    setattr(fakes[role], method, _Returns(value))
    bot = fake_bot(**fakes)
    with pytest.raises(StageError) as info:
        await bot.respond("hello there")
    err = info.value
    assert err.stage == stage
    assert isinstance(err.__cause__, ConfigurationError)
    text = str(err)
    assert f"{type(fakes[role]).__name__}.{method}()" in text and promised in text


async def test_a_dialogue_managers_own_chat_model_that_returns_no_text_is_a_clear_error() -> None:
    from avatarkit.dialogue.manager import DialogueManager

    chat = FakeChatModel("Hello.")
    chat.complete = _Returns(None)  # type: ignore[method-assign]
    bot = fake_bot(dialogue=DialogueManager(chat))  # not wrapped by the bot
    with pytest.raises(StageError) as info:
        await bot.respond("hello there", session_id="s")
    assert info.value.stage == "dialogue"
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert "FakeChatModel.complete() returned NoneType, not str" in str(info.value)
    assert (await bot.dialogue.load("s")).turns == []  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["This is Unacceptable!", "I'm Furious!", "I'm Leaving"])
def test_a_capitalised_complaint_is_not_taken_for_the_users_name(text: str) -> None:
    bot = AvatarBot(chat="local", voice=None, renderer=None, image=None)
    answer = bot.respond_sync(text).text
    assert "meet you" not in answer and text.split()[-1].strip("!.") not in answer
