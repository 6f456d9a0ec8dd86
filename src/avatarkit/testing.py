"""Deterministic fakes for every role, contract checks, and a guard against real requests.

Use them in your own tests (spec ``"test"`` picks them through the registry)::

    from avatarkit.testing import FakeChatModel, FakeVoice
    bot = AvatarBot(chat=FakeChatModel("Hi there!"), voice=FakeVoice(), renderer="test")

Every fake records its calls in ``.calls`` and takes a ``delay`` (seconds) to simulate latency.
The classes are named ``Fake*``/``Function*`` so pytest does not collect them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import re
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import (
    ChatCapabilities,
    ImageCapabilities,
    ProgressCallback,
    RendererCapabilities,
    StreamingSpeechSynthesizer,
    VoiceCapabilities,
)
from avatarkit.registry import Provider
from avatarkit.types import (
    AvatarImage,
    AvatarPrompt,
    AvatarVideo,
    ChatMessage,
    DialogueResponse,
    Emotion,
    FacialExpression,
    Intent,
    IntentPrediction,
    PhonemeTiming,
    ProcessedText,
    Sentiment,
    Timeline,
    VoiceOutput,
    WordTiming,
)

__all__ = [
    "FakeChatModel",
    "FakeExpressionPolicy",
    "FakeImageGenerator",
    "FakeIntentClassifier",
    "FakePreprocessor",
    "FakeRenderer",
    "FakeSentimentAnalyzer",
    "FakeVoice",
    "FunctionChatModel",
    "FunctionVoice",
    "block_provider_requests",
    "check_chat",
    "check_renderer",
    "check_voice",
    "provider",
]

_WORD_RE = re.compile(r"\S+")
_LETTER_PHONEME = {
    "a": "a",
    "e": "e",
    "i": "i",
    "o": "o",
    "u": "u",
    "y": "i",
    "c": "k",
    "q": "k",
    "x": "k",
    "j": "dʒ",
    "w": "w",
    "r": "ɹ",
}


class _Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[Any] = []

    async def _wait(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)


class FakePreprocessor(_Recorder):
    """Lowercases and splits on whitespace."""

    async def preprocess(self, text: str, *, language: str | None = None) -> ProcessedText:
        """Return a ProcessedText with whitespace tokens."""
        self.calls.append(text)
        await self._wait()
        norm = " ".join(text.split())
        tokens = re.findall(r"\w+", norm.lower())
        return ProcessedText(
            original=text,
            normalized=norm,
            tokens=tokens,
            content_tokens=tokens,
            language=language or "en",
        )


class FakeIntentClassifier(_Recorder):
    """Returns the first intent whose keyword occurs in the text, else ``default``."""

    def __init__(
        self,
        keywords: dict[str, str] | None = None,
        *,
        default: str = "small_talk",
        delay: float = 0.0,
    ) -> None:
        super().__init__(delay)
        self.keywords = keywords or {"hello": "greeting", "hi": "greeting", "bye": "farewell"}
        self.default = default

    async def classify(self, text: ProcessedText) -> IntentPrediction:
        """Match keywords against the tokens."""
        self.calls.append(text.normalized)
        await self._wait()
        found = [intent for kw, intent in self.keywords.items() if kw in text.tokens]
        top = found[0] if found else self.default
        return IntentPrediction(
            intents=[Intent(name=top, confidence=0.9)], top=top, detected=[top], backend="test"
        )


class FakeSentimentAnalyzer(_Recorder):
    """Positive when the text contains a happy word, negative for a sad one, else neutral."""

    async def analyze(self, text: str) -> Sentiment:
        """Score ``text`` by a tiny word list."""
        self.calls.append(text)
        await self._wait()
        low = text.lower()
        if any(w in low for w in ("great", "love", "happy", "thanks", "hello")):
            return Sentiment(
                compound=0.6,
                positive=0.5,
                neutral=0.5,
                label="positive",
                emotion=Emotion.HAPPY,
                backend="test",
            )
        if any(w in low for w in ("bad", "sad", "hate", "broken")):
            return Sentiment(
                compound=-0.6,
                negative=0.5,
                neutral=0.5,
                label="negative",
                emotion=Emotion.SAD,
                backend="test",
            )
        return Sentiment(compound=0.0, backend="test")


class FakeChatModel(_Recorder):
    """Replies with fixed text (cycling through a list), streamed word by word."""

    def __init__(
        self,
        replies: str | Sequence[str] = "Hello! I am a test avatar.",
        *,
        delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__(delay)
        self.replies = [replies] if isinstance(replies, str) else list(replies)
        self.token_delay = token_delay
        self._i = 0

    @property
    def capabilities(self) -> ChatCapabilities:
        """Streams; offline."""
        return ChatCapabilities(streaming=True, offline=True)

    def _next(self, messages: Sequence[ChatMessage]) -> str:
        self.calls.append(list(messages))
        reply = self.replies[self._i % len(self.replies)]
        self._i += 1
        return reply

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the next reply."""
        reply = self._next(messages)
        await self._wait()
        return reply

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the next reply word by word (spaces kept)."""
        reply = self._next(messages)
        await self._wait()
        for piece in re.findall(r"\S+\s*", reply):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield piece


class FunctionChatModel(FakeChatModel):
    """A chat model whose reply a test function decides: ``fn(messages) -> str``."""

    def __init__(
        self, fn: Callable[[Sequence[ChatMessage]], str | Awaitable[str]], *, delay: float = 0.0
    ) -> None:
        super().__init__("", delay=delay)
        self.fn = fn

    async def _call(self, messages: Sequence[ChatMessage]) -> str:
        self.calls.append(list(messages))
        await self._wait()
        out = self.fn(messages)
        return await out if isinstance(out, Awaitable) else out

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return ``fn(messages)``."""
        return await self._call(messages)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield ``fn(messages)`` word by word."""
        for piece in re.findall(r"\S+\s*", await self._call(messages)):
            yield piece


def fake_speech(
    text: str, *, sample_rate: int = 16_000, word_seconds: float = 0.32, gap: float = 0.08
) -> VoiceOutput:
    """A real WAV of tones, one per word, with synthetic word and phoneme timings.

    Each word is a 220 Hz tone (louder on vowels) lasting ``word_seconds``; words are separated
    by ``gap`` seconds of silence; letters become pseudo-IPA phonemes spread over the word.
    """
    matches = list(_WORD_RE.finditer(text))
    if not matches:
        raise InputValidationError("nothing to speak: the text is empty", field="text")
    words: list[WordTiming] = []
    phonemes: list[PhonemeTiming] = []
    chunks: list[np.ndarray] = [np.zeros(int(gap * sample_rate), np.float32)]
    t = gap
    for wi, m in enumerate(matches):
        letters = [c for c in m.group().lower() if c.isalpha()] or ["a"]
        n = int(word_seconds * sample_rate)
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sample_rate).astype(np.float32)
        per = word_seconds / len(letters)
        env = np.ones(n, np.float32)
        for li, c in enumerate(letters):
            ph = _LETTER_PHONEME.get(c, c)
            start = t + li * per
            phonemes.append(PhonemeTiming(phoneme=ph, start=start, end=start + per, word_index=wi))
            if ph not in "aeiou":
                a, b = int(li * per * sample_rate), int((li + 1) * per * sample_rate)
                env[a:b] = 0.35 if ph not in ("p", "b", "m") else 0.0
        chunks += [tone * env, np.zeros(int(gap * sample_rate), np.float32)]
        words.append(
            WordTiming(
                text=m.group(),
                start=t,
                end=t + word_seconds,
                char_start=m.start(),
                char_end=m.end(),
            )
        )
        t += word_seconds + gap
    samples = np.concatenate(chunks)
    return VoiceOutput(
        audio=encode_wav(samples, sample_rate),
        format="wav",
        sample_rate=sample_rate,
        duration=len(samples) / sample_rate,
        text=text,
        words=words,
        phonemes=phonemes,
        voice="test:tone",
    )


class FakeVoice(_Recorder):
    """Speaks any text as a tone WAV with synthetic word and phoneme timings (see fake_speech)."""

    def __init__(self, *, delay: float = 0.0, sample_rate: int = 16_000) -> None:
        super().__init__(delay)
        self.sample_rate = sample_rate

    @property
    def capabilities(self) -> VoiceCapabilities:
        """Word and phoneme timings; WAV; offline."""
        return VoiceCapabilities(
            word_timings=True, phoneme_timings=True, formats=("wav",), offline=True
        )

    async def synthesize(self, text: str) -> VoiceOutput:
        """Return the tone speech for ``text``."""
        self.calls.append(text)
        await self._wait()
        return fake_speech(text, sample_rate=self.sample_rate)


class FunctionVoice(FakeVoice):
    """A voice whose output a test function decides: ``fn(text) -> VoiceOutput``."""

    def __init__(self, fn: Callable[[str], VoiceOutput], *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.fn = fn

    async def synthesize(self, text: str) -> VoiceOutput:
        """Return ``fn(text)``."""
        self.calls.append(text)
        await self._wait()
        return self.fn(text)


class FakeImageGenerator(_Recorder):
    """A flat-colour portrait placeholder whose colour follows the seed."""

    def __init__(self, *, kind: str = "photo", delay: float = 0.0) -> None:
        super().__init__(delay)
        self.kind = kind

    @property
    def capabilities(self) -> ImageCapabilities:
        """Its ``kind`` of picture; seeded, offline."""
        return ImageCapabilities(
            kinds=(self.kind,),
            seed=True,
            negative_prompt=True,
            offline=True,
        )

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """Return a PNG of ``prompt.width`` × ``prompt.height``."""
        self.calls.append(prompt)
        await self._wait()
        seed = prompt.seed if prompt.seed is not None else 0
        rng = np.random.default_rng(seed)
        color = tuple(int(c) for c in rng.integers(40, 215, size=3))
        img = Image.new("RGB", (prompt.width, prompt.height), color)
        ImageDraw.Draw(img).ellipse(
            [prompt.width * 0.3, prompt.height * 0.2, prompt.width * 0.7, prompt.height * 0.75],
            fill=(224, 189, 160),
        )
        buf = io.BytesIO()
        img.save(buf, "PNG")
        if progress:
            progress(1, 1)
        return AvatarImage(
            data=buf.getvalue(),
            width=prompt.width,
            height=prompt.height,
            kind="photo",
            provenance={"backend": "test", "prompt": prompt.prompt, "seed": seed},
        )


class FakeRenderer(_Recorder):
    """Renders numbered frames (frame number and current viseme drawn) as an animated GIF."""

    def __init__(self, *, fps: int = 10, size: int = 64, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.fps = fps
        self.size = size

    @property
    def capabilities(self) -> RendererCapabilities:
        """Any image kind; GIF; offline."""
        return RendererCapabilities(
            image_kinds=("procedural", "photo"), formats=("gif",), offline=True
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
        """Write one numbered frame per 1/fps of the audio to a GIF."""
        self.calls.append((image, voice, timeline))
        await self._wait()
        n = max(1, round(voice.duration * self.fps))
        frames = []
        for i in range(n):
            frame = Image.new("RGB", (self.size, self.size), (20, 20, 20))
            draw = ImageDraw.Draw(frame)
            draw.text((4, 4), str(i), fill=(255, 255, 255))
            draw.text((4, 30), timeline.viseme_at(i / self.fps), fill=(255, 200, 0))
            frames.append(frame)
            if progress:
                progress(i + 1, n)
        from avatarkit._files import TEMP_VIDEO_PREFIX, write_atomic

        if output is None:  # a temporary folder of its own, as the local renderer makes
            output = Path(tempfile.mkdtemp(prefix=TEMP_VIDEO_PREFIX)) / "video.gif"

        write_atomic(
            output,
            lambda fh: frames[0].save(
                fh,
                "GIF",
                save_all=True,
                append_images=frames[1:],
                duration=int(1000 / self.fps),
                loop=0,
            ),
        )
        return AvatarVideo(
            path=output,
            format="gif",
            width=self.size,
            height=self.size,
            fps=self.fps,
            frame_count=n,
            duration=n / self.fps,
            has_audio=False,
            renderer="test",
        )


class FakeExpressionPolicy(_Recorder):
    """One keyframe at the start: the sentiment's emotion (neutral without one)."""

    async def plan(
        self,
        reply: DialogueResponse,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
    ) -> list[FacialExpression]:
        """Return one keyframe anchored at character 0."""
        self.calls.append(reply.text)
        await self._wait()
        emotion = sentiment.emotion if sentiment else Emotion.NEUTRAL
        return [FacialExpression(char_offset=0, emotion=emotion, intensity=0.6)]


