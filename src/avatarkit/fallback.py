"""Provider fallback: when a backend fails, the next one in line takes the call.

``AvatarBot(voice=["elevenlabs:21m00Tcm4TlvDq8ikWAM", "espeak"])`` speaks with ElevenLabs and,
when a call to it fails (after the HTTP layer's own retries), with eSpeak NG, offline. Every
role takes such a list, of spec strings or backend objects; :func:`fallback` builds the chain
by itself. It plays the part of LiveKit Agents' ``FallbackAdapter`` and Pipecat's
``ServiceSwitcher``, for every role.

- **What moves on.** A :class:`~avatarkit.errors.ProviderError` (rate limit, quota, refused
  key, timeout, broken connection, error status), or a connection, DNS, TLS or timeout error
  from an adapter that does not map its errors. Not a local file error (an output path that
  cannot be written fails the same on every backend), nor a
  :class:`~avatarkit.errors.ContentModerationError`: a refusal on content grounds is an answer,
  and asking elsewhere would go round it. Input and configuration errors, cancellation and bugs
  are raised at once: another backend would not help.
- **Cooling down.** A backend that failed is skipped for ``cooldown`` seconds (30 by default),
  so a dead service does not cost every turn a timeout; then it is tried first again. When
  every backend is cooling down they are all tried anyway, in order.
- **Streams** (chat deltas, streamed speech) move on only before their first item: once part
  of a reply has been shown or heard, it is not started over by another backend.
- **Capabilities** are what every backend offers (a chain with a photo-only renderer animates
  photos only; its formats are those all of them write); ``offline`` is true when any of them
  runs offline. An image chain's ``kinds`` are any generator's: the bot checks that each one
  makes pictures its renderer takes.
- **Caching.** A ReplyCache keys a chain by its first backend and stores only what the first
  backend made, so a stand-in's reply is not served again once the first is back.
- **Seeing it.** Each failure is logged as a warning (its message redacted), each reply from a
  stand-in counts ``fallback.<role>`` in the turn's metrics, and :meth:`Fallback.health` says
  which backends are cooling down and why.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from avatarkit._aio import close_all
from avatarkit.config import get_logger, redact
from avatarkit.errors import (
    AllBackendsFailedError,
    ConfigurationError,
    ContentModerationError,
    ProviderError,
)
from avatarkit.metrics import count
from avatarkit.ports import (
    ChatCapabilities,
    ChatModel,
    ExpressionPolicy,
    ImageCapabilities,
    ImageGenerator,
    IntentClassifier,
    ProgressCallback,
    Renderer,
    RendererCapabilities,
    Role,
    SentimentAnalyzer,
    SpeechSynthesizer,
    StreamingSpeechSynthesizer,
    TextPreprocessor,
    VoiceCapabilities,
)
from avatarkit.registry import Registry, default_registry
from avatarkit.types import (
    AvatarImage,
    AvatarPrompt,
    AvatarVideo,
    ChatMessage,
    DialogueResponse,
    FacialExpression,
    IntentPrediction,
    ProcessedText,
    Sentiment,
    Timeline,
    VoiceOutput,
)

__all__ = [
    "FALLBACK_ERRORS",
    "BackendHealth",
    "Fallback",
    "FallbackChat",
    "FallbackExpression",
    "FallbackImage",
    "FallbackIntent",
    "FallbackPreprocessor",
    "FallbackRenderer",
    "FallbackSentiment",
    "FallbackStreamingVoice",
    "FallbackVoice",
    "fallback",
    "watch_stand_ins",
]

_log = get_logger("avatarkit.fallback")

FALLBACK_ERRORS: tuple[type[BaseException], ...] = (
    ProviderError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    ssl.SSLError,
)
"""Errors after which the next backend is tried (except ContentModerationError): a provider's
error, or a connection, DNS, TLS or timeout error from an adapter that does not map its own.
Other ``OSError``s (a file that cannot be written) fail alike on every backend: raised at once."""

_stand_ins: ContextVar[list[str] | None] = ContextVar("avatarkit_fallback_stand_ins", default=None)


@contextlib.contextmanager
def watch_stand_ins() -> Iterator[list[str]]:
    """Collect the roles a stand-in (not the first backend) served inside the block.

    The reply cache uses it to store only the first backend's work.
    """
    served: list[str] = []
    token = _stand_ins.set(served)
    try:
        yield served
    finally:
        _stand_ins.reset(token)


@dataclass(frozen=True)
class BackendHealth:
    """One backend of a chain, as :meth:`Fallback.health` reports it."""

    name: str
    available: bool
    """False while it cools down after a failure (it is then tried only after the others)."""
    calls: int
    failures: int
    """Failures in a row (0 after a success)."""
    last_error: str | None
    """The last failure's message, redacted."""


