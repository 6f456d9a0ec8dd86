"""AvatarBot: one turn from user text to a talking-avatar Response.

preprocess → (intent ∥ sentiment) → dialogue → (voice ∥ expression) → lip sync + pose → render,
with the avatar picture generated beside all of it. Async core; every public coroutine has a
``*_sync`` twin that also works inside a running event loop (Jupyter).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
from collections.abc import Awaitable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from avatarkit import _sync
from avatarkit._aio import concurrently
from avatarkit.config import Settings, get_logger
from avatarkit.dialogue.manager import DialogueManager, Persona
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    InputValidationError,
    StageError,
)
from avatarkit.limits import CallStats, ConcurrencyLimit, limited
from avatarkit.metrics import fill_metrics, turn_counter
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
)
from avatarkit.registry import Registry, default_registry
from avatarkit.types import (
    AvatarImage,
    AvatarPrompt,
    DialogueResponse,
    FacialExpression,
    Response,
    Timeline,
    UserInput,
    VoiceOutput,
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
"""A spec string (``"espeak:en-us"``), a backend object, or ``None`` to skip the stage."""


class AvatarBot:
    """A talking avatar: give it text, get back speech, a timeline and a video.

    Each role takes a spec string resolved through the provider registry, a backend object,
    or ``None`` to leave that stage out. The defaults run offline with no keys.

    Args:
        chat: Chat model for replies (``"local"``, ``"openai:gpt-4o-mini"``...).
        voice: Speech synthesiser (``"espeak:en-us+f3"``, ``"elevenlabs:<voice_id>"``...).
        renderer: Video renderer (``"local"``, ``"d-id"``); ``None`` for audio + timeline only.
        image: Avatar-picture generator, used when ``avatar`` is not a ready image.
        avatar: The avatar: an AvatarImage, a path to a portrait, an AvatarPrompt, or None
            (the image generator's default).
        preprocessor, intent, sentiment, expression: The understanding and expression roles.
        persona: Who the avatar is (name, backstory, style).
        dialogue: A ready DialogueManager (overrides ``chat`` and ``persona``).
        settings: Limits (input length...) and render options.
        limits: Most concurrent calls per role across every session of this bot, e.g.
            ``{"voice": 4, "renderer": 2}``; later calls wait their turn in arrival order.
        max_waiting: Calls allowed to queue per limited role before ``OverloadedError``.
        seed: Seed for reproducible idle motion and blinks.
        registry: Where specs are looked up (the default registry unless testing).

    Raises:
        ConfigurationError: an unknown spec, a missing key or extra, or a backend object that
            does not fill its role. Raised here, before any backend is called.
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
        dialogue: DialogueManager | None = None,
        settings: Settings | None = None,
        limits: Mapping[str, int] | None = None,
        max_waiting: int | None = None,
        seed: int = 0,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.calls = CallStats()
        self._limits = {
            role: ConcurrencyLimit(n, max_waiting=max_waiting, name=role)
            for role, n in (limits or {}).items()
        }
        self.seed = seed
        self._registry = registry or default_registry
        self.preprocessor: TextPreprocessor | None = self._resolve("preprocessor", preprocessor)
        self.intent: IntentClassifier | None = self._resolve("intent", intent)
        self.sentiment: SentimentAnalyzer | None = self._resolve("sentiment", sentiment)
        self.voice: SpeechSynthesizer | None = self._resolve("voice", voice)
        self.renderer: Renderer | None = self._resolve("renderer", renderer)
        self.expression: ExpressionPolicy | None = self._resolve("expression", expression)
        if dialogue is None:
            chat_model: ChatModel | None = self._resolve("chat", chat)
            if chat_model is not None:
                dialogue = DialogueManager(chat=chat_model, persona=persona or Persona())
        self.dialogue: DialogueManager | None = dialogue
        self.persona = dialogue.persona if dialogue else (persona or Persona())
        self._avatar_image: AvatarImage | None = None
        self._avatar_prompt: AvatarPrompt | None = None
        self.image: ImageGenerator | None = None
        if isinstance(avatar, AvatarImage):
            self._avatar_image = avatar
        elif isinstance(avatar, (str, Path)):
            self._avatar_image = _load_image(Path(avatar))
        else:
            self._avatar_prompt = avatar or AvatarPrompt(self.persona.avatar_prompt, seed=seed)
            if self.renderer is not None:
                self.image = self._resolve("image", image)
        self._image_lock = asyncio.Lock()

    def _resolve(self, role: Role, value: Backend) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = self._registry.create(role, value)
        port = _PORTS[role]
        if not isinstance(value, port):
            raise ConfigurationError(
                f"{role}={type(value).__name__} does not implement avatarkit.ports.{port.__name__}"
            )
        return limited(value, self._limits.get(role), role=role, stats=self.calls)

    def __repr__(self) -> str:
        parts = [
            f"{role}={type(getattr(self, role).inner).__name__}"
            for role in ("voice", "renderer", "image")
            if getattr(self, role, None) is not None
        ]
        if self.dialogue is not None:
            parts.insert(0, f"chat={type(getattr(self.dialogue.chat, 'inner', None)).__name__}")
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
            output: Where to write the video file (a temporary file when None).
            progress: ``progress(done, total)`` during rendering.

        Raises:
            InputValidationError: empty or too-long text (before any backend is called).
            StageError: a stage failed; ``.stage`` names it and ``.partial`` holds the
                Response with every earlier result.
        """
        if self.dialogue is None:
            raise ConfigurationError(
                "respond() needs a chat model; this bot was made with chat=None"
            )
        user = self._validate(text, session_id)
        response = Response(input=user)
        with _measured(response):
            image_task = self._start_image_task(render)
            try:
                await self._understand(response)
                await self._stage("dialogue", response, self._reply(response))
                await self._voice_and_face(response, image_task, render, output, progress)
            except BaseException:
                if image_task is not None and not image_task.done():
                    image_task.cancel()
                raise
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
        """Speak and animate ``text`` as given (no understanding, no dialogue)."""
        user = self._validate(text, "default")
        response = Response(input=user, dialogue=DialogueResponse(text=user.text, handled_by="say"))
        with _measured(response):
            image_task = self._start_image_task(render)
            await self._voice_and_face(response, image_task, render, output, progress)
        return response

    def stream(
        self,
        text: str | UserInput,
        *,
        session_id: str = "default",
        render: bool | None = None,
        output_dir: str | Path | None = None,
    ) -> ReplyStream:
        """Run one turn as a stream of events (text, sentences, audio, video, final).

        Sentences are voiced while the chat model is still writing; events arrive in spoken
        order. Use ``async for event in bot.stream(...)``; ``await stream.interrupt()`` stops it.

        Raises:
            InputValidationError: empty or too-long text, at once, before any backend call.
            ConfigurationError: the bot has no chat model or no voice (also at once).
        """
        from avatarkit.streaming import ReplyStream

        if self.dialogue is None or self.voice is None:
            missing = "chat model" if self.dialogue is None else "voice"
            raise ConfigurationError(f"stream() needs a {missing}; this bot was made without one")
        user = self._validate(text, session_id)
        folder = Path(output_dir) if output_dir else None
        return ReplyStream(self, user, render=self._will_render(render), output_dir=folder)

    def say_sync(self, text: str, **kwargs: Any) -> Response:
        """Blocking :meth:`say`."""
        return _sync.run(self.say(text, **kwargs))

    async def avatar_image(self) -> AvatarImage:
        """The avatar's picture, generated once and kept."""
        async with self._image_lock:
            if self._avatar_image is None:
                if self.image is None or self._avatar_prompt is None:
                    raise ConfigurationError("no avatar image and no image generator configured")
                self._avatar_image = await self.image.generate(self._avatar_prompt)
            return self._avatar_image

    def avatar_image_sync(self) -> AvatarImage:
        """Blocking :meth:`avatar_image`."""
        return _sync.run(self.avatar_image())

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
        if user is not None:
            return user.model_copy(update={"text": cleaned})
        return UserInput(text=cleaned, session_id=session_id)

    async def _stage(self, name: str, response: Response, coro: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        try:
            return await coro
        except StageError:
            raise
        except InputValidationError as exc:
            raise StageError(name, exc, partial=response) from exc
        except (AvatarKitError, Exception) as exc:
            _log.warning("stage %s failed: %s", name, exc)
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
        _strip_tags(response.dialogue)

    def _start_image_task(self, render: bool | None) -> asyncio.Task[AvatarImage] | None:
        if not self._will_render(render) or self._avatar_image is not None:
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
        voice, expression = self.voice, self.expression
        expressions: list[FacialExpression] = []

        async def speak() -> None:
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
        if not self._will_render(render) or self.renderer is None:
            return
        renderer = self.renderer
        image = await self._stage("image", response, image_task or self.avatar_image())
        response.image = image
        if image.kind not in renderer.capabilities.image_kinds:
            raise StageError(
                "render",
                ConfigurationError(
                    f"{type(renderer).__name__} cannot animate {image.kind!r} images "
                    f"(it accepts {renderer.capabilities.image_kinds})"
                ),
                partial=response,
            )
        timeline = response.timeline
        response.video = await self._stage(
            "render",
            response,
            renderer.render(
                image,
                response.voice,
                timeline,
                output=Path(output) if output else None,
                progress=progress,
            ),
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
    with turn_counter() as counter:
        try:
            yield
        finally:
            fill_metrics(response, counter, started)


def _strip_tags(reply: DialogueResponse) -> None:
    from avatarkit.animation.expression import strip_emotion_tags

    clean, tags = strip_emotion_tags(reply.text)
    if tags:
        reply.raw_text = reply.text
        reply.text = clean
        reply.emotion_tags = [tag for _, tag in tags]


def _load_image(path: Path) -> AvatarImage:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputValidationError(f"avatar image {path} does not exist", field="avatar")
    data = path.read_bytes()
    try:
        with Image.open(path) as img:
            fmt = (img.format or "").lower()
            width, height = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputValidationError(
            f"{path} is not a readable image: {exc}", field="avatar"
        ) from exc
    if fmt not in ("png", "jpeg", "webp"):
        raise InputValidationError(f"{path}: use a PNG, JPEG or WebP image (got {fmt})")
    return AvatarImage.model_validate(
        {
            "data": data,
            "format": fmt,
            "width": width,
            "height": height,
            "kind": "photo",
            "provenance": {"source": str(path)},
        }
    )
