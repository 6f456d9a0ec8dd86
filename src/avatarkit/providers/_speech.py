"""Helpers shared by the cloud voices: audio durations and joining chunked audio on one clock."""

from __future__ import annotations

import numpy as np

from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import InputValidationError, ProviderStatusError
from avatarkit.types import AudioFormat

__all__ = ["JOINABLE", "audio_duration", "join_audio"]

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
    """One clip from consecutive chunks in the same format."""
    if len(parts) == 1:
        return parts[0]
    if fmt in ("mp3", "pcm_s16le", "ulaw"):
        return b"".join(parts)
    if fmt == "wav":
        decoded = [decode_audio(p, "wav") for p in parts]
        rate = decoded[0][1]
        return encode_wav(np.concatenate([d[0] for d in decoded]), rate)
    raise InputValidationError(
        f"{fmt} audio cannot be joined; use mp3, pcm or wav for text that needs several requests",
        field="output_format",
    )
