"""D-ID talks over plain HTTP: a photo and our own audio (or a provider voice) become a video.

Flow: pre-flight checks (nothing is sent for bad input) → ``POST /images`` and ``POST /audios``
(multipart) → ``POST /talks`` with ``config.driver_expressions`` from our expression keyframes →
poll ``GET /talks/{id}`` with backoff until ``done`` (or a webhook) → download ``result_url``
into the output file atomically → optionally ``DELETE /talks/{id}`` and the uploaded image (best
effort: a failed clean-up is logged, and the video is still returned).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from avatarkit._aio import concurrently
from avatarkit._files import TEMP_VIDEO_PREFIX, write_bytes_atomic
from avatarkit._http import DEFAULT_OPTIONS, ConnectOptions, HttpClient, error_for
from avatarkit._image import decode_picture, encode_png, read_picture
from avatarkit._validation import build
from avatarkit.audio import decode_audio, encode_wav
from avatarkit.config import get_logger, resolve_key
from avatarkit.errors import (
    AuthenticationError,
    ContentModerationError,
    InputValidationError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
)
from avatarkit.ports import ProgressCallback, RendererCapabilities
from avatarkit.registry import Provider
from avatarkit.types import (
    AvatarImage,
    AvatarVideo,
    Emotion,
    FacialExpression,
    Timeline,
    VoiceOutput,
)

__all__ = [
    "EXPRESSION_MAP",
    "AudioScript",
    "AudioUploadResponse",
    "CreateTalkRequest",
    "CreateTalkResponse",
    "DIDRenderer",
    "DriverExpression",
    "DriverExpressions",
    "ElevenLabsTTS",
    "ImageUploadResponse",
    "MicrosoftTTS",
    "Talk",
    "TalkConfig",
    "TextScript",
    "driver_expressions",
    "provider",
]

BASE_URL = "https://api.d-id.com"
_log = get_logger("avatarkit.providers.did")

DIDExpression = Literal["neutral", "happy", "serious", "surprise"]

EXPRESSION_MAP: dict[Emotion, DIDExpression] = {
    Emotion.NEUTRAL: "neutral",
    Emotion.HAPPY: "happy",
    Emotion.SURPRISED: "surprise",
    Emotion.FEARFUL: "surprise",
    Emotion.ANGRY: "serious",
    Emotion.SAD: "serious",
    Emotion.THINKING: "serious",
    Emotion.DISGUSTED: "serious",
}
"""Our emotions on D-ID's four expressions (D-ID has no sad or angry face; serious is closest)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- request models


class MicrosoftTTS(_Body):
    """``script.provider`` for a Microsoft voice (D-ID's default)."""

    type: Literal["microsoft"] = "microsoft"
    voice_id: str = "en-US-JennyNeural"
    voice_config: dict[str, Any] | None = None
    """``{style, rate, pitch}``."""
    language: str | None = None


class ElevenLabsTTS(_Body):
    """``script.provider`` for an ElevenLabs voice rendered by D-ID."""

    type: Literal["elevenlabs"] = "elevenlabs"
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    model_id: str | None = None
    language: str | None = None
    voice_config: dict[str, Any] | None = None
    """``{stability, similarity_boost, rate, style, use_speaker_boost}``."""


class TextScript(_Body):
    """A script D-ID speaks itself with a provider voice."""

    type: Literal["text"] = "text"
    input: str
    ssml: bool = False
    subtitles: bool = False
    provider: Annotated[MicrosoftTTS | ElevenLabsTTS, Field(discriminator="type")] | None = None


class AudioScript(_Body):
    """A script that is our own audio (so the voice is ours)."""

    type: Literal["audio"] = "audio"
    audio_url: str
    subtitles: bool = False


class DriverExpression(_Body):
    """One expression keyframe: from ``start_frame`` on, until the next one."""

    start_frame: int = Field(ge=0)
    expression: DIDExpression
    intensity: float = Field(ge=0.0, le=1.0)