class _Member:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name = type(backend).__name__
        self.calls = 0
        self.failures = 0
        self.last_error: str | None = None
        self.cooling_until = -math.inf


class Fallback:
    """Backends of one role tried in order; the base of the per-role classes below.

    Args:
        *backends: The backends, first choice first (backend objects, not spec strings: see
            :func:`fallback` for those).
        cooldown: Seconds a failed backend is passed over (``0``: always tried first).

    Raises:
        ConfigurationError: no backend, a backend that does not fill the role, or a bad
            cooldown.
    """

    role: ClassVar[Role]
    _port: ClassVar[type]

    def __init__(self, *backends: Any, cooldown: float = 30.0) -> None:
        if not backends:
            raise ConfigurationError(f"a {self.role} fallback needs at least one backend")
        for backend in backends:
            if isinstance(backend, str):
                raise ConfigurationError(
                    f"{type(self).__name__} takes backend objects; for spec strings like "
                    f"{redact(backend)!r} use avatarkit.fallback.fallback({self.role!r}, ...)"
                )
            if not isinstance(backend, self._port):
                raise ConfigurationError(
                    f"{self.role} fallback: {type(backend).__name__} does not implement "
                    f"avatarkit.ports.{self._port.__name__}"
                )
        if not (isinstance(cooldown, (int, float)) and 0 <= cooldown < math.inf):
            raise ConfigurationError(f"cooldown must be 0 or more seconds, got {cooldown!r}")
        self._members = [_Member(b) for b in backends]
        self.cooldown = float(cooldown)
        self._clock: Callable[[], float] = time.monotonic

    @property
    def backends(self) -> tuple[Any, ...]:
        """The backends, in the order they are tried when all are well."""
        return tuple(m.backend for m in self._members)

    @property
    def primary(self) -> Any:
        """The first backend: the one whose work a reply cache keeps."""
        return self._members[0].backend

    def __repr__(self) -> str:
        inner = ", ".join(repr(m.backend) for m in self._members)
        return f"{type(self).__name__}({inner})"

    def health(self) -> list[BackendHealth]:
        """Each backend's state: cooling down or not, calls, failures in a row, last error."""
        now = self._clock()
        return [
            BackendHealth(m.name, m.cooling_until <= now, m.calls, m.failures, m.last_error)
            for m in self._members
        ]

    async def aclose(self) -> None:
        """Close every backend that has an ``aclose()`` (else a ``close()``).

        A failure is raised after trying them all.
        """
        await close_all(self.backends, _log)  # its logger redacts what it logs

    # ------------------------------------------------------------------ the calls

    def _order(self, method: str) -> list[_Member]:
        """Members with ``method``: those not cooling down first, each group in its order."""
        now = self._clock()
        members = [m for m in self._members if callable(getattr(m.backend, method, None))]
        return [m for m in members if m.cooling_until <= now] + [
            m for m in members if m.cooling_until > now
        ]

    def _failed(self, member: _Member, exc: BaseException, left: int) -> None:
        member.failures += 1
        member.last_error = redact(f"{type(exc).__name__}: {exc}")
        member.cooling_until = self._clock() + self.cooldown
        _log.warning(
            "%s backend %s failed (%s); %s",
            self.role,
            member.name,
            member.last_error,
            "trying the next one" if left else "no backend left",
        )

    def _served(self, member: _Member, method: str) -> None:
        member.failures = 0
        member.cooling_until = -math.inf
        first = next(m for m in self._members if callable(getattr(m.backend, method, None)))
        if member is not first:  # a stand-in (the first that has the method is no stand-in)
            count(f"fallback.{self.role}")
            served = _stand_ins.get()
            if served is not None:
                served.append(self.role)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Await ``backend.method(*args, **kwargs)`` on each member in turn until one answers."""
        errors: list[tuple[str, BaseException]] = []
        order = self._order(method)
        for i, member in enumerate(order):
            member.calls += 1
            try:
                result = await getattr(member.backend, method)(*args, **kwargs)
            except ContentModerationError:
                raise
            except FALLBACK_ERRORS as exc:
                self._failed(member, exc, len(order) - i - 1)
                errors.append((member.name, exc))
                continue
            self._served(member, method)
            return result
        raise self._exhausted(errors)

    async def _stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Yield from ``backend.method(...)``, moving on only while nothing has been yielded."""
        errors: list[tuple[str, BaseException]] = []
        order = self._order(method)
        for i, member in enumerate(order):
            member.calls += 1
            started = False
            try:
                items = getattr(member.backend, method)(*args, **kwargs)
                async with _closing(items):
                    async for item in items:
                        if not started:
                            started = True
                            self._served(member, method)
                        yield item
            except ContentModerationError:
                raise
            except FALLBACK_ERRORS as exc:
                self._failed(member, exc, 0 if started else len(order) - i - 1)
                if started:
                    raise
                errors.append((member.name, exc))
                continue
            if not started:  # an empty stream is an answer too
                self._served(member, method)
            return
        raise self._exhausted(errors)

    def _exhausted(self, errors: list[tuple[str, BaseException]]) -> AllBackendsFailedError:
        error = AllBackendsFailedError(self.role, errors)
        if errors:
            error.__cause__ = errors[-1][1]
        return error

    def _all(self, flag: str, caps: Sequence[Any]) -> bool:
        return all(getattr(c, flag) for c in caps)

    def _any(self, flag: str, caps: Sequence[Any]) -> bool:
        return any(getattr(c, flag) for c in caps)

    def _capabilities(self) -> list[Any]:
        return [m.backend.capabilities for m in self._members]


