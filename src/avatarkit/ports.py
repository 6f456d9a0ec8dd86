"""The ports: one async ``typing.Protocol`` per role, each with capability flags a caller can read.

Backends satisfy these structurally; nothing needs to inherit from them. ``avatarkit.testing``
checks that a backend's declared capabilities hold (``check_voice`` and friends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

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