# --------------------------------------------------------------------------- contract checks


async def check_voice(voice: Any, text: str = "Hello there, my friend.") -> VoiceOutput:
    """Synthesise ``text`` and assert that ``voice.capabilities`` tell the truth.

    Raises:
        AssertionError: a declared capability does not hold, or timings are inconsistent.
    """
    caps: VoiceCapabilities = voice.capabilities
    if caps.streaming:
        assert isinstance(voice, StreamingSpeechSynthesizer), (
            "declares streaming but has no stream()"
        )
    out: VoiceOutput = await voice.synthesize(text)
    assert out.format in caps.formats, f"format {out.format!r} not in declared {caps.formats}"
    if out.format in ("wav", "mp3", "flac", "ogg", "pcm_s16le"):
        samples, rate = decode_audio(out.audio, out.format, sample_rate=out.sample_rate)
        actual = len(samples) / rate
        assert abs(actual - out.duration) < 0.05, f"duration {out.duration} != audio {actual:.3f}"
    if caps.word_timings:
        assert out.words, "declares word_timings but returned none"
        for w in out.words:
            if w.char_start >= 0:
                assert text[w.char_start : w.char_end] == w.text, f"word {w.text!r} misplaced"
    else:
        assert not out.words, "returned word timings without declaring word_timings"
    if caps.phoneme_timings:
        assert out.phonemes, "declares phoneme_timings but returned none"
    timeline = Timeline(duration=out.duration, words=out.words, phonemes=out.phonemes)
    problems = timeline.problems()
    assert not problems, "; ".join(problems)
    return out


