"""Streaming turns: event order, overlap of writing and speaking, joining, interruption, errors."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter

from _loop import largest_loop_gap
from avatarkit import AvatarBot
from avatarkit.animation.sampler import TimelineSampler
from avatarkit.audio import decode_audio
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    InputValidationError,
    OverloadedError,
    ProviderError,
    StageError,
)
from avatarkit.ports import ChatCapabilities
from avatarkit.render.encode import ffmpeg_exe
from avatarkit.render.local import LocalRenderer, idle_timeline
from avatarkit.render.procedural import generate_procedural
from avatarkit.streaming import (
    AudioSegment,
    ExpressionChange,
    IdleClip,
    ReplyStream,
    SentenceReady,
    StreamEvent,
    TextDelta,
    TurnComplete,
    VideoSegment,
    join_segments,
    pad_to_frames,
    settle_poses,
)
from avatarkit.testing import (
    FakeChatModel,
    FakeImageGenerator,
    FakeIntentClassifier,
    FakePreprocessor,
    FakeRenderer,
    FakeVoice,
    FunctionVoice,
    check_chat,
    fake_speech,
)
from avatarkit.types import (
    AvatarPose,
    DialogueResponse,
    Emotion,
    FacialExpression,
    IntentPrediction,
    Sentiment,
    Timeline,
)

REPLY = "Hello there. I am a test avatar! How are you today?"
SENTENCES = ["Hello there.", "I am a test avatar!", "How are you today?"]


async def _cancelled_elsewhere() -> None:
    """A backend's await cancelled by someone else: its executor shut down with its work queued."""
    import concurrent.futures
    import threading

    pool = concurrent.futures.ThreadPoolExecutor(1)
    hold = threading.Event()
    pool.submit(hold.wait, 5)  # the only worker is busy, so the next call waits in the queue
    queued = asyncio.get_running_loop().run_in_executor(pool, int)
    pool.shutdown(wait=False, cancel_futures=True)
    hold.set()
    await queued  # raises CancelledError, though nobody cancelled this task


class CyclingExpression:
    """One keyframe per sentence, cycling through ``emotions`` (tests expression events)."""

    def __init__(self, emotions: Sequence[Emotion] = (Emotion.HAPPY, Emotion.SAD)) -> None:
        self.emotions = list(emotions)
        self.calls: list[str] = []

    async def plan(
        self,
        reply: DialogueResponse,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
    ) -> list[FacialExpression]:
        emotion = self.emotions[len(self.calls) % len(self.emotions)]
        self.calls.append(reply.text)
        return [FacialExpression(char_offset=0, emotion=emotion, intensity=0.7, transition=0.3)]


def make_bot(
    reply: str = REPLY,
    *,
    token_delay: float = 0.0,
    voice: Any = None,
    renderer: Any = None,
    expression: Any = None,
    **kw: Any,
) -> AvatarBot:
    kw.setdefault("image", FakeImageGenerator())
    return AvatarBot(
        chat=FakeChatModel(reply, token_delay=token_delay),
        voice=voice if voice is not None else FakeVoice(),
        renderer=renderer,
        preprocessor="test",
        intent="test",
        sentiment="test",
        expression=expression if expression is not None else CyclingExpression(),
        **kw,
    )


async def collect(stream: ReplyStream) -> list[Any]:
    return [event async for event in stream]