@contextlib.asynccontextmanager
async def _closing(items: Any) -> AsyncIterator[None]:
    """Close an async iterator when the block ends (the consumer may stop early)."""
    try:
        yield
    finally:
        close = getattr(items, "aclose", None)
        if callable(close):
            await close()


def _in_order(groups: Sequence[Sequence[Any]], *, every: bool) -> tuple[Any, ...]:
    """The groups' items in first-seen order: those in every group, or (``every=False``) all."""
    if every:
        return tuple(x for x in groups[0] if all(x in g for g in groups[1:]))
    seen: list[Any] = []
    for group in groups:
        seen.extend(x for x in group if x not in seen)
    return tuple(seen)


class FallbackPreprocessor(Fallback):
    """Text preprocessors tried in order."""

    role = "preprocessor"
    _port = TextPreprocessor

    async def preprocess(self, text: str, *, language: str | None = None) -> ProcessedText:
        """The first preprocessor's result that does not fail."""
        result: ProcessedText = await self._call("preprocess", text, language=language)
        return result


class FallbackIntent(Fallback):
    """Intent classifiers tried in order (an LLM classifier, then the local one)."""

    role = "intent"
    _port = IntentClassifier

    @property
    def names(self) -> list[str] | None:
        """Every intent some classifier gives, when all of them list theirs (else None)."""
        lists = [getattr(m.backend, "names", None) for m in self._members]
        if not all(isinstance(names, list) for names in lists):
            return None
        return list(_in_order(lists, every=False))  # type: ignore[arg-type]

    async def classify(self, text: ProcessedText) -> IntentPrediction:
        """The first classifier's ranking that does not fail."""
        result: IntentPrediction = await self._call("classify", text)
        return result


