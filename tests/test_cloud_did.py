"""DIDRenderer against D-ID's documented wire format, through httpx.MockTransport."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import httpx
import pytest
from PIL import Image

from _cloud_helpers import FAST, Recorder, mp3_bytes, multipart_fields, pcm_bytes, png_bytes
from avatarkit.errors import (
    AuthenticationError,
    ContentModerationError,
    InputValidationError,
    MissingKeyError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
)
from avatarkit.providers.did import (
    DIDRenderer,
    ElevenLabsTTS,
    MicrosoftTTS,
    driver_expressions,
    provider,
)
from avatarkit.registry import Registry
from avatarkit.types import AvatarImage, Emotion, FacialExpression, Timeline, VoiceOutput

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

KEY = "YWxpY2VAZXhhbXBsZS5jb20:secretpart123"
RESULT = "https://d-id-talks-prod.s3.us-west-2.amazonaws.com/auth0%7C1/tlk_1/result.mp4?AWSAccessKeyId=AK&Expires=1&Signature=s"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2000


def photo(fmt: str = "PNG") -> AvatarImage:
    im = Image.new("RGB", (96, 128), (180, 140, 120))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    f = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}[fmt]
    return AvatarImage(data=buf.getvalue(), format=f, width=96, height=128)  # type: ignore[arg-type]


def speech(seconds: float = 1.2) -> VoiceOutput:
    return VoiceOutput(audio=mp3_bytes(seconds), format="mp3", sample_rate=44100, duration=seconds)


class FakeDID:
    """Answers like api.d-id.com (and its S3 bucket) for a whole talk."""

    def __init__(self, statuses: list[str] | None = None, final: dict | None = None) -> None:
        self.statuses = statuses or ["created", "started", "done"]
        self.final = final or {}
        self.polls = 0

    def __call__(self, r: httpx.Request) -> httpx.Response:
        path = r.url.path
        if r.url.host.endswith("amazonaws.com"):
            return httpx.Response(200, content=VIDEO, headers={"content-type": "video/mp4"})
        if r.method == "POST" and path == "/images":
            return httpx.Response(
                201,
                json={
                    "url": "s3://d-id-images-prod/auth0|1/img_1/avatar.png",
                    "id": "img_1",
                    "faces": [{"size": 80}],
                },
            )
        if r.method == "POST" and path == "/audios":
            return httpx.Response(
                201,
                json={
                    "url": "s3://d-id-audios-prod/auth0|1/aud_1/speech.mp3",
                    "id": "aud_1",
                    "duration": 1.2,
                },
            )
        if r.method == "POST" and path == "/talks":
            return httpx.Response(
                201,
                json={
                    "id": "tlk_1",
                    "object": "talk",
                    "created_by": "auth0|1",
                    "created_at": "2026-01-01T00:00:00.000Z",
                    "status": "created",
                },
            )
        if r.method == "GET" and path == "/talks/tlk_1":
            status = self.statuses[min(self.polls, len(self.statuses) - 1)]
            self.polls += 1
            body = {
                "id": "tlk_1",
                "status": status,
                "created_at": "2026-01-01T00:00:00.000Z",
                "source_url": "s3://x",
                "audio_url": "s3://y",
                "config": {"stitch": True},
            }
            if status == "done":
                body |= {
                    "result_url": RESULT,
                    "duration": 1.24,
                    "metadata": {"num_frames": 31, "resolution": [96, 128], "size_kib": 2},
                }
            body |= self.final if status != "done" or not self.final else {}
            return httpx.Response(200, json=body)
        if r.method == "DELETE":
            return httpx.Response(200 if path.startswith("/talks") else 204, json={})
        return httpx.Response(404, json={"kind": "NotFoundError", "description": "no route"})


def renderer(rec: Recorder, **kw: object) -> DIDRenderer:
    kw.setdefault("poll_interval", 0.001)
    return DIDRenderer(api_key=KEY, transport=rec.transport, options=FAST, **kw)  # type: ignore[arg-type]


async def test_render_from_our_audio_end_to_end(tmp_path: Path) -> None:
    rec = Recorder(FakeDID())
    r = renderer(rec, delete_after=True)
    timeline = Timeline(
        duration=1.2,
        expressions=[
            FacialExpression(time=0.4, emotion=Emotion.HAPPY, intensity=0.7, transition=0.2),
            FacialExpression(time=0.8, emotion=Emotion.SURPRISED, intensity=1.0, transition=0.2),
        ],
    )
    seen: list[tuple[int, int]] = []
    out = tmp_path / "clip.mp4"
    said = speech()
    video = await r.render(
        photo(), said, timeline, output=out, progress=lambda d, t: seen.append((d, t))
    )

    calls = [(q.method, q.url.host, q.url.path) for q in rec.requests]
    assert calls[:2] == [("POST", "api.d-id.com", "/images"), ("POST", "api.d-id.com", "/audios")]
    assert calls[2] == ("POST", "api.d-id.com", "/talks")
    assert calls[-3:] == [
        ("GET", "d-id-talks-prod.s3.us-west-2.amazonaws.com", "/auth0|1/tlk_1/result.mp4"),
        ("DELETE", "api.d-id.com", "/talks/tlk_1"),
        ("DELETE", "api.d-id.com", "/images/img_1"),
    ]
    assert str(rec.requests[-3].url) == RESULT  # the signed URL exactly as given
    for q in rec.requests:
        if q.url.host == "api.d-id.com":
            assert q.headers["authorization"] == f"Basic {KEY}"  # verbatim, not re-encoded
        else:
            assert "authorization" not in q.headers  # never send our key to S3

    image_form = multipart_fields(rec.requests[0])
    assert image_form["image"][0] == "avatar.png" and image_form["image"][1] == photo().data
    audio_form = multipart_fields(rec.requests[1])
    assert audio_form["audio"] == ("speech.mp3", said.audio)
    assert json.loads(rec.requests[2].content) == {
        "source_url": "s3://d-id-images-prod/auth0|1/img_1/avatar.png",
        "script": {
            "type": "audio",
            "audio_url": "s3://d-id-audios-prod/auth0|1/aud_1/speech.mp3",
            "subtitles": False,
        },
        "config": {
            "stitch": True,
            "result_format": "mp4",
            "driver_expressions": {
                "expressions": [
                    {"start_frame": 0, "expression": "neutral", "intensity": 1.0},
                    {"start_frame": 10, "expression": "happy", "intensity": 0.7},
                    {"start_frame": 20, "expression": "surprise", "intensity": 1.0},
                ],
                "transition_frames": 5,
            },
        },
    }
    assert out.read_bytes() == VIDEO
    assert video.path == out and video.frame_count == 31 and video.duration == pytest.approx(1.24)
    assert (video.width, video.height, video.has_audio, video.renderer) == (96, 128, True, "d-id")
    assert seen[-1] == (3, 3) and seen[0] == (0, 3)
    assert not [p for p in tmp_path.iterdir() if p.name != "clip.mp4"]  # no temp leftovers


async def test_render_text_with_provider_voice_and_webhook(tmp_path: Path) -> None:
    rec = Recorder(FakeDID())
    r = renderer(rec, voice=ElevenLabsTTS(voice_id="abc", model_id="eleven_flash_v2_5"),
                 webhook="https://example.com/hook", result_format="mov", stitch=False)  # fmt: skip
    await r.render_text(photo("JPEG"), "Hello from D-ID.", output=tmp_path / "a.mov")
    assert [q.url.path for q in rec.requests[:2]] == ["/images", "/talks"]  # no audio upload
    assert multipart_fields(rec.requests[0])["image"][0] == "avatar.jpg"
    body = json.loads(rec.requests[1].content)
    assert body["script"] == {
        "type": "text", "input": "Hello from D-ID.", "ssml": False, "subtitles": False,
        "provider": {"type": "elevenlabs", "voice_id": "abc", "model_id": "eleven_flash_v2_5"},
    }  # fmt: skip
    assert body["webhook"] == "https://example.com/hook"
    assert body["config"] == {"stitch": False, "result_format": "mov"}


async def test_urls_skip_the_uploads(tmp_path: Path) -> None:
    rec = Recorder(FakeDID())
    await renderer(rec).render(
        photo(), speech(), Timeline(), output=tmp_path / "v.mp4",
        image_url="https://example.com/me.JPG", audio_url="s3://bucket/hello.wav",
    )  # fmt: skip
    assert rec.requests[0].url.path == "/talks"
    body = json.loads(rec.requests[0].content)
    assert body["source_url"] == "https://example.com/me.JPG"
    assert body["script"]["audio_url"] == "s3://bucket/hello.wav"
    with pytest.raises(InputValidationError, match="image_url"):
        await renderer(rec).submit(photo(), speech(), image_url="http://example.com/me.jpg")
    with pytest.raises(InputValidationError, match="audio_url"):
        await renderer(rec).submit(photo(), speech(), audio_url="https://x.com/a.ogg")


async def test_pcm_and_webp_are_converted_before_upload() -> None:
    rec = Recorder(FakeDID())
    r = renderer(rec)
    pcm = VoiceOutput(
        audio=pcm_bytes(0.5, 16000), format="pcm_s16le", sample_rate=16000, duration=0.5
    )
    await r.submit(photo("WEBP"), pcm)
    img = multipart_fields(rec.requests[0])["image"]
    assert img[0] == "avatar.png" and img[1][:8] == b"\x89PNG\r\n\x1a\n"
    aud = multipart_fields(rec.requests[1])["audio"]
    assert aud[0] == "speech.wav" and aud[1][:4] == b"RIFF"


def test_a_camera_jpeg_is_uploaded_as_a_jpeg(tmp_path: Path) -> None:
    # cameras' JPEGs often append a second picture (MPO); avatarkit calls them "jpeg"
    buf = io.BytesIO()
    first, second = Image.new("RGB", (96, 128), "tan"), Image.new("RGB", (96, 128), "gray")
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    path = tmp_path / "camera.jpg"
    path.write_bytes(buf.getvalue())
    image = AvatarImage.load(path)
    assert image.format == "jpeg"
    data, mime = renderer(Recorder(FakeDID())).check_image(image)
    assert (data, mime) == (image.data, "image/jpeg")


def test_credit_estimate() -> None:
    r = DIDRenderer(api_key=KEY, pad_audio=1.0)
    assert r.estimate_credits(speech(14.0)) == 1  # 14 s + 1 s of padding
    assert r.estimate_credits(speech(14.5)) == 2
    assert r.estimate_credits("x" * 300) == 2  # ~20 s of speech


def test_driver_expressions_mapping() -> None:
    exprs = [
        FacialExpression(time=0.0, emotion=Emotion.SAD, intensity=0.3, transition=0.4),
        FacialExpression(time=0.0, emotion=Emotion.ANGRY, intensity=0.6, transition=0.4),
        FacialExpression(time=1.0, emotion=Emotion.ANGRY, intensity=0.6, transition=0.4),
        FacialExpression(time=2.0, emotion=Emotion.FEARFUL, intensity=0.5, transition=0.4),
        FacialExpression(time=9.0, emotion=Emotion.HAPPY, intensity=0.5, transition=0.4),
    ]
    d = driver_expressions(exprs, fps=25, duration=3.0)
    assert d is not None
    assert [(e.start_frame, e.expression, e.intensity) for e in d.expressions] == [
        (0, "serious", 0.6),  # same frame: the later keyframe wins; repeats merged
        (50, "surprise", 0.5),  # after the clip's end: dropped
    ]
    assert d.transition_frames == 10
    assert driver_expressions([], fps=25) is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            401,
            {"kind": "AuthorizationError", "description": "user unauthenticated"},
            AuthenticationError,
        ),
        (
            402,
            {"kind": "InsufficientCreditsError", "description": "not enough credits"},
            QuotaExceededError,
        ),
        (
            451,
            {"kind": "ImageModerationError", "description": "image rejected"},
            ContentModerationError,
        ),
        (400, {"kind": "BadRequestError", "description": "invalid actor url"}, ProviderStatusError),
        (415, {"kind": "UnsupportedMimeTypeError", "description": "bad type"}, ProviderStatusError),
    ],
)
async def test_error_statuses_are_typed(
    status: int, body: dict, error: type, tmp_path: Path
) -> None:
    rec = Recorder(lambda r: httpx.Response(status, json=body))
    with pytest.raises(error) as info:
        await renderer(rec).render(photo(), speech(), Timeline(), output=tmp_path / "x.mp4")
    assert info.value.code == body["kind"] and body["description"] in str(info.value)
    assert not list(tmp_path.iterdir())
    assert all(q.url.path in ("/images", "/audios") for q in rec.requests)
    assert len(rec.requests) <= 2  # 4xx are final


async def test_delete_not_ready_409_is_retried() -> None:
    answers = iter([
        httpx.Response(409, json={"kind": "NotReadyError", "description": "talk not ready"}),
        httpx.Response(200, json={"id": "tlk_1"}),
    ])  # fmt: skip
    rec = Recorder(lambda r: next(answers))
    await renderer(rec).delete_talk("tlk_1")
    assert [(q.method, q.url.path) for q in rec.requests] == [("DELETE", "/talks/tlk_1")] * 2


@pytest.mark.parametrize(
    ("status", "error"), [("error", ProviderStatusError), ("rejected", ContentModerationError)]
)
async def test_failed_talk_raises_with_description(
    status: str, error: type, tmp_path: Path
) -> None:
    error_body = {"error": {"kind": "FaceError", "description": "no face detected"}}
    fake = FakeDID(statuses=["started", status], final=error_body)
    with pytest.raises(error, match="no face detected") as info:
        await renderer(Recorder(fake)).render(
            photo(), speech(), Timeline(), output=tmp_path / "x.mp4"
        )
    assert info.value.code == "FaceError"
    assert not list(tmp_path.iterdir())


async def test_talk_that_never_finishes_hits_the_deadline(tmp_path: Path) -> None:
    fake = FakeDID(statuses=["started"])
    r = renderer(Recorder(fake), render_deadline=0.2, poll_interval=0.02, poll_max_interval=0.05)
    with pytest.raises(ProviderTimeoutError, match="tlk_1"):
        await r.render(photo(), speech(), Timeline(), output=tmp_path / "x.mp4")
    assert 3 <= fake.polls <= 12  # backoff grows the waits
    assert not list(tmp_path.iterdir())


async def test_preflight_rejects_bad_input_before_any_request() -> None:
    rec = Recorder(FakeDID())
    r = renderer(rec, max_image_bytes=100, max_audio_seconds=5)
    with pytest.raises(InputValidationError, match="MB"):
        await r.render(photo(), speech(), Timeline())
    r = renderer(rec, max_audio_seconds=1.0)
    with pytest.raises(InputValidationError, match="at most 1 s"):
        await r.render(photo(), speech(2.0), Timeline())
    with pytest.raises(InputValidationError, match="cannot be read"):
        await r.render(
            AvatarImage(data=b"not an image", width=1, height=1), speech(0.5), Timeline()
        )
    procedural = AvatarImage(data=png_bytes(), width=64, height=80, kind="procedural")
    with pytest.raises(InputValidationError, match="procedural"):
        await r.render(procedural, speech(0.5), Timeline())
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(InputValidationError, match="JPEG or PNG"):
        await r.render(AvatarImage(data=gif.getvalue(), width=8, height=8), speech(0.5), Timeline())
    with pytest.raises(InputValidationError, match="3 characters"):
        await r.render_text(photo(), "hi")
    with pytest.raises(InputValidationError, match="at most 20"):
        await renderer(rec, max_text_chars=20).render_text(photo(), "x" * 21)
    with pytest.raises(InputValidationError, match="https"):
        DIDRenderer(api_key=KEY, webhook="http://example.com/hook")
    assert rec.requests == []


async def test_key_handling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.delenv("DID_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="DID_API_KEY"):
        DIDRenderer()
    monkeypatch.setenv("DID_API_KEY", KEY)
    assert DIDRenderer()._http._headers["Authorization"] == f"Basic {KEY}"
    caplog.set_level(logging.DEBUG)
    answers = iter([
        httpx.Response(500, text=f"Authorization: Basic {KEY} failed"),
        httpx.Response(401, json={"kind": "AuthorizationError", "description": f"{KEY} unknown"}),
    ])  # fmt: skip
    r = renderer(Recorder(lambda q: next(answers)))
    with pytest.raises(AuthenticationError) as info:
        await r.render(photo(), speech(0.5), Timeline(), output=tmp_path / "x.mp4")
    assert KEY not in str(info.value) and "secretpart123" not in caplog.text
    assert KEY not in repr(r) and "secretpart123" not in caplog.text
    await renderer(Recorder(FakeDID())).render(
        photo(), speech(0.5), Timeline(), output=tmp_path / "y.mp4"
    )
    for f in tmp_path.iterdir():
        assert b"secretpart123" not in f.read_bytes()


def test_registry_spec() -> None:
    reg = Registry(group="avatarkit.none")
    reg.register(provider)
    r = reg.create("renderer", "d-id:en-GB-SoniaNeural", api_key=KEY)
    assert isinstance(r, DIDRenderer) and r.voice == MicrosoftTTS(voice_id="en-GB-SoniaNeural")
    assert r.capabilities.expressions and r.capabilities.formats == ("mp4",)


@pytest.mark.parametrize(("options", "field"), [({"result_format": "avi"}, "result_format"),
                                                ({"pad_audio": 100}, "pad_audio")])  # fmt: skip
def test_bad_talk_settings_are_typed_errors(options: dict[str, object], field: str) -> None:
    with pytest.raises(InputValidationError) as info:
        DIDRenderer(api_key=KEY, **options)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize("fmt", ["mp3", "wav", "flac"])
async def test_audio_that_is_not_what_its_format_says_is_refused_before_upload(fmt: str) -> None:
    rec = Recorder(FakeDID())
    garbage = VoiceOutput(audio=b"this is not audio at all", format=fmt, sample_rate=44100,  # type: ignore[arg-type]
                          duration=1.0, text="hi")  # fmt: skip
    with pytest.raises(InputValidationError, match="audio"):
        await renderer(rec).render(photo(), garbage, Timeline())
    assert rec.requests == []  # no upload, no paid talk


async def test_an_expired_result_link_is_not_an_authentication_error(tmp_path: Path) -> None:
    fake = FakeDID()

    def expired(r: httpx.Request) -> httpx.Response:
        if r.url.host.endswith("amazonaws.com"):
            return httpx.Response(
                403,
                text="<?xml version='1.0'?><Error><Code>AccessDenied</Code>"
                "<Message>Request has expired</Message></Error>",
                headers={"content-type": "application/xml"},
            )
        return fake(r)

    with pytest.raises(ProviderStatusError, match="result link") as info:
        await renderer(Recorder(expired)).render(
            photo(), speech(), Timeline(), output=tmp_path / "x.mp4"
        )
    assert not isinstance(info.value, AuthenticationError)
    assert info.value.status == 403 and not info.value.retryable
    assert not list(tmp_path.iterdir())


async def test_a_failed_upload_cancels_the_other_one() -> None:
    import asyncio

    audio_started, audio_cancelled = asyncio.Event(), asyncio.Event()

    async def answer(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/audios":
            audio_started.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                audio_cancelled.set()
                raise
            return httpx.Response(503, json={"kind": "Busy", "description": "busy"})
        await audio_started.wait()
        return httpx.Response(400, json={"kind": "ValidationError", "description": "no face"})

    rec = Recorder(answer)
    with pytest.raises(ProviderStatusError, match="no face"):
        await asyncio.wait_for(renderer(rec).render(photo(), speech(), Timeline()), 2)
    assert audio_cancelled.is_set()  # not left uploading (and retrying) after render() raised
    await asyncio.sleep(0.1)
    assert [q.url.path for q in rec.requests].count("/audios") == 1


async def test_a_video_rendered_without_output_lives_in_a_folder_the_callers_discard() -> None:
    import tempfile

    from avatarkit._files import TEMP_VIDEO_PREFIX, discard_temporary_video

    video = await renderer(Recorder(FakeDID())).render(photo(), speech(), Timeline())
    folder = video.path.parent
    assert folder.name.startswith(TEMP_VIDEO_PREFIX)
    assert folder.parent == Path(tempfile.gettempdir())
    assert video.path.read_bytes() == VIDEO and video.path.suffix == ".mp4"
    discard_temporary_video(video)  # what the CLI and batch do after saving the reply
    assert not folder.exists()


async def test_a_failed_download_leaves_no_temporary_folder() -> None:
    import tempfile

    from avatarkit._files import TEMP_VIDEO_PREFIX

    fake = FakeDID()

    def no_result(r: httpx.Request) -> httpx.Response:
        if r.url.host.endswith("amazonaws.com"):
            return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")
        return fake(r)

    before = set(Path(tempfile.gettempdir()).glob(f"{TEMP_VIDEO_PREFIX}*"))
    with pytest.raises(ProviderStatusError):
        await renderer(Recorder(no_result)).render(photo(), speech(), Timeline())
    assert set(Path(tempfile.gettempdir()).glob(f"{TEMP_VIDEO_PREFIX}*")) == before


async def test_a_failed_clean_up_still_returns_the_paid_video(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDID()

    def refuse_deletes(r: httpx.Request) -> httpx.Response:
        if r.method == "DELETE":
            return httpx.Response(409, json={"kind": "NotReadyError", "description": "not ready"})
        return fake(r)

    rec = Recorder(refuse_deletes)
    out = tmp_path / "clip.mp4"
    with caplog.at_level(logging.WARNING, logger="avatarkit"):
        video = await renderer(rec, delete_after=True).render(
            photo(), speech(), Timeline(), output=out
        )
    assert video.path == out and out.read_bytes() == VIDEO  # the render the caller paid for
    deletes = [q.url.path for q in rec.requests if q.method == "DELETE"]
    # the HTTP layer's usual retries (FAST: 3) for each, no more; the image is tried too
    assert deletes.count("/talks/tlk_1") == FAST.max_retries + 1
    assert deletes.count("/images/img_1") == FAST.max_retries + 1
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "delete" in r.message]
    assert {"tlk_1", "img_1"} <= {w for r in warned for w in ("tlk_1", "img_1") if w in r.message}
    assert all(r.name.startswith("avatarkit") for r in warned)


async def test_a_failed_talk_whose_error_is_plain_text_says_so(tmp_path: Path) -> None:
    fake = FakeDID(statuses=["started", "error"], final={"error": "internal failure"})
    with pytest.raises(ProviderStatusError, match="internal failure"):
        await renderer(Recorder(fake)).render(
            photo(), speech(), Timeline(), output=tmp_path / "x.mp4"
        )
    assert fake.polls == 2  # read once, not re-polled as an unreadable answer


async def test_a_web_page_from_the_result_link_is_not_saved_as_the_video(tmp_path: Path) -> None:
    fake = FakeDID()

    def portal(r: httpx.Request) -> httpx.Response:
        if r.url.host.endswith("amazonaws.com"):  # a captive portal or a proxy's page
            return httpx.Response(
                200, text="<html><body>Sign in</body></html>", headers={"content-type": "text/html"}
            )
        return fake(r)

    with pytest.raises(ProviderStatusError, match="not a video"):
        await renderer(Recorder(portal)).render(
            photo(), speech(), Timeline(), output=tmp_path / "x.mp4"
        )
    assert not list(tmp_path.iterdir())


async def test_an_unknown_talk_status_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDID(statuses=["created", "queued", "queued", "done"])
    await renderer(Recorder(fake)).render(photo(), speech(), Timeline(), output=tmp_path / "x.mp4")
    notes = [r for r in caplog.records if "'queued'" in r.getMessage()]
    assert len(notes) == 1
