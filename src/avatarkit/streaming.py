"""Streaming turns: typed events as each appears, sentences voiced while later ones are written.

``AvatarBot.stream(text)`` returns a :class:`ReplyStream`. The chat model's deltas go through a
sentence splitter; each finished sentence is sent to the voice at once (while the model keeps
writing), then lip-synced, animated and, when asked, rendered — always delivered in spoken order.
Interrupting stops every stage and records in the dialogue state only what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avatarkit._aio import concurrently
from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import ConfigurationError, StageError
from avatarkit.metrics import fill_metrics, turn_counter
from avatarkit.types import (
    AvatarVideo,
    DialogueResponse,
    FacialExpression,
    PhonemeTiming,
    Response,
    Timeline,
    UserInput,
    VisemeCue,
    VoiceOutput,
    WordTiming,
)

if TYPE_CHECKING:
    from avatarkit.bot import AvatarBot

__all__ = [
    "AudioSegment",
    "ExpressionChange",
    "ReplyStream",
    "SentenceReady",
    "StreamEvent",
    "TextDelta",
    "TurnComplete",
    "VideoSegment",
]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    at: float = 0.0
    """Seconds since the turn started when the event was produced."""


class TextDelta(_Event):
    """A piece of the reply text as the chat model wrote it (emotion tags included)."""

    kind: Literal["text"] = "text"
    text: str


class SentenceReady(_Event):
    """A sentence is complete and on its way to the voice."""

    kind: Literal["sentence"] = "sentence"
    index: int
    text: str
    """The sentence as it will be spoken (emotion tags removed)."""


class AudioSegment(_Event):
    """One sentence's speech with its timeline, placed on the reply's clock at ``offset``."""

    kind: Literal["audio"] = "audio"
    index: int
    text: str
    offset: float
    """Start of this segment on the reply's clock (the sum of earlier segments' durations)."""
    voice: VoiceOutput
    timeline: Timeline
    """The segment's timeline, on the segment's own clock (0 = its first sample)."""


class ExpressionChange(_Event):
    """The face changes expression (time on the reply's clock)."""

    kind: Literal["expression"] = "expression"
    expression: FacialExpression


class VideoSegment(_Event):
    """One sentence's rendered clip."""

    kind: Literal["video"] = "video"
    index: int
    offset: float
    video: AvatarVideo


class TurnComplete(_Event):
    """The whole reply: audio, timeline and video joined on one clock, plus per-stage metrics."""

    kind: Literal["final"] = "final"
    response: Response
    interrupted: bool = False


StreamEvent = Annotated[
    TextDelta | SentenceReady | AudioSegment | ExpressionChange | VideoSegment | TurnComplete,
    Field(discriminator="kind"),
]
"""Any event a ReplyStream yields (discriminated by ``kind`` in JSON)."""

_END = object()


class ReplyStream:
    """The events of one streaming turn; iterate with ``async for`` (or use ``async with``).

    Call :meth:`interrupt` to stop mid-reply: every stage is cancelled and the dialogue state
    records only the words delivered (all of them, or those that finished playing before
    ``played`` seconds when the caller says how far playback got).
    """

    def __init__(
        self, bot: AvatarBot, user: UserInput, *, render: bool, output_dir: Path | None
    ) -> None:
        self._bot = bot
        self.response = Response(input=user)
        self._render = render
        self._dir = output_dir
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.perf_counter()
        self._delivered: list[AudioSegment] = []
        self._segments: list[AudioSegment] = []
        self._videos: list[VideoSegment] = []
        self._finished = False
        self._recorded = False
        self._counter: Counter[str] = Counter()

    # ---------------------------------------------------------------- iteration

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Any:
        if self._finished:
            raise StopAsyncIteration
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drive())
        item = await self._queue.get()
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if isinstance(item, AudioSegment):
            self._delivered.append(item)
        if isinstance(item, TurnComplete):
            self._finished = True
        return item

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._finished:
            await self.interrupt()

    async def interrupt(self, played: float | None = None) -> None:
        """Stop the turn now; record what was delivered (up to ``played`` seconds, if given)."""
        self._finished = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._record(self._delivered_text(played))

    aclose = interrupt

    # ---------------------------------------------------------------- the turn

    def _emit(self, event: _Event) -> None:
        event.at = time.perf_counter() - self._t0
        self._queue.put_nowait(event)

    def _mark(self, name: str) -> None:
        self.response.metrics.durations.setdefault(name, time.perf_counter() - self._t0)

    async def _drive(self) -> None:
        try:
            with turn_counter() as counter:
                self._counter = counter
                try:
                    await self._run()
                finally:
                    fill_metrics(self.response, counter, self._t0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # delivered to the consumer, who re-raises it
            self._queue.put_nowait(exc)
            self._queue.put_nowait(_END)

    async def _run(self) -> None:
        bot, response = self._bot, self.response
        if bot.dialogue is None:
            raise ConfigurationError(
                "stream() needs a chat model; this bot was made with chat=None"
            )
        image_task = bot._start_image_task(self._render)
        await bot._understand(response)
        sentences: asyncio.Queue[Any] = asyncio.Queue()
        to_render: asyncio.Queue[Any] = asyncio.Queue()
        await concurrently(
            self._write(sentences),
            self._speak(sentences, to_render),
            self._render_segments(to_render, image_task),
        )
        self._finish()
        fill_metrics(response, self._counter, self._t0)
        self._emit(TurnComplete(response=response))
        self._queue.put_nowait(_END)
        await self._record(" ".join(s.text for s in self._segments))

    async def _write(self, sentences: asyncio.Queue[Any]) -> None:
        """Chat deltas → sentences, each sent to the voice the moment it is complete."""
        from avatarkit.animation.expression import strip_emotion_tags
        from avatarkit.dialogue.sentences import SentenceSplitter

        bot, response = self._bot, self.response
        assert bot.dialogue is not None
        user = response.input
        splitter = SentenceSplitter(user.language or "en")
        index = 0
        raw: list[str] = []

        def start(sentence: str) -> None:
            nonlocal index
            clean, tags = strip_emotion_tags(sentence)
            if not clean.strip():
                return
            self._emit(SentenceReady(index=index, text=clean))
            task = asyncio.get_running_loop().create_task(self._voice_segment(clean, tags))
            sentences.put_nowait((index, clean, task))
            index += 1

        try:
            handled = await bot.dialogue.handle(user, response.intent)
            if handled is not None:
                deltas: AsyncIterator[str] = _one(handled)
            else:
                state = await bot.dialogue.load(user.session_id)
                deltas = bot.dialogue.chat.stream(bot.dialogue.messages(state, user.text))
            async for delta in deltas:
                if not raw:
                    self._mark("first_token")
                raw.append(delta)
                self._emit(TextDelta(text=delta))
                for sentence in splitter.push(delta):
                    start(sentence)
            for sentence in splitter.flush():
                start(sentence)
        except Exception as exc:
            raise StageError("dialogue", exc, partial=response) from exc
        finally:
            sentences.put_nowait(None)
        full = "".join(raw)
        clean, tags = strip_emotion_tags(full)
        response.dialogue = DialogueResponse(
            text=clean.strip(),
            raw_text=full if tags else None,
            emotion_tags=[t for _, t in tags],
            intent=response.intent.top if response.intent else None,
            handled_by="handler" if handled is not None else type(bot.dialogue.chat).__name__,
        )

    async def _voice_segment(
        self, text: str, tags: list[tuple[int, str]]
    ) -> tuple[VoiceOutput, Timeline]:
        bot, response = self._bot, self.response
        assert bot.voice is not None
        reply = DialogueResponse(text=text, emotion_tags=[t for _, t in tags])
        expressions: list[FacialExpression] = []

        async def plan() -> list[FacialExpression]:
            if bot.expression is None:
                return []
            return await bot.expression.plan(
                reply, sentiment=response.sentiment, intent=response.intent
            )

        try:
            voice, expressions = await asyncio.gather(bot.voice.synthesize(text), plan())
        except Exception as exc:
            raise StageError("voice", exc, partial=response) from exc
        timeline = await asyncio.to_thread(bot._animate, voice, expressions, reply)
        return voice, timeline

    async def _speak(self, sentences: asyncio.Queue[Any], to_render: asyncio.Queue[Any]) -> None:
        """Deliver each sentence's audio in spoken order as soon as it is ready."""
        offset = 0.0
        try:
            while (item := await sentences.get()) is not None:
                index, text, task = item
                voice, timeline = await task
                if not self._segments:
                    self._mark("first_audio")
                segment = AudioSegment(
                    index=index, text=text, offset=offset, voice=voice, timeline=timeline
                )
                self._segments.append(segment)
                self._emit(segment)
                for e in timeline.expressions:
                    self._emit(
                        ExpressionChange(expression=e.model_copy(update={"time": e.time + offset}))
                    )
                to_render.put_nowait(segment)
                offset += voice.duration
        finally:
            to_render.put_nowait(None)
            while not sentences.empty():  # cancel voice work nobody will hear
                item = sentences.get_nowait()
                if item is not None:
                    item[2].cancel()

    async def _render_segments(
        self, to_render: asyncio.Queue[Any], image_task: asyncio.Task[Any] | None
    ) -> None:
        bot, response = self._bot, self.response
        if not self._render or bot.renderer is None:
            while await to_render.get() is not None:
                pass
            return
        folder = self._dir or Path(tempfile.mkdtemp(prefix="avatarkit-stream-"))
        while (segment := await to_render.get()) is not None:
            try:
                if response.image is None:
                    response.image = await (image_task or bot.avatar_image())
                video = await bot.renderer.render(
                    response.image,
                    segment.voice,
                    segment.timeline,
                    output=folder / f"segment-{segment.index:03d}.mp4",
                )
            except Exception as exc:
                raise StageError("render", exc, partial=response) from exc
            if not self._videos:
                self._mark("first_video")
            event = VideoSegment(index=segment.index, offset=segment.offset, video=video)
            self._videos.append(event)
            self._emit(event)

    def _finish(self) -> None:
        """Join the segments into the Response: one audio, one timeline, one clip."""
        response = self.response
        if not self._segments:
            return
        response.voice, response.timeline = join_segments(
            [(s.voice, s.timeline) for s in self._segments]
        )
        if self._videos:
            from avatarkit.render.encode import concat_videos

            first = self._videos[0].video
            out = first.path.with_name("video." + first.format)
            response.video = concat_videos([v.video for v in self._videos], out)

    def _delivered_text(self, played: float | None) -> str:
        words: list[str] = []
        for seg in self._delivered:
            if played is None:
                words.append(seg.text)
                continue
            heard = [w.text for w in seg.voice.words if seg.offset + w.end <= played + 1e-6]
            if heard:
                words.append(" ".join(heard))
            if seg.offset + seg.voice.duration > played:
                break
        return " ".join(words)

    async def _record(self, text: str) -> None:
        if self._recorded or self._bot.dialogue is None:
            return
        self._recorded = True
        response = self.response
        await self._bot.dialogue.record(
            response.input, text, intent=response.intent, sentiment=response.sentiment
        )


async def _one(text: str) -> AsyncIterator[str]:
    yield text


def join_segments(parts: list[tuple[VoiceOutput, Timeline]]) -> tuple[VoiceOutput, Timeline]:
    """Concatenate sentence segments into one VoiceOutput and one Timeline on a single clock."""
    rate = parts[0][0].sample_rate
    audio: list[np.ndarray] = []
    text_parts: list[str] = []
    words: list[WordTiming] = []
    phonemes: list[PhonemeTiming] = []
    visemes: list[VisemeCue] = []
    expressions: list[FacialExpression] = []
    poses = []
    offset, chars = 0.0, 0
    for voice, tl in parts:
        samples, r = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
        if r != rate:
            from avatarkit.audio import resample

            samples = resample(samples, r, rate)
        audio.append(samples)
        n_words = len(words)
        for w in voice.words:
            shift = chars if w.char_start >= 0 else 0
            words.append(
                w.model_copy(
                    update={
                        "start": w.start + offset,
                        "end": w.end + offset,
                        "char_start": w.char_start + shift if w.char_start >= 0 else -1,
                        "char_end": w.char_end + shift if w.char_end >= 0 else -1,
                    }
                )
            )
        for p in tl.phonemes:
            idx = p.word_index + n_words if p.word_index is not None else None
            phonemes.append(
                p.model_copy(
                    update={"start": p.start + offset, "end": p.end + offset, "word_index": idx}
                )
            )
        visemes += [
            v.model_copy(update={"start": v.start + offset, "end": v.end + offset})
            for v in tl.visemes
        ]
        expressions += [e.model_copy(update={"time": e.time + offset}) for e in tl.expressions]
        poses += [p.model_copy(update={"time": p.time + offset}) for p in tl.poses]
        text_parts.append(voice.text)
        chars += len(voice.text) + 1
        offset += len(samples) / rate
    joined = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    text = " ".join(text_parts)
    voice = VoiceOutput(
        audio=encode_wav(joined, rate),
        format="wav",
        sample_rate=rate,
        duration=len(joined) / rate,
        text=text,
        words=words,
        phonemes=phonemes,
        voice=parts[0][0].voice,
    )
    sources = {tl.viseme_source for _, tl in parts}
    timeline = Timeline(
        text=text,
        duration=voice.duration,
        words=words,
        phonemes=phonemes,
        visemes=visemes,
        viseme_source=sources.pop() if len(sources) == 1 else parts[0][1].viseme_source,
        expressions=expressions,
        poses=poses,
    )
    return voice, timeline