async def check_chat(chat: Any) -> str:
    """Assert that ``complete`` works and, if declared, that ``stream`` yields text deltas."""
    messages = [ChatMessage(role="user", content="Say hello.")]
    full: str = await chat.complete(messages)
    assert isinstance(full, str) and full.strip(), "complete() returned no text"
    if chat.capabilities.streaming:
        parts = [p async for p in chat.stream(messages)]
        assert parts and all(isinstance(p, str) for p in parts), "stream() yielded no text"
    return full


async def check_renderer(renderer: Any, image: AvatarImage, voice: VoiceOutput) -> AvatarVideo:
    """Render a clip and assert it matches the declared formats and the audio's length."""
    caps: RendererCapabilities = renderer.capabilities
    assert image.kind in caps.image_kinds, f"image kind {image.kind!r} not accepted"
    timeline = Timeline(duration=voice.duration, words=voice.words, phonemes=voice.phonemes)
    video: AvatarVideo = await renderer.render(image, voice, timeline)
    assert video.format in caps.formats, f"format {video.format!r} not in {caps.formats}"
    assert video.path.exists() and video.path.stat().st_size > 0, "no video file written"
    assert abs(video.duration - voice.duration) <= 1.5 / video.fps + 0.05, (
        "video/audio length differ"
    )
    return video


