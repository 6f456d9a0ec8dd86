"""OpenAISpeech and OpenAIImage against OpenAI's documented wire format, through MockTransport."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from _cloud_helpers import (
    FAST,
    Playback,
    Recorder,
    b64,
    mp3_bytes,
    pcm_bytes,
    play,
    png_bytes,
)
from _loop import largest_loop_gap
from avatarkit.errors import (
    AuthenticationError,
    ContentModerationError,
    InputValidationError,
    MissingKeyError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from avatarkit.providers.openai_media import OpenAIImage, OpenAISpeech, make_image, make_voice
from avatarkit.types import AvatarPrompt, Response, UserInput

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

KEY = "sk-test-openai-key-0123456789"


def speech(rec: Recorder, **kw: object) -> OpenAISpeech:
    return OpenAISpeech(api_key=KEY, transport=rec.transport, options=FAST, **kw)  # type: ignore[arg-type]


def image(rec: Recorder, **kw: object) -> OpenAIImage:
    return OpenAIImage(api_key=KEY, transport=rec.transport, options=FAST, **kw)  # type: ignore[arg-type]


async def test_speech_request_and_output() -> None:
    audio = mp3_bytes(0.8, 24000)
    rec = Recorder(
        lambda r: httpx.Response(200, content=audio, headers={"content-type": "audio/mpeg"})
    )
    v = speech(rec, voice="coral", instructions="Speak warmly.", speed=1.25,
               organization="org-1", project="proj_1")  # fmt: skip
    out = await v.synthesize("Hello there.")
    (req,) = rec.requests
    assert req.method == "POST" and str(req.url) == "https://api.openai.com/v1/audio/speech"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["openai-organization"] == "org-1"
    assert req.headers["openai-project"] == "proj_1"
    assert rec.json() == {
        "model": "gpt-4o-mini-tts", "input": "Hello there.", "voice": "coral",
        "instructions": "Speak warmly.", "response_format": "mp3", "speed": 1.25,
    }  # fmt: skip
    assert out.audio == audio and out.format == "mp3" and out.words == []
    assert out.duration == pytest.approx(0.8, abs=0.01) and out.sample_rate == 24000
    assert out.voice == "openai:coral"
    assert not v.capabilities.word_timings


async def test_speech_pcm_custom_voice_and_long_text() -> None:
    rec = Recorder(lambda r: httpx.Response(200, content=pcm_bytes(0.5, 24000)))
    v = speech(rec, voice="voice_abc123", model="tts-1", response_format="pcm")
    text = ("This sentence is padded to be long enough. " * 60).strip()  # ~2600 chars
    text = text + " " + text  # over 4096 characters: two requests
    out = await v.synthesize(text)
    assert len(rec.requests) == 2
    assert all(len(json.loads(r.content)["input"]) <= 4096 for r in rec.requests)
    assert rec.json(0)["voice"] == {"id": "voice_abc123"}
    assert out.format == "pcm_s16le" and out.sample_rate == 24000
    assert out.duration == pytest.approx(1.0)
    assert v.estimate_cost(text) == sum(len(json.loads(r.content)["input"]) for r in rec.requests)


async def test_joining_a_long_reply_does_not_hold_up_the_event_loop() -> None:
    audio = mp3_bytes(60.0, 24000)  # a minute of speech per request
    rec = Recorder(
        lambda r: httpx.Response(200, content=audio, headers={"content-type": "audio/mpeg"})
    )
    text = ("This sentence is padded to be long enough. " * 60).strip()
    out, gap = await largest_loop_gap(speech(rec).synthesize(text + " " + text))
    assert len(rec.requests) == 2 and out.duration == pytest.approx(120.0, abs=0.2)
    assert gap < 0.25  # decoding and re-encoding two minutes of MP3 ran in a worker thread


async def test_speech_stream() -> None:
    audio = mp3_bytes(0.4, 24000)

    async def chunks():
        for i in range(0, len(audio), 300):
            yield audio[i : i + 300]

    rec = Recorder(lambda r: httpx.Response(200, content=chunks()))
    got = [c async for c in speech(rec).stream("Stream me.")]
    assert b"".join(got) == audio and len(got) > 1


async def test_speech_preflight() -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    with pytest.raises(InputValidationError, match="instructions"):
        speech(rec, model="tts-1", instructions="whisper")
    with pytest.raises(InputValidationError, match="speed"):
        speech(rec, speed=5.0)
    with pytest.raises(InputValidationError, match="cannot be joined"):
        await speech(rec, response_format="opus").synthesize("Word. " * 900)
    with pytest.raises(InputValidationError):
        await speech(rec).synthesize("")
    assert rec.requests == []


async def test_image_generation_request_and_decoding() -> None:
    png = png_bytes(96, 96)
    answer = {
        "created": 1760000000, "data": [{"b64_json": b64(png)}], "background": "opaque",
        "output_format": "png", "quality": "medium", "size": "1024x1024",
        "usage": {"input_tokens": 50, "output_tokens": 1056, "total_tokens": 1106},
    }  # fmt: skip
    rec = Recorder(lambda r: httpx.Response(200, json=answer))
    g = image(rec, quality="medium", background="opaque")
    seen: list[tuple[int, int]] = []
    pic = await g.generate(
        AvatarPrompt("studio portrait, looking at camera", negative="sunglasses"),
        progress=lambda d, t: seen.append((d, t)),
    )
    (req,) = rec.requests
    assert req.method == "POST" and req.url.path == "/v1/images/generations"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json() == {
        "prompt": "studio portrait, looking at camera\nAvoid: sunglasses", "model": "gpt-image-1",
        "n": 1, "size": "1024x1024", "quality": "medium", "background": "opaque",
    }  # fmt: skip
    assert pic.data == png and (pic.width, pic.height, pic.format) == (96, 96, "png")
    assert pic.provenance["model"] == "gpt-image-1" and pic.provenance["quality"] == "medium"
    assert seen == [(0, 1), (1, 1)]


async def test_dalle_asks_for_b64_json() -> None:
    answer = {"created": 1, "data": [{"b64_json": b64(png_bytes()), "revised_prompt": "A face."}]}
    rec = Recorder(lambda r: httpx.Response(200, json=answer))
    pic = await image(rec, model="dall-e-3", style="natural").generate(AvatarPrompt("a face"))
    assert rec.json()["response_format"] == "b64_json" and rec.json()["style"] == "natural"
    assert pic.provenance["revised_prompt"] == "A face."
    with pytest.raises(InputValidationError, match="at most 4000"):
        await image(rec, model="dall-e-3").generate(AvatarPrompt("x" * 4001))


@pytest.mark.parametrize(
    ("status", "error_body", "error", "attempts"),
    [
        (429, {"message": "You exceeded your current quota", "type": "insufficient_quota",
               "param": None, "code": "insufficient_quota"}, QuotaExceededError, 1),
        (400, {"message": "Your request was rejected by the safety system", "type": "user_error",
               "param": None, "code": "moderation_blocked"}, ContentModerationError, 1),
        (401, {"message": "Incorrect API key provided", "type": "invalid_request_error",
               "param": None, "code": "invalid_api_key"}, AuthenticationError, 1),
        (429, {"message": "Rate limit reached", "type": "requests", "param": None,
               "code": "rate_limit_exceeded"}, RateLimitError, 4),
    ],
)  # fmt: skip
async def test_errors_are_typed(status: int, error_body: dict, error: type, attempts: int) -> None:
    rec = Recorder(
        lambda r: httpx.Response(
            status, json={"error": error_body}, headers={"retry-after-ms": "1"}
        )
    )
    with pytest.raises(error) as info:
        await image(rec).generate(AvatarPrompt("a face"))
    assert info.value.code == error_body["code"]
    assert len(rec.requests) == attempts


async def test_keys(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        make_voice(None)
    with pytest.raises(MissingKeyError):
        make_image(None)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    v, g = make_voice("nova", model="tts-1-hd"), make_image("dall-e-2")
    assert (v.voice, v.model, g.model) == ("nova", "tts-1-hd", "dall-e-2")
    caplog.set_level(logging.DEBUG)
    rec = Recorder(
        lambda r: httpx.Response(
            401,
            json={
                "error": {
                    "message": f"Incorrect API key provided: {KEY}",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    with pytest.raises(AuthenticationError) as info:
        await speech(rec).synthesize("Hi.")
    assert KEY not in str(info.value) and KEY not in caplog.text
    assert KEY not in repr(v) and KEY not in repr(g)
    ok = Recorder(lambda r: httpx.Response(200, content=pcm_bytes(0.2, 24000)))
    said = await speech(ok, response_format="pcm").synthesize("Hi.")
    Response(input=UserInput(text="x"), voice=said).save(tmp_path)
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes()


def test_cloud_adapters_import_no_vendor_sdk_or_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, avatarkit.providers.openai_media, avatarkit.providers.elevenlabs, "
        "avatarkit.providers.did, avatarkit.providers.automatic1111\n"
        "bad = [m for m in ('openai', 'torch', 'elevenlabs', 'pysbd') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"voice": ""}, "voice"), ({"voice": "   "}, "voice"), ({"model": ""}, "model")],
)
async def test_bad_speech_settings_are_refused_before_any_request(
    options: dict[str, object], field: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    with pytest.raises(InputValidationError) as info:
        await speech(rec, **options).synthesize("Hello there.")
    assert info.value.field == field and rec.requests == []


async def test_one_speech_request_over_the_limit_is_a_typed_error() -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    with pytest.raises(InputValidationError) as info:
        await speech(rec).speech("x" * 5000)
    assert info.value.field == "input" and rec.requests == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"size": "banana"}, "size"),
        ({"size": "0x0"}, "size"),
        ({"quality": "ultra"}, "quality"),
        ({"output_format": "gif"}, "output_format"),
        ({"background": "pink"}, "background"),
    ],
)
async def test_bad_image_settings_are_refused_before_any_request(
    options: dict[str, object], field: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    with pytest.raises(InputValidationError) as info:
        await image(rec, **options).generate(AvatarPrompt("a friendly face"))
    assert info.value.field == field and rec.requests == []


async def test_a_slow_speech_stream_consumer_gets_a_timeout_not_a_cancellation() -> None:
    import asyncio
    from dataclasses import replace

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield pcm_bytes(0.05, 24000)

    rec = Recorder(lambda r: httpx.Response(200, content=chunks()))
    v = OpenAISpeech(api_key=KEY, transport=rec.transport, response_format="pcm",
                     options=replace(FAST, deadline=0.4))  # fmt: skip
    playback = Playback()
    with pytest.raises(ProviderTimeoutError, match="deadline"):
        await play(v.stream("Stream me."), playback)
    assert not playback.cancelled_at and 2 <= playback.chunks < 20
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    gen = v.stream("Stream me.")
    async for _ in gen:
        break  # stop listening, keep the generator: its deadline must not fire into us later
    await asyncio.sleep(0.6)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await gen.aclose()


async def test_an_image_answered_as_a_url_is_downloaded_without_the_key() -> None:
    # OpenAI-compatible servers (and DALL·E without response_format) answer with a `url`
    png = png_bytes(72, 90)
    files = "https://files.example.test/gen/a.png?se=2030&sig=signed-f00d"

    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "POST":
            return httpx.Response(200, json={"created": 1, "data": [{"url": files}]})
        return httpx.Response(200, content=png, headers={"content-type": "image/png"})

    rec = Recorder(handler)
    g = image(rec, model="stablediffusion", base_url="http://localai.test:8080/v1")
    pic = await g.generate(AvatarPrompt("portrait"))
    assert pic.data == png and (pic.width, pic.height, pic.format) == (72, 90, "png")
    post, get = rec.requests
    assert post.method == "POST" and "response_format" not in rec.json(0)
    assert get.method == "GET" and str(get.url) == files
    assert "authorization" not in get.headers  # another origin: the key stays home


async def test_an_image_url_download_is_limited_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    import avatarkit.providers.openai_media as media

    monkeypatch.setattr(media, "MAX_IMAGE_BYTES", 1000)
    big = png_bytes(256, 256) + b"\0" * 2000

    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "POST":
            return httpx.Response(200, json={"data": [{"url": "https://f.test/big.png"}]})
        return httpx.Response(200, content=big)

    rec = Recorder(handler)
    with pytest.raises(ProviderStatusError, match="larger than 1000 bytes") as info:
        await image(rec, model="sd").generate(AvatarPrompt("portrait"))
    assert not info.value.retryable and [r.method for r in rec.requests] == ["POST", "GET"]

    rec = Recorder(lambda r: httpx.Response(200, json={"data": [{"url": "ftp://f.test/a.png"}]}))
    with pytest.raises(ProviderStatusError, match="no image"):
        await image(rec, model="sd").generate(AvatarPrompt("portrait"))


@pytest.mark.parametrize(
    ("spec", "model", "voice"),
    [
        ("openai", "gpt-4o-mini-tts", "alloy"),
        ("openai:coral", "gpt-4o-mini-tts", "coral"),
        ("openai:tts-1", "tts-1", "alloy"),  # the spec providers/openai.py documents
        ("openai:tts-1-hd", "tts-1-hd", "alloy"),
        ("openai:gpt-4o-mini-tts", "gpt-4o-mini-tts", "alloy"),
        ("openai:tts-1-hd:nova", "tts-1-hd", "nova"),
        ("openai:kokoro:af_bella", "kokoro", "af_bella"),  # a compatible server's own names
    ],
)
async def test_voice_specs_name_a_voice_a_model_or_both(spec: str, model: str, voice: str) -> None:
    from avatarkit.registry import create

    rec = Recorder(lambda r: httpx.Response(200, content=pcm_bytes(0.1, 24000)))
    v = create("voice", spec, api_key=KEY, transport=rec.transport, options=FAST,
               response_format="pcm")  # fmt: skip
    assert (v.model, v.voice) == (model, voice)
    await v.synthesize("Hello.")
    assert (rec.json()["model"], rec.json()["voice"]) == (model, voice)


def test_a_voice_spec_conflicting_with_its_options_is_refused() -> None:
    assert make_voice("tts-1", model="tts-1", api_key=KEY).model == "tts-1"
    assert make_voice(None, model="tts-1-hd", voice="echo", api_key=KEY).voice == "echo"
    with pytest.raises(InputValidationError, match="model"):
        make_voice("tts-1", model="tts-1-hd", api_key=KEY)
    with pytest.raises(InputValidationError, match="voice"):
        make_voice("tts-1:nova", voice="echo", api_key=KEY)
    with pytest.raises(InputValidationError, match="spec"):
        make_voice("tts-1:nova:extra", api_key=KEY)
