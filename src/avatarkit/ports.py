"""The ports: one async ``typing.Protocol`` per role, each with capability flags a caller can read.

Backends satisfy these structurally; nothing needs to inherit from them. ``avatarkit.testing``
checks that a backend's declared capabilities hold (``check_voice`` and friends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from avatarkit.errors import ConfigurationError
from avatarkit.types import (
    AudioFormat,
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
    "ROLES",
    "ChatCapabilities",
    "ChatModel",
    "ExpressionPolicy",
    "ImageCapabilities",
    "ImageGenerator",
    "IntentClassifier",
    "ProgressCallback",
    "Renderer",
    "RendererCapabilities",
    "Role",
    "SentimentAnalyzer",
    "SpeechSynthesizer",
    "StreamingSpeechSynthesizer",
    "TextPreprocessor",
    "VoiceCapabilities",
    "check_result",
    "unwrap",
]

Role = Literal[
    "preprocessor", "intent", "sentiment", "chat", "voice", "image", "renderer", "expression"
]
"""Names of the roles a provider can fill; the keys of a spec like ``voice="espeak:en-us"``."""

ROLES: tuple[Role, ...] = (
    "preprocessor",
    "intent",
    "sentiment",
    "chat",
    "voice",
    "image",
    "renderer",
    "expression",
)

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` by long jobs (render frames, diffusion steps)."""


def unwrap(backend: Any) -> Any:
    """The backend inside avatarkit's wrappers (limits, caches), or ``backend`` itself.

    A wrapper marks its class with ``_avatarkit_wrapper = True`` and keeps the backend it
    wraps in ``.inner``.
    """
    while getattr(type(backend), "_avatarkit_wrapper", False):
        backend = backend.inner
    return backend


_PROMISED: dict[tuple[str, str], tuple[type, str]] = {
    ("preprocessor", "preprocess"): (ProcessedText, "TextPreprocessor"),
    ("intent", "classify"): (IntentPrediction, "IntentClassifier"),
    ("sentiment", "analyze"): (Sentiment, "SentimentAnalyzer"),
    ("chat", "complete"): (str, "ChatModel"),
    ("chat", "stream"): (str, "ChatModel"),  # each delta
    ("voice", "synthesize"): (VoiceOutput, "SpeechSynthesizer"),
    ("voice", "stream"): (bytes, "StreamingSpeechSynthesizer"),  # each chunk
    ("image", "generate"): (AvatarImage, "ImageGenerator"),
    ("renderer", "render"): (AvatarVideo, "Renderer"),
    ("expression", "plan"): (list, "ExpressionPolicy"),  # of FacialExpression
}


def check_result(role: str, method: str, backend: Any, value: Any) -> Any:
    """Return ``value`` if it is what ``role``'s port promises from ``method``, else raise.

    For ``stream``, ``value`` is one item it yielded. A backend that breaks its port would
    otherwise fail later, in another stage, with an error that does not name it.

    Raises:
        ConfigurationError: ``value`` has the wrong type (the backend's code needs fixing).
    """
    promised = _PROMISED.get((role, method))
    if promised is None:
        return value
    kind, port = promised
    if kind is list and isinstance(value, list):  # an expression plan: keyframes only
        kind = FacialExpression
        wrong = [type(v).__name__ for v in value if not isinstance(v, kind)]
        if not wrong:
            return value
        got = f"a list holding {wrong[0]}"
    elif isinstance(value, kind):
        return value
    else:
        got = type(value).__name__
    what = "yielded" if method == "stream" else "returned"
    raise ConfigurationError(
        f"{type(backend).__name__}.{method}() {what} {got}, not {kind.__name__} "
        f"(see avatarkit.ports.{port})"
    )


