"""Streaming turns: typed events as each appears, sentences voiced while later ones are written.

``AvatarBot.stream(text)`` returns a :class:`ReplyStream`. The chat model's deltas go through a
sentence splitter; each finished sentence is sent to the voice at once (while the model keeps
writing), then lip-synced, animated and, when asked, rendered — always delivered in spoken order.
Interrupting stops every stage and records in the dialogue state only what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import tempfile
import time
import wave
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from avatarkit._aio import cancel_requested, cancelled_elsewhere, concurrently
from avatarkit._files import write_bytes_atomic
from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import InputValidationError, OverloadedError, StageError
from avatarkit.metrics import fill_metrics, turn_counter
from avatarkit.ports import check_result, unwrap
from avatarkit.types import (
    AvatarImage,
    AvatarPose,
    AvatarVideo,
    DialogueResponse,
    Emotion,
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
    "IdleClip",
    "ReplyStream",
    "SentenceReady",
    "StreamEvent",
    "TextDelta",
    "TurnComplete",
    "VideoSegment",
    "carry_expression",
    "join_segments",
    "pad_to_frames",
    "settle_poses",
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


class IdleClip(_Event):
    """A short loop of the avatar at rest (breathing, one blink, mouth closed), once per stream.

    Show it, looping, whenever the next segment's video has not arrived yet: before the first
    VideoSegment and in any wait between two. It starts and ends at the rest pose, and so does
    every VideoSegment, so switching between them at a segment's start or end shows no jump.
    """

    kind: Literal["idle"] = "idle"
    video: AvatarVideo


class TurnComplete(_Event):
    """The whole reply: audio, timeline and video joined on one clock, plus per-stage metrics."""

    kind: Literal["final"] = "final"
    response: Response
    interrupted: bool = False


StreamEvent = Annotated[
    TextDelta
    | SentenceReady
    | AudioSegment
    | ExpressionChange
    | VideoSegment
    | IdleClip
    | TurnComplete,
    Field(discriminator="kind"),
]
"""Any event a ReplyStream yields (discriminated by ``kind`` in JSON)."""

_END = object()

SETTLE_SECONDS = 0.25
"""Each segment's head motion eases out of and back into the rest pose over this long."""

EDGE_SILENCE = 0.06
"""Least silence, in seconds, a streamed sentence keeps before its first and after its last word."""

INLINE_ANIMATION_SECONDS = 12.0
"""Local speech up to this long is animated on the event loop; the rest in a worker thread."""


def _quick_to_animate(voice: VoiceOutput) -> bool:
    """Whether lip sync and padding take about a millisecond: WAV or PCM with phoneme timings.

    Compressed audio must be decoded, and words without phonemes go through eSpeak's
    text-to-IPA: tens of milliseconds a sentence, too long for the event loop.
    """
    return (
        voice.duration <= INLINE_ANIMATION_SECONDS
        and voice.format in ("wav", "pcm_s16le")
        and bool(voice.phonemes)
    )


IDLE_SECONDS = 3.0
"""Length of the idle loop a stream offers players (see :class:`IdleClip`)."""