# --------------------------------------------------------------------------- request guard


@contextlib.contextmanager
def block_provider_requests() -> Iterator[None]:
    """Refuse every network connection except to loopback addresses while active.

    A test wrapped in it fails loudly (ConfigurationError) instead of calling a real service.
    """
    original = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host in ("localhost",) or not isinstance(address, tuple)
        if not loopback:
            raise ConfigurationError(
                f"network request to {host!r} blocked by avatarkit.testing.block_provider_requests"
            )
        return original(self, address)

    socket.socket.connect = guarded  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def _fake(cls: Callable[..., Any]) -> Callable[..., Any]:
    def factory(name: str | None = None, **options: Any) -> Any:
        return cls(**options)

    return factory


provider = Provider(
    "test",
    preprocessor=_fake(FakePreprocessor),
    intent=_fake(FakeIntentClassifier),
    sentiment=_fake(FakeSentimentAnalyzer),
    chat=lambda name=None, **kw: FakeChatModel(name or "Hello! I am a test avatar.", **kw),
    voice=_fake(FakeVoice),
    image=_fake(FakeImageGenerator),
    renderer=_fake(FakeRenderer),
    expression=_fake(FakeExpressionPolicy),
    description="Deterministic fakes for tests (avatarkit.testing)",
    offline=True,
)
"""The ``test`` provider: every role, deterministic, offline."""
