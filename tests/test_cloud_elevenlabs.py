"""ElevenLabsVoice against ElevenLabs' documented wire format, through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest

from _cloud_helpers import (
    FAST,
    Playback,
    Recorder,
    alignment_for,
    b64,
    mp3_bytes,
    pcm_bytes,
    play,
)
from _loop import largest_loop_gap
from avatarkit.audio import decode_audio
from avatarkit.errors import (
    AuthenticationError,
    InputValidationError,
    MissingKeyError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
)
from avatarkit.providers._chunk import TextChunk, split_text
from avatarkit.providers.elevenlabs import (
    Alignment,
    ElevenLabsVoice,
    VoiceSettings,
    provider,
    words_from_alignment,
)
from avatarkit.registry import Registry
from avatarkit.types import Response, UserInput

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

KEY = "el-test-key-0123456789"
VOICE = "21m00Tcm4TlvDq8ikWAM"


def voice(rec: Recorder, **kw: object) -> ElevenLabsVoice:
    return ElevenLabsVoice(VOICE, api_key=KEY, transport=rec.transport, options=FAST, **kw)  # type: ignore[arg-type]


def timestamps_answer(text: str, seconds: float, audio: bytes) -> httpx.Response:
    body = {
        "audio_base64": b64(audio),
        "alignment": alignment_for(text, seconds),
        "normalized_alignment": alignment_for(text, seconds),
    }
    return httpx.Response(
        200, json=body, headers={"request-id": "req-1", "character-cost": str(len(text))}
    )


async def test_with_timestamps_request_and_word_timings() -> None:
    text = "Hello there, world!"
    audio = mp3_bytes(1.0)
    rec = Recorder(lambda r: timestamps_answer(text, 0.9, audio))
    v = voice(rec, voice_settings={"stability": 0.4, "similarity_boost": 0.8, "speed": 1.1}, seed=7)
    out = await v.synthesize(text)

    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.path == f"/v1/text-to-speech/{VOICE}/with-timestamps"
    assert req.url.host == "api.elevenlabs.io"
    assert req.url.params["output_format"] == "mp3_44100_128"
    assert req.headers["xi-api-key"] == KEY
    assert req.headers["content-type"] == "application/json"
    assert rec.json() == {
        "text": text,
        "model_id": "eleven_multilingual_v2",
        "voice_settings": {"stability": 0.4, "similarity_boost": 0.8, "speed": 1.1},
        "seed": 7,
    }
    assert out.format == "mp3" and out.sample_rate == 44100
    assert out.duration == pytest.approx(1.0, abs=0.01)
    assert [w.text for w in out.words] == ["Hello", "there", "world"]
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text
    assert out.words[0].start == 0.0
    assert out.words[-1].end <= out.duration
    assert all(a.end <= b.start + 1e-9 for a, b in zip(out.words, out.words[1:], strict=False))
    assert v.last_character_cost == len(text)
    assert v.last_request_ids == ["req-1"]
    assert out.voice == f"elevenlabs:{VOICE}"


async def test_long_text_is_split_at_sentences_and_joined_on_one_clock() -> None:
    sentences = ["The first sentence is here.", "A second one follows it.", "And a third ends."]
    text = " ".join(sentences)
    seconds = {s: 0.5 + 0.25 * i for i, s in enumerate(sentences)}

    def handler(r: httpx.Request) -> httpx.Response:
        body = json.loads(r.content)
        secs = seconds[body["text"]]
        return timestamps_answer(body["text"], secs, pcm_bytes(secs, 16000))

    rec = Recorder(handler)
    v = voice(rec, output_format="pcm_16000", max_chars=30)
    assert v.estimate_cost(text).requests == 3
    out = await v.synthesize(text)

    bodies = sorted(
        (json.loads(r.content) for r in rec.requests), key=lambda b: text.find(b["text"])
    )
    assert [b["text"] for b in bodies] == sentences
    assert "previous_text" not in bodies[0] and bodies[0]["next_text"].startswith(sentences[1])
    assert bodies[1]["previous_text"] == sentences[0]
    assert bodies[1]["next_text"] == sentences[2]
    assert bodies[2]["previous_text"].endswith(sentences[1]) and "next_text" not in bodies[2]

    assert out.format == "pcm_s16le"
    assert out.duration == pytest.approx(sum(seconds.values()))
    samples, _ = decode_audio(out.audio, "pcm_s16le", sample_rate=16000)
    assert len(samples) / 16000 == pytest.approx(out.duration)
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text
    starts = [w.start for w in out.words]
    assert starts == sorted(starts)
    third = next(w for w in out.words if w.text == "third")
    assert third.start >= seconds[sentences[0]] + seconds[sentences[1]] - 1e-6
    assert out.words[-1].end <= out.duration + 1e-9


async def test_long_mp3_is_joined_into_one_decodable_clip() -> None:
    text = "One short sentence. Another short sentence."

    def handler(r: httpx.Request) -> httpx.Response:
        t = json.loads(r.content)["text"]
        return timestamps_answer(t, 0.4, mp3_bytes(0.5))

    v = voice(Recorder(handler), max_chars=25)
    out = await v.synthesize(text)
    samples, rate = decode_audio(out.audio, "mp3")
    assert len(samples) / rate == pytest.approx(1.0, abs=0.06)
    assert out.duration == pytest.approx(1.0, abs=0.06)


async def test_joining_a_long_reply_does_not_hold_up_the_event_loop() -> None:
    audio = mp3_bytes(40.0)
    text = "One short sentence. Another short sentence. A third short sentence."

    def handler(r: httpx.Request) -> httpx.Response:
        t = json.loads(r.content)["text"]
        return timestamps_answer(t, 39.0, audio)

    out, gap = await largest_loop_gap(voice(Recorder(handler), max_chars=25).synthesize(text))
    assert out.duration == pytest.approx(120.0, abs=0.3)
    assert gap < 0.25  # each piece's decoding and the joined clip's encoding: worker threads


async def test_surrounding_whitespace_is_not_sent() -> None:
    rec = Recorder(lambda r: timestamps_answer("Hi you.", 0.3, pcm_bytes(0.3, 16000)))
    out = await voice(rec, output_format="pcm_16000").synthesize("  Hi you.\n")
    assert rec.json()["text"] == "Hi you."
    assert [(w.text, w.char_start) for w in out.words] == [("Hi", 2), ("you", 5)]


async def test_convert_endpoint_without_timestamps() -> None:
    audio = mp3_bytes(0.3)
    rec = Recorder(
        lambda r: httpx.Response(200, content=audio, headers={"content-type": "audio/mpeg"})
    )
    v = voice(rec, timestamps=False, model_id="eleven_flash_v2_5", language_code="de")
    out = await v.synthesize("Guten Tag.")
    assert rec.requests[0].url.path == f"/v1/text-to-speech/{VOICE}"
    assert rec.json() == {
        "text": "Guten Tag.",
        "model_id": "eleven_flash_v2_5",
        "language_code": "de",
    }
    assert out.audio == audio and out.words == []
    assert not v.capabilities.word_timings and v.capabilities.streaming


async def test_stream_endpoint_yields_audio_chunks() -> None:
    audio = mp3_bytes(0.3)

    async def body():
        for i in range(0, len(audio), 500):
            yield audio[i : i + 500]

    rec = Recorder(lambda r: httpx.Response(200, content=body()))
    v = voice(rec, output_format="mp3_22050_32")
    got = [c async for c in v.stream("Streaming text.")]
    assert b"".join(got) == audio and len(got) > 1
    req = rec.requests[0]
    assert req.url.path == f"/v1/text-to-speech/{VOICE}/stream"
    assert req.url.params["output_format"] == "mp3_22050_32"
    assert rec.json()["text"] == "Streaming text."


async def test_stream_with_timestamps_ndjson() -> None:
    text = "Hi there you."
    pieces = [("Hi th", 0.0), ("ere you.", 0.25)]
    lines = []
    for chars, t0 in pieces:
        al = alignment_for(chars, 0.25)
        al["character_start_times_seconds"] = [t + t0 for t in al["character_start_times_seconds"]]
        al["character_end_times_seconds"] = [t + t0 for t in al["character_end_times_seconds"]]
        lines.append(
            json.dumps(
                {
                    "audio_base64": b64(pcm_bytes(0.25, 16000)),
                    "alignment": al,
                    "normalized_alignment": None,
                }
            )
        )
    lines.insert(1, "")  # blank lines are skipped
    rec = Recorder(lambda r: httpx.Response(200, content=("\n".join(lines) + "\n").encode()))
    v = voice(rec, streamed=True, output_format="pcm_16000")
    out = await v.synthesize(text)
    assert rec.requests[0].url.path == f"/v1/text-to-speech/{VOICE}/stream/with-timestamps"
    assert [w.text for w in out.words] == ["Hi", "there", "you"]
    there = out.words[1]
    assert there.start < 0.25 < there.end
    assert out.duration == pytest.approx(0.5)


async def test_streamed_chunks_with_restarting_clock_are_laid_end_to_end() -> None:
    lines = [
        json.dumps(
            {"audio_base64": b64(pcm_bytes(0.3, 16000)), "alignment": alignment_for(part, 0.3)}
        )
        for part in ("One two ", "three.")
    ]
    rec = Recorder(lambda r: httpx.Response(200, content="\n".join(lines).encode()))
    out = await voice(rec, streamed=True, output_format="pcm_16000").synthesize("One two three.")
    assert [w.text for w in out.words] == ["One", "two", "three"]
    assert out.words[2].start == pytest.approx(0.3)  # the second chunk starts after the first
    assert out.words[2].end <= out.duration == pytest.approx(0.6)


async def test_voices_listing() -> None:
    answer = {
        "voices": [
            {
                "voice_id": VOICE, "name": "Rachel", "category": "premade",
                "labels": {"accent": "american", "gender": "female"},
                "available_for_tiers": [], "high_quality_base_model_ids": ["eleven_v2_flash"],
                "preview_url": "https://storage.googleapis.com/x.mp3", "samples": None,
                "settings": None, "is_owner": False,
            },
        ]
    }  # fmt: skip
    rec = Recorder(lambda r: httpx.Response(200, json=answer))
    (rachel,) = await voice(rec).voices()
    req = rec.requests[0]
    assert req.method == "GET" and req.url.path == "/v1/voices"
    assert req.url.params["show_legacy"] == "false"
    assert req.headers["xi-api-key"] == KEY
    assert rachel.voice_id == VOICE and rachel.labels["accent"] == "american"


async def test_concurrency_is_capped_and_queued() -> None:
    in_flight = 0
    peak = 0

    async def handler(r: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.03)
        in_flight -= 1
        t = json.loads(r.content)["text"]
        return timestamps_answer(t, 0.1, pcm_bytes(0.1, 16000))

    v = voice(Recorder(handler), output_format="pcm_16000", max_concurrency="free", max_chars=12)
    text = " ".join(f"Say {w}." for w in ("alpha", "bravo", "delta", "echo", "golf", "hotel"))
    outs = await asyncio.gather(v.synthesize(text), v.synthesize(text))
    assert peak == 2
    assert all(o.duration == pytest.approx(0.6) for o in outs)


async def test_a_failed_piece_cancels_the_others() -> None:
    cancelled: list[str] = []

    async def handler(r: httpx.Request) -> httpx.Response:
        t = json.loads(r.content)["text"]
        if t.startswith("Bad"):
            return httpx.Response(400, json={"detail": {"status": "bad", "message": "no"}})
        try:
            await asyncio.sleep(2.0)
        except asyncio.CancelledError:
            cancelled.append(t)
            raise
        return timestamps_answer(t, 0.1, pcm_bytes(0.1, 16000))

    v = voice(Recorder(handler), output_format="pcm_16000", max_chars=15, max_concurrency=5)
    with pytest.raises(ProviderStatusError):
        await v.synthesize("Good one here. Bad one here. Good two here.")
    assert sorted(cancelled) == ["Good one here.", "Good two here."]  # no paid call left running


@pytest.mark.parametrize(
    ("status", "detail", "error"),
    [
        (
            401,
            {"status": "quota_exceeded", "message": "This request exceeds your quota."},
            QuotaExceededError,
        ),
        (401, {"status": "invalid_api_key", "message": "Invalid API key"}, AuthenticationError),
        (
            400,
            {"status": "voice_not_found", "message": "A voice with that ID was not found."},
            ProviderStatusError,
        ),
    ],
)
async def test_error_bodies_are_typed(status: int, detail: dict[str, str], error: type) -> None:
    rec = Recorder(lambda r: httpx.Response(status, json={"detail": detail}))
    with pytest.raises(error) as info:
        await voice(rec).synthesize("Hello.")
    assert info.value.code == detail["status"]
    assert detail["message"] in str(info.value)
    assert len(rec.requests) == 1  # final: not retried


async def test_422_validation_detail() -> None:
    body = {
        "detail": [
            {"loc": ["body", "voice_settings", "stability"], "msg": "bad", "type": "value_error"}
        ]
    }
    rec = Recorder(lambda r: httpx.Response(422, json=body))
    with pytest.raises(ProviderStatusError, match=r"voice_settings\.stability"):
        await voice(rec).synthesize("Hello.")


async def test_too_many_concurrent_requests_is_retried() -> None:
    answers = iter([
        httpx.Response(
            429, json={"detail": {"status": "too_many_concurrent_requests", "message": "busy"}}
        ),
        timestamps_answer("Hello.", 0.2, pcm_bytes(0.2, 16000)),
    ])  # fmt: skip
    rec = Recorder(lambda r: next(answers))
    out = await voice(rec, output_format="pcm_16000").synthesize("Hello.")
    assert len(rec.requests) == 2 and out.duration == pytest.approx(0.2)


async def test_preflight_errors_send_nothing() -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    v = voice(rec, output_format="opus_48000_64", max_chars=20)
    with pytest.raises(InputValidationError):
        await v.synthesize("   ")
    with pytest.raises(InputValidationError, match="cannot be joined"):
        await v.synthesize("A first sentence here. And a second sentence.")
    with pytest.raises(InputValidationError, match="output_format"):
        ElevenLabsVoice(api_key=KEY, output_format="alaw_8000")
    with pytest.raises(InputValidationError):
        ElevenLabsVoice(api_key=KEY, max_concurrency="platinum")
    with pytest.raises(ValueError):
        VoiceSettings(speed=3.0)
    assert rec.requests == []


def test_cost_estimate() -> None:
    v = ElevenLabsVoice(api_key=KEY, model_id="eleven_flash_v2_5")
    est = v.estimate_cost("Twelve chars")
    assert (est.characters, est.requests, est.credits) == (12, 1, 6.0)
    v3 = ElevenLabsVoice(api_key=KEY, model_id="eleven_v3")
    assert v3.max_chars == 3000
    assert v3.estimate_cost("Word. " * 1000).requests == 2


def test_words_from_alignment_with_mismatched_characters() -> None:
    text = "It costs $5, ok?"
    # The service aligned the input with a character it dropped ("$"): positions are searched.
    chars = [c for c in text if c != "$"]
    al = Alignment(
        characters=chars,
        character_start_times_seconds=[i * 0.1 for i in range(len(chars))],
        character_end_times_seconds=[(i + 1) * 0.1 for i in range(len(chars))],
    )
    words = words_from_alignment(text, al, char_base=10, time_base=2.0)
    assert [w.text for w in words] == ["It", "costs", "5", "ok"]
    assert words[2].char_start == 10 + text.index("5")
    assert words[0].start == pytest.approx(2.0)


def test_key_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="ELEVENLABS_API_KEY"):
        ElevenLabsVoice()
    monkeypatch.setenv("ELEVENLABS_API_KEY", KEY)
    assert ElevenLabsVoice()._http._headers["xi-api-key"] == KEY


async def test_key_never_in_repr_logs_errors_or_files(
    caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    answers = iter([
        httpx.Response(503, text=f"upstream rejected xi-api-key {KEY}"),
        httpx.Response(
            401, json={"detail": {"status": "invalid_api_key", "message": f"bad key {KEY}"}}
        ),
    ])  # fmt: skip
    caplog.set_level(logging.DEBUG)
    v = voice(Recorder(lambda r: next(answers)))
    with pytest.raises(AuthenticationError) as info:
        await v.synthesize("Hello.")
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert KEY not in repr(v) and KEY not in str(vars(v))
    assert KEY not in caplog.text
    assert "retrying" in caplog.text  # the 503 was logged, redacted
    ok = voice(Recorder(lambda r: timestamps_answer("Hi.", 0.2, pcm_bytes(0.2, 16000))),
               output_format="pcm_16000")  # fmt: skip
    out = await ok.synthesize("Hi.")
    Response(input=UserInput(text="hi"), voice=out).save(tmp_path)
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes()


def test_registry_spec() -> None:
    reg = Registry(group="avatarkit.none")
    reg.register(provider)
    v = reg.create("voice", "elevenlabs:pNInz6obpgDQGcFmaJgB", api_key=KEY, model_id="eleven_v3")
    assert isinstance(v, ElevenLabsVoice)
    assert v.voice_id == "pNInz6obpgDQGcFmaJgB" and v.model_id == "eleven_v3"
    assert reg.create("voice", "elevenlabs", api_key=KEY).voice_id == VOICE
    assert provider.env_key == "ELEVENLABS_API_KEY"


@pytest.mark.parametrize("limit", [12, 30, 45, 80])
def test_split_text_packs_sentences_and_keeps_offsets(limit: int) -> None:
    text = "  Dr. Smith went home. He was tired! Was he? Yes, very tired indeed.  "
    chunks = split_text(text, limit)
    assert all(text[c.start : c.end] == c.text and len(c.text) <= limit for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()  # nothing lost
    if limit == 45:
        assert chunks[0].text == "Dr. Smith went home. He was tired! Was he?"  # greedy, "Dr." kept
    if limit == 30:
        assert [c.text for c in chunks[:2]] == ["Dr. Smith went home.", "He was tired! Was he?"]


def test_split_text_cuts_an_overlong_sentence_at_spaces() -> None:
    text = "word " * 30 + "end."
    chunks = split_text(text, 23)
    assert all(len(c.text) <= 23 and not c.text.startswith(" ") for c in chunks)
    assert " ".join(c.text for c in chunks).split() == text.split()
    assert split_text("   ", 10) == []
    assert split_text(" Short. ", 80) == [TextChunk("Short.", 1)]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"voice_id": "abc?x=1"}, "voice_id"),  # would cut the path: another, billed endpoint
        ({"voice_id": ".."}, "voice_id"),
        ({"voice_id": "has space"}, "voice_id"),
        ({"voice_id": 123}, "voice_id"),
        ({"model_id": ""}, "model_id"),
        ({"output_format": "pcm_0"}, "output_format"),  # billed, then divided by zero
        ({"output_format": "mp3_44100_7"}, "output_format"),
        ({"voice_settings": {"stability": 5}}, "voice_settings"),
        ({"voice_settings": {"speed": 3.0}}, "voice_settings"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"apply_text_normalization": "x"}, "apply_text_normalization"),
        ({"max_chars": -5}, "max_chars"),
    ],
)
async def test_bad_settings_are_refused_before_any_request(
    options: dict[str, object], field: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    kw: dict[str, object] = {"api_key": KEY, "transport": rec.transport, "options": FAST}
    voice_id = options.pop("voice_id", VOICE)
    with pytest.raises(InputValidationError) as info:
        v = ElevenLabsVoice(voice_id, **kw, **options)  # type: ignore[arg-type]
        await v.synthesize("Hello there.")
    assert info.value.field == field
    assert rec.requests == []


def _trickle(n: int = 20) -> Recorder:
    """Audio (or, for the timestamps endpoint, NDJSON lines) sent in ``n`` separate chunks."""

    async def body(timestamps: bool):  # type: ignore[no-untyped-def]
        line = json.dumps({"audio_base64": b64(pcm_bytes(0.05, 16000)),
                           "alignment": alignment_for("Hi ", 0.05)})  # fmt: skip
        for _ in range(n):
            yield (line + "\n").encode() if timestamps else pcm_bytes(0.05, 16000)

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path.endswith(f"{VOICE}/with-timestamps"):
            return timestamps_answer("Four.", 0.1, pcm_bytes(0.1, 16000))
        return httpx.Response(200, content=body(r.url.path.endswith("/with-timestamps")))

    return Recorder(handler)


def _short_deadline(rec: Recorder, deadline: float = 0.4, **kw: object) -> ElevenLabsVoice:
    from dataclasses import replace

    return ElevenLabsVoice(VOICE, api_key=KEY, transport=rec.transport, output_format="pcm_16000",
                           options=replace(FAST, deadline=deadline), **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize("method", ["stream", "stream_with_timestamps"])
async def test_a_slow_stream_consumer_gets_a_timeout_not_a_cancellation(method: str) -> None:
    v = _short_deadline(_trickle())
    gen = (
        v.stream("Hello there.")
        if method == "stream"
        else v.stream_with_timestamps(v._request("Hi.", split_text("Hi.", 100)[0], context=False))
    )
    playback = Playback()
    with pytest.raises(ProviderTimeoutError, match="deadline"):
        await play(gen, playback)
    assert not playback.cancelled_at and 2 <= playback.chunks < 20
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert v._semaphore()._value == v.max_concurrency  # the slot is back


async def test_leaving_a_stream_early_never_cancels_the_caller_later() -> None:
    v = _short_deadline(_trickle(), deadline=0.2)
    gen = v.stream("Hello there.")
    async for _ in gen:
        break  # stop listening; `gen` stays referenced
    t0 = time.monotonic()
    await asyncio.sleep(0.5)  # unrelated work, past the stream's deadline
    assert time.monotonic() - t0 >= 0.45
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await gen.aclose()


async def test_abandoned_streams_give_their_concurrency_slots_back() -> None:
    import gc

    rec = _trickle()
    v = _short_deadline(rec, deadline=0.3, max_concurrency=1)

    async def first_chunk(gen):  # type: ignore[no-untyped-def]
        async for chunk in gen:
            return chunk
        return None

    # closed after a `break`: the slot is free at once
    gen = v.stream("One.")
    assert await first_chunk(gen)
    await gen.aclose()
    assert v._semaphore()._value == 1
    # dropped without closing: garbage collection gives it back
    assert await first_chunk(v.stream("Two."))
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)
    assert v._semaphore()._value == 1
    # kept but never read again: the slot comes back when the stream's deadline passes
    kept = v.stream("Three.")
    assert await first_chunk(kept)
    assert v._semaphore()._value == 0
    await asyncio.sleep(0.5)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    out = await asyncio.wait_for(v.synthesize("Four."), 2)  # would wait for the slot forever
    assert out.audio
    with pytest.raises(ProviderTimeoutError):  # the kept stream is over
        await first_chunk(kept)
    await kept.aclose()
    assert v._semaphore()._value == 1


async def test_audio_that_is_not_base64_is_a_typed_error() -> None:
    bad = b64(pcm_bytes(0.2, 16000))[:-3]  # cut: a length base64 cannot have
    rec = Recorder(lambda r: httpx.Response(
        200, json={"audio_base64": bad, "alignment": alignment_for("Hello.", 0.2)}))  # fmt: skip
    with pytest.raises(ProviderStatusError, match="audio_base64") as info:
        await voice(rec, output_format="pcm_16000").synthesize("Hello.")
    assert info.value.provider == "elevenlabs" and info.value.code == "invalid_response"
    assert len(rec.requests) == 1  # billed already: not asked again


async def test_a_streamed_alignment_with_missing_times_is_a_typed_error() -> None:
    first = {"audio_base64": b64(pcm_bytes(0.2, 16000)), "alignment": alignment_for("Hi ", 0.2)}
    second = {"audio_base64": "", "alignment": {"characters": list("you."),
              "character_start_times_seconds": [], "character_end_times_seconds": []}}  # fmt: skip
    body = (json.dumps(first) + "\n" + json.dumps(second) + "\n").encode()
    rec = Recorder(lambda r: httpx.Response(200, content=body))
    with pytest.raises(ProviderStatusError, match="alignment") as info:
        await voice(rec, streamed=True, output_format="pcm_16000").synthesize("Hi you.")
    assert "4 characters" in str(info.value) and info.value.code == "invalid_response"