class FallbackSentiment(Fallback):
    """Sentiment analyzers tried in order."""

    role = "sentiment"
    _port = SentimentAnalyzer

    async def analyze(self, text: str) -> Sentiment:
        """The first analyzer's score that does not fail."""
        result: Sentiment = await self._call("analyze", text)
        return result


class FallbackExpression(Fallback):
    """Expression policies tried in order."""

    role = "expression"
    _port = ExpressionPolicy

    async def plan(
        self,
        reply: DialogueResponse,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
    ) -> list[FacialExpression]:
        """The first policy's keyframes that do not fail."""
        result: list[FacialExpression] = await self._call(
            "plan", reply, sentiment=sentiment, intent=intent
        )
        return result


class FallbackChat(Fallback):
    """Chat models tried in order.

    ``complete`` moves on at any failure, ``stream`` only before its first delta.
    """

    role = "chat"
    _port = ChatModel

    @property
    def capabilities(self) -> ChatCapabilities:
        """Streaming and JSON schemas when every model has them; offline when any is."""
        caps = self._capabilities()
        return ChatCapabilities(
            streaming=self._all("streaming", caps),
            json_schema=self._all("json_schema", caps),
            offline=self._any("offline", caps),
        )

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """The first model's whole reply that does not fail."""
        result: str = await self._call("complete", messages)
        return result

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """The reply as deltas, from the first model that gets to its first delta."""
        return self._stream("stream", messages)


class FallbackVoice(Fallback):
    """Voices tried in order.

    :func:`fallback` makes a :class:`FallbackStreamingVoice` when every voice streams the same
    audio format.
    """

    role = "voice"
    _port = SpeechSynthesizer

    @property
    def capabilities(self) -> VoiceCapabilities:
        """Timings when every voice has them; any voice's formats; offline when any is."""
        caps = self._capabilities()
        return VoiceCapabilities(
            word_timings=self._all("word_timings", caps),
            phoneme_timings=self._all("phoneme_timings", caps),
            streaming=isinstance(self, FallbackStreamingVoice),
            formats=_in_order([c.formats for c in caps], every=False),
            offline=self._any("offline", caps),
        )

    async def synthesize(self, text: str) -> VoiceOutput:
        """The first voice's speech that does not fail (timings refer to ``text``)."""
        result: VoiceOutput = await self._call("synthesize", text)
        return result


class FallbackStreamingVoice(FallbackVoice):
    """Streaming voices of one audio format tried in order.

    A stream moves on only before its first chunk.
    """

    def __init__(self, *backends: Any, cooldown: float = 30.0) -> None:
        super().__init__(*backends, cooldown=cooldown)
        if not _stream_alike(backends):
            raise ConfigurationError(
                "FallbackStreamingVoice needs voices that all stream the same audio format; "
                "use FallbackVoice"
            )

    def stream(self, text: str) -> AsyncIterator[bytes]:
        """Encoded audio chunks from the first voice that gets to its first chunk."""
        return self._stream("stream", text)


def _stream_alike(voices: Sequence[Any]) -> bool:
    """Whether every voice streams, all in one audio format (chunks never change format)."""
    streams = all(
        v.capabilities.streaming and isinstance(v, StreamingSpeechSynthesizer) for v in voices
    )
    firsts = {v.capabilities.formats[0] for v in voices if v.capabilities.formats}
    return bool(voices) and streams and len(firsts) == 1


class FallbackImage(Fallback):
    """Image generators tried in order."""

    role = "image"
    _port = ImageGenerator

    @property
    def capabilities(self) -> ImageCapabilities:
        """Any generator's kinds; negative prompts and seeds when all take them."""
        caps = self._capabilities()
        return ImageCapabilities(
            kinds=_in_order([c.kinds for c in caps], every=False),
            negative_prompt=self._all("negative_prompt", caps),
            seed=self._all("seed", caps),
            offline=self._any("offline", caps),
        )

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """The first generator's picture that does not fail."""
        result: AvatarImage = await self._call("generate", prompt, progress=progress)
        return result