class ReplyStream:
    """The events of one streaming turn; iterate with ``async for`` (or use ``async with``).

    A turn that runs to its end is recorded in the dialogue state as the chat model wrote it,
    as ``AvatarBot.respond()`` records it. Call :meth:`interrupt` to stop mid-reply: every
    stage is cancelled and the dialogue state records only the words delivered (all of them,
    or those that finished playing before ``played`` seconds when the caller says how far
    playback got).
    """

    def __init__(
        self,
        bot: AvatarBot,
        user: UserInput,
        *,
        render: bool,
        output_dir: Path | None,
        join_video: bool = True,
    ) -> None:
        self._bot = bot
        self._join_video = join_video
        # A stream's sentences take no more of a limited voice than its limit lets run at
        # once, so the stream never fills the voice's waiting line with its own calls.
        voice_limit = bot._limits.get("voice")
        self._voice_gate: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Semaphore(voice_limit.limit) if voice_limit else contextlib.nullcontext()
        )
        self.response = Response(input=user)
        self._render = render
        self._dir = output_dir
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[Response] | None = None  # interrupt() after a cancel
        self._t0 = time.perf_counter()
        self._delivered: list[AudioSegment] = []
        self._segments: list[AudioSegment] = []
        self._videos: list[VideoSegment] = []
        self._finished = False
        self._interrupted = False
        self._recorded = False
        self._counter: Counter[str] = Counter()
        self._background: list[asyncio.Task[Any]] = []
        self._fps: float | None = None
        if render and bot.renderer is not None:
            fps = getattr(bot.renderer, "fps", None)
            self._fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else None

    # ---------------------------------------------------------------- iteration

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Any:
        if self._finished and self._queue.empty():
            raise StopAsyncIteration
        if self._task is None:
            self._start()
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            # The consumer was cancelled (a client went away, a timeout): nobody will take
            # the rest, so stop the turn and keep only what was delivered, as interrupt() does.
            if not self._finished:
                self._stopper = asyncio.get_running_loop().create_task(self.interrupt())
            raise
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

    def _start(self) -> None:
        self._t0 = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._drive())

    async def interrupt(self, played: float | None = None) -> Response:
        """Stop the turn now and record in the dialogue state only what was delivered.

        Every stage (chat, voice, render) is cancelled before this returns. A consumer still
        iterating gets a final :class:`TurnComplete` with ``interrupted=True`` and then the
        end of the stream.

        Args:
            played: Seconds of the reply's audio the listener heard. Only the words that ended
                by then are recorded; without it, every sentence whose AudioSegment was
                delivered counts as heard.

        Returns:
            The Response of what was delivered (text, joined audio and timeline; no video).
        """
        if played is not None and played < 0:
            raise InputValidationError(f"played must be >= 0 seconds, got {played}", field="played")
        if self._finished or self._interrupted:  # ran to its end, or being stopped already
            stopper = self._stopper
            if stopper is not None and stopper is not asyncio.current_task():
                # Stopped when its consumer was cancelled: return once that stop has stored
                # the turn, and if the caller knows what was played, keep only that (a
                # server cancels its consumer, then interrupts).
                await asyncio.shield(stopper)
                if played is not None:
                    await self._keep_heard(played)
            return self.response
        # Not finished yet: a consumer iterating meanwhile must wait for the TurnComplete below
        # rather than see a finished stream with an empty queue and stop without it.
        self._interrupted = True
        started = self._task is not None
        await self._cancel_all()
        text = self._delivered_text(played)
        if started:
            await self._record(text)
        response = self.response
        response.dialogue = DialogueResponse(
            text=text,
            intent=response.intent.top if response.intent else None,
            handled_by=response.dialogue.handled_by if response.dialogue else "",
        )
        if self._delivered:  # the speech the consumer got; segments made after it are dropped
            response.voice, response.timeline = _joined(self._delivered)
        response.video = None
        fill_metrics(response, self._counter, self._t0)
        while not self._queue.empty():  # undelivered events are dropped
            self._queue.get_nowait()
        self._finished = True
        if started:
            self._emit(TurnComplete(response=response, interrupted=True))
        self._queue.put_nowait(_END)
        return response

    aclose = interrupt

    async def _cancel_all(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---------------------------------------------------------------- the turn

    def _emit(self, event: _Event) -> None:
        event.at = time.perf_counter() - self._t0
        self._queue.put_nowait(event)

    def _mark(self, name: str) -> None:
        self.response.metrics.durations.setdefault(name, time.perf_counter() - self._t0)

    async def _drive(self) -> None:
        try:
            with self._bot._serving(), turn_counter() as counter:
                self._counter = counter
                try:
                    await self._run()
                finally:
                    fill_metrics(self.response, counter, self._t0)
        except asyncio.CancelledError as exc:
            if cancel_requested():  # interrupted: interrupt() tells the consumer
                raise
            await self._fail(cancelled_elsewhere(exc))  # or the consumer would wait forever
        except BaseException as exc:
            await self._fail(exc)

    async def _keep_heard(self, played: float) -> None:
        """Cut the recorded reply back to the words heard by ``played`` seconds."""
        text = self._delivered_text(played)
        response = self.response
        if response.dialogue is not None:
            response.dialogue.text = text
        if self._bot.dialogue is not None and self._recorded:
            await self._bot.dialogue.amend_last(response.input, text)

    async def _fail(self, exc: BaseException) -> None:
        """End the stream with ``exc``, delivered to the consumer, who re-raises it."""
        await self._cancel_background()
        if self._segments and self.response.voice is None:  # keep the speech delivered so far
            self.response.voice, self.response.timeline = _joined(self._segments)
        self._queue.put_nowait(exc)
        self._queue.put_nowait(_END)

    async def _cancel_background(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.append(task)
        return task

    async def _run(self) -> None:
        bot, response = self._bot, self.response
        image_task = bot._start_image_task(self._render)
        if image_task is not None:
            self._background.append(image_task)
        await bot._understand(response)
        sentences: asyncio.Queue[Any] = asyncio.Queue()
        to_render: asyncio.Queue[Any] = asyncio.Queue()
        await concurrently(
            self._write(sentences),
            self._speak(sentences, to_render),
            self._render_segments(to_render, image_task),
            self._idle(image_task),
        )
        await asyncio.to_thread(self._finish)  # ffmpeg joins the clips: off the event loop
        # Ran to its end: stored as respond() stores it, as written (code, markdown, tags);
        # only an interrupted turn keeps just the words spoken.
        reply = response.dialogue
        assert reply is not None  # set by _write
        await self._record(reply.raw_text or reply.text)
        fill_metrics(response, self._counter, self._t0)
        if self._interrupted:  # interrupt() reports the end
            return
        self._finished = True
        self._emit(TurnComplete(response=response))
        self._queue.put_nowait(_END)

    async def _write(self, sentences: asyncio.Queue[Any]) -> None:
        """Chat deltas → sentences, each sent to the voice the moment it is complete."""
        from avatarkit.animation.expression import strip_emotion_tags
        from avatarkit.dialogue.sentences import SentenceSplitter
        from avatarkit.dialogue.speakable import FencedCode, HtmlComments, speakable_with_offsets

        bot, response = self._bot, self.response
        assert bot.dialogue is not None
        user = response.input
        splitter = SentenceSplitter(user.language or "en")
        index = 0
        raw: list[str] = []
        code = FencedCode()  # a code block is not read out, nor cut into sentences
        comments = HtmlComments()  # nor is an HTML comment ("<!" is no sentence end)

        def start(sentence: str) -> SentenceReady | None:
            nonlocal index
            clean, tags = strip_emotion_tags(sentence)  # tags for the face
            offsets = [offset for offset, _ in tags]
            spoken, moved = speakable_with_offsets(clean, offsets, fenced_code=False)
            if not spoken:
                return None
            tags = [(offset, name) for offset, (_, name) in zip(moved, tags, strict=True)]
            task = self._spawn(self._voice_segment(spoken, tags))
            sentences.put_nowait((index, spoken, task))
            index += 1
            return SentenceReady(index=index - 1, text=spoken)

        chat = unwrap(bot.dialogue.chat)
        try:
            handled = await bot.dialogue.dispatch(user, response.intent)
            if handled is not None:
                deltas: AsyncIterator[str] = _one(handled[1])
            else:
                state = await bot.dialogue.load(user.session_id)
                messages = bot.dialogue.messages(
                    state, user.text, intent=response.intent, sentiment=response.sentiment
                )
                if bot.dialogue.chat.capabilities.streaming:
                    deltas = bot.dialogue.chat.stream(messages)
                else:  # a model that only answers whole: its reply is the one delta
                    whole = await bot.dialogue.chat.complete(messages)
                    deltas = _one(check_result("chat", "complete", chat, whole))
            async with _closing(deltas):  # a delta refused here must not leave the stream open
                async for delta in deltas:
                    check_result("chat", "stream", chat, delta)  # a manager's chat is unwrapped
                    if not raw:
                        self._mark("first_token")
                    raw.append(delta)
                    # The voice tasks are started before the events wake the consumer, so the
                    # voice request goes out first.
                    kept = comments.push(code.push(delta))
                    ready = [start(sentence) for sentence in splitter.push(kept)]
                    self._emit(TextDelta(text=delta))
                    for event in ready:
                        if event is not None:
                            self._emit(event)
            rest = comments.push(code.flush()) + comments.flush()
            for sentence in [*splitter.push(rest), *splitter.flush()]:
                if (event := start(sentence)) is not None:
                    self._emit(event)
        except Exception as exc:
            raise StageError("dialogue", exc, partial=response) from exc
        finally:
            sentences.put_nowait(None)
        response.dialogue = DialogueResponse(
            text="".join(raw),
            intent=response.intent.top if response.intent else None,
            handled_by=handled[0] if handled is not None else bot.dialogue.chat_name,
        )
        bot._make_speakable(response.dialogue)  # as respond() does

    async def _voice_segment(
        self, text: str, tags: list[tuple[int, str]]
    ) -> tuple[VoiceOutput, Timeline]:
        """Voice one sentence, then lip-sync and animate it (padded to whole video frames)."""
        bot, response = self._bot, self.response
        assert bot.voice is not None
        reply = DialogueResponse(text=text, emotion_tags=[t for _, t in tags])

        expression = bot.expression
        expressions: list[FacialExpression] = []
        try:
            async with self._voice_gate:
                if expression is None:  # one await less on the way to the first audio
                    voice = await bot.voice.synthesize(text)
                else:
                    voice, expressions = await asyncio.gather(
                        bot.voice.synthesize(text),
                        expression.plan(
                            reply, sentiment=response.sentiment, intent=response.intent
                        ),
                    )
        except OverloadedError:
            raise  # not a stage failure: the caller should retry later (503)
        except Exception as exc:
            raise StageError("voice", exc, partial=response) from exc
        try:
            if _quick_to_animate(voice):
                # About 1.5 ms of CPU for a sentence: less than a worker thread's wake-up
                # costs on a busy machine, and this is on the path to the first audio.
                return self._animate(voice, expressions, reply)
            return await asyncio.to_thread(self._animate, voice, expressions, reply)
        except Exception as exc:
            raise StageError("animate", exc, partial=response) from exc

    def _animate(
        self, voice: VoiceOutput, expressions: list[FacialExpression], reply: DialogueResponse
    ) -> tuple[VoiceOutput, Timeline]:
        voice = pad_to_frames(voice, self._fps)
        timeline = self._bot._animate(voice, expressions, reply)
        poses = settle_poses(timeline.poses, timeline.duration)
        return voice, timeline.model_copy(update={"poses": poses})

    async def _speak(self, sentences: asyncio.Queue[Any], to_render: asyncio.Queue[Any]) -> None:
        """Deliver each sentence's audio in spoken order as soon as it is ready."""
        offset = 0.0
        previous: Timeline | None = None
        shown: tuple[Emotion, float] | None = None
        try:
            while (item := await sentences.get()) is not None:
                index, text, task = item
                voice, timeline = await task
                own = timeline.expressions
                timeline = carry_expression(previous, timeline)
                if not self._segments:
                    self._mark("first_audio")
                segment = AudioSegment(
                    index=index, text=text, offset=offset, voice=voice, timeline=timeline
                )
                self._segments.append(segment)
                self._emit(segment)
                for e in own:
                    if shown == (e.emotion, e.intensity):
                        continue
                    shown = (e.emotion, e.intensity)
                    self._emit(
                        ExpressionChange(expression=e.model_copy(update={"time": e.time + offset}))
                    )
                to_render.put_nowait(segment)
                offset += voice.duration
                previous = timeline
        finally:
            to_render.put_nowait(None)
            while not sentences.empty():  # cancel voice work nobody will hear
                item = sentences.get_nowait()
                if item is not None:
                    item[2].cancel()

    async def _image(self, image_task: asyncio.Task[Any] | None) -> AvatarImage:
        bot, response = self._bot, self.response
        if response.image is None:
            image = await (image_task or bot.avatar_image())
            bot._refuse_unanimatable(image)  # as respond() does
            response.image = image
        return response.image

    async def _render_segments(
        self, to_render: asyncio.Queue[Any], image_task: asyncio.Task[Any] | None
    ) -> None:
        bot, response = self._bot, self.response
        if not self._render or bot.renderer is None:
            while await to_render.get() is not None:
                pass
            return
        folder = self._folder()
        while (segment := await to_render.get()) is not None:
            try:
                image = await self._image(image_task)
                video = await bot.renderer.render(
                    image,
                    segment.voice,
                    segment.timeline,
                    output=folder / f"segment-{segment.index:03d}.{self._video_format()}",
                )
            except OverloadedError:
                raise
            except Exception as exc:
                raise StageError("render", exc, partial=response) from exc
            if not self._videos:
                self._mark("first_video")
            event = VideoSegment(index=segment.index, offset=segment.offset, video=video)
            self._videos.append(event)
            self._emit(event)

    async def _idle(self, image_task: asyncio.Task[Any] | None) -> None:
        """Render (or reuse) the idle loop and offer it once, for players to fill waits."""
        bot = self._bot
        idle = getattr(bot.renderer, "idle", None)
        if not self._render or bot.renderer is None or not callable(idle):
            return
        try:
            image = await self._image(image_task)
            video = await idle(
                image, IDLE_SECONDS, output=self._folder() / f"idle.{self._video_format()}"
            )
        except OverloadedError:
            raise
        except Exception as exc:
            raise StageError("render", exc, partial=self.response) from exc
        self._emit(IdleClip(video=video))

    def _folder(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="avatarkit-stream-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        return self._dir

    def _video_format(self) -> str:
        renderer = self._bot.renderer
        fmt = getattr(renderer, "format", None)
        if isinstance(fmt, str):
            return fmt
        formats = renderer.capabilities.formats if renderer is not None else ()
        return formats[0] if formats else "mp4"

    def _finish(self) -> None:
        """Join the segments into the Response: one audio, one timeline, one clip."""
        response = self.response
        if not self._segments:
            return
        response.voice, response.timeline = _joined(self._segments)
        if not self._videos or not self._join_video:
            return
        first = self._videos[0].video
        if len(self._videos) == 1:
            response.video = first
        elif first.format in ("mp4", "webm"):
            from avatarkit.render.encode import concat_videos

            out = self._folder() / f"video.{first.format}"
            soundtrack = self._folder() / "speech.wav"
            write_bytes_atomic(soundtrack, response.voice.audio)
            response.video = concat_videos([v.video for v in self._videos], out, audio=soundtrack)
        # Other formats (GIF, PNG frames) are not joined: each segment is in its VideoSegment.

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
        # Shielded: an interrupt arriving while the turn is being stored must not lose it.
        await asyncio.shield(
            self._bot.dialogue.record(
                response.input, text, intent=response.intent, sentiment=response.sentiment
            )
        )


_WORDS: TypeAdapter[list[WordTiming]] = TypeAdapter(list[WordTiming])
_PHONEMES: TypeAdapter[list[PhonemeTiming]] = TypeAdapter(list[PhonemeTiming])
_VISEMES: TypeAdapter[list[VisemeCue]] = TypeAdapter(list[VisemeCue])
_EXPRESSIONS: TypeAdapter[list[FacialExpression]] = TypeAdapter(list[FacialExpression])
_POSES: TypeAdapter[list[AvatarPose]] = TypeAdapter(list[AvatarPose])


def pad_to_frames(
    voice: VoiceOutput, fps: float | None = None, *, edge: float = EDGE_SILENCE
) -> VoiceOutput:
    """Give a sentence's speech a little silence at each end and a whole number of frames.

    At least ``edge`` seconds of silence before the first word and after the last one let the
    mouth close at the end of a sentence and open again at the next, as in natural speech (a
    voice reading the whole reply pauses longer at a full stop; per-sentence synthesis trims
    it). With ``fps``, the end is then padded (by less than one frame) so the segment lasts a
    whole number of video frames: segments then join into one clip whose sound and picture
    stay aligned at every joint. Word, phoneme and mark times are shifted to match.
    """
    lead = tail = 0.0
    if voice.words:
        lead = max(0.0, edge - min(w.start for w in voice.words))
        tail = max(0.0, edge - (voice.duration - max(w.end for w in voice.words)))
    if not fps and lead == tail == 0.0:
        return voice  # nothing to add: leave the audio as the voice made it
    samples, rate = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
    if voice.words:
        tail = max(0.0, edge - (len(samples) / rate - max(w.end for w in voice.words)))
    n_lead = round(lead * rate)
    total = n_lead + len(samples) + round(tail * rate)
    if fps:
        frames = math.ceil(total * fps / rate - 1e-6)
        total = max(total, round(frames * rate / fps))
    if total == len(samples) and voice.format == "wav":
        return voice
    padded = np.zeros(total, np.float32)
    padded[n_lead : n_lead + len(samples)] = samples
    shift = n_lead / rate
    return voice.model_copy(
        update={
            "audio": encode_wav(padded, rate),
            "format": "wav",
            "sample_rate": rate,
            "channels": 1,
            "duration": total / rate,
            "words": [
                w.model_copy(update={"start": w.start + shift, "end": w.end + shift})
                for w in voice.words
            ],
            "phonemes": [
                p.model_copy(update={"start": p.start + shift, "end": p.end + shift})
                for p in voice.phonemes
            ],
            "marks": [(name, t + shift) for name, t in voice.marks],
        }
    )


def settle_poses(
    poses: list[AvatarPose], duration: float, window: float = SETTLE_SECONDS
) -> list[AvatarPose]:
    """Ease head and gaze motion out of and back into the rest pose at a segment's ends.

    Every segment then starts and ends at rest (head straight, eyes on the camera and open),
    as the idle loop does, so consecutive segments and idle frames join with no jump.
    """
    if duration <= 0 or not poses:
        return poses
    w = max(1e-3, min(window, duration / 2))

    def envelope(t: float) -> float:
        x = min(1.0, max(0.0, t / w), max(0.0, (duration - t) / w))
        return x * x * (3.0 - 2.0 * x)

    scaled = []
    for p in poses:
        k = envelope(p.time)
        scaled.append(
            {
                "time": p.time,
                "yaw": p.yaw * k,
                "pitch": p.pitch * k,
                "roll": p.roll * k,
                "gaze_x": p.gaze_x * k,
                "gaze_y": p.gaze_y * k,
                "blink": p.blink if 0.0 < p.time < duration else 0.0,
            }
        )
    out = _POSES.validate_python(scaled)
    if out[0].time > 0:
        out.insert(0, AvatarPose(time=0.0))
    if out[-1].time < duration:
        out.append(AvatarPose(time=duration))
    return out


def carry_expression(previous: Timeline | None, timeline: Timeline) -> Timeline:
    """Start ``timeline`` with the expression ``previous`` ended on, so faces do not reset.

    Without it each sentence would begin from a neutral face and ease in again.
    """
    if previous is None or not previous.expressions:
        return timeline
    from avatarkit.animation.sampler import TimelineSampler

    only = Timeline(duration=previous.duration, expressions=previous.expressions)
    weights = TimelineSampler(only).emotion_weights([previous.duration])[0]
    k = int(np.argmax(weights))
    if weights[k] <= 1e-3:
        return timeline
    carry = FacialExpression(
        time=0.0, emotion=list(Emotion)[k], intensity=float(min(1.0, weights[k])), transition=0.0
    )
    return timeline.model_copy(update={"expressions": [carry, *timeline.expressions]})


def _joined(segments: list[AudioSegment]) -> tuple[VoiceOutput, Timeline]:
    """The segments' speech as one voice and one timeline (:func:`join_segments`)."""
    return join_segments([(s.voice, s.timeline) for s in segments])


async def _one(text: str) -> AsyncIterator[str]:
    yield text


@contextlib.asynccontextmanager
async def _closing(items: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Close ``items`` (an async generator's ``aclose()``, if it has one) when the block ends."""
    try:
        yield
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


def join_segments(parts: list[tuple[VoiceOutput, Timeline]]) -> tuple[VoiceOutput, Timeline]:
    """Concatenate sentence segments into one VoiceOutput and one Timeline on a single clock.

    The audio is laid end to end sample by sample; every time is shifted by the length of the
    audio before it, and word character offsets by the text before it (sentences joined by one
    space).
    """
    if not parts:
        raise InputValidationError("no segments to join", field="parts")
    rate = parts[0][0].sample_rate
    audio: list[bytes] = []
    text_parts: list[str] = []
    # Shifted copies are built as plain dicts and validated in bulk: about three times faster
    # than model_copy per item, and a reply has hundreds of cues.
    words: list[dict[str, Any]] = []
    phonemes: list[dict[str, Any]] = []
    visemes: list[dict[str, Any]] = []
    expressions: list[dict[str, Any]] = []
    poses: list[dict[str, Any]] = []
    offset, chars = 0.0, 0
    for voice, tl in parts:
        pcm = _pcm16(voice, rate)
        audio.append(pcm)
        n_words = len(words)
        for w in voice.words:
            known = w.char_start >= 0 and w.char_end >= 0
            words.append(
                {
                    **w.__dict__,
                    "start": w.start + offset,
                    "end": w.end + offset,
                    "char_start": w.char_start + chars if known else -1,
                    "char_end": w.char_end + chars if known else -1,
                }
            )
        for p in tl.phonemes:
            idx = p.word_index + n_words if p.word_index is not None else None
            phonemes.append(
                {**p.__dict__, "start": p.start + offset, "end": p.end + offset, "word_index": idx}
            )
        visemes += [
            {**v.__dict__, "start": v.start + offset, "end": v.end + offset} for v in tl.visemes
        ]
        expressions += [{**e.__dict__, "time": e.time + offset} for e in tl.expressions]
        poses += [{**p.__dict__, "time": p.time + offset} for p in tl.poses]
        text_parts.append(voice.text)
        chars += len(voice.text) + 1
        offset += len(pcm) // 2 / rate
    joined = b"".join(audio)
    n_samples = len(joined) // 2
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(joined)
    text = " ".join(text_parts)
    word_models = _WORDS.validate_python(words)
    phoneme_models = _PHONEMES.validate_python(phonemes)
    voice = VoiceOutput(
        audio=buf.getvalue(),
        format="wav",
        sample_rate=rate,
        duration=n_samples / rate,
        text=text,
        words=word_models,
        phonemes=phoneme_models,
        voice=parts[0][0].voice,
    )
    sources = {tl.viseme_source for _, tl in parts}
    timeline = Timeline(
        text=text,
        duration=voice.duration,
        words=word_models,
        phonemes=phoneme_models,
        visemes=_VISEMES.validate_python(visemes),
        viseme_source=sources.pop() if len(sources) == 1 else parts[0][1].viseme_source,
        expressions=_EXPRESSIONS.validate_python(expressions),
        poses=_POSES.validate_python(poses),
    )
    return voice, timeline


def _pcm16(voice: VoiceOutput, rate: int) -> bytes:
    """The voice's audio as mono 16-bit PCM at ``rate`` (copied straight from plain WAV)."""
    if voice.format == "wav":
        try:
            with wave.open(io.BytesIO(voice.audio), "rb") as wav:
                if (wav.getsampwidth(), wav.getnchannels(), wav.getframerate()) == (2, 1, rate):
                    return wav.readframes(wav.getnframes())
        except (wave.Error, EOFError):
            pass  # not plain PCM WAV: decode it below
    samples, r = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
    if r != rate:
        from avatarkit.audio import resample

        samples = resample(samples, r, rate)
    ints = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return ints.tobytes()