class _Caps(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VoiceCapabilities(_Caps):
    """What a speech synthesiser can do."""

    word_timings: bool = False
    """VoiceOutput.words is filled."""
    phoneme_timings: bool = False
    """VoiceOutput.phonemes is filled (IPA)."""
    streaming: bool = False
    """It also implements :class:`StreamingSpeechSynthesizer`: ``stream()`` yields encoded
    audio chunks before synthesis ends."""
    formats: tuple[AudioFormat, ...] = ("wav",)
    """Audio encodings it can return."""
    offline: bool = False
    """Runs with no network and no key."""


class ChatCapabilities(_Caps):
    """What a chat model can do."""

    streaming: bool = True
    json_schema: bool = False
    """Can be constrained to a JSON schema (used by the LLM intent classifier)."""
    offline: bool = False


class ImageCapabilities(_Caps):
    """What an image generator can do."""

    kinds: tuple[Literal["procedural", "photo"], ...] = ("photo",)
    negative_prompt: bool = False
    seed: bool = False
    """Same seed gives the same image."""
    offline: bool = False


class RendererCapabilities(_Caps):
    """What a renderer accepts and produces."""

    image_kinds: tuple[Literal["procedural", "photo"], ...] = ("photo",)
    formats: tuple[Literal["mp4", "webm", "gif", "png", "mov"], ...] = ("mp4",)
    streaming: bool = False
    """Can render segment by segment as sentences arrive."""
    expressions: bool = False
    """Uses the timeline's expression keyframes."""
    offline: bool = False


@runtime_checkable
class TextPreprocessor(Protocol):
    """Normalises and tokenises user text."""

    async def preprocess(self, text: str, *, language: str | None = None) -> ProcessedText:
        """Return the preprocessing result for ``text``."""
        ...


@runtime_checkable
class IntentClassifier(Protocol):
    """Ranks the intents an utterance expresses."""

    async def classify(self, text: ProcessedText) -> IntentPrediction:
        """Return ranked intents; ``top`` is ``out_of_scope`` below the threshold."""
        ...


@runtime_checkable
class SentimentAnalyzer(Protocol):
    """Scores the sentiment of a text."""

    async def analyze(self, text: str) -> Sentiment:
        """Return the sentiment of ``text``."""
        ...


@runtime_checkable
class ChatModel(Protocol):
    """Writes the avatar's replies."""

    @property
    def capabilities(self) -> ChatCapabilities:
        """What this model can do."""
        ...

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the whole reply to ``messages``."""
        ...

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply as text deltas."""
        ...


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """Turns text into speech, with timings where the backend can give them."""

    @property
    def capabilities(self) -> VoiceCapabilities:
        """What this voice can do."""
        ...

    async def synthesize(self, text: str) -> VoiceOutput:
        """Speak ``text``; timings refer to ``text`` itself."""
        ...


@runtime_checkable
class StreamingSpeechSynthesizer(SpeechSynthesizer, Protocol):
    """A voice that can also stream audio as it is synthesised (``capabilities.streaming``)."""

    def stream(self, text: str) -> AsyncIterator[bytes]:
        """Yield encoded audio chunks (in ``capabilities.formats[0]``) as they arrive."""
        ...


@runtime_checkable
class ImageGenerator(Protocol):
    """Makes the avatar's picture."""

    @property
    def capabilities(self) -> ImageCapabilities:
        """What this generator can do."""
        ...

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """Return one picture for ``prompt``."""
        ...


@runtime_checkable
class Renderer(Protocol):
    """Turns an avatar picture, speech and its timeline into a talking video."""

    @property
    def capabilities(self) -> RendererCapabilities:
        """What this renderer accepts and produces."""
        ...

    async def render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> AvatarVideo:
        """Render the clip; write it to ``output`` (a temporary file when ``None``)."""
        ...


@runtime_checkable
class ExpressionPolicy(Protocol):
    """Decides the face's expression keyframes for a reply."""

    async def plan(
        self,
        reply: DialogueResponse,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
    ) -> list[FacialExpression]:
        """Return expression keyframes anchored in the reply text (``char_offset``).

        It runs beside speech synthesis, so it sees text, not audio; the timeline builder
        turns each ``char_offset`` into a time from the voice's word timings.
        """
        ...