class FallbackRenderer(Fallback):
    """Renderers tried in order (D-ID, then the local renderer).

    A picture must suit every one of them: :meth:`check_image` runs each one's check.
    """

    role = "renderer"
    _port = Renderer

    def __init__(self, *backends: Any, cooldown: float = 30.0) -> None:
        super().__init__(*backends, cooldown=cooldown)
        caps = self.capabilities
        if not caps.image_kinds or not caps.formats:
            raise ConfigurationError(
                "these renderers have no picture kind or no video format in common: "
                + "; ".join(
                    f"{type(b).__name__} takes {', '.join(b.capabilities.image_kinds)} pictures "
                    f"and writes {', '.join(b.capabilities.formats)}"
                    for b in backends
                )
            )
        # the first renderer's idle loop that does not fail; None when none of them has one
        self.idle: Callable[..., Any] | None = (
            self._idle if any(callable(getattr(b, "idle", None)) for b in backends) else None
        )

    @property
    def capabilities(self) -> RendererCapabilities:
        """The picture kinds and formats all take and write; flags when all have them."""
        caps = self._capabilities()
        return RendererCapabilities(
            image_kinds=_in_order([c.image_kinds for c in caps], every=True),
            formats=_in_order([c.formats for c in caps], every=True),
            streaming=self._all("streaming", caps),
            expressions=self._all("expressions", caps),
            offline=self._any("offline", caps),
        )

    async def render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> AvatarVideo:
        """The first renderer's clip that does not fail."""
        result: AvatarVideo = await self._call(
            "render", image, voice, timeline, output=output, progress=progress
        )
        return result

    async def prepare(self, image: AvatarImage) -> None:
        """Let each renderer that can get ready for ``image`` (the local one paints it).

        The first renderer's failure is raised; a stand-in's is logged and left for its turn
        (it may never be needed).
        """
        for i, member in enumerate(self._members):
            prepare = getattr(member.backend, "prepare", None)
            if not callable(prepare):
                continue
            try:
                await prepare(image)
            except Exception as exc:
                if i == 0:
                    raise
                _log.warning(
                    "renderer %s could not prepare the avatar (%s); it renders only if needed",
                    member.name,
                    redact(f"{type(exc).__name__}: {exc}"),
                )

    def check_image(self, image: AvatarImage) -> None:
        """Run each renderer's own check of the picture (any of them may animate it).

        Raises:
            InputValidationError: a renderer refuses the picture.
        """
        for member in self._members:
            check = getattr(member.backend, "check_image", None)
            if callable(check):
                check(image)

    async def _idle(self, *args: Any, **kwargs: Any) -> AvatarVideo:
        result: AvatarVideo = await self._call("idle", *args, **kwargs)
        return result


_CLASSES: dict[Role, type[Fallback]] = {
    "preprocessor": FallbackPreprocessor,
    "intent": FallbackIntent,
    "sentiment": FallbackSentiment,
    "chat": FallbackChat,
    "voice": FallbackVoice,
    "image": FallbackImage,
    "renderer": FallbackRenderer,
    "expression": FallbackExpression,
}


def fallback(
    role: Role,
    *backends: Any,
    cooldown: float = 30.0,
    registry: Registry | None = None,
) -> Fallback:
    """A chain of ``role`` backends tried in order, from spec strings or backend objects.

    ``fallback("voice", "elevenlabs:21m00Tcm4TlvDq8ikWAM", "espeak")``. A chain of voices that
    all stream one audio format streams too (:class:`FallbackStreamingVoice`).

    Raises:
        ConfigurationError: an unknown role or spec, a backend that does not fill the role,
            or renderers with no picture kind or format in common.
    """
    if role not in _CLASSES:
        raise ConfigurationError(f"unknown role {role!r}; use one of {', '.join(_CLASSES)}")
    reg = registry or default_registry
    built = [reg.create(role, b) if isinstance(b, str) else b for b in backends]
    cls = _CLASSES[role]
    if role == "voice" and _stream_alike(built):
        cls = FallbackStreamingVoice
    return cls(*built, cooldown=cooldown)
