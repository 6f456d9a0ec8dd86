"""AvatarBot: one turn from user text to a talking-avatar Response.

preprocess → (intent ∥ sentiment) → dialogue → (voice ∥ expression) → lip sync + pose → render,
with the avatar picture generated beside all of it. Async core; every public coroutine has a
``*_sync`` twin that also works inside a running event loop (Jupyter).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import unicodedata
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from avatarkit import _sync
from avatarkit._aio import close_all, concurrently
from avatarkit.cache import (
    CachedVoice,
    ReplyCache,
    backend_fingerprint,
    default_cache_dir,
    normalize_text,
)
from avatarkit.config import Settings, get_logger
from avatarkit.dialogue.handler import Handler
from avatarkit.dialogue.manager import DialogueManager, Persona
from avatarkit.dialogue.store import DialogueStore, check_session_id
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    InputValidationError,
    OverloadedError,
    StageError,
)
from avatarkit.fallback import Fallback, fallback, watch_stand_ins
from avatarkit.limits import CallStats, ConcurrencyLimit, limited
from avatarkit.metrics import fill_metrics, span, turn_counter
from avatarkit.ports import (
    ChatModel,
    ExpressionPolicy,
    ImageGenerator,
    IntentClassifier,
    ProgressCallback,
    Renderer,
    Role,
    SentimentAnalyzer,
    SpeechSynthesizer,
    TextPreprocessor,
    unwrap,
)
from avatarkit.registry import Registry, default_registry
from avatarkit.types import (
    OUT_OF_SCOPE,
    AvatarImage,
    AvatarPrompt,
    DialogueResponse,
    FacialExpression,
    Response,
    Timeline,
    UserInput,
    VoiceOutput,
    video_format_of,
)

if TYPE_CHECKING:
    from avatarkit.streaming import ReplyStream

__all__ = ["AvatarBot"]

T = TypeVar("T")
_log = get_logger("avatarkit.bot")

_PORTS: dict[Role, type] = {
    "preprocessor": TextPreprocessor,
    "intent": IntentClassifier,
    "sentiment": SentimentAnalyzer,
    "chat": ChatModel,
    "voice": SpeechSynthesizer,
    "image": ImageGenerator,
    "renderer": Renderer,
    "expression": ExpressionPolicy,
}

Backend = Any
"""A spec string (``"espeak:en-us"``), a backend object, a list of those (a fallback chain:
the first that answers, see :mod:`avatarkit.fallback`), or ``None`` to skip the stage."""


class AvatarBot:
    """A talking avatar: give it text, get back speech, a timeline and a video.

    Each role takes a spec string resolved through the provider registry, a backend object,
    a list of those tried in order when one fails (``voice=["elevenlabs:<id>", "espeak"]``,
    see :mod:`avatarkit.fallback`), or ``None`` to leave that stage out. The defaults run
    offline with no keys.

    Args:
        chat: Chat model for replies (``"local"``, ``"openai:gpt-4o-mini"``...).
        voice: Speech synthesiser (``"espeak:en-us+f3"``, ``"elevenlabs:<voice_id>"``...).
        renderer: Video renderer (``"local"``, ``"d-id"``); ``None`` for audio + timeline only.
        image: Avatar-picture generator, used when ``avatar`` is not a ready image.
        avatar: The avatar: an AvatarImage, a path to a portrait (loaded with
            :meth:`AvatarImage.load`; a saved procedural face stays procedural unless the
            renderer animates photos only), an AvatarPrompt, or None (the image generator's
            default).
        preprocessor: Text preprocessing (the understanding stage's first step).
        intent: Intent classifier.
        sentiment: Sentiment analyzer.
        expression: Expression policy (the face's emotions for a reply).
        persona: Who the avatar is (name, backstory, style).
        handlers: Your functions for particular intents, like Rasa actions: intent name →
            ``handler(user, state) -> str | None`` (``None`` lets the chat model answer);
            ``avatarkit.dialogue.handler.SlotForm`` collects slots across turns.
        store: Where conversations live between turns, e.g. ``SQLiteStore("chat.db")`` so a
            restarted bot continues them (default: in memory).
        dialogue: A ready DialogueManager (overrides ``chat``, ``persona``, ``handlers`` and
            ``store``).
        settings: Limits (input length...) and render options.
        limits: Most concurrent calls per role across every session of this bot, e.g.
            ``{"voice": 4, "renderer": 2}``; later calls wait their turn in arrival order.
        max_waiting: Calls allowed to queue per limited role before ``OverloadedError``.
        cache: Serve repeated speech and clips from a disk cache: a ReplyCache, a folder, or
            True for the default folder (``$AVATARKIT_CACHE_DIR`` or ``~/.cache/avatarkit``).
            Hits cost no provider call and take no concurrency slot.
        seed: Seed for reproducible idle motion and blinks.
        registry: Where specs are looked up (the default registry unless testing).

    Raises:
        ConfigurationError: an unknown spec, a missing key or extra, a backend object that
            does not fill its role, or a cache folder it cannot make. Raised here, before any
            backend is called.
    """

    def __init__(
        self,
        *,
        chat: Backend = "local",
        voice: Backend = "local",
        renderer: Backend = "local",
        image: Backend = "local",
        avatar: AvatarImage | AvatarPrompt | str | Path | None = None,
        preprocessor: Backend = "local",
        intent: Backend = "local",
        sentiment: Backend = "local",
        expression: Backend = "local",
        persona: Persona | None = None,
        handlers: Mapping[str, Handler] | None = None,
        store: DialogueStore | None = None,
        dialogue: DialogueManager | None = None,
        settings: Settings | Mapping[str, Any] | None = None,
        limits: Mapping[str, int] | None = None,
        max_waiting: int | None = None,
        cache: ReplyCache | str | Path | bool | None = None,
        seed: int = 0,
        registry: Registry | None = None,
    ) -> None:
        self.settings = _settings(settings)
        self.calls = CallStats()
        if not isinstance(avatar, (AvatarImage, AvatarPrompt, str, Path, type(None))):
            raise InputValidationError(
                "avatar must be an AvatarImage, an AvatarPrompt, a picture's path or None, "
                f"not {type(avatar).__name__}",
                field="avatar",
            )
        unknown = sorted(set(limits or {}) - set(_PORTS))
        if unknown:
            raise ConfigurationError(
                f"limits: unknown role(s) {', '.join(unknown)}; use {', '.join(_PORTS)}"
            )
        self._limits = {  # before the cache, which may make its folder
            role: ConcurrencyLimit(n, max_waiting=max_waiting, name=role)
            for role, n in (limits or {}).items()
        }
        self.cache: ReplyCache | None = _make_cache(cache)
        self.seed = seed
        self._registry = registry or default_registry
        self.preprocessor: TextPreprocessor | None = self._resolve("preprocessor", preprocessor)
        self.intent: IntentClassifier | None = self._resolve("intent", intent)
        self.sentiment: SentimentAnalyzer | None = self._resolve("sentiment", sentiment)
        self.voice: SpeechSynthesizer | None = self._resolve("voice", voice)
        self.renderer: Renderer | None = self._resolve("renderer", renderer)
        self.expression: ExpressionPolicy | None = self._resolve("expression", expression)
        self._expression_fingerprint = (
            backend_fingerprint(self.expression) if self.expression is not None else ""
        )
        if dialogue is None:
            chat_model: ChatModel | None = self._resolve("chat", chat)
            if chat_model is not None:
                dialogue = DialogueManager(
                    chat=chat_model, persona=persona or Persona(), handlers=handlers, store=store
                )
        self.dialogue: DialogueManager | None = dialogue
        self._check_handlers()
        self.persona = dialogue.persona if dialogue else (persona or Persona())
        self._avatar_image: AvatarImage | None = None
        self._avatar_prompt: AvatarPrompt | None = None
        self.image: ImageGenerator | None = None
        if isinstance(avatar, AvatarImage):
            self._avatar_image = avatar
        elif isinstance(avatar, (str, Path)):
            # a saved procedural face is redrawn where the renderer can; a renderer of photos
            # only (D-ID) gets it as the picture it is
            kinds = self.renderer.capabilities.image_kinds if self.renderer else ("procedural",)
            self._avatar_image = AvatarImage.load(
                avatar, kind=None if "procedural" in kinds else "photo"
            )
        else:
            self._avatar_prompt = avatar or AvatarPrompt(self.persona.avatar_prompt, seed=seed)
            if self.renderer is not None:
                self.image = self._resolve("image", image)
        # asyncio locks belong to one event loop: one per loop that runs this bot's turns
        self._image_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._busy = threading.Lock()
        self._busy_loop: asyncio.AbstractEventLoop | None = None
        self._busy_turns = 0
        self._prepared = False
        self._checked_image: AvatarImage | None = None  # passed the renderer's check_image

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """Count a turn on the running loop; refuse one from another loop while one runs.

        The bot's locks, queues and in-flight tables belong to the event loop its turns run
        on. A turn started from a second loop while the first is busy would wait on the first
        (forever, when the first is blocked in a ``*_sync`` call); it fails at once instead.
        """
        loop = asyncio.get_running_loop()
        with self._busy:
            if self._busy_turns and self._busy_loop is not loop:
                raise ConfigurationError(
                    "this AvatarBot is running a turn on another event loop; a bot serves one "
                    "loop at a time. Await the async method on the loop that runs it (a "
                    "*_sync call blocks that loop), use only *_sync methods from threads "
                    "(they share one loop), or make one bot per loop"
                )
            self._busy_loop = loop
            self._busy_turns += 1
        try:
            yield
        finally:
            with self._busy:
                self._busy_turns -= 1
                if not self._busy_turns:
                    self._busy_loop = None

    def _check_handlers(self) -> None:
        """Refuse a handler keyed to an intent the classifier never gives: it would never run."""
        known = getattr(unwrap(self.intent), "names", None)
        if self.dialogue is None or not isinstance(known, list):
            return  # a classifier that does not list its intents is trusted
        unknown = sorted(set(self.dialogue.handlers) - {*known, OUT_OF_SCOPE})
        if unknown:
            raise ConfigurationError(
                f"handlers for {', '.join(repr(n) for n in unknown)} would never run: the "
                f"intent classifier gives {', '.join(known)} (and {OUT_OF_SCOPE}). Add the "
                "intent to the classifier's intents (docs/dialogue.md, Handlers) or key the "
                "handler to one of these"
            )

    def _resolve(self, role: Role, value: Backend) -> Any:
        if value is None:
            return None
        if isinstance(value, (list, tuple)):  # a fallback chain: the first that answers
            if not value:
                raise ConfigurationError(f"{role}=[]: give at least one backend, or None")
            value = fallback(role, *value, registry=self._registry) if len(value) > 1 else value[0]
        if isinstance(value, str):
            value = self._registry.create(role, value)
        port = _PORTS[role]
        if not isinstance(value, port):
            raise ConfigurationError(
                f"{role}={type(value).__name__} does not implement avatarkit.ports.{port.__name__}"
            )
        wrapped = limited(value, self._limits.get(role), role=role, stats=self.calls)
        # The cache sits outside the limit: a hit neither waits for a slot nor counts a call.
        if self.cache is not None and role == "voice":
            return self.cache.voice(wrapped)
        if self.cache is not None and role == "renderer":
            return self.cache.renderer(wrapped)
        return wrapped

    def __repr__(self) -> str:
        parts = [
            f"{role}={type(unwrap(getattr(self, role))).__name__}"
            for role in ("voice", "renderer", "image")
            if getattr(self, role, None) is not None
        ]
        if self.dialogue is not None:
            parts.insert(0, f"chat={self.dialogue.chat_name}")
        return f"AvatarBot({', '.join(parts)})"

    # ------------------------------------------------------------------ public API

    async def respond(
        self,
        text: str | UserInput,
        *,
        session_id: str = "default",
        render: bool | None = None,
        output: str | Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> Response:
        """Run one turn for ``text`` and return everything it produced.

        Args:
            text: What the user said (or a ready UserInput).
            session_id: Conversation to continue.
            render: Render the video (default: ``settings.render`` and a renderer is set).
            output: Where to write the video file. When None, a new temporary file that the
                caller owns (move or delete it; nothing removes it later).
            progress: ``progress(done, total)`` during rendering.

        Raises:
            InputValidationError: empty or too-long text (before any backend is called).
            ConfigurationError: the turn is to be rendered and the renderer cannot animate the
                avatar (its kind, or the renderer's own check of the picture), also before any
                backend is called.
            StageError: a stage failed; ``.stage`` names it and ``.partial`` holds the
                Response with every earlier result.
            OverloadedError: a limited role already had ``max_waiting`` calls queued.
        """
        if self.dialogue is None:
            raise ConfigurationError(
                "respond() needs a chat model; this bot was made with chat=None"
            )
        user = self._validate(text, session_id)
        self._check_output(output, render)
        await self._check_avatar(render)
        response = Response(input=user)
        with self._serving(), _measured(response):
            image_task = self._start_image_task(render)
            with _settled(image_task):
                await self._understand(response)
                await self._stage("dialogue", response, self._reply(response))
                _mark(response, "first_token")  # the whole reply text, at once
                await self._voice_and_face(response, image_task, render, output, progress)
        return response

    def respond_sync(self, text: str | UserInput, **kwargs: Any) -> Response:
        """Blocking :meth:`respond`; safe in scripts and inside Jupyter."""
        return _sync.run(self.respond(text, **kwargs))

    async def say(
        self,
        text: str,
        *,
        render: bool | None = None,
        output: str | Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> Response:
        """Speak and animate ``text`` as given (no understanding, no dialogue).

        Emotion tags (``[happy]``, ``*smiles*``) set the face instead of being read out, and
        markdown marks, links and emoji are not spoken, as in :meth:`respond`.

        Raises:
            InputValidationError: empty or too-long text, or text with nothing left to speak
                (only tags, emoji or markup), before any backend is called.
            ConfigurationError: an avatar the renderer cannot animate, as in :meth:`respond`.
        """
        user = self._validate(text, "default")
        self._check_output(output, render)
        reply = self._said(user.text)
        await self._check_avatar(render)
        response = Response(input=user, dialogue=reply)
        with self._serving(), _measured(response):
            image_task = self._start_image_task(render)
            with _settled(image_task):
                await self._voice_and_face(response, image_task, render, output, progress)
        return response

    def stream(
        self,
        text: str | UserInput,
        *,
        session_id: str = "default",
        render: bool | None = None,
        output_dir: str | Path | None = None,
        join_video: bool = True,
    ) -> ReplyStream:
        """Run one turn as a stream of events (text, sentences, audio, video, final).

        Sentences are voiced while the chat model is still writing; events arrive in spoken
        order. Use ``async for event in bot.stream(...)``; ``await stream.interrupt()`` stops it.
        ``join_video=False`` leaves the final Response without a joined clip (a player that
        shows each VideoSegment as it comes saves the ffmpeg pass).

        Raises:
            InputValidationError: empty or too-long text, at once, before any backend call.
            ConfigurationError: the bot has no chat model or no voice, or an avatar its renderer
                cannot animate (also at once).
        """
        from avatarkit.streaming import ReplyStream

        if self.dialogue is None or self.voice is None:
            missing = "chat model" if self.dialogue is None else "voice"
            raise ConfigurationError(f"stream() needs a {missing}; this bot was made without one")
        user = self._validate(text, session_id)
        check = self._avatar_checks(render)
        if check is not None:  # here, on the loop: once per avatar, one picture's decoding
            check()
        folder = Path(output_dir) if output_dir else None
        return ReplyStream(
            self, user, render=self._will_render(render), output_dir=folder, join_video=join_video
        )

    def spoken_text(self, text: str) -> str:
        """What :meth:`say` would speak for ``text``, as the voice gets it; calls no backend.

        Emotion tags, markdown marks, links and emoji are taken out.

        Raises:
            InputValidationError: ``text`` that :meth:`say` refuses: empty, longer than
                ``Settings.max_input_chars``, or with nothing left to speak.
        """
        return self._said(self._validate(text, "default").text).text

    def _said(self, text: str) -> DialogueResponse:
        """``say``'s reply for validated ``text``, made speakable; refused if nothing is left."""
        reply = DialogueResponse(text=text, handled_by="say")
        self._make_speakable(reply)
        if self.voice is not None and not reply.text.strip():
            raise InputValidationError(
                "nothing to speak: the text has only emotion tags, emoji or markup",
                field="text",
            )
        return reply

    def say_sync(self, text: str, **kwargs: Any) -> Response:
        """Blocking :meth:`say`."""
        return _sync.run(self.say(text, **kwargs))

    async def prerender(
        self, texts: Iterable[str] | str, *, render: bool | None = None, concurrency: int = 2
    ) -> list[Response]:
        """Voice and render common replies ahead of time, so later turns are served from cache.

        Each text goes through the same stages as :meth:`say` (speech, lip sync, video), so a
        later ``say(text)`` of it costs no provider call. Replies chosen by :meth:`respond`
        reuse the speech whenever the text matches, and the clip whenever the face plan
        (expressions from the user's sentiment) matches too.

        Args:
            texts: The replies, e.g. a greeting and FAQ answers (duplicates are done once);
                one string is one reply.
            render: Render clips too (default: as for :meth:`say`).
            concurrency: Texts in progress at once.

        Returns:
            One Response per distinct text; ``metrics.cache_hits`` tells which were cached.

        Raises:
            ConfigurationError: the bot has no cache.
            InputValidationError: an empty or too-long text (before any work starts).
        """
        if self.cache is None:
            raise ConfigurationError("prerender() needs a cache: AvatarBot(cache=True)")
        unique = [texts] if isinstance(texts, str) else list(dict.fromkeys(texts))
        for text in unique:
            self._validate(text, "default")
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(text: str) -> Response:
            async with gate:
                return await self.say(text, render=render)

        return list(await asyncio.gather(*(one(t) for t in unique)))

    def prerender_sync(self, texts: Iterable[str] | str, **kwargs: Any) -> list[Response]:
        """Blocking :meth:`prerender`."""
        return _sync.run(self.prerender(texts, **kwargs))

    async def avatar_image(self) -> AvatarImage:
        """The avatar's picture, generated once and kept (and the renderer prepared for it)."""
        loop = asyncio.get_running_loop()
        lock = self._image_locks.setdefault(loop, asyncio.Lock())
        with self._serving():
            async with lock:
                return await self._make_avatar_image()

    async def _make_avatar_image(self) -> AvatarImage:
        if self._avatar_image is None:
            if self.image is None or self._avatar_prompt is None:
                raise ConfigurationError("no avatar image and no image generator configured")
            self._avatar_image = await self.image.generate(self._avatar_prompt)
        if not self._prepared and self.renderer is not None:
            prepare = getattr(self.renderer, "prepare", None)
            if prepare is not None and self._avatar_image.kind in (
                self.renderer.capabilities.image_kinds
            ):
                await prepare(self._avatar_image)
            self._prepared = True
        return self._avatar_image

    def avatar_image_sync(self) -> AvatarImage:
        """Blocking :meth:`avatar_image`."""
        return _sync.run(self.avatar_image())

    # ------------------------------------------------------------------ resources

    async def aclose(self) -> None:
        """Close what the bot's backends hold open: HTTP clients, the reply cache, the store.

        Every backend with an ``aclose()`` (else a ``close()``) is closed once, looked for
        inside avatarkit's wrappers (limits, cache), as are the reply cache and the dialogue
        store. Await it on the event loop that ran the turns (HTTP clients belong to one loop);
        after ``*_sync`` calls use :meth:`close_sync`. HTTP backends open a new client if used
        again; a closed ``SQLiteStore`` does not, so close the bot when its turns are done.
        A failure to close one is logged, the others are still closed, then it is raised.
        """
        owned: dict[int, Any] = {}
        chat = self.dialogue.chat if self.dialogue is not None else None
        store = self.dialogue.store if self.dialogue is not None else None
        for backend in (self.preprocessor, self.intent, self.sentiment, chat, self.voice,
                        self.expression, self.image, self.renderer, self.cache, store):  # fmt: skip
            inner = unwrap(backend)
            if inner is not None:
                owned.setdefault(id(inner), inner)
        await close_all(owned.values(), _log)

    def close_sync(self) -> None:
        """Blocking :meth:`aclose`, for a bot used through the ``*_sync`` methods.

        It closes the clients on avatarkit's own loop, the one every ``*_sync`` call runs on.
        """
        _sync.run(self.aclose())

    async def __aenter__(self) -> AvatarBot:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ stages

    def _validate(self, text: str | UserInput, session_id: str) -> UserInput:
        user = text if isinstance(text, UserInput) else None
        raw = user.text if user else text
        if not isinstance(raw, str):
            raise InputValidationError(
                f"text must be a string, not {type(raw).__name__}", field="text"
            )
        cleaned = "".join(
            ch for ch in raw if ch in "\n\t" or unicodedata.category(ch)[0] != "C"
        ).strip()
        if not cleaned:
            raise InputValidationError("the input text is empty", field="text")
        limit = self.settings.max_input_chars
        if len(cleaned) > limit:
            raise InputValidationError(
                f"the input is {len(cleaned)} characters; the limit is {limit} "
                "(Settings.max_input_chars)",
                field="text",
            )
        check_session_id(user.session_id if user is not None else session_id)
        if user is not None:
            return user.model_copy(update={"text": cleaned})
        return UserInput(text=cleaned, session_id=session_id)

    def _check_output(self, output: str | Path | None, render: bool | None) -> None:
        """Refuse a video path whose format the renderer cannot write, before any work."""
        if output is None or not self._will_render(render) or self.renderer is None:
            return
        formats = self.renderer.capabilities.formats
        if video_format_of(output) not in formats:
            raise InputValidationError(
                f"cannot write {output}: {type(unwrap(self.renderer)).__name__} writes "
                f"{', '.join(formats)} (a folder name for PNG frames)",
                field="output",
            )

    async def _check_avatar(self, render: bool | None) -> None:
        """Refuse, before any backend is called, an avatar the renderer would refuse later.

        The renderer would refuse it only after the chat model and the voice were paid for.
        """
        check = self._avatar_checks(render)
        if check is not None:  # the renderer's check decodes the picture: not on the loop
            await asyncio.to_thread(check)

    def _avatar_checks(self, render: bool | None) -> Callable[[], None] | None:
        """Raise ConfigurationError for an avatar the renderer cannot animate, as far as known.

        Known before the turn: a picture given (or generated by an earlier turn) of a kind the
        renderer does not take, or an image generator that makes only such pictures. Returns
        the renderer's own check of the picture (D-ID's ``check_image``: format, size) when it
        has one that has not passed yet, for the caller to run; None when nothing is left.
        """
        if not self._will_render(render) or self.renderer is None:
            return None
        renderer = unwrap(self.renderer)
        name = type(renderer).__name__
        kinds = self.renderer.capabilities.image_kinds
        image = self._avatar_image
        if image is None:
            generator = unwrap(self.image)
            # each generator of a fallback chain must make pictures the renderer takes
            generators = generator.backends if isinstance(generator, Fallback) else (generator,)
            for gen in generators if generator is not None else ():
                made = gen.capabilities.kinds
                if not set(made) & set(kinds):
                    raise ConfigurationError(
                        f"{name} animates {' and '.join(kinds)} images only, and the image "
                        f"generator {type(unwrap(gen)).__name__} makes {' and '.join(made)} "
                        "ones: give the bot another image generator, an avatar picture, or "
                        "another renderer"
                    )
            return None
        self._refuse_unanimatable(image)
        check = getattr(renderer, "check_image", None)
        if not callable(check) or self._checked_image is image:
            return None

        def run() -> None:
            try:
                check(image)
            except InputValidationError as exc:
                raise ConfigurationError(f"{name} cannot animate the avatar: {exc}") from exc
            self._checked_image = image

        return run

    def _refuse_unanimatable(self, image: AvatarImage) -> None:
        """Raise ConfigurationError when the renderer does not take ``image``'s kind."""
        assert self.renderer is not None
        kinds = self.renderer.capabilities.image_kinds
        if image.kind not in kinds:
            raise ConfigurationError(
                f"{type(unwrap(self.renderer)).__name__} cannot animate {image.kind!r} images "
                f"(it takes {' and '.join(kinds)} images); give the bot an avatar of that "
                "kind, or another renderer"
            )

    async def _stage(self, name: str, response: Response, coro: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        try:
            with span(f"avatarkit.stage.{name}", {"avatarkit.stage": name}):
                return await coro
        except (StageError, OverloadedError):
            raise  # overload is not a stage failure: the caller should retry later (503)
        except InputValidationError as exc:
            raise StageError(name, exc, partial=response) from exc
        except (AvatarKitError, Exception) as exc:
            _log.info("stage %s failed: %s", name, exc)  # raised to the caller, who reports it
            raise StageError(name, exc, partial=response) from exc
        finally:
            response.metrics.durations[name] = time.perf_counter() - t0

    async def _understand(self, response: Response) -> None:
        user = response.input
        if self.preprocessor is not None:
            response.processed = await self._stage(
                "preprocess",
                response,
                self.preprocessor.preprocess(user.text, language=user.language),
            )

        async def intent() -> None:
            if self.intent is not None and response.processed is not None:
                response.intent = await self._stage(
                    "intent", response, self.intent.classify(response.processed)
                )

        async def sentiment() -> None:
            if self.sentiment is not None:
                response.sentiment = await self._stage(
                    "sentiment", response, self.sentiment.analyze(user.text)
                )

        await concurrently(intent(), sentiment())

    async def _reply(self, response: Response) -> None:
        assert self.dialogue is not None
        response.dialogue = await self.dialogue.respond(
            response.input,
            processed=response.processed,
            intent=response.intent,
            sentiment=response.sentiment,
        )
        self._make_speakable(response.dialogue)

    @staticmethod
    def _make_speakable(reply: DialogueResponse) -> None:
        """Emotion tags out of the text for the face; markdown, links and emoji out for the voice.

        Streamed turns clean their whole reply with it too. What was written stays in
        ``reply.raw_text``: the face reads the tags' places from it.
        """
        from avatarkit.animation.expression import strip_emotion_tags
        from avatarkit.dialogue.speakable import speakable

        clean, tags = strip_emotion_tags(reply.text)
        spoken = speakable(clean)
        if spoken != reply.text:
            reply.raw_text = reply.text
            reply.text = spoken
        if tags:
            reply.emotion_tags = [tag for _, tag in tags]

    def _start_image_task(self, render: bool | None) -> asyncio.Task[AvatarImage] | None:
        if not self._will_render(render) or (self._avatar_image is not None and self._prepared):
            return None
        return asyncio.get_running_loop().create_task(self.avatar_image())

    def _will_render(self, render: bool | None) -> bool:
        wanted = self.settings.render if render is None else render
        return wanted and self.renderer is not None and self.voice is not None

    async def _voice_and_face(
        self,
        response: Response,
        image_task: asyncio.Task[AvatarImage] | None,
        render: bool | None,
        output: str | Path | None,
        progress: ProgressCallback | None,
    ) -> None:
        reply = response.dialogue
        assert reply is not None
        if self.voice is None or not reply.text.strip():
            return
        if len(reply.text) > self.settings.max_speech_chars:
            raise StageError(
                "voice",
                InputValidationError(
                    f"the reply is {len(reply.text)} characters; "
                    f"Settings.max_speech_chars is {self.settings.max_speech_chars}"
                ),
                partial=response,
            )
        voice, cache = self.voice, self.cache
        plan_key = self._plan_key(response)
        planned = cache.get_timeline(plan_key) if cache and plan_key else None
        if cache is not None and planned is not None:
            # Expressions, lip sync and pose as planned before, if the audio is the same.
            response.voice = await self._stage("voice", response, voice.synthesize(reply.text))
            digest, timeline = planned
            same = digest == hashlib.sha256(response.voice.audio).hexdigest()
            cache.record(same)
            if same:
                response.timeline = timeline
        elif cache is not None and plan_key is not None:
            cache.record(False)
        if response.timeline is None:
            with watch_stand_ins() as stand_ins:
                await self._plan(response, skip_voice=response.voice is not None)
            # a fallback's stand-in (voice, expression) made this plan: not what the key names
            if plan_key is not None and self.cache is not None and not stand_ins:
                assert response.voice is not None and response.timeline is not None
                await asyncio.to_thread(
                    self.cache.put_timeline, plan_key, response.voice.audio, response.timeline
                )
        _mark(response, "first_audio")
        if not self._will_render(render) or self.renderer is None:
            return
        renderer = self.renderer
        image = await self._stage("image", response, image_task or self.avatar_image())
        response.image = image
        try:
            self._refuse_unanimatable(image)
        except ConfigurationError as exc:
            raise StageError("render", exc, partial=response) from exc
        planned_timeline, spoken = response.timeline, response.voice
        assert planned_timeline is not None and spoken is not None
        response.video = await self._stage(
            "render",
            response,
            renderer.render(
                image,
                spoken,
                planned_timeline,
                output=Path(output) if output else None,
                progress=progress,
            ),
        )
        _mark(response, "first_video")

    async def _plan(self, response: Response, *, skip_voice: bool) -> None:
        """Voice (unless done) and expressions side by side, then lip sync and pose."""
        reply, voice, expression = response.dialogue, self.voice, self.expression
        assert reply is not None and voice is not None
        expressions: list[FacialExpression] = []

        async def speak() -> None:
            if not skip_voice:
                response.voice = await self._stage("voice", response, voice.synthesize(reply.text))

        async def express() -> None:
            nonlocal expressions
            if expression is not None:
                expressions = await self._stage(
                    "expression",
                    response,
                    expression.plan(reply, sentiment=response.sentiment, intent=response.intent),
                )

        await concurrently(speak(), express())
        assert response.voice is not None
        response.timeline = await self._stage(
            "animate",
            response,
            asyncio.to_thread(self._animate, response.voice, expressions, reply),
        )

    def _plan_key(self, response: Response) -> str | None:
        """Cache key of the turn's face plan (expressions, lip sync, pose), or None."""
        if self.cache is None or not isinstance(self.voice, CachedVoice):
            return None
        reply = response.dialogue
        assert reply is not None
        return self.cache.key(
            "plan",
            self.voice.cache_key(),
            self._expression_fingerprint,
            normalize_text(reply.raw_text or reply.text),
            " ".join(reply.emotion_tags),
            response.sentiment.model_dump_json() if response.sentiment else "",
            response.intent.model_dump_json() if response.intent else "",
            str(self.seed),
        )

    def _animate(
        self, voice: VoiceOutput, expressions: list[FacialExpression], reply: DialogueResponse
    ) -> Timeline:
        from avatarkit.animation.expression import resolve_times
        from avatarkit.animation.lipsync import lipsync, timeline_from
        from avatarkit.animation.pose import plan_pose

        lip = lipsync(voice, text=reply.text)
        timed = resolve_times(expressions, voice.words)
        poses = plan_pose(
            voice.words, voice.phonemes, voice.duration, seed=self.seed, expressions=timed
        )
        return timeline_from(voice, lip, expressions=timed, poses=poses)


@contextlib.contextmanager
def _measured(response: Response) -> Iterator[None]:
    """Time the turn and collect its provider calls and cache hits into ``response.metrics``."""
    started = time.perf_counter()
    token = _turn_started.set(started)
    attributes = {"avatarkit.session": response.input.session_id, "avatarkit.turn": response.id}
    with span("avatarkit.turn", attributes) as turn, turn_counter() as counter:
        try:
            yield
        finally:
            _turn_started.reset(token)
            fill_metrics(response, counter, started)
            if turn is not None:
                m = response.metrics
                turn.set_attribute("avatarkit.total_s", m.total)
                turn.set_attribute("avatarkit.cache.hits", m.cache_hits)
                turn.set_attribute("avatarkit.cache.misses", m.cache_misses)
                turn.set_attribute("avatarkit.provider_calls", sum(m.provider_calls.values()))
                for stage, seconds in m.durations.items():
                    turn.set_attribute(f"avatarkit.duration.{stage}", seconds)


_turn_started: ContextVar[float | None] = ContextVar("avatarkit_turn_started", default=None)


@contextlib.contextmanager
def _settled(task: asyncio.Task[Any] | None) -> Iterator[None]:
    """Cancel ``task`` (the avatar's picture, started beside the turn) if the turn ends without it.

    A turn that fails, or that has nothing to voice or render, leaves no task behind.
    """
    try:
        yield
    finally:
        if task is not None and not task.done():
            task.cancel()


def _mark(response: Response, name: str) -> None:
    """Record seconds from the turn's start to now as ``metrics.durations[name]``."""
    started = _turn_started.get()
    if started is not None:
        response.metrics.durations.setdefault(name, time.perf_counter() - started)


def _settings(value: Settings | Mapping[str, Any] | None) -> Settings:
    if value is None:
        return Settings()
    if isinstance(value, Settings):
        return value
    if isinstance(value, Mapping):
        try:
            return Settings(**value)
        except ValidationError as exc:
            raise InputValidationError(f"settings: {exc}", field="settings") from None
    raise InputValidationError(
        f"settings must be a Settings or a mapping of its fields, not {type(value).__name__}",
        field="settings",
    )


def _make_cache(value: ReplyCache | str | Path | bool | None) -> ReplyCache | None:
    if value is None or value is False:
        return None
    if isinstance(value, ReplyCache):
        return value
    if value is True:
        try:
            return ReplyCache(default_cache_dir())
        except ConfigurationError as exc:
            if os.environ.get("AVATARKIT_CACHE_DIR", "").strip():
                raise ConfigurationError(f"{exc} (set by AVATARKIT_CACHE_DIR)") from exc
            raise
    if isinstance(value, (str, Path)):
        return ReplyCache(value)
    raise ConfigurationError(
        f"cache must be a ReplyCache, a folder or True, not {type(value).__name__}"
    )
