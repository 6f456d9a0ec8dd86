"""Helpers shared by the cloud voices: audio durations and joining chunked audio on one clock."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np

from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import InputValidationError, ProviderStatusError
from avatarkit.types import AudioFormat

__all__ = ["JOINABLE", "audio_duration", "gather_or_cancel", "join_audio"]

T = TypeVar("T")


async def gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather``, but the first failure cancels the others (no paid call left running)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


JOINABLE: frozenset[str] = frozenset({"mp3", "pcm_s16le", "ulaw", "wav"})
"""Formats whose chunks can be joined into one clip (mp3 frames concatenate; wav is re-encoded)."""


def audio_duration(provider: str, data: bytes, fmt: AudioFormat, sample_rate: int) -> float:
    """Seconds of audio in ``data``; an undecodable answer is the provider's error."""
    if fmt == "pcm_s16le":
        return len(data) // 2 / sample_rate
    if fmt == "ulaw":
        return len(data) / sample_rate
    try:
        samples, rate = decode_audio(data, fmt)
    except InputValidationError as exc:
        raise ProviderStatusError(
            f"the {fmt} audio it returned cannot be decoded ({exc.message})",
            provider=provider,
            code="invalid_audio",
            retryable=True,
        ) from exc
    return len(samples) / rate


def join_audio(parts: list[bytes], fmt: AudioFormat) -> bytes:
    """One clip from consecutive chunks in the same format.

    PCM and µ-law bytes concatenate. MP3 is decoded and re-encoded once: each vendor file may
    carry a Xing/Info header stating its own frame count, and decoders that trust it (libsndfile
    among them) would stop after the first piece of a plain concatenation.
    """
    if len(parts) == 1:
        return parts[0]
    if fmt in ("pcm_s16le", "ulaw"):
        return b"".join(parts)
    if fmt in ("wav", "mp3"):
        decoded = [decode_audio(p, fmt) for p in parts]
        rate = decoded[0][1]
        if any(r != rate for _, r in decoded):
            raise ProviderStatusError("audio pieces differ in sample rate", provider="avatarkit")
        samples = np.concatenate([d[0] for d in decoded])
        if fmt == "wav":
            return encode_wav(samples, rate)
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, samples, rate, format="MP3")
        return buf.getvalue()
    raise InputValidationError(
        f"{fmt} audio cannot be joined; use mp3, pcm or wav for text that needs several requests",
        field="output_format",
    )