def of(kind: type, events: list[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def inner(backend: Any) -> Any:
    return getattr(backend, "inner", backend)


# --------------------------------------------------------------------------- order and overlap


async def test_events_come_in_spoken_order() -> None:
    bot = make_bot()
    events = await collect(bot.stream("hello"))
    assert isinstance(events[-1], TurnComplete) and not events[-1].interrupted
    assert "".join(e.text for e in of(TextDelta, events)) == REPLY
    assert [e.text for e in of(SentenceReady, events)] == SENTENCES
    audio = of(AudioSegment, events)
    assert [a.index for a in audio] == [0, 1, 2]
    assert [a.text for a in audio] == SENTENCES
    offset = 0.0
    for a in audio:
        assert a.offset == pytest.approx(offset)
        assert a.timeline.duration == pytest.approx(a.voice.duration)
        offset += a.voice.duration
        ready = next(i for i, e in enumerate(events) if isinstance(e, SentenceReady) and
                     e.index == a.index)  # fmt: skip
        assert ready < events.index(a)
    ats = [e.at for e in events]
    assert ats == sorted(ats)


async def test_sentences_are_voiced_while_the_model_is_still_writing() -> None:
    bot = make_bot(token_delay=0.03, voice=FakeVoice(delay=0.02))
    events = await collect(bot.stream("hello"))
    last_delta = of(TextDelta, events)[-1]
    first_audio = of(AudioSegment, events)[0]
    # the first sentence's speech arrived while the model still had words to write
    assert first_audio.at < last_delta.at
    assert events.index(first_audio) < events.index(last_delta)
    metrics = events[-1].response.metrics.durations
    assert metrics["first_token"] < metrics["first_audio"] < events[-1].response.metrics.total


async def test_expression_changes_are_timed_on_the_reply_clock() -> None:
    bot = make_bot(expression=CyclingExpression([Emotion.HAPPY, Emotion.SAD, Emotion.SAD]))
    events = await collect(bot.stream("hello"))
    audio = of(AudioSegment, events)
    changes = of(ExpressionChange, events)
    # happy, sad, sad: the third sentence keeps the face it has, so no event for it
    assert [c.expression.emotion for c in changes] == [Emotion.HAPPY, Emotion.SAD]
    for change, seg in zip(changes, audio[:2], strict=True):
        own = seg.timeline.expressions[-1]
        assert change.expression.time == pytest.approx(seg.offset + own.time)
        assert seg.offset <= change.expression.time < seg.offset + seg.voice.duration
        assert events.index(change) > events.index(seg)
    # a sentence starts from the face the last one ended with, not from neutral
    carried = audio[1].timeline.expressions[0]
    assert (carried.time, carried.emotion, carried.transition) == (0.0, Emotion.HAPPY, 0.0)
    assert carried.intensity == pytest.approx(0.7, abs=0.01)


async def test_final_response_joins_the_segments_on_one_clock() -> None:
    bot = make_bot()
    events = await collect(bot.stream("hello"))
    response = events[-1].response
    audio = of(AudioSegment, events)
    assert response.text == REPLY
    assert response.voice is not None and response.timeline is not None
    assert response.timeline.problems() == []
    assert [w.text for w in response.timeline.words] == REPLY.split()
    for w in response.voice.words:
        assert response.voice.text[w.char_start : w.char_end] == w.text
    joined, _ = decode_audio(response.voice.audio, "wav")
    parts = [decode_audio(a.voice.audio, "wav")[0] for a in audio]
    np.testing.assert_array_equal(joined, np.concatenate(parts))  # contiguous, sample-exact
    assert response.voice.duration == pytest.approx(sum(a.voice.duration for a in audio))
    # the segment's words land at offset + their own time
    second = audio[1]
    first_word = next(w for w in response.timeline.words if w.text == "I")
    assert first_word.start == pytest.approx(second.offset + second.voice.words[0].start)
    state = await bot.dialogue.load("default")  # type: ignore[union-attr]
    assert [t.assistant for t in state.turns] == [REPLY]


async def test_turn_is_recorded_before_the_final_event() -> None:
    bot = make_bot()
    async for event in bot.stream("hello"):
        if isinstance(event, TurnComplete):
            state = await bot.dialogue.load("default")  # type: ignore[union-attr]
            assert [t.assistant for t in state.turns] == [REPLY]


async def test_a_finished_turn_is_recorded_as_written_like_respond() -> None:
    # The voice says less than the model wrote (no code, no markdown, no emoji, no tags), but
    # a turn that ran to its end is stored as respond() stores it: what the model wrote, so a
    # page showing the conversation later (and the model's next context) still has the code.
    written = "[happy] Use this:\n```python\nprint('hi')\n```\nIt prints **hi** 🙂"
    streamed = make_bot(written)
    events = await collect(streamed.stream("how?"))
    spoken = " ".join(e.text for e in of(AudioSegment, events))
    assert spoken == "Use this: It prints hi"
    whole = make_bot(written)
    await whole.respond("how?")
    for bot in (streamed, whole):
        state = await bot.dialogue.load("default")  # type: ignore[union-attr]
        assert [t.assistant for t in state.turns] == [written]


async def test_events_round_trip_through_json() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(StreamEvent)
    bot = make_bot()
    for event in await collect(bot.stream("hello")):
        back = adapter.validate_json(event.model_dump_json())
        assert type(back) is type(event) and back == event


# --------------------------------------------------------------------------- rendering


async def test_fake_renderer_gets_one_frame_aligned_segment_per_sentence() -> None:
    renderer = FakeRenderer(fps=10)
    bot = make_bot(renderer=renderer)
    events = await collect(bot.stream("hello"))
    videos = of(VideoSegment, events)
    audio = of(AudioSegment, events)
    assert [v.index for v in videos] == [0, 1, 2]
    assert len(renderer.calls) == 3
    for v, a in zip(videos, audio, strict=True):
        assert v.offset == a.offset
        assert v.video.path.suffix == ".gif" and v.video.path.exists()
        frames = a.voice.duration * 10
        assert frames == pytest.approx(round(frames), abs=1e-6)  # a whole number of frames
        assert v.video.duration == pytest.approx(a.voice.duration)
    assert not of(IdleClip, events)  # the fake renderer offers no idle loop
    assert events[-1].response.video is None  # GIF segments are not joined


def decode_sound(path: Path) -> np.ndarray:
    pcm = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
         "-ar", "16000", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(pcm, np.int16).astype(np.float32) / 32768


def decode_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.astype(np.int16))
    cap.release()
    return frames, decode_sound(path)


def envelope(samples: np.ndarray, rate: int = 16000, hop: float = 0.01) -> np.ndarray:
    n = int(rate * hop)
    usable = len(samples) // n * n
    return np.sqrt((samples[:usable].reshape(-1, n) ** 2).mean(axis=1))


async def test_local_voice_and_renderer_end_to_end(tmp_path: Path) -> None:
    renderer = LocalRenderer(size=96, crf=8)  # near-lossless: compression noise stays small
    avatar = generate_procedural(5, size=96)
    bot = make_bot(token_delay=0.01, voice="espeak", renderer=renderer, avatar=avatar)
    events = await collect(bot.stream("hello", output_dir=tmp_path))
    audio, videos = of(AudioSegment, events), of(VideoSegment, events)
    idle = of(IdleClip, events)
    assert len(audio) == len(videos) == 3 and len(idle) == 1
    assert events.index(idle[0]) < events.index(videos[-1])
    response = events[-1].response
    assert response.timeline is not None and response.timeline.problems() == []
    spoken = [w.text.strip(".!?").lower() for w in response.timeline.words]
    assert spoken == [w.strip(".!?").lower() for w in REPLY.split()]
    assert response.video is not None and response.video.path.exists()

    frames, sound = decode_clip(response.video.path)
    fps = renderer.fps
    assert abs(len(frames) / fps - len(sound) / 16000) <= 1 / fps
    assert abs(len(frames) / fps - response.voice.duration) <= 1 / fps  # type: ignore[union-attr]

    # No gap at the joints: the clip's sound follows the joined speech all the way through.
    wav = tmp_path / "joined.wav"
    wav.write_bytes(response.voice.audio)  # type: ignore[union-attr]
    a, b = envelope(decode_sound(wav)), envelope(sound)
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= 4
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95
    for seg in audio[1:]:
        k = round(seg.offset / 0.01)
        window = slice(max(0, k - 30), k + 30)
        np.testing.assert_allclose(b[window], a[window], atol=0.03)

    # No jump at the joints: the frames either side differ no more than neighbours inside.
    steps = [float(np.abs(frames[i + 1] - frames[i]).mean()) for i in range(len(frames) - 1)]
    joints = [round(seg.offset * fps) for seg in audio[1:]]
    inside = [s for i, s in enumerate(steps) if i + 1 not in joints]
    for j in joints:
        assert steps[j - 1] <= max(np.percentile(inside, 90), 0.5), (j, steps[j - 1])
    # and the timeline sampled with one clock moves smoothly across each joint
    sampler = TimelineSampler(response.timeline)
    for seg in audio[1:]:
        before, after = sampler.pose_values([seg.offset - 1 / fps, seg.offset])
        assert np.abs(before[0] - before[1]).max() < 0.5  # degrees / gaze units per frame
        assert after[1] == pytest.approx(0.0)  # eyes open at the joint
    # the idle loop starts where every segment starts: switching shows no jump
    idle_frames, _ = decode_clip(idle[0].video.path)
    first_segment, _ = decode_clip(videos[0].video.path)
    assert float(np.abs(idle_frames[0] - first_segment[0]).mean()) < 1.0
    assert float(np.abs(idle_frames[0] - idle_frames[-1]).mean()) < 1.0


async def test_idle_loop_is_seamless_blinks_and_is_kept(tmp_path: Path) -> None:
    renderer = LocalRenderer(size=96, format="png")  # lossless frames
    image = generate_procedural(3, size=96)
    clip = await renderer.idle(image, 2.0, output=tmp_path / "idle")
    files = sorted(clip.path.glob("frame_*.png"))
    frames = [cv2.imread(str(f)).astype(np.int16) for f in files]
    assert len(frames) == 50 and clip.duration == pytest.approx(2.0)
    steps = [float(np.abs(frames[i + 1] - frames[i]).mean()) for i in range(len(frames) - 1)]
    loop_step = float(np.abs(frames[0] - frames[-1]).mean())
    assert loop_step <= np.percentile(steps, 75)  # the last frame leads back into the first
    assert max(steps) > 4 * max(loop_step, 0.01)  # ...while the blink in the middle shows
    t0 = time.perf_counter()
    again = await renderer.idle(image, 2.0)
    assert time.perf_counter() - t0 < 0.05 and again.path == clip.path
    with pytest.raises(InputValidationError):
        await renderer.idle(image, 0.1)


def test_idle_timeline_rests_at_both_ends() -> None:
    voice, timeline = idle_timeline(3.0)
    assert voice.duration == pytest.approx(3.0) and timeline.problems() == []
    first, last = timeline.poses[0], timeline.poses[-1]
    for p in (first, last):
        assert (p.yaw, p.pitch, p.roll, p.blink) == pytest.approx((0, 0, 0, 0), abs=1e-3)
    assert max(p.blink for p in timeline.poses) == 1.0


# --------------------------------------------------------------------------- helpers


def test_pad_to_frames_adds_less_than_one_frame_of_silence() -> None:
    voice = fake_speech("One two three.")  # already 80 ms of silence at each end
    padded = pad_to_frames(voice, 25.0)
    frames = padded.duration * 25
    assert frames == pytest.approx(round(frames), abs=1e-6)
    assert 0 <= padded.duration - voice.duration < 1 / 25
    a, _ = decode_audio(voice.audio, "wav")
    b, _ = decode_audio(padded.audio, "wav")
    np.testing.assert_array_equal(b[: len(a)], a)
    assert not b[len(a) :].any()
    assert padded.words == voice.words
    assert pad_to_frames(voice) is voice  # nothing to do without a frame rate


def test_pad_to_frames_gives_a_clipped_sentence_a_short_pause_at_each_end() -> None:
    voice = fake_speech("One two.", gap=0.0)  # words right at both ends, like eSpeak's
    padded = pad_to_frames(voice, 25.0, edge=0.06)
    assert padded.words[0].start == pytest.approx(0.06, abs=1e-4)
    assert padded.duration - padded.words[-1].end >= 0.06 - 1e-4
    assert padded.phonemes[0].start == pytest.approx(voice.phonemes[0].start + 0.06, abs=1e-4)
    frames = padded.duration * 25
    assert frames == pytest.approx(round(frames), abs=1e-6)
    a, rate = decode_audio(voice.audio, "wav")
    b, _ = decode_audio(padded.audio, "wav")
    lead = round(0.06 * rate)
    np.testing.assert_array_equal(b[lead : lead + len(a)], a)


def test_settle_poses_rests_at_both_ends_and_keeps_the_middle() -> None:
    poses = [AvatarPose(time=t / 10, yaw=2.0, pitch=-1.0, gaze_x=0.3) for t in range(11)]
    settled = settle_poses(poses, 1.0, window=0.25)
    assert (settled[0].yaw, settled[0].gaze_x, settled[-1].pitch) == (0.0, 0.0, 0.0)
    middle = next(p for p in settled if p.time == 0.5)
    assert (middle.yaw, middle.pitch, middle.gaze_x) == (2.0, -1.0, 0.3)
    assert settle_poses([], 1.0) == []


# --------------------------------------------------------------------------- interruption


async def test_interrupt_stops_every_stage_and_records_what_was_delivered() -> None:
    many = " ".join(f"Sentence number {n} is here." for n in range(8))
    voice = FakeVoice(delay=0.03)
    bot = make_bot(many, token_delay=0.02, voice=voice)
    chat = inner(bot.dialogue.chat)  # type: ignore[union-attr]
    stream = bot.stream("hello")
    async for event in stream:
        if isinstance(event, AudioSegment):
            break
    calls = len(voice.calls)
    t0 = time.perf_counter()
    response = await stream.interrupt()
    assert time.perf_counter() - t0 < 0.05
    tasks = [stream._task, *stream._background]
    assert all(t is not None and t.done() for t in tasks)
    await asyncio.sleep(0.15)  # nothing keeps working in the background
    assert len(voice.calls) == calls
    assert response.text == "Sentence number 0 is here."
    state = await bot.dialogue.load("default")  # type: ignore[union-attr]
    assert [t.assistant for t in state.turns] == ["Sentence number 0 is here."]
    # the next turn's context is what the user heard, not what the model had planned
    await collect(bot.stream("go on"))
    history = [m.content for m in chat.calls[-1] if m.role == "assistant"]
    assert history == ["Sentence number 0 is here."]


async def test_interrupt_with_played_keeps_only_the_words_heard() -> None:
    bot = make_bot()
    stream = bot.stream("hello")
    audio: list[AudioSegment] = []
    async for event in stream:
        if isinstance(event, AudioSegment):
            audio.append(event)
            if len(audio) == 2:
                break
    second = audio[1]
    played = second.offset + second.voice.words[1].end + 0.01  # "I am" of the second sentence
    response = await stream.interrupt(played=played)
    assert response.text == "Hello there. I am"
    state = await bot.dialogue.load("default")  # type: ignore[union-attr]
    assert state.turns[-1].assistant == "Hello there. I am"
    assert response.voice is not None and response.timeline is not None
    assert response.timeline.problems() == []


async def test_interrupt_from_another_task_ends_the_consumers_loop() -> None:
    voice = FakeVoice(delay=0.01)
    bot = make_bot(" ".join(["This goes on and on."] * 6), token_delay=0.02, voice=voice)
    stream = bot.stream("hello")
    seen: list[Any] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    consumer = asyncio.create_task(consume())
    while not of(AudioSegment, seen):
        await asyncio.sleep(0.005)
    await stream.interrupt()
    await asyncio.wait_for(consumer, 1.0)
    assert isinstance(seen[-1], TurnComplete) and seen[-1].interrupted
    assert len(of(AudioSegment, seen)) < 6


async def test_interrupt_cancels_rendering(tmp_path: Path) -> None:
    renderer = FakeRenderer(delay=0.2)
    bot = make_bot(renderer=renderer)
    stream = bot.stream("hello", output_dir=tmp_path)
    async for event in stream:
        if isinstance(event, AudioSegment):
            break
    t0 = time.perf_counter()
    await stream.interrupt()
    assert time.perf_counter() - t0 < 0.05
    calls = len(renderer.calls)
    await asyncio.sleep(0.3)
    assert len(renderer.calls) == calls <= 1
    assert not list(tmp_path.glob("*.gif"))


async def test_async_with_interrupts_on_early_exit() -> None:
    voice = FakeVoice(delay=0.02)
    bot = make_bot(token_delay=0.02, voice=voice)
    async with bot.stream("hello") as stream:
        async for event in stream:
            if isinstance(event, AudioSegment):
                break
    assert stream._task is not None and stream._task.done()
    assert all(t.done() for t in stream._background)
    calls = len(voice.calls)
    await asyncio.sleep(0.1)
    assert len(voice.calls) == calls
    state = await bot.dialogue.load("default")  # type: ignore[union-attr]
    assert [t.assistant for t in state.turns] == ["Hello there."]
    assert await stream.interrupt() is stream.response  # a second interrupt changes nothing


async def test_a_stream_never_started_calls_no_backend_and_records_nothing() -> None:
    voice = FakeVoice()
    bot = make_bot(voice=voice)
    stream = bot.stream("hello")
    await stream.interrupt()
    assert voice.calls == [] and inner(bot.dialogue.chat).calls == []  # type: ignore[union-attr]
    assert (await bot.dialogue.load("default")).turns == []  # type: ignore[union-attr]
    assert await collect(stream) == []


# --------------------------------------------------------------------------- errors


async def test_bad_input_raises_before_any_backend_call() -> None:
    voice = FakeVoice()
    bot = make_bot(voice=voice)
    chat = inner(bot.dialogue.chat)  # type: ignore[union-attr]
    for bad in ("", "   ", "x" * (bot.settings.max_input_chars + 1)):
        with pytest.raises(InputValidationError):
            bot.stream(bad)
    with pytest.raises(InputValidationError):
        bot.stream(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AvatarBot(chat=None, voice=FakeVoice(), renderer=None).stream("hello")
    with pytest.raises(ConfigurationError):
        AvatarBot(chat=FakeChatModel(), voice=None, renderer=None).stream("hello")
    with pytest.raises(InputValidationError):
        await bot.stream("hello").interrupt(played=-1.0)
    assert chat.calls == [] and voice.calls == []


async def test_voice_failure_is_a_stage_error_with_the_partial_turn() -> None:
    def speak(text: str) -> Any:
        if text.startswith("I am"):
            raise ProviderError("voice down", provider="fake")
        return fake_speech(text)

    bot = make_bot(voice=FunctionVoice(speak))
    events: list[Any] = []
    with pytest.raises(StageError) as info:
        async for event in bot.stream("hello"):
            events.append(event)
    assert info.value.stage == "voice"
    assert isinstance(info.value.__cause__, ProviderError)
    assert info.value.partial.input.text == "hello"
    assert [a.text for a in of(AudioSegment, events)] == ["Hello there."]


async def test_chat_failure_mid_reply_is_a_dialogue_stage_error() -> None:
    class Broken(FakeChatModel):
        async def stream(self, messages: Any) -> Any:
            yield "Hello there. "
            raise ProviderError("connection reset", provider="fake")

    bot = make_bot()
    bot.dialogue.chat = Broken()  # type: ignore[union-attr]
    with pytest.raises(StageError) as info:
        await collect(bot.stream("hello"))
    assert info.value.stage == "dialogue"
    assert info.value.partial.input.text == "hello"


async def test_render_failure_is_a_render_stage_error(tmp_path: Path) -> None:
    class Broken(FakeRenderer):
        async def render(self, *args: Any, **kwargs: Any) -> Any:
            raise ProviderError("gpu gone", provider="fake")

    bot = make_bot(renderer=Broken())
    with pytest.raises(StageError) as info:
        await collect(bot.stream("hello", output_dir=tmp_path))
    assert info.value.stage == "render"
    assert info.value.partial.input.text == "hello"


def test_join_segments_resamples_and_keeps_every_sample() -> None:
    a, b = fake_speech("One two."), fake_speech("Three.", sample_rate=22_050)
    parts = [(v, Timeline(duration=v.duration, words=v.words)) for v in (a, b)]
    voice, timeline = join_segments(parts)
    samples, rate = decode_audio(voice.audio, "wav")
    assert rate == 16_000
    assert len(samples) == pytest.approx(16_000 * (a.duration + b.duration), abs=2)
    assert [w.text for w in timeline.words] == ["One", "two.", "Three."]
    assert timeline.words[2].start == pytest.approx(a.duration + b.words[0].start, abs=1e-3)
    assert voice.text[timeline.words[2].char_start : timeline.words[2].char_end] == "Three."
    assert timeline.problems() == []
    with pytest.raises(InputValidationError):
        join_segments([])


async def test_a_stage_cancelled_from_elsewhere_fails_the_turn() -> None:
    class CancelledMidway(FakeVoice):
        async def synthesize(self, text: str) -> Any:
            if text.startswith("I am"):
                await _cancelled_elsewhere()
            return await super().synthesize(text)

    bot = make_bot(voice=CancelledMidway())
    with pytest.raises(AvatarKitError, match="cancelled"):
        async with asyncio.timeout(10):
            async for _ in bot.stream("hello"):
                pass
    state = await bot.dialogue.load("default")
    assert not state.turns or state.turns[-1].assistant != "Hello there."  # no cut-short turn


async def test_a_preprocessor_cancelled_from_elsewhere_ends_the_stream_with_an_error() -> None:
    class CancelledPreprocessor(FakePreprocessor):
        async def preprocess(self, text: str, *, language: str | None = None) -> Any:
            await _cancelled_elsewhere()

    bot = AvatarBot(chat=FakeChatModel(REPLY), voice=FakeVoice(), renderer=None, image=None,
                    preprocessor=CancelledPreprocessor(), intent=None, sentiment=None)  # fmt: skip
    with pytest.raises(AvatarKitError, match="cancelled"):
        async with asyncio.timeout(10):  # the consumer used to wait here forever
            async for _ in bot.stream("hello"):
                pass


async def test_joining_the_clips_does_not_block_other_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as clock

    import avatarkit.render.encode as encode

    real = encode.concat_videos

    def slow_concat(*args: Any, **kwargs: Any) -> Any:  # ffmpeg on a long reply
        clock.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(encode, "concat_videos", slow_concat)
    bot = make_bot(voice="espeak", renderer=LocalRenderer(size=64),
                   avatar=generate_procedural(5, size=64))  # fmt: skip
    events, gap = await largest_loop_gap(collect(bot.stream("hello", output_dir=tmp_path)))
    assert events[-1].response.video is not None
    assert gap < 0.8  # the 1 s join ran off the event loop, which served other sessions


async def test_cloud_speech_is_animated_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # MP3 with word timings but no phonemes (ElevenLabs, OpenAI): lip sync runs eSpeak's
    # text-to-IPA and the MP3 is decoded, tens of ms a sentence: not on the event loop. Local
    # WAV speech with phoneme timings (about 1.5 ms) stays on it: that is the first-audio path.
    import io
    import threading

    import soundfile as sf

    def mp3_like(text: str) -> Any:
        wav = fake_speech(text)
        samples, rate = decode_audio(wav.audio, "wav")
        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="MP3")
        return wav.model_copy(update={"audio": buf.getvalue(), "format": "mp3", "phonemes": []})

    on_loop: list[bool] = []
    real = ReplyStream._animate

    def recording(self: ReplyStream, *args: Any) -> Any:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real(self, *args)

    monkeypatch.setattr(ReplyStream, "_animate", recording)
    await collect(make_bot(voice=FunctionVoice(mp3_like)).stream("hello"))
    assert on_loop and not any(on_loop)
    on_loop.clear()
    await collect(make_bot(voice=FunctionVoice(fake_speech)).stream("hello"))
    assert on_loop and all(on_loop)


async def test_a_streamed_reply_names_what_wrote_it_as_respond_does() -> None:
    def hours(user: Any, state: Any) -> str:
        return "We are open nine to five."

    bot = AvatarBot(
        chat=FakeChatModel(REPLY),
        voice=FakeVoice(),
        renderer=None,
        image=None,
        intent=FakeIntentClassifier({"open": "opening_hours"}),
        handlers={"opening_hours": hours},
    )
    chatted = (await collect(bot.stream("tell me a joke")))[-1].response
    handled = (await collect(bot.stream("when are you open")))[-1].response
    assert chatted.dialogue.handled_by == "FakeChatModel"
    assert handled.dialogue.handled_by == "handler:opening_hours"


async def test_one_stream_does_not_overload_its_own_voice_limit() -> None:
    reply = "First sentence here. Second one follows. And a third to end."
    bot = make_bot(reply, voice=FakeVoice(delay=0.05), limits={"voice": 1}, max_waiting=1)
    events = await collect(bot.stream("Who are you?"))
    assert [e.text for e in of(AudioSegment, events)] == [
        "First sentence here.",
        "Second one follows.",
        "And a third to end.",
    ]


async def test_an_overloaded_voice_fails_a_stream_with_overloaded_error_unwrapped() -> None:
    import asyncio

    bot = make_bot(voice=FakeVoice(delay=0.3), limits={"voice": 1}, max_waiting=0)
    first = asyncio.create_task(collect(bot.stream("hello", session_id="a")))
    await asyncio.sleep(0.1)  # the first user's sentence holds the only voice slot
    with pytest.raises(OverloadedError):
        await collect(bot.stream("hello", session_id="b"))
    await first


async def test_a_failed_render_keeps_the_delivered_speech_in_the_partial_response() -> None:
    class Broken(FakeRenderer):
        async def render(self, *args: Any, **kw: Any) -> Any:
            raise RuntimeError("render farm down")

    bot = make_bot(renderer=Broken())
    with pytest.raises(StageError) as info:
        await collect(bot.stream("hello"))
    partial = info.value.partial
    assert info.value.stage == "render" and partial is not None
    assert partial.voice is not None and partial.voice.duration > 0  # as respond() keeps it
    assert partial.timeline is not None


async def test_cancelling_the_consumer_of_a_bare_stream_interrupts_it() -> None:
    import asyncio

    bot = make_bot(token_delay=0.05, voice=FakeVoice(delay=0.05))

    async def consume() -> None:
        async for _ in bot.stream("hello", session_id="u"):
            pass

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), 0.15)  # a web client went away
    await asyncio.sleep(0.5)
    calls = bot.calls.snapshot()
    state = await bot.dialogue.load("u")  # type: ignore[union-attr]
    assert calls.get("voice.synthesize", 0) < 3  # the stream stopped: no more sentences voiced
    assert len(state.turns) <= 1 and all(t.assistant != REPLY for t in state.turns)