class DriverExpressions(_Body):
    """``config.driver_expressions``."""

    expressions: list[DriverExpression]
    transition_frames: int | None = Field(default=None, ge=0)


class TalkConfig(_Body):
    """``config`` of a talk."""

    stitch: bool | None = None
    result_format: Literal["mp4", "mov"] | None = None
    fluent: bool | None = None
    pad_audio: float | None = Field(default=None, ge=0.0, le=60.0)
    driver_expressions: DriverExpressions | None = None


class CreateTalkRequest(_Body):
    """``POST /talks``."""

    source_url: str
    script: Annotated[TextScript | AudioScript, Field(discriminator="type")]
    config: TalkConfig | None = None
    user_data: str | None = Field(default=None, min_length=1, max_length=1000)
    name: str | None = None
    webhook: str | None = None
    result_url: str | None = None


# ---------------------------------------------------------------------- response models


class ImageUploadResponse(_Wire):
    """``POST /images`` (201)."""

    url: str
    id: str | None = None
    faces: list[dict[str, Any]] | None = None


class AudioUploadResponse(_Wire):
    """``POST /audios`` (201)."""

    url: str
    id: str | None = None
    duration: float | None = None


class CreateTalkResponse(_Wire):
    """``POST /talks`` (201)."""

    id: str
    object: str | None = None
    created_at: str | None = None
    status: str = "created"


_TALK_STATUSES = ("created", "started", "done", "error", "rejected")


class TalkError(_Wire):
    """The ``error`` of a failed talk (not in the spec; read when present)."""

    kind: str | None = None
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """Some failures carry the error as plain text, not as an object."""
        return {"description": value} if isinstance(value, str) else value


class Talk(_Wire):
    """``GET /talks/{id}``."""

    id: str
    status: str
    """created | started | done | error | rejected."""
    result_url: str | None = None
    source_url: str | None = None
    audio_url: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    modified_at: str | None = None
    duration: float | None = None
    error: TalkError | None = None
    metadata: dict[str, Any] | None = None


# ---------------------------------------------------------------------- helpers


def driver_expressions(
    expressions: Sequence[FacialExpression], fps: float, duration: float | None = None
) -> DriverExpressions | None:
    """D-ID ``driver_expressions`` from our keyframes (frame numbers from times).

    The face is neutral before the first keyframe; keyframes past ``duration`` are dropped;
    repeats are merged; ``transition_frames`` is the mean blend time in frames.
    """
    if not expressions:
        return None
    ordered = sorted(expressions, key=lambda e: e.time)
    last_frame = None if duration is None else int(duration * fps)
    out: list[DriverExpression] = []
    for e in ordered:
        frame = round(e.time * fps)
        if last_frame is not None and frame > last_frame:
            break
        item = DriverExpression(
            start_frame=frame, expression=EXPRESSION_MAP[e.emotion], intensity=e.intensity
        )
        if out and out[-1].start_frame == frame:
            out[-1] = item
        elif not out or (out[-1].expression, out[-1].intensity) != (item.expression, e.intensity):
            out.append(item)
    if not out:
        return None
    if out[0].start_frame > 0:
        out.insert(0, DriverExpression(start_frame=0, expression="neutral", intensity=1.0))
    blend = [e.transition for e in ordered]
    return DriverExpressions(
        expressions=out, transition_frames=round(sum(blend) / len(blend) * fps)
    )


def _classify(response: httpx.Response, err: ProviderError) -> ProviderError:
    if response.status_code == 409:  # NotReadyError: the talk is still being made
        return error_for("d-id", response, ProviderStatusError, retryable=True)
    return err


def _classify_download(response: httpx.Response, err: ProviderError) -> ProviderError:
    """A refused result link is an expired one, not a refused key.

    The link is a signed S3 URL fetched without our key: a 401/403 means it expired (or was
    revoked).
    """
    if isinstance(err, AuthenticationError):
        return error_for(
            "d-id",
            response,
            ProviderStatusError,
            message="the result link has expired or was refused (no key is sent to it); "
            "get_talk(id) gives a fresh result_url",
            retryable=False,
        )
    return err


