"""OpenAI speech (``/audio/speech``) and images (``/images/generations``) over plain HTTP.

No SDK: both go through avatarkit's shared HTTP layer. Speech has no timings, so lip sync comes
from the audio. The ``openai`` Provider object is assembled elsewhere from :func:`make_voice`
and :func:`make_image`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from avatarkit._http import (
    DEFAULT_OPTIONS,
    ConnectOptions,
    HttpClient,
    aclosing_iter,
    error_for,
)
from avatarkit._image import read_picture
from avatarkit._validation import build
from avatarkit.config import resolve_key
from avatarkit.errors import (
    ContentModerationError,
    InputValidationError,
    ProviderError,
    ProviderStatusError,
    QuotaExceededError,
)
from avatarkit.ports import ImageCapabilities, ProgressCallback, VoiceCapabilities
from avatarkit.providers._chunk import split_text
from avatarkit.providers._speech import JOINABLE, audio_duration, join_audio
from avatarkit.types import AudioFormat, AvatarImage, AvatarPrompt, VoiceOutput

__all__ = [
    "BUILTIN_VOICES",
    "MAX_IMAGE_BYTES",
    "ImageData",
    "ImageGenerationRequest",
    "ImagesResponse",
    "OpenAIImage",
    "OpenAISpeech",
    "SpeechRequest",
    "make_image",
    "make_voice",
]

BASE_URL = "https://api.openai.com/v1"
ENV_KEY = "OPENAI_API_KEY"
MAX_SPEECH_CHARS = 4096
PCM_RATE = 24_000

BUILTIN_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
    "verse", "marin", "cedar",
)  # fmt: skip

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
_SPEECH_FORMATS: dict[str, AudioFormat] = {
    "mp3": "mp3",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "wav": "wav",
    "pcm": "pcm_s16le",
}

_PROMPT_LIMITS = {"dall-e-2": 1000, "dall-e-3": 4000}
MAX_IMAGE_BYTES = 50 * 2**20
"""Largest image downloaded from an answer's ``url`` (OpenAI's own images are a few MB)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SpeechRequest(BaseModel):
    """``POST /audio/speech``."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str = Field(max_length=MAX_SPEECH_CHARS)
    voice: str | dict[str, str]
    """A built-in name, or ``{"id": "voice_…"}`` for a custom voice."""
    instructions: str | None = Field(default=None, max_length=4096)
    response_format: SpeechFormat | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


class ImageGenerationRequest(BaseModel):
    """``POST /images/generations``."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
    """``auto`` or WIDTHxHEIGHT in pixels."""
    quality: Literal["auto", "low", "medium", "high", "standard", "hd"] | None = None
    """standard and hd are DALL·E 3's."""
    output_format: Literal["png", "jpeg", "webp"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    response_format: Literal["url", "b64_json"] | None = None


class ImageData(_Wire):
    """One generated image."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(_Wire):
    """Answer of ``/images/generations``."""

    created: int | None = None
    data: list[ImageData]
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    usage: dict[str, Any] | None = None


def _classify(response: httpx.Response, err: ProviderError) -> ProviderError:
    """``insufficient_quota`` comes as 429 but never clears by waiting; moderation as 400."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return err
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if code == "insufficient_quota":
        return error_for("openai", response, QuotaExceededError, code=code, retryable=False)
    if code in ("content_policy_violation", "moderation_blocked"):
        return error_for("openai", response, ContentModerationError, code=code)
    return err


def _client(
    api_key: str | SecretStr | None,
    organization: str | None,
    project: str | None,
    base_url: str,
    transport: httpx.AsyncBaseTransport | None,
    options: ConnectOptions,
) -> HttpClient:
    key = resolve_key("openai", api_key, ENV_KEY)
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    return HttpClient(
        "openai", base_url, headers=headers, transport=transport, options=options,
        classify=_classify,
    )  # fmt: skip


class OpenAISpeech:
    """OpenAI text to speech as a SpeechSynthesizer (audio only: no timings).

    Args:
        voice: Built-in voice name (``alloy``, ``coral``...) or a custom ``voice_…`` id.
        model: ``gpt-4o-mini-tts`` (takes ``instructions``), ``tts-1``, ``tts-1-hd``.
        response_format: ``mp3``, ``wav``, ``pcm`` (24 kHz s16le), ``flac``, ``opus``, ``aac``.
        speed: 0.25–4.0.
        instructions: How to speak (tone, accent); not for tts-1 models.
        api_key: Default: ``OPENAI_API_KEY``.
        organization: Optional ``OpenAI-Organization`` billing header.
        project: Optional ``OpenAI-Project`` billing header.
        base_url: API root (compatible servers).
        transport: httpx transport (tests).
        options: Timeouts and retries.
    """

    def __init__(
        self,
        voice: str = "alloy",
        *,
        model: str = "gpt-4o-mini-tts",
        response_format: SpeechFormat = "mp3",
        speed: float | None = None,
        instructions: str | None = None,
        api_key: str | SecretStr | None = None,
        organization: str | None = None,
        project: str | None = None,
        base_url: str = BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = DEFAULT_OPTIONS,
    ) -> None:
        if response_format not in _SPEECH_FORMATS:
            raise InputValidationError(
                f"response_format must be one of {', '.join(_SPEECH_FORMATS)}",
                field="response_format",
            )
        if instructions and model.startswith("tts-1"):
            raise InputValidationError(
                f"{model} does not take instructions; use gpt-4o-mini-tts", field="instructions"
            )
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise InputValidationError("speed must be within 0.25–4.0", field="speed")
        for name, value in (("voice", voice), ("model", model)):
            if not isinstance(value, str) or not value.strip():
                raise InputValidationError(f"{name} must be a non-empty name", field=name)
        self.voice = voice
        self.model = model
        self.response_format = response_format
        self.format: AudioFormat = _SPEECH_FORMATS[response_format]
        self.speed = speed
        self.instructions = instructions
        self._http = _client(api_key, organization, project, base_url, transport, options)

    def __repr__(self) -> str:
        return f"OpenAISpeech(voice={self.voice!r}, model={self.model!r})"

    @property
    def capabilities(self) -> VoiceCapabilities:
        """Audio only, streamed; lip sync comes from the waveform."""
        return VoiceCapabilities(streaming=True, formats=(self.format,))

    def _chunks(self, text: str) -> list[str]:
        if not isinstance(text, str) or not text.strip():
            raise InputValidationError("no text to speak", field="text")
        chunks = [c.text for c in split_text(text, MAX_SPEECH_CHARS)]
        if len(chunks) > 1 and self.format not in JOINABLE:
            raise InputValidationError(
                f"text over {MAX_SPEECH_CHARS} characters needs several requests and "
                f"{self.response_format} audio cannot be joined; use mp3, wav or pcm",
                field="response_format",
            )
        return chunks

    def estimate_cost(self, text: str) -> int:
        """Characters billed (tts-1 models bill by character; gpt-4o-mini-tts by token)."""
        return sum(len(c) for c in self._chunks(text))

    def _body(self, chunk: str) -> dict[str, Any]:
        voice: str | dict[str, str] = (
            {"id": self.voice} if self.voice.startswith("voice_") else self.voice
        )
        return build(
            SpeechRequest, "OpenAI speech", model=self.model, input=chunk, voice=voice,
            instructions=self.instructions, response_format=self.response_format, speed=self.speed,
        ).model_dump(exclude_none=True)  # fmt: skip

    async def speech(self, text: str) -> bytes:
        """``POST /audio/speech`` for at most 4096 characters: the audio bytes."""
        response = await self._http.request("POST", "/audio/speech", json=self._body(text))
        return response.content

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        """Audio bytes as they arrive (long text: request after request)."""
        for chunk in self._chunks(text):
            async with (
                self._http.stream("POST", "/audio/speech", json=self._body(chunk)) as r,
                aclosing_iter(r.aiter_bytes()) as pieces,
            ):
                async for data in pieces:
                    if data:
                        yield data

    async def synthesize(self, text: str) -> VoiceOutput:
        """Speak ``text`` (long text is split at sentences and joined)."""
        parts = [await self.speech(c) for c in self._chunks(text)]
        if not all(parts):
            raise ProviderStatusError("returned no audio", provider="openai", retryable=True)
        # decoding (and joining) minutes of MP3 takes seconds: not on the event loop
        audio, rate, duration = await asyncio.to_thread(self._assemble, parts)
        return VoiceOutput(
            audio=audio,
            format=self.format,
            sample_rate=rate,
            duration=duration,
            text=text,
            voice=f"openai:{self.voice}",
        )

    def _assemble(self, parts: list[bytes]) -> tuple[bytes, int, float]:
        """The pieces joined into one clip, with its sample rate and length in seconds."""
        audio = join_audio(parts, self.format)
        if self.format == "pcm_s16le":
            return audio, PCM_RATE, audio_duration("openai", audio, self.format, PCM_RATE)
        from avatarkit.audio import decode_audio

        try:
            samples, rate = decode_audio(audio, self.format)
        except InputValidationError as exc:
            raise ProviderStatusError(
                f"the {self.format} audio cannot be decoded ({exc.message})",
                provider="openai",
                code="invalid_audio",
            ) from exc
        return audio, rate, len(samples) / rate

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop."""
        await self._http.aclose()


class OpenAIImage:
    """OpenAI image generation as an ImageGenerator for avatar pictures.

    Args:
        model: ``gpt-image-1`` (default), ``gpt-image-1-mini``, ``dall-e-3``, ``dall-e-2``...
        size: ``1024x1024``, ``1024x1536``... (model-dependent).
        quality: ``low``/``medium``/``high``/``auto`` (GPT image), ``standard``/``hd`` (DALL·E 3).
        output_format: ``png`` (default), ``jpeg``, ``webp`` (GPT image models).
        background: ``transparent``, ``opaque`` or ``auto`` (GPT image models).
        style: ``vivid`` or ``natural`` (DALL·E 3).
        api_key: Default: ``OPENAI_API_KEY``.
        organization: Optional ``OpenAI-Organization`` billing header.
        project: Optional ``OpenAI-Project`` billing header.
        base_url: API root (compatible servers).
        transport: httpx transport (tests).
        options: Timeouts and retries.
    """

    def __init__(
        self,
        model: str = "gpt-image-1",
        *,
        size: str = "1024x1024",
        quality: str | None = None,
        output_format: Literal["png", "jpeg", "webp"] | None = None,
        background: Literal["transparent", "opaque", "auto"] | None = None,
        style: Literal["vivid", "natural"] | None = None,
        api_key: str | SecretStr | None = None,
        organization: str | None = None,
        project: str | None = None,
        base_url: str = BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = DEFAULT_OPTIONS,
    ) -> None:
        build(ImageGenerationRequest, "OpenAI image", prompt="-", model=model, size=size,
              quality=quality, output_format=output_format, background=background,
              style=style)  # fmt: skip
        self.model = model
        self.size = size
        self.quality = quality
        self.output_format = output_format
        self.background = background
        self.style = style
        self._http = _client(api_key, organization, project, base_url, transport, options)

    def __repr__(self) -> str:
        return f"OpenAIImage(model={self.model!r}, size={self.size!r})"

    @property
    def capabilities(self) -> ImageCapabilities:
        """Photos; no negative prompt or seed (a negative prompt is added as an instruction)."""
        return ImageCapabilities(kinds=("photo",))

    def build_request(self, prompt: AvatarPrompt) -> ImageGenerationRequest:
        """The request ``generate(prompt)`` sends (checked before anything is sent)."""
        text = prompt.prompt.strip()
        if not text:
            raise InputValidationError("the prompt is empty", field="prompt")
        if prompt.negative.strip():
            text = f"{text}\nAvoid: {prompt.negative.strip()}"
        limit = _PROMPT_LIMITS.get(self.model, 32_000)
        if len(text) > limit:
            raise InputValidationError(
                f"the prompt has {len(text)} characters; {self.model} takes at most {limit}",
                field="prompt",
            )
        dalle = self.model.startswith("dall-e")
        return ImageGenerationRequest(
            prompt=text,
            model=self.model,
            size=self.size,
            quality=self.quality,
            output_format=None if dalle else self.output_format,
            background=None if dalle else self.background,
            style=self.style if self.model == "dall-e-3" else None,
            response_format="b64_json" if dalle else None,
        )

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """Make one picture for ``prompt`` (``progress`` gets 0/1 then 1/1)."""
        request = self.build_request(prompt)
        if progress is not None:
            progress(0, 1)
        answer = await self._http.request_json(
            "POST",
            "/images/generations",
            ImagesResponse,
            json=request.model_dump(exclude_none=True),
        )
        item = answer.data[0] if answer.data else None
        if item is not None and item.b64_json:
            try:
                data = base64.b64decode(item.b64_json, validate=True)
            except binascii.Error as exc:
                raise ProviderStatusError(
                    f"b64_json in the answer is not valid base64 ({exc})", provider="openai"
                ) from exc
        elif item is not None and item.url and item.url.startswith(("https://", "http://")):
            # compatible servers, and DALL·E unless asked for b64_json, answer with a link
            data = await self._http.download(item.url, max_bytes=MAX_IMAGE_BYTES)
        else:
            raise ProviderStatusError(
                "no image in the answer (neither b64_json nor an http(s) url)",
                provider="openai",
                code="invalid_response",
            )
        try:
            picture = read_picture(data)
        except InputValidationError as exc:
            raise ProviderStatusError(
                f"the image cannot be decoded: {exc}", provider="openai"
            ) from exc
        fmt = picture.format
        if fmt not in ("png", "jpeg", "webp"):
            raise ProviderStatusError(f"unexpected image format {fmt}", provider="openai")
        if progress is not None:
            progress(1, 1)
        return AvatarImage(
            data=data,
            format=fmt,
            width=picture.width,
            height=picture.height,
            kind="photo",
            provenance={
                "backend": "openai",
                "model": self.model,
                "prompt": prompt.prompt,
                "negative_prompt": prompt.negative,
                "revised_prompt": item.revised_prompt,
                "size": answer.size or self.size,
                "quality": answer.quality or self.quality,
            },
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop."""
        await self._http.aclose()


def _is_speech_model(name: str) -> bool:
    """``tts-1``, ``tts-1-hd``, ``gpt-4o-mini-tts`` (and dated or later ones): not voice names."""
    return name.startswith("tts-") or (name.startswith("gpt-") and "tts" in name)


def make_voice(name: str | None, **options: Any) -> OpenAISpeech:
    """Factory for ``voice="openai:..."``; the spec's name is a voice, a model or both.

    ``openai:coral`` (a voice, with the default model), ``openai:tts-1`` / ``openai:tts-1-hd``
    / ``openai:gpt-4o-mini-tts`` (a model, with the default voice), ``openai:tts-1-hd:nova``
    (model and voice; also for a compatible server's own names, ``openai:kokoro:af_bella``).

    Raises:
        InputValidationError: the spec has more than two parts, or names a model or voice
            that ``model=``/``voice=`` contradicts.
    """
    parts = (name or "").split(":")
    if len(parts) > 2:
        raise InputValidationError(
            f"voice spec openai:{name} has too many parts; use openai:<model>:<voice>",
            field="voice",
        )
    if len(parts) == 2:
        named = {"model": parts[0], "voice": parts[1]}
    elif _is_speech_model(parts[0]):
        named = {"model": parts[0]}
    else:
        named = {"voice": parts[0]}
    for key, value in named.items():
        if not value:
            continue
        given = options.get(key)
        if given is not None and given != value:
            raise InputValidationError(
                f"the spec names {key} {value!r} but {key}={given!r} was passed", field=key
            )
        options[key] = value
    return OpenAISpeech(**options)


def make_image(name: str | None, **options: Any) -> OpenAIImage:
    """Factory for ``image="openai:<model>"`` (e.g. ``openai:gpt-image-1``)."""
    return OpenAIImage(name or "gpt-image-1", **options)