async def _consumer_cancelled_after_first_audio(stream: ReplyStream) -> AudioSegment:
    """Iterate ``stream`` in a task, cancel that task at the first audio; return that audio."""
    import asyncio

    segments: list[AudioSegment] = []
    first_audio = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            if isinstance(event, AudioSegment):
                segments.append(event)
                first_audio.set()

    task = asyncio.create_task(consume())
    await first_audio.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return segments[0]


async def test_interrupt_with_played_after_cancelling_the_consumer_keeps_what_was_heard() -> None:
    # the web server's order: cancel the task that iterates, then interrupt(played=...)
    bot = make_bot(voice=FakeVoice())
    stream = bot.stream("hello", session_id="u")
    first = await _consumer_cancelled_after_first_audio(stream)
    played = first.voice.words[0].end + 0.01  # the listener heard one word
    response = await stream.interrupt(played=played)
    state = await bot.dialogue.load("u")  # type: ignore[union-attr]
    heard = state.turns[-1].assistant
    assert heard == response.text and 0 < len(heard) < len("Hello there.")


async def test_interrupt_without_played_after_a_cancelled_consumer_returns_once_recorded() -> None:
    bot = make_bot(voice=FakeVoice())
    stream = bot.stream("hello", session_id="u")
    await _consumer_cancelled_after_first_audio(stream)
    await stream.interrupt()  # a server's reset: the turn must be stored before it goes on
    state = await bot.dialogue.load("u")  # type: ignore[union-attr]
    assert len(state.turns) == 1