_CLEANUP_DEADLINE = 30.0
"""Seconds the clean-up after a render may take, retries included, before it is given up."""

_IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg"}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_AUDIO_EXTS = (".m4a", ".flac", ".mp3", ".mp4", ".wav")


def check_url(url: str, extensions: tuple[str, ...], field: str) -> str:
    """A media URL D-ID can fetch: https or s3, ending in one of ``extensions``."""
    path = url.split("?", 1)[0].lower()
    if not url.startswith(("https://", "s3://")) or not path.endswith(extensions):
        raise InputValidationError(
            f"{field} must be an https:// or s3:// URL ending in {', '.join(extensions)}",
            field=field,
        )
    return url


_AUDIO_MIME = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


class DIDRenderer:
    """D-ID's talking-photo API as a Renderer.

    Args:
        api_key: The key as issued (``user:secret``), sent verbatim after ``Basic``;
            default ``DID_API_KEY``.
        voice: For :meth:`render_text`: the provider voice D-ID speaks with.
        stitch: Paste the animated face back into the whole picture.
        result_format: ``mp4`` or ``mov``.
        fluent: Interpolate between the driver's last and first frames.
        pad_audio: Seconds of silence appended (billed).
        fps: Frame rate D-ID renders at (for expression frame numbers).
        webhook: HTTPS URL D-ID calls when a talk is done.
        poll_interval: First wait between status polls; grows 1.5× up to ``poll_max_interval``.
        render_deadline: Seconds a talk may take before :class:`ProviderTimeoutError`.
        delete_after: Delete the talk (and uploaded image) once downloaded; best effort: a
            failed deletion is logged as a warning and the video is still returned.
        max_image_bytes: Pre-flight limit on the uploaded image.
        max_audio_bytes: Pre-flight limit on the uploaded audio.
        max_audio_seconds: Pre-flight limit on the audio's length.
        max_text_chars: Pre-flight limit on a script's text.
        base_url: API root.
        transport: httpx transport (tests); also used for downloads.
        options: Timeouts and retries of each request.
    """

    def __init__(
        self,
        *,
        api_key: str | SecretStr | None = None,
        voice: MicrosoftTTS | ElevenLabsTTS | None = None,
        stitch: bool = True,
        result_format: Literal["mp4", "mov"] = "mp4",
        fluent: bool | None = None,
        pad_audio: float | None = None,
        fps: float = 25.0,
        webhook: str | None = None,
        poll_interval: float = 1.0,
        poll_max_interval: float = 5.0,
        render_deadline: float = 600.0,
        delete_after: bool = False,
        max_image_bytes: int = 10 * 1024 * 1024,
        max_audio_bytes: int = 6 * 1024 * 1024,
        max_audio_seconds: float = 600.0,
        max_text_chars: int = 40_000,
        base_url: str = BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = DEFAULT_OPTIONS,
    ) -> None:
        key = resolve_key("d-id", api_key, "DID_API_KEY")
        if webhook is not None and not webhook.startswith("https://"):
            raise InputValidationError("D-ID calls only https webhooks", field="webhook")
        if fps <= 0 or poll_interval <= 0 or render_deadline <= 0:
            raise InputValidationError("fps, poll_interval and render_deadline must be positive")
        self.voice = voice
        self.config = build(
            TalkConfig, "D-ID", stitch=stitch, result_format=result_format, fluent=fluent,
            pad_audio=pad_audio,
        )  # fmt: skip
        self.fps = fps
        self.webhook = webhook
        self.poll_interval = poll_interval
        self.poll_max_interval = max(poll_interval, poll_max_interval)
        self.render_deadline = render_deadline
        self.delete_after = delete_after
        self.max_image_bytes = max_image_bytes
        self.max_audio_bytes = max_audio_bytes
        self.max_audio_seconds = max_audio_seconds
        self.max_text_chars = max_text_chars
        self._http = HttpClient(
            "d-id",
            base_url,
            headers={"Authorization": f"Basic {key.get_secret_value()}"},
            transport=transport,
            options=options,
            classify=_classify,
        )
        self._uploaded_images: dict[str, str] = {}
        # Results live on S3 under signed URLs: fetch them without our credentials.
        self._download = HttpClient(
            "d-id", "", transport=transport, options=options, classify=_classify_download
        )

    def __repr__(self) -> str:
        return f"DIDRenderer(result_format={self.config.result_format!r}, fps={self.fps:g})"

    @property
    def capabilities(self) -> RendererCapabilities:
        """Photos in, mp4/mov out, expression keyframes used."""
        fmt = self.config.result_format or "mp4"
        return RendererCapabilities(image_kinds=("photo",), formats=(fmt,), expressions=True)

    # ------------------------------------------------------------------ pre-flight

    def check_image(self, image: AvatarImage) -> tuple[bytes, str]:
        """The bytes and MIME type to upload; webp is converted to PNG.

        Raises:
            InputValidationError: unreadable, not a photo, or over ``max_image_bytes``.
        """
        if image.kind != "photo":
            raise InputValidationError(
                "D-ID animates photos; this is a procedural face (use the local renderer)",
                field="image",
            )
        try:
            actual = read_picture(image.data, verify=True).format
            data = image.data
            if actual == "webp":
                data, actual = encode_png(decode_picture(data).convert("RGB")), "png"
        except InputValidationError as exc:
            raise InputValidationError(f"the image cannot be read: {exc}", field="image") from exc
        if actual not in _IMAGE_MIME:
            raise InputValidationError(
                f"D-ID takes JPEG or PNG images, not {actual or 'this format'}", field="image"
            )
        if len(data) > self.max_image_bytes:
            raise InputValidationError(
                f"the image is {len(data) / 1e6:.1f} MB; D-ID takes at most "
                f"{self.max_image_bytes / 1e6:.1f} MB",
                field="image",
            )
        return data, _IMAGE_MIME[actual]

    def check_audio(self, voice: VoiceOutput) -> tuple[bytes, str]:
        """The bytes and file extension to upload; PCM, µ-law and OGG become WAV.

        Raises:
            InputValidationError: empty, too long (``max_audio_seconds``) or too big.
        """
        if not voice.audio or voice.duration <= 0:
            raise InputValidationError("the voice has no audio", field="voice")
        if voice.duration > self.max_audio_seconds:
            raise InputValidationError(
                f"the audio lasts {voice.duration:.0f} s; D-ID takes at most "
                f"{self.max_audio_seconds:.0f} s",
                field="voice",
            )
        data, ext = voice.audio, voice.format
        if ext in _AUDIO_MIME and not _looks_like(ext, data):  # a paid talk would fail on it
            raise InputValidationError(
                f"the voice's audio is not {ext} audio (its bytes say otherwise)", field="voice"
            )
        if ext not in _AUDIO_MIME:
            headerless = voice.format in ("pcm_s16le", "ulaw")
            samples, rate = decode_audio(
                voice.audio, voice.format, sample_rate=voice.sample_rate if headerless else None
            )
            data, ext = encode_wav(samples, rate), "wav"
        if len(data) > self.max_audio_bytes:
            raise InputValidationError(
                f"the audio is {len(data) / 1e6:.1f} MB; D-ID uploads take at most "
                f"{self.max_audio_bytes / 1e6:.1f} MB (use mp3)",
                field="voice",
            )
        return data, ext

    def check_text(self, text: str) -> str:
        """The text D-ID will speak, checked against its length limits."""
        stripped = text.strip()
        if len(stripped) < 3:
            raise InputValidationError("D-ID needs at least 3 characters of text", field="text")
        if len(stripped) > self.max_text_chars:
            raise InputValidationError(
                f"the text has {len(stripped)} characters; D-ID takes at most "
                f"{self.max_text_chars}",
                field="text",
            )
        return stripped

    def estimate_credits(self, voice: VoiceOutput | str) -> int:
        """Credits a talk will use, before any call: one per started 15 s of video.

        For text, the length is guessed at 15 characters per second of speech.
        """
        speech = len(self.check_text(voice)) / 15.0 if isinstance(voice, str) else voice.duration
        seconds = speech + (self.config.pad_audio or 0.0)
        return max(1, math.ceil(seconds / 15.0))

    # ------------------------------------------------------------------ endpoints

    async def upload_image(self, image: AvatarImage) -> ImageUploadResponse:
        """``POST /images`` (multipart ``image``)."""
        # decoding (and converting webp) takes a while: not on the event loop
        return await self._upload_image(*await asyncio.to_thread(self.check_image, image))

    async def _upload_image(self, data: bytes, mime: str) -> ImageUploadResponse:
        name = "avatar.png" if mime == "image/png" else "avatar.jpg"
        return await self._http.request_json(
            "POST", "/images", ImageUploadResponse, files={"image": (name, data, mime)}
        )

    async def upload_audio(self, voice: VoiceOutput) -> AudioUploadResponse:
        """``POST /audios`` (multipart ``audio``)."""
        data, ext = self.check_audio(voice)
        return await self._http.request_json(
            "POST",
            "/audios",
            AudioUploadResponse,
            files={"audio": (f"speech.{ext}", data, _AUDIO_MIME[ext])},
        )

    async def create_talk(self, request: CreateTalkRequest) -> CreateTalkResponse:
        """``POST /talks``."""
        return await self._http.request_json(
            "POST", "/talks", CreateTalkResponse, json=request.model_dump(exclude_none=True)
        )

    async def get_talk(self, talk_id: str) -> Talk:
        """``GET /talks/{id}``."""
        return await self._http.request_json("GET", f"/talks/{talk_id}", Talk)

    async def delete_talk(self, talk_id: str) -> None:
        """``DELETE /talks/{id}`` (a talk still being made answers 409 and is retried)."""
        await self._http.request("DELETE", f"/talks/{talk_id}")

    async def delete_image(self, image_id: str) -> None:
        """``DELETE /images/{id}``."""
        await self._http.request("DELETE", f"/images/{image_id}")

    async def wait_for_talk(
        self, talk_id: str, *, progress: ProgressCallback | None = None
    ) -> Talk:
        """Poll until the talk is done, with growing waits and ``render_deadline``.

        Raises:
            ProviderStatusError: the talk ended in ``error`` (with D-ID's description).
            ContentModerationError: the talk was ``rejected``.
            ProviderTimeoutError: not done within ``render_deadline``.
        """
        start = time.monotonic()
        wait = self.poll_interval
        status, unknown = "created", ""
        while True:
            talk = await self.get_talk(talk_id)
            status = talk.status
            if progress is not None:
                progress({"created": 0, "started": 1}.get(status, 2), 3)
            if status == "done":
                if not talk.result_url:
                    raise ProviderStatusError(
                        f"talk {talk_id} is done but has no result_url", provider="d-id"
                    )
                return talk
            if status not in _TALK_STATUSES and status != unknown:
                unknown = status  # a status added since: keep polling, but say so
                _log.warning(
                    "talk %s has status %r, which avatarkit does not know; polling on until "
                    "done or render_deadline",
                    talk_id,
                    status,
                )
            if status in ("error", "rejected"):
                why = talk.error.description if talk.error else None
                kind = talk.error.kind if talk.error else None
                cls = ContentModerationError if status == "rejected" else ProviderStatusError
                raise cls(
                    f"talk {talk_id} {status}: {why or 'no description'}",
                    provider="d-id",
                    code=kind,
                )
            left = self.render_deadline - (time.monotonic() - start)
            if left <= 0:
                raise ProviderTimeoutError(
                    f"talk {talk_id} not finished after {self.render_deadline:g}s "
                    f"(status {status!r}); it may still finish: get_talk({talk_id!r})",
                    provider="d-id",
                )
            await asyncio.sleep(min(wait, left))
            wait = min(wait * 1.5, self.poll_max_interval)

    async def download(self, url: str, output: Path) -> Path:
        """Fetch ``url`` (no credentials sent) and write it to ``output`` atomically.

        Raises:
            ProviderStatusError: the link is refused (401/403: a signed link that expired),
                gone, or the video is empty.
        """
        if not url.startswith(("https://", "http://")):
            raise ProviderStatusError(f"cannot download {url.split('?')[0]!r}", provider="d-id")
        response = await self._download.request("GET", url)
        if not response.content:
            raise ProviderStatusError("the result video is empty", provider="d-id", retryable=True)
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.startswith("text/") or response.content.lstrip()[:1] == b"<":
            raise ProviderStatusError(
                f"the result link answered with {kind or 'a page'}, not a video "
                "(a proxy or portal in between?)",
                provider="d-id",
            )
        return write_bytes_atomic(output, response.content)

    # ------------------------------------------------------------------ Renderer

    def _request(
        self, source_url: str, script: TextScript | AudioScript, config: TalkConfig
    ) -> CreateTalkRequest:
        return CreateTalkRequest(
            source_url=source_url, script=script, config=config, webhook=self.webhook
        )

    async def submit(
        self,
        image: AvatarImage,
        voice: VoiceOutput | str,
        expressions: Sequence[FacialExpression] = (),
        *,
        image_url: str | None = None,
        audio_url: str | None = None,
    ) -> str:
        """Upload, create the talk and return its id without waiting (for webhook users).

        ``voice`` is our audio, or a text D-ID speaks with ``self.voice``. ``image_url`` /
        ``audio_url`` (https or s3, e.g. from an earlier upload) are used instead of uploading.
        """
        checked: tuple[bytes, str] | None = None
        if image_url is not None:
            check_url(image_url, _IMAGE_EXTS, "image_url")
        else:  # decoding (and converting webp) takes a while: not on the event loop
            checked = await asyncio.to_thread(self.check_image, image)
        if isinstance(voice, str):
            script: TextScript | AudioScript = TextScript(
                input=self.check_text(voice), provider=self.voice
            )
            duration = None
        else:
            if audio_url is not None:
                check_url(audio_url, _AUDIO_EXTS, "audio_url")
            else:
                self.check_audio(voice)
            duration = voice.duration

        # an image_url or audio_url given is used as it is: nothing to upload
        source_url: str = image_url or ""
        img_id: str | None = None
        sound_url: str | None = audio_url

        async def upload_image() -> None:
            nonlocal source_url, img_id
            if checked is not None:
                uploaded = await self._upload_image(*checked)
                source_url, img_id = uploaded.url, uploaded.id

        async def upload_audio() -> None:
            nonlocal sound_url
            if not isinstance(voice, str) and audio_url is None:
                sound_url = (await self.upload_audio(voice)).url

        # side by side; the first failure cancels the other upload instead of orphaning it
        await concurrently(upload_image(), upload_audio())
        if sound_url is not None:
            script = AudioScript(audio_url=sound_url)
        config = self.config.model_copy(
            update={"driver_expressions": driver_expressions(expressions, self.fps, duration)}
        )
        talk = await self.create_talk(self._request(source_url, script, config))
        if img_id:
            self._uploaded_images[talk.id] = img_id
        _log.info("d-id talk %s created", talk.id)
        return talk.id

    async def fetch(
        self,
        talk_id: str,
        *,
        image: AvatarImage,
        duration: float | None = None,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> AvatarVideo:
        """Wait for a talk, download its video to ``output`` and describe it.

        Without ``output`` the video goes into a new temporary folder of its own (as the other
        renderers do) that the caller owns. With ``delete_after``, the talk and the image
        :meth:`submit` uploaded for it are then deleted, best effort.
        """
        talk = await self.wait_for_talk(talk_id, progress=progress)
        fmt = self.config.result_format or "mp4"
        made: Path | None = None  # a folder this call made for the video, kept on success
        if output is None:
            made = Path(tempfile.mkdtemp(prefix=TEMP_VIDEO_PREFIX))
            output = made / f"video.{fmt}"
        assert talk.result_url is not None
        try:
            await self.download(talk.result_url, Path(output))
            if progress is not None:
                progress(3, 3)
            image_id = self._uploaded_images.pop(talk_id, None)
            if self.delete_after:
                await self._clean_up(f"talk {talk_id}", self.delete_talk(talk_id))
                if image_id:
                    await self._clean_up(f"image {image_id}", self.delete_image(image_id))
        except BaseException:  # failed or cancelled: nobody gets the video
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise
        meta = talk.metadata or {}
        length = talk.duration or duration or 0.0
        frames = meta.get("num_frames")
        width, height = image.width, image.height
        res = meta.get("resolution")
        if isinstance(res, list | tuple) and len(res) == 2 and all(isinstance(v, int) for v in res):
            width, height = int(res[0]), int(res[1])
        return AvatarVideo(
            path=Path(output),
            format=fmt,
            width=width,
            height=height,
            fps=self.fps,
            frame_count=int(frames) if isinstance(frames, int) else round(length * self.fps),
            duration=length,
            has_audio=True,
            renderer="d-id",
        )

    async def render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
        image_url: str | None = None,
        audio_url: str | None = None,
    ) -> AvatarVideo:
        """Render ``image`` speaking ``voice`` with the timeline's expressions.

        ``image_url``/``audio_url`` point at copies already online (https or s3) and skip the
        uploads.

        Raises:
            InputValidationError: the image or audio fails the pre-flight checks (nothing sent).
            QuotaExceededError: not enough credits (402).
            ContentModerationError: D-ID refused the image, audio or text (451, ``rejected``).
            ProviderTimeoutError: the talk did not finish within ``render_deadline``.
        """
        talk_id = await self.submit(
            image, voice, timeline.expressions, image_url=image_url, audio_url=audio_url
        )
        return await self.fetch(
            talk_id, image=image, duration=voice.duration, output=output, progress=progress
        )

    async def render_text(
        self,
        image: AvatarImage,
        text: str,
        *,
        expressions: Sequence[FacialExpression] = (),
        output: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> AvatarVideo:
        """Render ``image`` speaking ``text`` with D-ID's provider voice (``self.voice``)."""
        talk_id = await self.submit(image, text, expressions)
        return await self.fetch(talk_id, image=image, output=output, progress=progress)

    async def _clean_up(self, what: str, call: Awaitable[None]) -> None:
        """Await a deletion after a render, best effort: the video is paid for and downloaded.

        The request is retried as the HTTP layer retries any other (within
        ``_CLEANUP_DEADLINE``); a failure then is logged, never raised.
        """
        try:
            async with asyncio.timeout(_CLEANUP_DEADLINE):
                await call
        except (ProviderError, TimeoutError) as exc:
            _log.warning(
                "d-id: could not delete %s after the render (%s); the video is kept. Delete it "
                "later (delete_talk/delete_image) or in D-ID's studio",
                what,
                str(exc) or "no answer in time",
            )

    async def aclose(self) -> None:
        """Close the HTTP clients of the running loop."""
        await self._http.aclose()
        await self._download.aclose()


def _make_renderer(name: str | None, **options: Any) -> DIDRenderer:
    if name:
        options.setdefault("voice", MicrosoftTTS(voice_id=name))
    return DIDRenderer(**options)


provider = Provider(
    "d-id",
    renderer=_make_renderer,
    description="D-ID talking photos (cloud; needs DID_API_KEY)",
    env_key="DID_API_KEY",
    default_roles=("renderer",),
)


def _looks_like(fmt: str, data: bytes) -> bool:
    """Whether ``data`` starts the way a file of ``fmt`` does (its magic bytes)."""
    if fmt == "wav":
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if fmt == "flac":
        return data[:4] == b"fLaC"
    if fmt == "mp3":  # an ID3 tag, or straight into an MPEG audio frame (11 sync bits)
        return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    return True
