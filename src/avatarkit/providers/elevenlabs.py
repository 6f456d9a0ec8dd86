"""ElevenLabs text to speech over plain HTTP: audio, character timings turned into word timings.

Endpoints: ``/v1/text-to-speech/{voice_id}`` (+ ``/stream``, ``/with-timestamps``,
``/stream/with-timestamps``) and ``/v1/voices``. Text over the model's character limit is split
at sentence boundaries, each request gets its neighbours as ``previous_text``/``next_text``, and
the pieces are joined on one clock (mp3 frames and PCM bytes concatenate as they are).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import weakref
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter

from avatarkit._http import (
    DEFAULT_OPTIONS,
    ConnectOptions,
    HttpClient,
    aclosing_iter,
    error_for,
)
from avatarkit._validation import build
from avatarkit.config import resolve_key
from avatarkit.errors import (
    AuthenticationError,
    InputValidationError,
    ProviderError,
    ProviderStatusError,
    QuotaExceededError,
    RateLimitError,
)
from avatarkit.ports import VoiceCapabilities
from avatarkit.providers._chunk import TextChunk, split_text
from avatarkit.providers._speech import JOINABLE, audio_duration, gather_or_cancel, join_audio
from avatarkit.registry import Provider
from avatarkit.types import AudioFormat, VoiceOutput, WordTiming

__all__ = [
    "DEFAULT_VOICE_ID",
    "MODEL_CHAR_LIMITS",
    "Alignment",
    "AudioWithTimestamps",
    "CostEstimate",
    "ElevenLabsVoice",
    "TextToSpeechRequest",
    "Voice",
    "VoiceSettings",
    "VoicesResponse",
    "provider",
    "words_from_alignment",
]

BASE_URL = "https://api.elevenlabs.io"
DEFAULT_VOICE_ID = "21m00Tcm4TlvDq8ikWAM"
""""Rachel", a premade voice every account has."""
DEFAULT_MODEL = "eleven_multilingual_v2"

MODEL_CHAR_LIMITS: dict[str, int] = {
    "eleven_v3": 3_000,
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_flash_v2": 30_000,
    "eleven_turbo_v2": 30_000,
    "eleven_multilingual_v2": 10_000,
    "eleven_multilingual_v1": 10_000,
    "eleven_english_sts_v2": 10_000,
    "eleven_english_sts_v1": 10_000,
    "eleven_monolingual_v1": 10_000,
}
"""Characters per request by model (ElevenLabs' models page); others default to 10,000."""

PLAN_CONCURRENCY = {"free": 2, "starter": 3, "creator": 5, "pro": 10, "scale": 15, "business": 15}
"""Concurrent requests each plan allows."""

_CONTEXT_CHARS = 1000
"""How much neighbouring text goes into previous_text/next_text."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VoiceSettings(BaseModel):
    """``voice_settings``: per-request overrides of the voice's stored settings."""

    model_config = ConfigDict(extra="forbid")

    stability: float | None = Field(default=None, ge=0.0, le=1.0)
    similarity_boost: float | None = Field(default=None, ge=0.0, le=1.0)
    style: float | None = Field(default=None, ge=0.0, le=1.0)
    """Style exaggeration; above 0 adds latency."""
    use_speaker_boost: bool | None = None
    speed: float | None = Field(default=None, ge=0.7, le=1.2)


class TextToSpeechRequest(BaseModel):
    """The JSON body of every text-to-speech endpoint."""

    model_config = ConfigDict(extra="forbid")

    text: str
    model_id: str = DEFAULT_MODEL
    language_code: str | None = None
    voice_settings: VoiceSettings | None = None
    seed: int | None = Field(default=None, ge=0, le=4_294_967_295)
    previous_text: str | None = None
    next_text: str | None = None
    previous_request_ids: list[str] | None = Field(default=None, max_length=3)
    next_request_ids: list[str] | None = Field(default=None, max_length=3)
    apply_text_normalization: Literal["auto", "on", "off"] | None = None


class Alignment(_Wire):
    """Per-character timing (seconds) of the spoken text."""

    characters: list[str]
    character_start_times_seconds: list[float]
    character_end_times_seconds: list[float]


class AudioWithTimestamps(_Wire):
    """Answer of ``/with-timestamps``, and each line of ``/stream/with-timestamps``."""

    audio_base64: str = ""
    alignment: Alignment | None = None
    """Timings of the input text's characters."""
    normalized_alignment: Alignment | None = None
    """Timings of the normalised text (numbers spelled out...)."""

    def audio(self) -> bytes:
        """The decoded audio bytes.

        Raises:
            ProviderStatusError: ``audio_base64`` is not base64 (``code="invalid_response"``).
        """
        if not self.audio_base64:
            return b""
        try:
            return base64.b64decode(self.audio_base64)
        except binascii.Error as exc:
            raise ProviderStatusError(
                f"audio_base64 in the answer is not valid base64 ({exc})",
                provider="elevenlabs",
                code="invalid_response",
            ) from exc


class Voice(_Wire):
    """One voice from ``GET /v1/voices``."""

    voice_id: str
    name: str
    category: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    preview_url: str | None = None
    available_for_tiers: list[str] = Field(default_factory=list)
    high_quality_base_model_ids: list[str] = Field(default_factory=list)
    settings: VoiceSettings | None = None


class VoicesResponse(_Wire):
    """``GET /v1/voices``."""

    voices: list[Voice]


class CostEstimate(BaseModel):
    """What a call will bill, computed before sending it."""

    model_config = ConfigDict(frozen=True)

    characters: int
    """Characters ElevenLabs counts (the text as sent)."""
    requests: int
    """Requests the text needs at this model's character limit."""
    credits: float
    """Credits at this model's rate (Flash/Turbo v2.5 bill half a credit per character)."""


_HALF_PRICE = ("eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_flash_v2", "eleven_turbo_v2")

_FORMATS: dict[str, AudioFormat] = {
    "mp3": "mp3",
    "pcm": "pcm_s16le",
    "ulaw": "ulaw",
    "opus": "opus",
    "wav": "wav",
}


_RATES = ("8000", "16000", "22050", "24000", "32000", "44100", "48000")
OUTPUT_FORMATS: frozenset[str] = frozenset(
    ["mp3_22050_32", "mp3_24000_48", "ulaw_8000"]
    + [f"mp3_44100_{k}" for k in (32, 64, 96, 128, 192)]
    + [f"opus_48000_{k}" for k in (32, 64, 96, 128, 192)]
    + [f"{codec}_{rate}" for codec in ("pcm", "wav") for rate in _RATES]
)
"""The ``output_format`` values the API documents (alaw aside: avatarkit cannot decode it)."""
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")  # voice and model ids: safe in a URL path and a body


def _parse_output_format(output_format: str) -> tuple[AudioFormat, int]:
    if output_format not in OUTPUT_FORMATS:
        raise InputValidationError(
            f"unsupported output_format {output_format!r}; use mp3_44100_128, pcm_24000, "
            "ulaw_8000, opus_48000_64 or wav_44100 (alaw is not supported)",
            field="output_format",
        )
    codec, rate = output_format.split("_")[:2]  # listed formats are codec_rate[_kbps]
    return _FORMATS[codec], int(rate)


_WORD_EDGE = re.compile(r"^[^\w]+|[^\w]+$")


def words_from_alignment(
    text: str, alignment: Alignment, *, char_base: int = 0, time_base: float = 0.0
) -> list[WordTiming]:
    """Word timings from a character alignment of ``text``.

    Words are runs of non-space characters with edge punctuation trimmed; each takes the span
    from its first to its last aligned character. ``char_base``/``time_base`` shift offsets and
    times (for chunks of a longer text).
    """
    chars = alignment.characters
    starts, ends = alignment.character_start_times_seconds, alignment.character_end_times_seconds
    n = min(len(chars), len(starts), len(ends))
    # Position of each aligned character in ``text``: direct when they match, else searched.
    pos: list[int | None] = []
    if "".join(chars[:n]) == text:
        offset = 0
        for c in chars[:n]:
            pos.append(offset)
            offset += len(c)
    else:
        cursor = 0
        for c in chars[:n]:
            at = text.find(c, cursor, cursor + 16) if c.strip() else -1
            pos.append(at if at >= 0 else None)
            if at >= 0:
                cursor = at + len(c)
    by_pos: dict[int, int] = {p: i for i, p in enumerate(pos) if p is not None}
    words: list[WordTiming] = []
    for m in re.finditer(r"\S+", text):
        token = m.group()
        trimmed = _WORD_EDGE.sub("", token)
        if not trimmed:
            continue
        a = m.start() + token.find(trimmed)
        b = a + len(trimmed)
        idx = [by_pos[p] for p in range(a, b) if p in by_pos]
        if not idx:
            continue
        start = max(0.0, min(starts[i] for i in idx))
        end = max(start, max(ends[i] for i in idx))
        words.append(
            WordTiming(
                text=trimmed,
                start=time_base + start,
                end=time_base + end,
                char_start=char_base + a,
                char_end=char_base + b,
            )
        )
    return words


def _classify(response: httpx.Response, err: ProviderError) -> ProviderError:
    """ElevenLabs puts the real reason in ``detail.status`` (``quota_exceeded`` comes as 401)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return err
    detail = body.get("detail") if isinstance(body, dict) else None
    status = detail.get("status") if isinstance(detail, dict) else None
    if status == "quota_exceeded":
        return error_for("elevenlabs", response, QuotaExceededError, code=status)
    if status in ("too_many_concurrent_requests", "system_busy"):
        return error_for("elevenlabs", response, RateLimitError, code=status)
    if status in ("invalid_api_key", "missing_permissions", "unauthorized"):
        return error_for("elevenlabs", response, AuthenticationError, code=status)
    return err


def _concurrency_arg(max_concurrency: int | str) -> int:
    if isinstance(max_concurrency, str):
        if max_concurrency.lower() not in PLAN_CONCURRENCY:
            raise InputValidationError(
                f"unknown plan {max_concurrency!r}; one of {', '.join(PLAN_CONCURRENCY)}",
                field="max_concurrency",
            )
        return PLAN_CONCURRENCY[max_concurrency.lower()]
    if max_concurrency < 1:
        raise InputValidationError("max_concurrency must be at least 1", field="max_concurrency")
    return max_concurrency


class ElevenLabsVoice:
    """An ElevenLabs voice (SpeechSynthesizer) with word timings from character alignment.

    Args:
        voice_id: The voice to speak with (see :meth:`voices`).
        api_key: The key; default: ``ELEVENLABS_API_KEY``.
        model_id: TTS model, e.g. ``eleven_multilingual_v2``, ``eleven_flash_v2_5``.
        output_format: ``codec_rate[_kbps]``: ``mp3_44100_128`` (default), ``pcm_24000``...
        voice_settings: Stability, similarity, style, speaker boost, speed.
        seed: Best-effort determinism.
        language_code: ISO 639-1 code, for models that take one.
        timestamps: Use the with-timestamps endpoints (word timings); off: plain audio.
        streamed: Fetch timestamps through the streamed NDJSON endpoint.
        max_concurrency: Requests in flight at once: a number or a plan name
            (``"free"`` = 2 ... ``"scale"`` = 15); more calls wait their turn.
        max_chars: Characters per request (default: the model's limit).
        base_url: API root (regional endpoints).
        transport: httpx transport (tests).
        options: Timeouts and retries.
    """

    def __init__(
        self,
        voice_id: str = DEFAULT_VOICE_ID,
        *,
        api_key: str | SecretStr | None = None,
        model_id: str = DEFAULT_MODEL,
        output_format: str = "mp3_44100_128",
        voice_settings: VoiceSettings | dict[str, Any] | None = None,
        seed: int | None = None,
        language_code: str | None = None,
        apply_text_normalization: Literal["auto", "on", "off"] | None = None,
        timestamps: bool = True,
        streamed: bool = False,
        max_concurrency: int | str = 2,
        max_chars: int | None = None,
        base_url: str = BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = DEFAULT_OPTIONS,
    ) -> None:
        for name, value in (("voice_id", voice_id), ("model_id", model_id)):
            if not isinstance(value, str) or not _ID.fullmatch(value):
                raise InputValidationError(
                    f"invalid {name} {value!r}: letters, digits, '_' and '-' only", field=name
                )
        if max_chars is not None and max_chars < 1:
            raise InputValidationError(f"max_chars must be positive, got {max_chars}",
                                       field="max_chars")  # fmt: skip
        key = resolve_key("elevenlabs", api_key, "ELEVENLABS_API_KEY")
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format
        self.format, self.sample_rate = _parse_output_format(output_format)
        self.voice_settings = build(
            TextToSpeechRequest, "ElevenLabs", text="-", model_id=model_id,
            voice_settings=voice_settings, seed=seed, language_code=language_code,
            apply_text_normalization=apply_text_normalization,
        ).voice_settings  # fmt: skip
        self.seed = seed
        self.language_code = language_code
        self.apply_text_normalization = apply_text_normalization
        self.timestamps = timestamps
        self.streamed = streamed
        self.max_concurrency = _concurrency_arg(max_concurrency)
        self.max_chars = max_chars or MODEL_CHAR_LIMITS.get(model_id, 10_000)
        self._http = HttpClient(
            "elevenlabs",
            base_url,
            headers={"xi-api-key": key.get_secret_value()},
            transport=transport,
            options=options,
            classify=_classify,
        )
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self.last_character_cost: int | None = None
        """``character-cost`` the last request reported."""
        self.last_request_ids: list[str] = []
        """``request-id`` of each request of the last synthesis (for stitching and support)."""

    def __repr__(self) -> str:
        return (
            f"ElevenLabsVoice(voice_id={self.voice_id!r}, model_id={self.model_id!r}, "
            f"output_format={self.output_format!r})"
        )

    @property
    def capabilities(self) -> VoiceCapabilities:
        """Word timings when ``timestamps`` is on; streaming always."""
        return VoiceCapabilities(
            word_timings=self.timestamps, streaming=True, formats=(self.format,)
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._semaphores.get(loop)
        if sem is None:
            sem = self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return sem

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``max_concurrency`` slots for a stream, held until the block ends or the deadline.

        It goes back when the block ends or when the call's deadline passes, whichever is first.

        A stream's block spans the ``yield``s of a generator that its consumer may leave
        suspended (a ``break``, kept in a variable): past the deadline every read of it fails
        anyway, so its slot goes back to the calls waiting for one.
        """
        sem = self._semaphore()
        await sem.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                sem.release()

        timer = asyncio.get_running_loop().call_later(self._http.options.deadline, release)
        try:
            yield
        finally:
            timer.cancel()
            release()

    # ------------------------------------------------------------------ pre-flight

    def _chunks(self, text: str) -> list[TextChunk]:
        if not isinstance(text, str) or not text.strip():
            raise InputValidationError("no text to speak", field="text")
        chunks = split_text(text, self.max_chars, language=self.language_code or "en")
        if len(chunks) > 1 and self.format not in JOINABLE:
            raise InputValidationError(
                f"{len(text)} characters need {len(chunks)} requests, and {self.format} audio "
                "cannot be joined; use an mp3, pcm or wav output_format",
                field="output_format",
            )
        return chunks

    def estimate_cost(self, text: str) -> CostEstimate:
        """Characters, requests and credits ``synthesize(text)`` will use; nothing is sent."""
        chunks = self._chunks(text)
        chars = sum(len(c.text) for c in chunks)
        rate = 0.5 if self.model_id in _HALF_PRICE else 1.0
        return CostEstimate(characters=chars, requests=len(chunks), credits=chars * rate)

    def _request(self, text: str, chunk: TextChunk, *, context: bool) -> TextToSpeechRequest:
        """The body for ``chunk`` of ``text``; ``context`` adds the neighbouring text."""
        prev = text[: chunk.start].strip()[-_CONTEXT_CHARS:] if context else ""
        nxt = text[chunk.end :].strip()[:_CONTEXT_CHARS] if context else ""
        return TextToSpeechRequest(
            text=chunk.text,
            model_id=self.model_id,
            language_code=self.language_code,
            voice_settings=self.voice_settings,
            seed=self.seed,
            previous_text=prev or None,
            next_text=nxt or None,
            apply_text_normalization=self.apply_text_normalization,
        )

    def _path(self, suffix: str = "") -> str:
        return f"/v1/text-to-speech/{self.voice_id}{suffix}"

    def _params(self) -> dict[str, str]:
        return {"output_format": self.output_format}

    def _note(self, response: httpx.Response) -> None:
        cost = response.headers.get("character-cost")
        if cost and cost.isdigit():
            self.last_character_cost = int(cost)
        rid = response.headers.get("request-id")
        if rid:
            self.last_request_ids.append(rid)

    # ------------------------------------------------------------------ raw endpoints

    async def convert(self, body: TextToSpeechRequest) -> bytes:
        """``POST /v1/text-to-speech/{voice_id}``: the audio for one request body."""
        async with self._semaphore():
            response = await self._http.request(
                "POST",
                self._path(),
                params=self._params(),
                json=body.model_dump(exclude_none=True),
            )
        self._note(response)
        return response.content

    async def convert_with_timestamps(self, body: TextToSpeechRequest) -> AudioWithTimestamps:
        """``POST …/with-timestamps``: audio (base64) and character alignment."""
        async with self._semaphore():
            response, answer = await self._http.request_parsed(
                "POST",
                self._path("/with-timestamps"),
                AudioWithTimestamps,
                params=self._params(),
                json=body.model_dump(exclude_none=True),
            )
        self._note(response)
        return answer

    async def stream_with_timestamps(
        self, body: TextToSpeechRequest
    ) -> AsyncIterator[AudioWithTimestamps]:
        """``POST …/stream/with-timestamps``: one parsed NDJSON object per line as it arrives.

        The request holds one of ``max_concurrency`` slots until the generator ends or is
        closed (``aclose()``, garbage collection), or the call's deadline passes.
        """
        adapter = TypeAdapter(AudioWithTimestamps)
        async with (
            self._slot(),
            self._http.stream(
                "POST",
                self._path("/stream/with-timestamps"),
                params=self._params(),
                json=body.model_dump(exclude_none=True),
            ) as response,
            aclosing_iter(response.aiter_lines()) as lines,
        ):
            self._note(response)
            async for line in lines:
                if line.strip():
                    yield self._http.parse_line(response, line, adapter)

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        """``POST …/stream``: audio bytes as they are made (long text: request after request).

        Each request holds one of ``max_concurrency`` slots until it is read to the end, the
        generator is closed (``aclose()``, garbage collection) or the call's deadline passes.
        """
        chunks = self._chunks(text)
        for chunk in chunks:
            body = self._request(text, chunk, context=len(chunks) > 1)
            async with (
                self._slot(),
                self._http.stream(
                    "POST",
                    self._path("/stream"),
                    params=self._params(),
                    json=body.model_dump(exclude_none=True),
                ) as response,
                aclosing_iter(response.aiter_bytes()) as pieces,
            ):
                self._note(response)
                async for data in pieces:
                    if data:
                        yield data

    async def voices(self, *, show_legacy: bool = False) -> list[Voice]:
        """``GET /v1/voices``: the voices this account can use."""
        resp = await self._http.request_json(
            "GET",
            "/v1/voices",
            VoicesResponse,
            params={"show_legacy": "true" if show_legacy else "false"},
        )
        return resp.voices

    # ------------------------------------------------------------------ SpeechSynthesizer

    async def _one(
        self, text: str, chunk: TextChunk, single: bool
    ) -> tuple[bytes, Alignment | None]:
        body = self._request(text, chunk, context=not single)
        if not self.timestamps:
            return await self.convert(body), None
        if not self.streamed:
            answer = await self.convert_with_timestamps(body)
            return answer.audio(), answer.alignment
        parts: list[bytes] = []
        chars: list[str] = []
        starts: list[float] = []
        ends: list[float] = []
        async for piece in self.stream_with_timestamps(body):
            parts.append(piece.audio())
            al = piece.alignment
            if al is None or not al.characters:
                continue
            n = len(al.characters)
            if len(al.character_start_times_seconds) != n or (
                len(al.character_end_times_seconds) != n
            ):
                raise ProviderStatusError(
                    f"a streamed alignment has {n} characters but "
                    f"{len(al.character_start_times_seconds)} start and "
                    f"{len(al.character_end_times_seconds)} end times",
                    provider="elevenlabs",
                    code="invalid_response",
                )
            # Streamed chunks may restart their clock: continue from the last end.
            shift = (
                ends[-1] if ends and al.character_start_times_seconds[0] < ends[-1] - 0.05 else 0.0
            )
            chars.extend(al.characters)
            starts.extend(t + shift for t in al.character_start_times_seconds)
            ends.extend(t + shift for t in al.character_end_times_seconds)
        alignment = Alignment(
            characters=chars, character_start_times_seconds=starts, character_end_times_seconds=ends
        )
        return b"".join(parts), alignment

    async def synthesize(self, text: str) -> VoiceOutput:
        """Speak ``text``; word timings (with ``timestamps``) refer to offsets in ``text``.

        Raises:
            InputValidationError: empty text, or long text in a format that cannot be joined.
            ProviderError: the service failed (after retries where they apply).
        """
        chunks = self._chunks(text)
        self.last_request_ids = []
        single = len(chunks) == 1
        results = await gather_or_cancel(*(self._one(text, c, single) for c in chunks))
        words: list[WordTiming] = []
        audio_parts: list[bytes] = []
        clock = 0.0
        for chunk, (audio, alignment) in zip(chunks, results, strict=True):
            if not audio:
                raise ProviderStatusError(
                    "returned no audio", provider="elevenlabs", retryable=True
                )
            # an MP3 piece is decoded to measure it: minutes of audio take a while, off the loop
            duration = await asyncio.to_thread(
                audio_duration, "elevenlabs", audio, self.format, self.sample_rate
            )
            if alignment is not None:
                for w in words_from_alignment(
                    chunk.text, alignment, char_base=chunk.start, time_base=clock
                ):
                    end = min(w.end, clock + duration)
                    words.append(w.model_copy(update={"end": end, "start": min(w.start, end)}))
            audio_parts.append(audio)
            clock += duration
        return VoiceOutput(
            audio=await asyncio.to_thread(join_audio, audio_parts, self.format),
            format=self.format,
            sample_rate=self.sample_rate,
            duration=clock,
            text=text,
            words=words,
            voice=f"elevenlabs:{self.voice_id}",
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop."""
        await self._http.aclose()


def _make_voice(name: str | None, **options: Any) -> ElevenLabsVoice:
    return ElevenLabsVoice(name or DEFAULT_VOICE_ID, **options)


provider = Provider(
    "elevenlabs",
    voice=_make_voice,
    description="ElevenLabs voices with word timings (cloud; needs ELEVENLABS_API_KEY)",
    env_key="ELEVENLABS_API_KEY",
    default_roles=("voice",),
)