async def test_a_stream_asked_not_to_join_its_clips_runs_no_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avatarkit.render.encode as encode

    joins: list[Any] = []
    real = encode.concat_videos
    monkeypatch.setattr(encode, "concat_videos", lambda *a, **k: joins.append(a) or real(*a, **k))
    bot = make_bot(voice="espeak", renderer=LocalRenderer(size=64),
                   avatar=generate_procedural(5, size=64))  # fmt: skip
    events = await collect(bot.stream("hello", output_dir=tmp_path, join_video=False))
    final = events[-1].response
    assert len(of(VideoSegment, events)) > 1 and joins == []
    assert final.video is None and final.voice is not None  # the audio is still joined


class _Returns:
    """A backend's method that returns ``value`` instead of what its port promises."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.value


@pytest.mark.parametrize(
    ("role", "value", "stage", "message"),
    [
        ("voice", None, "voice", "FakeVoice.synthesize() returned NoneType, not VoiceOutput"),
        ("voice", "speech.wav", "voice", "FakeVoice.synthesize() returned str, not VoiceOutput"),
        ("renderer", None, "render", "FakeRenderer.render() returned NoneType, not AvatarVideo"),
    ],
)
async def test_a_backend_that_breaks_its_port_fails_the_stream_with_a_clear_error(
    tmp_path: Path, role: str, value: Any, stage: str, message: str
) -> None:
    voice, renderer = FakeVoice(), FakeRenderer()
    broken = {"voice": voice, "renderer": renderer}[role]
    method = {"voice": "synthesize", "renderer": "render"}[role]
    setattr(broken, method, _Returns(value))
    bot = make_bot(voice=voice, renderer=renderer)
    with pytest.raises(StageError) as info:
        await collect(bot.stream("hello", output_dir=tmp_path))
    assert info.value.stage == stage
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert message in str(info.value)


class _Deltas(FakeChatModel):
    """Streams a first sentence, then ``bad`` (not text); notes when its stream is closed."""

    def __init__(self, bad: Any) -> None:
        super().__init__("Hello there.")
        self.bad = bad
        self.closed = False

    async def stream(self, messages: Any) -> Any:
        try:
            yield "Hello there. "
            yield self.bad
            yield "More to come."
        finally:
            self.closed = True


@pytest.mark.parametrize("wrapped", [True, False], ids=["bot-chat", "manager-chat"])
async def test_a_chat_stream_that_yields_no_text_is_a_clear_error_and_is_closed(
    wrapped: bool,
) -> None:
    chat = _Deltas(7)
    bot = make_bot()
    if wrapped:
        bot = AvatarBot(chat=chat, voice=FakeVoice(), renderer=None, preprocessor="test",
                        intent="test", sentiment="test", expression="test")  # fmt: skip
    else:  # a DialogueManager's own chat model: no bot wrapper around it
        bot.dialogue.chat = chat  # type: ignore[union-attr]
    with pytest.raises(StageError) as info:
        await collect(bot.stream("hello"))
    assert info.value.stage == "dialogue"
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert "_Deltas.stream() yielded int, not str" in str(info.value)
    assert chat.closed  # closed at once, not left to the garbage collector


async def test_a_chat_model_that_does_not_stream_answers_a_stream_through_complete() -> None:
    # ChatCapabilities(streaming=False): check_chat does not try its stream(), nor may bot.stream
    class Whole(FakeChatModel):
        @property
        def capabilities(self) -> ChatCapabilities:
            return ChatCapabilities(streaming=False, offline=True)

        def stream(self, messages: Any) -> Any:
            raise NotImplementedError

    chat = Whole(REPLY)
    await check_chat(chat)
    bot = AvatarBot(chat=chat, voice=FakeVoice(), renderer=None, preprocessor="test",
                    intent="test", sentiment="test", expression="test")  # fmt: skip
    events = await collect(bot.stream("hello", session_id="u"))
    assert [s.text for s in of(SentenceReady, events)] == SENTENCES
    assert events[-1].response.text == REPLY
    assert (await bot.dialogue.load("u")).turns[-1].assistant == REPLY  # type: ignore[union-attr]
